/**
 * The `RateLimiterStore` behind the Effect 4 line's `KvRateLimiter`: each call
 * is one step of `core/rateLimit4.ts` (Effect 4's `layerStoreMemory` arithmetic).
 *
 * Where the store's driver decides the steps itself (PostgreSQL: one statement
 * on the database's clock under the key's advisory lock, `core/rateLimit4Sql.ts`)
 * each call is that one statement, so instances whose clocks disagree still
 * share one window and never over-admit. Elsewhere (memory, a store wrapped by
 * hand) the step runs inside `Service.update` of the limiter's key on the Effect
 * `Clock`, so `TestClock` drives it; the steps of one key are atomic across fibers.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as RateLimiter from "effect/persistence/RateLimiter"
import {
  adaptiveConsumeStep,
  adaptiveFeedbackStep,
  clampWindow,
  encodeState,
  fixedWindowStep,
  parseAdaptive,
  parseFixedWindow,
  parseTokenBucket,
  tokenBucketStep
} from "../core/rateLimit4.js"
import type { AdaptiveState, FixedWindowState, RateLimit4Answer, RateLimit4Request, Step, TokenBucketState } from "../core/rateLimit4.js"
import type * as KvStore from "../KvStore.js"
import { serviceRateLimits4 } from "./front.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const storeError = (message: string, cause?: unknown) =>
  new RateLimiter.RateLimiterError({
    reason: new RateLimiter.RateLimitStoreError({ message, ...(cause === undefined ? {} : { cause }) })
  })

const isFiniteNumber = (u: unknown): u is number => typeof u === "number" && Number.isFinite(u)

/** A refill period or window in milliseconds, refused when it is not a positive finite number. */
const positiveMillis = (what: string, duration: Duration.Duration) => {
  const millis = Duration.toMillis(duration)
  return Number.isFinite(millis) && millis > 0
    ? Effect.succeed(millis)
    : Effect.fail(storeError(`Invalid ${what} ${Duration.format(duration)}: it must be positive and finite`))
}

const finite = (what: string, value: unknown) =>
  isFiniteNumber(value) ? Effect.void : Effect.fail(storeError(`Invalid ${what}: expected a finite number, got ${String(value)}`))

/** Ends `KvStore.update` without writing; `ttl`: the state needs a longer TTL than the one given. */
class NoWrite {
  constructor(readonly ttl?: number) {}
}

type State = FixedWindowState | TokenBucketState | AdaptiveState

interface StepOf<S extends State, A> {
  readonly parse: (text: string) => S | undefined
  readonly step: (stored: S | undefined, now: number) => Step<S, A>
  /** The longest a state can need to be kept, when the call's arguments bound it. */
  readonly bound: number | undefined
}

/**
 * Runs one step on `key` inside `store.update`. `update` takes its TTL before
 * the function runs, so the state is written with a TTL at least as long as it
 * needs: `bound` when known, else a guess from a plain read; a step that needs
 * more writes nothing and runs again with twice what it needed. A longer TTL is
 * harmless: each state carries its own `expiresAt` and is read as none after it.
 * An unchanged state is not written; a state that ends while still stored is
 * overwritten by a copy that has ended.
 */
const runStep = <S extends State, A>(
  store: KvStore.Service,
  key: string,
  { bound, parse, step }: StepOf<S, A>
): Effect.Effect<A, RateLimiter.RateLimiterError> => {
  const read = (current: Option.Option<Uint8Array>): S | undefined | "invalid" =>
    Option.isNone(current) ? undefined : parse(decoder.decode(current.value)) ?? "invalid"
  const invalid = () =>
    Effect.fail(storeError(`The rate limiter state stored at ${JSON.stringify(key)} is not valid: the stored value is not a rate limiter state`))

  const attempt = (ttl: number): Effect.Effect<A, unknown> =>
    Effect.suspend(() => {
      let answer: { readonly value: A } | undefined
      return store.update(
        key,
        (bytes) =>
          Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<Uint8Array, RateLimiter.RateLimiterError | NoWrite> => {
            const stored = read(bytes)
            if (stored === "invalid") return invalid()
            const outcome = step(stored, now)
            answer = { value: outcome.answer }
            const next = outcome.next
            if (next === stored) return Effect.fail(new NoWrite())
            if (next === undefined) {
              // the stored state may still be live: replace it by one that has ended
              return stored !== undefined && stored.expiresAt > now
                ? Effect.succeed(encoder.encode(encodeState({ ...stored, expiresAt: now })))
                : Effect.fail(new NoWrite())
            }
            const needed = Math.max(1, Math.ceil(next.expiresAt - now))
            if (needed > ttl) return Effect.fail(new NoWrite(needed))
            return Effect.succeed(encoder.encode(encodeState(next)))
          }),
        Duration.millis(ttl)
      ).pipe(
        Effect.asVoid,
        Effect.catchIf((error) => error instanceof NoWrite && error.ttl === undefined, () => Effect.void),
        Effect.flatMap(() => answer !== undefined ? Effect.succeed(answer.value) : Effect.die("rate limiter step did not run")),
        Effect.catchIf(
          (error): error is NoWrite => error instanceof NoWrite && error.ttl !== undefined,
          (error) => attempt(2 * error.ttl!)
        )
      )
    })

  const run = bound !== undefined && Number.isFinite(bound)
    ? attempt(Math.max(1, Math.ceil(bound)))
    : Effect.flatMap(Effect.zip(store.getOption(key), Clock.currentTimeMillis), ([current, now]) => {
      const stored = read(current)
      const next = stored === "invalid" ? undefined : step(stored, now).next
      return attempt(Math.max(1, 2 * Math.ceil(next === undefined ? 1 : next.expiresAt - now)))
    })
  return Effect.mapError(run, (error: unknown) =>
    error instanceof RateLimiter.RateLimiterError
      ? error
      : storeError(`Rate limiter store failed: ${(error as { readonly message?: unknown }).message}`, error))
}

