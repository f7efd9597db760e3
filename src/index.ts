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
 * (`KvPersistence` and `KvRateLimiter` need the optional `@effect/experimental`
 * and are imported from their own entries: `effect-kv/KvPersistence`,
 * `effect-kv/KvRateLimiter`.)
 *
 * @since 0.2.0
 */
export * as KvKeyValueStore from "./KvKeyValueStore.js"
