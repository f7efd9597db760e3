/**
 * The state and steps behind `KvRateLimiter`: `RateLimiter.layerStoreMemory`'s
 * two algorithms as pure functions of (state, now), each run inside one
 * `KvStore.update` with a TTL long enough for the state it writes.
 */
import * as RateLimiter from "@effect/experimental/RateLimiter"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as KvStore from "../KvStore.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** A fixed-window counter: the tokens counted and when (Clock millis) the counter resets. */
interface Counter {
  readonly count: number
  readonly expiresAt: number
}

/** A token bucket: the tokens left (negative when overdrawn) and when (Clock millis) it was last refilled. */
interface Bucket {
  readonly tokens: number
  readonly lastRefill: number
}

/** What to return, and what to write (nothing, or a state that lives `ttl` millis). */
interface Step<A> {
  readonly result: A
  readonly write: Option.Option<{ readonly state: unknown; readonly ttl: number }>
}

/** Ends `KvStore.update` without writing. */
class NoWrite {
  readonly _tag = "NoWrite"
}

const storeError = (message: string, cause?: unknown) =>
  new RateLimiter.RateLimitStoreError({ message, ...(cause === undefined ? {} : { cause }) })

const isFiniteNumber = (u: unknown): u is number => typeof u === "number" && Number.isFinite(u)

const parseState = <S>(
  key: string,
  bytes: Uint8Array,
  fields: readonly [string, string]
): Effect.Effect<S, RateLimiter.RateLimitStoreError> => {
  try {
    const state: unknown = JSON.parse(decoder.decode(bytes))
    if (
      typeof state === "object" && state !== null &&
      isFiniteNumber((state as Record<string, unknown>)[fields[0]]) &&
      isFiniteNumber((state as Record<string, unknown>)[fields[1]])
    ) return Effect.succeed(state as S)
  } catch {
    // reported below
  }
  return Effect.fail(storeError(`The rate limiter state stored at ${JSON.stringify(key)} is not valid`))
}

/** A refill period in milliseconds, refused when it is not a positive finite number (nothing to divide by). */
const refillMillis = (refillRate: Duration.Duration) => {
  const millis = Duration.toMillis(refillRate)
  return Number.isFinite(millis) && millis > 0
    ? Effect.succeed(millis)
    : Effect.fail(storeError(`Invalid refill rate ${Duration.format(refillRate)}: it must be positive and finite`))
}

/**
 * The fixed-window step of `layerStoreMemory`: a counter that has reset (or
 * was never written) starts at 0 with `expiresAt = now`; each admitted call
 * adds its tokens and pushes `expiresAt` by `refillRate × tokens`. With a
 * `limit`, a call that would exceed it is refused and changes nothing, but
 * still answers `count + tokens`. The answer is `[count, expiresAt − now]`.
 */
const fixedWindowStep = (
  current: Option.Option<Counter>,
  now: number,
  refillRateMillis: number,
  tokens: number,
  limit: number | undefined
): Step<readonly [count: number, ttl: number]> => {
  const counter = Option.isSome(current) && current.value.expiresAt > now
    ? current.value
    : { count: 0, expiresAt: now }
  // `limit` 0 means "no limit" in layerStoreMemory too (it tests `options.limit &&`).
  if (limit && counter.count + tokens > limit) {
    return { result: [counter.count + tokens, counter.expiresAt - now], write: Option.none() }
  }
  const next: Counter = { count: counter.count + tokens, expiresAt: counter.expiresAt + refillRateMillis * tokens }
  const ttl = next.expiresAt - now
  return {
    result: [next.count, ttl],
    // A counter that is already reset is as good as none: nothing to keep.
    write: ttl > 0 ? Option.some({ state: next, ttl }) : Option.none()
  }
}

/**
 * The token-bucket step of `layerStoreMemory`: a new bucket is full
 * (`limit` tokens, refilled now); an existing one gains one token per whole
 * `refillRate` elapsed, up to `limit`. The call takes its tokens when enough
 * are left (or always, with `allowOverflow`) and answers the tokens left
 * after it, negative when refused or overdrawn. The bucket is kept until it
 * would have refilled completely.
 */
const tokenBucketStep = (
  current: Option.Option<Bucket>,
  now: number,
  refillRateMillis: number,
  tokens: number,
  limit: number,
  allowOverflow: boolean
): Step<number> => {
  let bucket: Bucket
  if (Option.isNone(current)) {
    bucket = { tokens: limit, lastRefill: now }
  } else {
    bucket = current.value
    const tokensToAdd = Math.floor((now - bucket.lastRefill) / refillRateMillis)
    if (tokensToAdd > 0) {
      bucket = {
        tokens: Math.min(limit, bucket.tokens + tokensToAdd),
        lastRefill: bucket.lastRefill + tokensToAdd * refillRateMillis
      }
    }
  }
  const newTokenCount = bucket.tokens - tokens
  if (allowOverflow || newTokenCount >= 0) bucket = { tokens: newTokenCount, lastRefill: bucket.lastRefill }
  // Full again at lastRefill + (limit − tokens) × refillRate; at least 1 ms, as 0 would mean "never expires".
  const ttl = Math.max(1, bucket.lastRefill + (limit - bucket.tokens) * refillRateMillis - now)
  return { result: newTokenCount, write: Option.some({ state: bucket, ttl }) }
}

