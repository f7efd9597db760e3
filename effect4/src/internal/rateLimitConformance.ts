/**
 * Conformance for the store's rate-limit step behind `KvRateLimiter`
 * (`Driver.rateLimit`, or the front's step in `modify`): atomic under
 * concurrency, the arithmetic of `layerStoreMemory` on the store's clock,
 * state kept only while it matters, and refusals that change nothing.
 * Written against a `Layer<KvStore>` like the main suite, without
 * `@effect/experimental` (an optional peer).
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type * as Layer from "effect/Layer"
import { TestClock } from "effect/testing"
import { randomUUID } from "node:crypto"
import type { RateLimitRequest } from "../core/rateLimit.js"
import * as KvStore from "../KvStore.js"
import { refusal } from "./batchConformance.js"
import { bytes, sleepReal, text } from "./conformanceHelpers.js"
import { serviceRateLimits } from "./front.js"

export const rateLimitConformance = (
  name: string,
  store: Layer.Layer<KvStore.KvStore, unknown>,
  options: { readonly databaseClock: boolean }
): void => {
  const run = randomUUID().slice(0, 8)
  let tests = 0
  const freshPrefix = (): string => `conformance-ratelimit/${run}/${++tests}/`

  const advance = (millis: number): Effect.Effect<void> =>
    options.databaseClock ? Effect.andThen(TestClock.adjust(millis), sleepReal(millis)) : TestClock.adjust(millis)

  /** The rate-limit step of `service` (every store `KvStore.make` builds has one), on `prefix`'s view when given. */
  const stepOf = (service: KvStore.Service) => {
    const step = serviceRateLimits.get(service)
    assert.isDefined(step, "a store built by KvStore.make has a rate-limit step")
    return step!
  }

  const fixed = (limit: number | undefined, refillMillis = 1000, tokens = 1): RateLimitRequest => ({
    algorithm: "fixed-window",
    tokens,
    refillMillis,
    limit
  })
  const bucket = (limit: number, refillMillis = 1000, tokens = 1, allowOverflow = false): RateLimitRequest => ({
    algorithm: "token-bucket",
    tokens,
    refillMillis,
    limit,
    allowOverflow
  })

  layer(store)(`${name} conformance`, (it) => {
    describe("rate-limit step (KvRateLimiter)", () => {
      it.effect("admits exactly the limit of 30 concurrent calls, for both algorithms", () =>
        Effect.gen(function*() {
          const service = yield* KvStore.KvStore
          const step = stepOf(service)
          const prefix = freshPrefix()
          for (const request of [fixed(10, 60_000), bucket(10, 60_000)]) {
            const key = `${prefix}${request.algorithm}`
            const answers = yield* Effect.all(Array.from({ length: 30 }, () => step(key, request)), {
              concurrency: "unbounded"
            })
            const admitted = request.algorithm === "fixed-window"
              ? answers.filter((a) => a.tokens <= 10)
              : answers.filter((a) => a.tokens >= 0)
            assert.strictEqual(admitted.length, 10, request.algorithm)
          }
        }))

      it.effect("answers with layerStoreMemory's arithmetic on the store's clock", () =>
        Effect.gen(function*() {
          const step = stepOf(yield* KvStore.KvStore)
          const prefix = freshPrefix()
          const minute = 60_000
          // a fresh window: 1 counted, resets one refill period after now
          assert.deepStrictEqual(yield* step(`${prefix}w`, fixed(3, minute)), { tokens: 1, resetMillis: minute })
          // a fresh bucket is full: 3 − 2 left, full again two refill periods later
          assert.deepStrictEqual(yield* step(`${prefix}b`, bucket(3, minute, 2)), { tokens: 1, resetMillis: 2 * minute })
          // too many tokens: refused, the count says by how much, the bucket keeps its token
          assert.strictEqual((yield* step(`${prefix}b`, bucket(3, minute, 2))).tokens, -1)
          assert.strictEqual((yield* step(`${prefix}b`, bucket(3, minute, 1))).tokens, 0)
          // without a limit a window counts past any number
          for (let i = 0; i < 4; i++) yield* step(`${prefix}u`, fixed(undefined, 10_000))
          assert.strictEqual((yield* step(`${prefix}u`, fixed(0, 10_000))).tokens, 5)
        }))

      it.effect("keeps state only while it matters: an elapsed window and a full bucket are gone", () =>
        Effect.gen(function*() {
          const service = yield* KvStore.KvStore
          const step = stepOf(service)
          const prefix = freshPrefix()
          // a window of 4 × 400 ms that counted one call, a bucket of 4 × 200 ms two tokens short: 400 ms each
          yield* step(`${prefix}w`, fixed(4, 400))
          yield* step(`${prefix}b`, bucket(4, 200, 2))
          assert.strictEqual((yield* service.keys(prefix)).length, 2)
          yield* advance(550)
          assert.deepStrictEqual(yield* service.keys(prefix), [])
          // and the next call starts afresh
          assert.deepStrictEqual(yield* step(`${prefix}w`, fixed(4, 400)), { tokens: 1, resetMillis: 400 })
        }))

      it.effect("refuses a key holding a value that is not its state, and a bad request, changing nothing", () =>
        Effect.gen(function*() {
          const service = yield* KvStore.KvStore
          const step = stepOf(service)
          const prefix = freshPrefix()
          yield* service.set(`${prefix}x`, bytes("garbage"))
          yield* refusal(step(`${prefix}x`, fixed(3)), "rateLimit")
          yield* refusal(step(`${prefix}x`, bucket(3)), "rateLimit")
          assert.strictEqual(text(yield* service.get(`${prefix}x`)), "garbage")
          // a fixed window's state is not a bucket's
          yield* step(`${prefix}w`, fixed(3))
          yield* refusal(step(`${prefix}w`, bucket(3)), "rateLimit")
          for (const bad of [fixed(3, 0), fixed(3, Number.NaN), bucket(3, 1000, Number.POSITIVE_INFINITY)]) {
            yield* refusal(step(`${prefix}bad`, bad), "rateLimit")
          }
          yield* refusal(step("", fixed(3)), "rateLimit")
          assert.deepStrictEqual(yield* service.keys(`${prefix}bad`), [])
        }))

      it.effect("a prefixed view steps on the store's full key", () =>
        Effect.gen(function*() {
          const service = yield* KvStore.KvStore
          const prefix = freshPrefix()
          const view = KvStore.prefixed(service, prefix)
          const answers = yield* Effect.all(
            Array.from({ length: 6 }, (_, i) => Effect.result(stepOf(i % 2 === 0 ? view : service)(i % 2 === 0 ? "k" : `${prefix}k`, fixed(3, 60_000)))),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(answers.filter((a) => Result.isSuccess(a) && a.success.tokens <= 3).length, 3)
          assert.deepStrictEqual(yield* view.keys(""), ["k"])
          yield* refusal(stepOf(view)("", fixed(3)), "rateLimit")
        }))
    })
  })
}
