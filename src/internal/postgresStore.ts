/**
 * `PostgresStore`: `KvStore` on PostgreSQL through `@effect/sql`.
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
 * - `delete`: one statement that takes the lock with `pg_try_advisory_xact_lock`
 *   and deletes only if it got it. A plain `DELETE` cannot simply wait for the
 *   lock: its snapshot is taken before the wait, so it would miss a row the
 *   update inserted. When the lock is busy (an update is in flight) `delete`
 *   falls back to a transaction: wait for the lock, then `DELETE` with a fresh
 *   snapshot. So `delete` waits for an in-flight update and then sees its
 *   result, and costs one round trip otherwise.
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
 * Statement texts are fixed and built once per layer; on `@effect/sql-pg` they
 * run as named prepared statements (parsed and planned once per connection,
 * see `postgresRunner.ts`), elsewhere with `sql.unsafe(text, params)`. `get`,
 * `set` and `delete` are one round trip; `update` is four, like a hand-written
 * transaction.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import { KvError, KvStore, NotFound } from "../KvStore.js"
import type { Service } from "../KvStore.js"
import type { Options } from "../PostgresStore.js"
import { keyHash } from "./hash.js"
import { invalidKey, invalidPrefix } from "./key.js"
import { checkTable } from "./postgres/tableCheck.js"
import { makeRunner } from "./postgresRunner.js"
import type { Row } from "./postgresRunner.js"
import { invalidIdentifier, makeStatements, prefixUpperBound } from "./postgresSql.js"
import type { Statements } from "./postgresSql.js"
import { decodeInterval, decodeTtl } from "./ttl.js"
import { invalidUpdateFunction, invalidValue } from "./value.js"
import { markUpdating, refuseWriteInsideOwnUpdate } from "./updating.js"

/** Rows deleted per cleanup statement. */
const CLEANUP_BATCH = 1000

const backendError = (op: string, key: string | undefined, cause: unknown): KvError => {
  const detail = cause instanceof SqlError
    ? (cause.cause instanceof Error ? cause.cause.message : cause.message)
    : String(cause)
  return new KvError({
    reason: "Backend",
    op,
    ...(key === undefined ? {} : { key }),
    cause,
    message: `PostgreSQL ${op} failed: ${detail}`
  })
}

/** Maps `SqlError` failures and `SqlError` defects (failed COMMIT/ROLLBACK) to `KvError`. */
const toKvError = (op: string, key?: string) => <A, E, R>(
  effect: Effect.Effect<A, E | SqlError, R>
): Effect.Effect<A, Exclude<E, SqlError> | KvError, R> =>
  effect.pipe(
    Effect.catchSomeDefect((defect) =>
      defect instanceof SqlError ? Option.some(Effect.fail(backendError(op, key, defect))) : Option.none()
    ),
    Effect.catchIf(
      (e): e is SqlError => e instanceof SqlError,
      (e) => Effect.fail(backendError(op, key, e))
    )
  ) as Effect.Effect<A, Exclude<E, SqlError> | KvError, R>

/**
 * The update function's own failure or defect, carried through the
 * transaction so that a `SqlError` of the user's is not mistaken for ours.
 */
class UserFailure extends Data.TaggedError("effect-kv/UserFailure")<{
  readonly error: unknown
  readonly defect: boolean
}> {}

/** A `BYTEA` comes back as a `Buffer` that may share memory: hand out a fresh copy. */
const toBytes = (op: string, key: string, raw: unknown): Effect.Effect<Uint8Array, KvError> =>
  raw instanceof Uint8Array
    ? Effect.succeed(new Uint8Array(raw))
    : Effect.fail(backendError(op, key, new Error(`expected a BYTEA value, got ${typeof raw}`)))

const checkKeyAndTtl = (op: string, key: string, ttl: Duration.DurationInput | undefined) => {
  const bad = invalidKey(op, key)
  if (bad !== undefined) return Either.left(bad)
  return decodeTtl(op, key, ttl)
}

