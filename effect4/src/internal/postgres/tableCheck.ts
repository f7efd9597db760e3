/**
 * The table check `PostgresStore.layer` runs once, after creating the table
 * (unless `createTable: false`): the store's statements assume a shape, and a
 * table that differs would fail on every call, or worse, work subtly wrong
 * (`keys` out of order and off the index without `COLLATE "C"`). Every
 * difference found fails the layer with one `KvError` (`Backend`, op `"layer"`)
 * that names the table, lists what differs and says how to fix each item.
 *
 * The shape (schema version 1):
 *
 * - `key_hash BIGINT NOT NULL`, `key TEXT COLLATE "C" NOT NULL` as the primary
 *   key on its own, `value BYTEA NOT NULL`, `expires_at TIMESTAMPTZ` (nullable,
 *   no default: a row inserted without it never expires), `updated_at
 *   TIMESTAMPTZ NOT NULL` with a default (`now()`), none of them generated;
 * - `UNLOGGED` exactly when `unlogged: true` was asked;
 * - other columns are allowed when an insert that leaves them out still works:
 *   nullable, with a default, identity or generated. A `NOT NULL` column
 *   without a default would make every write fail, so it is refused.
 *
 * The schema version is the table's comment, `effect-kv schema 1`. A table
 * without a comment and with the right shape (made by hand, or by effect-kv
 * before versions were recorded) is version 1 and gets the comment when the
 * layer's role owns the table; a comment of someone else's is left alone. A
 * table stamped with a higher version was made by a newer effect-kv and is
 * refused rather than used with statements that may not fit it.
 */
import type * as SqlClient from "effect/sql/SqlClient"
import { SqlError } from "effect/sql/SqlError"
import * as Effect from "effect/Effect"
import { KvError } from "../../KvStore.js"

/** The table shape this version of effect-kv reads and writes. */
export const SCHEMA_VERSION = 1

/** The table comment that records the schema version. */
export const schemaComment = (version: number = SCHEMA_VERSION): string => `effect-kv schema ${version}`

const COMMENT_PATTERN = /^effect-kv schema (\d+)$/

export interface Target {
  readonly schema: string
  readonly table: string
  readonly unlogged: boolean
  /** Whether the layer was allowed to create the table (only changes the advice when it is missing). */
  readonly createTable: boolean
}

interface Expected {
  readonly type: string
  readonly ddl: string
  readonly notNull: boolean
  /** true: needs a default; false: must have none; undefined: either */
  readonly hasDefault?: boolean
  readonly collation?: string
}

/** Types as `format_type` prints them. */
const EXPECTED: Readonly<Record<string, Expected>> = {
  key_hash: { type: "bigint", ddl: "BIGINT NOT NULL", notNull: true },
  key: { type: "text", ddl: "TEXT COLLATE \"C\" NOT NULL PRIMARY KEY", notNull: true, collation: "C" },
  value: { type: "bytea", ddl: "BYTEA NOT NULL", notNull: true },
  expires_at: { type: "timestamp with time zone", ddl: "TIMESTAMPTZ", notNull: false, hasDefault: false },
  updated_at: {
    type: "timestamp with time zone",
    ddl: "TIMESTAMPTZ NOT NULL DEFAULT now()",
    notNull: true,
    hasDefault: true
  }
}

const quote = (identifier: string): string => `"${identifier.replaceAll("\"", "\"\"")}"`

const TABLE_QUERY = `SELECT c.oid::int8::text AS oid, c.relkind::text AS kind, c.relpersistence::text AS persistence,
  obj_description(c.oid, 'pg_class') AS comment, pg_has_role(c.relowner, 'USAGE') AS owned
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2`

const COLUMNS_QUERY = `SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type,
  a.attnotnull AS not_null, pg_get_expr(d.adbin, d.adrelid) AS default_expr,
  a.attidentity <> '' AS identity, a.attgenerated <> '' AS generated, co.collname::text AS collation
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`

const PRIMARY_KEY_QUERY = `SELECT a.attname::text AS name
FROM pg_constraint con
CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
WHERE con.conrelid = $1::int8::oid AND con.contype = 'p'
ORDER BY k.ord`

interface TableRow {
  readonly oid: string
  readonly kind: string
  readonly persistence: string
  readonly comment: string | null
  readonly owned: boolean
}

interface ColumnRow {
  readonly name: string
  readonly type: string
  readonly not_null: boolean
  readonly default_expr: string | null
  readonly identity: boolean
  readonly generated: boolean
  readonly collation: string | null
}

const fail = (message: string, cause?: unknown) =>
  new KvError({ reason: "Backend", op: "layer", message, ...(cause === undefined ? {} : { cause }) })

