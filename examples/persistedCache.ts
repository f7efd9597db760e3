/**
 * A PersistedCache of an expensive lookup, kept in effect-kv.
 *
 * `PersistedCache` (from `@effect/experimental`) remembers each lookup's
 * result — success or typed failure — in a `ResultPersistence`; with
 * `KvPersistence.layerResult` that is the `KvStore`, so on PostgreSQL every
 * instance of the application shares the results and they survive restarts.
 * Each result carries its own TTL: here a found user for a while, a missing
 * one only briefly.
 *
 * Shows: the first lookup of a user is slow, the next one (from a fresh cache
 * — a restarted process) is served from the store without calling the lookup,
 * "not found" is cached as a typed failure, and an entry past its TTL is looked
 * up again.
 *
 * The program needs only `KvStore`; the backend is chosen by whoever runs it.
 */
import * as PersistedCache from "@effect/experimental/PersistedCache"
import * as Effect from "effect/Effect"
import * as PrimaryKey from "effect/PrimaryKey"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import type { KvStore } from "effect-kv"
import * as KvPersistence from "effect-kv/KvPersistence"

export class User extends Schema.Class<User>("User")({ id: Schema.String, name: Schema.String }) {}

export class UserNotFound extends Schema.TaggedError<UserNotFound>()("UserNotFound", { id: Schema.String }) {}

/** The cache key: a serialisable request whose primary key names the entry in the store. */
export class GetUser extends Schema.TaggedRequest<GetUser>()("GetUser", {
  failure: UserNotFound,
  success: User,
  payload: { id: Schema.String }
}) {
  [PrimaryKey.symbol]() {
    return this.id
  }
}

/** What the persisted-cache program observed. */
export interface PersistedCacheReport {
  /** How many times the expensive lookup ran for each step. */
  readonly lookupsAfterFirst: number
  readonly lookupsAfterRestart: number
  readonly missingIsTypedFailure: boolean
  readonly lookupsAfterExpiry: number
}

/** A cache of `GetUser` whose lookup takes a while and counts its calls. */
const makeUserCache = (lookups: Ref.Ref<number>) =>
  PersistedCache.make({
    storeId: "users",
    lookup: (request: GetUser) =>
      Ref.update(lookups, (n) => n + 1).pipe(
        Effect.zipRight(Effect.sleep("200 millis")), // the expensive part: a slow service or query
        Effect.zipRight(
          request.id === "nobody"
            ? Effect.fail(new UserNotFound({ id: request.id }))
            : Effect.succeed(new User({ id: request.id, name: `User ${request.id}` }))
        )
      ),
    // found users for a while, misses only briefly
    timeToLive: (_request, exit) => exit._tag === "Success" ? "1 second" : "300 millis"
  })

export const program = (prefix: string): Effect.Effect<PersistedCacheReport, never, KvStore.KvStore> =>
  Effect.gen(function*() {
    const lookups = yield* Ref.make(0)
    const ada = new GetUser({ id: "ada" })

    const first = yield* makeUserCache(lookups).pipe(Effect.flatMap((cache) => cache.get(ada)), Effect.timed)
    const lookupsAfterFirst = yield* Ref.get(lookups)
    yield* Effect.log(`first get: ${first[1].name}, looked up (${lookupsAfterFirst} lookup)`)

    // a fresh cache, as after a restart or on another instance: the result comes from the store
    const restarted = yield* makeUserCache(lookups)
    yield* restarted.get(ada)
    const lookupsAfterRestart = yield* Ref.get(lookups)
    yield* Effect.log(`after a restart: served from the store (${lookupsAfterRestart} lookup in all)`)

    const missing = yield* Effect.flip(restarted.get(new GetUser({ id: "nobody" })))
    yield* Effect.log(`a missing user: ${missing._tag}, cached as a failure`)

    yield* Effect.sleep("1100 millis")
    yield* (yield* makeUserCache(lookups)).get(ada)
    const lookupsAfterExpiry = yield* Ref.get(lookups)
    yield* Effect.log(`past its TTL: looked up again (${lookupsAfterExpiry} lookups in all)`)

    return {
      lookupsAfterFirst,
      lookupsAfterRestart,
      missingIsTypedFailure: missing instanceof UserNotFound,
      lookupsAfterExpiry
    }
  }).pipe(Effect.scoped, Effect.provide(KvPersistence.layerResult({ prefix })), Effect.orDie)
