/**
 * KvStore.forSchema on both backends: typed round trips, refusals that write
 * nothing, and stored bytes that do not decode coming out as ParseError in the
 * error channel (never a defect).
 */
import { assert, layer } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { pipe } from "effect/Function"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import { backends, freshPrefix } from "./backends.js"

class User extends Schema.Class<User>("User")({
  id: Schema.String,
  name: Schema.NonEmptyString,
  logins: Schema.Int,
  since: Schema.Date // encoded as an ISO string: the stored JSON is the encoded form
}) {}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const ada = new User({ id: "u1", name: "Ada", logins: 0, since: new Date("2020-01-02T03:04:05.000Z") })

/** The failure of `exit`, asserting it is a typed failure (not a defect nor an interruption). */
const typedFailure = <A, E>(exit: Exit.Exit<A, E>): E => {
  assert.isTrue(Exit.isFailure(exit), "expected a failure")
  const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
  assert.isTrue(Option.isSome(failure), Exit.isFailure(exit) ? `not a typed failure: ${Cause.pretty(exit.cause)}` : "")
  return Option.getOrThrow(failure)
}

for (const backend of backends("schema")) {
  layer(backend.layer)(`KvStore.forSchema on ${backend.name}`, (it) => {
    const users = Effect.map(KvStore.KvStore, KvStore.forSchema(User))

    it.effect("round-trips a value through the JSON of its encoded form", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const typed = KvStore.forSchema(store, User) // data-first
        const key = `${freshPrefix("schema")}ada`
        yield* typed.set(key, ada)
        const read = yield* typed.get(key)
        assert.instanceOf(read, User)
        assert.deepStrictEqual(read, ada)
        assert.deepStrictEqual(
          JSON.parse(decoder.decode(yield* store.get(key))),
          { id: "u1", name: "Ada", logins: 0, since: "2020-01-02T03:04:05.000Z" }
        )
        assert.deepStrictEqual(yield* typed.getOption(key), Option.some(ada))
        assert.isTrue(yield* typed.has(key))
        assert.deepStrictEqual(yield* typed.keys(key.slice(0, -3)), [key])
        assert.isTrue(yield* typed.delete(key))
        assert.deepStrictEqual(yield* typed.getOption(key), Option.none())
        const missing = typedFailure(yield* Effect.exit(typed.get(key)))
        assert.strictEqual((missing as { _tag: string })._tag, "NotFound")
      }))

    it.effect("update is atomic: 50 concurrent typed updates lose none", () =>
      Effect.gen(function*() {
        const typed = yield* users
        const key = `${freshPrefix("schema")}counter`
        yield* Effect.all(
          Array.from({ length: 50 }, () =>
            typed.update(key, (current) =>
              Effect.succeed(Option.match(current, {
                onNone: () => ada,
                onSome: (user) => new User({ ...user, logins: user.logins + 1 })
              })))),
          { concurrency: "unbounded", discard: true }
        )
        assert.strictEqual((yield* typed.get(key)).logins, 49)
      }))

    it.effect("getMany and setMany: typed batches; one value that does not encode writes none of them", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const typed = yield* users
        const prefix = freshPrefix("schema")
        const bob = new User({ ...ada, id: "u2", name: "Bob" })
        yield* typed.setMany([[`${prefix}a`, ada], [`${prefix}b`, bob]])
        assert.deepStrictEqual(
          yield* typed.getMany([`${prefix}b`, `${prefix}missing`, `${prefix}a`]),
          [Option.some(bob), Option.none(), Option.some(ada)]
        )
        const invalid = { ...ada, name: "" } as User
        const refused = yield* Effect.exit(typed.setMany([[`${prefix}c`, bob], [`${prefix}d`, invalid]]))
        assert.instanceOf(typedFailure(refused), ParseResult.ParseError)
        assert.deepStrictEqual(yield* store.keys(prefix), [`${prefix}a`, `${prefix}b`])
        yield* store.set(`${prefix}corrupt`, encoder.encode("{"))
        const corrupt = yield* Effect.exit(typed.getMany([`${prefix}a`, `${prefix}corrupt`]))
        assert.instanceOf(typedFailure(corrupt), ParseResult.ParseError)
      }))

    it.effect("a value that does not encode is a ParseError and writes nothing", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const typed = yield* users
        const key = `${freshPrefix("schema")}bad`
        const invalid = { ...ada, name: "" } as User // what plain JavaScript can pass
        assert.instanceOf(typedFailure(yield* Effect.exit(typed.set(key, invalid))), ParseResult.ParseError)
        assert.isFalse(yield* store.has(key))

        yield* typed.set(key, ada)
        const failedUpdate = yield* Effect.exit(typed.update(key, () => Effect.succeed(invalid)))
        assert.instanceOf(typedFailure(failedUpdate), ParseResult.ParseError)
        assert.deepStrictEqual(yield* typed.get(key), ada)
      }))

    it.effect("stored bytes that are not UTF-8, not JSON or not a User are a ParseError, never a defect", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const typed = yield* users
        const prefix = freshPrefix("schema")
        const corrupt: ReadonlyArray<Uint8Array> = [
          new Uint8Array([0xff, 0xfe, 0x00]),
          encoder.encode("{not json"),
          encoder.encode(`{"id":"u2","name":"X","logins":"many","since":"2020-01-01T00:00:00Z"}`),
          encoder.encode("null"),
          new Uint8Array(0)
        ]
        for (const [i, bytes] of corrupt.entries()) {
          const key = `${prefix}${i}`
          yield* store.set(key, bytes)
          assert.instanceOf(typedFailure(yield* Effect.exit(typed.get(key))), ParseResult.ParseError, `get #${i}`)
          assert.instanceOf(typedFailure(yield* Effect.exit(typed.getOption(key))), ParseResult.ParseError)
          // the function never sees a value that does not decode, and nothing is written
          let ran = false
          const update = typed.update(key, () => Effect.sync(() => (ran = true, ada)))
          assert.instanceOf(typedFailure(yield* Effect.exit(update)), ParseResult.ParseError)
          assert.isFalse(ran)
          assert.deepStrictEqual(Array.from(yield* store.get(key)), Array.from(bytes))
        }
      }))

    it.effect("a TTL passes through to the store", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const typed = yield* users
        const key = `${freshPrefix("schema")}ttl`
        yield* typed.set(key, ada, "1 hour")
        const left = yield* store.timeToLive(key)
        assert.isTrue(Option.isSome(left))
        yield* typed.update(key, (user) => Effect.succeed(Option.getOrThrow(user)))
        assert.deepStrictEqual(yield* store.timeToLive(key), Option.none())
      }))
  })
}

layer(MemoryStore.layer())("KvStore.forSchema of a primitive schema", (it) => {
  it.effect("strings with lone surrogates and NUL survive the JSON and UTF-8 trip", () =>
    Effect.gen(function*() {
      // data-last; `Service` has no `.pipe` method, so through `pipe`
      const typed = pipe(yield* KvStore.KvStore, KvStore.forSchema(Schema.String))
      const key = `${freshPrefix("schema")}s`
      const value = "a\ud800b\u0000c"
      yield* typed.set(key, value)
      assert.strictEqual(yield* typed.get(key), value)
    }))
})
