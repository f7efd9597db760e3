/**
 * KvPersistence against Effect 4's own `Persistence` and `PersistedCache`
 * (`effect/persistence`), on MemoryStore and on PostgresStore: results persisted by one
 * cache are served to another without running the lookup, failures are persisted too,
 * `invalidate` and `clear` remove only their own entries, `BackingPersistence`'s
 * `undefined` TTL never expires and a zero or negative one removes, and every failure is
 * a `PersistenceError` with the `KvError` as cause.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Persistable from "effect/persistence/Persistable"
import * as PersistedCache from "effect/persistence/PersistedCache"
import * as Persistence from "effect/persistence/Persistence"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { TestClock } from "effect/testing"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as KvPersistence from "../src/KvPersistence.js"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as PostgresStore from "../src/PostgresStore.js"

class UserNotFound extends Schema.TaggedError<UserNotFound>()("UserNotFound", { id: Schema.Number }) {}

class GetUser extends Persistable.Class<{ payload: { readonly id: number } }>()("GetUser", {
  primaryKey: ({ id }) => `user-${id}`,
  success: Schema.Struct({ id: Schema.Number, name: Schema.String }),
  error: UserNotFound
}) {}

const run = randomUUID().slice(0, 8)
const prefix = `persist/${run}/`
const backends: ReadonlyArray<readonly [string, Layer.Layer<KvStore.KvStore, unknown>]> = [
  ["MemoryStore", MemoryStore.layer()],
  [
    "PostgresStore",
    PostgresStore.layer({ table: `kv4_persist_${run}` }).pipe(
      Layer.provide(PgClient.layer({ url: Redacted.make(inject("databaseUrl")), applicationName: "effect-kv4-persist" }))
    )
  ]
]

/** A cache whose lookup counts its runs: users 1–9 exist, others fail with `UserNotFound`. */
const makeCache = (storeId: string, runs: { count: number }) =>
  PersistedCache.make(
    (request: GetUser) =>
      Effect.sync(() => runs.count++).pipe(
        Effect.andThen(request.id < 10 ? Effect.succeed({ id: request.id, name: `user ${request.id}` }) : Effect.fail(new UserNotFound({ id: request.id })))
      ),
    { storeId, timeToLive: () => Duration.hours(1), inMemoryCapacity: 16 }
  )

/** The typed failure of an exit. */
const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Exit.findErrorOption(exit)) : undefined

