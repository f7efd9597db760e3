/**
 * The conformance suite: everything the `KvStore` contract promises, as
 * `@effect/vitest` tests written once against a `Layer<KvStore>`. A backend is
 * done when it passes the whole suite; a third party proves its driver with
 * one call in a test file:
 *
 * ```ts
 * import { conformance } from "effect-kv/conformance"
 * import * as KvStore from "effect-kv/KvStore"
 * import * as Layer from "effect/Layer"
 *
 * conformance("MyStore", Layer.scoped(KvStore.KvStore, KvStore.make(myDriver)))
 * ```
 *
 * With `databaseClock: true` the backend decides expiry on its own clock (e.g.
 * the database's `now()`), so the suite's time steps also wait that long for
 * real; every TTL here is short to keep those waits small. Without it, expiry
 * must follow the Effect `Clock`, which the suite moves with `TestClock`.
 * Tests share one store (and one `TestClock`) and never assume it is empty:
 * each uses keys under its own unique prefix, so the store may be a shared
 * database.
 *
 * Needs `@effect/vitest` (0.30, the Effect 3 line) and `vitest`.
 *
 * @since 0.1.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import { assert, describe, layer } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import { TestClock } from "effect/testing"
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import { randomUUID } from "node:crypto"
import { batchConformance } from "./internal/batchConformance.js"
import { rateLimitConformance } from "./internal/rateLimitConformance.js"
import { schemaConformance } from "./internal/schemaConformance.js"
import { watchConformance } from "./internal/watchConformance.js"
import { byUtf8Bytes, bytes, loose, sleepReal, text, within } from "./internal/conformanceHelpers.js"
import * as KvStore from "./KvStore.js"

/** A user's own typed error, to check `update` passes it through unchanged. */
class Refused extends Data.TaggedError("Refused")<{ readonly why: string }> {}

const assertKvError = (
  error: unknown,
  op: string,
  reason: "InvalidArgument" | "Backend" = "InvalidArgument"
): void => {
  assert.instanceOf(error, KvStore.KvError, `expected a KvError from ${op}, got ${String(error)}`)
  const e = error as KvStore.KvError
  assert.strictEqual(e.reason, reason, e.message)
  assert.strictEqual(e.op, op, e.message)
  assert.isString(e.message)
  assert.isAbove(e.message.length, 0)
}

/** A key of exactly `size` UTF-8 bytes starting with `prefix`, padded with 3-byte "€" then ASCII. */
const keyOfBytes = (prefix: string, size: number): string => {
  let key = prefix
  while (Buffer.byteLength(key, "utf8") + 3 <= size) key += "€"
  while (Buffer.byteLength(key, "utf8") < size) key += "x"
  return key
}

const counter = (current: Option.Option<Uint8Array>): number =>
  Option.match(current, { onNone: () => 0, onSome: (value) => Number(text(value)) })

// ---------------------------------------------------------------------------
// Hostile arguments
// ---------------------------------------------------------------------------

/**
 * One call of the hostile-arguments matrix: its name starts with the
 * operation it calls (`"set: …"`), which is the `op` the refusal must name.
 * `call` only calls the method, so a method that throws makes `call` throw.
 *
 * @since 0.1.0
 * @category hostile arguments
 */
export type HostileCase = readonly [name: string, call: (store: KvStore.KvStore.Service) => Effect.Effect<unknown, unknown>]

const throwing = (): never => {
  throw new Error("effect-kv conformance: a hostile argument was touched")
}

/** A Proxy whose every trap throws: even `in`, `typeof`-free reads and `Array.isArray` callers get an error. */
const throwingProxy = (target: object = {}): object =>
  new Proxy(target, {
    get: throwing,
    has: throwing,
    set: throwing,
    ownKeys: throwing,
    getOwnPropertyDescriptor: throwing,
    getPrototypeOf: throwing,
    defineProperty: throwing,
    apply: throwing,
    construct: throwing
  })

/**
 * The hostile-arguments matrix: calls from plain JavaScript with arguments of
 * the wrong kind, each of which must fail with `KvError` (`InvalidArgument`,
 * the operation in the case's name as `op`) — never throw, never die, never
 * succeed — and write nothing under `prefix`. Fresh arguments on every call
 * (some cases detach an array). The same bad call must give the same `reason`,
 * `op` and `key` on every backend: compare runs with `hostileOutcomes`.
 *
 * @since 0.1.0
 * @category hostile arguments
 */
export const hostileCases = (prefix: string): ReadonlyArray<HostileCase> => {
  const key = prefix + "k"
  const value = new Uint8Array([1, 2, 3])
  const cases: Array<HostileCase> = []
  const add = (name: string, call: HostileCase[1]) => cases.push([name, call])

  const detached = (): Uint8Array => {
    const array = new Uint8Array([1, 2, 3])
    structuredClone(array.buffer, { transfer: [array.buffer] })
    return array
  }
  const badKeys: ReadonlyArray<readonly [string, unknown]> = [
    ["Object.create(null)", Object.create(null)],
    ["an object with a throwing toString", { toString: throwing, valueOf: throwing }],
    ["a Proxy whose traps throw", throwingProxy()],
    ["a number", 42],
    ["null", null],
    ["undefined", undefined],
    ["a Symbol", Symbol("k")]
  ]
  for (const [label, bad] of badKeys) {
    const k = loose<string>(bad)
    add(`get: key is ${label}`, (store) => store.get(k))
    add(`getOption: key is ${label}`, (store) => store.getOption(k))
    add(`has: key is ${label}`, (store) => store.has(k))
    add(`set: key is ${label}`, (store) => store.set(k, value))
    add(`setIfAbsent: key is ${label}`, (store) => store.setIfAbsent(k, value))
    add(`delete: key is ${label}`, (store) => store.delete(k))
    add(`update: key is ${label}`, (store) => store.update(k, () => Effect.succeed(value)))
    add(`increment: key is ${label}`, (store) => store.increment(k))
    add(`timeToLive: key is ${label}`, (store) => store.timeToLive(k))
    add(`expire: key is ${label}`, (store) => store.expire(k, 1000))
    add(`keys: prefix is ${label}`, (store) => store.keys(k))
  }

  const badValues: ReadonlyArray<readonly [string, () => unknown]> = [
    ["a detached Uint8Array", detached],
    ["a Proxy of a Uint8Array", () => new Proxy(new Uint8Array([1, 2, 3]), {})],
    ["Object.create(Uint8Array.prototype)", () => Object.create(Uint8Array.prototype)],
    ["an array", () => [1, 2, 3]],
    ["a string", () => "abc"],
    ["a Proxy whose traps throw", () => throwingProxy(new Uint8Array([1]))]
  ]
  for (const [label, make] of badValues) {
    const v = loose<Uint8Array>(make())
    add(`set: value is ${label}`, (store) => store.set(key, v))
    add(`setIfAbsent: value is ${label}`, (store) => store.setIfAbsent(key, v))
    const w = loose<Uint8Array>(make())
    add(`update: the function returns ${label}`, (store) => store.update(key, () => Effect.succeed(w)))
  }

  const notFunctions: ReadonlyArray<readonly [string, unknown]> = [
    ["a number", 42],
    ["a string", "f"],
    ["null", null],
    ["undefined", undefined],
    ["an object", {}]
  ]
  for (const [label, f] of notFunctions) {
    add(`update: the function is ${label}`, (store) => store.update(key, loose(f)))
  }
  const notEffects: ReadonlyArray<readonly [string, () => unknown]> = [
    ["a plain Uint8Array", () => new Uint8Array([1])],
    ["a Promise", () => Promise.resolve(new Uint8Array([1]))],
    ["undefined", () => undefined],
    ["a Proxy whose traps throw", () => throwingProxy()]
  ]
  for (const [label, make] of notEffects) {
    add(`update: the function returns ${label}, not an Effect`, (store) => store.update(key, loose(make)))
  }

  const badTtls: ReadonlyArray<readonly [string, () => unknown]> = [
    ["a Proxy whose traps throw", () => throwingProxy()],
    ["a Proxy of an array whose traps throw", () => throwingProxy([1, 2])],
    ["{}", () => ({})],
    ["-1", () => -1]
  ]
  for (const [label, make] of badTtls) {
    const ttl = loose<Duration.Input>(make())
    add(`set: TTL is ${label}`, (store) => store.set(key, value, ttl))
    add(`setIfAbsent: TTL is ${label}`, (store) => store.setIfAbsent(key, value, ttl))
    add(`update: TTL is ${label}`, (store) => store.update(key, () => Effect.succeed(value), ttl))
    add(`increment: TTL is ${label}`, (store) => store.increment(key, { ttl }))
    add(`expire: TTL is ${label}`, (store) => store.expire(key, ttl))
  }

  const badBys: ReadonlyArray<readonly [string, unknown]> = [
    ["1.5", 1.5],
    ["NaN", NaN],
    ["Infinity", Infinity],
    ["the string \"1\"", "1"],
    ["2 ** 53", 2 ** 53],
    ["a bigint", 1n]
  ]
  for (const [label, by] of badBys) {
    add(`increment: by is ${label}`, (store) => store.increment(key, { by: loose(by) }))
  }
  add("increment: options are a Proxy whose traps throw", (store) => store.increment(key, loose(throwingProxy())))
  add("increment: options with a throwing getter", (store) =>
    store.increment(key, loose(Object.defineProperty({}, "by", { get: throwing, enumerable: true }))))

  // two bad arguments: the first in the fixed order (key, value or function, TTL) is the one named
  add("set: a string value and a negative TTL", (store) => store.set(key, loose("not bytes"), -1))
  add("update: a number as the function and a negative TTL", (store) => store.update(key, loose(42), -1))
  return cases
}

