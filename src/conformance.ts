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
 * @since 0.2.0
 */
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
import * as TestClock from "effect/TestClock"
import * as Data from "effect/Data"
import { randomUUID } from "node:crypto"
import * as KvStore from "./KvStore.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (text: string): Uint8Array => encoder.encode(text)
const text = (value: Uint8Array): string => decoder.decode(value)

/** A user's own typed error, to check `update` passes it through unchanged. */
class Refused extends Data.TaggedError("Refused")<{ readonly why: string }> {}

/** Waits in real time (not on the TestClock); interruptible, clearing its timer. */
const sleepReal = (millis: number): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), millis)
    return Effect.sync(() => clearTimeout(timer))
  })

/**
 * Fails the test (instead of hanging until vitest's timeout) when `effect` does
 * not finish within `millis` of real time: for checks that a lock is released
 * and that independent updates do not wait for each other. Real time, because
 * `TestClock` never fires a timeout on its own.
 */
const within = <A, E, R>(millis: number, what: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.raceFirst(effect, Effect.flatMap(sleepReal(millis), () => Effect.dieMessage(`timed out: ${what}`)))

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

/** The expected order: UTF-8 byte order, computed independently of the code under test. */
const byUtf8Bytes = (a: string, b: string): number => Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"))

/** A key of exactly `size` UTF-8 bytes starting with `prefix`, padded with 3-byte "€" then ASCII. */
const keyOfBytes = (prefix: string, size: number): string => {
  let key = prefix
  while (Buffer.byteLength(key, "utf8") + 3 <= size) key += "€"
  while (Buffer.byteLength(key, "utf8") < size) key += "x"
  return key
}

const counter = (current: Option.Option<Uint8Array>): number =>
  Option.match(current, { onNone: () => 0, onSome: (value) => Number(text(value)) })

/**
 * @since 0.2.0
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
 * @since 0.2.0
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
  const advance = (duration: Duration.DurationInput): Effect.Effect<void> => {
    const millis = Duration.toMillis(Duration.decode(duration))
    return options.databaseClock === true
      ? Effect.zipRight(TestClock.adjust(duration), sleepReal(millis))
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
          const forever: ReadonlyArray<readonly [string, Duration.DurationInput | undefined]> = [
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
          const forms: ReadonlyArray<readonly [string, Duration.DurationInput]> = [
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
            {}
          ]
          let called = 0
          for (const ttl of bad) {
            // what a JavaScript caller (or a cast) can pass
            const input = ttl as Duration.DurationInput
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
                Effect.zipRight(Effect.fail(refused))
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
          const exit = yield* Effect.exit(KvStore.update(key, () => Effect.dieMessage("boom")))
          assert.isTrue(Exit.isFailure(exit) && Cause.isDie(exit.cause), "the defect did not come out as a defect")
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
            const fiber = yield* Effect.fork(
              KvStore.update(key, () => Effect.zipRight(Deferred.succeed(started, undefined), Effect.never))
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
          const holder = yield* Effect.fork(
            KvStore.update(key, () => Deferred.succeed(started, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("holder"))))
          )
          yield* Deferred.await(started)
          const waiter = yield* Effect.fork(KvStore.update(key, () => Effect.succeed(bytes("waiter"))))
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
                Effect.yieldNow().pipe(Effect.as(bytes(String(counter(current) + 1)))))),
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
              KvStore.update(key, (current) => Effect.yieldNow().pipe(Effect.as(bytes(String(counter(current) + 1)))))),
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
              const updating = yield* Effect.fork(
                KvStore.update(key, () =>
                  Deferred.succeed(started, undefined).pipe(
                    Effect.zipRight(Deferred.await(release)),
                    Effect.as(bytes("updated"))
                  ))
              )
              yield* Deferred.await(started)
              const done = yield* Ref.make(false)
              const writer = yield* Effect.fork(
                (op === "set" ? KvStore.set(key, bytes("written")) : KvStore.delete(key)).pipe(
                  Effect.tap(() => Ref.set(done, true))
                )
              )
              // give a writer that does not wait every chance to finish: fibers and a real round trip
              for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
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
          const a = yield* Effect.fork(
            KvStore.update(prefix + "a", () =>
              Deferred.succeed(aStarted, undefined).pipe(
                Effect.zipRight(Deferred.await(bDone)),
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
            ["update", KvStore.update(key, () => Effect.succeed(bytes("inner")))]
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
}
