/**
 * The memory store's ordered index is built lazily in slices that yield to the
 * event loop; writes made while it is being built must all be reflected once
 * it is done. Checked on the index alone (writes interleaved with the build's
 * own steps, deterministically) and through MemoryStore (a writer fiber taking
 * turns with the build on the event loop).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import { makeLazyOrderedIndex } from "../src/internal/orderedIndex.js"
import { KvStore, MemoryStore } from "effect-kv"

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const keyOf = (i: number) => `k:${i.toString().padStart(6, "0")}`
/** Code point order; the keys here are ASCII, where it is the default string order. */
const sorted = (keys: Iterable<string>) => [...keys].sort()

const allKeys = (scan: (prefix: string, after: string | undefined, visit: (key: string) => boolean) => void) => {
  const out: Array<string> = []
  scan("", undefined, (key) => {
    out.push(key)
    return true
  })
  return out
}

describe("lazy ordered index", () => {
  it.effect("keys added, removed, re-added and moved to the end of the map during the build are all reflected", () =>
    Effect.gen(function*() {
      const map = new Map<string, number>()
      for (let i = 0; i < 20_000; i++) map.set(keyOf(i), i)
      const random = prng(7)
      let writes = 0
      // The owner's writes: the map first, then the index being built, as the memory driver does.
      const set = (key: string) => {
        if (!map.has(key)) index.maintained?.add(key)
        map.set(key, 0)
      }
      const remove = (key: string) => {
        if (map.delete(key)) index.maintained?.remove(key)
      }
      const moveToEnd = (key: string) => {
        // an LRU touch: out of the map and back in, the index untouched
        if (map.delete(key)) map.set(key, 0)
      }
      // The build's iterator over the map, with writes between its steps: as
      // if writer fibers ran between two build slices, on every 50th step.
      const index = makeLazyOrderedIndex(() => {
        const keys = map.keys()
        let step = 0
        return {
          next: () => {
            if (++step % 50 === 0) {
              for (let w = 0; w < 5; w++) {
                const i = Math.floor(random() * 30_000)
                const r = random()
                if (r < 0.4) set(keyOf(i))
                else if (r < 0.8) remove(keyOf(i))
                else moveToEnd(keyOf(i))
                writes++
              }
            }
            return keys.next()
          }
        }
      })
      assert.isUndefined(index.maintained)
      const built = yield* index.ready
      assert.isAbove(writes, 1000)
      assert.deepStrictEqual(allKeys(built.scan), sorted(map.keys()))
      // and it stays exact afterwards
      set("k:zzz")
      remove(keyOf(3))
      assert.deepStrictEqual(allKeys((yield* index.ready).scan), sorted(map.keys()))
    }))

  it.live("a build interrupted midway is finished by the next listing, writes in between included", () =>
    Effect.gen(function*() {
      const map = new Map<string, number>()
      for (let i = 0; i < 200_000; i++) map.set(keyOf(i), i)
      const index = makeLazyOrderedIndex(() => map.keys())
      const firstListing = yield* Effect.fork(index.ready)
      // a few event-loop turns: some slices done, not all
      for (let turn = 0; turn < 3; turn++) yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
      const exit = yield* Fiber.interrupt(firstListing)
      assert.isTrue(Exit.isInterrupted(exit), "the build was still running when interrupted")
      const maintained = index.maintained
      assert.isDefined(maintained)
      for (let i = 0; i < 200_000; i += 1000) {
        map.delete(keyOf(i))
        maintained!.remove(keyOf(i))
        map.set(`n:${i}`, i)
        maintained!.add(`n:${i}`)
      }
      assert.deepStrictEqual(allKeys((yield* index.ready).scan), sorted(map.keys()))
    }))

  it.effect("nothing is maintained before the first listing", () =>
    Effect.gen(function*() {
      const map = new Map([["a", 1]])
      const index = makeLazyOrderedIndex(() => map.keys())
      assert.isUndefined(index.maintained)
      map.set("b", 2) // not reported: nothing to maintain yet, the build will see it
      assert.deepStrictEqual(allKeys((yield* index.ready).scan), ["a", "b"])
      assert.isDefined(index.maintained)
    }))
})

const SIZE = 200_000
const bytes = new Uint8Array([1])

/**
 * Fills a store with 200k keys, starts the first listing (the build) and, until
 * it is done, writes from another fiber that yields to the event loop between
 * rounds: sets of new keys, deletes, re-sets, and reads (a use, which moves an
 * entry in an LRU store's map). Afterwards every listing is exactly the model.
 */
const writesDuringBuild = (layer: Layer.Layer<KvStore.KvStore, KvStore.KvError>) =>
  Effect.gen(function*() {
    const store = yield* KvStore.KvStore
    const model = new Set<string>()
    for (let from = 0; from < SIZE; from += 10_000) {
      const chunk = Array.from({ length: 10_000 }, (_, i) => keyOf(from + i))
      yield* store.setMany(chunk.map((key) => [key, bytes] as const))
      for (const key of chunk) model.add(key)
    }
    const firstListing = yield* Effect.fork(store.count("k:"))
    const random = prng(42)
    let rounds = 0
    while ((yield* Fiber.poll(firstListing))._tag === "None") {
      for (let w = 0; w < 20; w++) {
        const key = random() < 0.5 ? keyOf(Math.floor(random() * SIZE * 1.2)) : `n:${rounds}:${w}`
        const r = random()
        if (r < 0.4) {
          yield* store.set(key, bytes)
          model.add(key)
        } else if (r < 0.8) {
          yield* store.delete(key)
          model.delete(key)
        } else {
          yield* store.getOption(key)
        }
      }
      rounds++
      yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
    }
    yield* Fiber.join(firstListing)
    // the build took turns with the writer: more than the one round a build in one go would allow
    assert.isAbove(rounds, 5)
    const expected = sorted(model)
    assert.deepStrictEqual(yield* store.keys(""), expected)
    assert.deepStrictEqual(Chunk.toReadonlyArray(yield* Stream.runCollect(store.streamKeys("", { batchSize: 5000 }))), expected)
    assert.strictEqual(yield* store.count("k:"), expected.filter((k) => k.startsWith("k:")).length)
    assert.strictEqual(yield* store.count("n:"), expected.filter((k) => k.startsWith("n:")).length)
  }).pipe(Effect.provide(layer))

describe("MemoryStore index build", () => {
  it.live("keys set and deleted while 200k keys are being indexed are reflected exactly afterwards", () =>
    writesDuringBuild(MemoryStore.layer()), 60_000)

  it.live("the same with an LRU bound, where reads move entries within the map", () =>
    writesDuringBuild(MemoryStore.layer({ maxEntries: 1_000_000 })), 60_000)
})
