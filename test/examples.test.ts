/**
 * The example programs, run on MemoryStore with the TestClock: each example's
 * claim is checked here, so an example that stops showing what its header
 * says fails the build.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import * as ConfigReload from "../examples/configReload.js"
import * as Counter from "../examples/counter.js"
import * as FeatureFlags from "../examples/featureFlags.js"
import * as HttpRateLimit from "../examples/httpRateLimit.js"
import * as KeyValueStoreExample from "../examples/keyValueStore.js"
import * as PersistedCacheExample from "../examples/persistedCache.js"
import * as RateLimiter from "../examples/rateLimiter.js"
import * as SessionStore from "../examples/sessionStore.js"
import * as TypedStore from "../examples/typedStore.js"
import { KvStore, MemoryStore } from "effect-kv"

/**
 * Runs `effect` on a fresh MemoryStore, moving the TestClock forward in small
 * steps until it is done, so its sleeps and TTLs pass without real waiting.
 */
const runOnMemory = <A, E>(
  effect: Effect.Effect<A, E, KvStore.KvStore>,
  store: Layer.Layer<KvStore.KvStore, KvStore.KvError> = MemoryStore.layer()
) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Effect.provide(effect, store))
    for (let step = 0; step < 1000; step++) {
      const done = yield* Fiber.poll(fiber)
      if (Option.isSome(done)) break
      yield* TestClock.adjust("50 millis")
    }
    return yield* Fiber.join(fiber)
  })

