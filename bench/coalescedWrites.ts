/**
 * `setIfAbsent` and `expire` on PostgreSQL (issue 18): effect-kv's coalesced
 * path against a raw `pg.Pool` statement doing the same write (named,
 * prepared, without the advisory lock) and against effect-kv's uncoalesced
 * path — the same store with those two operations sent one statement per call,
 * as before they were coalesced — all three interleaved in one comparison.
 *
 * Used by `postgres.ts` (rows of the suite) and runnable on its own for the
 * issue's evidence: `npx tsx bench/coalescedWrites.ts [rounds]` (embedded
 * server, or `DATABASE_URL`).
 */
import { PgClient } from "@effect/sql-pg"
import { SqlClient } from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import pg from "pg"
import { fileURLToPath } from "node:url"
import { execSync } from "node:child_process"
import * as os from "node:os"
import { keyHash } from "../src/core/hash.js"
import { makeStatements } from "../src/core/postgresSql.js"
import { makeConnections } from "../src/internal/postgres/connection.js"
import { makeDriver } from "../src/internal/postgres/driver.js"
import { KvStore } from "../src/KvStore.js"
import * as KvStoreModule from "../src/KvStore.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { buildService } from "./lib/effect.js"
import { compare, type CompareOptions, median } from "./lib/measure.js"
import { runConcurrently } from "./lib/measure.js"
import { ratioRow, type Row } from "./lib/report.js"

const h = (key: string) => keyHash(key).toString()
const VALUE = new Uint8Array(100).fill(7)
const HOUR = 3_600_000

type Store = KvStoreModule.Service

/**
 * The store on `table` with `setIfAbsent` and `expire` as they were before
 * coalescing: one statement per call (`expire`'s fallback for a key whose
 * lock is held is left out: nothing holds one here, and it says so if it does).
 */
export const uncoalescedStore = (table: string) =>
  Layer.scoped(
    KvStore,
    Effect.gen(function*() {
      const sql = yield* SqlClient
      const statements = makeStatements({ schema: "public", table, unlogged: false })
      const { run } = makeConnections(sql)
      const driver = makeDriver(sql, statements)
      return yield* KvStoreModule.make({
        ...driver,
        setIfAbsent: (key, value, ttl) =>
          Effect.orDie(Effect.map(run(statements.setIfAbsent, [h(key), key, value, ttl ?? null]), (rows) => rows.length > 0)),
        expire: (key, ttl) =>
          Effect.orDie(Effect.flatMap(run(statements.expireIfFree, [h(key), key, ttl ?? null]), (rows) =>
            rows[0]?.["free"] === true
              ? Effect.succeed(Number(rows[0]["changed"] ?? 0) > 0)
              : Effect.dieMessage("the bench's expire found a key locked")))
      })
    })
  )

/** The same writes by hand: named prepared statements on `pg`, no advisory lock. */
const rawStatements = (table: string) => {
  const live = (alias: string) => `(${alias}expires_at IS NULL OR ${alias}expires_at > now())`
  return {
    setIfAbsent: {
      name: `${table}_set_if_absent`,
      text: `INSERT INTO ${table} AS cur (key_hash, key, value, expires_at, updated_at) VALUES ($1, $2, $3, NULL, now())
             ON CONFLICT (key) DO UPDATE SET key_hash = excluded.key_hash, value = excluded.value,
               expires_at = excluded.expires_at, updated_at = excluded.updated_at
             WHERE NOT ${live("cur.")} RETURNING 1 AS written`
    },
    expire: {
      name: `${table}_expire`,
      text: `UPDATE ${table} SET expires_at = now() + $3::float8 * interval '1 millisecond', updated_at = now()
             WHERE key = $2 AND key_hash = $1 AND ${live("")} RETURNING 1 AS changed`
    }
  }
}

export interface CoalescedWritesSetup {
  readonly pool: pg.Pool
  readonly table: string
  /** The store (coalescing) and the same table through `uncoalescedStore`. */
  readonly kv: Store
  readonly uncoalesced: Store
}

const allTrue = (what: string) => (answers: ReadonlyArray<boolean>) => {
  if (answers.some((x) => !x)) throw new Error(`${what}: a call answered false`)
}

