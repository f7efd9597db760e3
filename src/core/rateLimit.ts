/**
 * The arithmetic of `KvRateLimiter`: `@effect/experimental`'s
 * `RateLimiter.layerStoreMemory` as pure functions of (stored state, now).
 *
 * A step runs wherever the store decides atomically: in `KvStore.update`'s
 * place on the Effect `Clock` (memory, and any driver without a rate-limit
 * primitive), or transcribed into one SQL statement on the database's clock
 * (`postgresSql.ts`, which must compute exactly what `rateLimitStep` does).
 *
 * The state is JSON text: `{"count":c,"expiresAt":e}` for a fixed window,
 * `{"tokens":t,"lastRefill":l}` for a token bucket, times in milliseconds of
 * the clock that decided. It carries a time to live: the moment forgetting it
 * can no longer change an answer (the window has reset, the bucket is full).
 */

/**
 * One call of a rate limiter, as `RateLimiterStore` receives it: `tokens` to
 * take, one token's refill period in milliseconds, and the limit (a fixed
 * window's is optional: without one, or with 0, every call is admitted).
 */
export type RateLimitRequest =
  | {
    readonly algorithm: "fixed-window"
    readonly tokens: number
    readonly refillMillis: number
    readonly limit: number | undefined
  }
  | {
    readonly algorithm: "token-bucket"
    readonly tokens: number
    readonly refillMillis: number
    readonly limit: number
    /** Take the tokens even when the bucket has too few (it goes negative). */
    readonly allowOverflow: boolean
  }

/**
 * What a call answers. Fixed window: `tokens` counted in the window after the
 * call (the count plus this call's tokens when refused) and `resetMillis` until
 * the window resets. Token bucket: `tokens` left after the call (negative when
 * refused or overdrawn) and `resetMillis` until the bucket is full again.
 */
export interface RateLimitAnswer {
  readonly tokens: number
  readonly resetMillis: number
}

/** A step's outcome: the answer, whether the call's tokens were taken, and the state to keep (if any) and until when. */
export interface RateLimitStep {
  readonly answer: RateLimitAnswer
  readonly admitted: boolean
  /** `undefined`: nothing worth keeping (a counter that has already reset). */
  readonly keep: { readonly state: string; readonly until: number } | undefined
}

const isFiniteNumber = (u: unknown): u is number => typeof u === "number" && Number.isFinite(u)

/** What is wrong with a request, in words; `undefined` when the arithmetic can run on it. */
export const rateLimitRequestProblem = (request: RateLimitRequest): string | undefined => {
  if (!isFiniteNumber(request.refillMillis) || request.refillMillis <= 0) {
    return `the refill period must be a positive, finite number of milliseconds, got ${String(request.refillMillis)}`
  }
  if (!isFiniteNumber(request.tokens)) return `tokens must be a finite number, got ${String(request.tokens)}`
  if (request.limit !== undefined && !isFiniteNumber(request.limit)) {
    return `the limit must be a finite number, got ${String(request.limit)}`
  }
  return undefined
}

/** The two fields of each algorithm's state, in the order they are written. */
export const STATE_FIELDS = {
  "fixed-window": ["count", "expiresAt"],
  "token-bucket": ["tokens", "lastRefill"]
} as const

export const INVALID_STATE = "the stored value is not a rate limiter state"

/** The two numbers of a stored state, or `undefined` when it is not one of `algorithm`'s. */
export const parseRateLimitState = (
  algorithm: RateLimitRequest["algorithm"],
  text: string
): readonly [number, number] | undefined => {
  const [first, second] = STATE_FIELDS[algorithm]
  try {
    const state: unknown = JSON.parse(text)
    if (typeof state !== "object" || state === null) return undefined
    const a = (state as Record<string, unknown>)[first]
    const b = (state as Record<string, unknown>)[second]
    return isFiniteNumber(a) && isFiniteNumber(b) ? [a, b] : undefined
  } catch {
    return undefined
  }
}

