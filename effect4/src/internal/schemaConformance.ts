/**
 * Conformance for `KvStore.forSchema` (API.md, Version 3, "Typed values,
 * complete"), part of the exported suite: every operation of the typed view
 * on the store under test, with values decoded, `Schema.SchemaError` for every
 * decoding failure, and a value that does not encode refused with nothing
 * written. Each test works under a fresh prefix of its own.
 */
import { assert, layer } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import * as KvStore from "../KvStore.js"
import { bytes, text } from "./conformanceHelpers.js"

class Item extends Schema.Class<Item>("Item")({
  name: Schema.NonEmptyString,
  count: Schema.Int,
  at: Schema.DateFromString // encoded as an ISO string: the stored JSON is the encoded form
}) {}

const item = (name: string, count = 0) => new Item({ name, count, at: new Date("2024-05-06T07:08:09.000Z") })

/** An `Item` that does not encode (`count` is not an integer), as plain JavaScript can make one. */
const broken = { name: "broken", count: 1.5, at: new Date(0) } as unknown as Item

/** The typed failure of `exit`: fails the test on success, a defect or an interruption. */
const failureOf = <A, E>(exit: Exit.Exit<A, E>, what: string): E => {
  if (Exit.isSuccess(exit)) assert.fail(`${what} succeeded; expected a failure`)
  const failure = Cause.findErrorOption(exit.cause)
  if (Option.isNone(failure)) assert.fail(`${what}: not a typed failure: ${Cause.pretty(exit.cause)}`)
  return failure.value
}

const assertParseError = (error: unknown, what: string) =>
  assert.isTrue(Schema.isSchemaError(error), `${what}: expected a SchemaError, got ${String(error)}`)

const collect = <A, E, R>(stream: Stream.Stream<A, E, R>) => Stream.runCollect(stream)

