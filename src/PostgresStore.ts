/**
 * A `KvStore` shared by every instance of an application, on PostgreSQL
 * through `@effect/sql`: give it any `SqlClient` (e.g. `PgClient.layer`), so one
 * connection pool serves the store and the application.
 *
 * One table (default `public.kv_store`, created when missing) holds every
 * entry; expiry follows the database server's clock, so instances whose
 * clocks disagree still agree on what is live; `update` locks the key in a
 * transaction, so it is atomic across instances. The README's PostgreSQL
 * section describes the table and the locking.
 *
 * @since 0.1.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import type * as SqlClient from "@effect/sql/SqlClient"
import type * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { POSTGRES_STORE_OPTIONS } from "./core/options.js"
import { optionsError, unwrapConfig } from "./internal/options.js"
import * as internal from "./internal/postgres/store.js"
import { KvStore } from "./KvStore.js"
import type { KvError, Service } from "./KvStore.js"

/**
 * Options of `layer`, `make` and `layerConfig`. Checked when the store is
 * built: an unknown name or a value of the wrong type fails with `KvError`
 * (`InvalidArgument`, op `"layer"`) naming the option.
 *
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
  /** Run `cleanup` on this period in the layer's scope (a number is milliseconds). Default: none, cleanup is manual. */
  readonly cleanupInterval?: Duration.DurationInput | undefined
  /** Create the table and its index when missing. Default `true`. */
  readonly createTable?: boolean | undefined
  /**
   * Every write notifies the key it changed (`pg_notify` on a channel named
   * after the table, in the writing statement or transaction), which
   * `KvStore.watch` and `watchPrefix` need: they hear the writes of every
   * instance sharing the table on one dedicated `LISTEN` connection per store.
   * Every instance that writes must notify for the others to hear it. Without
   * it, watching fails with `KvError` (`InvalidArgument`) naming this option.
   * Default `false`: notifying measured 11–52% slower `set`s (bench/notify.ts),
   * over the 10% the contract allows a default-on feature.
   */
  readonly notifyChanges?: boolean | undefined
  /** Keep keys out of errors and spans (see `KvStore.MakeOptions`). Default `false`. */
  readonly redactKeys?: boolean | undefined
}

const makeFor = (
  where: string,
  options: Options | undefined
): Effect.Effect<Service, KvError, Scope.Scope | SqlClient.SqlClient> =>
  Effect.suspend(() => {
    const error = optionsError(where, options, POSTGRES_STORE_OPTIONS)
    return error === undefined ? internal.make(options ?? undefined) : Effect.fail(error)
  })

/**
 * Builds the store on the `SqlClient` in context, scoped: the optional
 * cleanup schedule stops when the scope closes. Fails with `KvError`
 * (`InvalidArgument`, op `"layer"`) for an unknown option, an option of the
 * wrong type, a bad table or schema name or interval, and (`Backend`) when
 * the table cannot be created or is not the table the store expects.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options?: Options): Effect.Effect<Service, KvError, Scope.Scope | SqlClient.SqlClient> =>
  makeFor("PostgresStore.make", options)

/**
 * Provides `KvStore` on PostgreSQL, needing a `SqlClient` (e.g.
 * `PgClient.layer`): every `SqlError` becomes `KvError` (`Backend`). Fails
 * when built as `make` does.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<KvStore, KvError, SqlClient.SqlClient> =>
  Layer.scoped(KvStore, makeFor("PostgresStore.layer", options))

/**
 * Like `layer`, with the options read from `Config`, as `PgClient.layerConfig`
 * does, e.g. `PostgresStore.layerConfig({ table: Config.string("KV_TABLE") })`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<Options>
): Layer.Layer<KvStore, KvError | ConfigError.ConfigError, SqlClient.SqlClient> =>
  Layer.unwrapEffect(Effect.map(
    unwrapConfig("PostgresStore.layerConfig", config, POSTGRES_STORE_OPTIONS),
    (options) => Layer.scoped(KvStore, makeFor("PostgresStore.layerConfig", options))
  ))
