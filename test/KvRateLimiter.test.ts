/**
 * @effect/experimental RateLimiter over KvRateLimiter.layerStore, on both
 * backends: exactly the limit admitted under concurrency (also split across
 * two instances), the same answers as layerStoreMemory call for call on one
 * TestClock schedule, and state that expires once it no longer matters —
 * with one difference from layerStoreMemory, which never forgets: a token
 * bucket forgotten after a full refill restarts its refill phase (last test).
 */
import * as RateLimiter from "@effect/experimental/RateLimiter"
import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as TestClock from "effect/TestClock"
import { inject } from "vitest"
import { keyHash } from "../src/core/hash.js"
import { makeStatements } from "../src/core/postgresSql.js"
import { parseRateLimitState, rateLimitAnswerOf, rateLimitStep } from "../src/core/rateLimit.js"
import type { RateLimitRequest } from "../src/core/rateLimit.js"
import * as KvRateLimiter from "../src/KvRateLimiter.js"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { advance, backends, freshPrefix } from "./backends.js"

/** `clock` moved `millis` ahead: the clock of an app instance that disagrees with this one's. */
const shifted = (clock: Clock.Clock, millis: number): Clock.Clock => ({
  [Clock.ClockTypeId]: Clock.ClockTypeId,
  unsafeCurrentTimeMillis: () => clock.unsafeCurrentTimeMillis() + millis,
  currentTimeMillis: Effect.map(clock.currentTimeMillis, (t) => t + millis),
  unsafeCurrentTimeNanos: () => clock.unsafeCurrentTimeNanos() + BigInt(millis) * 1_000_000n,
  currentTimeNanos: Effect.map(clock.currentTimeNanos, (t) => t + BigInt(millis) * 1_000_000n),
  sleep: (duration) => clock.sleep(duration)
})

/** A RateLimiter over `KvRateLimiter` on `store`, keeping its state under `prefix`. */
const limiterOn = (store: KvStore.Service, prefix: string) =>
  RateLimiter.make.pipe(
    Effect.provide(KvRateLimiter.layerStore({ prefix }).pipe(Layer.provide(Layer.succeed(KvStore.KvStore, store))))
  )

type ConsumeOptions = Parameters<RateLimiter.RateLimiter["consume"]>[0]

/** A consume's outcome as plain data, to compare two limiters. */
const outcome = (limiter: RateLimiter.RateLimiter, options: ConsumeOptions) =>
  limiter.consume(options).pipe(
    Effect.either,
    Effect.map(Either.match({
      onLeft: (error) =>
        error.reason === "Exceeded"
          ? { refused: true, retryAfter: Duration.toMillis(error.retryAfter), remaining: error.remaining }
          : { storeError: error.message },
      onRight: (result) => ({
        delay: Duration.toMillis(result.delay),
        remaining: result.remaining,
        resetAfter: Duration.toMillis(result.resetAfter)
      })
    }))
  )

