/**
 * `NearCache` over a memory driver wrapped to count its reads, to gate one
 * key's read, and to inject or drop change-feed events: hits do no driver
 * read, another writer's change arrives by the feed, a fill that raced with
 * an invalidation is not kept, a lost feed empties the cache and reads go
 * through until it resumes, and the bounds (`maxStaleness`, `maxEntries`, the
 * entry's own TTL) on the `TestClock`. The whole contract through a near cache
 * is in NearCacheConformance.test.ts; two PostgreSQL instances in
 * NearCachePostgres.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import type { Driver, DriverChange } from "../src/KvDriver.js"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as NearCache from "../src/NearCache.js"
import { makeMemoryDriver } from "../src/internal/memoryDriver.js"
import * as NearCacheFlags from "../examples/nearCacheFlags.js"

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)
const text = (value: Uint8Array): string => new TextDecoder().decode(value)
const show = (value: Option.Option<Uint8Array>): string => Option.match(value, { onNone: () => "none", onSome: text })

/** Waits in real time (not on the TestClock), for fibers woken elsewhere to run. */
const sleepReal = (millis: number) =>
  Effect.async<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), millis)
    return Effect.sync(() => clearTimeout(timer))
  })

/** Retries `check` every few milliseconds of real time until it holds; fails the test after 5 seconds. */
const eventually = <E>(what: string, check: Effect.Effect<boolean, E>): Effect.Effect<void, E> =>
  Effect.gen(function*() {
    for (let i = 0; i < 1000; i++) {
      if (yield* check) return
      yield* sleepReal(5)
    }
    assert.fail(`never happened: ${what}`)
  })

interface Harness {
  /** The store underneath, as another writer sharing it sees it (no cache). */
  readonly base: KvStore.KvStore.Service
  readonly near: KvStore.KvStore.Service
  /** Reads that reached the driver (get, has, timeToLive, getMany's keys). */
  readonly reads: () => number
  /** Puts an event into the feed, after the driver's own. */
  readonly inject: (change: DriverChange) => Effect.Effect<void>
  /** While true, the driver's own `Changed` events are dropped (notifications lost without a `Lost`). */
  readonly dropChanges: (drop: boolean) => void
  /** Makes the first subscription's feed fail (as a driver's feed fails for good). */
  readonly failFeed: Effect.Effect<void>
  /** How many times the driver's feed was subscribed. */
  readonly subscriptions: () => number
  /** Makes the next driver `get` of `key` wait after reading: `reading` when it has read, `release` to let it answer. */
  readonly gate: (key: string) => Effect.Effect<{ readonly reading: Deferred.Deferred<void>; readonly release: Deferred.Deferred<void> }>
}

const harness = (options?: NearCache.Options): Effect.Effect<Harness, KvStore.KvError, Scope.Scope> =>
  Effect.gen(function*() {
    const memory = makeMemoryDriver(undefined)
    let reads = 0
    let drop = false
    const injected = yield* Queue.unbounded<DriverChange>()
    const failure = yield* Deferred.make<void>()
    let subscriptions = 0
    const gates = new Map<string, { reading: Deferred.Deferred<void>; release: Deferred.Deferred<void> }>()
    const driver: Driver = {
      ...memory,
      get: (key) =>
        Effect.suspend(() => {
          reads++
          const gate = gates.get(key)
          if (gate === undefined) return memory.get(key)
          gates.delete(key)
          return Effect.flatMap(memory.get(key), (value) =>
            Deferred.succeed(gate.reading, undefined).pipe(Effect.zipRight(Deferred.await(gate.release)), Effect.as(value)))
        }),
      has: (key) => Effect.suspend(() => (reads++, memory.has!(key))),
      timeToLive: (key) => Effect.suspend(() => (reads++, memory.timeToLive!(key))),
      getMany: (keys) => Effect.suspend(() => (reads += keys.length, memory.getMany!(keys))),
      changes: Effect.map(memory.changes!, (own) => {
        const failing = ++subscriptions === 1
          ? Stream.flatMap(Stream.fromEffect(Deferred.await(failure)), () =>
            Stream.die(new Error("the feed broke")))
          : Stream.empty
        return Stream.merge(
          Stream.merge(Stream.filter(own, (change) => !(drop && change._tag === "Changed")), Stream.fromQueue(injected)),
          failing
        )
      })
    }
    const base = yield* KvStore.make(driver)
    const near = yield* NearCache.make(base, options)
    return {
      base,
      near,
      reads: () => reads,
      inject: (change) => Queue.offer(injected, change),
      failFeed: Deferred.succeed(failure, undefined),
      subscriptions: () => subscriptions,
      dropChanges: (value) => {
        drop = value
      },
      gate: (key) =>
        Effect.gen(function*() {
          const gate = { reading: yield* Deferred.make<void>(), release: yield* Deferred.make<void>() }
          gates.set(key, gate)
          return gate
        })
    }
  })