for (const [name, store] of backends) {
  const layers = Layer.mergeAll(KvPersistence.layerResult({ prefix }), KvPersistence.layer({ prefix })).pipe(
    Layer.provideMerge(store)
  )
  layer(layers, { timeout: 60_000 })(`KvPersistence on ${name}`, (it) => {
    it.effect("PersistedCache: a second cache serves the first one's results and failures without a lookup", () =>
      Effect.gen(function*() {
        const storeId = `users-${randomUUID().slice(0, 8)}`
        const runs = { count: 0 }
        const first = yield* Effect.scoped(Effect.gen(function*() {
          const cache = yield* makeCache(storeId, runs)
          return [yield* cache.get(new GetUser({ id: 1 })), failureOf(yield* Effect.exit(cache.get(new GetUser({ id: 42 }))))]
        }))
        assert.deepStrictEqual(first[0], { id: 1, name: "user 1" })
        assert.instanceOf(first[1], UserNotFound)
        assert.strictEqual(runs.count, 2)

        const kv = yield* KvStore.KvStore
        assert.deepStrictEqual(yield* kv.keys(`${prefix}${storeId}/`), [`${prefix}${storeId}/user-1`, `${prefix}${storeId}/user-42`])
        const ttl = yield* kv.timeToLive(`${prefix}${storeId}/user-1`)
        assert.isTrue(Option.isSome(ttl) && Duration.toMillis(ttl.value) > 3_500_000, "stored with the cache's TTL")

        // a new cache (another instance, an empty memory) reads what the first persisted
        yield* Effect.scoped(Effect.gen(function*() {
          const cache = yield* makeCache(storeId, runs)
          assert.deepStrictEqual(yield* cache.get(new GetUser({ id: 1 })), { id: 1, name: "user 1" })
          const error = failureOf(yield* Effect.exit(cache.get(new GetUser({ id: 42 }))))
          assert.instanceOf(error, UserNotFound)
          assert.strictEqual((error as UserNotFound).id, 42)
          assert.strictEqual(runs.count, 2, "no lookup ran again")

          yield* cache.invalidate(new GetUser({ id: 1 }))
          assert.isFalse(yield* kv.has(`${prefix}${storeId}/user-1`))
          assert.deepStrictEqual(yield* cache.get(new GetUser({ id: 1 })), { id: 1, name: "user 1" })
          assert.strictEqual(runs.count, 3, "an invalidated result is looked up again")
        }))
      }))

    it.effect("BackingPersistence: objects round-trip; an undefined TTL never expires, zero or negative removes", () =>
      Effect.gen(function*() {
        const backing = yield* Persistence.BackingPersistence
        const kv = yield* KvStore.KvStore
        const id = `raw-${randomUUID().slice(0, 8)}`
        const s = yield* Effect.scoped(backing.make(id))
        const other = yield* Effect.scoped(backing.make(`${id}-other`))
        assert.strictEqual(yield* s.get("missing"), undefined)
        yield* s.set("a", { n: 1, list: [1, "x", null] }, undefined)
        yield* s.set("b", [1, 2], Duration.hours(1))
        yield* other.set("a", { other: true }, undefined)
        assert.deepStrictEqual(yield* s.get("a"), { n: 1, list: [1, "x", null] })
        assert.deepStrictEqual(yield* s.getMany(["b", "missing", "a"]), [[1, 2], undefined, { n: 1, list: [1, "x", null] }])
        assert.deepStrictEqual(yield* kv.timeToLive(`${prefix}${id}/a`), Option.none())
        const ttl = yield* kv.timeToLive(`${prefix}${id}/b`)
        assert.isTrue(Option.isSome(ttl) && Duration.toMillis(ttl.value) <= 3_600_000)

        yield* s.set("a", { n: 2 }, Duration.zero)
        assert.strictEqual(yield* s.get("a"), undefined, "a zero TTL removes")
        yield* s.set("b", { n: 2 }, Duration.millis(-5))
        assert.strictEqual(yield* s.get("b"), undefined, "a negative TTL removes, never means 'no expiry'")
        yield* s.set("c", { n: 3 }, Duration.infinity)
        assert.deepStrictEqual(yield* kv.timeToLive(`${prefix}${id}/c`), Option.none())

        yield* s.setMany([["d", { d: 1 }, undefined], ["e", { e: 1 }, Duration.minutes(5)], ["f", { f: 1 }, Duration.zero]])
        assert.deepStrictEqual(yield* s.getMany(["d", "e", "f"]), [{ d: 1 }, { e: 1 }, undefined])

        yield* s.clear
        assert.deepStrictEqual(yield* kv.keys(`${prefix}${id}/`), [])
        assert.deepStrictEqual(yield* other.get("a"), { other: true }, "clear removes only its own store")
        yield* other.clear
      }))

    it.effect("failures are PersistenceError with the cause: a stored value that is not a JSON object, bad options", () =>
      Effect.gen(function*() {
        const backing = yield* Persistence.BackingPersistence
        const kv = yield* KvStore.KvStore
        const id = `bad-${randomUUID().slice(0, 8)}`
        const s = yield* Effect.scoped(backing.make(id))
        yield* kv.set(`${prefix}${id}/text`, new TextEncoder().encode("not json"))
        yield* kv.set(`${prefix}${id}/number`, new TextEncoder().encode("3"))
        for (const key of ["text", "number"]) {
          const error = failureOf(yield* Effect.exit(s.get(key)))
          assert.instanceOf(error, Persistence.PersistenceError, key)
        }

        const badLayer = KvPersistence.layer({ prefix: 42 } as never).pipe(Layer.provide(Layer.succeed(KvStore.KvStore, kv)))
        const exit = yield* Effect.exit(
          Effect.scoped(Effect.gen(function*() {
            const bad = yield* Persistence.BackingPersistence
            return yield* (yield* bad.make("x")).get("k")
          })).pipe(Effect.provide(badLayer))
        )
        const error = failureOf(exit)
        assert.instanceOf(error, Persistence.PersistenceError)
        assert.instanceOf((error as Persistence.PersistenceError).cause, KvStore.KvError)
        assert.include((error as Persistence.PersistenceError).message, "prefix")
        yield* kv.deletePrefix(`${prefix}${id}/`)
      }))
  })
}

layer(KvPersistence.layerResult({ prefix }).pipe(Layer.provideMerge(MemoryStore.layer())), { timeout: 60_000 })(
  "KvPersistence on MemoryStore with TestClock",
  (it) => {
    it.effect("a persisted result expires with the cache's TTL on the Effect clock", () =>
      Effect.gen(function*() {
        const runs = { count: 0 }
        const cacheFor = PersistedCache.make(
          (request: GetUser) => Effect.sync(() => ({ id: request.id, name: `run ${++runs.count}` })),
          { storeId: "ttl", timeToLive: () => Duration.seconds(10) }
        )
        assert.strictEqual((yield* Effect.scoped(Effect.flatMap(cacheFor, (c) => c.get(new GetUser({ id: 1 }))))).name, "run 1")
        yield* TestClock.adjust(Duration.seconds(9))
        assert.strictEqual((yield* Effect.scoped(Effect.flatMap(cacheFor, (c) => c.get(new GetUser({ id: 1 }))))).name, "run 1")
        yield* TestClock.adjust(Duration.seconds(2))
        assert.strictEqual((yield* Effect.scoped(Effect.flatMap(cacheFor, (c) => c.get(new GetUser({ id: 1 }))))).name, "run 2")
      }))
  }
)