for (const backend of backends("ratelimit")) {
  layer(backend.layer)(`KvRateLimiter on ${backend.name}`, (it) => {
    it.scoped("a fixed window of 10 admits exactly 10 of 30 concurrent calls", () =>
      Effect.gen(function*() {
        const limiter = yield* limiterOn(yield* KvStore.KvStore, freshPrefix("ratelimit"))
        const results = yield* Effect.all(
          Array.from({ length: 30 }, () =>
            Effect.either(limiter.consume({ key: "client", limit: 10, window: "1 minute" }))),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(results.filter(Either.isRight).length, 10)
        for (const refused of results.filter(Either.isLeft)) assert.strictEqual(refused.left.reason, "Exceeded")
      }))

    it.scoped("a wrapped store (no step of its own: the step runs in update) admits exactly 10 of 30 concurrent calls", () =>
      Effect.gen(function*() {
        const prefix = freshPrefix("ratelimit")
        const a = yield* limiterOn({ ...(yield* KvStore.KvStore) }, prefix)
        const b = yield* limiterOn({ ...(yield* backend.otherInstance) }, prefix)
        const results = yield* Effect.all(
          Array.from({ length: 30 }, (_, i) =>
            Effect.either(
              (i % 2 === 0 ? a : b).consume({ algorithm: i < 15 ? "token-bucket" : "fixed-window", key: "c", limit: 5, window: "1 minute" })
            )),
          { concurrency: "unbounded" }
        )
        // 15 calls of each algorithm, each with its own state: 5 admitted of each
        assert.strictEqual(results.filter(Either.isRight).length, 10)
      }))

    it.scoped("two instances on one store admit exactly 10 of 30 concurrent calls between them", () =>
      Effect.gen(function*() {
        const prefix = freshPrefix("ratelimit")
        const a = yield* limiterOn(yield* KvStore.KvStore, prefix)
        const b = yield* limiterOn(yield* backend.otherInstance, prefix)
        const results = yield* Effect.all(
          Array.from({ length: 30 }, (_, i) =>
            Effect.either((i % 2 === 0 ? a : b).consume({ key: "client", limit: 10, window: "1 minute" }))),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(results.filter(Either.isRight).length, 10)
      }))

    it.scoped("a token bucket of 10 admits exactly 10 of 30 concurrent calls across two instances", () =>
      Effect.gen(function*() {
        const prefix = freshPrefix("ratelimit")
        const a = yield* limiterOn(yield* KvStore.KvStore, prefix)
        const b = yield* limiterOn(yield* backend.otherInstance, prefix)
        const results = yield* Effect.all(
          Array.from({ length: 30 }, (_, i) =>
            Effect.either(
              (i % 2 === 0 ? a : b).consume({ algorithm: "token-bucket", key: "c", limit: 10, window: "1 hour" })
            )),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(results.filter(Either.isRight).length, 10)
      }))

    it.scoped("state expires once forgetting it changes nothing: an elapsed window, a refilled bucket", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const prefix = freshPrefix("ratelimit")
        const limiter = yield* limiterOn(store, prefix)
        const window = "400 millis"
        yield* limiter.consume({ key: "w", limit: 4, window })
        yield* limiter.consume({ algorithm: "token-bucket", key: "b", limit: 4, window, tokens: 2 })
        assert.strictEqual((yield* store.keys(prefix)).length, 2)
        const left = yield* store.timeToLive(`${prefix}fixed/w`)
        assert.isTrue(Option.isSome(left) && Duration.toMillis(left.value) <= 400)
        yield* advance(backend, "500 millis")
        assert.deepStrictEqual(yield* store.keys(prefix), [])
        // and the limiter starts afresh, as layerStoreMemory would
        const again = yield* limiter.consume({ key: "w", limit: 4, window })
        assert.strictEqual(again.remaining, 3)
      }))

    if (backend.databaseClock) {
      for (const algorithm of ["fixed-window", "token-bucket"] as const) {
        it.scoped(`${algorithm}: two instances whose clocks disagree by 20 s admit exactly the limit between them`, () =>
          Effect.gen(function*() {
            const prefix = freshPrefix("ratelimit")
            const a = yield* limiterOn(yield* KvStore.KvStore, prefix)
            const b = yield* limiterOn(yield* backend.otherInstance, prefix)
            const ahead = shifted(yield* Effect.clock, 20_000)
            // a window shorter than the skew: on each instance's own clock the other's calls would be long past
            const consume = (limiter: RateLimiter.RateLimiter, key: string) =>
              Effect.either(limiter.consume({ algorithm, key, limit: 10, window: "10 seconds" }))
            const onB = (key: string) => Effect.withClock(consume(b, key), ahead)
            // one after the other: the instance ahead comes second, when its clock says the window is over
            const inTurn = [
              ...(yield* Effect.forEach(Array.from({ length: 15 }), () => consume(a, "in-turn"))),
              ...(yield* Effect.forEach(Array.from({ length: 15 }), () => onB("in-turn")))
            ]
            assert.strictEqual(inTurn.filter(Either.isRight).length, 10)
            const together = yield* Effect.all(
              Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? consume(a, "together") : onB("together"))),
              { concurrency: "unbounded" }
            )
            assert.strictEqual(together.filter(Either.isRight).length, 10)
          }))
      }

      it.scoped("prefixed views decide on the database's clock too", () =>
        Effect.gen(function*() {
          const view = freshPrefix("ratelimit-view")
          const a = yield* limiterOn(KvStore.prefixed(yield* KvStore.KvStore, view), "limits/")
          const b = yield* limiterOn(KvStore.prefixed(yield* backend.otherInstance, view), "limits/")
          const ahead = shifted(yield* Effect.clock, 20_000)
          const consume = { key: "client", limit: 10, window: "10 seconds" } as const
          const results = [
            ...(yield* Effect.forEach(Array.from({ length: 15 }), () => Effect.either(a.consume(consume)))),
            ...(yield* Effect.forEach(Array.from({ length: 15 }), () => Effect.withClock(Effect.either(b.consume(consume)), ahead)))
          ]
          assert.strictEqual(results.filter(Either.isRight).length, 10)
          assert.deepStrictEqual(yield* KvStore.prefixed(yield* KvStore.KvStore, view).keys(""), ["limits/fixed/client"])
        }))
    }

    it.scoped("a stored state that is not valid is a RateLimitStoreError", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const prefix = freshPrefix("ratelimit")
        yield* store.set(`${prefix}fixed/x`, new TextEncoder().encode("garbage"))
        const limiter = yield* limiterOn(store, prefix)
        const error = yield* Effect.flip(limiter.consume({ key: "x", limit: 1, window: "1 second" }))
        assert.strictEqual(error.reason, "StoreError")
        // and the value is left as it was
        assert.strictEqual(new TextDecoder().decode(yield* store.get(`${prefix}fixed/x`)), "garbage")
        yield* store.set(`${prefix}bucket/x`, new TextEncoder().encode("garbage"))
        const bucket = yield* Effect.flip(limiter.consume({ algorithm: "token-bucket", key: "x", limit: 1, window: "1 second" }))
        assert.strictEqual(bucket.reason, "StoreError")
        yield* store.set(`${prefix}bucket/y`, new TextEncoder().encode(JSON.stringify({ count: 1, expiresAt: 2 })))
        const other = yield* Effect.flip(limiter.consume({ algorithm: "token-bucket", key: "y", limit: 1, window: "1 second" }))
        assert.strictEqual(other.reason, "StoreError")
        const tooLong = yield* Effect.flip(limiter.consume({ key: "k".repeat(3000), limit: 1, window: "1 second" }))
        assert.strictEqual(tooLong.reason, "StoreError")
      }))
  })
}