/**
 * The `setIfAbsent` and `expire` comparisons at `c` concurrent callers, `n`
 * calls a batch. setIfAbsent: every call writes (its keys are deleted, untimed,
 * before each batch). expire: every call changes a live entry's expiry.
 */
export const coalescedWriteComparisons = async (
  setup: CoalescedWritesSetup,
  c: number,
  n: number,
  timing: CompareOptions
) => {
  const { kv, pool, table, uncoalesced } = setup
  const s = rawStatements(table)
  const siaKeys = Array.from({ length: n }, (_, i) => `sia:${c}:${i.toString().padStart(7, "0")}`)
  const expKeys = Array.from({ length: n }, (_, i) => `exp:${c}:${i.toString().padStart(7, "0")}`)
  const clear = async () => {
    await pool.query(`DELETE FROM ${table} WHERE key = ANY($1::text[])`, [siaKeys])
  }
  await pool.query(
    `INSERT INTO ${table} (key_hash, key, value) SELECT h, k, $3 FROM unnest($1::bigint[], $2::text[]) AS t(h, k)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = NULL`,
    [expKeys.map(h), expKeys, VALUE]
  )
  const rawBatch = (keys: ReadonlyArray<string>, call: (key: string) => Promise<boolean>, what: string) => async () => {
    const answers = new Array<boolean>(keys.length)
    await runConcurrently(keys.length, c, async (i) => {
      answers[i] = await call(keys[i]!)
    })
    allTrue(what)(answers)
  }
  // an async function: tinybench calls any other function once when it is added, to see whether it returns
  // a promise, without waiting for it — that batch would overlap the next ones (on the same keys)
  const kvBatch = (keys: ReadonlyArray<string>, call: (key: string) => Effect.Effect<boolean, unknown>, what: string) => async () =>
    allTrue(what)(await Effect.runPromise(Effect.forEach(keys, call, { concurrency: c })))

  const setIfAbsent = await compare([
    {
      name: "raw",
      opsPerBatch: n,
      beforeEach: clear,
      batch: rawBatch(siaKeys, async (key) => (await pool.query(s.setIfAbsent, [h(key), key, VALUE])).rows.length > 0, "raw setIfAbsent")
    },
    { name: "effect-kv", opsPerBatch: n, beforeEach: clear, batch: kvBatch(siaKeys, (key) => kv.setIfAbsent(key, VALUE), "setIfAbsent") },
    {
      name: "uncoalesced",
      opsPerBatch: n,
      beforeEach: clear,
      batch: kvBatch(siaKeys, (key) => uncoalesced.setIfAbsent(key, VALUE), "uncoalesced setIfAbsent")
    }
  ], timing)
  const expire = await compare([
    {
      name: "raw",
      opsPerBatch: n,
      batch: rawBatch(expKeys, async (key) => (await pool.query(s.expire, [h(key), key, HOUR])).rows.length > 0, "raw expire")
    },
    { name: "effect-kv", opsPerBatch: n, batch: kvBatch(expKeys, (key) => kv.expire(key, "1 hour"), "expire") },
    { name: "uncoalesced", opsPerBatch: n, batch: kvBatch(expKeys, (key) => uncoalesced.expire(key, "1 hour"), "uncoalesced expire") }
  ], timing)
  return { setIfAbsent, expire }
}

/** The suite's rows: effect-kv against raw pg, the uncoalesced path in the note. */
export const coalescedWriteRows = async (
  setup: CoalescedWritesSetup,
  c: number,
  n: number,
  label: string,
  timing: CompareOptions
): Promise<Array<Row>> => {
  const { expire, setIfAbsent } = await coalescedWriteComparisons(setup, c, n, timing)
  const note = (m: typeof expire) =>
    `uncoalesced (one statement per call): ${m.uncoalesced!.usPerOp.toFixed(0)} µs, ${
      (m.uncoalesced!.usPerOp / m.raw!.usPerOp).toFixed(2)
    }× raw`
  return [
    ratioRow("postgres", `setIfAbsent, ${label}`, setIfAbsent["effect-kv"]!.usPerOp, "pg named prepared INSERT … ON CONFLICT … WHERE NOT live", setIfAbsent.raw!.usPerOp, {
      note: note(setIfAbsent)
    }),
    ratioRow("postgres", `expire, ${label}`, expire["effect-kv"]!.usPerOp, "pg named prepared UPDATE … expires_at", expire.raw!.usPerOp, {
      note: note(expire)
    })
  ]
}

