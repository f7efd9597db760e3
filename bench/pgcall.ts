/**
 * Sequential PostgreSQL `get`, `set` and `update`, paired in one process
 * (issue 18's per-call overhead): `npx tsx bench/pgcall.ts`.
 *
 * Subjects per operation, interleaved in a rotated order for `ROUNDS` rounds of
 * `BATCHES` batches each; per call, the wall time and this process's CPU time
 * (the JavaScript side's cost, which a loaded machine disturbs far less than
 * the wall time), as medians over rounds and per-round ratios to `raw`:
 *
 * - `raw`: `pg` named prepared statements on a `pg.Pool` (for `update`:
 *   `BEGIN`; `SELECT … FOR UPDATE`; upsert; `COMMIT` on one pooled client);
 * - `keyv`: `@keyv/postgres` (get and set only);
 * - `effect-kv`: this checkout's `PostgresStore`;
 * - `base`: another copy of `src/` when `BASE=<dir>/src` names one (e.g. `git archive main src`
 *   unpacked under `.scratch/base`), so before and after run side by side on the same server.
 *
 * `PROFILE_ONLY=<op>:<subject>` (e.g. `set:effect-kv`) runs that one alone for a while (`PROFILE_BATCHES`
 * batches of 50) and writes a CPU profile of just those calls to `PROFILE_OUT` (default `pgcall.cpuprofile`),
 * for Chrome's DevTools or any `.cpuprofile` reader.
 */
import { PgClient } from "@effect/sql-pg"
import { SqlClient } from "@effect/sql/SqlClient"
import KeyvPostgres from "@keyv/postgres"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import Keyv from "keyv"
import { writeFileSync } from "node:fs"
import { Session } from "node:inspector"
import { cpus, loadavg } from "node:os"
import { resolve } from "node:path"
import { pathToFileURL } from "node:url"
import pg from "pg"
import { startPostgres } from "../dev/postgresServer.js"
import { keyHash } from "../src/core/hash.js"
import { makeStatements } from "../src/core/postgresSql.js"
import { KvStore } from "../src/KvStore.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { buildService } from "./lib/effect.js"
import type { Subject } from "./lib/measure.js"

const POOL_SIZE = 10
const N = 10_000
const BATCH = 50
const value = new Uint8Array(100).fill(7)
const keyOf = (i: number) => `key:${i.toString().padStart(7, "0")}`
const h = (key: string) => keyHash(key).toString()

const server = await startPostgres()
const pool = new pg.Pool({ connectionString: server.url, max: POOL_SIZE })
const client = await buildService(PgClient.layer({ url: Redacted.make(server.url), maxConnections: POOL_SIZE }), SqlClient)
const sqlContext = Layer.succeedContext(client.context)
const keys = Array.from({ length: N }, (_, i) => keyOf(i))

const storeOn = async (module: typeof PostgresStore, table: string) => {
  await pool.query(`DROP TABLE IF EXISTS ${table}`)
  const built = await buildService(module.layer({ table, unlogged: true }).pipe(Layer.provide(sqlContext)), KvStore)
  await pool.query(
    `INSERT INTO ${table} (key_hash, key, value) SELECT h, k, decode(repeat('07', 100), 'hex') FROM unnest($1::bigint[], $2::text[]) AS t(h, k)`,
    [keys.map(h), keys]
  )
  await pool.query(`ANALYZE ${table}`)
  return built
}

const current = await storeOn(PostgresStore, "pgcall_kv")
const basePath = process.env.BASE
/** Under tsx the base copy is TypeScript; compiled with tsc (no `__name` wrappers), JavaScript. */
const ext = import.meta.url.endsWith(".ts") ? "ts" : "js"
const baseModule = basePath === undefined
  ? undefined
  : (await import(pathToFileURL(resolve(basePath, `PostgresStore.${ext}`)).href)) as typeof PostgresStore
// the base copy has its own KvStore tag class: look the service up by the tag of its own module
const base = baseModule === undefined ? undefined : await (async () => {
  const { KvStore: BaseKvStore } = (await import(pathToFileURL(resolve(basePath!, `KvStore.${ext}`)).href)) as { KvStore: typeof KvStore }
  await pool.query(`DROP TABLE IF EXISTS pgcall_base`)
  const built = await buildService(baseModule.layer({ table: "pgcall_base", unlogged: true }).pipe(Layer.provide(sqlContext)), BaseKvStore)
  await pool.query(
    `INSERT INTO pgcall_base (key_hash, key, value) SELECT h, k, decode(repeat('07', 100), 'hex') FROM unnest($1::bigint[], $2::text[]) AS t(h, k)`,
    [keys.map(h), keys]
  )
  await pool.query(`ANALYZE pgcall_base`)
  return built
})()