/**
 * A schedule of calls (time step before each, then the consume) with sub-period
 * gaps, bursts, refusals, overdrafts in "delay" mode and idle stretches longer
 * than a full refill, for both algorithms.
 */
const schedule: ReadonlyArray<readonly [step: number, options: ConsumeOptions]> = (() => {
  const calls: Array<readonly [number, ConsumeOptions]> = []
  let seed = 7
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed % n
  }
  for (const algorithm of ["fixed-window", "token-bucket"] as const) {
    for (let i = 0; i < 120; i++) {
      const idle = random(15) === 0
      calls.push([
        idle ? 1000 + 100 * random(20) : random(4) === 0 ? 0 : 10 * random(40),
        {
          algorithm,
          key: `k${random(2)}`,
          limit: 5,
          window: "1 second",
          tokens: 1 + (random(5) === 0 ? random(3) : 0),
          onExceeded: random(4) === 0 ? "delay" : "fail"
        }
      ])
    }
  }
  return calls
})()

describe("KvRateLimiter against layerStoreMemory", () => {
  it.scoped("fixed window and token bucket answer call for call as layerStoreMemory on one TestClock schedule", () =>
    Effect.gen(function*() {
      const ours = yield* RateLimiter.make.pipe(
        Effect.provide(KvRateLimiter.layerStore().pipe(Layer.provide(MemoryStore.layer())))
      )
      const theirs = yield* RateLimiter.make.pipe(Effect.provide(RateLimiter.layerStoreMemory))
      // a Service that KvStore.make did not build (a wrapper) has no step of its own: the bridge runs it in `update`
      const wrapped = yield* MemoryStore.make().pipe(Effect.flatMap((store) => limiterOn({ ...store }, "ratelimit/")))
      for (const [i, [step, options]] of schedule.entries()) {
        yield* TestClock.adjust(Duration.millis(step))
        const expected = yield* outcome(theirs, options)
        const actual = yield* outcome(ours, options)
        assert.deepStrictEqual(actual, expected, `call #${i} (${options.algorithm}, ${JSON.stringify(options)})`)
        assert.deepStrictEqual(yield* outcome(wrapped, options), expected, `wrapped, call #${i}`)
      }
    }))
})