/** On its own: `rounds` paired runs at 1, 10 and 50 callers, every figure printed. */
const standalone = async (rounds: number) => {
  const { startPostgres } = await import("../dev/postgresServer.js")
  const server = await startPostgres()
  const table = "bench_coalesced_writes"
  const pool = new pg.Pool({ connectionString: server.url, max: 10 }).on("error", () => {})
  const sqlLayer = PgClient.layer({ url: Redacted.make(server.url), maxConnections: 10 })
  const closers: Array<() => Promise<void>> = []
  try {
    await pool.query(`DROP TABLE IF EXISTS ${table}`)
    const kv = await buildService(PostgresStore.layer({ table }).pipe(Layer.provide(sqlLayer)), KvStore)
    closers.push(kv.close)
    const un = await buildService(uncoalescedStore(table).pipe(Layer.provide(sqlLayer)), KvStore)
    closers.push(un.close)
    const setup = { pool, table, kv: kv.service, uncoalesced: un.service }
    console.log(`node ${process.version}, ${os.cpus().length} cores, load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`)
    try {
      console.log(execSync("git rev-parse --short HEAD").toString().trim())
    } catch {}
    const timing = { rounds: 3, time: 150, iterations: 3, warmupTime: 50, warmupIterations: 1 }
    const all = new Map<string, Array<number>>()
    for (let round = 0; round < rounds; round++) {
      for (const c of [1, 10, 50]) {
        const n = c === 1 ? 50 : c === 10 ? 200 : 500
        const result = await coalescedWriteComparisons(setup, c, n, timing)
        for (const [op, measured] of Object.entries(result)) {
          const line = [`${op} c=${c}`]
          for (const name of ["raw", "effect-kv", "uncoalesced"]) {
            const us = measured[name]!.usPerOp
            const key = `${op} c=${c} ${name}`
            all.set(key, [...(all.get(key) ?? []), us])
            line.push(`${name} ${us.toFixed(1)}`)
          }
          line.push(`kv/raw ${(measured["effect-kv"]!.usPerOp / measured.raw!.usPerOp).toFixed(2)}`)
          line.push(`kv/uncoalesced ${(measured["effect-kv"]!.usPerOp / measured.uncoalesced!.usPerOp).toFixed(2)}`)
          console.log(`round ${round + 1}: ${line.join("  ")}`)
        }
      }
      console.log(`load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`)
    }
    const spread = (values: ReadonlyArray<number>, digits: number) =>
      `${median(values).toFixed(digits)} (${Math.min(...values).toFixed(digits)}–${Math.max(...values).toFixed(digits)})`
    console.log("\nmedian over rounds (min–max), µs/op")
    for (const [key, values] of all) console.log(`${key.padEnd(32)} ${spread(values, 1)}`)
    // the steadier figure on a shared machine: each round's ratio, its subjects measured side by side
    console.log("\npaired ratios, median over rounds (min–max)")
    for (const op of ["setIfAbsent", "expire"]) {
      for (const c of [1, 10, 50]) {
        const of = (name: string) => all.get(`${op} c=${c} ${name}`)!
        const ratios = (a: string, b: string) => spread(of(a).map((x, i) => x / of(b)[i]!), 2)
        console.log(
          `${`${op} c=${c}`.padEnd(18)} kv/raw ${ratios("effect-kv", "raw")}  kv/uncoalesced ${ratios("effect-kv", "uncoalesced")}  ` +
            `uncoalesced/raw ${ratios("uncoalesced", "raw")}`
        )
      }
    }
  } finally {
    for (const close of closers.reverse()) await close()
    await pool.end()
    await server.stop()
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await standalone(Number(process.argv[2] ?? 5))
}