const RAW = "pgcall_raw"
await pool.query(`DROP TABLE IF EXISTS ${RAW}; CREATE UNLOGGED TABLE ${RAW} (LIKE pgcall_kv INCLUDING ALL)`)
await pool.query(`INSERT INTO ${RAW} SELECT * FROM pgcall_kv`)
await pool.query(`ANALYZE ${RAW}`)
const live = "(expires_at IS NULL OR expires_at > now())"
const rawGet = { name: "pgcall_get", text: `SELECT value FROM ${RAW} WHERE key_hash = $1 AND key = $2 AND ${live}` }
const rawForUpdate = { name: "pgcall_for_update", text: `SELECT value, ${live} AS live FROM ${RAW} WHERE key_hash = $1 AND key = $2 FOR UPDATE` }
const rawSet = {
  name: "pgcall_set",
  text: `INSERT INTO ${RAW} (key_hash, key, value, expires_at) VALUES ($1, $2, $3, NULL)
   ON CONFLICT (key) DO UPDATE SET key_hash = EXCLUDED.key_hash, value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, updated_at = now()`
}
const rawSetIfFree = {
  name: "pgcall_set_if_free",
  text: makeStatements({ schema: "public", table: RAW, unlogged: true }).setIfFree
}
const rawUpdate = async (key: string) => {
  const c = await pool.connect()
  try {
    const hash = h(key)
    await c.query("BEGIN")
    await c.query({ ...rawForUpdate, values: [hash, key] })
    await c.query({ ...rawSet, values: [hash, key, value] })
    await c.query("COMMIT")
  } catch (error) {
    await c.query("ROLLBACK").catch(() => undefined)
    throw error
  } finally {
    c.release()
  }
}

const keyvStore = new KeyvPostgres({ uri: server.url, table: "pgcall_keyv", max: POOL_SIZE })
const keyv = new Keyv({ store: keyvStore })
const buf = Buffer.from(value)
for (let i = 0; i < N; i += 500) await Promise.all(keys.slice(i, i + 500).map((k) => keyv.set(k, buf)))

let cursor = 0
const next = () => {
  const out = keys.slice(cursor, cursor + BATCH)
  cursor = (cursor + BATCH) % N
  return out
}
const sequential = (name: string, op: (key: string) => Promise<unknown>): Subject => ({
  name,
  opsPerBatch: BATCH,
  batch: async () => {
    for (const k of next()) await op(k)
  }
})
const kvSubject = (name: string, op: (key: string) => Effect.Effect<unknown, unknown>): Subject => ({
  name,
  opsPerBatch: BATCH,
  batch: () => Effect.runPromise(Effect.forEach(next(), op, { discard: true }))
})
const stores: Array<readonly [string, KvStore.Service]> = [
  ["effect-kv", current.service],
  ...(base === undefined ? [] : [["base", base.service] as const])
]

const ops: Record<string, Array<Subject>> = {
  get: [
    sequential("raw", async (k) => {
      if ((await pool.query(rawGet, [h(k), k])).rows.length !== 1) throw new Error(`raw get: missing ${k}`)
    }),
    sequential("keyv", async (k) => {
      if ((await keyv.get(k)) === undefined) throw new Error(`keyv get: missing ${k}`)
    }),
    ...stores.map(([name, kv]) => kvSubject(name, (k) => kv.get(k)))
  ],
  set: [
    sequential("raw", (k) => pool.query(rawSet, [h(k), k, value])),
    sequential("keyv", (k) => keyv.set(k, buf)),
    // effect-kv's own statement for a lone set, sent raw: what the server's side of it costs
    sequential("raw setIfFree", (k) => pool.query(rawSetIfFree, [h(k), k, value, null])),
    ...stores.map(([name, kv]) => kvSubject(name, (k) => kv.set(k, value)))
  ],
  update: [
    sequential("raw", rawUpdate),
    ...stores.map(([name, kv]) => kvSubject(name, (k) => kv.update(k, () => Effect.succeed(value))))
  ]
}

const close = async () => {
  // idle clients of Keyv's pool see the server stop: nothing to report by then
  process.on("uncaughtException", (error) => console.error(`after the run: ${error.message}`))
  await base?.close()
  await current.close()
  await client.close()
  await keyv.disconnect()
  await pool.end()
  await server.stop()
}

const only = process.env.PROFILE_ONLY
if (only !== undefined) {
  const [op, name] = only.split(":")
  const subject = ops[op!]?.find((s) => s.name === name)
  if (subject === undefined) throw new Error(`PROFILE_ONLY: no subject ${only}`)
  for (let i = 0; i < 20; i++) await subject.batch() // warm the JIT first: the profile is of the steady state
  const session = new Session()
  session.connect()
  const post = (method: string, params?: object) =>
    new Promise<any>((done, fail) => session.post(method, params, (error, result) => (error ? fail(error) : done(result))))
  await post("Profiler.enable")
  await post("Profiler.setSamplingInterval", { interval: 100 })
  await post("Profiler.start")
  for (let i = 0; i < Number(process.env.PROFILE_BATCHES ?? 200); i++) await subject.batch()
  const { profile } = await post("Profiler.stop")
  writeFileSync(process.env.PROFILE_OUT ?? "pgcall.cpuprofile", JSON.stringify(profile))
  session.disconnect()
  await close()
  process.exit(0)
}

