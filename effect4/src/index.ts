/**
 * effect-kv 2.x: a typed key-value store for Effect 4 programs, in memory or on PostgreSQL.
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
 * A `KvStore` on PostgreSQL through `effect/sql` (e.g. `PgClient.layer` of `@effect/sql-pg` 4).
 *
 * @since 2.0.0
 */
export * as PostgresStore from "./PostgresStore.js"

/**
 * Effect 4's `KeyValueStore` (`effect/persistence`) served by the `KvStore` in context.
 *
 * @since 2.0.0
 */
export * as KvKeyValueStore from "./KvKeyValueStore.js"
