/**
 * @effect/experimental Persistence on effect-kv, on both backends: one
 * namespace per storeId, the store's own TTL, entries without TTL kept, clear
 * inside the storeId, and PersistedCache over ResultPersistence (also shared
 * by two instances on PostgreSQL).
 */
import * as PersistedCache from "@effect/experimental/PersistedCache"
import * as Persistence from "@effect/experimental/Persistence"
import { assert, layer } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PrimaryKey from "effect/PrimaryKey"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as KvPersistence from "../src/KvPersistence.js"
import * as KvStore from "../src/KvStore.js"
import { advance, backends, freshPrefix } from "./backends.js"

class User extends Schema.Class<User>("User")({ id: Schema.String, name: Schema.String }) {}

class UserNotFound extends Schema.TaggedError<UserNotFound>()("UserNotFound", { id: Schema.String }) {}

class GetUser extends Schema.TaggedRequest<GetUser>()("GetUser", {
  failure: UserNotFound,
  success: User,
  payload: { id: Schema.String }
}) {
  [PrimaryKey.symbol]() {
    return `user:${this.id}`
  }
}

/** The BackingPersistence of `KvPersistence.layer` under `prefix`, on the KvStore in context. */
const backing = (prefix: string) => Effect.provide(Persistence.BackingPersistence, KvPersistence.layer({ prefix }))

