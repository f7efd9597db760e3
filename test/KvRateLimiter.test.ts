/**
 * @effect/experimental RateLimiter over KvRateLimiter.layerStore, on both
 * backends: exactly the limit admitted under concurrency (also split across
 * two instances), the same answers as layerStoreMemory call for call on one
 * TestClock schedule, and state that expires once it no longer matters —
 * with one difference from layerStoreMemory, which never forgets: a token
 * bucket forgotten after a full refill restarts its refill phase (last test).
 */
import * as RateLimiter from "@effect/experimental/RateLimiter"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import * as KvRateLimiter from "../src/KvRateLimiter.js"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import { advance, backends, freshPrefix } from "./backends.js"

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

    it.scoped("a stored state that is not valid is a RateLimitStoreError", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const prefix = freshPrefix("ratelimit")
        yield* store.set(`${prefix}fixed/x`, new TextEncoder().encode("garbage"))
        const limiter = yield* limiterOn(store, prefix)
        const error = yield* Effect.flip(limiter.consume({ key: "x", limit: 1, window: "1 second" }))
        assert.strictEqual(error.reason, "StoreError")
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
      for (const [i, [step, options]] of schedule.entries()) {
        yield* TestClock.adjust(Duration.millis(step))
        const expected = yield* outcome(theirs, options)
        const actual = yield* outcome(ours, options)
        assert.deepStrictEqual(actual, expected, `call #${i} (${options.algorithm}, ${JSON.stringify(options)})`)
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