const make = (sql: SqlClient.SqlClient, statements: Statements): Service => {
  const run = makeRunner(sql)

  const get = (key: string): Effect.Effect<Uint8Array, NotFound | KvError> => {
    const bad = invalidKey("get", key)
    if (bad !== undefined) return Effect.fail(bad)
    return run(statements.get, [key]).pipe(
      toKvError("get", key),
      Effect.flatMap((rows): Effect.Effect<Uint8Array, NotFound | KvError> =>
        rows.length === 0 ? Effect.fail(new NotFound({ key })) : toBytes("get", key, rows[0]!["value"])
      )
    )
  }

  const set = (key: string, value: Uint8Array, ttl?: Duration.DurationInput) => {
    const checked = checkKeyAndTtl("set", key, ttl)
    if (Either.isLeft(checked)) return Effect.fail(checked.left)
    const badValue = invalidValue("set", key, value)
    if (badValue !== undefined) return Effect.fail(badValue)
    // copied now: the caller may reuse the array while the statement waits for a connection
    const params = [keyHash(key).toString(), key, Buffer.from(value), checked.right ?? null]
    return refuseWriteInsideOwnUpdate("set", key).pipe(
      Effect.zipRight(run(statements.set, params)),
      toKvError("set", key),
      Effect.asVoid
    )
  }

  const deleteLocked = (key: string, hash: string) =>
    sql.withTransaction(
      run(statements.lockKey, [hash]).pipe(Effect.zipRight(run(statements.deleteLocked, [key])))
    ).pipe(Effect.map((rows) => Number(rows[0]?.["deleted"] ?? 0) > 0))

  const delete_ = (key: string) => {
    const bad = invalidKey("delete", key)
    if (bad !== undefined) return Effect.fail(bad)
    const hash = keyHash(key).toString()
    return refuseWriteInsideOwnUpdate("delete", key).pipe(
      Effect.zipRight(run(statements.deleteIfFree, [hash, key])),
      Effect.flatMap((rows) =>
        rows[0]?.["free"] === true
          ? Effect.succeed(Number(rows[0]["deleted"]) > 0)
          : deleteLocked(key, hash) // an update of this key is in flight: wait for it
      ),
      toKvError("delete", key)
    )
  }

  const readAndWrite = <E, R>(
    key: string,
    hash: string,
    f: (current: Option.Option<Uint8Array>) => Effect.Effect<Uint8Array, E, R>,
    ttlMillis: number | undefined
  ): Effect.Effect<Uint8Array, KvError | SqlError | UserFailure, R> =>
    run(statements.readForUpdate, [key]).pipe(
      Effect.flatMap((rows) => {
        const row = rows[0]
        return row !== undefined && row["live"] === true
          ? Effect.map(toBytes("update", key, row["value"]), Option.some)
          : Effect.succeed(Option.none<Uint8Array>())
      }),
      Effect.flatMap((current) =>
        f(current).pipe(
          markUpdating(key),
          Effect.mapError((error) => new UserFailure({ error, defect: false })),
          Effect.catchAllDefect((error) => Effect.fail(new UserFailure({ error, defect: true })))
        )
      ),
      Effect.flatMap((next): Effect.Effect<Uint8Array, KvError | SqlError> => {
        const badValue = invalidValue("update", key, next)
        if (badValue !== undefined) return Effect.fail(badValue)
        const bytes = Buffer.from(next)
        return run(statements.upsert, [hash, key, bytes, ttlMillis ?? null]).pipe(
          Effect.as(new Uint8Array(next))
        )
      })
    )

  /**
   * The update's own transaction on a reserved connection: BEGIN and the
   * key's lock in one round trip, COMMIT failures as typed errors.
   */
  const updateOwnTransaction = <A, E, R>(
    hash: bigint,
    body: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | SqlError, Exclude<R, SqlClient.TransactionConnection>> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.scoped(
        Effect.flatMap(sql.reserve, (conn) => {
          const exec = (text: string) => conn.executeUnprepared(text, [], undefined)
          return restore(
            exec(statements.beginAndLock(hash)).pipe(
              Effect.zipRight(
                Effect.provideService(body, SqlClient.TransactionConnection, [conn, 0] as const)
              )
            )
          ).pipe(
            Effect.exit,
            Effect.flatMap((exit) =>
              Exit.isSuccess(exit)
                ? Effect.as(exec("COMMIT"), exit.value)
                : Effect.zipRight(rollback(conn), exit)
            )
          )
        })
      )
    )

  /**
   * A late query cancel (from an interrupted statement) may hit the ROLLBACK
   * itself, so it is tried twice; if it still fails, the connection is closed
   * rather than returned to the pool inside a transaction that holds the lock.
   */
  const rollback = (conn: Connection) => {
    const exec = (text: string) => conn.executeUnprepared(text, [], undefined)
    return exec("ROLLBACK").pipe(
      Effect.orElse(() => exec("ROLLBACK")),
      Effect.orElse(() => exec("SELECT pg_terminate_backend(pg_backend_pid())")),
      Effect.ignore
    )
  }

  const update = <E = never, R = never>(
    key: string,
    f: (current: Option.Option<Uint8Array>) => Effect.Effect<Uint8Array, E, R>,
    ttl?: Duration.DurationInput
  ): Effect.Effect<Uint8Array, E | KvError, R> => {
    const checked = checkKeyAndTtl("update", key, ttl)
    if (Either.isLeft(checked)) return Effect.fail(checked.left)
    const badFunction = invalidUpdateFunction(key, f)
    if (badFunction !== undefined) return Effect.fail(badFunction)
    const hash = keyHash(key)
    const hashText = hash.toString()
    const body = readAndWrite(key, hashText, f, checked.right)
    const transaction: Effect.Effect<Uint8Array, KvError | SqlError | UserFailure, R> = Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (outer) =>
      Option.isNone(outer)
        ? updateOwnTransaction(hash, body)
        : sql.withTransaction(Effect.zipRight(run(statements.lockKey, [hashText]), body)))
    return refuseWriteInsideOwnUpdate("update", key).pipe(
      Effect.zipRight(transaction),
      toKvError("update", key),
      Effect.catchIf(
        (e): e is UserFailure => e instanceof UserFailure,
        // the function's error type is E: UserFailure only ever wraps f's own failures
        (e) => e.defect ? Effect.die(e.error) : Effect.fail(e.error as E)
      )
    )
  }

  const keys = (prefix: string) => {
    const bad = invalidPrefix("keys", prefix)
    if (bad !== undefined) return Effect.fail(bad)
    const upper = prefix === "" ? undefined : prefixUpperBound(prefix)
    const query = prefix === ""
      ? run(statements.keysAll, [])
      : upper === undefined
      ? run(statements.keysFrom, [prefix])
      : run(statements.keysInRange, [prefix, upper])
    return query.pipe(
      toKvError("keys", prefix),
      Effect.map((rows) => rows.map((row) => String(row["key"])))
    )
  }

  const cleanup = deleteInBatches(run(statements.cleanupBatch, [CLEANUP_BATCH]), () => true)

  // Spans on the scans only. Not on get, set and delete: a span costs about as much CPU
  // as the rest of the call (measured). Not on update: a failure raised inside a span is
  // wrapped in a proxy, and the update function's error must come out unchanged.
  return {
    get,
    set,
    delete: delete_,
    update,
    keys: (prefix) =>
      Effect.withSpan(keys(prefix), "kv.keys", { attributes: { "kv.prefix": prefix }, captureStackTrace: false }),
    cleanup: Effect.withSpan(cleanup, "kv.cleanup", { captureStackTrace: false })
  }
}

