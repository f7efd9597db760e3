/**
 * Effect 4's `RateLimiterStore` (`effect/persistence`) on effect-kv, so
 * `RateLimiter` limits are shared by every instance using one database.
 *
 * Every method — `fixedWindow`, `tokenBucket`, and the `adaptiveConsume` /
 * `adaptiveFeedback` Effect 4 added — computes exactly what Effect 4's
 * `RateLimiter.layerStoreMemory` does for the same calls and clock (the
 * arithmetic is in `core/rateLimit4.ts`; Effect 4 changed Effect 3's: a capped
 * fixed window opens once at `refill × limit`, a limit of 0 is a limit, a token
 * bucket answers `[remaining, elapsedMillis]`). Each call is one atomic step of
 * the limiter's key. On PostgreSQL it is one SQL statement under the key's
 * advisory lock, decided on the database's clock, so instances whose clocks
 * disagree still share one window and never over-admit; on memory it runs inside
 * `KvStore.update` on the Effect `Clock` (`TestClock` drives it).
 *
 * Each state carries its own end and a TTL, so an idle key disappears from the
 * store once forgetting it makes no difference.
 *
 * @since 2.0.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import * as RateLimiter from "effect/persistence/RateLimiter"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/rateLimiter.js"
import { bridgeOptions } from "./internal/options.js"
import * as KvStore from "./KvStore.js"

const DEFAULT_PREFIX = "ratelimit/"

/**
 * Options of `makeStore` and `layerStore`. An unknown name or a value of the
 * wrong type makes every operation fail with `RateLimiterError` (reason
 * `RateLimitStoreError`) whose
 * `cause` is a `KvError` (`InvalidArgument`, op `"layer"`) naming the option.
 *
 * @since 2.0.0
 * @category models
 */
export interface Options {
  /**
   * The key prefix of the limiter's state: `${prefix}fixed/${key}` for fixed
   * windows, `${prefix}bucket/${key}` for token buckets, `${prefix}adaptive/${key}`
   * for adaptive limits. Default `"ratelimit/"`. Do not share a prefix with the
   * Effect 3 line's limiter: the two keep different states.
   */
  readonly prefix?: string | undefined
}

/**
 * A `RateLimiterStore` over a `KvStore` service.
 *
 * @since 2.0.0
 * @category constructors
 */
export const makeStore = (store: KvStore.Service, options?: Options): RateLimiter.RateLimiterStore["Service"] =>
  makeStoreFor("KvRateLimiter.makeStore", store, options)

const makeStoreFor = (
  where: string,
  kvStore: KvStore.Service,
  options: Options | undefined
): RateLimiter.RateLimiterStore["Service"] => {
  const { prefix, store } = bridgeOptions(where, kvStore, options, DEFAULT_PREFIX)
  return internal.makeStore(store, { prefix })
}

/**
 * Provides `RateLimiterStore` from the `KvStore` in context; with
 * `RateLimiter.layer` (or `RateLimiter.make`) on top, limits hold across
 * every instance sharing the store. Failures are `RateLimiterError`s
 * (reason `RateLimitStoreError`) whose `cause` is the `KvError`.
 *
 * @since 2.0.0
 * @category layers
 */
export const layerStore = (options?: Options): Layer.Layer<RateLimiter.RateLimiterStore, never, KvStore.KvStore> =>
  Layer.effect(
    RateLimiter.RateLimiterStore,
    Effect.map(KvStore.KvStore, (store) => makeStoreFor("KvRateLimiter.layerStore", store, options))
  )
