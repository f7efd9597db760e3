/**
 * effect-kv 2.x: a typed key-value store for Effect 4 programs, in memory or on PostgreSQL.
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
 * A `KvStore` on PostgreSQL through `effect/sql` (e.g. `PgClient.layer` of `@effect/sql-pg` 4).
 *
 * @since 2.0.0
 */
export * as PostgresStore from "./PostgresStore.js"

/**
 * For authors of a backend: the `Driver` interface that `KvStore.make` turns
 * into a store.
 *
 * @since 2.0.0
 */
export * as KvDriver from "./KvDriver.js"

/**
 * Effect 4's `KeyValueStore` (`effect/persistence`) served by the `KvStore` in context.
 *
 * @since 2.0.0
 */
export * as KvKeyValueStore from "./KvKeyValueStore.js"

/**
 * Effect 4's `BackingPersistence` and `Persistence` (behind `PersistedCache`,
 * `effect/persistence`) on the `KvStore` in context.
 *
 * @since 2.0.0
 */
export * as KvPersistence from "./KvPersistence.js"

/**
 * Effect 4's `RateLimiterStore` (`effect/persistence`, with `adaptiveConsume` and
 * `adaptiveFeedback`) on the `KvStore` in context.
 *
 * @since 2.0.0
 */
export * as KvRateLimiter from "./KvRateLimiter.js"

/**
 * A near cache: the `KvStore` in context with its reads answered from process
 * memory, kept true by the store's change feed.
 *
 * @since 2.0.0
 */
export * as NearCache from "./NearCache.js"
