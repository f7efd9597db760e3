/**
 * Where a PostgreSQL `update` spends its time beyond a hand-written
 * transaction: `npx tsx bench/updateProfile.ts`. Sequential updates of a
 * 10k-key working set, side by side in one process (rotated order, several
 * rounds, median), for:
 *
 * - `raw`: `pg` on a `pg.Pool`, `BEGIN`; named `SELECT … FOR UPDATE`; named upsert; `COMMIT`
 * - `raw + advisory`: the same with effect-kv's `BEGIN; SELECT pg_advisory_xact_lock(h)` first
 *   round trip (what the key's lock costs the server)
 * - `sql.withTransaction`: `@effect/sql-pg`'s own transaction around the same two named
 *   statements (what Effect's machinery costs, without effect-kv)
 * - `effect-kv`: `KvStore.update`
 * - `raw, effect-kv's 2 trips`: what merging round trips would give: `BEGIN`, the lock and the read in
 *   one simple query, the write (parameters inlined) and `COMMIT` in another. Measured slower than the
 *   four named trips here: the server parses and plans the inlined texts on every call.
 *
 * `PROFILE_RESERVE=1` also times reserving and releasing a connection four ways (effect-kv's
 * daemon-fiber reservation before issue 18, its root-fiber one since, a plain `sql.reserve`,
 * `pg.Pool#connect`); `PROFILE_ONLY=<subject>`
 * runs one subject alone (for `node --cpu-prof`).
 *
 * and the round trips each makes (queries sent by node-postgres clients, counted at `pg.Client#query`).
 */
import { PgClient } from "@effect/sql-pg"
import { SqlClient } from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import type { CloseableScope } from "effect/Scope"
import pg from "pg"
import { startPostgres } from "../dev/postgresServer.js"
import { keyHash } from "../src/core/hash.js"
import { KvStore } from "../src/KvStore.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { buildService } from "./lib/effect.js"
import { compare, type Subject } from "./lib/measure.js"

const POOL_SIZE = 10
const TABLE = "profile_kv"
const N = 10_000
const BATCH = 100
const value = new Uint8Array(100).fill(7)
const keyOf = (i: number) => `key:${i.toString().padStart(7, "0")}`
const h = (key: string) => keyHash(key).toString()

let queries = 0
const clientQuery = pg.Client.prototype.query
pg.Client.prototype.query = function(this: pg.Client, ...args: Array<unknown>) {
  queries++
  return (clientQuery as (...a: Array<unknown>) => unknown).apply(this, args)
} as typeof pg.Client.prototype.query

const server = await startPostgres()
const pool = new pg.Pool({ connectionString: server.url, max: POOL_SIZE })
const client = await buildService(PgClient.layer({ url: Redacted.make(server.url), maxConnections: POOL_SIZE }), SqlClient)
const sql = client.service
await pool.query(`DROP TABLE IF EXISTS ${TABLE}`)
const built = await buildService(PostgresStore.layer({ table: TABLE, unlogged: true }).pipe(Layer.provide(Layer.succeedContext(client.context))), KvStore)
const kv = built.service
const keys = Array.from({ length: N }, (_, i) => keyOf(i))
await pool.query(
  `INSERT INTO ${TABLE} (key_hash, key, value) SELECT h, k, decode(repeat('07', 100), 'hex') FROM unnest($1::bigint[], $2::text[]) AS t(h, k)`,
  [keys.map(h), keys]
)
const live = "(expires_at IS NULL OR expires_at > now())"
const forUpdate = { name: "p_for_update", text: `SELECT value, ${live} AS live FROM ${TABLE} WHERE key_hash = $1 AND key = $2 FOR UPDATE` }
const upsert = {
  name: "p_upsert",
  text: `INSERT INTO ${TABLE} (key_hash, key, value, expires_at) VALUES ($1, $2, $3, NULL)
   ON CONFLICT (key) DO UPDATE SET key_hash = EXCLUDED.key_hash, value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, updated_at = now()`
}