/**
 * How a backend refused a hostile case, comparable across backends: the
 * case's prefix appears as `<prefix>` in `key` and `message`.
 *
 * @since 0.1.0
 * @category hostile arguments
 */
export interface HostileOutcome {
  /** The `KvError`'s `op`. */
  readonly op: string
  /** The `KvError`'s `reason`. */
  readonly reason: string
  /** The `KvError`'s `key`, with the case's prefix as `<prefix>`. */
  readonly key: string | undefined
  /** The `KvError`'s message, with the case's prefix as `<prefix>`. */
  readonly message: string
}

/** What the suite saw, by backend name, then by case name. */
const outcomesByBackend = new Map<string, Map<string, HostileOutcome>>()

/**
 * The outcomes the suite recorded for `backend` (the name given to
 * `conformance`) in this test file, by case name; empty before its hostile
 * tests ran.
 *
 * @since 0.1.0
 * @category hostile arguments
 */
export const hostileOutcomes = (backend: string): ReadonlyMap<string, HostileOutcome> =>
  outcomesByBackend.get(backend) ?? new Map()

/**
 * Where two backends' recorded outcomes disagree on `reason`, `op` or `key`
 * (the contract's promise; messages may differ), one line per case; cases
 * only one of them ran are listed too.
 *
 * @since 0.1.0
 * @category hostile arguments
 */
export const hostileDifferences = (a: string, b: string): ReadonlyArray<string> => {
  const left = hostileOutcomes(a)
  const right = hostileOutcomes(b)
  const differences: Array<string> = []
  for (const name of new Set([...left.keys(), ...right.keys()])) {
    const x = left.get(name)
    const y = right.get(name)
    if (x === undefined || y === undefined) {
      differences.push(`${name}: only ${x === undefined ? b : a} ran it`)
    } else if (x.reason !== y.reason || x.op !== y.op || x.key !== y.key) {
      differences.push(`${name}: ${a} ${JSON.stringify(x)} vs ${b} ${JSON.stringify(y)}`)
    }
  }
  return differences
}

const describeThrown = (thrown: unknown): string => {
  try {
    return thrown instanceof Error ? thrown.message : String(thrown)
  } catch {
    return typeof thrown
  }
}

/**
 * Runs one case against `store` (built with the same `prefix`): its outcome,
 * or, as the failure, what broke the contract (a synchronous throw, a
 * success, a defect, another error).
 *
 * @since 0.1.0
 * @category hostile arguments
 */
export const runHostileCase = (
  store: KvStore.KvStore.Service,
  prefix: string,
  [name, call]: HostileCase
): Effect.Effect<HostileOutcome, string> =>
  Effect.suspend(() => {
    let effect: unknown
    try {
      effect = call(store)
    } catch (thrown) {
      return Effect.fail(`${name}: the method threw synchronously: ${describeThrown(thrown)}`)
    }
    if (!Effect.isEffect(effect)) return Effect.fail(`${name}: the method did not return an Effect`)
    return Effect.flatMap(Effect.exit(effect as Effect.Effect<unknown, unknown>), (exit) => {
      if (Exit.isSuccess(exit)) return Effect.fail(`${name}: succeeded instead of failing with InvalidArgument`)
      const failure = Cause.findErrorOption(exit.cause)
      if (Option.isNone(failure)) {
        return Effect.fail(`${name}: not a typed failure but ${Cause.pretty(exit.cause)}`)
      }
      const error = failure.value
      if (!(error instanceof KvStore.KvError)) {
        return Effect.fail(`${name}: failed with ${describeThrown(error)}, not a KvError`)
      }
      const relative = (s: string) => s.split(prefix).join("<prefix>")
      return Effect.succeed({
        op: error.op,
        reason: error.reason,
        key: error.key === undefined ? undefined : relative(error.key),
        message: relative(error.message)
      })
    })
  })

/**
 * Options of `conformance`: what the suite must know about the backend.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConformanceOptions {
  /** The backend's expiry follows its own clock, not the Effect `Clock`: time steps also wait in real time. */
  readonly databaseClock?: boolean | undefined
}

/**
 * Registers the whole suite as a `describe` block named after the backend,
 * building `store` once for all its tests.
 *
 * @since 0.1.0
 * @category tests
 */
