/**
 * Runs the store's fixed statements, as named prepared statements when the
 * `SqlClient` is `@effect/sql-pg`'s.
 *
 * Why: `@effect/sql-pg` sends every statement unnamed, so PostgreSQL parses and
 * plans it on every call. For a primary-key lookup that is most of the cost
 * (measured here: 285 µs unnamed vs 167 µs named for `get`; the `set` statement
 * with its lock CTE 375 µs vs 176 µs). A named statement is parsed and planned
 * once per connection (node-postgres remembers which of its connections have
 * it) and then only bound and executed.
 *
 * How: `@effect/sql-pg`'s `Connection.execute(sql, params)` hands `sql`
 * straight to node-postgres's `client.query(config, values, callback)`, which
 * also accepts a `{ name, text }` query config. The connection is the
 * transaction's when there is one (so statements join it), else one checked
 * out of the pool for the single statement, as `sql.unsafe` does.
 *
 * Trade-offs: a pooler in transaction mode without prepared-statement support
 * (PgBouncer before 1.21, or with `max_prepared_statements = 0`) or a
 * `DISCARD ALL` on a pooled connection makes the server forget the statement;
 * the error (SQLSTATE 26000) is caught, the statement re-run unnamed and the
 * store switches to unnamed statements for good. Inside a transaction the
 * re-run cannot help (the error has aborted it), so that one call fails with
 * `KvError`; the next ones work. Any other `SqlClient` gets `sql.unsafe`.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { keyHash } from "./hash.js"

export type Row = Record<string, unknown>

export type Run = (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, SqlError>

/** `@effect/sql-pg`'s `PgClient` carries this type id; checked by value to avoid depending on the package. */
const PG_CLIENT_TYPE_ID = "~@effect/sql-pg/PgClient"

const isPgClient = (sql: SqlClient.SqlClient): boolean =>
  (sql as unknown as Record<string, unknown>)[PG_CLIENT_TYPE_ID] === PG_CLIENT_TYPE_ID

/** SQLSTATE invalid_sql_statement_name: the server does not know the prepared statement. */
const forgotten = (error: SqlError): boolean =>
  typeof error.cause === "object" && error.cause !== null &&
  (error.cause as { readonly code?: unknown }).code === "26000"

export const makeRunner = (sql: SqlClient.SqlClient): Run => {
  const unnamed: Run = (text, params) => sql.unsafe<Row>(text, params)
  if (!isPgClient(sql)) return unnamed

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
  const execute = (conn: Connection, text: string, params: ReadonlyArray<unknown>) =>
    // A node-postgres query config in place of the text (see the module comment). A fresh
    // object per call: node-postgres writes `values` and `callback` into it.
    conn.execute({ name: nameOf(text), text } as unknown as string, params, undefined) as Effect.Effect<
      ReadonlyArray<Row>,
      SqlError
    >

  // cleared for good by the first sign that the server does not keep named statements
  let useNamed = true
  const named: Run = (text, params) =>
    Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (transaction) =>
      Option.isSome(transaction)
        ? execute(transaction.value[0], text, params)
        : Effect.scoped(Effect.flatMap(sql.reserve, (conn) => execute(conn, text, params)))).pipe(
        Effect.catchIf(forgotten, () => {
          useNamed = false
          return unnamed(text, params)
        })
      )
  return (text, params) => Effect.suspend(() => (useNamed ? named(text, params) : unnamed(text, params)))
}
