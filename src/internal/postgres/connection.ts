/**
 * How `PostgresStore` gets connections, so that no interruption can leak one
 * and no statement runs inside a transaction that has already ended.
 *
 * - **Single statements** run inside the caller's live transaction when there
 *   is one (so they join it), else on a pooled connection taken for that one
 *   statement by `@effect/sql`'s pool-level connection, whose acquisition
 *   handles interruption (a connection handed over after the caller gave up
 *   goes straight back). `sql.reserve` is not used for them: in
 *   `@effect/sql-pg` 0.53 its acquisition has no cancel handler, and a fiber
 *   interrupted while waiting for the pool never gives back the connection
 *   it is later handed — one such leak per interrupted request until the app
 *   hangs. On `@effect/sql-pg` the statements are named prepared statements
 *   (parsed and planned once per connection: about 40% of a `get`).
 * - **The update's own transaction** needs one connection for several
 *   statements, which only `sql.reserve` gives. It runs in a fiber of its own
 *   that is never interrupted (a root fiber, watched through an observer); a
 *   caller interrupted while waiting leaves it behind, and the connection is
 *   released the moment it arrives (`reserve`).
 * - **Fibers forked inside an update function** inherit the transaction's
 *   connection in their context and may outlive the transaction. The
 *   transaction's connection is therefore provided as a wrapper that serves
 *   the transaction while it is open and the pool once it has ended
 *   (`transactionConnection`): a late statement runs like one from any other
 *   fiber instead of inside whatever transaction the connection serves next.
 * - **A lost connection is not a refusal.** When the connection dies after a
 *   statement (or a COMMIT) was sent, the server may have committed it and
 *   only the answer is lost (`connectionFault` says "lost"). Nothing here
 *   re-runs such a statement: only a refusal the server reported (the
 *   forgotten prepared statement) is retried, and a failed COMMIT comes out as
 *   `CommitFailure` so the driver can tell the caller that the outcome is unknown.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { keyHash } from "../../core/hash.js"

export type Row = Record<string, unknown>

/** `@effect/sql-pg`'s `PgClient` carries this type id; checked by value to avoid depending on the package. */
const PG_CLIENT_TYPE_ID = "~@effect/sql-pg/PgClient"

const isPgClient = (sql: SqlClient.SqlClient): boolean =>
  (sql as unknown as Record<string, unknown>)[PG_CLIENT_TYPE_ID] === PG_CLIENT_TYPE_ID

/** The driver's error code (SQLSTATE, or a socket's `ECONNRESET`…) and words: node-postgres puts them in the cause. */
export const sqlErrorDetail = (error: SqlError): { readonly code: unknown; readonly detail: string } => {
  const cause = error.cause
  const code = typeof cause === "object" && cause !== null ? (cause as { readonly code?: unknown }).code : undefined
  // a socket error may carry only its code (an empty message): never end a message with ": "
  const message = cause instanceof Error && cause.message !== "" ? cause.message : error.message
  return { code, detail: message !== "" ? message : code !== undefined ? String(code) : "no detail given" }
}

/**
 * Whether a failure is the connection's rather than the statement's:
 *
 * - `"lost"`: the connection died while the statement may have been on its
 *   way or running: node-postgres's "Connection terminated", a reset or broken
 *   socket, the server's admin or crash shutdown (57P01, 57P02). A write may
 *   have committed; only its answer is lost.
 * - `"unreachable"`: no statement left: no connection could be made (refused,
 *   the server starting or shutting down, 57P03) or node-postgres knew the
 *   client was dead before sending ("not queryable").
 */