/**
 * Runs `batch` (a statement deleting at most `CLEANUP_BATCH` expired rows and
 * returning their count as `n`) until a batch comes back short or `mayGoOn`
 * says stop; succeeds with the total.
 */
const deleteInBatches = (
  batch: Effect.Effect<ReadonlyArray<Row>, SqlError>,
  mayGoOn: (row: Row | undefined) => boolean
): Effect.Effect<number, KvError> => {
  const loop = (total: number): Effect.Effect<number, SqlError> =>
    Effect.flatMap(batch, (rows) => {
      const n = Number(rows[0]?.["n"] ?? 0)
      return n >= CLEANUP_BATCH && mayGoOn(rows[0]) ? loop(total + n) : Effect.succeed(total + n)
    })
  return loop(0).pipe(toKvError("cleanup"))
}

/** The scheduled sweep: like `cleanup`, but stops when another instance is sweeping. */
const sweep = (sql: SqlClient.SqlClient, statements: Statements): Effect.Effect<number, KvError> =>
  deleteInBatches(sql.unsafe<Row>(statements.sweepBatch, [CLEANUP_BATCH]), (row) => row?.["mine"] === true)

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
    toKvError("layer")
  )

export const layer = (options?: Options): Layer.Layer<KvStore, KvError, SqlClient.SqlClient> =>
  Layer.scoped(
    KvStore,
    Effect.gen(function*() {
      options ??= {} // also a JavaScript caller's null
      const table = options.table ?? "kv_store"
      const schema = options.schema ?? "public"
      const badName = invalidIdentifier("table", table) ?? invalidIdentifier("schema", schema)
      if (badName !== undefined) return yield* Effect.fail(badName)
      let interval: Option.Option<Duration.Duration> = Option.none()
      if (options.cleanupInterval !== undefined) {
        const decoded = decodeInterval("PostgresStore", "cleanupInterval", options.cleanupInterval)
        if (Either.isLeft(decoded)) return yield* Effect.fail(decoded.left)
        interval = Option.some(decoded.right)
      }
      const sql = yield* SqlClient.SqlClient
      const statements = makeStatements({ schema, table, unlogged: options.unlogged === true })
      if (options.createTable !== false) yield* createTable(sql, statements)
      yield* checkTable(sql, { schema, table, unlogged: options.unlogged === true, createTable: options.createTable !== false })
      if (Option.isSome(interval)) {
        yield* sweep(sql, statements).pipe(
          Effect.tapErrorCause((cause) =>
            Effect.logWarning("effect-kv: scheduled PostgreSQL cleanup failed", Cause.squash(cause))
          ),
          Effect.ignore,
          Effect.scheduleForked(Schedule.spaced(interval.value))
        )
      }
      return make(sql, statements)
    })
  )

/** For tests: the statement texts a layer with these options runs. */
export const statementsFor = (options: { table?: string; schema?: string; unlogged?: boolean } = {}): Statements =>
  makeStatements({
    schema: options.schema ?? "public",
    table: options.table ?? "kv_store",
    unlogged: options.unlogged === true
  })