describe("KvRateLimiter: a forgotten token bucket", () => {
  it.scoped("restarts its refill phase: its next token may come up to one refill period later, never earlier", () =>
    Effect.gen(function*() {
      const ours = yield* RateLimiter.make.pipe(
        Effect.provide(KvRateLimiter.layerStore().pipe(Layer.provide(MemoryStore.layer())))
      )
      const theirs = yield* RateLimiter.make.pipe(Effect.provide(RateLimiter.layerStoreMemory))
      const consume = (tokens: number) =>
        ({ algorithm: "token-bucket", key: "k", limit: 10, window: "1 second", tokens }) as const
      const both = (tokens: number) => Effect.all([outcome(ours, consume(tokens)), outcome(theirs, consume(tokens))])
      yield* both(1)
      // idle past a full refill: layerStoreMemory's bucket refills on its old phase (t = 1000), ours is forgotten
      yield* TestClock.adjust("1050 millis")
      const [oursDrained, theirsDrained] = yield* both(10)
      assert.deepStrictEqual(oursDrained, theirsDrained)
      yield* TestClock.adjust("60 millis")
      const [oursNext, theirsNext] = yield* both(1)
      assert.deepStrictEqual(theirsNext, { delay: 0, remaining: 0, resetAfter: 1000 }) // a token from the old phase
      assert.deepStrictEqual(oursNext, { refused: true, retryAfter: 100, remaining: 0 }) // its own phase: 40 ms later
      yield* TestClock.adjust("40 millis")
      const [oursLater] = yield* both(1)
      assert.deepStrictEqual(oursLater, { delay: 0, remaining: 0, resetAfter: 1000 })
    }))
})

describe("KvRateLimiter on MemoryStore: the Effect Clock decides", () => {
  it.scoped("TestClock resets a fixed window and refills a token bucket", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make.pipe(
        Effect.provide(KvRateLimiter.layerStore().pipe(Layer.provide(MemoryStore.layer())))
      )
      const fixed = { key: "w", limit: 2, window: "1 second" } as const
      yield* limiter.consume(fixed)
      yield* limiter.consume(fixed)
      const refused = yield* Effect.flip(limiter.consume(fixed))
      assert.deepStrictEqual([refused.reason, Duration.toMillis((refused as RateLimiter.RateLimitExceeded).retryAfter)], ["Exceeded", 1000])
      yield* TestClock.adjust("999 millis")
      assert.strictEqual((yield* Effect.flip(limiter.consume(fixed))).reason, "Exceeded")
      yield* TestClock.adjust("1 millis")
      assert.strictEqual((yield* limiter.consume(fixed)).remaining, 1)

      const bucket = { algorithm: "token-bucket", key: "b", limit: 2, window: "1 second" } as const
      yield* limiter.consume(bucket)
      yield* limiter.consume(bucket)
      assert.strictEqual((yield* Effect.flip(limiter.consume(bucket))).reason, "Exceeded")
      yield* TestClock.adjust("499 millis")
      assert.strictEqual((yield* Effect.flip(limiter.consume(bucket))).reason, "Exceeded")
      yield* TestClock.adjust("1 millis")
      assert.strictEqual((yield* limiter.consume(bucket)).remaining, 0)
    }))

  it.scoped("a store's calls follow the clock of the fiber that makes them", () =>
    Effect.gen(function*() {
      const limiter = yield* RateLimiter.make.pipe(
        Effect.provide(KvRateLimiter.layerStore().pipe(Layer.provide(MemoryStore.layer())))
      )
      const fixed = { key: "w", limit: 1, window: "1 second" } as const
      yield* limiter.consume(fixed)
      assert.strictEqual((yield* Effect.flip(limiter.consume(fixed))).reason, "Exceeded")
      // the process's clock is the one that counts in memory: a clock 20 s ahead sees the window over
      const ahead = shifted(yield* Effect.clock, 20_000)
      assert.strictEqual((yield* Effect.withClock(limiter.consume(fixed), ahead)).remaining, 0)
    }))
})

