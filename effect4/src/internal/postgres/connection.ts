/**
 * How `PostgresStore` gets connections on Effect 4's `effect/sql`, so that no
 * interruption can leak one and no statement runs inside a transaction that
 * has already ended. (The Effect 3 line has its own `connection.ts`: there,
 * `@effect/sql-pg` 0.53 needed a leak-proof `reserve` and named statements by
 * hand; Effect 4 gives both.)
 *
 * - **Single statements** run inside the caller's live transaction when there
 *   is one (so they join it), else on the pool: `sql.unsafe` borrows a pooled
 *   connection for the one statement. `@effect/sql-pg` 4 prepares every
 *   statement under a name, per connection, keyed by its text and parameter
 *   types (`prepare`, on by default), so the store's fixed texts are parsed and
 *   planned once per connection. Parameters are given so that their types never
 *   vary (`param` below): the client infers a type from each JavaScript value,
 *   and a number that is sometimes `int4` and sometimes `int8` would be two
 *   statements, an array of `null`s no type at all.
 * - **The store's own transactions** are `sql.withTransaction`: its wait for a
 *   connection is interruptible and a connection handed over after the caller
 *   gave up goes back (`@effect/sql-pg` 4's `reserve` no longer leaks), and an
 *   interrupted body rolls back. The native client speaks only the extended
 *   protocol, so `BEGIN` and a key's lock are two round trips, not one.
 * - **Fibers forked inside an update function** inherit the transaction in
 *   their context and may outlive it. `effect/sql` fails their statements
 *   ("transaction has ended"); the store's contract wants them to behave like
 *   any other fiber, so `liveTransaction` treats an ended transaction as none
 *   and the statement goes to the pool.
 * - **A lost connection is not a refusal.** When the connection dies after a
 *   statement (or a COMMIT) was sent, the server may have committed it and
 *   only the answer is lost (`connectionFault` says "lost"). Nothing here
 *   re-runs such a statement, and a failed COMMIT comes out as `CommitFailure`
 *   so the driver can tell the caller that the outcome is unknown.
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as SqlClient from "effect/sql/SqlClient"
import { SqlError } from "effect/sql/SqlError"

export type Row = Record<string, unknown>

/** A statement that takes locks right after `BEGIN`: its text and parameters. */
export type Lock = readonly [text: string, params: ReadonlyArray<unknown>]

/**
 * The error's code (SQLSTATE, or a socket's `ECONNREFUSED`…) and words: `effect/sql` 4
 * classifies the failure in `reason`, whose cause carries the server's fields or the
 * socket's error. A row over the client's `maxMessageSize` gets the option named.
 */
export const sqlErrorDetail = (error: SqlError): { readonly code: unknown; readonly detail: string } => {
  const cause = error.reason.cause
  const code = typeof cause === "object" && cause !== null ? (cause as { readonly code?: unknown }).code : undefined
  // a socket error may carry only its code (an empty message): never end a message with ": "
  const message = cause instanceof Error && cause.message !== "" ? cause.message : error.message
  const detail = message !== "" ? message : code !== undefined ? String(code) : "no detail given"
  return {
    code,
    detail: tooLarge(detail)
      ? `the row is larger than the PostgreSQL client's maxMessageSize (${detail}); effect-kv values reach ` +
        "64 MiB: give PgClient.layer maxMessageSize: 80 * 1024 * 1024 to read them"
      : detail
  }
}

const tooLarge = (detail: string): boolean => /exceeds maxMessageSize/.test(detail)

/**
 * Whether a failure is the connection's rather than the statement's:
 *
 * - `"lost"`: the connection died while the statement may have been on its
 *   way or running (a `ConnectionError` of a query, a reset or broken socket,
 *   the server's admin or crash shutdown, 57P01, 57P02). A write may have
 *   committed; only its answer is lost.
 * - `"unreachable"`: no statement left: no connection could be made (refused,
 *   timed out, the server starting or shutting down, 57P03).
 *
 * A row too large for the client also ends its connection, but is the row's
 * fault: running the read again would meet it again.
 */
export const connectionFault = (error: unknown): "lost" | "unreachable" | undefined => {
  if (!(error instanceof SqlError)) return undefined
  const { code, detail } = sqlErrorDetail(error)
  const reason = error.reason
  if (reason._tag === "ConnectionError" && tooLarge(String((reason.cause as { message?: unknown } | undefined)?.message))) {
    return undefined
  }
  if (code === "ECONNREFUSED" || code === "57P03") return "unreachable"
  if (reason._tag === "ConnectionError" && (reason.operation === "connect" || reason.operation === "acquireConnection")) {
    return "unreachable"
  }
  if (code === "57P01" || code === "57P02" || code === "ECONNRESET" || code === "EPIPE") return "lost"
  return reason._tag === "ConnectionError" || /Connection terminated/i.test(detail) ? "lost" : undefined
}

/** Whether no connection could be made at all (the server refused it, or is starting or shutting down). */
export const connectionRefused = (error: unknown): boolean => {
  if (!(error instanceof SqlError)) return false
  const { code } = sqlErrorDetail(error)
  return code === "ECONNREFUSED" || code === "57P03"
}

/**
 * A COMMIT that failed. A refusal the server reported (a serialization
 * failure, say) rolled the transaction back; a lost connection (see
 * `connectionFault`) leaves it unknown whether it committed.
 */
export class CommitFailure extends Data.TaggedError("CommitFailure")<{ readonly error: SqlError }> {}

