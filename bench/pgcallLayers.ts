/**
 * Where a sequential PostgreSQL `set` and `update` spend their time, layer by
 * layer, on one server: `npx tsx bench/pgcallLayers.ts` (or after `tsc`, which
 * adds no `__name` wrappers). Each row adds one layer to the row above it:
 *
 * - `raw …`: `pg` named statements on a `pg.Pool` (the plain upsert, and
 *   effect-kv's own statements sent raw: what the server's side costs);
 * - `onPool`: the same statement through `@effect/sql-pg`'s pool-level connection
 *   (connection.ts), `run`: plus the transaction lookup;
 * - `driver.set` / `driver.modify`: the PostgreSQL driver (coalescer, error mapping,
 *   the transaction and its reservation); `kv.*`: plus the front.
 *
 * Subjects run interleaved for `ROUNDS` rounds of 2000 sequential calls; medians of
 * wall and of this process's CPU time per call. `COUNT_STEPS=1` instead prints the
 * fiber-runtime steps each subject takes per call (instructions counted on
 * `FiberRuntime`'s prototype).
 */
import { PgClient } from "@effect/sql-pg"
import { SqlClient } from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import pg from "pg"
import { startPostgres } from "../dev/postgresServer.js"
import { keyHash } from "../src/core/hash.js"
import { makeStatements } from "../src/core/postgresSql.js"
import { makeConnections } from "../src/internal/postgres/connection.js"
import { makeDriver } from "../src/internal/postgres/driver.js"
import { KvStore } from "../src/KvStore.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { buildService } from "./lib/effect.js"

const TABLE = "layers_kv"
const N = 2000
const server = await startPostgres()
const pool = new pg.Pool({ connectionString: server.url, max: 10 })
const client = await buildService(PgClient.layer({ url: Redacted.make(server.url), maxConnections: 10 }), SqlClient)
await pool.query(`DROP TABLE IF EXISTS ${TABLE}`)
const store = await buildService(
  PostgresStore.layer({ table: TABLE, unlogged: true }).pipe(Layer.provide(Layer.succeedContext(client.context))),
  KvStore
)
const kv = store.service
const st = makeStatements({ schema: "public", table: TABLE, unlogged: true })
const connections = makeConnections(client.service)
const driver = makeDriver(client.service, st)
const keys = Array.from({ length: N }, (_, i) => `key:${i}`)
const value = new Uint8Array(100).fill(7)
await Effect.runPromise(Effect.forEach(keys, (k) => kv.set(k, value), { discard: true }))
const h = (k: string) => keyHash(k).toString()
const plainUpsert = `INSERT INTO ${TABLE} (key_hash, key, value, expires_at) VALUES ($1, $2, $3, NULL) ` +
  "ON CONFLICT (key) DO UPDATE SET key_hash = EXCLUDED.key_hash, value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, updated_at = now()"
const each = (f: (key: string) => Effect.Effect<unknown, unknown>) => () =>
  Effect.runPromise(Effect.forEach(keys, f, { discard: true }))
const rawUpdate = (begin: (key: string) => string) => async () => {
  for (const k of keys) {
    const c = await pool.connect()
    await c.query(begin(k))
    await c.query({ name: "l_fu", text: st.readForUpdate }, [k])
    await c.query({ name: "l_up", text: st.upsert }, [h(k), k, value, null])
    await c.query("COMMIT")
    c.release()
  }
}
const subjects: Record<string, () => Promise<unknown>> = {
  "raw plain upsert": async () => {
    for (const k of keys) await pool.query({ name: "l_plain", text: plainUpsert }, [h(k), k, value])
  },
  "raw setIfFree": async () => {
    for (const k of keys) await pool.query({ name: "l_setif", text: st.setIfFree }, [h(k), k, value, null])
  },
  "onPool setIfFree": each((k) => connections.onPoolCounted(st.setIfFree, [h(k), k, value, null])),
  "run setIfFree": each((k) => connections.run(st.setIfFree, [h(k), k, value, null])),
  "driver.set": each((k) => driver.set(k, value, undefined)),
  "kv.set": each((k) => kv.set(k, value)),
  "raw update": rawUpdate(() => "BEGIN"),
  "raw update + lock": rawUpdate((k) => st.beginAndLock(BigInt(h(k)))),
  "driver.modify": each((k) => driver.modify(k, () => Effect.succeed([value, { _tag: "Put", value, ttl: undefined }] as const))),
  "kv.update": each((k) => kv.update(k, () => Effect.succeed(value)))
}
const names = Object.keys(subjects).filter((name) => process.env.ONLY === undefined || name.includes(process.env.ONLY))
for (const name of names) await subjects[name]!()

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!
if (process.env.COUNT_STEPS !== undefined) {
  // every instruction the fiber runtime evaluates goes through one of these methods
  // not exported by the package: the module next to the ESM entry point that this process loaded
  const runtimeUrl = import.meta.resolve("effect").replace(/index\.js$/, "internal/fiberRuntime.js")
  const { FiberRuntime } = (await import(runtimeUrl)) as { FiberRuntime: { prototype: Record<string, unknown> } }
  let steps = 0
  for (const [key, method] of Object.entries(Object.getOwnPropertyDescriptors(FiberRuntime.prototype))) {
    if (typeof method.value !== "function" || !/^[A-Z]/.test(key)) continue
    const original = method.value as (this: unknown, ...args: Array<unknown>) => unknown
    FiberRuntime.prototype[key] = function(this: unknown, ...args: Array<unknown>) {
      steps++
      return original.apply(this, args)
    }
  }
  for (const name of names) {
    steps = 0
    await subjects[name]!()
    console.log(`${name.padEnd(18)} ${(steps / N).toFixed(0).padStart(4)} fiber steps per call`)
  }
} else {
  const wall = new Map(names.map((name) => [name, [] as Array<number>]))
  const cpu = new Map(names.map((name) => [name, [] as Array<number>]))
  for (let round = 0; round < Number(process.env.ROUNDS ?? 7); round++) {
    for (const name of names) {
      const before = process.cpuUsage()
      const started = performance.now()
      await subjects[name]!()
      const used = process.cpuUsage(before)
      wall.get(name)!.push(((performance.now() - started) * 1000) / N)
      cpu.get(name)!.push((used.user + used.system) / N)
    }
  }
  for (const name of names) {
    console.log(
      `${name.padEnd(18)} wall ${median(wall.get(name)!).toFixed(1).padStart(6)} µs  cpu ${median(cpu.get(name)!).toFixed(1).padStart(6)} µs`
    )
  }
}
await store.close()
await client.close()
await pool.end()
await server.stop()
