/**
 * `PostgresStore`: `KvStore` on PostgreSQL through `effect/sql` — the layer,
 * its options and the table; the driver is in `driver.ts`.
 *
 * ## Schema
 *
 * ```sql
 * CREATE TABLE kv_store (
 *   key_hash   BIGINT NOT NULL,                   -- 64-bit FNV-1a of the key's UTF-8 bytes, signed
 *   key        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
 *   value      BYTEA NOT NULL,
 *   expires_at TIMESTAMPTZ,                       -- NULL: never expires
 *   updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
 * );
 * CREATE INDEX kv_store_expires_at_idx ON kv_store (expires_at) WHERE expires_at IS NOT NULL;
 * ```
 *
 * Every lookup is by `key`, the primary key, so two keys whose hashes collide
 * are two rows with their own values, and a row inserted by hand with only
 * `key_hash`, `key` and `value` (even with a wrong hash) is found and is a live
 * entry without expiry. `key_hash` is kept from the seed's design and serves
 * as the key's advisory-lock id.
 *
 * `COLLATE "C"` on `key` makes the primary-key b-tree sort by code point (the
 * order of UTF-8 bytes, the contract's order for `keys`), so `keys(prefix)` is
 * a range scan of that index: `key >= prefix AND key < upper`, where `upper` is
 * `prefix` with its last code point incremented. Matching is literal (`%`, `_`
 * and `\` mean nothing) and the index serves both the range and `ORDER BY`.
 * `LIKE prefix || '%'` would treat `%`/`_` as wildcards and, under a non-C
 * database collation, could not use the index at all.
 *
 * ## One clock: the database's
 *
 * Expiry is both stamped (`clock_timestamp() + ttl`) and compared
 * (`expires_at IS NULL OR expires_at > now()`) with the database server's
 * clock, never the application's. Several app instances whose clocks disagree
 * then still agree on what is live, and an entry's TTL does not shrink or grow
 * with the skew of whichever instance wrote it. The price: `TestClock` does not
 * move PostgreSQL expiry; tests of TTLs wait for real, briefly.
 *
 * ## Locking
 *
 * `SELECT ... FOR UPDATE` locks nothing when the row is missing or expired, so
 * the key itself is locked: `pg_advisory_xact_lock(key_hash)`, held until the
 * transaction ends (commit, rollback, or a dropped connection: no lock can
 * outlive its transaction). Different keys take different locks and do not
 * wait for each other; the rare hash collision only makes two keys share a lock.
 *
 * - `update`: `BEGIN; SELECT pg_advisory_xact_lock(h)` (one round trip), then,
 *   as a new statement with a fresh snapshot that sees what the previous
 *   holder committed, `SELECT value, live ... FOR UPDATE`, the function (with
 *   `Option.none()` for missing or expired), the upsert, `COMMIT`. Four round
 *   trips, as a hand-written `BEGIN / SELECT FOR UPDATE / upsert / COMMIT`. If
 *   the function fails or the fiber is interrupted: `ROLLBACK`, nothing written.
 *   The function runs inside the transaction (its SQL on the same `SqlClient`
 *   joins it, so using the store for other keys from inside takes no second
 *   connection). Inside an outer transaction, `update` joins it through
 *   `sql.withTransaction` (a savepoint) and the key stays locked until the
 *   outer transaction ends.
 * - `set`: one statement that takes the same lock before it writes
 *   (`WITH l AS (SELECT pg_advisory_xact_lock(h)) INSERT ... SELECT ... FROM l
 *   ON CONFLICT (key) DO UPDATE`), so it waits for an update in flight. After
 *   the wait, `ON CONFLICT` sees the row the update committed even though the
 *   statement's snapshot predates it.
 * - `setIfAbsent` and `increment`: one statement each, like `set`; `ON CONFLICT`
 *   sees the latest committed row, so they read what an update just wrote.
 *   `increment` parses and adds in SQL, and writes nothing when the stored value
 *   is not a counter or the result would be unsafe.
 * - `delete` and `expire`: one statement that takes the lock with `pg_try_advisory_xact_lock`
 *   and deletes only if it got it. A plain `DELETE` cannot simply wait for the
 *   lock: its snapshot is taken before the wait, so it would miss a row the
 *   update inserted. When the lock is busy (an update is in flight) `delete`
 *   falls back to a transaction: wait for the lock, then `DELETE` with a fresh
 *   snapshot. So `delete` waits for an in-flight update and then sees its
 *   result, and costs one round trip otherwise.
 * - Coalesced calls (`coalesce.ts`; `set`, `increment`, `delete`, `setIfAbsent`,
 *   `expire` outside a transaction) use the try-lock form: a statement writes
 *   only the keys whose lock it gets without waiting, and a key an update holds
 *   goes back to its caller, who waits as above. A try-lock never waits, so no
 *   two batches wait for each other.
 *
 * ## Cleanup
 *
 * Expired rows are deleted in batches of 1000
 * (`ctid = ANY(ARRAY(SELECT ctid ... LIMIT 1000 FOR UPDATE SKIP LOCKED))`,
 * served by the partial index), until a batch comes back short, so a backlog
 * of a million rows is a thousand short statements, not one long one, and rows
 * that writers hold are skipped rather than waited for. The scheduled sweep
 * (`cleanupInterval`) gates each batch with a try-lock on an id derived from
 * the table's name: when several instances sweep at once, the ones that lose
 * stop for this round instead of piling up. Failures are logged and the
 * schedule goes on.
 *
 * ## Change feed (`notifyChanges`)
 *
 * With `notifyChanges`, every statement that writes calls
 * `pg_notify('effect_kv.<schema>.<table>', key)` for each row it wrote or
 * deleted (in its `RETURNING`, or `count(pg_notify(...))` over its delete
 * CTE), so the notification is part of the write's own statement or
 * transaction: sent at commit, never for a rollback or a write that changed
 * no row. Keys are at most 2048 bytes, under the 8000-byte payload limit.
 * `changes.ts` listens on one connection per subscription, reserved from the
 * pool by `PgClient.listen` (the front keeps one subscription per store), and
 * polls expiry on the database's clock.
 *
 * ## Errors
 *
 * Every `SqlError` becomes `KvError` (`Backend`). `sql.withTransaction` turns a
 * failed `COMMIT`/`ROLLBACK` into a defect; those defects (only `SqlError`s
 * from the store's own machinery, never the update function's own defects)
 * are turned back into `KvError`. Keys, prefixes, TTLs and values are checked
 * before any SQL runs.
 *
 * ## Performance
 *
 * Statement texts are fixed and built once per layer; `@effect/sql-pg` 4 prepares
 * each under a name per connection (parsed and planned once), with parameters
 * whose types never vary (see `connection.ts`, which also explains how no
 * interruption leaks a connection and how fibers forked inside an update stay
 * out of other transactions). Every operation but `update` is one round trip;
 * `update` is five (`BEGIN`, the lock, the read, the write, `COMMIT`): the
 * native client has no simple-query protocol to send `BEGIN` and the lock as one.
 *
 * ## Limits
 *
 * Values are at most 64 MiB (the front refuses larger ones before any I/O).
 * `@effect/sql-pg` 4 receives `bytea` as bytes, but refuses a server message
 * larger than its `maxMessageSize` (16 MiB by default): give the client
 * `maxMessageSize: 80 * 1024 * 1024` to read back values near the limit. Reads
 * ask for the value only when it is at most 64 MiB, and a larger row (written
 * by other means) fails with `KvError` instead.
 */