for (const backend of backends("persist")) {
  layer(backend.layer)(`KvPersistence on ${backend.name}`, (it) => {
    it.scoped("each storeId is its own namespace; clear stays inside it", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const prefix = freshPrefix("persist")
        const persistence = yield* backing(prefix)
        const users = yield* persistence.make("users")
        const orders = yield* persistence.make("orders")
        const usersX = yield* persistence.make("usersx")
        yield* users.set("1", { name: "Ada" }, Option.none())
        yield* users.set("2", [1, "two", null], Option.none())
        yield* orders.set("1", { total: 3 }, Option.none())
        yield* usersX.set("1", "other", Option.none())
        yield* store.set(`${prefix}users`, new Uint8Array([1])) // outside every namespace

        assert.deepStrictEqual(yield* users.get("1"), Option.some({ name: "Ada" }))
        assert.deepStrictEqual(yield* orders.get("1"), Option.some({ total: 3 }))
        assert.deepStrictEqual(
          yield* users.getMany(["2", "3", "1"]),
          [Option.some([1, "two", null]), Option.none(), Option.some({ name: "Ada" })]
        )
        assert.strictEqual(new TextDecoder().decode(yield* store.get(`${prefix}users/1`)), `{"name":"Ada"}`)

        yield* users.clear
        assert.deepStrictEqual(yield* users.getMany(["1", "2"]), [Option.none(), Option.none()])
        assert.deepStrictEqual(yield* orders.get("1"), Option.some({ total: 3 }))
        assert.deepStrictEqual(yield* usersX.get("1"), Option.some("other"))
        assert.isTrue(yield* store.has(`${prefix}users`))
      }))

    it.scoped("entries expire with the store's own TTL; entries without one are kept", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const prefix = freshPrefix("persist")
        const s = yield* (yield* backing(prefix)).make("ttl")
        yield* s.set("short", 1, Option.some(Duration.millis(300)))
        yield* s.set("forever", 2, Option.none())
        yield* s.set("infinite", 3, Option.some(Duration.infinity))
        yield* s.setMany([["many-short", 4, Option.some(Duration.millis(300))], ["many-forever", 5, Option.none()]])
        yield* s.set("zero", 6, Option.some(Duration.zero)) // already expired: not kept
        assert.isTrue(Option.isSome(yield* store.timeToLive(`${prefix}ttl/short`)))
        assert.deepStrictEqual(yield* store.timeToLive(`${prefix}ttl/forever`), Option.none())
        assert.isFalse(yield* store.has(`${prefix}ttl/zero`))

        yield* advance(backend, "400 millis")
        assert.deepStrictEqual(
          yield* s.getMany(["short", "forever", "infinite", "many-short", "many-forever", "zero"]),
          [Option.none(), Option.some(2), Option.some(3), Option.none(), Option.some(5), Option.none()]
        )
      }))

    it.scoped("bytes that are not JSON are a PersistenceBackingError, and values must be JSON", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const prefix = freshPrefix("persist")
        const s = yield* (yield* backing(prefix)).make("bad")
        yield* store.set(`${prefix}bad/x`, new TextEncoder().encode("{nope"))
        const exit = yield* Effect.exit(s.get("x"))
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? Option.getOrThrow(Cause.failureOption(exit.cause)) : undefined
        assert.instanceOf(error, Persistence.PersistenceBackingError)
        const notJson = yield* Effect.exit(s.set("y", 10n, Option.none()))
        assert.isTrue(Exit.isFailure(notJson))
        assert.isFalse(yield* store.has(`${prefix}bad/y`))
        // a key the store refuses
        const longKey = yield* Effect.exit(s.set("k".repeat(3000), 1, Option.none()))
        const longKeyError = Exit.isFailure(longKey) ? Option.getOrThrow(Cause.failureOption(longKey.cause)) : undefined
        assert.instanceOf(longKeyError, Persistence.PersistenceBackingError)
        assert.instanceOf((longKeyError as Persistence.PersistenceBackingError).cause, KvStore.KvError)
      }))

    it.scoped("PersistedCache: an entry with a TTL expires, a permanent one stays", () =>
      Effect.gen(function*() {
        const lookups = yield* Ref.make<ReadonlyArray<string>>([])
        const cache = yield* PersistedCache.make({
          storeId: "users",
          lookup: (request: GetUser) =>
            Ref.update(lookups, (ids) => [...ids, request.id]).pipe(
              Effect.zipRight(
                request.id === "missing"
                  ? Effect.fail(new UserNotFound({ id: request.id }))
                  : Effect.succeed(new User({ id: request.id, name: `user ${request.id}` }))
              )
            ),
          timeToLive: (request) => request.id === "temp" ? "300 millis" : Duration.infinity,
          inMemoryTTL: "1 millis" // so each get below goes to the store
        }).pipe(Effect.provide(KvPersistence.layerResult({ prefix: freshPrefix("persist") })))

        assert.deepStrictEqual(yield* cache.get(new GetUser({ id: "temp" })), new User({ id: "temp", name: "user temp" }))
        yield* cache.get(new GetUser({ id: "kept" }))
        const failed = yield* Effect.flip(cache.get(new GetUser({ id: "missing" })))
        assert.instanceOf(failed, UserNotFound) // a failure is persisted and decoded too
        yield* advance(backend, "20 millis")
        yield* cache.get(new GetUser({ id: "temp" }))
        yield* cache.get(new GetUser({ id: "kept" }))
        yield* Effect.flip(cache.get(new GetUser({ id: "missing" })))
        assert.deepStrictEqual(yield* Ref.get(lookups), ["temp", "kept", "missing"])

        yield* advance(backend, "400 millis")
        yield* cache.get(new GetUser({ id: "temp" }))
        yield* cache.get(new GetUser({ id: "kept" }))
        assert.deepStrictEqual(yield* Ref.get(lookups), ["temp", "kept", "missing", "temp"])
      }))

    if (backend.databaseClock) {
      it.scoped("PersistedCache on two instances: the second sees the first's entry", () =>
        Effect.gen(function*() {
          const prefix = freshPrefix("persist")
          const lookups = yield* Ref.make(0)
          const makeCache = PersistedCache.make({
            storeId: "users",
            lookup: (request: GetUser) =>
              Ref.update(lookups, (n) => n + 1).pipe(Effect.as(new User({ id: request.id, name: "from lookup" }))),
            timeToLive: () => "1 minute"
          })
          const first = yield* makeCache.pipe(Effect.provide(KvPersistence.layerResult({ prefix })))
          const other = yield* backend.otherInstance
          const second = yield* makeCache.pipe(
            Effect.provide(KvPersistence.layerResult({ prefix }).pipe(Layer.provide(Layer.succeed(KvStore.KvStore, other))))
          )
          yield* first.get(new GetUser({ id: "ada" }))
          assert.deepStrictEqual(yield* second.get(new GetUser({ id: "ada" })), new User({ id: "ada", name: "from lookup" }))
          assert.strictEqual(yield* Ref.get(lookups), 1)
          // invalidation removes the shared entry: the next miss looks it up again
          yield* second.invalidate(new GetUser({ id: "ada" }))
          yield* second.get(new GetUser({ id: "ada" }))
          assert.strictEqual(yield* Ref.get(lookups), 2)
        }))
    }
  })
}