/** @internal */
export const makeStore = (
  store: KvStore.Service,
  options?: { readonly prefix?: string | undefined }
): RateLimiter.RateLimiterStore["Service"] => {
  const prefix = options?.prefix ?? "ratelimit/"
  const decided = serviceRateLimits4.get(store)
  /** The store's own step when it has one, else `runStep` on the Effect `Clock`. */
  const stepOn = <R extends RateLimit4Request, S extends State>(
    key: string,
    request: R,
    inUpdate: StepOf<S, RateLimit4Answer<R>>
  ): Effect.Effect<RateLimit4Answer<R>, RateLimiter.RateLimiterError> =>
    decided === undefined
      ? runStep(store, key, inUpdate)
      : Effect.mapError(decided(key, request), (error) => storeError(`Rate limiter store failed: ${error.message}`, error))
  return RateLimiter.RateLimiterStore.of({
    fixedWindow: (options) =>
      Effect.gen(function*() {
        const refillMillis = yield* positiveMillis("refill rate", options.refillRate)
        yield* finite("tokens", options.tokens)
        if (options.limit !== undefined) yield* finite("limit", options.limit)
        const request = { kind: "fixedWindow" as const, tokens: options.tokens, refillMillis, limit: options.limit }
        return yield* stepOn(`${prefix}fixed/${options.key}`, request, {
          parse: parseFixedWindow,
          step: (stored, now) => fixedWindowStep(stored, now, request),
          // with a limit, a window never runs more than `limit × refill` ahead of now
          bound: options.limit === undefined ? undefined : Math.max(0, options.limit) * refillMillis
        })
      }),
    tokenBucket: (options) =>
      Effect.gen(function*() {
        const refillMillis = yield* positiveMillis("refill rate", options.refillRate)
        yield* finite("tokens", options.tokens)
        yield* finite("limit", options.limit)
        const request = {
          kind: "tokenBucket" as const,
          tokens: options.tokens,
          refillMillis,
          limit: options.limit,
          allowOverflow: options.allowOverflow
        }
        return yield* stepOn(`${prefix}bucket/${options.key}`, request, {
          parse: parseTokenBucket,
          step: (stored, now) => tokenBucketStep(stored, now, request),
          // without overflow (and taking tokens) a bucket is full again within `ceil(limit) × refill`
          bound: options.allowOverflow || options.tokens < 0 ? undefined : Math.ceil(Math.max(0, options.limit)) * refillMillis
        })
      }),
    adaptiveConsume: (options) =>
      Effect.gen(function*() {
        const fallbackWindowMillis = yield* positiveMillis("fallback window", options.fallbackWindow)
        yield* finite("tokens", options.tokens)
        const request = { kind: "adaptiveConsume" as const, tokens: options.tokens, fallbackWindowMillis }
        const answer = yield* stepOn(`${prefix}adaptive/${options.key}`, request, {
          parse: parseAdaptive,
          step: (stored, now) => adaptiveConsumeStep(stored, now, request),
          bound: undefined
        })
        return { delay: Duration.millis(answer.delayMillis), epoch: answer.epoch, phase: answer.phase }
      }),
    adaptiveFeedback: (options) =>
      Effect.gen(function*() {
        yield* finite("tokens", options.tokens)
        const retryAfterMillis = options.retryAfter === undefined ? undefined : Duration.toMillis(options.retryAfter)
        // only a 429 with a Retry-After changes anything: the others cost no I/O
        if (options.status !== 429 || retryAfterMillis === undefined) return
        const request = {
          kind: "adaptiveFeedback" as const,
          epoch: options.epoch,
          tokens: options.tokens,
          // clamped here: the statement takes it as the step would use it
          retryAfterMillis: clampWindow(retryAfterMillis)
        }
        yield* stepOn(`${prefix}adaptive/${options.key}`, request, {
          parse: parseAdaptive,
          step: (stored, now) => adaptiveFeedbackStep(stored, now, { ...request, status: 429 }),
          bound: undefined
        })
      })
  })
}