/**
 * A parameter whose PostgreSQL type does not depend on its value. Numbers and
 * bigints go as text (typed by the statement's cast, e.g. `$4::float8`), and an
 * array of numbers or nulls as an array literal (`{1,NULL}`); strings, byte
 * arrays and arrays of them keep their own types (`text[]`, `bytea`, `bytea[]`).
 */
const param = (value: unknown): unknown => {
  if (typeof value === "number" || typeof value === "bigint") return String(value)
  if (Array.isArray(value) && value.length > 0 && value.every((v) => v === null || typeof v === "number" || typeof v === "bigint")) {
    return `{${value.map((v) => (v === null ? "NULL" : String(v))).join(",")}}`
  }
  return value
}

const params = (values: ReadonlyArray<unknown>): ReadonlyArray<unknown> => values.map(param)

export interface Connections {
  /** Runs a fixed statement in the caller's live transaction, or on a pooled connection. */
  readonly run: (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, SqlError>
  /** Runs a fixed statement on a pooled connection, never in a transaction (for work no caller owns). */
  readonly onPool: (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, SqlError>
  /** The caller's transaction connection, when it is still open. */
  readonly liveTransaction: Effect.Effect<Option.Option<unknown>>
  /** `inside()` when the caller has an open transaction, else `outside()`: one step, no `Option`. */
  readonly ifInTransaction: <A, E, R>(
    inside: () => Effect.Effect<A, E, R>,
    outside: () => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E, R>
  /**
   * Runs `body` in a transaction of its own: `BEGIN`, then `lock` (a statement
   * taking the keys' locks) when given, then `body`, then `COMMIT`, or
   * `ROLLBACK` when `body` fails or is interrupted. A `SqlError` is from before
   * COMMIT (nothing was written); a failed COMMIT is a `CommitFailure`.
   */
  readonly inTransaction: <A, E, R>(
    lock: Lock | undefined,
    body: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | SqlError | CommitFailure, R>
  /** Runs `body` in the caller's transaction, or a savepoint of it (`sql.withTransaction`). */
  readonly withTransaction: <A, E, R>(body: Effect.Effect<A, E, R>) => Effect.Effect<A, E | SqlError, R>
}

export const makeConnections = (sql: SqlClient.SqlClient): Connections => {
  const service = sql.transactionService
  const withoutTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.updateContext(effect, (context: Context.Context<R>) => Context.omit(service)(context) as Context.Context<R>)

  const onPool = (text: string, values: ReadonlyArray<unknown>) =>
    withoutTransaction(sql.unsafe<Row>(text, params(values)).withoutTransform)

  /**
   * `inside(conn)` when the caller's context holds a transaction that is still open, else
   * `outside()`, read straight off the fiber's context: one step per statement, where
   * `serviceOption`, `match` and `flatMap` took several. Whether the transaction has ended
   * only `activeTransactionConnection` knows (its bookkeeping is private to `effect/sql`);
   * its answer for an open one is `Effect.succeed`, an `Exit` on Effect 4, read at once.
   * Any other answer (the "transaction has ended" failure) is run and matched.
   */
  const openTransaction = <A, E, R>(
    inside: (conn: unknown) => Effect.Effect<A, E, R>,
    outside: () => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E, R> =>
    Effect.withFiber((fiber) => {
      const transaction = Context.getOrUndefined(fiber.context, service)
      if (transaction === undefined) return outside()
      const active = SqlClient.activeTransactionConnection(transaction)
      if (Exit.isExit(active)) return Exit.isSuccess(active) ? inside(active.value) : outside()
      return Effect.matchEffect(active, { onFailure: outside, onSuccess: inside })
    })

  const liveTransaction: Effect.Effect<Option.Option<unknown>> = openTransaction(
    (conn) => Effect.succeed(Option.some(conn)),
    () => Effect.succeedNone
  )

  const ifInTransaction = <A, E, R>(
    inside: () => Effect.Effect<A, E, R>,
    outside: () => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E, R> => openTransaction(inside, outside)

  const run = (text: string, values: ReadonlyArray<unknown>) =>
    openTransaction(
      () => sql.unsafe<Row>(text, params(values)).withoutTransform,
      () => onPool(text, values)
    )

  /** The caller's live transaction joined (a savepoint), else a transaction of its own with no stale one in context. */
  const withTransaction = <A, E, R>(body: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
    openTransaction(() => sql.withTransaction(body), () => withoutTransaction(sql.withTransaction(body)))

  /**
   * `sql.withTransaction` fails with the COMMIT's own `SqlError` (or dies, when the
   * ROLLBACK after it failed too): once the body has succeeded, a `SqlError` can
   * only be the COMMIT's, and becomes a `CommitFailure`.
   */
  const inTransaction = <A, E, R>(
    lock: Lock | undefined,
    body: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | SqlError | CommitFailure, R> =>
    Effect.suspend(() => {
      let committing = false
      const locked = lock === undefined ? body : Effect.andThen(run(lock[0], lock[1]), body)
      const marked = Effect.tap(locked, () =>
        Effect.sync(() => {
          committing = true
        }))
      return withoutTransaction(sql.withTransaction(marked)).pipe(
        Effect.catchDefect((defect) =>
          committing && defect instanceof SqlError ? Effect.fail(new CommitFailure({ error: defect })) : Effect.die(defect)
        ),
        Effect.mapError((error): E | SqlError | CommitFailure =>
          committing && error instanceof SqlError ? new CommitFailure({ error }) : error
        )
      )
    })

  return { run, onPool, liveTransaction, ifInTransaction, inTransaction, withTransaction }
}
