/**
 * A `KvStore` shared by every instance of an application, on PostgreSQL
 * through `@effect/sql`: give it any `SqlClient` (e.g. `PgClient.layer`), so one
 * connection pool serves the store and the application.
 *
 * The schema, the locking strategy and the clock are described in
 * `internal/postgres/store.ts` and the README.
 *
 * @since 0.1.0
 */
import type * as SqlClient from "effect/sql/SqlClient"
import type * as Config from "effect/Config"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as internal from "./internal/postgres/store.js"
import type { KvError, KvStore, Service } from "./KvStore.js"

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
  readonly cleanupInterval?: Duration.Input | undefined
  /** Create the table and its index when missing. Default `true`. */
  readonly createTable?: boolean | undefined
  /** Keep keys out of errors and spans (see `KvStore.MakeOptions`). Default `false`. */
  readonly redactKeys?: boolean | undefined
}

/**
 * Builds the store on the `SqlClient` in context, scoped: the optional
 * cleanup schedule stops when the scope closes. Fails with `KvError`
 * (`InvalidArgument`, op `"layer"`) for a bad table or schema name or
 * interval, and (`Backend`) when the table cannot be created.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make: (options?: Options) => Effect.Effect<Service, KvError, Scope.Scope | SqlClient.SqlClient> =
  internal.make

/**
 * The store as a layer needing a `SqlClient`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: (options?: Options) => Layer.Layer<KvStore, KvError, SqlClient.SqlClient> = internal.layer

/**
 * Like `layer`, with the options read from `Config`, as `PgClient.layerConfig`
 * does, e.g. `PostgresStore.layerConfig({ table: Config.string("KV_TABLE") })`.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfig: (
  config: Config.Wrap<Options>
) => Layer.Layer<KvStore, KvError | Config.ConfigError, SqlClient.SqlClient> = internal.layerConfig
