/**
 * A fixed-window rate limiter on `KvStore.increment`.
 *
 * Each client gets one counter key per window (`<prefix><client>:<window start>`).
 * Every request increments it — one atomic step, one statement on PostgreSQL —
 * with the window's length as the TTL, which applies only when the increment
 * creates the key, so old windows expire by themselves. A request is allowed
 * when its increment returns at most the limit.
 *
 * Shows: 20 concurrent requests with a limit of 10 get exactly 10 allowed
 * (whatever the interleaving, also across app instances sharing a database),
 * another client is not affected, and the next window starts from zero again.
 *
 * The program needs only `KvStore`; the backend is chosen by whoever runs it.
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { KvStore } from "effect-kv"
import { type CounterCorrupted, increment } from "./counter.js"

/** The client has used up the current window. */
export class RateLimited extends Data.TaggedError("RateLimited")<{
  readonly client: string
  readonly limit: number
  readonly retryAfter: Duration.Duration
}> {
  override get message(): string {
    return `Client ${JSON.stringify(this.client)} exceeded ${this.limit} requests; retry after ${
      Duration.format(this.retryAfter)
    }`
  }
}

/** The outcome of one request. */
export interface Decision {
  readonly allowed: boolean
  /** Requests left in the current window after this one. */
  readonly remaining: number
}

/** A rate limiter: `limit` requests per client per `window`. */
export interface RateLimiter {
  /** Counts one request of `client` and says whether it may proceed. */
  readonly hit: (client: string) => Effect.Effect<Decision, CounterCorrupted | KvStore.KvError, KvStore.KvStore>
  /** Like `hit`, but fails with `RateLimited` when the request is refused. */
  readonly consume: (
    client: string
  ) => Effect.Effect<number, RateLimited | CounterCorrupted | KvStore.KvError, KvStore.KvStore>
}

export const makeRateLimiter = (options: {
  readonly prefix: string
  readonly limit: number
  readonly window: Duration.DurationInput
}): RateLimiter => {
  const windowMillis = Duration.toMillis(options.window)

  const consume = (client: string) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const windowStart = now - (now % windowMillis)
      const key = `${options.prefix}${client}:${windowStart}`
      // The whole window length, not the time left in it: the key is per window
      // anyway, and the TTL only applies to the request that creates the key.
      const count = yield* increment(key, { ttl: options.window })
      if (count > options.limit) {
        return yield* new RateLimited({
          client,
          limit: options.limit,
          retryAfter: Duration.millis(windowStart + windowMillis - now)
        })
      }
      return options.limit - count
    })

  return {
    consume,
    hit: (client) =>
      consume(client).pipe(
        Effect.map((remaining): Decision => ({ allowed: true, remaining })),
        Effect.catchTag("RateLimited", () => Effect.succeed<Decision>({ allowed: false, remaining: 0 }))
      )
  }
}

/** What the rate-limiter program observed. */
export interface RateLimiterReport {
  readonly limit: number
  readonly concurrentHits: number
  readonly allowed: number
  readonly denied: number
  readonly otherClientAllowed: boolean
  readonly nextWindowAllowed: boolean
}

/** Sleeps to the start of the next window unless most of the current one is left. */
const alignToWindow = (windowMillis: number) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    const left = windowMillis - (now % windowMillis)
    return left * 2 < windowMillis ? Effect.sleep(Duration.millis(left)) : Effect.void
  })

/**
 * Sends 20 concurrent requests for one client with a limit of 10, one request
 * for another client, then one more for the first client in the next window.
 */
export const program = (
  prefix: string
): Effect.Effect<RateLimiterReport, CounterCorrupted | KvStore.KvError, KvStore.KvStore> =>
  Effect.gen(function*() {
    const limit = 10
    const concurrentHits = 20
    // Short enough for a demo on the real clock, long enough for 20 requests to
    // land in one window (the burst starts at the beginning of a window).
    const windowMillis = 1000
    const limiter = makeRateLimiter({ prefix, limit, window: Duration.millis(windowMillis) })

    yield* alignToWindow(windowMillis)
    const decisions = yield* Effect.all(
      Array.from({ length: concurrentHits }, () => limiter.hit("alice")),
      { concurrency: "unbounded" }
    )
    const allowed = decisions.filter((decision) => decision.allowed).length
    yield* Effect.log(
      `${concurrentHits} concurrent requests, limit ${limit} per window -> ${allowed} allowed, ${
        concurrentHits - allowed
      } denied`
    )

    const other = yield* limiter.hit("bob")
    yield* Effect.log(`another client in the same window -> ${other.allowed ? "allowed" : "denied"}`)

    const denied = yield* limiter.consume("alice").pipe(
      Effect.as("allowed"),
      Effect.catchTag("RateLimited", (error) => Effect.succeed(error.message))
    )
    yield* Effect.log(`one more for the first client -> ${denied}`)

    yield* Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.sleep(Duration.millis(windowMillis - (now % windowMillis))))
    const next = yield* limiter.hit("alice")
    yield* Effect.log(
      `next window -> ${next.allowed ? "allowed" : "denied"} (${next.remaining} left)`
    )

    return {
      limit,
      concurrentHits,
      allowed,
      denied: concurrentHits - allowed,
      otherClientAllowed: other.allowed,
      nextWindowAllowed: next.allowed
    }
  })
