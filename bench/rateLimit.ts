/**
 * `npx tsx bench/rateLimit.ts`: what one `RateLimiter.consume` costs on
 * PostgreSQL through `KvRateLimiter`, in one run on one server and pool size:
 *
 * - `one statement`: the store's own step (issue 15 item 5, issue 18), one
 *   statement on the database's clock;
 * - `in update`: the step inside `KvStore.update` on the Effect clock — what
 *   every consume cost before (the same statements: BEGIN and the key's lock,
 *   SELECT … FOR UPDATE, the upsert, COMMIT), measured here through a wrapped
 *   `Service`, which has no step of its own;
 * - `raw upsert`: a hand-written named `INSERT … ON CONFLICT DO UPDATE …
 *   RETURNING` on `pg`, the floor for any one-round-trip write;
 * - `layerStoreMemory` and `KvRateLimiter` on `MemoryStore`, for scale.
 *
 * Each subject runs sequentially (one fiber) and with 10 fibers on distinct
 * keys, medians of several rounds, every call admitted (a high limit).
 * PostgreSQL comes from `DATABASE_URL` or the embedded test server.
 */
import * as RateLimiter from "@effect/experimental/RateLimiter"
import { PgClient } from "@effect/sql-pg"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import pg from "pg"
import { startPostgres } from "../dev/postgresServer.js"
import { keyHash } from "../src/core/hash.js"
import * as KvRateLimiter from "../src/KvRateLimiter.js"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { buildService } from "./lib/effect.js"

const POOL_SIZE = 10
const KEYS = 200
const CALLS = 2000
const ROUNDS = 7
const TABLE = "bench_ratelimit"

const median = (xs: ReadonlyArray<number>): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

/** Microseconds per call of `call(i)`, `fibers` at a time, median of `ROUNDS` rounds after one warm-up. */
const measure = async (call: (i: number) => Promise<unknown>, fibers: number): Promise<number> => {
  const round = async () => {
    let next = 0
    const started = performance.now()
    await Promise.all(Array.from({ length: fibers }, async () => {
      while (next < CALLS) await call(next++)
    }))
    return ((performance.now() - started) * 1000) / CALLS
  }
  await round()
  const times: Array<number> = []
  for (let i = 0; i < ROUNDS; i++) times.push(await round())
  return median(times)
}

const server = await startPostgres()
const url = server.url
const results: Array<{ subject: string; fibers: number; micros: number }> = []
try {
  const store = await buildService(
    PostgresStore.layer({ table: TABLE, unlogged: false }).pipe(
      Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: POOL_SIZE }))
    ),
    KvStore.KvStore
  )
  const limiterOf = (service: KvStore.Service, prefix: string) =>
    Effect.runPromise(RateLimiter.make.pipe(
      Effect.provide(KvRateLimiter.layerStore({ prefix }).pipe(Layer.provide(Layer.succeed(KvStore.KvStore, service))))
    ))
  const native = await limiterOf(store.service, "rl/native/")
  const inUpdate = await limiterOf({ ...store.service }, "rl/update/")
  const memory = await buildService(MemoryStore.layer(), KvStore.KvStore)
  const memoryLimiter = await limiterOf(memory.service, "rl/")
  const theirs = await Effect.runPromise(RateLimiter.make.pipe(Effect.provide(RateLimiter.layerStoreMemory)))

  const pool = new pg.Pool({ connectionString: url, max: POOL_SIZE })
  const table = `"public"."${TABLE}"`
  const rawUpsert = {
    name: "bench_raw_upsert",
    text: `INSERT INTO ${table} AS cur (key_hash, key, value, expires_at, updated_at) ` +
      `VALUES ($1::bigint, $2::text, convert_to('1', 'UTF8'), clock_timestamp() + interval '1 minute', clock_timestamp()) ` +
      `ON CONFLICT (key) DO UPDATE SET value = convert_to((convert_from(cur.value, 'UTF8')::bigint + 1)::text, 'UTF8'), ` +
      `updated_at = excluded.updated_at RETURNING convert_from(value, 'UTF8') AS n`
  }
  const { makeStatements } = await import("../src/core/postgresSql.js")
  const rawStep = {
    name: "bench_raw_ratelimit",
    text: makeStatements({ schema: "public", table: TABLE, unlogged: false }).rateLimitFixedWindow
  }
  const rawKeys = Array.from({ length: KEYS }, (_, i) => [keyHash(`rl/raw/${i}`).toString(), `rl/raw/${i}`] as const)

  const stepKeys = Array.from({ length: KEYS }, (_, i) => [keyHash(`rl/step/${i}`).toString(), `rl/step/${i}`] as const)

  const consume = (limiter: RateLimiter.RateLimiter, algorithm: "fixed-window" | "token-bucket") => (i: number) =>
    Effect.runPromise(limiter.consume({ algorithm, key: `k${i % KEYS}`, limit: 1_000_000_000, window: "1 hour" }))

  const subjects: ReadonlyArray<readonly [string, (i: number) => Promise<unknown>]> = [
    ["raw upsert (pg, named)", (i) => pool.query({ ...rawUpsert, values: [...rawKeys[i % KEYS]!] })],
    ["fixed window statement alone (pg, named)", (i) =>
      pool.query({ ...rawStep, values: [...stepKeys[i % KEYS]!, 1, 3.6, null] })],
    ["increment through the store", (i) => Effect.runPromise(store.service.increment(`rl/incr/${i % KEYS}`))],
    ["fixed window, one statement", consume(native, "fixed-window")],
    ["fixed window, in update (before)", consume(inUpdate, "fixed-window")],
    ["token bucket, one statement", consume(native, "token-bucket")],
    ["token bucket, in update (before)", consume(inUpdate, "token-bucket")],
    ["fixed window, MemoryStore", consume(memoryLimiter, "fixed-window")],
    ["fixed window, layerStoreMemory", consume(theirs, "fixed-window")]
  ]
  for (const fibers of [1, 10]) {
    for (const [subject, call] of subjects) {
      const micros = await measure(call, fibers)
      results.push({ subject, fibers, micros })
      console.error(`[ratelimit] ${subject}, ${fibers} fiber(s): ${micros.toFixed(1)} µs/call`)
    }
  }
  await pool.end()
  await store.close()
  await memory.close()
} finally {
  await server.stop()
}

const raw = (fibers: number) => results.find((r) => r.fibers === fibers && r.subject.startsWith("raw"))!.micros
console.log("| consume | fibers | µs/call | × raw upsert |")
console.log("|---|---|---|---|")
for (const { fibers, micros, subject } of results) {
  console.log(`| ${subject} | ${fibers} | ${micros.toFixed(1)} | ${(micros / raw(fibers)).toFixed(2)} |`)
}
