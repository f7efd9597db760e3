/**
 * KvRateLimiter against Effect 4's own `RateLimiter` (`effect/persistence`), on
 * MemoryStore and PostgresStore: call for call, the same answers as Effect 4's
 * `layerStoreMemory` for the same calls and clock (fixed windows with and without a
 * limit, limit 0, token buckets with and without overflow, adaptive consume/feedback
 * through cooldown, learning and learned); concurrent calls never over-admit (on
 * PostgreSQL through two pools, as two instances); a foreign stored value and bad
 * options fail with RateLimiterError, changing nothing; `RateLimiter.make` on top works.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as RateLimiter from "effect/persistence/RateLimiter"
import * as Redacted from "effect/Redacted"
import { TestClock } from "effect/testing"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
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
    it.effect("answers as Effect 4's layerStoreMemory, call for call, on the same clock", () =>
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

    it.effect("the Effect 4 arithmetic: a capped window opens once at refill × limit, limit 0 is a limit, a full bucket restarts", () =>
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

    it.effect("adaptive: a 429 starts a cooldown, learning counts the tokens, the next 429 learns the limit", () =>
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