const rawUpdate = async (key: string, advisory: boolean) => {
  const c = await pool.connect()
  try {
    const hash = h(key)
    await c.query(advisory ? `BEGIN; SELECT pg_advisory_xact_lock(${hash})` : "BEGIN")
    await c.query({ ...forUpdate, values: [hash, key] })
    await c.query({ ...upsert, values: [hash, key, value] })
    await c.query("COMMIT")
  } finally {
    c.release()
  }
}
/** A statement's `$n` parameters written as literals: the simple protocol carries several statements but no parameters. */
const inlineParams = (text: string, params: ReadonlyArray<string | Uint8Array | null>) =>
  text.replace(/\$(\d+)/g, (_, n: string) => {
    const p = params[Number(n) - 1]
    return p === null || p === undefined
      ? "NULL"
      : typeof p === "string"
      ? `E'${p.replace(/\\/g, "\\\\").replace(/'/g, "''")}'`
      : `decode('${Buffer.from(p).toString("hex")}', 'hex')`
  })
const { makeStatements } = await import("../src/core/postgresSql.js")
const st = makeStatements({ schema: "public", table: TABLE, unlogged: true })
const rawTwoTrips = async (key: string) => {
  const c = await pool.connect()
  try {
    const hash = h(key)
    await c.query(`${st.beginAndLock(BigInt(hash))}; ${inlineParams(st.readForUpdate, [key])}`)
    await c.query(`${inlineParams(st.upsert, [hash, key, value, null])}; COMMIT`)
  } finally {
    c.release()
  }
}
const effectTransaction = (key: string) =>
  sql.withTransaction(Effect.gen(function*() {
    const hash = h(key)
    yield* sql.unsafe(forUpdate.text, [hash, key])
    yield* sql.unsafe(upsert.text, [hash, key, value])
  }))

