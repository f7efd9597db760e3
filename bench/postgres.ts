/**
 * The PostgreSQL suite: effect-kv's PostgresStore (through `@effect/sql-pg`)
 * against hand-written named prepared statements on `pg`, the driver under
 * `@effect/sql-pg`, on the same server, the same table and the same pool size;
 * plus `@keyv/postgres` as a peer.
 *
 * Targets (issue 11, request batching): at 50 fibers `get` and `set` serve at
 * least twice the throughput of a raw `pg.Pool` running one statement per
 * call (ratio ≤ 0.5), since concurrent calls coalesce into one statement per
 * free slot; sequentially, where nothing can coalesce, at most 1.2× a raw
 * named statement; and ahead of `@keyv/postgres`.
 */
import { PgClient } from "@effect/sql-pg"
import { SqlClient } from "@effect/sql/SqlClient"
import KeyvPostgres from "@keyv/postgres"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import Keyv from "keyv"
import pg from "pg"
import { keyHash } from "../src/core/hash.js"
import { KvStore } from "../src/KvStore.js"
import { coalescedWriteRows, uncoalescedStore } from "./coalescedWrites.js"
import { buildService, importOptional } from "./lib/effect.js"
import { compare, runConcurrently, type Subject } from "./lib/measure.js"
import { ratioRow, type Row } from "./lib/report.js"

type PostgresStoreModule = typeof import("../src/PostgresStore.js")

/** The same pool size for `pg.Pool`, `PgClient` and Keyv's pool. */
export const POOL_SIZE = 10
const VALUE_BYTES = 100
const WORKING_SET = 10_000
const CONCURRENCY = [1, 10, 50] as const
const batchSize = (c: number) => (c === 1 ? 50 : c === 10 ? 200 : 500)

/** Sized so the whole suite stays within about 5 minutes on a busy 2-core machine. */
const PG_TIMING = { rounds: 3, time: 150, iterations: 3, warmupTime: 50, warmupIterations: 1 } as const

const log = (msg: string) => console.error(`[postgres] ${msg}`)
const keyOf = (i: number) => `key:${i.toString().padStart(7, "0")}`
const value = new Uint8Array(VALUE_BYTES).fill(7)

const TABLE = "bench_kv"
const TABLE_UNLOGGED = "bench_kv_unlogged"
const KEYS_TABLES = { "10k": { table: "bench_keys_10k", rows: 10_000 }, "1M": { table: "bench_keys_1m", rows: 1_000_000 } }

/**
 * A `pg.Pool` of the benchmark's size. An idle client whose connection the server
 * ends (when the server stops) emits `error` on the pool; unhandled, it would crash
 * the run after the results are in.
 */
const rawPool = (url: string): pg.Pool =>
  new pg.Pool({ connectionString: url, max: POOL_SIZE }).on("error", (error) => log(`idle pg client: ${error.message}`))