/**
 * The statement on PostgreSQL against the JavaScript step it transcribes: for
 * stored states around the database's now, fractional refill periods, limits
 * and token counts, the same decision, the same state kept (as numbers) and
 * the same answer, computed at the `now` the statement reports.
 */
describe("KvRateLimiter's statement on PostgreSQL", () => {
  const table = `kv_ratelimit_sql_${freshPrefix("t").split("/")[1]}`
  const sqlLayer = PgClient.layer({ url: Redacted.make(inject("databaseUrl")), applicationName: "effect-kv-test-ratelimit-sql" })
  const both = PostgresStore.layer({ table }).pipe(Layer.provideMerge(sqlLayer))

  layer(both)((it) => {
    it.effect("computes what rateLimitStep computes, call for call", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const sql = yield* SqlClient.SqlClient
        const statements = makeStatements({ schema: "public", table, unlogged: false })
        let seed = 11
        const random = (n: number) => {
          seed = (seed * 1103515245 + 12345) % 2147483648
          return seed % n
        }
        const pick = <A>(values: ReadonlyArray<A>): A => values[random(values.length)]!
        const clockNow = Effect.map(
          sql.unsafe<{ readonly now: number }>("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now"),
          (rows) => Number(rows[0]!.now)
        )
        for (let i = 0; i < 160; i++) {
          const refillMillis = pick([1000 / 3, 1000 / 7, 0.1, 200, 2500, 60_000 / 7])
          const tokens = pick([0, 1, 1, 2, 0.5, 3])
          const request: RateLimitRequest = i % 2 === 0
            ? { algorithm: "fixed-window", tokens, refillMillis, limit: pick([undefined, 0, 3, 5, 10]) }
            : { algorithm: "token-bucket", tokens, refillMillis, limit: pick([3, 5, 10]), allowOverflow: random(3) === 0 }
          const key = `case/${i}`
          const now0 = yield* clockNow
          const a = pick([0, 1, 2, 3, 4.5, 5, 9, 10, -2])
          const b = now0 + pick([-5000, -1, 0, 3, 1000 / 3, 2000, 4999.5, 20_000]) * (random(2) === 0 ? 1 : 1.0000001)
          const stored = random(6) === 0
            ? undefined
            : JSON.stringify(request.algorithm === "fixed-window" ? { count: a, expiresAt: b } : { tokens: a, lastRefill: b })
          if (stored !== undefined) yield* store.set(key, new TextEncoder().encode(stored), "1 hour")
          const params = request.algorithm === "fixed-window"
            ? [request.tokens, request.refillMillis, request.limit ?? null]
            : [request.tokens, request.refillMillis, request.limit, request.allowOverflow]
          const text = request.algorithm === "fixed-window" ? statements.rateLimitFixedWindow : statements.rateLimitTokenBucket
          const rows = yield* sql.unsafe<Record<string, unknown>>(text, [
            keyHash(key).toString(),
            key,
            ...params
          ]).withoutTransform
          const row = rows[0]!
          const now = Number(row["now"])
          const kept = String(row["kept"])
          const expected = rateLimitStep(request, stored, now)!
          const label = `case ${i}: ${JSON.stringify({ request, stored, now })}`
          assert.strictEqual(row["admitted"], expected.admitted, label)
          assert.deepStrictEqual(rateLimitAnswerOf(request, kept, row["admitted"] === true, now), expected.answer, label)
          if (expected.keep !== undefined) {
            assert.deepStrictEqual(
              parseRateLimitState(request.algorithm, kept),
              parseRateLimitState(request.algorithm, expected.keep.state),
              label
            )
            const [{ ms }] = yield* sql.unsafe<{ readonly ms: number }>(
              `SELECT (extract(epoch FROM expires_at) * 1000)::float8 AS ms FROM "public"."${table}" WHERE key = $1`,
              [key]
            )
            // kept until the state stops mattering, rounded up to the microsecond
            assert.isTrue(Number(ms) >= expected.keep.until - 1e-6 && Number(ms) - expected.keep.until < 0.002, label)
          }
        }
      }))
  })
})
