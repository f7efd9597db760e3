/**
 * KvRateLimiter against Effect 4's own `RateLimiter` (`effect/persistence`). On MemoryStore
 * (the Effect Clock decides, TestClock drives it): call for call, the same answers as
 * Effect 4's `layerStoreMemory` (fixed windows with and without a limit, limit 0, token
 * buckets with and without overflow, adaptive consume/feedback through cooldown, learning and
 * learned). On PostgreSQL (one statement per call on the database's clock): the statements
 * compute what the JavaScript step computes on generated states, and two pools whose Effect
 * clocks disagree by 20 s admit exactly the limit. On both: concurrent calls never over-admit;
 * a foreign stored value and bad options fail with RateLimiterError, changing nothing;
 * `RateLimiter.make` on top works.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as RateLimiter from "effect/persistence/RateLimiter"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import { parseAdaptive, parseFixedWindow, parseTokenBucket, rateLimit4AnswerOf, rateLimit4Step } from "../src/core/rateLimit4.js"
import type { RateLimit4Request } from "../src/core/rateLimit4.js"
import { makeRateLimit4Statements } from "../src/core/rateLimit4Sql.js"
import { keyHash } from "../src/core/hash.js"
import * as KvRateLimiter from "../src/KvRateLimiter.js"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as PostgresStore from "../src/PostgresStore.js"

const run = randomUUID().slice(0, 8)
const pg = (name: string) =>
  PgClient.layer({ url: Redacted.make(inject("databaseUrl")), applicationName: `effect-kv4-rl-${name}` })
const table = `kv4_rl_${run}`
const backends: ReadonlyArray<readonly [string, Layer.Layer<KvStore.KvStore, unknown>]> = [
  ["MemoryStore", MemoryStore.layer()],
  ["PostgresStore", PostgresStore.layer({ table }).pipe(Layer.provide(pg("a")))]
]

/** A small deterministic generator (mulberry32), so a failing sequence can be replayed. */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

type Store = RateLimiter.RateLimiterStore["Service"]

/** Calls with refill periods of minutes: a store's TTL (the database's clock) never ends a state the test clock keeps. */
const sequence = (seed: number, steps: number, adaptiveOnly: boolean) => {
  const next = random(seed)
  const pick = <A>(items: ReadonlyArray<A>): A => items[Math.floor(next() * items.length)]!
  const calls: Array<{ readonly advanceMillis: number; readonly call: (store: Store, epochs: Map<string, number>) => Effect.Effect<unknown, unknown> }> = []
  for (let i = 0; i < steps; i++) {
    const key = adaptiveOnly ? "a" : pick(["a", "b", "c"])
    const tokens = pick([0, 1, 1, 1, 2, 3])
    const advanceMillis = adaptiveOnly
      ? pick([0, 0, 0, 1_000, 5_000, 20_000, 40_000])
      : pick([0, 0, 0, 1_000, 30_000, 60_000, 90_000, 250_000, 700_000])
    const kind = adaptiveOnly
      ? pick(["adaptive", "adaptive", "adaptive", "feedback"])
      : pick(["fixed", "fixed", "bucket", "bucket", "adaptive", "feedback", "feedback"])
    // every choice made now: the same call runs on both stores
    const limit = pick([undefined, 0, 4])
    const allowOverflow = pick([true, false])
    const staleEpoch = next() < 0.2
    const status = pick([429, 429, 200])
    const retryAfter = pick([Duration.seconds(30), Duration.minutes(3), undefined])
    const call = (store: Store, epochs: Map<string, number>): Effect.Effect<unknown, unknown> => {
      switch (kind) {
        case "fixed":
          return store.fixedWindow({ key, tokens, refillRate: Duration.minutes(1), limit })
        case "bucket":
          return store.tokenBucket({ key, tokens, limit: 4, refillRate: Duration.minutes(1), allowOverflow })
        case "adaptive":
          return Effect.map(
            store.adaptiveConsume({ key, tokens: Math.max(1, tokens), fallbackLimit: 4, fallbackWindow: Duration.minutes(5) }),
            (result) => {
              epochs.set(key, result.epoch)
              return { delay: Duration.toMillis(result.delay), epoch: result.epoch, phase: result.phase }
            }
          )
        case "feedback":
          return store.adaptiveFeedback({
            key,
            epoch: staleEpoch ? 7 : epochs.get(key) ?? 0,
            tokens: Math.max(1, tokens),
            status,
            retryAfter
          })
      }
      return Effect.void
    }
    calls.push({ advanceMillis, call })
  }
  return calls
}