/** Hand-written statements for effect-kv's table, named so each connection parses and plans them once. */
const rawStatements = async (pool: pg.Pool, table: string) => {
  // look rows up by the table's own unique key, and write the conflict target the store's table has
  const unique = await pool.query<{ cols: Array<string> }>(
    `SELECT array_agg(a.attname::text ORDER BY a.attnum) AS cols
       FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
      WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indpred IS NULL
      GROUP BY i.indexrelid, i.indisprimary ORDER BY i.indisprimary DESC LIMIT 1`,
    [table]
  )
  const cols = unique.rows[0]?.cols
  if (cols === undefined) throw new Error(`no unique index on ${table}`)
  const conflict = cols.join(", ")
  // $1 is always key_hash, $2 the key; a statement names only the parameters it uses
  const byKey = cols.includes("key_hash") ? "key_hash = $1 AND key = $2" : "key = $2"
  const params = cols.includes("key_hash")
    ? (hash: string, key: string) => [hash, key]
    : (_hash: string, key: string) => [key]
  const where = cols.includes("key_hash") ? byKey : "key = $1"
  const live = "(expires_at IS NULL OR expires_at > now())"
  const q = (name: string, text: string) => ({ name: `${table}_${name}`, text })
  return {
    conflict,
    params,
    get: q("get", `SELECT value FROM ${table} WHERE ${where} AND ${live}`),
    getForUpdate: q("get_for_update", `SELECT value, ${live} AS live FROM ${table} WHERE ${where} FOR UPDATE`),
    set: q(
      "set",
      `INSERT INTO ${table} (key_hash, key, value, expires_at) VALUES ($1, $2, $3, NULL)
       ON CONFLICT (${conflict}) DO UPDATE SET key_hash = EXCLUDED.key_hash, value = EXCLUDED.value,
         expires_at = EXCLUDED.expires_at, updated_at = now()`
    ),
    delete: q("delete", `DELETE FROM ${table} WHERE ${where} RETURNING ${live} AS live`),
    // the same shape as effect-kv's increment, without its advisory lock and its checks
    increment: q(
      "increment",
      `INSERT INTO ${table} AS cur (key_hash, key, value, expires_at) VALUES ($1, $2, '1', NULL)
       ON CONFLICT (${conflict}) DO UPDATE SET value = convert_to((encode(cur.value, 'escape')::bigint + 1)::text, 'UTF8'),
         updated_at = now() RETURNING encode(value, 'escape') AS n`
    ),
    keys: q(
      "keys",
      `SELECT key FROM ${table} WHERE key COLLATE "C" >= $1 AND key COLLATE "C" < $2 AND ${live} ORDER BY key COLLATE "C"`
    )
  }
}
type Statements = Awaited<ReturnType<typeof rawStatements>>

const h = (key: string) => keyHash(key).toString()

const raw = (pool: pg.Pool, s: Statements) => ({
  get: async (key: string) => {
    const r = await pool.query(s.get, s.params(h(key), key))
    if (r.rows.length !== 1) throw new Error(`raw get: missing ${key}`)
    return r.rows[0].value as Buffer
  },
  set: (key: string) => pool.query(s.set, [h(key), key, value]),
  delete: async (key: string) => (await pool.query(s.delete, s.params(h(key), key))).rows[0]?.live === true,
  increment: async (key: string) => Number((await pool.query(s.increment, [h(key), key])).rows[0].n),
  update: async (key: string, f: (current: Buffer | undefined) => Uint8Array = () => value) => {
    const client = await pool.connect()
    try {
      await client.query("BEGIN")
      const hash = h(key)
      const current = await client.query(s.getForUpdate, s.params(hash, key))
      const row = current.rows[0]
      const next = f(row !== undefined && row.live ? row.value : undefined)
      await client.query(s.set, [hash, key, next])
      await client.query("COMMIT")
      return next
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined)
      throw error
    } finally {
      client.release()
    }
  },
  keys: async (prefix: string) => {
    const upper = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)
    return (await pool.query(s.keys, [prefix, upper])).rows.map((r) => r.key as string)
  }
})

/** Inserts live entries with 100-byte values in one statement per chunk. */
const insertKeys = async (pool: pg.Pool, table: string, conflict: string, keys: ReadonlyArray<string>) => {
  const CHUNK = 50_000
  for (let i = 0; i < keys.length; i += CHUNK) {
    const chunk = keys.slice(i, i + CHUNK)
    await pool.query(
      `INSERT INTO ${table} (key_hash, key, value)
       SELECT h, k, decode(repeat('07', ${VALUE_BYTES}), 'hex') FROM unnest($1::bigint[], $2::text[]) AS t(h, k)
       ON CONFLICT (${conflict}) DO UPDATE SET value = EXCLUDED.value, expires_at = NULL`,
      [chunk.map(h), chunk]
    )
  }
}

