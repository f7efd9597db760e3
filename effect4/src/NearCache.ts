/**
 * A near cache: the `KvStore` in context with its reads answered from
 * process memory, kept true by the store's change feed. For read-mostly data
 * (feature flags, settings, a price list) read on every request: a hit costs
 * no round trip.
 *
 * Reads (`get`, `getOption`, `has`, `getMany`, `timeToLive`) are served from
 * memory once a key has been read (a missing key too), until the feed says the
 * key changed. Writes go through to the store and drop the local copy, so the
 * writing instance reads its own writes; a write on another instance sharing
 * the store arrives by the feed. No copy is used longer than `maxStaleness`
 * after it was read, whatever the feed says; when the feed is lost, the cache
 * empties itself and reads go to the store until the feed is back. A cached
 * entry past its TTL is a miss. Streams, `keys`, `count`, `watch` and
 * `watchPrefix` go to the store.
 *
 * @example
 * import { KvStore, NearCache, PostgresStore } from "effect-kv"
 *
 * const store = NearCache.layer({ maxEntries: 1_000 }).pipe(Layer.provide(PostgresStore.layer({ notifyChanges: true })))
 *
 * @since 0.1.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as nearCache from "./internal/nearCache.js"
import * as KvStore from "./KvStore.js"

/**
 * Options of `layer` and `make`. Checked when the cache is built: an unknown
 * name, a value of the wrong type, a `maxEntries` that is not a positive
 * integer or a `maxStaleness` that is not a positive finite duration fails
 * with `KvError` (`InvalidArgument`, op `"layer"`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How many keys the cache holds at most, a positive integer; the least recently used go first. Default 10,000. */
  readonly maxEntries?: number | undefined
  /**
   * The oldest a cached answer may be, even if a change notification is lost
   * (a number is milliseconds). Default 1 second.
   */
  readonly maxStaleness?: Duration.Input | undefined
}

/**
 * A near cache over `store`, its change feed followed by a fiber in the
 * scope. Fails with `KvError` (`InvalidArgument`, op `"layer"`) for invalid
 * options, or when `store` has no change feed (a driver without one, or a
 * `PostgresStore` with `notifyChanges: false`): without it the cache could
 * not know when its copies are stale.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  store: KvStore.KvStore.Service,
  options?: Options
): Effect.Effect<KvStore.KvStore.Service, KvStore.KvError, Scope.Scope> => nearCache.make(store, options)

/**
 * Wraps the `KvStore` it is given in a near cache (see `make`) and provides
 * it as the `KvStore`:
 * `NearCache.layer().pipe(Layer.provide(PostgresStore.layer()))`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<KvStore.KvStore, KvStore.KvError, KvStore.KvStore> =>
  Layer.effect(
    KvStore.KvStore,
    Effect.flatMap(KvStore.KvStore, (store) => nearCache.make(store, options, "NearCache.layer"))
  )
