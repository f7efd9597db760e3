/**
 * effect-kv: a typed key-value store for Effect programs, in memory or on PostgreSQL.
 *
 * @since 0.1.0
 */

/**
 * The `KvStore` service tag, its errors and accessors.
 *
 * @since 0.1.0
 */
export * as KvStore from "./KvStore.js"

/**
 * An in-process `KvStore` backed by a `Ref`.
 *
 * @since 0.1.0
 */
export * as MemoryStore from "./MemoryStore.js"

/**
 * A shared `KvStore` on PostgreSQL through `@effect/sql`.
 *
 * @since 0.1.0
 */
export * as PostgresStore from "./PostgresStore.js"

/**
 * `@effect/platform`'s `KeyValueStore` served by the `KvStore` in context.
 *
 * @since 0.2.0
 */
export * as KvKeyValueStore from "./KvKeyValueStore.js"

/**
 * `@effect/experimental`'s `BackingPersistence` and `ResultPersistence`
 * (behind `PersistedCache`) on the `KvStore` in context.
 *
 * @since 0.2.0
 */
export * as KvPersistence from "./KvPersistence.js"

/**
 * `@effect/experimental`'s `RateLimiterStore` on the `KvStore` in context.
 *
 * @since 0.2.0
 */
export * as KvRateLimiter from "./KvRateLimiter.js"
