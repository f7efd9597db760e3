/**
 * The table check at layer build (src/internal/postgres/tableCheck.ts), against
 * the real server: tables made by hand the way a DBA or an older deployment
 * would, then `PostgresStore.layer` built on them.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as KvStore from "../src/KvStore.js"
import * as PostgresStore from "../src/PostgresStore.js"

const databaseUrl = inject("databaseUrl")
const run = randomUUID().slice(0, 8)
/** A table name no other test or run uses. */
const freshTable = (what: string) => `kv_check_${what}_${run}`

const pg = PgClient.layer({ url: Redacted.make(databaseUrl), applicationName: "effect-kv-table-check" })

/** A plain SQL pool for making tables by hand. */
const admin = Effect.map(Layer.build(pg), (ctx) => Context.get(ctx, SqlClient.SqlClient))

/** Builds the store on `options`; the exit of the layer build. */
const build = (options: PostgresStore.Options) =>
  Effect.exit(
    Effect.map(Layer.build(PostgresStore.layer(options).pipe(Layer.provide(pg))), (ctx) => Context.get(ctx, KvStore.KvStore))
  )

/** The KvError a failed layer build failed with; fails the test otherwise. */
const layerError = (exit: Exit.Exit<unknown, unknown>): KvStore.KvError => {
  assert.isTrue(Exit.isFailure(exit), "the layer should have failed")
  const error = Cause.failureOption((exit as Exit.Failure<unknown, unknown>).cause)
  assert.isTrue(Option.isSome(error), String(exit))
  const kvError = (error as Option.Some<unknown>).value
  assert.instanceOf(kvError, KvStore.KvError)
  if (!(kvError instanceof KvStore.KvError)) throw kvError
  assert.strictEqual(kvError.reason, "Backend")
  assert.strictEqual(kvError.op, "layer")
  return kvError
}

const qualified = (table: string) => `"public"."${table}"`

/** The README's DDL, with the parts a test wants to vary. */
const ddl = (table: string, options: { unlogged?: boolean; key?: string; extra?: string } = {}) =>
  `CREATE ${options.unlogged ? "UNLOGGED " : ""}TABLE ${qualified(table)} (` +
  `key_hash BIGINT NOT NULL, ` +
  `key ${options.key ?? "TEXT COLLATE \"C\" NOT NULL PRIMARY KEY"}, ` +
  `value BYTEA NOT NULL, ` +
  `expires_at TIMESTAMPTZ, ` +
  `updated_at TIMESTAMPTZ NOT NULL DEFAULT now()${options.extra ?? ""})`

const comment = (sql: SqlClient.SqlClient, table: string) =>
  Effect.map(
    sql.unsafe<{ c: string | null }>(`SELECT obj_description($1::regclass, 'pg_class') AS c`, [qualified(table)]),
    (rows) => rows[0]?.c ?? null
  )

const bytes = (s: string) => new TextEncoder().encode(s)