/** The store's answer for `key` through the cache, as text ("none" when missing). */
const read = (store: KvStore.KvStore.Service, key: string) => Effect.map(store.getOption(key), show)

describe("NearCache", () => {
  it.scoped("a hit does no driver read: get, getOption, has, timeToLive, getMany, and a missing key too", () =>
    Effect.gen(function*() {
      const { base, near, reads } = yield* harness({ maxStaleness: "1 hour" })
      yield* base.set("k", bytes("v"), "10 minutes")
      assert.strictEqual(text(yield* near.get("k")), "v")
      assert.isTrue(Option.isNone(yield* near.getOption("missing")))
      const afterFill = reads()
      for (let i = 0; i < 100; i++) {
        assert.strictEqual(text(yield* near.get("k")), "v")
        assert.strictEqual(show(yield* near.getOption("k")), "v")
        assert.isTrue(yield* near.has("k"))
        assert.isFalse(yield* near.has("missing"))
        assert.strictEqual(Duration.toMillis(Option.getOrThrow(yield* near.timeToLive("k"))), 600_000)
        assert.deepStrictEqual((yield* near.getMany(["k", "missing", "k"])).map(show), ["v", "none", "v"])
        const error = yield* Effect.flip(near.get("missing"))
        assert.instanceOf(error, KvStore.NotFound)
        assert.strictEqual((error as KvStore.NotFound).key, "missing")
      }
      assert.strictEqual(reads(), afterFill)
    }))

  it.scoped("a hit hands out a copy: changing it changes nothing cached", () =>
    Effect.gen(function*() {
      const { base, near } = yield* harness({ maxStaleness: "1 hour" })
      yield* base.set("k", bytes("abc"))
      const first = yield* near.get("k")
      first[0] = 120
      const second = yield* near.get("k")
      second[1] = 120
      ;(yield* near.getMany(["k"]))[0]!.pipe(Option.map((v) => (v[2] = 120)))
      assert.strictEqual(text(yield* near.get("k")), "abc")
    }))

  it.scoped("another writer's change to the store underneath arrives by the feed", () =>
    Effect.gen(function*() {
      const { base, near } = yield* harness({ maxStaleness: "1 hour" })
      yield* base.set("k", bytes("v1"))
      assert.strictEqual(yield* read(near, "k"), "v1")
      yield* base.set("k", bytes("v2"))
      yield* eventually("the cache sees v2", Effect.map(read(near, "k"), (v) => v === "v2"))
      yield* base.delete("k")
      yield* eventually("the cache sees the delete", Effect.map(read(near, "k"), (v) => v === "none"))
      yield* base.set("k", bytes("v3"))
      yield* eventually("the cache sees a key that was missing", Effect.map(near.has("k"), (has) => has))
    }))

  it.scoped("the writing instance reads its own writes, every kind of write", () =>
    Effect.gen(function*() {
      // the feed drops every change: only the cache's own invalidation can make these pass
      const { dropChanges, near } = yield* harness({ maxStaleness: "1 hour" })
      dropChanges(true)
      const steps: ReadonlyArray<readonly [string, Effect.Effect<unknown, unknown>, string]> = [
        ["set", near.set("k", bytes("1")), "1"],
        ["increment", near.increment("k"), "2"],
        ["update", near.update("k", () => Effect.succeed(bytes("u"))), "u"],
        ["delete", near.delete("k"), "none"],
        ["setIfAbsent", near.setIfAbsent("k", bytes("a")), "a"],
        ["setMany", near.setMany([["k", bytes("m")]]), "m"],
        ["deleteMany", near.deleteMany(new Set(["k"])), "none"],
        ["set again", near.set("k", bytes("again")), "again"],
        ["deletePrefix", near.deletePrefix(""), "none"]
      ]
      for (const [what, write, expected] of steps) {
        assert.strictEqual(yield* read(near, "k"), yield* Effect.map(near.getOption("k"), show), what)
        yield* write
        assert.strictEqual(yield* read(near, "k"), expected, `after ${what}`)
      }
      yield* near.set("k", bytes("x"))
      assert.isTrue(Option.isNone(yield* near.timeToLive("k")))
      yield* near.expire("k", "1 minute")
      assert.strictEqual(Duration.toMillis(Option.getOrThrow(yield* near.timeToLive("k"))), 60_000)
    }))

  it.scoped("a fill that raced with an invalidation is not kept (forced interleaving)", () =>
    Effect.gen(function*() {
      const { base, gate, near } = yield* harness({ maxStaleness: "1 hour" })
      yield* base.set("k", bytes("old"))
      yield* base.set("sentinel", bytes("before"))
      assert.strictEqual(yield* read(near, "sentinel"), "before")
      // a read of k has its answer ("old") and is held before the cache sees it
      const { reading, release } = yield* gate("k")
      const fill = yield* Effect.fork(near.get("k"))
      yield* Deferred.await(reading)
      // another writer changes k; the feed reports it (in order: once the sentinel's change is seen, k's was too)
      yield* base.set("k", bytes("new"))
      yield* base.set("sentinel", bytes("after"))
      yield* eventually("the feed's invalidations arrived", Effect.map(read(near, "sentinel"), (v) => v === "after"))
      yield* Deferred.succeed(release, undefined)
      assert.strictEqual(text(yield* Fiber.join(fill)), "old")
      // kept, "old" would be served for an hour: the feed already said k changed
      assert.strictEqual(yield* read(near, "k"), "new")
    }))

  it.scoped("a local write during a read-through: the read's answer is not kept", () =>
    Effect.gen(function*() {
      const { base, dropChanges, gate, near } = yield* harness({ maxStaleness: "1 hour" })
      dropChanges(true)
      yield* base.set("k", bytes("old"))
      const { reading, release } = yield* gate("k")
      const fill = yield* Effect.fork(near.get("k"))
      yield* Deferred.await(reading)
      yield* near.set("k", bytes("new"))
      yield* Deferred.succeed(release, undefined)
      assert.strictEqual(text(yield* Fiber.join(fill)), "old")
      assert.strictEqual(yield* read(near, "k"), "new")
    }))

  it.scoped("a lost feed empties the cache and reads go to the store until it resumes", () =>
    Effect.gen(function*() {
      const { base, dropChanges, inject, near, reads } = yield* harness({ maxStaleness: "1 hour" })
      yield* base.set("k", bytes("v1"))
      assert.strictEqual(yield* read(near, "k"), "v1")
      // the change is lost with the feed: only emptying the cache on Lost shows v2
      dropChanges(true)
      yield* inject({ _tag: "Lost" })
      yield* base.set("k", bytes("v2"))
      yield* eventually("Lost empties the cache", Effect.map(read(near, "k"), (v) => v === "v2"))
      // until Resumed, every read goes to the store
      let before = reads()
      for (let i = 0; i < 5; i++) yield* near.get("k")
      assert.strictEqual(reads() - before, 5)
      yield* base.set("k", bytes("v3"))
      assert.strictEqual(yield* read(near, "k"), "v3")
      // resumed: caching again
      dropChanges(false)
      yield* inject({ _tag: "Resumed" })
      yield* eventually("Resumed turns caching back on", Effect.gen(function*() {
        yield* near.get("k")
        const at = reads()
        yield* near.get("k")
        return reads() === at
      }))
      before = reads()
      for (let i = 0; i < 5; i++) yield* near.get("k")
      assert.strictEqual(reads(), before)
    }))

  it.scoped("a feed that fails: reads go to the store, and the cache subscribes again", () =>
    Effect.gen(function*() {
      const { base, dropChanges, failFeed, near, reads, subscriptions } = yield* harness({ maxStaleness: "1 hour" })
      yield* base.set("k", bytes("v1"))
      assert.strictEqual(yield* read(near, "k"), "v1")
      dropChanges(true)
      yield* failFeed
      yield* base.set("k", bytes("v2"))
      yield* eventually("the failed feed empties the cache", Effect.map(read(near, "k"), (v) => v === "v2"))
      dropChanges(false)
      // about a second later (real time), a new subscription: caching again, changes heard again
      yield* eventually("a second subscription", Effect.sync(() => subscriptions() === 2))
      yield* eventually("caching again", Effect.gen(function*() {
        yield* near.get("k")
        const at = reads()
        yield* near.get("k")
        return reads() === at
      }))
      yield* base.set("k", bytes("v3"))
      yield* eventually("the new feed's changes arrive", Effect.map(read(near, "k"), (v) => v === "v3"))
    }))

  it.scoped("maxStaleness bounds an entry's age when notifications are lost (TestClock)", () =>
    Effect.gen(function*() {
      const { base, dropChanges, near } = yield* harness({ maxStaleness: "2 seconds" })
      dropChanges(true)
      yield* base.set("k", bytes("v1"))
      assert.strictEqual(yield* read(near, "k"), "v1")
      yield* base.set("k", bytes("v2"))
      yield* TestClock.adjust("1999 millis")
      assert.strictEqual(yield* read(near, "k"), "v1")
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* read(near, "k"), "v2")
    }))

  it.scoped("the default maxStaleness is 1 second", () =>
    Effect.gen(function*() {
      const { base, dropChanges, near } = yield* harness()
      dropChanges(true)
      yield* base.set("k", bytes("v1"))
      assert.strictEqual(yield* read(near, "k"), "v1")
      yield* base.set("k", bytes("v2"))
      yield* TestClock.adjust("999 millis")
      assert.strictEqual(yield* read(near, "k"), "v1")
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* read(near, "k"), "v2")
    }))

  it.scoped("an entry past its TTL is a miss, and timeToLive counts down locally (TestClock)", () =>
    Effect.gen(function*() {
      const { base, dropChanges, near, reads } = yield* harness({ maxStaleness: "1 hour" })
      // not even the driver's expiry notification helps: the cache must know the deadline itself
      dropChanges(true)
      yield* base.set("k", bytes("v"), "1 second")
      assert.strictEqual(yield* read(near, "k"), "v")
      const filled = reads()
      yield* TestClock.adjust("400 millis")
      assert.strictEqual(Duration.toMillis(Option.getOrThrow(yield* near.timeToLive("k"))), 600)
      yield* TestClock.adjust("599 millis")
      assert.strictEqual(yield* read(near, "k"), "v")
      assert.strictEqual(reads(), filled)
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* read(near, "k"), "none")
      assert.isFalse(yield* near.has("k"))
      assert.instanceOf(yield* Effect.flip(near.timeToLive("k")), KvStore.NotFound)
    }))

  it.scoped("maxEntries bounds the cache, least recently used first", () =>
    Effect.gen(function*() {
      const { base, near, reads } = yield* harness({ maxEntries: 2, maxStaleness: "1 hour" })
      yield* base.setMany([["a", bytes("A")], ["b", bytes("B")], ["c", bytes("C")]])
      yield* near.get("a")
      yield* near.get("b")
      yield* near.get("a") // b is now the least recently used
      yield* near.get("c") // evicts b
      const before = reads()
      yield* near.get("a")
      yield* near.get("c")
      assert.strictEqual(reads(), before, "a and c are cached")
      yield* near.get("b")
      assert.isAbove(reads(), before, "b was evicted")
    }))

  it.scoped("streams, keys and count go to the store; watch passes through", () =>
    Effect.gen(function*() {
      const { base, near } = yield* harness()
      yield* base.setMany([["p/a", bytes("1")], ["p/b", bytes("2")]])
      assert.deepStrictEqual(yield* near.keys("p/"), ["p/a", "p/b"])
      assert.strictEqual(yield* near.count("p/"), 2)
      const streamed = yield* Stream.runCollect(near.streamKeys("p/"))
      assert.deepStrictEqual(Array.from(streamed), ["p/a", "p/b"])
      const first = yield* Stream.runHead(near.watch("p/a"))
      assert.strictEqual(show(Option.flatten(first)), "1")
    }))

  it.live("the feature-flag example: B's requests read from memory, and see A's flip by the feed", () =>
    Effect.scoped(Effect.gen(function*() {
      // two near caches over one store: two instances sharing it, as on PostgreSQL
      const shared = yield* MemoryStore.make()
      const a = yield* NearCache.make(shared)
      const b = yield* NearCache.make(shared, { maxStaleness: "1 hour" })
      const report = yield* NearCacheFlags.program(a, b, "flag:new-checkout")
      assert.strictEqual(report.beforeFlip, "old checkout")
      assert.strictEqual(report.afterFlip, "new checkout")
    })))

  describe("options and the feed", () => {
    const refusal = (build: Effect.Effect<unknown, unknown, Scope.Scope>) =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(Effect.scoped(build))
        assert.isTrue(Exit.isFailure(exit), "expected a refusal")
        const error = yield* Effect.flip(Effect.scoped(build))
        assert.instanceOf(error, KvStore.KvError)
        assert.strictEqual((error as KvStore.KvError).reason, "InvalidArgument")
        assert.strictEqual((error as KvStore.KvError).op, "layer")
        return (error as KvStore.KvError).message
      })

    const layerWith = (options: unknown) =>
      Effect.asVoid(Layer.build(NearCache.layer(options as NearCache.Options).pipe(Layer.provide(MemoryStore.layer()))))

    it.effect("unknown names, wrong types and out-of-range values are refused with InvalidArgument, op layer", () =>
      Effect.gen(function*() {
        assert.include(yield* refusal(layerWith({ maxEntry: 10 })), "maxEntries")
        assert.include(yield* refusal(layerWith({ maxStaleness: true })), "maxStaleness")
        assert.include(yield* refusal(layerWith({ maxEntries: "10" })), "maxEntries")
        for (const maxEntries of [0, -1, 1.5, NaN, Infinity]) {
          assert.include(yield* refusal(layerWith({ maxEntries })), "maxEntries")
        }
        for (const maxStaleness of [-1, "-1 seconds", 0, Duration.infinity, "soon", NaN]) {
          assert.include(yield* refusal(layerWith({ maxStaleness })), "maxStaleness")
        }
        assert.include(yield* refusal(layerWith("fast")), "expected an object")
      }))

    it.effect("valid options build", () =>
      Effect.scoped(Effect.gen(function*() {
        yield* layerWith({ maxEntries: 1, maxStaleness: 50 })
        yield* layerWith({ maxEntries: undefined, maxStaleness: Duration.millis(5) })
        yield* layerWith(undefined)
      })))

    it.effect("a store without a change feed is refused: a near cache needs one", () =>
      Effect.gen(function*() {
        const { changes: _, ...withoutFeed } = makeMemoryDriver(undefined)
        const message = yield* refusal(Effect.flatMap(KvStore.make(withoutFeed), (store) => NearCache.make(store)))
        assert.include(message, "change feed")
        // a Service that was not built by KvStore.make has no feed the cache can find
        const custom = yield* refusal(Effect.flatMap(KvStore.make(makeMemoryDriver(undefined)), (store) => NearCache.make({ ...store })))
        assert.include(custom, "change feed")
      }))
  })
})