const rounds = Number(process.env.ROUNDS ?? 9)
const batchesPerTurn = Number(process.env.BATCHES ?? 8)
const chosen = (process.env.OPS ?? "get,set,update").split(",")
const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
const range = (xs: ReadonlyArray<number>) => `${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)}`
console.log(`node ${process.version}, ${cpus().length} cpus, load average at start ${loadavg().map((x) => x.toFixed(2)).join(" ")}`)
console.log(
  `per turn ${batchesPerTurn} batches of ${BATCH} sequential calls per subject, subjects rotated each round; ` +
    "wall and this process's CPU time (user + system) per call"
)
for (const op of chosen) {
  const subjects = ops[op]!
  for (let i = 0; i < 3; i++) for (const s of subjects) await s.batch() // warm the JIT
  const wall = new Map(subjects.map((s) => [s.name, [] as Array<number>]))
  const cpu = new Map(subjects.map((s) => [s.name, [] as Array<number>]))
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < subjects.length; i++) {
      const s = subjects[(i + round) % subjects.length]!
      const cpuBefore = process.cpuUsage()
      const started = performance.now()
      for (let b = 0; b < batchesPerTurn; b++) await s.batch()
      const used = process.cpuUsage(cpuBefore)
      const calls = batchesPerTurn * s.opsPerBatch
      wall.get(s.name)!.push(((performance.now() - started) * 1000) / calls)
      cpu.get(s.name)!.push((used.user + used.system) / calls)
    }
  }
  console.log(`\n${op}, sequential, ${rounds} rounds (µs per call: median [min–max of the rounds]; ratios: median of per-round ratios)`)
  const perRound = (name: string, base: string, series: Map<string, Array<number>>) =>
    median(series.get(name)!.map((x, i) => x / series.get(base)![i]!))
  for (const s of subjects) {
    const w = wall.get(s.name)!
    const c = cpu.get(s.name)!
    const vsKeyv = wall.has("keyv") ? `  wall ${perRound(s.name, "keyv", wall).toFixed(2)}× keyv` : ""
    const vsBase = wall.has("base") && s.name !== "base"
      ? `  wall ${perRound(s.name, "base", wall).toFixed(2)}× base  cpu ${perRound(s.name, "base", cpu).toFixed(2)}× base`
      : ""
    console.log(
      `  ${s.name.padEnd(10)} wall ${median(w).toFixed(1).padStart(7)} [${range(w)}]  cpu ${median(c).toFixed(1).padStart(6)} [${range(c)}]` +
        `  wall ${perRound(s.name, "raw", wall).toFixed(2)}× raw  cpu ${perRound(s.name, "raw", cpu).toFixed(2)}× raw${vsKeyv}${vsBase}`
    )
  }
}
// Call by call: one call of each subject in turn (order rotated), each timed on its own, so a burst of
// load from other processes falls on all subjects alike. An effect-kv call here also pays one
// `Effect.runPromise` (a fresh fiber), which the batches above spread over 50 calls: compare
// effect-kv with base in this table, and with raw in the one above.
const callsPerSubject = Number(process.env.PAIRED_CALLS ?? 0)
if (callsPerSubject > 0) {
  console.log(`\ncall by call, ${callsPerSubject} calls per subject (µs per call: median, mean; ratios of the means)`)
  const single: Record<string, Array<readonly [string, (key: string) => Promise<unknown>]>> = {
    get: stores.map(([name, kv]) => [name, (k: string) => Effect.runPromise(kv.get(k))] as const),
    set: stores.map(([name, kv]) => [name, (k: string) => Effect.runPromise(kv.set(k, value))] as const),
    update: stores.map(([name, kv]) => [name, (k: string) => Effect.runPromise(kv.update(k, () => Effect.succeed(value)))] as const)
  }
  for (const op of chosen) {
    const subjects = single[op]!
    const times = new Map(subjects.map(([name]) => [name, [] as Array<number>]))
    for (let i = 0; i < callsPerSubject + 200; i++) {
      const key = keys[i % N]!
      for (let j = 0; j < subjects.length; j++) {
        const [name, call] = subjects[(i + j) % subjects.length]!
        const started = performance.now()
        await call(key)
        if (i >= 200) times.get(name)!.push((performance.now() - started) * 1000) // the first 200: warm-up
      }
    }
    const mean = (xs: ReadonlyArray<number>) => xs.reduce((a, b) => a + b, 0) / xs.length
    const first = subjects[0]![0]
    for (const [name] of subjects) {
      const t = times.get(name)!
      console.log(
        `  ${op} ${name.padEnd(10)} median ${median(t).toFixed(1).padStart(7)}  mean ${mean(t).toFixed(1).padStart(7)}` +
          (name === first ? "" : `  ${first} / ${name}: means ${(mean(times.get(first)!) / mean(t)).toFixed(2)}, medians ${(median(times.get(first)!) / median(t)).toFixed(2)}`)
      )
    }
  }
}
console.log(`\nload average at end ${loadavg().map((x) => x.toFixed(2)).join(" ")}`)
await close()