import * as SqlClient from "effect/sql/SqlClient"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { Driver } from "../../KvDriver.js"
import { DriverError } from "../../KvDriver.js"
import * as KvStore from "../../KvStore.js"
import type { Options } from "../../PostgresStore.js"
import { changeFeedProblem, makeChangeFeed } from "./changes.js"
import { makeConnections } from "./connection.js"
import { makeDriver } from "./driver.js"
import type { Row } from "./connection.js"
import { identifierProblem, makeStatements } from "../../core/postgresSql.js"
import { makeRateLimit4Statements } from "../../core/rateLimit4Sql.js"
import { checkTable } from "./tableCheck.js"
import type { Statements } from "../../core/postgresSql.js"

/**
 * `notifyChanges` when not given: off. The contract turns it on by default only
 * when notifying costs `set` under 10%; `bench/notify.ts` measured 11–52% (a
 * listener subscribed; see bench/FINDINGS.md): every notifying commit takes
 * PostgreSQL's notification lock, appends to its queue and wakes the listeners.
 */
export const NOTIFY_CHANGES_DEFAULT = false

const layerError = (cause: unknown): KvStore.KvError =>
  KvStore.KvError.backend(
    "layer",
    `PostgreSQL layer failed: ${cause instanceof Error && cause.cause instanceof Error ? cause.cause.message : String(cause)}`,
    cause
  )