/** What differs between the table's columns and primary key and the shape; empty when nothing does. */
const columnProblems = (
  name: string,
  columns: ReadonlyArray<ColumnRow>,
  primaryKey: ReadonlyArray<string>
): Array<string> => {
  const problems: Array<string> = []
  const byName = new Map(columns.map((c) => [c.name, c]))
  for (const [column, expected] of Object.entries(EXPECTED)) {
    const actual = byName.get(column)
    if (actual === undefined) {
      problems.push(`column ${column} is missing (ALTER TABLE ${name} ADD COLUMN ${column} ${expected.ddl})`)
      continue
    }
    if (actual.type !== expected.type) {
      problems.push(`column ${column} is ${actual.type}, needs ${expected.type}`)
    }
    if (actual.generated) problems.push(`column ${column} is generated; it must be a plain column`)
    if (actual.not_null !== expected.notNull) {
      problems.push(
        expected.notNull
          ? `column ${column} allows NULL (ALTER TABLE ${name} ALTER COLUMN ${column} SET NOT NULL)`
          : `column ${column} is NOT NULL, but NULL means "never expires" ` +
            `(ALTER TABLE ${name} ALTER COLUMN ${column} DROP NOT NULL)`
      )
    }
    if (expected.hasDefault === true && actual.default_expr === null) {
      problems.push(`column ${column} has no default (ALTER TABLE ${name} ALTER COLUMN ${column} SET DEFAULT now())`)
    }
    if (expected.hasDefault === false && actual.default_expr !== null) {
      problems.push(
        `column ${column} has a default (${actual.default_expr}); a row inserted without it must never expire ` +
          `(ALTER TABLE ${name} ALTER COLUMN ${column} DROP DEFAULT)`
      )
    }
    if (expected.collation !== undefined && actual.collation !== expected.collation) {
      problems.push(
        `column ${column} has collation ${JSON.stringify(actual.collation ?? "none")}, needs COLLATE "C" ` +
          `for code-point order and prefix scans on the primary key ` +
          `(ALTER TABLE ${name} ALTER COLUMN ${column} TYPE text COLLATE "C", which rebuilds the index)`
      )
    }
  }
  for (const column of columns) {
    if (column.name in EXPECTED) continue
    if (column.not_null && column.default_expr === null && !column.identity && !column.generated) {
      problems.push(
        `extra column ${column.name} is NOT NULL without a default, so the store's inserts would fail ` +
          `(give it a default, allow NULL, or drop it)`
      )
    }
  }
  if (primaryKey.length !== 1 || primaryKey[0] !== "key") {
    problems.push(
      primaryKey.length === 0
        ? `it has no primary key; it needs PRIMARY KEY (key)`
        : `its primary key is (${primaryKey.join(", ")}); it needs PRIMARY KEY (key) alone`
    )
  }
  return problems
}

/**
 * Checks that the store's table exists with the shape and persistence the
 * store needs and a schema version it understands; records the version on a
 * table that has none. Fails with `KvError` (`Backend`, op `"layer"`).
 */
export const checkTable = (sql: SqlClient.SqlClient, target: Target): Effect.Effect<void, KvError> => {
  const name = `${quote(target.schema)}.${quote(target.table)}`
  const refuse = (problems: ReadonlyArray<string>) =>
    Effect.fail(fail(
      `PostgresStore table ${name} does not match what effect-kv needs: ${problems.join("; ")}. ` +
        `Fix the table as suggested, or give the store another table with the table option.`
    ))
  return Effect.gen(function*() {
    const tables = yield* sql.unsafe<TableRow>(TABLE_QUERY, [target.schema, target.table])
    const found = tables[0]
    if (found === undefined) {
      return yield* Effect.fail(fail(
        target.createTable
          ? `PostgresStore table ${name} does not exist after creating it; check the role's search_path and rights.`
          : `PostgresStore table ${name} does not exist and createTable is false: create it ` +
            `(see "Table and upgrades" in effect-kv's README) or let the layer create it (createTable: true).`
      ))
    }
    if (found.kind !== "r" && found.kind !== "p") {
      return yield* refuse([`it is not a table (pg_class.relkind ${JSON.stringify(found.kind)})`])
    }
    const version = found.comment === null ? undefined : COMMENT_PATTERN.exec(found.comment)?.[1]
    if (version !== undefined && Number(version) > SCHEMA_VERSION) {
      return yield* Effect.fail(fail(
        `PostgresStore table ${name} was created by a newer effect-kv (schema ${version}; ` +
          `this version knows schema ${SCHEMA_VERSION} and older): upgrade effect-kv in this application.`
      ))
    }
    const columns = yield* sql.unsafe<ColumnRow>(COLUMNS_QUERY, [found.oid])
    const primaryKey = (yield* sql.unsafe<{ readonly name: string }>(PRIMARY_KEY_QUERY, [found.oid])).map((r) => r.name)
    const problems = columnProblems(name, columns, primaryKey)
    const unlogged = found.persistence === "u"
    if (target.unlogged && !unlogged) {
      problems.push(
        `it is a logged table but unlogged: true was asked ` +
          `(ALTER TABLE ${name} SET UNLOGGED, or leave out unlogged: true)`
      )
    }
    if (!target.unlogged && unlogged) {
      problems.push(
        `it is UNLOGGED (emptied after a crash) but unlogged: true was not asked ` +
          `(ALTER TABLE ${name} SET LOGGED, or pass unlogged: true)`
      )
    }
    if (problems.length > 0) return yield* refuse(problems)
    if (found.comment === null && found.owned) {
      yield* sql.unsafe(`COMMENT ON TABLE ${name} IS '${schemaComment()}'`)
    }
  }).pipe(
    Effect.catchIf(
      (e): e is SqlError => e instanceof SqlError,
      (e) =>
        Effect.fail(fail(
          `PostgresStore could not check table ${name}: ${e.cause instanceof Error ? e.cause.message : e.message}`,
          e
        ))
    )
  )
}
