/**
 * The `RateLimiterStore` behind `KvRateLimiter`: each call is one step of
 * `core/rateLimit.ts`, run by the store itself — on PostgreSQL one statement
 * on the database's clock, in memory (and on any driver without a rate-limit
 * primitive) inside the key's update on the Effect `Clock`.
 *
 * A `Service` that `KvStore.make` did not build (a hand-written wrapper, say)
 * has no step of its own: there the step runs inside `Service.update` on the
 * Effect `Clock`, as on a driver without the primitive.
 */
import * as RateLimiter from "@effect/experimental/RateLimiter"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as KvStore from "../KvStore.js"
import { INVALID_STATE, rateLimitStep } from "../core/rateLimit.js"
import type { RateLimitAnswer, RateLimitRequest } from "../core/rateLimit.js"
import { serviceRateLimits } from "./front.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const storeError = (message: string, cause?: unknown) =>
  new RateLimiter.RateLimitStoreError({ message, ...(cause === undefined ? {} : { cause }) })

/** A refill period in milliseconds, refused when it is not a positive finite number (nothing to divide by). */
const refillMillis = (refillRate: Duration.Duration) => {
  const millis = Duration.toMillis(refillRate)
  return Number.isFinite(millis) && millis > 0
    ? Effect.succeed(millis)
    : Effect.fail(storeError(`Invalid refill rate ${Duration.format(refillRate)}: it must be positive and finite`))
}

/** Ends `KvStore.update` without writing; `ttl`: the state needs a longer TTL than the one given. */
class NoWrite {
  constructor(readonly ttl?: number) {}
}

/**
 * The step inside `Service.update`, for a service without a step of its own.
 * `update` takes its TTL before the function runs, so the state is written
 * with a TTL at least as long as the one the step asks for: `bound` when the
 * caller knows one (a limit), else a guess from a plain read; a step that
 * needs more writes nothing and runs again with twice what it needed (slack
 * for concurrent callers). A longer TTL is harmless: a fixed-window counter
 * carries its own reset time, and a token bucket kept longer is what
 * `layerStoreMemory` keeps forever.
 */
const stepInUpdate = (store: KvStore.Service) => (key: string, request: RateLimitRequest): Effect.Effect<RateLimitAnswer, unknown> => {
  const step = (current: Option.Option<Uint8Array>, now: number) =>
    rateLimitStep(request, Option.isSome(current) ? decoder.decode(current.value) : undefined, now)

  const invalidState = () =>
    Effect.fail(storeError(`The rate limiter state stored at ${JSON.stringify(key)} is not valid: ${INVALID_STATE}`))

  const attempt = (ttl: number): Effect.Effect<RateLimitAnswer, unknown> =>
    Effect.suspend(() => {
      let answer: RateLimitAnswer | undefined
      return store.update(
        key,
        (bytes) =>
          Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<Uint8Array, RateLimiter.RateLimitStoreError | NoWrite> => {
            const outcome = step(bytes, now)
            if (outcome === undefined) return invalidState()
            answer = outcome.answer
            if (outcome.keep === undefined) return Effect.fail(new NoWrite())
            const needed = outcome.keep.until - now
            if (needed > ttl) return Effect.fail(new NoWrite(needed))
            return Effect.succeed(encoder.encode(outcome.keep.state))
          }),
        Duration.millis(ttl)
      ).pipe(
        Effect.asVoid,
        Effect.catchIf((error) => error instanceof NoWrite && error.ttl === undefined, () => Effect.void),
        Effect.flatMap(() => answer !== undefined ? Effect.succeed(answer) : Effect.dieMessage("rate limiter step did not run")),
        Effect.catchIf(
          (error): error is NoWrite => error instanceof NoWrite && error.ttl !== undefined,
          (error) => attempt(2 * error.ttl!)
        )
      )
    })

  const bound = request.algorithm === "fixed-window"
    // with a limit, a counter never runs more than `limit × refill` (the window) ahead of now
    ? request.limit ? request.limit * request.refillMillis : undefined
    // without overflow a bucket holds 0 to `limit` tokens: full again within `limit × refill`
    : request.allowOverflow ? undefined : request.limit * request.refillMillis
  if (bound !== undefined) return attempt(Math.max(1, bound))
  return Effect.flatMap(Effect.zip(store.getOption(key), Clock.currentTimeMillis), ([current, now]) => {
    const outcome = step(current, now)
    return attempt(Math.max(1, 2 * (outcome?.keep === undefined ? 1 : outcome.keep.until - now)))
  })
}

/** The store's own step (see `front.ts`), else the step inside `update`; failures as `RateLimitStoreError`. */
const stepOn = (store: KvStore.Service) => {
  const rateLimit: (key: string, request: RateLimitRequest) => Effect.Effect<RateLimitAnswer, unknown> =
    serviceRateLimits.get(store) ?? stepInUpdate(store)
  return (key: string, request: RateLimitRequest): Effect.Effect<RateLimitAnswer, RateLimiter.RateLimitStoreError> =>
    Effect.mapError(rateLimit(key, request), (error: unknown) =>
      error instanceof RateLimiter.RateLimitStoreError
        ? error
        : storeError(`Rate limiter store failed: ${(error as { readonly message?: unknown }).message}`, error))
}

/** @internal */
export const makeStore = (
  store: KvStore.Service,
  options?: { readonly prefix?: string | undefined }
): RateLimiter.RateLimiterStore["Type"] => {
  const prefix = options?.prefix ?? "ratelimit/"
  const step = stepOn(store)
  return RateLimiter.RateLimiterStore.of({
    fixedWindow: (options) =>
      Effect.flatMap(refillMillis(options.refillRate), (refill) =>
        Effect.map(
          step(`${prefix}fixed/${options.key}`, {
            algorithm: "fixed-window",
            tokens: options.tokens,
            refillMillis: refill,
            limit: options.limit
          }),
          (answer) => [answer.tokens, answer.resetMillis] as const
        )),
    tokenBucket: (options) =>
      Effect.flatMap(refillMillis(options.refillRate), (refill) =>
        Effect.map(
          step(`${prefix}bucket/${options.key}`, {
            algorithm: "token-bucket",
            tokens: options.tokens,
            refillMillis: refill,
            limit: options.limit,
            allowOverflow: options.allowOverflow
          }),
          (answer) => answer.tokens
        ))
  })
}
