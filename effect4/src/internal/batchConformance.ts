/**
 * Conformance for the batch, prefix and stream operations and `KvStore.prefixed`
 * (API.md, Version 2), written once against a `Layer<KvStore>` like the main
 * suite. Tests share one store and never assume it is empty: each works under
 * its own fresh prefix, except where it says so.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { TestClock } from "effect/testing"
import { randomUUID } from "node:crypto"
import * as KvStore from "../KvStore.js"
import { byUtf8Bytes, bytes, loose, sleepReal, text, within } from "./conformanceHelpers.js"

/** The failure of `effect`, which must be a `KvError` with this op and reason. */
export const refusal = <A, E>(
  effect: Effect.Effect<A, E>,
  op: string,
  reason: "InvalidArgument" | "Backend" = "InvalidArgument"
): Effect.Effect<KvStore.KvError> =>
  Effect.map(Effect.exit(effect), (exit) => {
    assert.isTrue(Exit.isFailure(exit), `expected ${op} to fail`)
    const failure = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : Option.none()
    assert.isTrue(Option.isSome(failure), `expected a typed failure from ${op}`)
    const error = Option.getOrThrow(failure)
    assert.instanceOf(error, KvStore.KvError, String(error))
    const e = error as KvStore.KvError
    assert.strictEqual(e.op, op, e.message)
    assert.strictEqual(e.reason, reason, e.message)
    return e
  })

const collect = <A, E, R>(stream: Stream.Stream<A, E, R>): Effect.Effect<ReadonlyArray<A>, E, R> => Stream.runCollect(stream)

export interface BatchConformanceOptions {
  /** Expiry follows the backend's own clock: time steps wait for real. */
  readonly databaseClock?: boolean
}

