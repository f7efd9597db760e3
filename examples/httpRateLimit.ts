/**
 * An HTTP-style rate limit with `RateLimiter` from `@effect/experimental`,
 * its counters kept in effect-kv by `KvRateLimiter.layerStore`.
 *
 * On PostgreSQL every instance behind the load balancer shares the counters,
 * and the updates are atomic, so the limit holds for the whole fleet. The
 * handler below answers 429 with a `Retry-After` when a client is over its
 * limit, as an HTTP middleware would.
 *
 * Shows: 15 concurrent requests from one client with a limit of 10 per
 * second get exactly 10 answers 200 and 5 answers 429, another client is not
 * affected, and a second later the first client is served again.
 *
 * The program needs only `KvStore`; the backend is chosen by whoever runs it.
 */
import * as RateLimiter from "@effect/experimental/RateLimiter"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type { KvStore } from "effect-kv"
import * as KvRateLimiter from "effect-kv/KvRateLimiter"

/** A response, reduced to what the example needs. */
export interface Response {
  readonly status: 200 | 429 | 503
  readonly headers: Readonly<Record<string, string>>
}

/** Wraps a handler: at most 10 requests per client IP per second. */
const rateLimited = (limiter: RateLimiter.RateLimiter, clientIp: string, handler: Effect.Effect<Response>) =>
  limiter.consume({ key: `ip:${clientIp}`, limit: 10, window: "1 second" }).pipe(
    Effect.flatMap((result) =>
      Effect.map(handler, (response): Response => ({
        ...response,
        headers: { ...response.headers, "RateLimit-Remaining": String(result.remaining) }
      }))
    ),
    Effect.catchTag("RateLimiterError", (error) =>
      Effect.succeed<Response>(
        error.reason === "Exceeded"
          ? { status: 429, headers: { "Retry-After": String(Math.ceil(Duration.toSeconds(error.retryAfter))) } }
          : { status: 503, headers: {} } // the store failed: refuse rather than serve unlimited
      ))
  )

const hello: Effect.Effect<Response> = Effect.succeed({ status: 200, headers: {} })

/** What the rate-limit program observed. */
export interface HttpRateLimitReport {
  readonly ok: number
  readonly tooMany: number
  readonly otherClient: number
  readonly nextSecond: number
}

export const program = (prefix: string): Effect.Effect<HttpRateLimitReport, never, KvStore.KvStore> =>
  Effect.gen(function*() {
    const limiter = yield* RateLimiter.make
    const burst = yield* Effect.all(
      Array.from({ length: 15 }, () => rateLimited(limiter, "203.0.113.7", hello)),
      { concurrency: "unbounded" }
    )
    const ok = burst.filter((r) => r.status === 200).length
    const tooMany = burst.filter((r) => r.status === 429).length
    const retryAfter = burst.find((r) => r.status === 429)?.headers["Retry-After"]
    yield* Effect.log(`15 concurrent requests, limit 10/s -> ${ok} × 200, ${tooMany} × 429 (Retry-After: ${retryAfter}s)`)

    const other = yield* rateLimited(limiter, "198.51.100.2", hello)
    yield* Effect.log(`another client -> ${other.status}`)

    yield* Effect.sleep("1 second")
    const later = yield* rateLimited(limiter, "203.0.113.7", hello)
    yield* Effect.log(`the first client a second later -> ${later.status}`)

    return { ok, tooMany, otherClient: other.status, nextSecond: later.status }
  }).pipe(Effect.provide(KvRateLimiter.layerStore({ prefix })))
