/**
 * effect-kv: a typed key-value store for Effect programs, in memory or on PostgreSQL.
 *
 * @since 0.1.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so

/**
 * The `KvStore` service tag, its `Service`, errors, accessors and the
 * `prefixed` and `forSchema` views.
 *
 * @since 0.1.0
 */
export * as KvStore from "./KvStore.js"

/**
 * An in-process `KvStore`: entries in memory, expiry on the Effect `Clock`,
 * an optional least-recently-used bound.
 *
 * @since 0.1.0
 */
export * as MemoryStore from "./MemoryStore.js"

/**
 * A `KvStore` shared by every instance of an application, on PostgreSQL
 * through `@effect/sql`.
 *
 * @since 0.1.0
 */
export * as PostgresStore from "./PostgresStore.js"

/**
 * For authors of a backend: the `Driver` interface that `KvStore.make` turns
 * into a store.
 *
 * @since 0.1.0
 */
export * as KvDriver from "./KvDriver.js"

/**
 * `@effect/platform`'s `KeyValueStore` served by the `KvStore` in context.
 *
 * @since 0.1.0
 */
export * as KvKeyValueStore from "./KvKeyValueStore.js"

/**
 * `@effect/experimental`'s `BackingPersistence` and `ResultPersistence`
 * (behind `PersistedCache`) on the `KvStore` in context.
 *
 * @since 0.1.0
 */
export * as KvPersistence from "./KvPersistence.js"

/**
 * `@effect/experimental`'s `RateLimiterStore` on the `KvStore` in context.
 *
 * @since 0.1.0
 */
export * as KvRateLimiter from "./KvRateLimiter.js"

/**
 * A near cache: the `KvStore` in context with its reads answered from process
 * memory, kept true by the store's change feed.
 *
 * @since 0.1.0
 */
export * as NearCache from "./NearCache.js"