describe("examples", () => {
  it.effect("config reload: the stored config at start, a write live, a broken one refused, a delete back to defaults", () =>
    Effect.gen(function*() {
      const report = yield* runOnMemory(ConfigReload.program("c:"))
      assert.isTrue(report.feed)
      if (!report.feed) return
      assert.deepStrictEqual(report.atStart, { greeting: "hi", maxUploadMb: 20 })
      assert.deepStrictEqual(report.afterWrite, { greeting: "bonjour", maxUploadMb: 50 })
      assert.deepStrictEqual(report.afterBrokenWrite, { greeting: "bonjour", maxUploadMb: 50 })
      assert.strictEqual(report.refused, 1)
      assert.deepStrictEqual(report.afterDelete, { greeting: "hello", maxUploadMb: 10 })
    }))

  it.effect("session store: touch extends a session, an untouched one expires and reads as missing", () =>
    Effect.gen(function*() {
      const report = yield* runOnMemory(SessionStore.program("s:"))
      assert.isTrue(Option.isSome(report.readAfterCreate))
      assert.strictEqual(report.sessionsOfAlice, 2)
      assert.isTrue(report.touched)
      assert.isTrue(Option.isSome(report.touchedAfterTtl))
      assert.isTrue(Option.isNone(report.untouchedAfterTtl))
      assert.strictEqual(report.sessionsOfAliceAfterTtl, 1)
      assert.isFalse(report.touchOfExpired)
      assert.isTrue(report.destroyed)
      assert.isFalse(report.destroyedAgain)
      assert.isTrue(Option.isNone(report.readAfterDestroy))
      assert.strictEqual(report.sessionsOfBobBefore, 2)
      assert.strictEqual(report.loggedOutEverywhere, 2)
      assert.strictEqual(report.sessionsOfBob, 0)
      assert.strictEqual(report.sessionsOfBobby, 1)
    }))

  it.effect("session store: a user's sessions are listed by streamKeys and ended by one deletePrefix, other users' kept", () =>
    runOnMemory(Effect.gen(function*() {
      const sessions = SessionStore.makeSessionStore({ prefix: "session:", ttl: "1 hour" })
      const ann = [yield* sessions.create("ann"), yield* sessions.create("ann")]
      const annX = yield* sessions.create("ann:x")
      yield* KvStore.set("sessions-elsewhere:ann:1", new Uint8Array([1]))
      assert.deepStrictEqual(yield* sessions.listForUser("ann"), [...ann].sort())
      assert.deepStrictEqual(yield* sessions.listForUser("ann:x"), [annX])
      assert.isTrue(annX.startsWith("ann%3Ax:"))
      assert.strictEqual(yield* sessions.destroyAllForUser("ann"), 2)
      assert.deepStrictEqual(yield* KvStore.keys(""), [`session:${annX}`, "sessions-elsewhere:ann:1"])
    })))

  it.effect("rate limiter: 20 concurrent requests with a limit of 10 get exactly 10 allowed", () =>
    Effect.gen(function*() {
      const report = yield* runOnMemory(RateLimiter.program("r:"))
      assert.strictEqual(report.allowed, 10)
      assert.strictEqual(report.denied, 10)
      assert.isTrue(report.otherClientAllowed)
      assert.isTrue(report.nextWindowAllowed)
    }))

  it.effect("rate limiter: a window's counter expires with the window's TTL", () =>
    runOnMemory(Effect.gen(function*() {
      const limiter = RateLimiter.makeRateLimiter({ prefix: "r:", limit: 2, window: "1 second" })
      assert.deepStrictEqual(yield* limiter.hit("carol"), { allowed: true, remaining: 1 })
      assert.strictEqual((yield* KvStore.keys("r:carol:")).length, 1)
      yield* Effect.sleep("1 second")
      assert.deepStrictEqual(yield* KvStore.keys("r:carol:"), [])
    })))

  it.effect("counter: 100 concurrent increments give exactly 100; a rejected increment writes nothing", () =>
    Effect.gen(function*() {
      const report = yield* runOnMemory(Counter.program("c:", 100))
      assert.strictEqual(report.total, 100)
      assert.instanceOf(report.rejected, Counter.CounterLimitExceeded)
      assert.strictEqual(report.rejected?.current, 100)
      assert.strictEqual(report.afterRejection, 100)
    }))

  it.effect("counter: bytes that are not a counter fail with CounterCorrupted and stay as they were", () =>
    runOnMemory(Effect.gen(function*() {
      yield* KvStore.set("c:x", new TextEncoder().encode("twelve"))
      const error = yield* Effect.flip(Counter.increment("c:x"))
      assert.strictEqual(error._tag, "CounterCorrupted")
      assert.strictEqual(new TextDecoder().decode(yield* KvStore.get("c:x")), "twelve")
    })))

  it.effect("typed store: invalid values are refused, corrupted bytes are a typed CorruptValue", () =>
    Effect.gen(function*() {
      const report = yield* runOnMemory(TypedStore.program("t:"))
      assert.deepStrictEqual(report.stored, {
        id: "u1",
        name: "Ada Lovelace",
        email: "ada@example.org",
        logins: 0
      })
      assert.strictEqual(report.afterLogin.logins, 1)
      assert.instanceOf(report.invalid, TypedStore.InvalidValue)
      assert.strictEqual(report.afterInvalid.logins, 1)
      assert.instanceOf(report.corrupt, TypedStore.CorruptValue)
      assert.strictEqual(report.corrupt?.cause._tag, "ParseError")
    }))

  it.effect("typed store: a decoded value of the wrong shape fails in the error channel, not as a defect", () =>
    runOnMemory(Effect.gen(function*() {
      const users = TypedStore.makeUserCache("t:")
      yield* KvStore.set(users.key("u3"), new TextEncoder().encode(`{"id":"u3","name":"X","logins":"many"}`))
      const error = yield* Effect.flip(users.get("u3"))
      assert.strictEqual(error._tag, "CorruptValue")
      // the update function never runs on a value that does not decode, and nothing is written
      const failedUpdate = yield* Effect.flip(users.update("u3", (user) => Effect.succeed(Option.getOrThrow(user))))
      assert.strictEqual(failedUpdate._tag, "CorruptValue")
      assert.strictEqual(
        new TextDecoder().decode(yield* KvStore.get(users.key("u3"))),
        `{"id":"u3","name":"X","logins":"many"}`
      )
    })))

  it.effect("persisted cache: one slow lookup, a fresh cache served from the store, a miss cached, looked up again past the TTL", () =>
    Effect.gen(function*() {
      const report = yield* runOnMemory(PersistedCacheExample.program("pc:"))
      assert.deepStrictEqual(report, {
        lookupsAfterFirst: 1,
        lookupsAfterRestart: 1,
        missingIsTypedFailure: true,
        lookupsAfterExpiry: 3
      })
    }))

  it.effect("HTTP rate limit: 15 concurrent requests with a limit of 10 get 10 × 200 and 5 × 429", () =>
    Effect.gen(function*() {
      const report = yield* runOnMemory(HttpRateLimit.program("rl:"))
      assert.deepStrictEqual(report, { ok: 10, tooMany: 5, otherClient: 200, nextSecond: 200 })
    }))

  it.effect("KeyValueStore program on effect-kv: concurrent modify counts every visit, size stays in the prefix", () =>
    Effect.gen(function*() {
      const report = yield* runOnMemory(
        KvStore.set("outside", new Uint8Array([1])).pipe(Effect.zipRight(KeyValueStoreExample.program("kvs:")))
      )
      assert.deepStrictEqual(report, { visits: 20, profileName: "Ada", size: 2 })
    }))

  it.effect("feature flags: 40 flags in one getMany, 10 from defaults, a 25% rollout, a namespace per environment", () =>
    Effect.gen(function*() {
      const calls = { getMany: [] as Array<number>, get: 0, getOption: 0 }
      // MemoryStore, counting the reads that reach it
      const countingStore = Layer.effect(
        KvStore.KvStore,
        Effect.map(KvStore.KvStore, (store): KvStore.Service => ({
          ...store,
          getMany: (keys) => {
            const all = [...keys]
            calls.getMany.push(all.length)
            return store.getMany(all)
          },
          get: (key) => {
            calls.get++
            return store.get(key)
          },
          getOption: (key) => {
            calls.getOption++
            return store.getOption(key)
          }
        }))
      ).pipe(Layer.provide(MemoryStore.layer()))
      const report = yield* runOnMemory(
        KvStore.set("ff:flags:production-old:new-checkout", new Uint8Array([1])).pipe(
          Effect.zipRight(FeatureFlags.program("ff:"))
        ),
        countingStore
      )
      assert.strictEqual(FeatureFlags.catalogue.length, 40)
      assert.strictEqual(report.flagsLoaded, 40)
      // three loads (production twice, staging once), each one getMany of all 40 names, and no single reads
      assert.deepStrictEqual(calls, { getMany: [40, 40, 40], get: 0, getOption: 0 })
      assert.strictEqual(report.defaulted.length, 10)
      assert.include(report.defaulted, "dark-mode")
      assert.notInclude(report.defaulted, "new-checkout")
      assert.isTrue(report.darkModeForAnyone)
      assert.isAtLeast(report.checkoutUsersProduction, 200)
      assert.isAtMost(report.checkoutUsersProduction, 300)
      assert.isTrue(report.checkoutStable)
      assert.strictEqual(report.checkoutUsersStaging, 1000)
      assert.strictEqual(report.storedInProduction, 30)
      assert.strictEqual(report.storedInStaging, 1)
    }))

  it.effect("feature flags: a stored value that is not a flag fails the load with a ParseError", () =>
    runOnMemory(Effect.gen(function*() {
      yield* FeatureFlags.setFlags("ff:", "production", [["beta-search", { enabled: true, rollout: 50 }]])
      const loaded = yield* FeatureFlags.loadFlags("ff:", "production")
      assert.isTrue(loaded.values.get("beta-search")?.enabled)
      yield* KvStore.set("ff:flags:production:beta-search", new TextEncoder().encode(`{"enabled":true,"rollout":150}`))
      const error = yield* Effect.flip(FeatureFlags.loadFlags("ff:", "production"))
      assert.strictEqual(error._tag, "ParseError")
    })))
})