const encodeState = (algorithm: RateLimitRequest["algorithm"], a: number, b: number): string => {
  const [first, second] = STATE_FIELDS[algorithm]
  return JSON.stringify({ [first]: a, [second]: b })
}

/**
 * One call on the stored state (`undefined`: none, or expired) at `now`;
 * `undefined` back when the stored text is not this algorithm's state.
 *
 * Fixed window: a counter that has reset (or was never written) starts at 0
 * with `expiresAt = now`; each admitted call adds its tokens and pushes
 * `expiresAt` by `refillMillis × tokens`. With a limit, a call that would
 * exceed it is refused and changes nothing. Kept until `expiresAt`.
 *
 * Token bucket: a new bucket is full (`limit` tokens, refilled now); an
 * existing one gains one token per whole refill period elapsed, up to
 * `limit`. The call takes its tokens when enough are left (or always, with
 * `allowOverflow`); the refill is kept either way. Kept until it would be
 * full again, at least 1 ms (0 would mean "never expires").
 */
export const rateLimitStep = (
  request: RateLimitRequest,
  stored: string | undefined,
  now: number
): RateLimitStep | undefined => {
  const state = stored === undefined ? undefined : parseRateLimitState(request.algorithm, stored)
  if (stored !== undefined && state === undefined) return undefined
  const { refillMillis, tokens } = request

  if (request.algorithm === "fixed-window") {
    const [count, expiresAt] = state !== undefined && state[1] > now ? state : [0, now]
    // a limit of 0 means "no limit" in layerStoreMemory too (it tests `options.limit &&`)
    if (request.limit && count + tokens > request.limit) {
      return {
        answer: { tokens: count + tokens, resetMillis: expiresAt - now },
        admitted: false,
        keep: undefined
      }
    }
    const next = expiresAt + refillMillis * tokens
    return {
      answer: { tokens: count + tokens, resetMillis: next - now },
      admitted: true,
      // a counter that has already reset is as good as none
      keep: next > now ? { state: encodeState(request.algorithm, count + tokens, next), until: next } : undefined
    }
  }

  const { limit } = request
  let bucketTokens: number
  let lastRefill: number
  if (state === undefined) {
    bucketTokens = limit
    lastRefill = now
  } else {
    ;[bucketTokens, lastRefill] = state
    const tokensToAdd = Math.floor((now - lastRefill) / refillMillis)
    if (tokensToAdd > 0) {
      bucketTokens = Math.min(limit, bucketTokens + tokensToAdd)
      lastRefill = lastRefill + tokensToAdd * refillMillis
    }
  }
  const left = bucketTokens - tokens
  const admitted = request.allowOverflow || left >= 0
  if (admitted) bucketTokens = left
  const fullIn = Math.max(1, lastRefill + (limit - bucketTokens) * refillMillis - now)
  return {
    answer: { tokens: left, resetMillis: fullIn },
    admitted,
    keep: { state: encodeState(request.algorithm, bucketTokens, lastRefill), until: now + fullIn }
  }
}

/**
 * The answer of a step that a store ran elsewhere (one SQL statement), from
 * what it kept, whether it admitted the call, and its `now`: the same numbers
 * `rateLimitStep` answers, since a refused call keeps the state it found.
 */
export const rateLimitAnswerOf = (
  request: RateLimitRequest,
  kept: string,
  admitted: boolean,
  now: number
): RateLimitAnswer | undefined => {
  const state = parseRateLimitState(request.algorithm, kept)
  if (state === undefined) return undefined
  const [a, b] = state
  if (request.algorithm === "fixed-window") {
    return { tokens: admitted ? a : a + request.tokens, resetMillis: b - now }
  }
  return {
    tokens: admitted ? a : a - request.tokens,
    resetMillis: Math.max(1, b + (request.limit - a) * request.refillMillis - now)
  }
}
