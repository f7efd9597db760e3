/**
 * `@effect/experimental`'s `RateLimiterStore` on effect-kv, so `RateLimiter`
 * limits are shared — and never over-admitted — by every instance using one
 * database.
 *
 * Both algorithms compute exactly what `RateLimiter.layerStoreMemory` does
 * (the arithmetic is in `core/rateLimit.ts`), each call one atomic step of
 * the limiter's key, decided on the store's clock: on PostgreSQL one
 * statement on the database's clock under the key's lock, so instances whose
 * clocks disagree never over-admit between them; on `MemoryStore` (and any
 * driver without `Driver.rateLimit`) inside the key's update on the Effect
 * `Clock`, which `TestClock` drives. A `Service` that `KvStore.make` did not
 * build (a hand-written wrapper) runs the step in its `update`, on the Effect
 * `Clock` too.
 *
 * The state carries a TTL, so an idle key disappears from the store once
 * forgetting it makes no difference: a fixed-window counter when its window
 * has elapsed, a token bucket once it has refilled completely. One
 * difference remains: `layerStoreMemory` never forgets a bucket, so a full
 * bucket keeps the refill phase of its first call forever, while a forgotten
 * one starts a new phase at its next call; its next token may then come up to
 * one refill period later (never earlier), so it never admits more than
 * `layerStoreMemory` would.
 *
 * A subpath entry (`effect-kv/KvRateLimiter`): `@effect/experimental` is an
 * optional peer dependency, loaded only by those who import this module.
 *
 * @since 0.1.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import * as RateLimiter from "@effect/experimental/RateLimiter"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/rateLimiter.js"
import { bridgeOptions } from "./internal/options.js"
import * as KvStore from "./KvStore.js"

const DEFAULT_PREFIX = "ratelimit/"

/**
 * Options of `makeStore` and `layerStore`. An unknown name or a value of the
 * wrong type makes every operation fail with `RateLimitStoreError` whose
 * `cause` is a `KvError` (`InvalidArgument`, op `"layer"`) naming the option.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * The key prefix of the limiter's state: `${prefix}fixed/${key}` for fixed
   * windows, `${prefix}bucket/${key}` for token buckets. Default `"ratelimit/"`.
   */
  readonly prefix?: string | undefined
}

/**
 * A `RateLimiterStore` over a `KvStore` service.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeStore = (store: KvStore.Service, options?: Options): RateLimiter.RateLimiterStore["Type"] =>
  makeStoreFor("KvRateLimiter.makeStore", store, options)

const makeStoreFor = (
  where: string,
  kvStore: KvStore.Service,
  options: Options | undefined
): RateLimiter.RateLimiterStore["Type"] => {
  const { prefix, store } = bridgeOptions(where, kvStore, options, DEFAULT_PREFIX)
  return internal.makeStore(store, { prefix })
}

/**
 * Provides `RateLimiterStore` from the `KvStore` in context; with
 * `RateLimiter.layer` (or `RateLimiter.make`) on top, limits hold across
 * every instance sharing the store. Failures are `RateLimitStoreError`s
 * whose `cause` is the `KvError`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerStore = (options?: Options): Layer.Layer<RateLimiter.RateLimiterStore, never, KvStore.KvStore> =>
  Layer.effect(
    RateLimiter.RateLimiterStore,
    Effect.map(KvStore.KvStore, (store) => makeStoreFor("KvRateLimiter.layerStore", store, options))
  )