export const batchConformance = (
  name: string,
  store: Layer.Layer<KvStore.KvStore, unknown>,
  options: BatchConformanceOptions = {}
): void => {
  const run = randomUUID().slice(0, 8)
  let n = 0
  const fresh = () => `batch-${run}-${n++}/`
  /** Lets `millis` pass for the store's expiry. */
  const elapse = (millis: number) =>
    options.databaseClock === true ? sleepReal(millis) : TestClock.adjust(millis)
  const TTL = options.databaseClock === true ? 150 : 1000

  layer(store, { timeout: 60_000 })(`${name} batches`, (it) => {
    describe("getMany", () => {
      it.effect("answers in input order, one Option per key, duplicates allowed", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          yield* kv.set(`${p}a`, bytes("A"))
          yield* kv.set(`${p}b`, bytes(""))
          const found = yield* kv.getMany([`${p}b`, `${p}missing`, `${p}a`, `${p}b`])
          assert.deepStrictEqual(found.map(Option.map(text)), [Option.some(""), Option.none(), Option.some("A"), Option.some("")])
          // each answer is its own copy
          const [first, , , last] = found
          Option.getOrThrow(first!).fill(1)
          assert.strictEqual(Option.getOrThrow(last!).length, 0)
          const again = yield* kv.getMany(new Set([`${p}a`]))
          Option.getOrThrow(again[0]!)[0] = 0
          assert.strictEqual(text(yield* kv.get(`${p}a`)), "A")
        }))

      it.effect("an empty input is [] ", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          assert.deepStrictEqual(yield* kv.getMany([]), [])
          assert.deepStrictEqual(yield* kv.getMany(new Map<string, number>().keys()), [])
        }))

      it.effect("expired entries are none", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          yield* kv.setMany([[`${p}short`, bytes("s")], [`${p}short2`, bytes("s")]], TTL)
          yield* kv.set(`${p}long`, bytes("l"))
          yield* elapse(TTL * 2)
          const found = yield* kv.getMany([`${p}short`, `${p}long`, `${p}short2`])
          assert.deepStrictEqual(found.map(Option.isSome), [false, true, false])
        }))
    })

    describe("arguments", () => {
      it.effect("one bad key refuses the whole call, naming it, before any I/O", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const e1 = yield* refusal(kv.getMany([`${p}ok`, "", `${p}x`]), "getMany")
          assert.strictEqual(e1.key, "")
          const e2 = yield* refusal(kv.deleteMany([`${p}ok`, "a\u0000b"]), "deleteMany")
          assert.strictEqual(e2.key, "a\u0000b")
          yield* kv.set(`${p}kept`, bytes("v"))
          yield* refusal(kv.deleteMany([`${p}kept`, loose(42)]), "deleteMany")
          assert.isTrue(yield* kv.has(`${p}kept`))
        }))

      it.effect("setMany with one invalid key or value writes nothing", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const many = Array.from({ length: 1500 }, (_, i) => [`${p}k${i}`, bytes(String(i))] as const)
          const badValue = [...many.slice(0, 1200), [`${p}bad`, loose<Uint8Array>("text")] as const, ...many.slice(1200)]
          const e1 = yield* refusal(kv.setMany(badValue), "setMany")
          assert.strictEqual(e1.key, `${p}bad`)
          const badKey = [...many, ["\ud800" + p, bytes("x")] as const]
          const e2 = yield* refusal(kv.setMany(badKey), "setMany")
          assert.strictEqual(e2.key, "\ud800" + p)
          yield* refusal(kv.setMany([...many, loose<readonly [string, Uint8Array]>("not a pair")]), "setMany")
          yield* refusal(kv.setMany(many, -5), "setMany")
          yield* refusal(kv.setMany(many, "-1 millis"), "setMany")
          assert.strictEqual(yield* kv.count(p), 0)
        }))

      it.effect("iterables are read once, and one that throws or is not iterable is refused, never thrown", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          let reads = 0
          function* once() {
            reads++
            yield `${p}a`
            yield `${p}b`
          }
          yield* kv.set(`${p}a`, bytes("1"))
          assert.strictEqual((yield* kv.getMany(once())).length, 2)
          assert.strictEqual(reads, 1)
          function* throwing(): Generator<string> {
            yield `${p}a`
            throw new Error("boom")
          }
          for (const [op, call] of [
            ["getMany", (arg: unknown) => kv.getMany(loose(arg))],
            ["deleteMany", (arg: unknown) => kv.deleteMany(loose(arg))],
            ["setMany", (arg: unknown) => kv.setMany(loose(arg))]
          ] as const) {
            for (const arg of [throwing(), null, undefined, 42, "abc", {}, new Proxy({}, { get: () => { throw new Error("trap") } })]) {
              let effect: Effect.Effect<unknown, unknown>
              try {
                effect = call(arg)
              } catch (thrown) {
                assert.fail(`${op} threw: ${String(thrown)}`)
              }
              yield* refusal(effect, op)
            }
          }
          const revoked = Proxy.revocable([`${p}a`, bytes("x")], {})
          revoked.revoke()
          yield* refusal(kv.setMany([loose(revoked.proxy)]), "setMany")
          assert.strictEqual(text(yield* kv.get(`${p}a`)), "1")
        }))

      /** Yields `item` `count` times (Infinity: forever), counting the items pulled and whether it was closed. */
      const counted = <A>(item: A, count: number) => {
        const state = { pulled: 0, closed: false }
        function* items(): Generator<A> {
          try {
            for (let i = 0; i < count; i++) {
              state.pulled++
              yield item
            }
          } finally {
            state.closed = true
          }
        }
        return { state, items: items() }
      }

      it.effect("a batch holds at most 1,000,000 keys: exactly that many pass, one more is refused before any I/O", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const key = `${p}k`
          const value = bytes("v")
          // one key repeated: a million of them cost the check, not the backend
          const max = 1_000_000
          // a missing key: a million answers of none, no million copies of a value
          const found = yield* kv.getMany(new Array<string>(max).fill(key))
          assert.strictEqual(found.length, max)
          assert.isTrue(found.every(Option.isNone))
          const calls = [
            ["getMany", (n: number) => kv.getMany(counted(key, n).items)],
            ["setMany", (n: number) => kv.setMany(counted([key, value] as const, n).items)],
            ["deleteMany", (n: number) => kv.deleteMany(counted(key, n).items)]
          ] as const
          for (const [op, call] of calls) {
            const error = yield* refusal(call(max + 1), op)
            assert.include(error.message, "1,000,000")
          }
          assert.isFalse(yield* kv.has(key), "a refused setMany wrote")
        }))

      it.effect("an endless iterable is refused with InvalidArgument after pulling at most 1,000,001 items, and closed", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          for (const op of ["getMany", "setMany", "deleteMany"] as const) {
            const endless = op === "setMany" ? counted([`${p}k`, bytes("v")] as const, Infinity) : counted(`${p}k`, Infinity)
            const call = op === "getMany"
              ? kv.getMany(endless.items as Iterable<string>)
              : op === "setMany"
              ? kv.setMany(endless.items as Iterable<readonly [string, Uint8Array]>)
              : kv.deleteMany(endless.items as Iterable<string>)
            yield* within(30_000, `${op} of an endless iterable`, refusal(call, op))
            assert.strictEqual(endless.state.pulled, 1_000_001, op)
            assert.isTrue(endless.state.closed, `${op} left the iterator open`)
          }
          // a prefixed view reads the caller's iterable itself: bounded too
          const viaView = counted("k", Infinity)
          yield* within(30_000, "a view's getMany of an endless iterable", refusal(KvStore.prefixed(kv, p).getMany(viaView.items), "getMany"))
          assert.strictEqual(viaView.state.pulled, 1_000_001)
          assert.isFalse(yield* kv.has(`${p}k`))
        }))

      it.effect("a slow iterable does not hold the event loop: a timeout fires while it is read, and closes it", () =>
        TestClock.withLive(Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const total = 20_000
          const slow = { pulled: 0, closed: false }
          // about 0.1 ms of work per item, 2 s in all: far past the timeout
          function* items(): Generator<string> {
            try {
              for (let i = 0; i < total; i++) {
                const until = performance.now() + 0.1
                while (performance.now() < until) {
                  // busy, as a slow synchronous source is
                }
                slow.pulled++
                yield `${p}k`
              }
            } finally {
              slow.closed = true
            }
          }
          const exit = yield* Effect.exit(Effect.timeout(kv.getMany(items()), "100 millis"))
          assert.isTrue(Exit.isFailure(exit) && Cause.isTimeoutError(Option.getOrUndefined(Cause.findErrorOption(exit.cause))), "the timeout did not fire")
          assert.isBelow(slow.pulled, total, "the iterable was read to its end before the timeout could fire")
          assert.isTrue(slow.closed, "the interrupted read left the iterator open")
        })))

      it.effect("batchSize must be a positive integer", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          for (const batchSize of [0, -1, 1.5, NaN, Infinity, loose<number>("10"), loose<number>(null)]) {
            yield* refusal(Stream.runDrain(kv.streamKeys("", { batchSize })), "streamKeys")
            yield* refusal(Stream.runDrain(kv.streamEntries("", { batchSize })), "streamEntries")
          }
          yield* refusal(Stream.runDrain(kv.streamKeys(loose(7))), "streamKeys")
          yield* refusal(kv.count("a\u0000"), "count")
          yield* refusal(kv.deletePrefix(loose(undefined)), "deletePrefix")
        }))
    })

    describe("setMany and deleteMany", () => {
      it.effect("the last duplicate wins; the TTL applies to every entry and replaces expiries", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          yield* kv.set(`${p}a`, bytes("old"), TTL)
          yield* kv.setMany([[`${p}a`, bytes("1")], [`${p}b`, bytes("2")], [`${p}a`, bytes("3")]])
          assert.strictEqual(text(yield* kv.get(`${p}a`)), "3")
          yield* elapse(TTL * 2)
          assert.strictEqual(text(yield* kv.get(`${p}a`)), "3", "setMany without a TTL makes entries permanent")
          yield* kv.setMany(new Map([[`${p}a`, bytes("4")], [`${p}c`, bytes("5")]]), TTL)
          assert.isTrue(Option.isSome(yield* kv.timeToLive(`${p}c`)))
          yield* elapse(TTL * 2)
          assert.deepStrictEqual(yield* kv.keys(p), [`${p}b`])
        }))

      it.effect("values are copied when the call runs", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const value = bytes("abc")
          const write = kv.setMany([[`${p}a`, value]])
          value[0] = 0x7a
          yield* write
          value[1] = 0x7a
          assert.strictEqual(text(yield* kv.get(`${p}a`)), "zbc")
        }))

      it.effect("deleteMany counts live entries removed: not missing, expired or repeated ones", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          yield* kv.setMany([[`${p}a`, bytes("1")], [`${p}b`, bytes("2")], [`${p}c`, bytes("3")]])
          yield* kv.set(`${p}expired`, bytes("x"), TTL)
          yield* elapse(TTL * 2)
          assert.strictEqual(yield* kv.deleteMany([`${p}a`, `${p}a`, `${p}missing`, `${p}expired`, `${p}c`]), 2)
          assert.deepStrictEqual(yield* kv.keys(p), [`${p}b`])
          assert.strictEqual(yield* kv.deleteMany([]), 0)
          yield* kv.setMany([])
        }))

      it.effect("2500 keys: setMany, getMany and deleteMany across several batches", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const keys = Array.from({ length: 2500 }, (_, i) => `${p}${i}`)
          yield* kv.setMany(keys.map((key, i) => [key, bytes(`v${i}`)] as const))
          assert.strictEqual(yield* kv.count(p), 2500)
          const probe = [...keys.slice().reverse(), `${p}none`, keys[7]!]
          const found = yield* kv.getMany(probe)
          assert.strictEqual(found.length, 2502)
          assert.strictEqual(text(Option.getOrThrow(found[0]!)), "v2499")
          assert.strictEqual(text(Option.getOrThrow(found[2499]!)), "v0")
          assert.isTrue(Option.isNone(found[2500]!))
          assert.strictEqual(text(Option.getOrThrow(found[2501]!)), "v7")
          assert.isTrue(found.slice(0, 2500).every((v, i) => text(Option.getOrThrow(v)) === `v${2499 - i}`))
          assert.strictEqual(yield* kv.deleteMany([...keys.filter((_, i) => i % 2 === 0), `${p}none`]), 1250)
          assert.strictEqual(yield* kv.count(p), 1250)
        }))
    })

    describe("prefixes", () => {
      it.effect("count and deletePrefix match literally: % _ \\ mean nothing", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          yield* kv.setMany(["a%b", "a_c", "a\\d", "axb", "ayc", "a"].map((k) => [p + k, bytes(k)] as const))
          yield* kv.set(`${p}a%expired`, bytes("x"), TTL)
          assert.strictEqual(yield* kv.count(`${p}a%`), 2)
          yield* elapse(TTL * 2)
          assert.strictEqual(yield* kv.count(`${p}a%`), 1)
          assert.strictEqual(yield* kv.count(`${p}a_`), 1)
          assert.strictEqual(yield* kv.count(`${p}a\\`), 1)
          assert.strictEqual(yield* kv.count(`${p}a`), 6)
          assert.strictEqual(yield* kv.deletePrefix(`${p}a_`), 1)
          assert.strictEqual(yield* kv.deletePrefix(`${p}a%`), 1)
          assert.deepStrictEqual(yield* kv.keys(p), [`${p}a`, `${p}a\\d`, `${p}axb`, `${p}ayc`].sort(byUtf8Bytes))
          assert.strictEqual(yield* kv.deletePrefix(p), 4)
          assert.strictEqual(yield* kv.count(p), 0)
          assert.strictEqual(yield* kv.deletePrefix(p), 0)
        }))

      it.effect("count(\"\") counts every live key of the store", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const before = yield* kv.count("")
          yield* kv.setMany(Array.from({ length: 5 }, (_, i) => [`${p}${i}`, bytes("v")] as const))
          assert.strictEqual(yield* kv.count(""), before + 5)
          assert.strictEqual(yield* kv.deletePrefix(p), 5)
          assert.strictEqual(yield* kv.count(""), before)
        }))

      it.effect("deletePrefix of 2300 keys", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          yield* kv.setMany(Array.from({ length: 2300 }, (_, i) => [`${p}${i}`, bytes("v")] as const))
          yield* kv.set(`${p.slice(0, -1)}-outside`, bytes("o"))
          assert.strictEqual(yield* kv.deletePrefix(p), 2300)
          assert.strictEqual(yield* kv.count(p), 0)
          assert.isTrue(yield* kv.has(`${p.slice(0, -1)}-outside`))
        }))
    })

    describe("streams", () => {
      const odd = ["b", "a", "\u{1F600}", "\uE000", "ä", "a/b", "Z", "a\u0001", "%", "_", "\\", "aa"]

      it.effect("keys and entries in code point order, over pages of any size", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          yield* kv.setMany(odd.map((k) => [p + k, bytes(`v:${k}`)] as const))
          yield* kv.set(`${p.slice(0, -1)}0`, bytes("outside")) // just after the prefix
          const expected = odd.map((k) => p + k).sort(byUtf8Bytes)
          for (const batchSize of [1, 2, 3, 5, 11, 12, 13, 1000, undefined]) {
            assert.deepStrictEqual(yield* collect(kv.streamKeys(p, { batchSize })), expected, `batchSize ${batchSize}`)
            const entries = yield* collect(kv.streamEntries(p, batchSize === undefined ? undefined : { batchSize }))
            assert.deepStrictEqual(entries.map(([k]) => k), expected)
            assert.isTrue(entries.every(([k, v]) => text(v) === `v:${k.slice(p.length)}`))
          }
          assert.deepStrictEqual(yield* kv.keys(p), expected)
          // accessors
          assert.deepStrictEqual(yield* collect(KvStore.streamKeys(p, { batchSize: 4 })), expected)
        }))

      it.effect("batchSize may be any positive safe integer: one larger than the store is one page", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          yield* kv.setMany(["a", "b", "c"].map((k) => [p + k, bytes(k)] as const))
          for (const batchSize of [2 ** 31 - 1, 2 ** 31, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER]) {
            assert.deepStrictEqual(yield* collect(kv.streamKeys(p, { batchSize })), [p + "a", p + "b", p + "c"], `batchSize ${batchSize}`)
            const entries = yield* collect(kv.streamEntries(p, { batchSize }))
            assert.deepStrictEqual(entries.map(([k, v]) => [k, text(v)]), [[p + "a", "a"], [p + "b", "b"], [p + "c", "c"]])
          }
        }))

      it.effect("a page of streamEntries holds at most 16 MiB of values; a larger entry comes alone", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const MiB = 1024 * 1024
          // 1 MiB and 17 MiB pass the bound together: the 17 MiB entry comes alone, between two pages
          const sizes = [MiB, 17 * MiB, MiB, 0, 10]
          const keyOf = (i: number) => `${p}${String(i).padStart(2, "0")}`
          for (const [i, size] of sizes.entries()) yield* kv.set(keyOf(i), new Uint8Array(size).fill(i))
          for (const batchSize of [undefined, 2]) {
            const chunks = yield* Stream.runCollect(Stream.chunks(kv.streamEntries(p, batchSize === undefined ? undefined : { batchSize })))
            const pageSizes = chunks.map((chunk) => chunk.map(([, value]) => value.length / MiB))
            for (const chunk of chunks) {
              const bytesInPage = chunk.reduce((n, [, value]) => n + value.length, 0)
              assert.isTrue(chunk.length === 1 || bytesInPage <= 16 * MiB, `a page of ${bytesInPage} bytes: ${JSON.stringify(pageSizes)}`)
              assert.isAtMost(chunk.length, batchSize ?? 1000)
            }
            const entries = chunks.flat()
            assert.deepStrictEqual(entries.map(([key]) => key), sizes.map((_, i) => keyOf(i)))
            assert.isTrue(entries.every(([, value], i) => value.length === sizes[i] && (value.length === 0 || value[0] === i)))
            assert.strictEqual(chunks.filter((chunk) => chunk.some(([, value]) => value.length === 17 * MiB))[0]!.length, 1, JSON.stringify(pageSizes))
          }
          yield* kv.deletePrefix(p)
        }))

      it.effect("expired keys are not streamed; values handed out are copies", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          yield* kv.setMany([[`${p}a`, bytes("a")], [`${p}c`, bytes("c")]])
          yield* kv.set(`${p}b`, bytes("b"), TTL)
          yield* elapse(TTL * 2)
          const entries = yield* collect(kv.streamEntries(p, { batchSize: 1 }))
          assert.deepStrictEqual(entries.map(([k]) => k), [`${p}a`, `${p}c`])
          entries[0]![1][0] = 0x7a
          assert.strictEqual(text(yield* kv.get(`${p}a`)), "a")
        }))

      it.effect("while others write: strictly increasing, no duplicates, every stable key once", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const stable = Array.from({ length: 300 }, (_, i) => `${p}s${String(i).padStart(4, "0")}`)
          yield* kv.setMany(stable.map((k) => [k, bytes("s")] as const))
          const churn = (i: number) => `${p}s${String(i % 300).padStart(4, "0")}-c`
          const writer = yield* Effect.forkChild(Effect.forever(Effect.gen(function*() {
            for (let i = 0; i < 300; i += 7) {
              yield* kv.set(churn(i), bytes("c"))
              yield* kv.set(`${p}a${i}`, bytes("c"))
              yield* kv.delete(churn(i + 3))
            }
            yield* Effect.yieldNow
          })))
          const seen = yield* collect(kv.streamKeys(p, { batchSize: 7 }).pipe(Stream.tap(() => Effect.yieldNow)))
          yield* Fiber.interrupt(writer)
          for (let i = 1; i < seen.length; i++) {
            assert.isTrue(byUtf8Bytes(seen[i - 1]!, seen[i]!) < 0, `${seen[i - 1]} then ${seen[i]}`)
          }
          const set = new Set(seen)
          assert.isTrue(stable.every((k) => set.has(k)), "a stable key is missing")
        }))
    })

    describe("atomicity with update", () => {
      it.effect("setMany, deleteMany and deletePrefix wait for an update in flight and see its result", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          for (const op of ["setMany", "deleteMany", "deletePrefix"] as const) {
            const p = fresh()
            // deletePrefix touches only keys it finds: there the key exists, and the update changes it
            if (op === "deletePrefix") yield* kv.set(`${p}k`, bytes("before"))
            const started = yield* Deferred.make<void>()
            const release = yield* Deferred.make<void>()
            const updating = yield* Effect.forkChild(kv.update(`${p}k`, () =>
              Effect.andThen(Deferred.succeed(started, undefined), Effect.as(Deferred.await(release), bytes("u")))))
            yield* Deferred.await(started)
            const batch = yield* Effect.forkChild(
              op === "setMany"
                ? Effect.as(kv.setMany([[`${p}j`, bytes("s")], [`${p}k`, bytes("s")], [`${p}l`, bytes("s")]]), -1)
                : op === "deleteMany"
                ? kv.deleteMany([`${p}k`, `${p}j`])
                : kv.deletePrefix(p)
            )
            yield* sleepReal(150)
            assert.isTrue(Option.isNone(yield* Effect.sync(() => Option.fromUndefinedOr(batch.pollUnsafe()))), `${op} did not wait`)
            yield* Deferred.succeed(release, undefined)
            yield* Fiber.join(updating)
            const result = yield* within(10_000, op, Fiber.join(batch))
            if (op === "setMany") {
              assert.strictEqual(text(yield* kv.get(`${p}k`)), "s")
            } else {
              // the update committed before the batch reached the key: the batch deletes what it wrote
              assert.strictEqual(result, 1, op)
              assert.isFalse(yield* kv.has(`${p}k`), op)
            }
          }
        }))

      it.effect("from inside its own update, a batch touching the key is refused; other keys are fine", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const inside = yield* kv.update(`${p}k`, () =>
            Effect.gen(function*() {
              const a = yield* refusal(kv.setMany([[`${p}j`, bytes("x")], [`${p}k`, bytes("x")]]), "setMany")
              const b = yield* refusal(kv.deleteMany([`${p}k`]), "deleteMany")
              const c = yield* refusal(kv.deletePrefix(p), "deletePrefix")
              assert.strictEqual(a.key, `${p}k`)
              assert.strictEqual(b.key, `${p}k`)
              assert.strictEqual(c.key, `${p}k`)
              yield* kv.setMany([[`${p}other`, bytes("o")]])
              assert.strictEqual(yield* kv.deleteMany([`${p}other`]), 1)
              return bytes("u")
            }))
          assert.strictEqual(text(inside), "u")
          assert.isFalse(yield* kv.has(`${p}j`))
        }))

      for (const op of ["setMany", "deleteMany"] as const) {
        it.effect(`${op} inside update(a) against update(b) inside which a is updated: one fails with a deadlock, writing nothing`, () =>
          Effect.gen(function*() {
            const kv = yield* KvStore.KvStore
            const p = fresh()
            const [a, b, c] = [`${p}a`, `${p}b`, `${p}c`]
            yield* kv.set(c, bytes("c"))
            const holding = [yield* Deferred.make<void>(), yield* Deferred.make<void>()] as const
            const both = Effect.andThen(Deferred.await(holding[0]), Deferred.await(holding[1]))
            const batch = op === "setMany" ? kv.setMany([[b, bytes("0")], [c, bytes("0")]]) : kv.deleteMany([b, c])
            // fiber 0 holds a and writes b and c in one batch; fiber 1 holds b and updates a
            const first = yield* Effect.forkChild(kv.update(a, () =>
              Deferred.succeed(holding[0], undefined).pipe(Effect.andThen(both), Effect.andThen(batch), Effect.as(bytes("0")))))
            const second = yield* Effect.forkChild(kv.update(b, () =>
              Deferred.succeed(holding[1], undefined).pipe(
                Effect.andThen(both),
                Effect.andThen(kv.update(a, () => Effect.succeed(bytes("1")))),
                Effect.as(bytes("1"))
              )))
            const exits = yield* within(10_000, `${op} and update taking keys in a cycle (deadlock?)`, Effect.all([Fiber.await(first), Fiber.await(second)]))
            const failed = exits.flatMap((exit, i) => (Exit.isFailure(exit) ? [i] : []))
            assert.strictEqual(failed.length, 1, exits.map((exit) => (Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "ok")).join("; "))
            const error = yield* refusal(exits[failed[0]!]!, failed[0] === 0 ? op : "update", "Backend")
            assert.include(error.message, "deadlock")
            const read = (key: string) => Effect.map(kv.getOption(key), Option.map(text))
            const stored = [yield* read(a), yield* read(b), yield* read(c)]
            const expected = failed[0] === 0
              ? [Option.some("1"), Option.some("1"), Option.some("c")] // the batch wrote nothing
              : op === "setMany"
              ? [Option.some("0"), Option.some("0"), Option.some("0")]
              : [Option.some("0"), Option.none(), Option.none()]
            assert.deepStrictEqual(stored, expected)
          }))
      }

      it.effect("overlapping concurrent batches and updates never deadlock and lose no increment", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const keys = Array.from({ length: 24 }, (_, i) => `${p}k${i}`)
          const shuffled = (seed: number) => keys.filter((_, i) => (i * 7 + seed) % 3 !== 0).sort((a, b) => ((a.length * seed + a.charCodeAt(a.length - 1)) % 5) - ((b.length * seed + b.charCodeAt(b.length - 1)) % 5))
          const counter = `${p}counter`
          const increment = kv.update(counter, (current) =>
            Effect.succeed(bytes(String(Option.match(current, { onNone: () => 0, onSome: (v) => Number(text(v)) }) + 1))))
          const work = Array.from({ length: 60 }, (_, i) =>
            i % 3 === 0
              ? kv.setMany(shuffled(i).map((k) => [k, bytes(String(i))] as const))
              : i % 3 === 1
              ? kv.deleteMany(shuffled(i).reverse())
              : Effect.andThen(kv.update(keys[i % keys.length]!, () => Effect.succeed(bytes("u"))), increment))
          yield* within(30_000, "batches and updates", Effect.all(work, { concurrency: "unbounded", discard: true }))
          assert.strictEqual(text(yield* kv.get(counter)), "20")
        }))
    })

    describe("prefixed views", () => {
      it.effect("every operation works under the prefix; listings drop it; count and deletePrefix stay inside", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const view = KvStore.prefixed(kv, `${p}ns/`)
          const outside = `${p}ns-outside`
          yield* kv.set(outside, bytes("o"))
          yield* view.set("a", bytes("1"))
          yield* view.setMany([["b", bytes("2")], ["c/d", bytes("3")]])
          assert.strictEqual(text(yield* kv.get(`${p}ns/a`)), "1")
          assert.deepStrictEqual(yield* view.keys(""), ["a", "b", "c/d"])
          assert.deepStrictEqual(yield* view.keys("c"), ["c/d"])
          assert.deepStrictEqual(yield* collect(view.streamKeys("", { batchSize: 2 })), ["a", "b", "c/d"])
          assert.deepStrictEqual((yield* collect(view.streamEntries("c/"))).map(([k, v]) => [k, text(v)]), [["c/d", "3"]])
          assert.deepStrictEqual((yield* view.getMany(["c/d", "x", "a"])).map(Option.map(text)), [Option.some("3"), Option.none(), Option.some("1")])
          assert.strictEqual(yield* view.increment("n", { by: 2 }), 2)
          assert.isTrue(yield* view.setIfAbsent("fresh", bytes("f")))
          assert.isTrue(yield* view.has("fresh"))
          assert.strictEqual(text(yield* view.update("a", () => Effect.succeed(bytes("A")))), "A")
          assert.strictEqual(yield* view.count(""), 5)
          assert.strictEqual(yield* view.deleteMany(["n", "zz"]), 1)
          assert.strictEqual(yield* view.deletePrefix(""), 4)
          assert.strictEqual(yield* view.count(""), 0)
          assert.strictEqual(text(yield* kv.get(outside)), "o", "deletePrefix(\"\") of a view stays inside it")
          assert.strictEqual(yield* Effect.map(view.cleanup, (removed) => removed >= 0), true)
          // data-last
          const dataLast = KvStore.prefixed(`${p}ns/`)(kv)
          yield* dataLast.set("z", bytes("z"))
          assert.strictEqual(text(yield* view.get("z")), "z")
        }))

      it.effect("views nest; prefixed(store, \"\") is the store", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const outer = KvStore.prefixed(kv, p)
          const inner = KvStore.prefixed(outer, "in/")
          yield* inner.set("k", bytes("v"))
          assert.deepStrictEqual(yield* outer.keys(""), ["in/k"])
          assert.deepStrictEqual(yield* inner.keys(""), ["k"])
          assert.strictEqual(text(yield* kv.get(`${p}in/k`)), "v")
          assert.strictEqual(KvStore.prefixed(kv, ""), kv)
          const e = yield* inner.get("nope").pipe(Effect.flip)
          assert.instanceOf(e, KvStore.NotFound)
          assert.strictEqual((e as KvStore.NotFound).key, "nope")
        }))

      it.effect("errors name the view's key; the view's key and the full key must both be valid", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          const p = fresh()
          const view = KvStore.prefixed(kv, p)
          const nf = yield* Effect.flip(view.get("missing"))
          assert.deepStrictEqual([nf._tag, (nf as KvStore.NotFound).key], ["NotFound", "missing"])
          const empty = yield* refusal(view.set("", bytes("x")), "set")
          assert.strictEqual(empty.key, "")
          const long = "x".repeat(2048 - 3) // valid alone, too long with the prefix
          const tooLong = yield* refusal(view.set(long, bytes("x")), "set")
          assert.strictEqual(tooLong.key, long)
          const inBatch = yield* refusal(view.setMany([["ok", bytes("1")], [long, bytes("2")]]), "setMany")
          assert.strictEqual(inBatch.key, long)
          assert.isFalse(yield* view.has("ok"))
          yield* view.set("n", bytes("not a number"))
          const notCounter = yield* refusal(view.increment("n"), "increment")
          assert.strictEqual(notCounter.key, "n")
          assert.notInclude(notCounter.message, p)
          let own: KvStore.KvError | undefined
          yield* view.update("k", () =>
            Effect.map(refusal(view.set("k", bytes("x")), "set"), (error) => {
              own = error
              return bytes("u")
            }))
          assert.strictEqual(own?.key, "k")
          assert.notInclude(own!.message, p)
          // the update function's own errors come out untouched, even a store error with a full key
          const passthrough = yield* view.update("k", () => kv.get(`${p}k-missing`)).pipe(Effect.flip)
          assert.strictEqual((passthrough as KvStore.NotFound).key, `${p}k-missing`)
        }))

      it.effect("an invalid prefix gives a view that refuses every operation (but cleanup)", () =>
        Effect.gen(function*() {
          const kv = yield* KvStore.KvStore
          for (const bad of ["a\u0000", "\udc00", "x".repeat(2049), loose<string>(42)]) {
            const view = KvStore.prefixed(kv, bad)
            yield* refusal(view.get("k"), "get")
            yield* refusal(view.getMany(["k"]), "getMany")
            yield* refusal(Stream.runDrain(view.streamKeys("")), "streamKeys")
            yield* view.cleanup
          }
        }))
    })
  })
}