export const connectionFault = (error: unknown): "lost" | "unreachable" | undefined => {
  if (!(error instanceof SqlError)) return undefined
  const { code, detail } = sqlErrorDetail(error)
  if (code === "ECONNREFUSED" || code === "57P03" || /not queryable/i.test(detail)) return "unreachable"
  if (code === "57P01" || code === "57P02" || code === "ECONNRESET" || code === "EPIPE") return "lost"
  return /Connection terminated/i.test(detail) ? "lost" : undefined
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

/** SQLSTATE invalid_sql_statement_name: the server does not know the prepared statement (it refused it: nothing ran). */
const forgotten = (error: SqlError): boolean => sqlErrorDetail(error).code === "26000"

/**
 * The rows a statement wrote, from node-postgres's result (`rowCount`, read off the command tag, `INSERT 0 1`).
 * A client whose raw result says nothing of it counts 0: callers treat that as "not written by this
 * statement" and take their slower path, which is always correct.
 */
const rowCountOf = (raw: unknown): number => {
  const count = typeof raw === "object" && raw !== null ? (raw as { readonly rowCount?: unknown }).rowCount : undefined
  return typeof count === "number" ? count : 0
}

/** The fiber's own `FiberRef` access, which the runtime has and its public type leaves out (as in keyedLock.ts). */
interface SettableContext {
  getFiberRef<X>(fiberRef: FiberRef.FiberRef<X>): X
  setFiberRef<X>(fiberRef: FiberRef.FiberRef<X>, value: X): void
}

/** A reserved connection and the scope that gives it back to the pool. */
type Reserved = readonly [Connection, Scope.CloseableScope]

const noTransaction = (): undefined => undefined

/** Gives a reservation back that no caller took (its caller stopped waiting). */
const release = (exit: Exit.Exit<Reserved, SqlError>): void => {
  if (Exit.isSuccess(exit)) Effect.runFork(Scope.close(exit.value[1], Exit.void))
}

/** Whether a transaction's wrapper still serves its transaction. */
const openTransactions = new WeakMap<Connection, { open: boolean }>()

const withoutTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.mapInputContext(effect, (context: Context.Context<R>) =>
    Context.omit(SqlClient.TransactionConnection)(context) as Context.Context<R>)

export interface Connections {
  /** Runs a fixed statement in the caller's live transaction, or on a pooled connection. */
  readonly run: (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, SqlError>
  /** Runs a fixed statement on a pooled connection, never in a transaction (for work no caller owns). */
  readonly onPool: (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, SqlError>
  /**
   * `onPool` for a statement that returns no rows: the rows it wrote, from its command tag (see
   * `rowCountOf`). Cheaper than a `RETURNING` that only says "written".
   */
  readonly onPoolCounted: (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<number, SqlError>
  /** The caller's transaction connection, when it is still open. */
  readonly liveTransaction: Effect.Effect<Option.Option<readonly [Connection, number]>>
  /** `inside()` when the caller has an open transaction, else `outside()`: one step, no `Option`. */
  readonly ifInTransaction: <A, E, R>(
    inside: () => Effect.Effect<A, E, R>,
    outside: () => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E, R>
  /**
   * Runs `body` in a transaction of its own: `begin` (e.g. `BEGIN` and a lock,
   * in one round trip), then `body` with the transaction in its context, then
   * `COMMIT`, or `rollback` when `body` fails or is interrupted. A `SqlError`
   * is from before COMMIT (nothing was written); a failed COMMIT is a `CommitFailure`.
   */
  readonly inTransaction: <A, E, R>(
    begin: string,
    body: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | SqlError | CommitFailure, Exclude<R, SqlClient.TransactionConnection>>
}

export const makeConnections = (sql: SqlClient.SqlClient): Connections => {
  const unnamed = (text: string, params: ReadonlyArray<unknown>) =>
    withoutTransaction(sql.unsafe<Row>(text, params).withoutTransform)

  /**
   * `@effect/sql-pg`'s pool-level connection: every call takes a pooled client
   * for one statement. It is what `sql.unsafe` uses outside a transaction; here
   * it is used directly to run named statements. `undefined` elsewhere.
   */
  const poolConnection: Connection | undefined = (() => {
    if (!isPgClient(sql)) return undefined
    const acquirer = (sql.unsafe("SELECT 1") as unknown as { readonly acquirer?: unknown }).acquirer
    if (!Effect.isEffect(acquirer)) return undefined
    const exit = Effect.runSyncExit(
      Effect.scoped(withoutTransaction(acquirer as Effect.Effect<Connection, SqlError, Scope.Scope>))
    )
    return Exit.isSuccess(exit) ? exit.value : undefined
  })()

  const names = new Map<string, string>()
  const nameOf = (text: string): string => {
    let name = names.get(text)
    if (name === undefined) {
      // one name per text: node-postgres refuses a name reused with another text
      name = `effect_kv_${BigInt.asUintN(64, keyHash(text)).toString(36)}`
      names.set(text, name)
    }
    return name
  }

  // cleared for good by the first sign that the server does not keep named statements
  let useNamed = poolConnection !== undefined
  /** `send` as a named statement while the server keeps them (once per text and connection), else unnamed. */
  const named = <A>(send: (conn: Connection, query: string, params: ReadonlyArray<unknown>) => Effect.Effect<A, SqlError>) =>
  (conn: Connection, text: string, params: ReadonlyArray<unknown>): Effect.Effect<A, SqlError> => {
    if (!useNamed) return send(conn, text, params)
    // A node-postgres query config in place of the text: `@effect/sql-pg` hands it to
    // `client.query` as it is. A fresh object per call: node-postgres writes into it.
    return Effect.catchIf(send(conn, { name: nameOf(text), text } as unknown as string, params), forgotten, (error) => {
      useNamed = false
      // the server refused the statement, so nothing of it ran: re-running is safe even for a write.
      // Inside a transaction the error has aborted it: only a fresh statement can be re-run
      return openTransactions.has(conn) ? Effect.fail(error) : send(conn, text, params)
    })
  }
  const execute = named((conn, query, params) =>
    conn.execute(query, params, undefined) as Effect.Effect<ReadonlyArray<Row>, SqlError>
  )
  const executeCounted = named((conn, query, params) => Effect.map(conn.executeRaw(query, params), rowCountOf))

  const onPool = (text: string, params: ReadonlyArray<unknown>) =>
    poolConnection === undefined ? unnamed(text, params) : execute(poolConnection, text, params)

  const onPoolCounted = (text: string, params: ReadonlyArray<unknown>) =>
    poolConnection === undefined
      ? withoutTransaction(Effect.map(sql.unsafe(text, params).raw, rowCountOf))
      : executeCounted(poolConnection, text, params)

  /** A connection that is `conn` while the transaction is open, and the pool afterwards. */
  const transactionConnection = (conn: Connection, state: { open: boolean }): Connection => {
    const pool: Connection = poolConnection ?? {
      execute: (text, params) => unnamed(text, params),
      executeRaw: (text, params) => withoutTransaction(sql.unsafe(text, params).raw),
      executeStream: (text, params) =>
        Stream.mapInputContext(sql.unsafe(text, params).stream, Context.omit(SqlClient.TransactionConnection)),
      executeValues: (text, params) => withoutTransaction(sql.unsafe(text, params).values),
      executeUnprepared: (text, params) => unnamed(text, params)
    }
    const target = () => (state.open ? conn : pool)
    const wrapper: Connection = {
      execute: (text, params, transform) => Effect.suspend(() => target().execute(text, params, transform)),
      executeRaw: (text, params) => Effect.suspend(() => target().executeRaw(text, params)),
      executeStream: (text, params, transform) => Stream.suspend(() => target().executeStream(text, params, transform)),
      executeValues: (text, params) => Effect.suspend(() => target().executeValues(text, params)),
      executeUnprepared: (text, params, transform) =>
        Effect.suspend(() => target().executeUnprepared(text, params, transform))
    }
    openTransactions.set(wrapper, state)
    return wrapper
  }

  /**
   * The caller's open transaction, read straight off the fiber's context: one
   * step per statement, where `serviceOption`, `Option.filter` and `flatMap` took four.
   */
  const openTransactionOf = (
    fiber: Fiber.RuntimeFiber<unknown, unknown>
  ): readonly [Connection, number] | undefined => {
    const transaction = Context.getOrElse(fiber.currentContext, SqlClient.TransactionConnection, noTransaction)
    return transaction !== undefined && (openTransactions.get(transaction[0])?.open ?? true) ? transaction : undefined
  }

  const liveTransaction = Effect.withFiberRuntime<Option.Option<readonly [Connection, number]>>((fiber) =>
    Effect.succeed(Option.fromNullable(openTransactionOf(fiber)))
  )

  const ifInTransaction = <A, E, R>(
    inside: () => Effect.Effect<A, E, R>,
    outside: () => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E, R> => Effect.withFiberRuntime((fiber) => (openTransactionOf(fiber) === undefined ? outside() : inside()))

  const run = (text: string, params: ReadonlyArray<unknown>) =>
    Effect.withFiberRuntime<ReadonlyArray<Row>, SqlError>((fiber) => {
      const transaction = openTransactionOf(fiber)
      return transaction === undefined ? onPool(text, params) : execute(transaction[0], text, params)
    })

  /** A reservation in its own scope, as the fiber that acquires it sees it. */
  const reserveScoped: Effect.Effect<Reserved, SqlError> = Effect.flatMap(
    Scope.make(),
    (scope) => Effect.map(Scope.extend(sql.reserve, scope), (conn): Reserved => [conn, scope])
  )

  /**
   * `sql.reserve`, interruptible without leaking: the acquisition runs in a
   * fiber of its own that nobody interrupts, and if the caller stops waiting,
   * the connection is released as soon as it arrives (`abandon`). That fiber
   * is a root fiber (`runFork`), watched through an observer, rather than a
   * daemon joined by the caller: joining merges the child's `FiberRef`s back
   * into the caller and forking copies them, neither of which a reservation
   * needs (measured: 27 µs against 34 µs per reservation and release).
   */
  const reserve: Effect.Effect<Reserved, SqlError> = Effect.suspend(() => {
    const acquiring = Effect.runFork(reserveScoped)
    let waiting: ((exit: Exit.Exit<Reserved, SqlError>) => void) | undefined
    let abandoned = false
    acquiring.addObserver((exit) => {
      if (abandoned) release(exit)
      else waiting?.(exit)
    })
    const abandon = Effect.sync(() => {
      abandoned = true
      waiting = undefined
      const exit = acquiring.unsafePoll()
      if (exit !== null) release(exit)
    })
    return Effect.onExit(
      Effect.async<Reserved, SqlError>((resume) => {
        const exit = acquiring.unsafePoll()
        if (exit !== null) return resume(exit)
        waiting = resume
      }),
      // not ours unless it reached us: interrupted while waiting, or just after it was handed over
      (exit) => (Exit.isSuccess(exit) ? Effect.void : abandon)
    )
  })

  /**
   * A late query cancel (from an interrupted statement) may hit the ROLLBACK
   * itself, so it is tried twice; if it still fails, the connection is closed
   * rather than returned to the pool inside a transaction that holds locks.
   */
  const rollback = (conn: Connection) => {
    const exec = (text: string) => conn.executeUnprepared(text, [], undefined)
    return exec("ROLLBACK").pipe(
      Effect.orElse(() => exec("ROLLBACK")),
      Effect.orElse(() => exec("SELECT pg_terminate_backend(pg_backend_pid())")),
      Effect.ignore
    )
  }

  const inTransaction = <A, E, R>(
    begin: string,
    body: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | SqlError | CommitFailure, Exclude<R, SqlClient.TransactionConnection>> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(restore(reserve), ([conn, scope]) => {
        const state = { open: true }
        const exec = (text: string) => conn.executeUnprepared(text, [], undefined)
        const transaction = [transactionConnection(conn, state), 0] as const
        // The transaction joins the fiber's context for BEGIN and `body` and leaves it once they have
        // ended, set and put back by hand: every exit of `restore(…)` reaches the `Effect.exit` below
        // (uninterruptible from there on). `provideService` does the same in about 25 fiber steps.
        return Effect.withFiberRuntime<Exit.Exit<A, E | SqlError>>((runtime) => {
          const fiber = runtime as unknown as SettableContext
          const outer = fiber.getFiberRef(FiberRef.currentContext)
          fiber.setFiberRef(FiberRef.currentContext, Context.add(outer, SqlClient.TransactionConnection, transaction))
          return Effect.map(Effect.exit(restore(Effect.zipRight(exec(begin), body as Effect.Effect<A, E>))), (exit) => {
            fiber.setFiberRef(FiberRef.currentContext, outer)
            return exit
          })
        }).pipe(
          Effect.flatMap((exit) => {
            state.open = false
            const end: Effect.Effect<A, E | SqlError | CommitFailure> = Exit.isSuccess(exit)
              ? exec("COMMIT").pipe(
                Effect.mapError((error) => new CommitFailure({ error })),
                Effect.as(exit.value)
              )
              : Effect.zipRight(rollback(conn), exit)
            // already uninterruptible here: the release follows the end without `ensuring`'s own mask (8 steps fewer)
            return Effect.flatMap(Effect.exit(end), (ended) => Effect.zipRight(Scope.close(scope, Exit.void), ended))
          })
        )
      })
    )

  return { run, onPool, onPoolCounted, liveTransaction, ifInTransaction, inTransaction }
}