/** Ends `KvStore.update` without writing: the state needs a longer TTL than the one given. */
class NeedsLongerTtl {
  readonly _tag = "NeedsLongerTtl"
  constructor(readonly ttl: number) {}
}

/**
 * One atomic step on `key`: reads the state, runs `step` on the caller's
 * clock (read inside the update, so steps of one key apply in clock order)
 * and writes what it says to write.
 *
 * `KvStore.update` takes its TTL before the function runs, so the state is
 * written with a TTL at least as long as the one `step` asks for, never
 * shorter: `bound` when the caller knows an upper bound (a limit), else a
 * guess from a plain read; a step that needs more writes nothing and runs
 * again with twice what it needed (slack for concurrent callers). A longer
 * TTL is harmless: a fixed-window counter carries its own reset time, and a
 * token bucket kept longer is what `layerStoreMemory` keeps forever.
 */
const runStep = <S, A>(
  store: KvStore.Service,
  key: string,
  fields: readonly [string, string],
  bound: number | undefined,
  step: (current: Option.Option<S>, now: number) => Step<A>
): Effect.Effect<A, RateLimiter.RateLimitStoreError> => {
  const read = (bytes: Option.Option<Uint8Array>) =>
    Option.isSome(bytes) ? Effect.asSome(parseState<S>(key, bytes.value, fields)) : Effect.succeedNone

  const attempt = (ttl: number): Effect.Effect<A, RateLimiter.RateLimitStoreError> =>
    Effect.suspend(() => {
      let result: Option.Option<A> = Option.none()
      return store.update(
        key,
        (bytes) =>
          Effect.gen(function*() {
            const outcome = step(yield* read(bytes), yield* Clock.currentTimeMillis)
            if (Option.isSome(outcome.write) && outcome.write.value.ttl > ttl) {
              return yield* Effect.fail(new NeedsLongerTtl(outcome.write.value.ttl))
            }
            result = Option.some(outcome.result)
            if (Option.isNone(outcome.write)) return yield* Effect.fail(new NoWrite())
            return encoder.encode(JSON.stringify(outcome.write.value.state))
          }),
        Duration.millis(ttl)
      ).pipe(
        Effect.asVoid,
        Effect.catchIf((error): error is NoWrite => error instanceof NoWrite, () => Effect.void),
        Effect.flatMap(() =>
          Option.isSome(result) ? Effect.succeed(result.value) : Effect.dieMessage("rate limiter step did not run")
        ),
        Effect.catchIf(
          (error): error is NeedsLongerTtl => error instanceof NeedsLongerTtl,
          (error) => attempt(2 * error.ttl)
        ),
        Effect.mapError((error) =>
          error instanceof RateLimiter.RateLimitStoreError
            ? error
            : storeError(`Rate limiter store failed: ${error.message}`, error)
        )
      )
    })

  if (bound !== undefined) return attempt(Math.max(1, bound))
  return store.getOption(key).pipe(
    Effect.mapError((error) => storeError(`Rate limiter store failed: ${error.message}`, error)),
    Effect.flatMap(read),
    Effect.zip(Clock.currentTimeMillis),
    Effect.flatMap(([current, now]) => {
      const outcome = step(current, now)
      return attempt(Math.max(1, 2 * (Option.isSome(outcome.write) ? outcome.write.value.ttl : 1)))
    })
  )
}

/** @internal */
export const makeStore = (
  store: KvStore.Service,
  options?: { readonly prefix?: string | undefined }
): RateLimiter.RateLimiterStore["Type"] => {
  const prefix = options?.prefix ?? "ratelimit/"
  return RateLimiter.RateLimiterStore.of({
    fixedWindow: (options) =>
      Effect.flatMap(refillMillis(options.refillRate), (refillRateMillis) =>
        runStep<Counter, readonly [number, number]>(
          store,
          `${prefix}fixed/${options.key}`,
          ["count", "expiresAt"],
          // With a limit, a counter never runs more than `limit × refillRate` (the window) ahead of now.
          options.limit ? options.limit * refillRateMillis : undefined,
          (current, now) => fixedWindowStep(current, now, refillRateMillis, options.tokens, options.limit)
        )),
    tokenBucket: (options) =>
      Effect.flatMap(refillMillis(options.refillRate), (refillRateMillis) =>
        runStep<Bucket, number>(
          store,
          `${prefix}bucket/${options.key}`,
          ["tokens", "lastRefill"],
          // Without overflow a bucket holds 0 to `limit` tokens: full again within `limit × refillRate`.
          options.allowOverflow ? undefined : options.limit * refillRateMillis,
          (current, now) =>
            tokenBucketStep(current, now, refillRateMillis, options.tokens, options.limit, options.allowOverflow)
        ))
  })
}