const counterValue = (bytes: Uint8Array | Buffer | undefined): number =>
  bytes === undefined ? 0 : Number(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"))
const counterBytes = (n: number) => new TextEncoder().encode(String(n))

export const runPostgres = async (url: string): Promise<Array<Row>> => {
  const rows: Array<Row> = []
  const PostgresStore = await importOptional<PostgresStoreModule>(new URL("../src/PostgresStore.ts", import.meta.url).href)
  if (PostgresStore === undefined) throw new Error("src/PostgresStore.ts is not there yet")

  const pool = rawPool(url)
  const pgLayer = PgClient.layer({ url: Redacted.make(url), maxConnections: POOL_SIZE })
  const client = await buildService(pgLayer, SqlClient)
  const sqlContext = Layer.succeedContext(client.context)
  const closers: Array<() => Promise<void>> = [client.close]
  const store = async (table: string, unlogged = false) => {
    for (const t of [table]) await pool.query(`DROP TABLE IF EXISTS ${t}`)
    const built = await buildService(PostgresStore.layer({ table, unlogged }).pipe(Layer.provide(sqlContext)), KvStore)
    closers.push(built.close)
    return built.service
  }

  try {
    const server = await pool.query<{ version: string; fsync: string; sync: string }>(
      `SELECT version() AS version, current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS sync`
    )
    const serverInfo = server.rows[0]!
    log(`${serverInfo.version.split(",")[0]}; fsync=${serverInfo.fsync}, synchronous_commit=${serverInfo.sync}`)

    const kv = await store(TABLE)
    const kvUnlogged = await store(TABLE_UNLOGGED, true)
    const uncoalescedBuilt = await buildService(uncoalescedStore(TABLE).pipe(Layer.provide(sqlContext)), KvStore)
    closers.push(uncoalescedBuilt.close)
    const kvUncoalesced = uncoalescedBuilt.service
    const s = await rawStatements(pool, TABLE)
    const sUnlogged = await rawStatements(pool, TABLE_UNLOGGED)
    const r = raw(pool, s)
    const rUnlogged = raw(pool, sUnlogged)
    const working = Array.from({ length: WORKING_SET }, (_, i) => keyOf(i))
    await insertKeys(pool, TABLE, s.conflict, working)
    await insertKeys(pool, TABLE_UNLOGGED, sUnlogged.conflict, working)
    await pool.query(`ANALYZE ${TABLE}; ANALYZE ${TABLE_UNLOGGED}`)

    // every batch walks the next stretch of the working set, so consecutive batches touch different keys
    let cursor = 0
    const nextKeys = (n: number) => {
      const out = new Array<string>(n)
      for (let i = 0; i < n; i++) out[i] = working[(cursor + i) % WORKING_SET]!
      cursor = (cursor + n) % WORKING_SET
      return out
    }
    const kvSubject = (name: string, c: number, op: (key: string) => Effect.Effect<unknown, unknown>): Subject => ({
      name,
      opsPerBatch: batchSize(c),
      batch: () => Effect.runPromise(Effect.forEach(nextKeys(batchSize(c)), op, { concurrency: c, discard: true }))
    })
    const rawSubject = (name: string, c: number, op: (key: string) => Promise<unknown>): Subject => ({
      name,
      opsPerBatch: batchSize(c),
      batch: () => {
        const keys = nextKeys(batchSize(c))
        return runConcurrently(keys.length, c, (i) => op(keys[i]!))
      }
    })
    const label = (c: number) => (c === 1 ? "sequential" : `${c} fibers`)
    /** get and set: 1.2× sequentially, half the raw time per call at 50 fibers (batching), as before at 10. */
    const getSetTarget = (c: number) => (c === 1 ? 1.2 : c === 50 ? 0.5 : 1.15)

    // Warm the JIT on both sides before the first timed comparison: effect-kv runs far more JavaScript than
    // a raw query, and the first rows (get, sequential) otherwise measured it cold (~2× the same get later on)
    log("warm-up")
    for (const c of [1, 10, 50]) {
      await rawSubject("raw", c, r.get).batch()
      await rawSubject("raw", c, r.set).batch()
      for (let i = 0; i < 4; i++) {
        await kvSubject("effect-kv", c, (k) => kv.get(k)).batch()
        await kvSubject("effect-kv", c, (k) => kv.set(k, value)).batch()
      }
    }

    for (const c of CONCURRENCY) {
      log(`get/set/update/delete, ${label(c)}`)
      const got = await compare([
        rawSubject("raw", c, r.get),
        kvSubject("effect-kv", c, (k) => kv.get(k))
      ], PG_TIMING)
      rows.push(ratioRow("postgres", `get, ${label(c)}`, got["effect-kv"]!.usPerOp, "pg named prepared SELECT", got.raw!.usPerOp, { target: getSetTarget(c) }))

      const set = await compare([
        rawSubject("raw", c, r.set),
        kvSubject("effect-kv", c, (k) => kv.set(k, value))
      ], PG_TIMING)
      rows.push(ratioRow("postgres", `set, ${label(c)}`, set["effect-kv"]!.usPerOp, "pg named prepared upsert", set.raw!.usPerOp, { target: getSetTarget(c) }))

      const update = await compare([
        rawSubject("raw", c, (k) => r.update(k)),
        kvSubject("effect-kv", c, (k) => kv.update(k, () => Effect.succeed(value)))
      ], PG_TIMING)
      rows.push(ratioRow("postgres", `update, ${label(c)}`, update["effect-kv"]!.usPerOp, "pg BEGIN/SELECT FOR UPDATE/upsert/COMMIT", update.raw!.usPerOp, { target: 1.35 }))

      // increment: counters under their own keys (the working set's values are not decimal text)
      const incremented = await compare([
        rawSubject("raw", c, (k) => r.increment(`ctr:${k}`)),
        kvSubject("effect-kv", c, (k) => kv.increment(`ctr:${k}`))
      ], PG_TIMING)
      rows.push(ratioRow("postgres", `increment, ${label(c)}`, incremented["effect-kv"]!.usPerOp, "pg named prepared increment upsert", incremented.raw!.usPerOp, { target: 1.2 }))

      // delete: each batch first re-inserts (untimed) the keys it will delete
      const deleteKeys = Array.from({ length: batchSize(c) }, (_, i) => `del:${i.toString().padStart(7, "0")}`)
      const refill = () => insertKeys(pool, TABLE, s.conflict, deleteKeys)
      const checkAllLive = (results: ReadonlyArray<boolean>) => {
        if (results.some((x) => !x)) throw new Error("delete found a key missing that was just inserted")
      }
      const del = await compare([
        {
          name: "raw",
          opsPerBatch: deleteKeys.length,
          beforeEach: refill,
          batch: async () => {
            const results = new Array<boolean>(deleteKeys.length)
            await runConcurrently(deleteKeys.length, c, async (i) => {
              results[i] = await r.delete(deleteKeys[i]!)
            })
            checkAllLive(results)
          }
        },
        {
          name: "effect-kv",
          opsPerBatch: deleteKeys.length,
          beforeEach: refill,
          batch: () => Effect.runPromise(Effect.forEach(deleteKeys, (k) => kv.delete(k), { concurrency: c })).then(checkAllLive)
        }
      ], PG_TIMING)
      rows.push(ratioRow("postgres", `delete, ${label(c)}`, del["effect-kv"]!.usPerOp, "pg named prepared DELETE … RETURNING", del.raw!.usPerOp))

      // setIfAbsent and expire, with the uncoalesced path (one statement per call) in the notes
      rows.push(...await coalescedWriteRows({ pool, table: TABLE, kv, uncoalesced: kvUncoalesced }, c, batchSize(c), label(c), PG_TIMING))
    }

    // getMany(100): one statement, against 100 raw gets (at once over the pool, and one after another)
    log("getMany(100)")
    const many = await compare([
      {
        name: "raw pool",
        opsPerBatch: 100,
        batch: () => {
          const keys = nextKeys(100)
          return runConcurrently(keys.length, POOL_SIZE, (i) => r.get(keys[i]!))
        }
      },
      {
        name: "raw sequential",
        opsPerBatch: 100,
        batch: async () => {
          for (const key of nextKeys(100)) await r.get(key)
        }
      },
      {
        name: "effect-kv",
        opsPerBatch: 100,
        batch: () =>
          Effect.runPromise(Effect.map(kv.getMany(nextKeys(100)), (found) => {
            if (found.some(Option.isNone)) throw new Error("getMany: a key of the working set is missing")
          }))
      }
    ], PG_TIMING)
    rows.push(ratioRow("postgres", "getMany(100), per key", many["effect-kv"]!.usPerOp, "100 raw gets over the pool (10 at once)", many["raw pool"]!.usPerOp, {
      note: `100 raw gets one after another: ${many["raw sequential"]!.usPerOp.toFixed(1)} µs per key`
    }))

    // logged vs unlogged, effect-kv on both tables
    log("logged vs unlogged")
    for (const c of [1, 10] as const) {
      const setLU = await compare([
        kvSubject("logged", c, (k) => kv.set(k, value)),
        kvSubject("unlogged", c, (k) => kvUnlogged.set(k, value)),
        rawSubject("raw logged", c, r.set),
        rawSubject("raw unlogged", c, rUnlogged.set)
      ], PG_TIMING)
      rows.push(ratioRow("postgres", `set unlogged, ${label(c)}`, setLU.unlogged!.usPerOp, "effect-kv set, logged table", setLU.logged!.usPerOp, {
        note: `raw pg: logged ${setLU["raw logged"]!.usPerOp.toFixed(0)} µs, unlogged ${setLU["raw unlogged"]!.usPerOp.toFixed(0)} µs`
      }))
      const updLU = await compare([
        kvSubject("logged", c, (k) => kv.update(k, () => Effect.succeed(value))),
        kvSubject("unlogged", c, (k) => kvUnlogged.update(k, () => Effect.succeed(value)))
      ], PG_TIMING)
      rows.push(ratioRow("postgres", `update unlogged, ${label(c)}`, updLU.unlogged!.usPerOp, "effect-kv update, logged table", updLU.logged!.usPerOp))
    }

    // keys(prefix) → 100 keys from 10k and 1M rows
    const keysAt: Record<string, { kv: number; raw: number }> = {}
    for (const [size, { table, rows: n }] of Object.entries(KEYS_TABLES)) {
      const kvKeys = await store(table)
      const sk = await rawStatements(pool, table)
      const started = performance.now()
      await insertKeys(pool, table, sk.conflict, Array.from({ length: n }, (_, i) => `k:${i.toString().padStart(7, "0")}`))
      await pool.query(`VACUUM ANALYZE ${table}`)
      log(`keys(prefix) @${size}: populated ${n} rows in ${((performance.now() - started) / 1000).toFixed(1)} s`)
      const prefixes = Array.from({ length: 16 }, (_, i) => `k:${Math.floor(((i + 0.5) * n) / 1600).toString().padStart(5, "0")}`)
      const rk = raw(pool, sk)
      let p = 0
      let q = 0
      const expect100 = (ks: ReadonlyArray<string>) => {
        if (ks.length !== 100) throw new Error(`keys(prefix) returned ${ks.length} keys, expected 100`)
      }
      const res = await compare([
        { name: "raw", opsPerBatch: 20, batch: async () => { for (let i = 0; i < 20; i++) expect100(await rk.keys(prefixes[p++ % 16]!)) } },
        {
          name: "effect-kv",
          opsPerBatch: 20,
          batch: () =>
            Effect.runPromise(Effect.gen(function*() {
              for (let i = 0; i < 20; i++) expect100(yield* kvKeys.keys(prefixes[q++ % 16]!))
            }))
        }
      ], PG_TIMING)
      keysAt[size] = { kv: res["effect-kv"]!.usPerOp, raw: res.raw!.usPerOp }
      rows.push(ratioRow("postgres", `keys(prefix) → 100 @${size} rows`, res["effect-kv"]!.usPerOp, "pg named prepared range SELECT", res.raw!.usPerOp))
    }
    rows.push(ratioRow("postgres", "keys(prefix) @1M vs @10k", keysAt["1M"]!.kv, "effect-kv keys(prefix) @10k", keysAt["10k"]!.kv, {
      target: 1.5,
      note: `raw pg: @1M / @10k = ${(keysAt["1M"]!.raw / keysAt["10k"]!.raw).toFixed(2)}×`
    }))

    // @keyv/postgres as a peer, sequential
    log("Keyv")
    const keyvStore = new KeyvPostgres({ uri: url, table: "bench_keyv", max: POOL_SIZE })
    const keyv = new Keyv({ store: keyvStore })
    const buf = Buffer.from(value)
    await Promise.all(working.map((k) => keyv.set(k, buf)))
    const keyvGet = async (k: string) => {
      if ((await keyv.get(k)) === undefined) throw new Error(`keyv get: missing ${k}`)
    }
    const peerGet = await compare([
      rawSubject("keyv", 1, keyvGet),
      kvSubject("effect-kv", 1, (k) => kv.get(k))
    ], PG_TIMING)
    rows.push(ratioRow("postgres", "get vs Keyv, sequential", peerGet["effect-kv"]!.usPerOp, "@keyv/postgres get", peerGet.keyv!.usPerOp, { target: 1 }))
    const peerSet = await compare([
      rawSubject("keyv", 1, (k) => keyv.set(k, buf)),
      kvSubject("effect-kv", 1, (k) => kv.set(k, value))
    ], PG_TIMING)
    rows.push(ratioRow("postgres", "set vs Keyv, sequential", peerSet["effect-kv"]!.usPerOp, "@keyv/postgres set", peerSet.keyv!.usPerOp, { target: 1 }))
    const peerGet10 = await compare([
      rawSubject("keyv", 10, keyvGet),
      kvSubject("effect-kv", 10, (k) => kv.get(k))
    ], PG_TIMING)
    rows.push(ratioRow("postgres", "get vs Keyv, 10 fibers", peerGet10["effect-kv"]!.usPerOp, "@keyv/postgres get", peerGet10.keyv!.usPerOp, { target: 1 }))
    const peerGet50 = await compare([
      rawSubject("keyv", 50, keyvGet),
      kvSubject("effect-kv", 50, (k) => kv.get(k))
    ], PG_TIMING)
    rows.push(ratioRow("postgres", "get vs Keyv, 50 fibers", peerGet50["effect-kv"]!.usPerOp, "@keyv/postgres get", peerGet50.keyv!.usPerOp, { target: 1 }))
    const peerSet50 = await compare([
      rawSubject("keyv", 50, (k) => keyv.set(k, buf)),
      kvSubject("effect-kv", 50, (k) => kv.set(k, value))
    ], PG_TIMING)
    rows.push(ratioRow("postgres", "set vs Keyv, 50 fibers", peerSet50["effect-kv"]!.usPerOp, "@keyv/postgres set", peerSet50.keyv!.usPerOp, { target: 1 }))
    await keyv.disconnect()

    // contended counter: two pools (two "processes") × 50 fibers incrementing one key
    log("contended counter")
    rows.push(...(await contendedCounter(url, PostgresStore, pool, s)))
  } finally {
    for (const close of closers.reverse()) await close().catch((e) => log(`close failed: ${String(e)}`))
    await pool.end()
  }
  return rows
}

const contendedCounter = async (
  url: string,
  PostgresStore: PostgresStoreModule,
  pool: pg.Pool,
  s: Statements
): Promise<Array<Row>> => {
  const FIBERS = 50
  const PER_FIBER = 10
  const expected = 2 * FIBERS * PER_FIBER
  const KEY = "counter:contended"
  const increment = (current: Option.Option<Uint8Array>) => Effect.succeed(counterBytes(counterValue(Option.getOrUndefined(current)) + 1))

  // two independent pools, each with its own store instance on the same table
  const stores = await Promise.all([0, 1].map(() =>
    buildService(
      PostgresStore.layer({ table: TABLE, createTable: false }).pipe(
        Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: POOL_SIZE }))
      ),
      KvStore
    )
  ))
  const rawPools = [0, 1].map(() => rawPool(url))
  try {
    const kvRun = async () => {
      await pool.query(`DELETE FROM ${TABLE} WHERE key = $1`, [KEY]) // start from a missing key: the hard case
      const started = performance.now()
      await Promise.all(stores.map(({ service }) =>
        Effect.runPromise(Effect.forEach(
          Array.from({ length: FIBERS }),
          () => Effect.repeatN(service.update(KEY, increment), PER_FIBER - 1),
          { concurrency: "unbounded", discard: true }
        ))
      ))
      const elapsed = performance.now() - started
      const final = counterValue(await Effect.runPromise(stores[0]!.service.get(KEY)))
      return { opsPerSec: (expected / elapsed) * 1000, final }
    }
    const rawRun = async () => {
      // hand-written transactions need an existing row to lock (FOR UPDATE locks nothing on a missing row)
      await pool.query(`DELETE FROM ${TABLE} WHERE key = $1`, [KEY])
      await raw(pool, s).set(KEY).then(() => raw(pool, s).update(KEY, () => counterBytes(0)))
      const started = performance.now()
      await Promise.all(rawPools.map((p) => {
        const rp = raw(p, s)
        return runConcurrently(FIBERS * PER_FIBER, FIBERS, () => rp.update(KEY, (cur) => counterBytes(counterValue(cur) + 1)))
      }))
      const elapsed = performance.now() - started
      const final = counterValue((await pool.query(s.get, s.params(h(KEY), KEY))).rows[0]?.value)
      return { opsPerSec: (expected / elapsed) * 1000, final }
    }
    const kvRuns = []
    const rawRuns = []
    for (let i = 0; i < 3; i++) {
      rawRuns.push(await rawRun())
      kvRuns.push(await kvRun())
    }
    const med = (xs: Array<{ opsPerSec: number }>) => [...xs].sort((a, b) => a.opsPerSec - b.opsPerSec)[1]!.opsPerSec
    const kvFinals = kvRuns.map((x) => x.final)
    const rawFinals = rawRuns.map((x) => x.final)
    const exact = kvFinals.every((f) => f === expected)
    log(`contended counter: effect-kv finals ${kvFinals.join(", ")}; raw finals ${rawFinals.join(", ")}; expected ${expected}`)
    const kvOps = med(kvRuns)
    const rawOps = med(rawRuns)
    return [
      {
        suite: "postgres",
        operation: "contended counter, 2 pools × 50 fibers (updates/s)",
        value: kvOps,
        unit: "ops/s",
        baseline: "pg FOR UPDATE txn, 2 pools × 50",
        baselineValue: rawOps,
        ratio: rawOps / kvOps,
        note: `ratio is baseline ops/s ÷ effect-kv ops/s (>1: slower); effect-kv starts from a missing key, the raw baseline from an existing row`
      },
      {
        suite: "postgres",
        operation: "contended counter final count (3 runs)",
        value: exact ? expected : Math.min(...kvFinals),
        unit: "count",
        baseline: "expected",
        baselineValue: expected,
        ratio: exact ? 1 : Math.min(...kvFinals) / expected,
        check: exact,
        note: `finals ${kvFinals.join(", ")} of ${expected}: ${exact ? "exact, no lost update" : "LOST UPDATES"}`
      }
    ]
  } finally {
    for (const st of stores) await st.close()
    for (const p of rawPools) await p.end()
  }
}