describe("PostgresStore table check", () => {
  it.scoped("a table it creates is stamped with the schema version", () =>
    Effect.gen(function*() {
      const table = freshTable("created")
      const store = yield* Effect.flatten(build({ table }))
      yield* store.set("k", bytes("v"))
      assert.strictEqual(yield* comment(yield* admin, table), "effect-kv schema 1")
    }))

  it.scoped("an existing correct table without a comment is accepted with createTable: false, stamped, and works", () =>
    Effect.gen(function*() {
      const sql = yield* admin
      const table = freshTable("by_hand")
      // an extra nullable column and an extra defaulted one are allowed
      yield* sql.unsafe(ddl(table, { extra: ", note TEXT, tenant INT NOT NULL DEFAULT 0" }))
      assert.isNull(yield* comment(sql, table))
      const store = yield* Effect.flatten(build({ table, createTable: false }))
      yield* store.set("k", bytes("v"))
      assert.deepStrictEqual(new TextDecoder().decode(yield* store.get("k")), "v")
      assert.strictEqual(yield* comment(sql, table), "effect-kv schema 1")
    }))

  it.scoped("a comment of someone else's is kept", () =>
    Effect.gen(function*() {
      const sql = yield* admin
      const table = freshTable("commented")
      yield* sql.unsafe(ddl(table))
      yield* sql.unsafe(`COMMENT ON TABLE ${qualified(table)} IS 'sessions of the web app'`)
      yield* Effect.flatten(build({ table }))
      assert.strictEqual(yield* comment(sql, table), "sessions of the web app")
    }))

  it.scoped("createTable: false with no table fails the layer", () =>
    Effect.gen(function*() {
      const table = freshTable("missing")
      const error = layerError(yield* build({ table, createTable: false }))
      assert.include(error.message, qualified(table))
      assert.include(error.message, "does not exist")
      assert.include(error.message, "createTable")
    }))

  it.scoped("a table with another column set fails, naming every missing column", () =>
    Effect.gen(function*() {
      const sql = yield* admin
      const table = freshTable("other_columns")
      yield* sql.unsafe(`CREATE TABLE ${qualified(table)} (id TEXT PRIMARY KEY, data BYTEA NOT NULL, owner TEXT NOT NULL)`)
      const error = layerError(yield* build({ table }))
      assert.include(error.message, qualified(table))
      for (const column of ["key_hash", "key", "value", "expires_at", "updated_at"]) {
        assert.include(error.message, `column ${column} is missing`)
      }
      assert.include(error.message, "extra column data is NOT NULL without a default")
      assert.include(error.message, "extra column owner is NOT NULL without a default")
      assert.include(error.message, "its primary key is (id)")
    }))

  it.scoped("wrong types, nullability and defaults are named", () =>
    Effect.gen(function*() {
      const sql = yield* admin
      const table = freshTable("wrong_types")
      yield* sql.unsafe(
        `CREATE TABLE ${qualified(table)} (key_hash INT NOT NULL, key TEXT COLLATE "C" PRIMARY KEY, value TEXT, ` +
          `expires_at TIMESTAMPTZ NOT NULL DEFAULT now() + interval '1 day', updated_at TIMESTAMP NOT NULL)`
      )
      const error = layerError(yield* build({ table }))
      assert.include(error.message, "column key_hash is integer, needs bigint")
      assert.include(error.message, "column value is text, needs bytea")
      assert.include(error.message, "column value allows NULL")
      assert.include(error.message, "column expires_at is NOT NULL")
      assert.include(error.message, "column expires_at has a default")
      assert.include(error.message, "column updated_at is timestamp without time zone, needs timestamp with time zone")
      assert.include(error.message, "column updated_at has no default")
    }))

  it.scoped("a key primary key together with another column fails", () =>
    Effect.gen(function*() {
      const sql = yield* admin
      const table = freshTable("wide_pk")
      yield* sql.unsafe(ddl(table, { key: "TEXT COLLATE \"C\" NOT NULL", extra: ", PRIMARY KEY (key_hash, key)" }))
      const error = layerError(yield* build({ table }))
      assert.include(error.message, "its primary key is (key_hash, key); it needs PRIMARY KEY (key) alone")
    }))

  it.scoped("a key without COLLATE \"C\" fails; the suggested ALTER fixes it", () =>
    Effect.gen(function*() {
      const sql = yield* admin
      const table = freshTable("no_collate")
      yield* sql.unsafe(ddl(table, { key: "TEXT NOT NULL PRIMARY KEY" }))
      const error = layerError(yield* build({ table }))
      assert.include(error.message, qualified(table))
      assert.include(error.message, "column key has collation \"default\", needs COLLATE \"C\"")
      yield* sql.unsafe(`ALTER TABLE ${qualified(table)} ALTER COLUMN key TYPE text COLLATE "C"`)
      const store = yield* Effect.flatten(build({ table }))
      yield* store.set("k", bytes("v"))
    }))

  it.scoped("a logged table with unlogged: true fails with SET UNLOGGED, which then fixes it", () =>
    Effect.gen(function*() {
      const sql = yield* admin
      const table = freshTable("logged")
      yield* sql.unsafe(ddl(table))
      const error = layerError(yield* build({ table, unlogged: true }))
      assert.include(error.message, qualified(table))
      assert.include(error.message, `ALTER TABLE ${qualified(table)} SET UNLOGGED`)
      // the default (logged) still works on it
      yield* Effect.flatten(build({ table }))
      yield* sql.unsafe(`ALTER TABLE ${qualified(table)} SET UNLOGGED`)
      yield* Effect.flatten(build({ table, unlogged: true }))
    }))

  it.scoped("an unlogged table without unlogged: true fails with SET LOGGED, which then fixes it", () =>
    Effect.gen(function*() {
      const sql = yield* admin
      const table = freshTable("unlogged")
      yield* sql.unsafe(ddl(table, { unlogged: true }))
      for (const options of [{ table }, { table, unlogged: false }, { table, createTable: false }]) {
        const error = layerError(yield* build(options))
        assert.include(error.message, `ALTER TABLE ${qualified(table)} SET LOGGED`)
      }
      yield* Effect.flatten(build({ table, unlogged: true }))
      yield* sql.unsafe(`ALTER TABLE ${qualified(table)} SET LOGGED`)
      yield* Effect.flatten(build({ table }))
    }))

  it.scoped("a table stamped by a newer effect-kv fails: upgrade", () =>
    Effect.gen(function*() {
      const sql = yield* admin
      const table = freshTable("newer")
      yield* sql.unsafe(ddl(table))
      yield* sql.unsafe(`COMMENT ON TABLE ${qualified(table)} IS 'effect-kv schema 2'`)
      const error = layerError(yield* build({ table }))
      assert.include(error.message, qualified(table))
      assert.include(error.message, "newer effect-kv (schema 2")
      assert.include(error.message, "upgrade effect-kv")
      // version 1, as this version writes it, is fine
      yield* sql.unsafe(`COMMENT ON TABLE ${qualified(table)} IS 'effect-kv schema 1'`)
      yield* Effect.flatten(build({ table }))
    }))

  it.scoped("a view in the table's place fails", () =>
    Effect.gen(function*() {
      const sql = yield* admin
      const table = freshTable("view")
      yield* sql.unsafe(`CREATE VIEW ${qualified(table)} AS SELECT 1 AS key`)
      const error = layerError(yield* build({ table, createTable: false }))
      assert.include(error.message, "it is not a table")
    }))
})
