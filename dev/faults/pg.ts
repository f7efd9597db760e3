/**
 * What the round-3 fault scenarios share: a PostgresStore on a pool of its own
 * (one "app instance"), an admin pool that inspects and breaks the server,
 * and small counting helpers. Each scenario starts its own embedded server
 * (`startPostgres({ ignoreDatabaseUrl: true })`): some change server-wide
 * settings, which must never touch a server that someone else uses.
 */
import { PgClient } from "@effect/sql-pg"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import Pg from "pg"
import * as KvStore from "../../src/KvStore.js"
import * as PostgresStore from "../../src/PostgresStore.js"

/** A store on its own pool of `maxConnections`, named `app` in `pg_stat_activity`, closed with the scope. */
export const instance = (
  url: string,
  table: string,
  maxConnections: number,
  app: string
) =>
  Effect.map(
    Layer.build(
      PostgresStore.layer({ table }).pipe(
        Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections, applicationName: app }))
      )
    ),
    Context.get(KvStore.KvStore)
  )

/** `url` with a session setting added (`options=-c name=value`). */
export const withSetting = (url: string, name: string, value: string) =>
  `${url}${url.includes("?") ? "&" : "?"}options=${encodeURIComponent(`-c ${name}=${value}`)}`

/** An admin pool (no store behind it: it is not the thing under test), ended with the scope. */
export const adminPool = (url: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const pool = new Pg.Pool({ connectionString: url, max: 3, application_name: "effect-kv-faults-admin" })
      pool.on("error", () => {})
      return pool
    }),
    (pool) => Effect.promise(() => pool.end().catch(() => undefined))
  )

export const query = <R extends Record<string, unknown>>(pool: Pg.Pool, text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.promise(() => pool.query<R>(text, params as Array<unknown>).then((result) => result.rows))

/** Backends of `app` (a LIKE pattern) that are idle in a transaction, and advisory locks they hold: both must be 0 after a scenario. */
export const leftovers = (pool: Pg.Pool, app: string) =>
  Effect.map(
    query<{ open: number; locks: number }>(
      pool,
      `SELECT (SELECT count(*)::int FROM pg_stat_activity WHERE application_name LIKE $1 AND state LIKE 'idle in transaction%') AS open,
              (SELECT count(*)::int FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND a.application_name LIKE $1) AS locks`,
      [app]
    ),
    (rows) => rows[0]!
  )

/** A tally of messages: the first line, digits as N, at most 160 characters. */
export const tally = () => {
  const counts: Record<string, number> = {}
  return {
    add: (message: string) => {
      const line = message.split("\n")[0]!.replace(/\d+/g, "N").slice(0, 160)
      counts[line] = (counts[line] ?? 0) + 1
    },
    lines: (indent = "  ") =>
      Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([m, n]) => `${indent}${n} × ${m}`),
    total: () => Object.values(counts).reduce((a, b) => a + b, 0)
  }
}

export const sleep = (millis: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, millis)))

export const encoder = new TextEncoder()
export const decoder = new TextDecoder()