export const schemaConformance = (name: string, store: Layer.Layer<KvStore.KvStore, unknown>): void => {
  const run = randomUUID().slice(0, 8)
  let n = 0
  const fresh = () => `schema-${run}-${n++}/`
  const typed = Effect.map(KvStore.KvStore, KvStore.forSchema(Item))

  layer(store, { timeout: 60_000 })(`${name} forSchema`, (it) => {
    it.effect("store is the byte-level service underneath", () =>
      Effect.gen(function*() {
        const bytesStore = yield* KvStore.KvStore
        const items = KvStore.forSchema(bytesStore, Item)
        assert.strictEqual(items.store, bytesStore)
        const key = `${fresh()}a`
        yield* items.set(key, item("a", 1))
        assert.deepStrictEqual(
          JSON.parse(text(yield* items.store.get(key))),
          { name: "a", count: 1, at: "2024-05-06T07:08:09.000Z" }
        )
      }))

    it.effect("setIfAbsent writes a typed value only when the key is missing; a value that does not encode writes nothing", () =>
      Effect.gen(function*() {
        const items = yield* typed
        const key = `${fresh()}a`
        assert.isTrue(yield* items.setIfAbsent(key, item("first")))
        assert.isFalse(yield* items.setIfAbsent(key, item("second")))
        assert.strictEqual((yield* items.get(key)).name, "first")

        const other = `${fresh()}b`
        assertParseError(failureOf(yield* Effect.exit(items.setIfAbsent(other, broken)), "setIfAbsent"), "setIfAbsent")
        assert.isFalse(yield* items.has(other))
      }))

    it.effect("timeToLive and expire act on the entry and keep its typed value", () =>
      Effect.gen(function*() {
        const items = yield* typed
        const key = `${fresh()}a`
        yield* items.set(key, item("a"))
        assert.deepStrictEqual(yield* items.timeToLive(key), Option.none())
        assert.isTrue(yield* items.expire(key, Duration.hours(1)))
        const left = yield* items.timeToLive(key)
        assert.isTrue(Option.isSome(left) && Duration.toMillis(left.value) > 0 && Duration.toMillis(left.value) <= 3_600_000)
        assert.strictEqual((yield* items.get(key)).name, "a")
        assert.isFalse(yield* items.expire(`${key}-missing`, Duration.hours(1)))
        const missing = failureOf(yield* Effect.exit(items.timeToLive(`${key}-missing`)), "timeToLive")
        assert.instanceOf(missing, KvStore.NotFound)
      }))

    it.effect("deleteMany, deletePrefix and count work on the typed view's keys", () =>
      Effect.gen(function*() {
        const items = yield* typed
        const prefix = fresh()
        yield* items.setMany([[`${prefix}a`, item("a")], [`${prefix}b`, item("b")], [`${prefix}c`, item("c")]])
        assert.strictEqual(yield* items.count(prefix), 3)
        assert.strictEqual(yield* items.deleteMany([`${prefix}a`, `${prefix}missing`]), 1)
        assert.strictEqual(yield* items.count(prefix), 2)
        assert.strictEqual(yield* items.deletePrefix(prefix), 2)
        assert.strictEqual(yield* items.count(prefix), 0)
      }))

    it.effect("streamKeys and streamEntries list in key order with values decoded", () =>
      Effect.gen(function*() {
        const items = yield* typed
        const prefix = fresh()
        yield* items.setMany([[`${prefix}b`, item("b", 2)], [`${prefix}a`, item("a", 1)], [`${prefix}c`, item("c", 3)]])
        assert.deepStrictEqual(yield* collect(items.streamKeys(prefix, { batchSize: 2 })), [
          `${prefix}a`,
          `${prefix}b`,
          `${prefix}c`
        ])
        const entries = yield* collect(items.streamEntries(prefix, { batchSize: 2 }))
        assert.deepStrictEqual(entries.map(([key, value]) => [key, value.count]), [
          [`${prefix}a`, 1],
          [`${prefix}b`, 2],
          [`${prefix}c`, 3]
        ])
        for (const [, value] of entries) assert.instanceOf(value, Item)
      }))

    it.effect("every decoding failure is a SchemaError in the error channel, never a defect", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const items = KvStore.forSchema(store, Item)
        const prefix = fresh()
        const cases: ReadonlyArray<readonly [string, Uint8Array]> = [
          ["not-utf8", new Uint8Array([0xff, 0xfe, 0x00])],
          ["not-json", bytes("{not json")],
          ["wrong-shape", bytes(JSON.stringify({ name: "", count: "x" }))]
        ]
        for (const [suffix, value] of cases) {
          const key = `${prefix}${suffix}`
          yield* store.set(key, value)
          assertParseError(failureOf(yield* Effect.exit(items.get(key)), `get ${suffix}`), `get ${suffix}`)
          assertParseError(failureOf(yield* Effect.exit(items.getOption(key)), `getOption ${suffix}`), suffix)
          assertParseError(failureOf(yield* Effect.exit(items.getMany([key])), `getMany ${suffix}`), suffix)
          const update = items.update(key, () => Effect.succeed(item("new")))
          assertParseError(failureOf(yield* Effect.exit(update), `update ${suffix}`), suffix)
          assert.deepStrictEqual(yield* store.get(key), value, "a failed typed update writes nothing")
        }
        const stream = items.streamEntries(prefix)
        assertParseError(failureOf(yield* Effect.exit(collect(stream)), "streamEntries"), "streamEntries")
        // keys are not values: listing and counting the same entries works
        assert.strictEqual((yield* collect(items.streamKeys(prefix))).length, cases.length)
        assert.strictEqual(yield* items.count(prefix), cases.length)
      }))

    it.effect("a value that does not encode is refused by set, setMany, setIfAbsent and update, writing nothing", () =>
      Effect.gen(function*() {
        const items = yield* typed
        const prefix = fresh()
        yield* items.set(`${prefix}kept`, item("kept"))
        const attempts = [
          ["set", items.set(`${prefix}a`, broken)],
          ["setMany", items.setMany([[`${prefix}b`, item("b")], [`${prefix}c`, broken]])],
          ["setIfAbsent", items.setIfAbsent(`${prefix}d`, broken)],
          ["update", items.update(`${prefix}kept`, () => Effect.succeed(broken))]
        ] as const
        for (const [what, attempt] of attempts) {
          assertParseError(failureOf(yield* Effect.exit(attempt as Effect.Effect<unknown, unknown>), what), what)
        }
        assert.deepStrictEqual(yield* items.keys(prefix), [`${prefix}kept`])
        assert.strictEqual((yield* items.get(`${prefix}kept`)).name, "kept")
      }))
  })
}