export const conformance = (
  name: string,
  store: Layer.Layer<KvStore.KvStore, unknown>,
  options: ConformanceOptions = {}
): void => {
  const run = randomUUID().slice(0, 8)
  let tests = 0
  /** A key prefix no other test (nor another run on the same database) uses. */
  const freshPrefix = (): string => `conformance/${run}/${++tests}/`

  /** Moves time forward for the store: the TestClock, and with a database clock the real one too. */
  const advance = (duration: Duration.Input): Effect.Effect<void> => {
    const millis = Duration.toMillis(Duration.fromInputUnsafe(duration))
    return options.databaseClock === true
      ? Effect.andThen(TestClock.adjust(duration), sleepReal(millis))
      : TestClock.adjust(duration)
  }

  /** The value of `key` as text, or undefined when it is missing or expired. */
  const read = (key: string): Effect.Effect<string | undefined, KvStore.KvError, KvStore.KvStore> =>
    KvStore.get(key).pipe(
      Effect.map(text),
      Effect.catchTag("NotFound", () => Effect.succeed(undefined))
    )

  const TTL = Duration.millis(300)
  const PAST_TTL = Duration.millis(400)

  /** Fails the test unless `effect` fails with `KvError` (`InvalidArgument`, `op`): not a success, not a defect. */
  const refused = <A, E, R>(op: string, effect: Effect.Effect<A, E, R>, what = op): Effect.Effect<KvStore.KvError, never, R> =>
    Effect.map(Effect.exit(effect), (exit) => {
      if (Exit.isSuccess(exit)) assert.fail(`${what} succeeded; expected a KvError (InvalidArgument)`)
      const failure = Cause.findErrorOption(exit.cause)
      if (Option.isNone(failure)) assert.fail(`${what}: not a typed failure: ${Cause.pretty(exit.cause)}`)
      assertKvError(failure.value, op)
      return failure.value as KvStore.KvError
    })

  /** The time `key` has left in milliseconds (`"permanent"`), or `"missing"`. */
  const timeLeft = (key: string): Effect.Effect<number | "permanent" | "missing", KvStore.KvError, KvStore.KvStore> =>
    KvStore.timeToLive(key).pipe(
      Effect.map(Option.match({ onNone: () => "permanent" as const, onSome: Duration.toMillis })),
      Effect.catchTag("NotFound", () => Effect.succeed("missing" as const))
    )

  layer(store)(`${name} conformance`, (it) => {
    describe("get and set", () => {
      it.effect("round-trips bytes", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, new Uint8Array([0, 1, 2, 255]))
          assert.deepStrictEqual(Array.from(yield* KvStore.get(key)), [0, 1, 2, 255])
          yield* KvStore.set(key, bytes("second"))
          assert.strictEqual(text(yield* KvStore.get(key)), "second")
          const got = yield* KvStore.get(key)
          assert.instanceOf(got, Uint8Array)
        }))

      it.effect("fails with NotFound carrying the key when missing", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "missing"
          const error = yield* Effect.flip(KvStore.get(key))
          assert.instanceOf(error, KvStore.NotFound)
          assert.strictEqual(error._tag, "NotFound")
          assert.strictEqual((error as KvStore.NotFound).key, key)
        }))

      it.effect("an empty value is a value, not a miss", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const key = prefix + "empty"
          yield* KvStore.set(key, new Uint8Array(0))
          assert.strictEqual((yield* KvStore.get(key)).length, 0)
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [key])
          const seen = yield* Ref.make<Option.Option<Uint8Array>>(Option.none())
          yield* KvStore.update(key, (current) => Effect.as(Ref.set(seen, current), bytes("x")))
          const current = yield* Ref.get(seen)
          assert.isTrue(Option.isSome(current), "update saw the empty value as missing")
          assert.strictEqual(Option.getOrThrow(current).length, 0)
          yield* KvStore.update(key, () => Effect.succeed(new Uint8Array(0)))
          assert.strictEqual((yield* KvStore.get(key)).length, 0)
          assert.isTrue(yield* KvStore.delete(key))
        }))

      it.effect("accepts a Buffer (a Uint8Array subclass) as a value", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "buffer"
          const buffer = Buffer.from("from a buffer")
          yield* KvStore.set(key, buffer)
          buffer.fill(0)
          assert.strictEqual(text(yield* KvStore.get(key)), "from a buffer")
        }))

      it.effect("refuses a value that is not a Uint8Array, writing nothing", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("old"))
          for (const bad of ["a string", null, undefined, 42, [1, 2], new Uint16Array([1])]) {
            // what a JavaScript caller (or a cast) can pass
            const value = bad as unknown as Uint8Array
            assertKvError(yield* Effect.flip(KvStore.set(key, value)), "set")
            assertKvError(yield* Effect.flip(KvStore.update(key, () => Effect.succeed(value))), "update")
          }
          for (const bad of [null, undefined, "f", 42]) {
            // an update "function" that is not one is the caller's mistake, not a defect
            const f = bad as unknown as () => Effect.Effect<Uint8Array>
            assertKvError(yield* Effect.flip(KvStore.update(key, f)), "update")
          }
          assert.strictEqual(yield* read(key), "old")
        }))

      it.effect("keeps its own copy of values", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          const written = bytes("abc")
          yield* KvStore.set(key, written)
          written[0] = 120
          assert.strictEqual(text(yield* KvStore.get(key)), "abc", "mutating the array after set changed the entry")
          const got = yield* KvStore.get(key)
          got[0] = 120
          assert.strictEqual(text(yield* KvStore.get(key)), "abc", "mutating the array get returned changed the entry")

          const returned = bytes("def")
          const result = yield* KvStore.update(key, (current) => {
            // mutating what the function is given must not reach the store either
            Option.map(current, (value) => value.fill(0))
            return Effect.succeed(returned)
          })
          assert.strictEqual(text(result), "def")
          returned[0] = 120
          result[1] = 120
          assert.strictEqual(text(yield* KvStore.get(key)), "def", "mutating update's arrays changed the entry")
          // nor when the function then fails and nothing is written
          yield* Effect.flip(KvStore.update(key, (current) => {
            Option.map(current, (value) => value.fill(0))
            return Effect.fail(new Refused({ why: "after mutating" }))
          }))
          assert.strictEqual(text(yield* KvStore.get(key)), "def", "a failed update's function changed the entry")
        }))
    })

    describe("delete", () => {
      it.effect("returns true only when a live entry was removed", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          yield* KvStore.set(prefix + "live", bytes("v"))
          assert.isTrue(yield* KvStore.delete(prefix + "live"))
          assert.strictEqual(yield* read(prefix + "live"), undefined)
          assert.isFalse(yield* KvStore.delete(prefix + "live"), "second delete")
          assert.isFalse(yield* KvStore.delete(prefix + "never-written"))

          yield* KvStore.set(prefix + "expiring", bytes("v"), TTL)
          yield* advance(PAST_TTL)
          assert.isFalse(yield* KvStore.delete(prefix + "expiring"), "delete of an expired entry")
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [])
        }))
    })

    describe("TTL", () => {
      it.effect("an entry written by set expires everywhere at once", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const key = prefix + "k"
          yield* KvStore.set(key, bytes("v"), TTL)
          yield* KvStore.set(prefix + "permanent", bytes("p"))
          assert.strictEqual(yield* read(key), "v")
          yield* advance(PAST_TTL)
          const error = yield* Effect.flip(KvStore.get(key))
          assert.instanceOf(error, KvStore.NotFound)
          assert.strictEqual((error as KvStore.NotFound).key, key)
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [prefix + "permanent"])
          const seen = yield* KvStore.update(key, (current) => Effect.succeed(bytes(Option.isNone(current) ? "none" : "some")))
          assert.strictEqual(text(seen), "none", "update's function saw an expired value")
        }))

      it.effect("an entry written by update with a TTL expires", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("permanent"))
          yield* KvStore.update(key, () => Effect.succeed(bytes("v")), TTL)
          assert.strictEqual(yield* read(key), "v")
          yield* advance(PAST_TTL)
          assert.strictEqual(yield* read(key), undefined)
        }))

      it.effect("set replaces the expiry: without a TTL the entry becomes permanent", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("v1"), TTL)
          yield* KvStore.set(key, bytes("v2"))
          yield* advance(PAST_TTL)
          assert.strictEqual(yield* read(key), "v2")
        }))

      it.effect("set replaces the expiry: a TTL on a permanent entry applies", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("v1"))
          yield* KvStore.set(key, bytes("v2"), TTL)
          yield* advance(PAST_TTL)
          assert.strictEqual(yield* read(key), undefined)
        }))

      it.effect("set replaces the expiry: a new TTL counts from the new write", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("v1"), TTL)
          yield* advance(Duration.millis(200))
          yield* KvStore.set(key, bytes("v2"), TTL)
          yield* advance(Duration.millis(200)) // past the first expiry, before the second
          assert.strictEqual(yield* read(key), "v2")
          yield* advance(Duration.millis(200))
          assert.strictEqual(yield* read(key), undefined)
        }))

      it.effect("update without a TTL makes the entry permanent", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("v1"), TTL)
          yield* KvStore.update(key, () => Effect.succeed(bytes("v2")))
          yield* advance(PAST_TTL)
          assert.strictEqual(yield* read(key), "v2")
        }))

      it.effect("undefined, 0, Duration.zero, Duration.infinity and Infinity mean no expiry", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const forever: ReadonlyArray<readonly [string, Duration.Input | undefined]> = [
            ["undefined", undefined],
            ["zero-number", 0],
            ["zero-duration", Duration.zero],
            ["infinity-duration", Duration.infinity],
            ["infinity-number", Infinity],
            ["zero-bigint", 0n],
            ["zero-string", "0 millis"],
            ["zero-pair", [0, 0]]
          ]
          for (const [label, ttl] of forever) {
            yield* KvStore.set(prefix + "set-" + label, bytes(label), ttl)
            yield* KvStore.update(prefix + "update-" + label, () => Effect.succeed(bytes(label)), ttl)
          }
          yield* KvStore.set(prefix + "witness", bytes("expires"), TTL)
          yield* advance(PAST_TTL)
          assert.strictEqual(yield* read(prefix + "witness"), undefined, "time did not pass for the store")
          for (const [label] of forever) {
            assert.strictEqual(yield* read(prefix + "set-" + label), label, `set with TTL ${label}`)
            assert.strictEqual(yield* read(prefix + "update-" + label), label, `update with TTL ${label}`)
          }
        }))

      it.effect("positive TTLs in every input form expire", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const forms: ReadonlyArray<readonly [string, Duration.Input]> = [
            ["number", 300],
            ["bigint", 300_000_000n],
            ["string", "300 millis"],
            ["pair", [0, 300_000_000]],
            ["duration", Duration.millis(300)]
          ]
          for (const [label, ttl] of forms) yield* KvStore.set(prefix + label, bytes(label), ttl)
          assert.strictEqual((yield* KvStore.keys(prefix)).length, forms.length)
          yield* advance(PAST_TTL)
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [])
        }))

      it.effect("a negative, NaN or malformed TTL fails with InvalidArgument and writes nothing", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("old"))
          const bad: ReadonlyArray<unknown> = [
            -5,
            -1,
            NaN,
            -Infinity,
            -1n,
            [-1, 0],
            [0, -1],
            [NaN, 0],
            [0, NaN],
            "-1 millis",
            "-5 seconds",
            "garbage",
            "",
            null,
            {},
            // Effect 4's durations can be negative, and it has an object and an "-Infinity" form
            Duration.millis(-5),
            Duration.millis(-Infinity),
            "-Infinity",
            { seconds: -1 },
            { seconds: 1, parsecs: 2 }
          ]
          let called = 0
          for (const ttl of bad) {
            // what a JavaScript caller (or a cast) can pass
            const input = ttl as Duration.Input
            assertKvError(yield* Effect.flip(KvStore.set(key, bytes("new"), input)), "set")
            assertKvError(
              yield* Effect.flip(KvStore.update(key, () => Effect.sync(() => ++called).pipe(Effect.as(bytes("new"))), input)),
              "update"
            )
            assertKvError(
              yield* Effect.flip(KvStore.set(key + "-fresh", bytes("new"), input)),
              "set"
            )
          }
          assert.strictEqual(called, 0, "update ran its function despite a bad TTL")
          assert.strictEqual(yield* read(key), "old")
          assert.strictEqual(yield* read(key + "-fresh"), undefined)
          // and the entry is still permanent: the bad TTL did not touch its expiry
          yield* advance(PAST_TTL)
          assert.strictEqual(yield* read(key), "old")
        }))
    })

    describe("keys", () => {
      const badKeys = (prefix: string): ReadonlyArray<readonly [string, string]> => [
        ["empty", ""],
        ["2049 ASCII bytes", prefix + "x".repeat(2049 - Buffer.byteLength(prefix))],
        ["2049 bytes of 3-byte characters", "€".repeat(683)],
        ["2049 bytes ending in an astral character", keyOfBytes(prefix, 2045) + "😀"],
        ["NUL", prefix + "a\u0000b"],
        ["lone high surrogate", prefix + "a\uD800b"],
        ["lone high surrogate at the end", prefix + "a\uD83D"],
        ["lone low surrogate", prefix + "a\uDC00b"],
        ["reversed surrogate pair", prefix + "\uDE00\uD83D"]
      ]

      it.effect("every operation refuses an invalid key with InvalidArgument, never a defect", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          let called = 0
          for (const [label, key] of badKeys(prefix)) {
            const check = (op: string, error: unknown) => {
              assert.instanceOf(error, KvStore.KvError, `${op} of a key with ${label}`)
              assertKvError(error, op)
            }
            check("get", yield* Effect.flip(KvStore.get(key)))
            check("set", yield* Effect.flip(KvStore.set(key, bytes("v"))))
            check("set", yield* Effect.flip(KvStore.set(key, bytes("v"), TTL)))
            check("delete", yield* Effect.flip(KvStore.delete(key)))
            check(
              "update",
              yield* Effect.flip(KvStore.update(key, () => Effect.sync(() => ++called).pipe(Effect.as(bytes("v")))))
            )
            if (key !== "") check("keys", yield* Effect.flip(KvStore.keys(key)))
          }
          assert.strictEqual(called, 0, "update ran its function for an invalid key")
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [], "something was written under an invalid key")
        }))

      it.effect("a non-string key is refused with InvalidArgument", () =>
        Effect.gen(function*() {
          for (const bad of [undefined, null, 42]) {
            const key = bad as unknown as string
            assertKvError(yield* Effect.flip(KvStore.get(key)), "get")
            assertKvError(yield* Effect.flip(KvStore.set(key, bytes("v"))), "set")
            assertKvError(yield* Effect.flip(KvStore.delete(key)), "delete")
            assertKvError(yield* Effect.flip(KvStore.update(key, () => Effect.succeed(bytes("v")))), "update")
          }
        }))

      it.effect("accepts keys at the limits: exactly 2048 bytes, surrogate pairs, one character", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const good = [
            prefix + "x".repeat(2048 - Buffer.byteLength(prefix)),
            keyOfBytes(prefix, 2048),
            keyOfBytes(prefix, 2044) + "😀",
            prefix + "😀 emoji",
            prefix + "\uFFFD\uE000\uFFFF",
            prefix + "%_\\'\";--"
          ]
          for (const key of good) assert.isAtMost(Buffer.byteLength(key), 2048)
          assert.strictEqual(Buffer.byteLength(good[0]!), 2048)
          assert.strictEqual(Buffer.byteLength(good[1]!), 2048)
          assert.strictEqual(Buffer.byteLength(good[2]!), 2048)
          for (const key of good) {
            yield* KvStore.set(key, bytes(key))
            assert.strictEqual(yield* read(key), key)
            yield* KvStore.update(key, (current) => Effect.succeed(Option.getOrThrow(current)))
          }
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [...good].sort(byUtf8Bytes))
          for (const key of good) assert.deepStrictEqual(yield* KvStore.keys(key), [key])
          for (const key of good) assert.isTrue(yield* KvStore.delete(key))

          // a one-character key is valid; use an unusual one so runs do not collide on it
          const single = "\u{10FFFD}"
          yield* KvStore.set(single, bytes("one"))
          assert.strictEqual(yield* read(single), "one")
          yield* KvStore.delete(single)
        }))

      it.effect("matches the prefix literally: %, _ and \\ are not wildcards", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const all = ["a%b", "axb", "a_c", "abc", "a\\d", "aXd", "a"].map((k) => prefix + k)
          for (const key of all) yield* KvStore.set(key, bytes("v"))
          assert.deepStrictEqual(yield* KvStore.keys(prefix + "a%"), [prefix + "a%b"])
          assert.deepStrictEqual(yield* KvStore.keys(prefix + "a_"), [prefix + "a_c"])
          assert.deepStrictEqual(yield* KvStore.keys(prefix + "a\\"), [prefix + "a\\d"])
          assert.deepStrictEqual(yield* KvStore.keys(prefix + "a\\d"), [prefix + "a\\d"])
          assert.deepStrictEqual(yield* KvStore.keys(prefix + "%"), [])
          assert.deepStrictEqual(yield* KvStore.keys(prefix + "_"), [])
          assert.deepStrictEqual(yield* KvStore.keys(prefix + "ab"), [prefix + "abc"])
          assert.deepStrictEqual(yield* KvStore.keys(prefix + "A"), [], "prefix matching ignored case")
          assert.deepStrictEqual(yield* KvStore.keys(prefix + "a"), [...all].sort(byUtf8Bytes))
          assert.deepStrictEqual(yield* KvStore.keys(prefix + "nothing"), [])
        }))

      it.effect("sorts by Unicode code point (UTF-8 byte order), not UTF-16 order", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const suffixes = ["b", "a", "B", "ab", "a b", "é", "\uFFFD", "\uE000", "😀", "𝄞", "\u0080", "z", "~", "10", "9"]
          const all = suffixes.map((s) => prefix + s)
          for (const key of [...all].reverse()) yield* KvStore.set(key, bytes("v"))
          const expected = [...all].sort(byUtf8Bytes)
          assert.notDeepEqual(expected, [...all].sort(), "the fixture must tell code point order from UTF-16 order")
          assert.deepStrictEqual(yield* KvStore.keys(prefix), expected)
          const everything = yield* KvStore.keys("")
          assert.deepStrictEqual(everything.filter((k) => k.startsWith(prefix)), expected)
          // keys("") is sorted as a whole, not just our slice of it
          for (let i = 1; i < everything.length; i++) {
            assert.isAtMost(byUtf8Bytes(everything[i - 1]!, everything[i]!), 0, "keys(\"\") is not sorted")
          }
        }))

      it.effect("never lists expired keys", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          yield* KvStore.set(prefix + "a", bytes("v"), TTL)
          yield* KvStore.set(prefix + "b", bytes("v"))
          yield* KvStore.update(prefix + "c", () => Effect.succeed(bytes("v")), TTL)
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [prefix + "a", prefix + "b", prefix + "c"])
          yield* advance(PAST_TTL)
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [prefix + "b"])
          assert.deepStrictEqual((yield* KvStore.keys("")).filter((k) => k.startsWith(prefix)), [prefix + "b"])
        }))
    })

    describe("update", () => {
      it.effect("creates a missing key and returns the value written", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          const seen = yield* Ref.make<Option.Option<Uint8Array> | undefined>(undefined)
          const result = yield* KvStore.update(key, (current) => Effect.as(Ref.set(seen, current), bytes("created")))
          assert.strictEqual(text(result), "created")
          assert.isTrue(Option.isNone((yield* Ref.get(seen))!))
          assert.strictEqual(yield* read(key), "created")
        }))

      it.effect("passes the current value to the function", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("41"))
          const result = yield* KvStore.update(key, (current) => Effect.succeed(bytes(String(counter(current) + 1))))
          assert.strictEqual(text(result), "42")
          assert.strictEqual(yield* read(key), "42")
        }))

      it.effect("rolls back with the function's own typed error, unchanged", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          yield* KvStore.set(prefix + "existing", bytes("old"))
          const refused = new Refused({ why: "no" })
          // the very instance: a store that ran the function inside a span would hand back a proxy
          const isRefused = (error: unknown) => error === refused
          const error = yield* Effect.flip(KvStore.update(prefix + "existing", () => Effect.fail(refused)))
          assert.isTrue(isRefused(error), "the error is not the function's own instance")
          assert.strictEqual(yield* read(prefix + "existing"), "old")

          const error2 = yield* Effect.flip(KvStore.update(prefix + "missing", () => Effect.fail(refused), TTL))
          assert.isTrue(isRefused(error2), "the error is not the function's own instance")
          assert.strictEqual(yield* read(prefix + "missing"), undefined)

          // a failure after using the store for another key inside the function
          const error3 = yield* Effect.flip(
            KvStore.update(prefix + "existing", () =>
              KvStore.get(prefix + "existing-other").pipe(
                Effect.catchTag("NotFound", () => Effect.void),
                Effect.andThen(Effect.fail(refused))
              ))
          )
          assert.isTrue(isRefused(error3), "the error is not the function's own instance")
          assert.strictEqual(yield* read(prefix + "existing"), "old")
          // the key is not left locked
          yield* within(5_000, "update after a failed update", KvStore.update(prefix + "existing", () => Effect.succeed(bytes("new"))))
          assert.strictEqual(yield* read(prefix + "existing"), "new")
        }))

      it.effect("a defect in the function writes nothing and leaves no lock", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("old"))
          const exit = yield* Effect.exit(KvStore.update(key, () => Effect.die("boom")))
          assert.isTrue(Exit.isFailure(exit) && Cause.hasDies(exit.cause), "the defect did not come out as a defect")
          const thrown = yield* Effect.exit(KvStore.update(key, (): Effect.Effect<Uint8Array> => {
            throw new Error("thrown, not failed")
          }))
          assert.isTrue(Exit.isFailure(thrown))
          assert.strictEqual(yield* read(key), "old")
          yield* within(5_000, "update after a defect", KvStore.update(key, () => Effect.succeed(bytes("new"))))
          assert.strictEqual(yield* read(key), "new")
        }))

      it.effect("interrupted mid-function: nothing written, no lock left behind", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          for (const key of [prefix + "existing", prefix + "missing"]) {
            if (key.endsWith("existing")) yield* KvStore.set(key, bytes("old"))
            const started = yield* Deferred.make<void>()
            const fiber = yield* Effect.forkChild(
              KvStore.update(key, () => Effect.andThen(Deferred.succeed(started, undefined), Effect.never))
            )
            yield* Deferred.await(started)
            yield* Fiber.interrupt(fiber)
            assert.strictEqual(yield* read(key), key.endsWith("existing") ? "old" : undefined, "an interrupted update wrote")
            const after = yield* within(
              5_000,
              "update after an interrupted update (key left locked?)",
              KvStore.update(key, (current) => Effect.succeed(bytes(`after-${Option.isSome(current)}`)))
            )
            assert.strictEqual(text(after), `after-${key.endsWith("existing")}`)
            yield* within(5_000, "set after an interrupted update", KvStore.set(key, bytes("set")))
            assert.isTrue(yield* within(5_000, "delete after an interrupted update", KvStore.delete(key)))
          }
        }))

      it.effect("an update waiting for the lock can be interrupted without harm", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          const started = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const holder = yield* Effect.forkChild(
            KvStore.update(key, () => Deferred.succeed(started, undefined).pipe(Effect.andThen(Deferred.await(release)), Effect.as(bytes("holder"))))
          )
          yield* Deferred.await(started)
          const waiter = yield* Effect.forkChild(KvStore.update(key, () => Effect.succeed(bytes("waiter"))))
          yield* sleepReal(20)
          yield* Fiber.interrupt(waiter)
          yield* Deferred.succeed(release, undefined)
          assert.strictEqual(text(yield* Fiber.join(holder)), "holder")
          assert.strictEqual(yield* read(key), "holder")
          yield* within(5_000, "update after an interrupted waiter", KvStore.update(key, () => Effect.succeed(bytes("last"))))
          assert.strictEqual(yield* read(key), "last")
        }))

      it.effect("of an expired key sees none", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("5"), TTL)
          yield* advance(PAST_TTL)
          const result = yield* KvStore.update(key, (current) => Effect.succeed(bytes(String(counter(current) + 1))))
          assert.strictEqual(text(result), "1")
          assert.strictEqual(yield* read(key), "1")
        }))

      it.effect("150 concurrent updates of one missing key lose no write", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "counter"
          const n = 150
          const results = yield* Effect.all(
            Array.from({ length: n }, () =>
              KvStore.update(key, (current) =>
                // yield between read and write, so an update that is not atomic would lose writes
                Effect.yieldNow.pipe(Effect.as(bytes(String(counter(current) + 1)))))),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(yield* read(key), String(n))
          assert.deepStrictEqual(
            results.map((r) => Number(text(r))).sort((a, b) => a - b),
            Array.from({ length: n }, (_, i) => i + 1),
            "each update must see the previous one's value"
          )
        }))

      it.effect("concurrent updates of an expired key lose no write", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "counter"
          yield* KvStore.set(key, bytes("1000"), TTL)
          yield* advance(PAST_TTL)
          yield* Effect.all(
            Array.from({ length: 100 }, () =>
              KvStore.update(key, (current) => Effect.yieldNow.pipe(Effect.as(bytes(String(counter(current) + 1)))))),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(yield* read(key), "100")
        }))

      for (const op of ["set", "delete"] as const) {
        for (const initially of ["existing", "missing"] as const) {
          it.effect(`${op} waits for an update in flight of the same ${initially} key`, () =>
            Effect.gen(function*() {
              const key = freshPrefix() + "k"
              if (initially === "existing") yield* KvStore.set(key, bytes("before"))
              const started = yield* Deferred.make<void>()
              const release = yield* Deferred.make<void>()
              const updating = yield* Effect.forkChild(
                KvStore.update(key, () =>
                  Deferred.succeed(started, undefined).pipe(
                    Effect.andThen(Deferred.await(release)),
                    Effect.as(bytes("updated"))
                  ))
              )
              yield* Deferred.await(started)
              const done = yield* Ref.make(false)
              const writer = yield* Effect.forkChild(
                (op === "set" ? KvStore.set(key, bytes("written")) : KvStore.delete(key)).pipe(
                  Effect.tap(() => Ref.set(done, true))
                )
              )
              // give a writer that does not wait every chance to finish: fibers and a real round trip
              for (let i = 0; i < 20; i++) yield* Effect.yieldNow
              yield* sleepReal(50)
              assert.isFalse(yield* Ref.get(done), `${op} did not wait for the update`)
              yield* Deferred.succeed(release, undefined)
              assert.strictEqual(text(yield* Fiber.join(updating)), "updated")
              const result = yield* Fiber.join(writer)
              if (op === "set") {
                assert.strictEqual(yield* read(key), "written")
              } else {
                assert.isTrue(result, "delete ran after the update, so it removed a live entry")
                assert.strictEqual(yield* read(key), undefined)
              }
            }))
        }
      }

      it.effect("updates of different keys do not wait for each other", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const aStarted = yield* Deferred.make<void>()
          const bDone = yield* Deferred.make<void>()
          // A's function finishes only after B's whole update did: a store that serialized them would deadlock
          const a = yield* Effect.forkChild(
            KvStore.update(prefix + "a", () =>
              Deferred.succeed(aStarted, undefined).pipe(
                Effect.andThen(Deferred.await(bDone)),
                Effect.as(bytes("a"))
              ))
          )
          yield* Deferred.await(aStarted)
          yield* within(5_000, "update of B while A's update is in flight", KvStore.update(prefix + "b", () => Effect.succeed(bytes("b"))))
          yield* within(5_000, "set of B while A's update is in flight", KvStore.set(prefix + "b", bytes("b2")))
          yield* Deferred.succeed(bDone, undefined)
          yield* within(5_000, "update of A", Fiber.join(a))
          assert.strictEqual(yield* read(prefix + "a"), "a")
          assert.strictEqual(yield* read(prefix + "b"), "b2")
        }))

      it.effect("the function may use the store for other keys", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          yield* KvStore.set(prefix + "source", bytes("7"))
          yield* KvStore.set(prefix + "doomed", bytes("x"))
          const result = yield* within(
            5_000,
            "update whose function uses other keys",
            KvStore.update(prefix + "target", () =>
              Effect.gen(function*() {
                const source = counter(Option.some(yield* KvStore.get(prefix + "source")))
                yield* KvStore.set(prefix + "side", bytes("side"))
                yield* KvStore.delete(prefix + "doomed")
                const nested = yield* KvStore.update(prefix + "nested", (current) => Effect.succeed(bytes(String(counter(current) + source))))
                const listed = yield* KvStore.keys(prefix)
                return bytes(`${text(nested)}:${listed.length}`)
              }))
          )
          assert.strictEqual(text(result), "7:3") // nested, side, source
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [prefix + "nested", prefix + "side", prefix + "source", prefix + "target"])
        }))

      it.effect("writing the same key inside its own update function fails instead of hanging", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("old"))
          const attempts: ReadonlyArray<readonly [string, Effect.Effect<unknown, KvStore.KvError, KvStore.KvStore>]> = [
            ["set", KvStore.set(key, bytes("inner"))],
            ["delete", KvStore.delete(key)],
            ["update", KvStore.update(key, () => Effect.succeed(bytes("inner")))],
            ["increment", KvStore.increment(key)],
            ["setIfAbsent", KvStore.setIfAbsent(key, bytes("inner"))],
            ["expire", KvStore.expire(key, TTL)],
            // a fiber forked and joined inside the function is inside the update too
            ["set", Effect.flatMap(Effect.forkChild(KvStore.set(key, bytes("inner"))), Fiber.join)]
          ]
          for (const [op, inner] of attempts) {
            const error = yield* within(
              5_000,
              `${op} inside the key's own update (deadlock?)`,
              Effect.flip(KvStore.update(key, () => Effect.as(inner, bytes("outer"))))
            )
            assertKvError(error, op)
            assert.strictEqual(yield* read(key), "old")
          }
          // reading the key inside its own update is fine
          const result = yield* KvStore.update(key, () => Effect.map(KvStore.get(key), (v) => bytes(text(v) + "!")))
          assert.strictEqual(text(result), "old!")
        }))
    })

    describe("deadlocks", () => {
      /** Appends `tag` to the key's text. */
      const append = (tag: string) => (current: Option.Option<Uint8Array>) =>
        Effect.succeed(bytes(Option.match(current, { onNone: () => "", onSome: text }) + tag))

      /**
       * Fiber i updates keys[i] and, once every fiber holds its key, keys[i + 1]
       * (mod n) inside: nested updates taking the keys in a cycle. Every write
       * appends the fiber's number. The fibers' exits.
       */
      const crossedUpdates = (keys: ReadonlyArray<string>) =>
        Effect.gen(function*() {
          const holding = yield* Effect.forEach(keys, () => Deferred.make<void>())
          const allHolding = Effect.forEach(holding, Deferred.await, { discard: true })
          const fibers = yield* Effect.forEach(keys, (key, i) =>
            Effect.forkChild(KvStore.update(key, (current) =>
              Deferred.succeed(holding[i]!, undefined).pipe(
                Effect.andThen(allHolding),
                Effect.andThen(KvStore.update(keys[(i + 1) % keys.length]!, append(String(i)))),
                Effect.andThen(append(String(i))(current))
              ))))
          return yield* within(10_000, "nested updates taking keys in a cycle (deadlock?)", Effect.forEach(fibers, Fiber.await))
        })

      for (const size of [2, 3]) {
        it.effect(`nested updates of ${size} keys in a cycle: exactly one fails with a deadlock and writes nothing, the others complete`, () =>
          Effect.gen(function*() {
            const prefix = freshPrefix()
            const keys = Array.from({ length: size }, (_, i) => `${prefix}${String.fromCharCode(97 + i)}`)
            const exits = yield* crossedUpdates(keys)
            const failed = exits.flatMap((exit, i) => (Exit.isFailure(exit) ? [i] : []))
            assert.strictEqual(
              failed.length,
              1,
              `expected one failure, got ${failed.length}: ${exits.map((exit) => Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "ok").join("; ")}`
            )
            const loser = failed[0]!
            const failure = Cause.findErrorOption((exits[loser] as Exit.Failure<unknown, unknown>).cause)
            assert.isTrue(Option.isSome(failure), "the deadlock is a typed failure")
            const error = Option.getOrThrow(failure)
            assertKvError(error, "update", "Backend")
            const e = error as KvStore.KvError
            assert.include(e.message, "deadlock")
            assert.include(e.message, "update")
            assert.strictEqual(e.key, keys[(loser + 1) % size], e.message)
            // key k is written by fiber k (outside) and fiber k − 1 (inside): the loser's writes are nowhere
            for (const [k, key] of keys.entries()) {
              const writers = [k, (k - 1 + size) % size].filter((i) => i !== loser).map(String).sort()
              const stored = yield* read(key)
              assert.deepStrictEqual(Array.from(stored ?? "").sort(), writers, `${key}: ${stored}`)
            }
            // nothing is left locked
            for (const key of keys) {
              yield* within(5_000, "update after the deadlock", KvStore.update(key, () => Effect.succeed(bytes("free"))))
            }
          }))
      }
    })

    describe("forked fibers and the same-key guard", () => {
      const forks = [["fork", Effect.forkChild], ["forkDaemon", Effect.forkDetach]] as const
      const writes = ["set", "update", "delete", "increment"] as const
      for (const [forkName, fork] of forks) {
        for (const op of writes) {
          for (const meanwhile of ["free", "held by another update"] as const) {
            const title = meanwhile === "free"
              ? `a fiber forked (${forkName}) inside update(A) may ${op} A once the update has ended`
              : `a fiber forked (${forkName}) inside update(A) waits, not refused, to ${op} A while a later update holds A`
            it.effect(title, () =>
              Effect.gen(function*() {
                const key = freshPrefix() + "A"
                yield* KvStore.set(key, bytes("0"))
                const updateReturned = yield* Deferred.make<void>()
                const write: Effect.Effect<unknown, KvStore.KvError, KvStore.KvStore> = op === "set"
                  ? KvStore.set(key, bytes("from the fork"))
                  : op === "update"
                  ? KvStore.update(key, (current) => Effect.succeed(bytes(`${text(Option.getOrThrow(current))}+fork`)))
                  : op === "delete"
                  ? KvStore.delete(key)
                  : KvStore.increment(key)
                const forked = yield* Deferred.make<Fiber.Fiber<unknown, KvStore.KvError>>()
                yield* KvStore.update(key, () =>
                  Effect.gen(function*() {
                    const fiber = yield* fork(Effect.andThen(Deferred.await(updateReturned), write))
                    yield* Deferred.succeed(forked, fiber)
                    return bytes("1")
                  }))
                const fiber = yield* Deferred.await(forked)
                let before = "1"
                if (meanwhile === "free") {
                  yield* Deferred.succeed(updateReturned, undefined)
                } else {
                  // an unrelated update of A: the fork's old hold must not count as this one
                  const secondStarted = yield* Deferred.make<void>()
                  const releaseSecond = yield* Deferred.make<void>()
                  const second = yield* Effect.forkChild(KvStore.update(key, () =>
                    Deferred.succeed(secondStarted, undefined).pipe(
                      Effect.andThen(Deferred.await(releaseSecond)),
                      Effect.as(bytes("5"))
                    )))
                  yield* Deferred.await(secondStarted)
                  yield* Deferred.succeed(updateReturned, undefined)
                  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
                  yield* sleepReal(30)
                  const early = yield* Effect.sync(() => Option.fromUndefinedOr(fiber.pollUnsafe()))
                  assert.isTrue(
                    Option.isNone(early),
                    `the fork's ${op} did not wait for the update in flight: ${
                      Option.isSome(early) && Exit.isFailure(early.value) ? Cause.pretty(early.value.cause) : "it finished"
                    }`
                  )
                  yield* Deferred.succeed(releaseSecond, undefined)
                  yield* Fiber.join(second)
                  before = "5"
                }
                const exit = yield* within(5_000, `${op} from the forked fiber (waiting on an ended update?)`, Fiber.await(fiber))
                assert.isTrue(
                  Exit.isSuccess(exit),
                  `the forked fiber's ${op} failed: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`
                )
                const result = (exit as Exit.Success<unknown, never>).value
                switch (op) {
                  case "set":
                    assert.strictEqual(yield* read(key), "from the fork")
                    break
                  case "update":
                    assert.strictEqual(yield* read(key), `${before}+fork`)
                    break
                  case "delete":
                    assert.isTrue(result, "delete saw no live entry")
                    assert.strictEqual(yield* read(key), undefined)
                    break
                  case "increment":
                    assert.strictEqual(result, Number(before) + 1)
                    assert.strictEqual(yield* read(key), String(Number(before) + 1))
                }
                // and the key is free for everyone afterwards
                yield* within(5_000, "update after the fork's write", KvStore.update(key, () => Effect.succeed(bytes("last"))))
                assert.strictEqual(yield* read(key), "last")
              }))
          }
        }
      }
    })

    describe("getOption and has", () => {
      it.effect("getOption: some with a copy of the live value, none when missing or expired", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          yield* KvStore.set(prefix + "live", bytes("v"))
          const found = yield* KvStore.getOption(prefix + "live")
          assert.isTrue(Option.isSome(found))
          assert.strictEqual(text(Option.getOrThrow(found)), "v")
          Option.getOrThrow(found).fill(0)
          assert.strictEqual(yield* read(prefix + "live"), "v", "mutating what getOption returned changed the entry")
          yield* KvStore.set(prefix + "empty", new Uint8Array(0))
          assert.strictEqual(Option.getOrThrow(yield* KvStore.getOption(prefix + "empty")).length, 0)
          assert.isTrue(Option.isNone(yield* KvStore.getOption(prefix + "missing")))
          yield* KvStore.set(prefix + "expiring", bytes("v"), TTL)
          assert.isTrue(Option.isSome(yield* KvStore.getOption(prefix + "expiring")))
          yield* advance(PAST_TTL)
          assert.isTrue(Option.isNone(yield* KvStore.getOption(prefix + "expiring")))
        }))

      it.effect("has: true for a live entry (also an empty one), false when missing or expired", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          yield* KvStore.set(prefix + "live", bytes("v"))
          yield* KvStore.set(prefix + "empty", new Uint8Array(0))
          yield* KvStore.set(prefix + "expiring", bytes("v"), TTL)
          assert.isTrue(yield* KvStore.has(prefix + "live"))
          assert.isTrue(yield* KvStore.has(prefix + "empty"))
          assert.isTrue(yield* KvStore.has(prefix + "expiring"))
          assert.isFalse(yield* KvStore.has(prefix + "missing"))
          yield* advance(PAST_TTL)
          assert.isFalse(yield* KvStore.has(prefix + "expiring"))
          assert.isTrue(yield* KvStore.has(prefix + "live"))
          yield* KvStore.delete(prefix + "live")
          assert.isFalse(yield* KvStore.has(prefix + "live"))
        }))
    })

    describe("setIfAbsent", () => {
      it.effect("writes once; on a live key it writes nothing and keeps the old expiry", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          assert.isTrue(yield* KvStore.setIfAbsent(key, bytes("first"), TTL))
          assert.strictEqual(yield* read(key), "first")
          assert.isFalse(yield* KvStore.setIfAbsent(key, bytes("second")))
          assert.isFalse(yield* KvStore.setIfAbsent(key, bytes("third"), "1 hour"))
          assert.strictEqual(yield* read(key), "first")
          const left = yield* timeLeft(key)
          assert.isTrue(typeof left === "number" && left <= 300, `the expiry changed: ${left}`)
          yield* advance(PAST_TTL)
          assert.strictEqual(yield* read(key), undefined, "a refused setIfAbsent changed the expiry")
        }))

      it.effect("writes over an expired key, with its own expiry", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("old"), TTL)
          yield* advance(PAST_TTL)
          assert.isTrue(yield* KvStore.setIfAbsent(key, bytes("new")))
          assert.strictEqual(yield* read(key), "new")
          assert.strictEqual(yield* timeLeft(key), "permanent")
          yield* KvStore.delete(key)
          assert.isTrue(yield* KvStore.setIfAbsent(key, bytes("again")), "after delete")
          assert.strictEqual(yield* read(key), "again")
        }))

      it.effect("of 50 concurrent calls on one missing key, exactly one writes", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          const results = yield* Effect.all(
            Array.from({ length: 50 }, (_, i) => Effect.map(KvStore.setIfAbsent(key, bytes(`writer ${i}`)), (won) => [i, won] as const)),
            { concurrency: "unbounded" }
          )
          const winners = results.filter(([, won]) => won)
          assert.strictEqual(winners.length, 1, `${winners.length} calls returned true`)
          assert.strictEqual(yield* read(key), `writer ${winners[0]![0]}`, "the stored value is not the winner's")
        }))

      // Expired keys are left to the PostgreSQL tests: an `advance` here moves the suite's shared
      // TestClock, and "removes expired entries and counts them" fails when that brings the
      // store's scheduled sweep (every minute) into its window (seen on NearCache over MemoryStore).
      it.effect("concurrent calls on many keys, four per key: one true per missing key, none for a live one, the winner's value stored", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const missing = Array.from({ length: 25 }, (_, i) => `${prefix}m/${i}`)
          const live = Array.from({ length: 5 }, (_, i) => `${prefix}l/${i}`)
          yield* Effect.forEach(live, (key) => KvStore.set(key, bytes("kept")), { discard: true })
          const keys = [...missing, ...live]
          // round after round over every key: calls of one key are far apart in arrival order
          const calls = Array.from({ length: 4 * keys.length }, (_, n) => {
            const key = keys[n % keys.length]!
            const value = `${key}#${Math.floor(n / keys.length)}`
            return Effect.map(KvStore.setIfAbsent(key, bytes(value)), (won) => [key, value, won] as const)
          })
          const answers = yield* Effect.all(calls, { concurrency: "unbounded" })
          const winners = new Map<string, Array<string>>()
          for (const [key, value, won] of answers) if (won) winners.set(key, [...(winners.get(key) ?? []), value])
          for (const key of missing) {
            const won = winners.get(key) ?? []
            assert.strictEqual(won.length, 1, `${key}: ${won.length} calls returned true`)
            assert.strictEqual(yield* read(key), won[0], `${key}: the stored value is not the winner's`)
          }
          for (const key of live) {
            assert.isUndefined(winners.get(key), `${key} was live, yet a setIfAbsent returned true`)
            assert.strictEqual(yield* read(key), "kept")
          }
        }))
    })

    describe("increment", () => {
      it.effect("counts from 0 on a missing key: by defaults to 1, may be 0 or negative", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          assert.strictEqual(yield* KvStore.increment(prefix + "a"), 1)
          assert.strictEqual(yield* KvStore.increment(prefix + "a"), 2)
          assert.strictEqual(yield* KvStore.increment(prefix + "b", { by: 5 }), 5)
          assert.strictEqual(yield* KvStore.increment(prefix + "c", { by: -3 }), -3)
          assert.strictEqual(yield* read(prefix + "c"), "-3")
          assert.strictEqual(yield* KvStore.increment(prefix + "d", { by: 0 }), 0)
          assert.strictEqual(yield* read(prefix + "d"), "0", "by 0 on a missing key creates 0")
          assert.strictEqual(yield* KvStore.increment(prefix + "b", { by: 0 }), 5)
          assert.strictEqual(yield* KvStore.increment(prefix + "b", { by: -5 }), 0)
          assert.strictEqual(yield* read(prefix + "b"), "0", "not \"-0\"")
          assert.strictEqual(yield* KvStore.increment(prefix + "b", { by: -12 }), -12)
          assert.strictEqual(yield* read(prefix + "b"), "-12")
          assert.strictEqual(yield* KvStore.increment(prefix + "e", { by: Number.MAX_SAFE_INTEGER }), Number.MAX_SAFE_INTEGER)
          assert.strictEqual(yield* read(prefix + "e"), "9007199254740991")
        }))

      it.effect("continues from the decimal text set wrote, and stores its canonical bytes", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          yield* KvStore.set(prefix + "k", bytes("41"))
          assert.strictEqual(yield* KvStore.increment(prefix + "k"), 42)
          assert.deepStrictEqual(Array.from(yield* KvStore.get(prefix + "k")), Array.from(bytes("42")))
          yield* KvStore.set(prefix + "neg", bytes("-7"))
          assert.strictEqual(yield* KvStore.increment(prefix + "neg", { by: 10 }), 3)
          assert.deepStrictEqual(Array.from(yield* KvStore.get(prefix + "neg")), Array.from(bytes("3")))
          // what update sees is the same text
          const seen = yield* KvStore.update(prefix + "k", (current) => Effect.succeed(Option.getOrThrow(current)))
          assert.strictEqual(text(seen), "42")
        }))

      it.effect("a TTL applies only when the increment creates the entry", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const key = prefix + "window"
          assert.strictEqual(yield* KvStore.increment(key, { ttl: TTL }), 1)
          const left = yield* timeLeft(key)
          assert.isTrue(typeof left === "number" && left > 0 && left <= 300, `created without its TTL: ${left}`)
          // a live entry keeps its expiry: neither a longer TTL nor none replaces it
          assert.strictEqual(yield* KvStore.increment(key, { ttl: "1 hour" }), 2)
          assert.strictEqual(yield* KvStore.increment(key), 3)
          const after = yield* timeLeft(key)
          assert.isTrue(typeof after === "number" && after <= 300, `the live entry's expiry changed: ${after}`)
          yield* advance(PAST_TTL)
          assert.strictEqual(yield* read(key), undefined, "the window did not expire")
          // an expired entry is created anew, with the new TTL
          assert.strictEqual(yield* KvStore.increment(key, { ttl: "1 hour" }), 1)
          const renewed = yield* timeLeft(key)
          assert.isTrue(typeof renewed === "number" && renewed > 300, `the recreated entry kept the old expiry: ${renewed}`)
          yield* advance(PAST_TTL)
          assert.strictEqual(yield* read(key), "1")
          // a permanent entry stays permanent
          yield* KvStore.set(prefix + "permanent", bytes("10"))
          assert.strictEqual(yield* KvStore.increment(prefix + "permanent", { ttl: TTL }), 11)
          assert.strictEqual(yield* timeLeft(prefix + "permanent"), "permanent")
        }))

      it.effect("stored text that is not a canonical integer is refused and left alone", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          for (const stored of ["abc", "01", "1.5", "", "+1", "-0", " 1", "1e3", "9007199254740992"]) {
            const key = prefix + JSON.stringify(stored)
            yield* KvStore.set(key, bytes(stored), "1 hour")
            const error = yield* refused("increment", KvStore.increment(key), `increment of ${JSON.stringify(stored)}`)
            assert.strictEqual(error.key, key, "the error names the key")
            assert.strictEqual(yield* read(key), stored, `increment of ${JSON.stringify(stored)} wrote`)
            const left = yield* timeLeft(key)
            assert.isTrue(typeof left === "number" && left > 300, `the expiry changed: ${left}`)
          }
          yield* KvStore.set(prefix + "binary", new Uint8Array([0xff, 0x31]))
          yield* refused("increment", KvStore.increment(prefix + "binary"))
        }))

      it.effect("a result beyond ±(2^53 − 1) is refused and nothing is written", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          yield* KvStore.set(prefix + "max", bytes("9007199254740991"))
          yield* refused("increment", KvStore.increment(prefix + "max"))
          assert.strictEqual(yield* read(prefix + "max"), "9007199254740991")
          yield* KvStore.set(prefix + "min", bytes("-9007199254740991"))
          yield* refused("increment", KvStore.increment(prefix + "min", { by: -1 }))
          assert.strictEqual(yield* read(prefix + "min"), "-9007199254740991")
          yield* KvStore.set(prefix + "one", bytes("1"))
          yield* refused("increment", KvStore.increment(prefix + "one", { by: Number.MAX_SAFE_INTEGER }))
          assert.strictEqual(yield* read(prefix + "one"), "1")
        }))

      it.effect("by must be a safe integer; a refused increment writes nothing", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          for (const by of [1.5, NaN, Infinity, -Infinity, "1", 2 ** 53, -(2 ** 53), null]) {
            yield* refused(
              "increment",
              KvStore.increment(prefix + "k", { by: by as number }),
              `increment by ${typeof by === "string" ? JSON.stringify(by) : String(by)}`
            )
          }
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [])
        }))

      it.effect("200 concurrent increments of one missing key count 200", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "counter"
          const results = yield* Effect.all(Array.from({ length: 200 }, () => KvStore.increment(key)), {
            concurrency: "unbounded"
          })
          assert.strictEqual(yield* read(key), "200")
          assert.deepStrictEqual(
            [...results].sort((a, b) => a - b),
            Array.from({ length: 200 }, (_, i) => i + 1),
            "each increment must return its own count"
          )
        }))

      it.effect("increments interleaved with updates of the same key lose nothing", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "counter"
          const calls = Array.from({ length: 160 }, (_, i) =>
            i % 2 === 0
              ? KvStore.increment(key, { by: 2 })
              : KvStore.update(key, (current) =>
                // yield between read and write: an increment slipping in here would be lost
                Effect.yieldNow.pipe(Effect.as(bytes(String(counter(current) + 1))))))
          yield* Effect.all(calls, { concurrency: "unbounded", discard: true })
          assert.strictEqual(yield* read(key), String(80 * 2 + 80))
        }))
    })

    describe("timeToLive", () => {
      it.effect("NotFound when missing or expired, none when permanent, about the TTL otherwise", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const missing = yield* Effect.flip(KvStore.timeToLive(prefix + "missing"))
          assert.instanceOf(missing, KvStore.NotFound)
          assert.strictEqual((missing as KvStore.NotFound).key, prefix + "missing")

          yield* KvStore.set(prefix + "permanent", bytes("v"))
          assert.isTrue(Option.isNone(yield* KvStore.timeToLive(prefix + "permanent")))

          yield* KvStore.set(prefix + "set", bytes("v"), TTL)
          yield* KvStore.update(prefix + "update", () => Effect.succeed(bytes("v")), TTL)
          yield* KvStore.setIfAbsent(prefix + "setIfAbsent", bytes("v"), TTL)
          for (const k of ["set", "update", "setIfAbsent"]) {
            const left = yield* KvStore.timeToLive(prefix + k)
            assert.isTrue(Option.isSome(left), `${k} with a TTL looks permanent`)
            const millis = Duration.toMillis(Option.getOrThrow(left))
            assert.isAtMost(millis, 300, `${k}: more time left than the TTL`)
            assert.isAbove(millis, 100, `${k}: far less time left than the TTL`)
          }
          yield* advance(Duration.millis(150))
          const later = Duration.toMillis(Option.getOrThrow(yield* KvStore.timeToLive(prefix + "set")))
          assert.isAtMost(later, 150, "time passed but the time left did not shrink")
          assert.isAbove(later, 0)
          yield* advance(Duration.millis(250))
          const expired = yield* Effect.flip(KvStore.timeToLive(prefix + "set"))
          assert.instanceOf(expired, KvStore.NotFound, "an expired key has a time to live")
          assert.isTrue(Option.isNone(yield* KvStore.timeToLive(prefix + "permanent")))
        }))
    })

    describe("expire", () => {
      it.effect("on a live key: true, the value is kept and the new expiry applies", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("kept"))
          assert.isTrue(yield* KvStore.expire(key, TTL))
          assert.strictEqual(yield* read(key), "kept")
          const left = yield* timeLeft(key)
          assert.isTrue(typeof left === "number" && left > 0 && left <= 300, `the new expiry did not apply: ${left}`)
          yield* advance(PAST_TTL)
          assert.strictEqual(yield* read(key), undefined)
        }))

      it.effect("without a TTL (or 0, Duration.infinity) the entry becomes permanent", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const forever: ReadonlyArray<readonly [string, Duration.Input | undefined]> = [
            ["none", undefined],
            ["zero", 0],
            ["infinity", Duration.infinity]
          ]
          for (const [label, ttl] of forever) {
            yield* KvStore.set(prefix + label, bytes(label), TTL)
            assert.isTrue(yield* KvStore.expire(prefix + label, ttl))
            assert.strictEqual(yield* timeLeft(prefix + label), "permanent", label)
          }
          yield* advance(PAST_TTL)
          for (const [label] of forever) assert.strictEqual(yield* read(prefix + label), label)
        }))

      it.effect("concurrent calls on many keys, three per key: true for every call on a live key, false on a missing one, values kept, one asked expiry applied", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const live = Array.from({ length: 20 }, (_, i) => `${prefix}l/${i}`)
          const missing = Array.from({ length: 10 }, (_, i) => `${prefix}m/${i}`)
          yield* Effect.forEach(live, (key) => KvStore.set(key, bytes(`kept ${key}`)), { discard: true })
          const keys = [...live, ...missing]
          const hours = [1, 2, 3]
          const calls = Array.from({ length: hours.length * keys.length }, (_, n) => {
            const key = keys[n % keys.length]!
            return Effect.map(KvStore.expire(key, Duration.hours(hours[Math.floor(n / keys.length)]!)), (live) => [key, live] as const)
          })
          const answers = yield* Effect.all(calls, { concurrency: "unbounded" })
          for (const [key, wasLive] of answers) {
            assert.strictEqual(wasLive, live.includes(key), `expire of ${key} answered ${wasLive}`)
          }
          for (const key of live) {
            assert.strictEqual(yield* read(key), `kept ${key}`)
            const left = yield* timeLeft(key)
            assert.isTrue(
              typeof left === "number" && hours.some((h) => Math.abs(left - h * 3_600_000) < 60_000),
              `${key}: ${left} ms left, none of the expiries asked`
            )
          }
          for (const key of missing) assert.strictEqual(yield* read(key), undefined, `expire wrote ${key}`)
        }))

      it.effect("on a missing or expired key: false, and nothing is written", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          assert.isFalse(yield* KvStore.expire(prefix + "missing", "1 hour"))
          assert.isFalse(yield* KvStore.expire(prefix + "missing"))
          yield* KvStore.set(prefix + "expired", bytes("v"), TTL)
          yield* advance(PAST_TTL)
          // without a TTL it would make the expired entry permanent: it must not come back
          assert.isFalse(yield* KvStore.expire(prefix + "expired"))
          assert.isFalse(yield* KvStore.expire(prefix + "expired", "1 hour"))
          assert.strictEqual(yield* read(prefix + "expired"), undefined, "expire revived an expired entry")
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [])
        }))

      it.effect("a negative TTL is refused and the entry keeps value and expiry", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          yield* KvStore.set(key, bytes("v"))
          for (const ttl of [-1, -1n, "-5 millis", [-1, 0], NaN] as const) {
            yield* refused("expire", KvStore.expire(key, ttl as Duration.Input), `expire with ${String(ttl)}`)
          }
          assert.strictEqual(yield* timeLeft(key), "permanent")
          yield* advance(PAST_TTL)
          assert.strictEqual(yield* read(key), "v")
        }))
    })

    describe("limits", () => {
      const MAX = 64 * 1024 * 1024

      it.effect("a value of 64 MiB + 1 is refused with InvalidArgument and nothing is written", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const tooLarge = new Uint8Array(MAX + 1)
          yield* refused("set", KvStore.set(prefix + "k", tooLarge))
          yield* refused("setIfAbsent", KvStore.setIfAbsent(prefix + "k", tooLarge))
          yield* refused("update", KvStore.update(prefix + "k", () => Effect.succeed(tooLarge)))
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [])
          yield* KvStore.set(prefix + "existing", bytes("old"))
          yield* refused("set", KvStore.set(prefix + "existing", tooLarge))
          yield* refused("update", KvStore.update(prefix + "existing", () => Effect.succeed(tooLarge)))
          assert.strictEqual(yield* read(prefix + "existing"), "old")
        }))

      it.effect("a value of exactly 64 MiB round-trips", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          const value = new Uint8Array(MAX)
          for (let i = 0; i < MAX; i += 4096) value[i] = (i / 4096) % 251
          value[MAX - 1] = 7
          yield* KvStore.set(key, value)
          const got = yield* KvStore.get(key)
          assert.strictEqual(got.length, MAX)
          assert.isTrue(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(value.buffer)), "the bytes differ")
          yield* KvStore.delete(key)
        }), 120_000)

      it.effect("a positive TTL below 1 ms expires: it never means permanent", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          const tiny: ReadonlyArray<readonly [string, Duration.Input]> = [
            ["1e-9", 1e-9],
            ["0.4 nanos", "0.4 nanos"],
            ["1n", 1n],
            ["[0, 1]", [0, 1]]
          ]
          for (const [label, ttl] of tiny) {
            yield* KvStore.set(prefix + "set " + label, bytes("v"), ttl)
            yield* KvStore.update(prefix + "update " + label, () => Effect.succeed(bytes("v")), ttl)
            yield* KvStore.setIfAbsent(prefix + "setIfAbsent " + label, bytes("v"), ttl)
            yield* KvStore.increment(prefix + "increment " + label, { ttl })
            yield* KvStore.set(prefix + "expire " + label, bytes("v"))
            yield* KvStore.expire(prefix + "expire " + label, ttl)
          }
          for (const key of yield* KvStore.keys(prefix)) {
            // on a database clock 1 ms may already be over; either way never "permanent"
            const left = yield* timeLeft(key)
            if (options.databaseClock === true) {
              assert.notStrictEqual(left, "permanent", `${key} never expires`)
            } else {
              assert.isTrue(typeof left === "number" && left > 0 && left <= 1, `${key}: ${left}`)
            }
          }
          yield* advance(Duration.millis(50))
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [], "an entry with a tiny TTL did not expire")
        }))
    })

    describe("hostile arguments", () => {
      const names = hostileCases("").map(([caseName]) => caseName)
      names.forEach((caseName, index) => {
        it.effect(caseName, () =>
          Effect.gen(function*() {
            const store = yield* KvStore.KvStore
            const prefix = freshPrefix()
            const hostileCase = hostileCases(prefix)[index]!
            const outcome = yield* Effect.result(runHostileCase(store, prefix, hostileCase))
            if (Result.isFailure(outcome)) assert.fail(outcome.failure)
            // recorded before the checks, so a comparison across backends also sees a wrong answer
            let recorded = outcomesByBackend.get(name)
            if (recorded === undefined) outcomesByBackend.set(name, recorded = new Map())
            recorded.set(caseName, outcome.success)
            const { op, reason } = outcome.success
            const expectedOp = caseName.slice(0, caseName.indexOf(":"))
            assert.strictEqual(reason, "InvalidArgument", outcome.success.message)
            assert.strictEqual(op, expectedOp, outcome.success.message)
            assert.deepStrictEqual(yield* KvStore.keys(prefix), [], "a refused call wrote")
          }))
      })

      it.effect("with two bad arguments the first in order is named: the value before the TTL", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          const error = yield* refused("set", KvStore.set(key, "not bytes" as unknown as Uint8Array, -1))
          assert.match(error.message, /invalid value/i)
          assert.strictEqual(error.key, key)
        }))

      it.effect("with two bad arguments the first in order is named: the function before the TTL", () =>
        Effect.gen(function*() {
          const key = freshPrefix() + "k"
          const error = yield* refused("update", KvStore.update(key, 42 as unknown as () => Effect.Effect<Uint8Array>, -1))
          assert.match(error.message, /invalid function/i)
          assert.strictEqual(error.key, key)
        }))
    })

    describe("cleanup", () => {
      it.effect("removes expired entries and counts them", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          for (const k of ["e1", "e2", "e3"]) yield* KvStore.set(prefix + k, bytes("v"), Duration.millis(100))
          yield* KvStore.update(prefix + "e4", () => Effect.succeed(bytes("v")), Duration.millis(100))
          yield* KvStore.set(prefix + "permanent", bytes("v"))
          yield* KvStore.set(prefix + "later", bytes("v"), "1 hour")
          yield* advance(Duration.millis(200))
          const removed = yield* KvStore.cleanup
          assert.isAtLeast(removed, 4, "cleanup did not count the expired entries this test made")
          assert.deepStrictEqual(yield* KvStore.keys(prefix), [prefix + "later", prefix + "permanent"])
          const again = yield* KvStore.cleanup
          assert.isAtMost(again, removed - 4, "cleanup counted entries it had already removed")
          assert.strictEqual(yield* read(prefix + "permanent"), "v")
          assert.strictEqual(yield* read(prefix + "later"), "v")
        }))

      it.effect("leaves live entries alone and a written-again key live", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix()
          yield* KvStore.set(prefix + "k", bytes("v1"), Duration.millis(100))
          yield* advance(Duration.millis(200))
          yield* KvStore.set(prefix + "k", bytes("v2"))
          yield* KvStore.cleanup
          assert.strictEqual(yield* read(prefix + "k"), "v2")
        }))
    })
  })
  // batches, prefixes, streams and namespaces (Version 2): a suite of its own on the same store
  batchConformance(name, store, { databaseClock: options.databaseClock === true })
  // the rate limiter's step (Driver.rateLimit or the front's) on the same store
  rateLimitConformance(name, store, { databaseClock: options.databaseClock === true })
  // typed values (Version 3): the whole forSchema view on the same store
  schemaConformance(name, store)
  // change feeds: watch and watchPrefix, or their refusal on a store without a feed
  watchConformance(name, store, { databaseClock: options.databaseClock === true })
}
