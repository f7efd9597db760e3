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