for (const [name, store] of backends) {
  layer(store, { timeout: 120_000 })(`KvRateLimiter on ${name}`, (it) => {
    // TestClock drives the limiter where the Effect Clock decides (memory); PostgreSQL decides on its own clock
    // (its steps are checked against the JavaScript step below, and across clocks that disagree)
    // registered on memory only (nothing skipped: there is no such test on PostgreSQL)
    const clockDriven = (...args: Parameters<typeof it.effect>) => {
      if (name === "MemoryStore") it.effect(...args)
    }
    clockDriven("answers as Effect 4's layerStoreMemory, call for call, on the same clock", () =>
      Effect.gen(function*() {
        const kv = yield* KvStore.KvStore
        const phases = new Set<string>()
        // seeds 4 and 5: adaptive calls on one key, to reach every phase (learned included)
        for (const seed of [1, 2, 3, 4, 5]) {
          const ours = KvRateLimiter.makeStore(kv, { prefix: `rl/${run}/${seed}/` })
          const theirs = yield* Effect.provide(Effect.service(RateLimiter.RateLimiterStore), RateLimiter.layerStoreMemory)
          const oursEpochs = new Map<string, number>()
          const theirEpochs = new Map<string, number>()
          for (const [i, { advanceMillis, call }] of sequence(seed, 150, seed > 3).entries()) {
            if (advanceMillis > 0) yield* TestClock.adjust(Duration.millis(advanceMillis))
            const expected = yield* Effect.exit(call(theirs, theirEpochs))
            const actual = yield* Effect.exit(call(ours, oursEpochs))
            assert.deepStrictEqual(actual, expected, `seed ${seed}, call ${i}`)
            const value = Exit.isSuccess(expected) ? expected.value as { readonly phase?: string; readonly delay?: number } : undefined
            if (value?.phase !== undefined) phases.add(`${value.phase}${value.delay! > 0 ? " with a delay" : ""}`)
          }
        }
        // the sequences reach every phase of the adaptive state machine
        assert.includeMembers([...phases], ["inactive", "cooldown with a delay", "learning", "learned", "learned with a delay"])
      }))

    clockDriven("the Effect 4 arithmetic: a capped window opens once at refill × limit, limit 0 is a limit, a full bucket restarts", () =>
      Effect.gen(function*() {
        const s = KvRateLimiter.makeStore(yield* KvStore.KvStore, { prefix: `rl/${run}/arith/` })
        const minute = Duration.minutes(1)
        assert.deepStrictEqual(yield* s.fixedWindow({ key: "w", tokens: 1, refillRate: minute, limit: 3 }), [1, 180_000])
        yield* TestClock.adjust(Duration.seconds(10))
        assert.deepStrictEqual(yield* s.fixedWindow({ key: "w", tokens: 1, refillRate: minute, limit: 3 }), [2, 170_000])
        assert.deepStrictEqual(yield* s.fixedWindow({ key: "w", tokens: 2, refillRate: minute, limit: 3 }), [4, 170_000])
        assert.deepStrictEqual(yield* s.fixedWindow({ key: "zero", tokens: 1, refillRate: minute, limit: 0 }), [1, 0])
        assert.deepStrictEqual(yield* s.tokenBucket({ key: "b", tokens: 1, limit: 2, refillRate: minute, allowOverflow: false }), [1, 0])
        yield* TestClock.adjust(Duration.seconds(20))
        assert.deepStrictEqual(yield* s.tokenBucket({ key: "b", tokens: 2, limit: 2, refillRate: minute, allowOverflow: false }), [-1, 20_000])
      }))

    clockDriven("adaptive: a 429 starts a cooldown, learning counts the tokens, the next 429 learns the limit", () =>
      Effect.gen(function*() {
        const s = KvRateLimiter.makeStore(yield* KvStore.KvStore, { prefix: `rl/${run}/adaptive/` })
        const consume = (tokens = 1) => s.adaptiveConsume({ key: "api", tokens, fallbackLimit: 10, fallbackWindow: Duration.minutes(1) })
        assert.deepStrictEqual(yield* consume(), { delay: Duration.zero, epoch: 0, phase: "inactive" })
        yield* s.adaptiveFeedback({ key: "api", epoch: 0, tokens: 1, status: 429, retryAfter: Duration.seconds(30) })
        const cooling = yield* consume()
        assert.strictEqual(cooling.phase, "cooldown")
        assert.strictEqual(Duration.toMillis(cooling.delay), 30_000)
        yield* TestClock.adjust(Duration.seconds(30))
        const learning = yield* consume()
        assert.deepStrictEqual([learning.phase, learning.epoch], ["learning", 1])
        for (let i = 0; i < 4; i++) yield* consume()
        yield* TestClock.adjust(Duration.seconds(10))
        yield* s.adaptiveFeedback({ key: "api", epoch: 1, tokens: 1, status: 429, retryAfter: Duration.seconds(50) })
        const learned = yield* consume()
        assert.deepStrictEqual([learned.phase, learned.epoch], ["learned", 2])
      }))

    it.effect("a foreign value under a limiter's key fails with RateLimiterError and is left as it was", () =>
      Effect.gen(function*() {
        const kv = yield* KvStore.KvStore
        const prefix = `rl/${run}/foreign/`
        const s = KvRateLimiter.makeStore(kv, { prefix })
        const foreign = new TextEncoder().encode("not a state")
        for (const key of ["fixed/k", "bucket/k", "adaptive/k"]) yield* kv.set(`${prefix}${key}`, foreign)
        const attempts = [
          s.fixedWindow({ key: "k", tokens: 1, refillRate: Duration.minutes(1), limit: 3 }),
          s.tokenBucket({ key: "k", tokens: 1, limit: 3, refillRate: Duration.minutes(1), allowOverflow: false }),
          s.adaptiveConsume({ key: "k", tokens: 1, fallbackLimit: 3, fallbackWindow: Duration.minutes(1) }),
          s.adaptiveFeedback({ key: "k", epoch: 0, tokens: 1, status: 429, retryAfter: Duration.seconds(1) })
        ]
        for (const attempt of attempts) {
          const exit = yield* Effect.exit(attempt as Effect.Effect<unknown, RateLimiter.RateLimiterError>)
          const error = Exit.isFailure(exit) ? Option.getOrUndefined(Exit.findErrorOption(exit)) : undefined
          assert.instanceOf(error, RateLimiter.RateLimiterError)
          assert.strictEqual(error!.reason._tag, "RateLimitStoreError")
          assert.include(error!.message, "not a rate limiter state")
        }
        for (const key of ["fixed/k", "bucket/k", "adaptive/k"]) assert.deepStrictEqual(yield* kv.get(`${prefix}${key}`), foreign)
      }))

    it.effect("bad options and a bad refill rate fail with RateLimiterError naming them", () =>
      Effect.gen(function*() {
        const kv = yield* KvStore.KvStore
        const bad = KvRateLimiter.makeStore(kv, { prefix: 42 } as never)
        const error = yield* Effect.flip(bad.fixedWindow({ key: "k", tokens: 1, refillRate: Duration.minutes(1), limit: 3 }))
        assert.instanceOf(error, RateLimiter.RateLimiterError)
        assert.strictEqual(error.reason._tag, "RateLimitStoreError")
        assert.instanceOf((error.reason as RateLimiter.RateLimitStoreError).cause, KvStore.KvError)
        assert.include(error.message, "prefix")
        const s = KvRateLimiter.makeStore(kv, { prefix: `rl/${run}/bad/` })
        const refill = yield* Effect.flip(s.tokenBucket({ key: "k", tokens: 1, limit: 3, refillRate: Duration.zero, allowOverflow: false }))
        assert.include(refill.message, "refill rate")
      }))

    it.effect("RateLimiter.make on top: 30 concurrent consumes of a limit of 10 admit exactly 10", () =>
      Effect.gen(function*() {
        const limiter = yield* RateLimiter.make.pipe(Effect.provide(KvRateLimiter.layerStore({ prefix: `rl/${run}/conc/` })))
        const exits = yield* Effect.forEach(
          Array.from({ length: 30 }),
          () => Effect.exit(limiter.consume({ key: "k", limit: 10, window: Duration.minutes(1) })),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(exits.filter(Exit.isSuccess).length, 10)
      }))
  })
}

describe("KvRateLimiter on PostgreSQL, two instances", () => {
  const instance = (name: string) => PostgresStore.layer({ table }).pipe(Layer.provide(pg(name)), Layer.fresh)
  it.effect("40 token-bucket calls through two pools of a limit of 12 admit exactly 12", () =>
    Effect.scoped(Effect.gen(function*() {
      const prefix = `rl/${run}/two/`
      const limiterOn = (name: string) =>
        Effect.map(Layer.build(instance(name)), (context) => KvRateLimiter.makeStore(Context.get(context, KvStore.KvStore), { prefix }))
      const [one, two] = [yield* limiterOn("one"), yield* limiterOn("two")]
      const call = (s: Store) =>
        s.tokenBucket({ key: "k", tokens: 1, limit: 12, refillRate: Duration.hours(1), allowOverflow: false })
      const answers = yield* Effect.forEach(Array.from({ length: 40 }, (_, i) => i % 2 === 0 ? one : two), call, {
        concurrency: "unbounded"
      })
      assert.strictEqual(answers.filter(([remaining]) => remaining >= 0).length, 12)
    })), 120_000)
})

/** `clock` moved `millis` ahead: the clock of an app instance that disagrees with this one's. */
const shifted = (clock: Clock.Clock, millis: number): Clock.Clock => ({
  currentTimeMillisUnsafe: () => clock.currentTimeMillisUnsafe() + millis,
  currentTimeMillis: Effect.map(clock.currentTimeMillis, (t) => t + millis),
  currentTimeNanosUnsafe: () => clock.currentTimeNanosUnsafe() + BigInt(millis) * 1_000_000n,
  currentTimeNanos: Effect.map(clock.currentTimeNanos, (t) => t + BigInt(millis) * 1_000_000n),
  monotonicTimeNanosUnsafe: () => clock.monotonicTimeNanosUnsafe(),
  monotonicTimeNanos: clock.monotonicTimeNanos,
  sleep: (duration) => clock.sleep(duration)
})

describe("KvRateLimiter on PostgreSQL: instances whose clocks disagree", () => {
  const instance = (name: string) => PostgresStore.layer({ table }).pipe(Layer.provide(pg(name)), Layer.fresh)
  /** Two limiters on one table through two pools (two app instances), the second one's Effect clock 20 s ahead. */
  const twoInstances = (prefix: string, view?: string) =>
    Effect.gen(function*() {
      const on = (name: string) =>
        Effect.map(Layer.build(instance(name)), (context) => {
          const kv = Context.get(context, KvStore.KvStore)
          return KvRateLimiter.makeStore(view === undefined ? kv : KvStore.prefixed(kv, view), { prefix })
        })
      const one = yield* on("skew-one")
      const two = yield* on("skew-two")
      const ahead = shifted(yield* Clock.Clock, 20_000)
      const limiter = (store: Store) => RateLimiter.make.pipe(Effect.provideService(RateLimiter.RateLimiterStore, store))
      return {
        one: yield* limiter(one),
        two: yield* limiter(two),
        stores: { one, two },
        onTwo: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provideService(effect, Clock.Clock, ahead)
      }
    })
  const admitted = (exits: ReadonlyArray<Exit.Exit<unknown, unknown>>) => exits.filter(Exit.isSuccess).length

  for (const algorithm of ["fixed-window", "token-bucket"] as const) {
    it.live(`${algorithm}: limit 10, one pool's clock 20 s ahead: exactly 10 admitted, in turn and concurrently`, () =>
      Effect.scoped(Effect.gen(function*() {
        const { one, onTwo, two } = yield* twoInstances(`rl/${run}/skew-${algorithm}/`)
        // fixed window: a window shorter than the skew, so on each instance's own clock the other's calls
        // would be long past; token bucket: a refill period (10 s) shorter than the skew and far longer
        // than the test runs, so the only refill an instance could see is the one its clock invents
        const window = Duration.seconds(algorithm === "fixed-window" ? 10 : 100)
        const consume = (limiter: RateLimiter.RateLimiter, key: string) =>
          Effect.exit(limiter.consume({ algorithm, key, limit: 10, window }))
        // the instance ahead comes second, when its clock says the window is over and the bucket full
        const inTurn = [
          ...(yield* Effect.forEach(Array.from({ length: 15 }), () => consume(one, "in-turn"))),
          ...(yield* Effect.forEach(Array.from({ length: 15 }), () => onTwo(consume(two, "in-turn"))))
        ]
        assert.strictEqual(admitted(inTurn), 10)
        const together = yield* Effect.all(
          Array.from({ length: 30 }, (_, i) => i % 2 === 0 ? consume(one, "together") : onTwo(consume(two, "together"))),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(admitted(together), 10)
      })), 120_000)
  }

  it.live("adaptive: a cooldown started on one instance holds on the one whose clock is 20 s ahead", () =>
    Effect.scoped(Effect.gen(function*() {
      const { onTwo, stores } = yield* twoInstances(`rl/${run}/skew-adaptive/`)
      const consume = { key: "api", tokens: 1, fallbackLimit: 10, fallbackWindow: Duration.minutes(1) }
      yield* stores.one.adaptiveFeedback({ key: "api", epoch: 0, tokens: 1, status: 429, retryAfter: Duration.seconds(10) })
      const there = yield* onTwo(stores.two.adaptiveConsume(consume))
      assert.strictEqual(there.phase, "cooldown")
      // the cooldown's end is the database's: 10 s from the 429, less what has passed since
      const delay = Duration.toMillis(there.delay)
      assert.isTrue(delay > 0 && delay <= 10_000, `delay ${delay}`)
    })), 120_000)

  it.live("prefixed views decide on the database's clock too", () =>
    Effect.scoped(Effect.gen(function*() {
      const view = `rl/${run}/view/`
      const { one, onTwo, two } = yield* twoInstances("limits/", view)
      const consume = (limiter: RateLimiter.RateLimiter) =>
        Effect.exit(limiter.consume({ key: "client", limit: 10, window: Duration.seconds(10) }))
      const results = [
        ...(yield* Effect.forEach(Array.from({ length: 15 }), () => consume(one))),
        ...(yield* Effect.forEach(Array.from({ length: 15 }), () => onTwo(consume(two))))
      ]
      assert.strictEqual(admitted(results), 10)
      const kv = yield* Effect.map(Layer.build(instance("skew-check")), (context) => Context.get(context, KvStore.KvStore))
      assert.deepStrictEqual(yield* kv.keys(view), [`${view}limits/fixed/client`])
    })), 120_000)

  it.live("adaptive on the database's clock: cooldown, learning, learned, with short real waits", () =>
    Effect.scoped(Effect.gen(function*() {
      const { stores } = yield* twoInstances(`rl/${run}/adaptive-walk/`)
      const consume = () => stores.one.adaptiveConsume({ key: "api", tokens: 1, fallbackLimit: 10, fallbackWindow: Duration.minutes(1) })
      assert.deepStrictEqual(yield* consume(), { delay: Duration.zero, epoch: 0, phase: "inactive" })
      yield* stores.two.adaptiveFeedback({ key: "api", epoch: 0, tokens: 1, status: 429, retryAfter: Duration.millis(200) })
      assert.strictEqual((yield* consume()).phase, "cooldown")
      yield* Effect.sleep(Duration.millis(300))
      const learning = yield* consume()
      assert.deepStrictEqual([learning.phase, learning.epoch], ["learning", 1])
      for (let i = 0; i < 4; i++) yield* consume()
      yield* stores.two.adaptiveFeedback({ key: "api", epoch: 1, tokens: 1, status: 429, retryAfter: Duration.seconds(50) })
      const learned = yield* consume()
      assert.deepStrictEqual([learned.phase, learned.epoch], ["learned", 2])
      // a stale epoch changes nothing
      yield* stores.two.adaptiveFeedback({ key: "api", epoch: 1, tokens: 1, status: 429, retryAfter: Duration.seconds(1) })
      assert.strictEqual((yield* consume()).phase, "learned")
    })), 120_000)
})

describe("KvRateLimiter's statements on PostgreSQL", () => {
  const sqlTable = `kv4_rl_sql_${run}`
  const both = PostgresStore.layer({ table: sqlTable }).pipe(Layer.provideMerge(pg("sql")))

  layer(both, { timeout: 120_000 })((it) => {
    it.effect("compute what the JavaScript step computes, on generated states of every kind", () =>
      Effect.gen(function*() {
        const kv = yield* KvStore.KvStore
        const sql = yield* SqlClient.SqlClient
        const statements = makeRateLimit4Statements(`"public"."${sqlTable}"`)
        const next = random(17)
        const pick = <A>(items: ReadonlyArray<A>): A => items[Math.floor(next() * items.length)]!
        const clockNow = Effect.map(
          sql.unsafe<{ readonly now: number }>("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now"),
          (rows) => Number(rows[0]!.now)
        )
        /** A JSON object with its fields in a random order: the statement must not depend on it. */
        const shuffled = (state: Record<string, unknown>) =>
          JSON.stringify(Object.fromEntries(Object.entries(state).sort(() => next() - 0.5)))
        const kinds = ["fixedWindow", "tokenBucket", "adaptiveConsume", "adaptiveFeedback"] as const
        const seen = new Set<string>()
        for (let i = 0; i < 400; i++) {
          const kind = kinds[i % 4]!
          const tokens = pick([0, 1, 1, 2, 0.5, 3, -1])
          const refillMillis = pick([1000 / 3, 0.1, 200, 2500, 60_000 / 7])
          const request: RateLimit4Request = kind === "fixedWindow"
            ? { kind, tokens, refillMillis, limit: pick([undefined, 0, 3, 5, 10]) }
            : kind === "tokenBucket"
            ? { kind, tokens, refillMillis, limit: pick([0, 3, 5, 10, 2.5]), allowOverflow: next() < 0.3 }
            : kind === "adaptiveConsume"
            ? { kind, tokens: pick([1, 2, 0.5, 3]), fallbackWindowMillis: pick([1000, 60_000 / 7, 300_000]) }
            : { kind, epoch: pick([0, 1, 2, 3, 7]), tokens: pick([1, 2, 0.5]), retryAfterMillis: pick([1, 1000 / 3, 30_000, 3_600_000]) }
          const key = `case/${i}`
          const now0 = yield* clockNow
          const at = () => now0 + pick([-70_000, -5000, -1, 0, 3, 1000 / 3, 2000, 4999.5, 20_000, 90_000]) * (next() < 0.5 ? 1 : 1.0000001)
          const a = pick([0, 1, 2, 3, 4.5, 5, 9, 10, -2])
          const phase = pick(["cooldown", "learning", "learned"] as const)
          const state = kind === "fixedWindow"
            ? { count: a, expiresAt: at() }
            : kind === "tokenBucket"
            ? { tokens: a, lastRefill: at(), expiresAt: at() }
            : {
              phase,
              epoch: pick([0, 1, 2, 3]),
              cooldownUntil: at(),
              learningStartedAt: at(),
              observedTokens: pick([0, 1, 3, 4.5, 10]),
              learnedLimit: phase === "learned" ? pick([1, 2, 5, 0.5]) : pick([0, 3]),
              learnedWindowMillis: pick([1000, 20_000, 3_600_000]),
              expiresAt: at()
            }
          const shape = pick(["none", "state", "state", "state", "state", "foreign", "other kind", "dead row"])
          const stored = shape === "none"
            ? undefined
            : shape === "foreign"
            ? pick(["not a state", "{}", "[1,2]", "{\"count\":\"1\",\"expiresAt\":1}"])
            : shape === "other kind"
            ? JSON.stringify(kind === "tokenBucket" ? { count: 1, expiresAt: now0 + 5000 } : { tokens: 1, lastRefill: now0, expiresAt: now0 + 5000 })
            : shuffled(state)
          if (stored !== undefined) yield* kv.set(key, new TextEncoder().encode(stored), "1 hour")
          if (shape === "dead row") {
            yield* sql.unsafe(`UPDATE "public"."${sqlTable}" SET expires_at = now() - interval '1 second' WHERE key = $1`, [key])
          }
          const params = request.kind === "fixedWindow"
            ? [request.tokens, request.refillMillis, request.limit ?? null]
            : request.kind === "tokenBucket"
            ? [request.tokens, request.refillMillis, request.limit, request.allowOverflow]
            : request.kind === "adaptiveConsume"
            ? [request.tokens, request.fallbackWindowMillis]
            : [request.epoch, request.tokens, request.retryAfterMillis]
          const rows = yield* sql.unsafe<Record<string, unknown>>(statements[kind], [keyHash(key).toString(), key, ...params])
          const live = shape === "dead row" ? undefined : stored
          const label = `case ${i}: ${JSON.stringify({ request, stored: live, now0 })}`
          const row = rows[0]
          if (row === undefined) {
            // only a live value that is not this kind's state is refused, and it is left as it was
            assert.strictEqual(rateLimit4Step(request, live, now0), "invalid", label)
            assert.strictEqual(new TextDecoder().decode(yield* kv.get(key)), stored, label)
            seen.add(`${kind} refused`)
            continue
          }
          const now = Number(row["now"])
          const expected = rateLimit4Step(request, live, now)
          assert.notStrictEqual(expected, "invalid", label)
          if (expected === "invalid") continue
          const kept = String(row["kept"])
          assert.deepStrictEqual(rateLimit4AnswerOf(request, kept, row["admitted"] === true, now), expected.answer, label)
          const keptState = kind === "fixedWindow" ? parseFixedWindow(kept) : kind === "tokenBucket" ? parseTokenBucket(kept) : parseAdaptive(kept)
          assert.isDefined(keptState, label)
          if (expected.next === undefined) {
            // no state: the statement keeps one that has ended
            assert.isTrue(keptState!.expiresAt <= now, `${label}: kept ${kept}`)
          } else {
            assert.deepStrictEqual(keptState, expected.next, label)
            const [{ ms }] = yield* sql.unsafe<{ readonly ms: number }>(
              `SELECT (extract(epoch FROM expires_at) * 1000)::float8 AS ms FROM "public"."${sqlTable}" WHERE key = $1`,
              [key]
            )
            // the row lives as long as the state counts, rounded up to the microsecond
            assert.isTrue(Number(ms) >= expected.next.expiresAt - 1e-6 && Number(ms) - expected.next.expiresAt < 0.002, label)
          }
          seen.add(`${kind} ${expected.next === undefined ? "none kept" : "kept"}${"phase" in (expected.next ?? {}) ? ` ${(expected.next as { phase: string }).phase}` : ""}`)
        }
        // the generated cases reach every kind's outcomes
        assert.includeMembers([...seen], [
          "fixedWindow refused",
          "fixedWindow kept",
          "fixedWindow none kept",
          "tokenBucket kept",
          "tokenBucket refused",
          "adaptiveConsume none kept",
          "adaptiveConsume kept cooldown",
          "adaptiveConsume kept learning",
          "adaptiveConsume kept learned",
          "adaptiveFeedback kept cooldown",
          "adaptiveFeedback kept learned",
          "adaptiveFeedback none kept"
        ])
      }))
  })
})
