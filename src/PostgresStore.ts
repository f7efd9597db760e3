/**
 * A `KvStore` shared by every instance of an application, on PostgreSQL
 * through `@effect/sql`: give it any `SqlClient` (e.g. `PgClient.layer`), so one
 * connection pool serves the store and the application.
 *
 * The schema, the locking strategy and the clock are described in
 * `internal/postgresStore.ts` and the README.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as Duration from "effect/Duration"
import type * as Layer from "effect/Layer"
import * as internal from "./internal/postgresStore.js"
import type { KvError, KvStore } from "./KvStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The table's name, default `"kv_store"`: 1 to 63 lowercase letters, digits or `_`. */
  readonly table?: string | undefined
  /** The table's schema, default `"public"`; same rules as `table`. */
  readonly schema?: string | undefined
  /** Create the table `UNLOGGED`: faster writes, emptied after a crash, not replicated. Default `false`. */
  readonly unlogged?: boolean | undefined
  /** Run `cleanup` on this period in the layer's scope. Default: none, cleanup is manual. */
  readonly cleanupInterval?: Duration.DurationInput | undefined
  /** Create the table and its index when missing. Default `true`. */
  readonly createTable?: boolean | undefined
}

/**
 * The store as a layer needing a `SqlClient`. Fails with `KvError`
 * (`InvalidArgument`, op `"layer"`) for a bad table or schema name or interval,
 * and (`Backend`) when the table cannot be created.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: (options?: Options) => Layer.Layer<KvStore, KvError, SqlClient.SqlClient> = internal.layer