let cursor = 0
const next = () => {
  const out = keys.slice(cursor, cursor + BATCH)
  cursor = (cursor + BATCH) % N
  return out
}
const subjects: Array<Subject> = [
  { name: "raw", opsPerBatch: BATCH, batch: async () => { for (const k of next()) await rawUpdate(k, false) } },
  { name: "raw + advisory", opsPerBatch: BATCH, batch: async () => { for (const k of next()) await rawUpdate(k, true) } },
  { name: "raw, effect-kv's 2 trips", opsPerBatch: BATCH, batch: async () => { for (const k of next()) await rawTwoTrips(k) } },
  { name: "sql.withTransaction", opsPerBatch: BATCH, batch: () => Effect.runPromise(Effect.forEach(next(), effectTransaction, { discard: true })) },
  { name: "effect-kv", opsPerBatch: BATCH, batch: () => Effect.runPromise(Effect.forEach(next(), (k) => kv.update(k, () => Effect.succeed(value)), { discard: true })) },
  ...(process.env.PROFILE_GETS === undefined ? [] : [
    { name: "raw get", opsPerBatch: BATCH, batch: async () => { for (const k of next()) await pool.query({ name: "p_get", text: `SELECT value FROM ${TABLE} WHERE key_hash = $1 AND key = $2`, values: [h(k), k] }) } },
    { name: "effect-kv get", opsPerBatch: BATCH, batch: () => Effect.runPromise(Effect.forEach(next(), (k) => kv.get(k), { discard: true })) },
    { name: "sql.reserve + BEGIN/COMMIT", opsPerBatch: BATCH, batch: () => Effect.runPromise(Effect.forEach(next(), () => Effect.scoped(Effect.flatMap(sql.reserve, (c) => Effect.zipRight(c.executeUnprepared("BEGIN", [], undefined), c.executeUnprepared("COMMIT", [], undefined)))), { discard: true })) },
    { name: "raw BEGIN/COMMIT", opsPerBatch: BATCH, batch: async () => { for (const _ of next()) { const c = await pool.connect(); await c.query("BEGIN"); await c.query("COMMIT"); c.release() } } }
  ] satisfies Array<Subject>)
]
// PROFILE_ONLY=<subject>: run that subject alone for a while (under `node --cpu-prof`), nothing else
if (process.env.PROFILE_RESERVE !== undefined) {
  const { Exit, Fiber, Scope } = await import("effect")
  const daemonReserve = Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Scope.make(), (scope) =>
      Effect.flatMap(Effect.forkDaemon(Scope.extend(sql.reserve, scope)), (acquiring) =>
        restore(Fiber.join(acquiring)).pipe(
          Effect.map((conn) => [conn, scope] as const),
          Effect.onExit((exit) =>
            Exit.isSuccess(exit) ? Effect.void : Effect.forkDaemon(Effect.zipRight(Fiber.await(acquiring), Scope.close(scope, Exit.void)))
          )
        ))))
  // connection.ts's reservation since issue 18: a root fiber watched through an observer (no FiberRef fork/join)
  const rootReserve = Effect.suspend(() => {
    const acquiring = Effect.runFork(Effect.flatMap(Scope.make(), (scope) => Effect.map(Scope.extend(sql.reserve, scope), (conn) => [conn, scope] as const)))
    return Effect.async<readonly [unknown, CloseableScope], unknown>((resume) => {
      const exit = acquiring.unsafePoll()
      if (exit !== null) resume(exit)
      else acquiring.addObserver(resume)
    })
  })
  const root = Effect.flatMap(rootReserve, ([, scope]) => Scope.close(scope, Exit.void))
  const daemon = Effect.flatMap(daemonReserve, ([, scope]) => Scope.close(scope, Exit.void))
  const plain = Effect.scoped(Effect.asVoid(sql.reserve))
  const rawConnect = () => pool.connect().then((c) => c.release())
  const sums = [0, 0, 0, 0]
  for (let i = 0; i < 20_000; i++) {
    const t0 = performance.now()
    await Effect.runPromise(daemon)
    const t1 = performance.now()
    await Effect.runPromise(root)
    const t2 = performance.now()
    await Effect.runPromise(plain)
    const t3 = performance.now()
    await rawConnect()
    const t4 = performance.now()
    if (i < 2000) continue
    sums[0] += t1 - t0
    sums[1] += t2 - t1
    sums[2] += t3 - t2
    sums[3] += t4 - t3
  }
  console.log(
    "reserve+release µs: daemon + join (before issue 18), root fiber (now), plain sql.reserve, pg pool.connect:",
    sums.map((x) => (x * 1000 / 18_000).toFixed(1)).join(" / ")
  )
}
const only = subjects.find((s) => s.name === process.env.PROFILE_ONLY)
if (only !== undefined) {
  for (let i = 0; i < 60; i++) await only.batch()
  await built.close()
  await client.close()
  await pool.end()
  await server.stop()
  process.exit(0)
}
// round trips and this process's CPU time per update, each subject alone
for (const s of subjects) {
  await s.batch()
  const before = queries
  const cpu = process.cpuUsage()
  const started = performance.now()
  for (let i = 0; i < 5; i++) await s.batch()
  const used = process.cpuUsage(cpu)
  const ops = 5 * BATCH
  console.log(`${s.name}: ${((queries - before) / ops).toFixed(2)} queries, ${((used.user + used.system) / ops).toFixed(0)} µs CPU, ${(((performance.now() - started) * 1000) / ops).toFixed(0)} µs wall per call`)
}
for (let i = 0; i < 3; i++) for (const s of subjects) await s.batch() // warm
const rounds = Number(process.env.ROUNDS ?? 7)
const result = await compare(subjects, { rounds, time: 300, iterations: 3, warmupTime: 50, warmupIterations: 1 })
const base = result.raw!.usPerOp
for (const s of subjects) console.log(`${s.name.padEnd(22)} ${result[s.name]!.usPerOp.toFixed(1).padStart(7)} µs  ${(result[s.name]!.usPerOp / base).toFixed(2)}×`)
await built.close()
await client.close()
await pool.end()
await server.stop()