/**
 * CREATE ... IF NOT EXISTS can still fail when two instances race (a unique
 * violation on pg_type), so creation is serialised by an advisory lock. Skipped
 * when the table exists, which also spares a role without CREATE rights.
 */
const createTable = (sql: SqlClient.SqlClient, statements: Statements) =>
  sql.unsafe<Row>(statements.tableExists, [statements.qualifiedTable, statements.quotedSchema]).pipe(
    Effect.flatMap((rows) =>
      rows[0]?.["present"] === true
        ? Effect.void
        : sql.withTransaction(
          Effect.forEach(
            rows[0]?.["hasschema"] === true ? statements.createTable : [
              statements.createTable[0]!,
              statements.createSchema,
              ...statements.createTable.slice(1)
            ],
            (text) => sql.unsafe(text),
            { discard: true }
          )
        )
    ),
    Effect.catchCause((cause) => Effect.fail(layerError(cause))),
    Effect.asVoid
  )

export const make = (
  options?: Options
): Effect.Effect<KvStore.Service, KvStore.KvError, Scope.Scope | SqlClient.SqlClient> =>
  Effect.gen(function*() {
    options ??= {} // also a JavaScript caller's null
    const table = options.table ?? "kv_store"
    const schema = options.schema ?? "public"
    const badName = identifierProblem("table", table) ?? identifierProblem("schema", schema)
    if (badName !== undefined) return yield* Effect.fail(KvStore.KvError.invalidArgument("layer", badName))
    const sql = yield* SqlClient.SqlClient
    const notifyChanges = options.notifyChanges ?? NOTIFY_CHANGES_DEFAULT
    const statements = makeStatements({ schema, table, unlogged: options.unlogged === true, notifyChanges })
    if (options.createTable !== false) yield* createTable(sql, statements)
    yield* checkTable(sql, { schema, table, unlogged: options.unlogged === true, createTable: options.createTable !== false })
    const noFeed = statements.channel === undefined
      ? "this PostgresStore does not notify its changes (notifyChanges: false, the default); build it with " +
        "notifyChanges: true (on every instance that writes the table) to watch"
      : changeFeedProblem(sql)
    let feed: Pick<Driver, "changes" | "syncChanges">
    if (statements.channel === undefined || noFeed !== undefined) {
      // refuses watchers saying why: the front's own refusal (no `changes` at all) could not name the option
      feed = { changes: Effect.fail(new DriverError({ reason: "InvalidArgument", message: noFeed ?? "no change feed" })) }
    } else {
      const made = makeChangeFeed({
        sql,
        channel: statements.channel,
        expiredSince: statements.expiredSince,
        onPool: makeConnections(sql).onPool
      })
      // added before the front's own finalizers, so it runs after them: the LISTEN connections end last
      yield* Effect.addFinalizer(() => made.close)
      feed = { changes: made.changes, syncChanges: made.sync }
    }
    return yield* KvStore.make(makeDriver(sql, statements, makeRateLimit4Statements(statements.qualifiedTable), feed), {
      cleanupInterval: options.cleanupInterval,
      redactKeys: options.redactKeys
    })
  })

export const layer = (options?: Options): Layer.Layer<KvStore.KvStore, KvStore.KvError, SqlClient.SqlClient> =>
  Layer.effect(KvStore.KvStore, make(options))

export const layerConfig = (
  config: Config.Wrap<Options>
): Layer.Layer<KvStore.KvStore, KvStore.KvError | Config.ConfigError, SqlClient.SqlClient> =>
  Layer.unwrap(Effect.map(Config.unwrap(config), layer))

/** For tests: the statement texts a layer with these options runs. */
export const statementsFor = (
  options: { table?: string; schema?: string; unlogged?: boolean; notifyChanges?: boolean } = {}
): Statements =>
  makeStatements({
    schema: options.schema ?? "public",
    table: options.table ?? "kv_store",
    unlogged: options.unlogged === true,
    notifyChanges: options.notifyChanges ?? NOTIFY_CHANGES_DEFAULT
  })
