/**
 * The batch, prefix and stream operations (issue 9):
 *
 * - memory: `streamKeys` (first 100 keys of a prefix) and `count` (a prefix of
 *   100 keys) at 10k and at 1M keys, whose ratio shows the ordered index at
 *   work (a scan would be 100× slower at 100× the keys); the first listing
 *   timed apart, as the index build, with the longest event-loop stall during
 *   it; `set` of a new key with and without the index;
 * - PostgreSQL: `getMany` of 100 keys against one `get`; `deletePrefix` of
 *   100k rows with the locks its connections hold polled from another
 *   connection; streaming 1M keys;
 * - both: the heap retained while streaming 1M keys against 100k keys.
 */
import { PerformanceObserver } from "node:perf_hooks"
import { setTimeout as sleep } from "node:timers/promises"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { PgClient } from "@effect/sql-pg"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import pg from "pg"
import { keyHash } from "../src/core/hash.js"
import { makeOrderedIndex } from "../src/internal/orderedIndex.js"
import { KvStore } from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { buildService } from "./lib/effect.js"
import { compare, median, type Subject } from "./lib/measure.js"
import { child } from "./memory.js"
import { ratioRow, type Row } from "./lib/report.js"

const log = (msg: string) => console.error(`[batches] ${msg}`)
const TIMING = { rounds: 3, time: 150, iterations: 3, warmupTime: 50, warmupIterations: 1 } as const
const value = new Uint8Array(100).fill(7)
const run = <A, E>(effect: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(effect)
const MB = 1024 * 1024

/** Keys in groups of 100: `g:<group>:<nn>`, so `g:<group>:` holds exactly 100 keys. */
const groupPrefix = (group: number) => `g:${group.toString().padStart(5, "0")}:`
const groupedKey = (i: number) => `${groupPrefix(Math.floor(i / 100))}${(i % 100).toString().padStart(2, "0")}`

const populate = async (store: KvStore.Service, count: number, keyOf: (i: number) => string) => {
  const CHUNK = 10_000
  for (let from = 0; from < count; from += CHUNK) {
    const entries = Array.from({ length: Math.min(CHUNK, count - from) }, (_, i) => [keyOf(from + i), value] as const)
    await run(store.setMany(entries))
  }
}

// `npm run bench` runs under tsx without --expose-gc; the flag can still be set at run time
v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void

/**
 * Streams `count` keys, and at every tenth of the way collects garbage and
 * samples `heapUsed`: the most heap retained above the start, MB. Garbage is
 * left out on purpose: the question is whether the stream holds on to what
 * it has passed, not how big the young generation grows between scavenges.
 */
const retainedWhileStreaming = async (stream: Stream.Stream<string, unknown>, count: number) => {
  gc()
  const start = process.memoryUsage().heapUsed
  let peak = start
  const every = count / 10
  const n = await run(Stream.runFold(stream, 0, (n) => {
    if (++n % every === 0) {
      gc()
      peak = Math.max(peak, process.memoryUsage().heapUsed)
    }
    return n
  }))
  if (n !== count) throw new Error(`streamed ${n} keys, not ${count}`)
  return (peak - start) / MB
}

/**
 * Times `f` once, with the longest event-loop stall meanwhile (the widest gap
 * between two ticks of a 1 ms timer) and the longest GC pause, which a stall
 * may be made of.
 */
const timedWithStall = async <A>(f: () => Promise<A>) => {
  let last = performance.now()
  let widest = 0
  let longestGc = 0
  const ticker = setInterval(() => {
    const now = performance.now()
    widest = Math.max(widest, now - last)
    last = now
  }, 1)
  const gcs = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) longestGc = Math.max(longestGc, entry.duration)
  })
  gcs.observe({ entryTypes: ["gc"] })
  try {
    await sleep(5)
    widest = 0
    const started = performance.now()
    const result = await f()
    const ms = performance.now() - started
    // a stall at the very end shows when the delayed tick finally runs
    await sleep(5)
    return { result, ms, stallMs: widest, longestGcMs: longestGc }
  } finally {
    clearInterval(ticker)
    gcs.disconnect()
  }
}

/** The heap `keys("")` of the same keys holds: the whole listing at once, MB. */
const retainedByListing = async (store: KvStore.Service) => {
  gc()
  const start = process.memoryUsage().heapUsed
  const keys = await run(store.keys(""))
  gc()
  const retained = (process.memoryUsage().heapUsed - start) / MB
  if (keys.length !== 1_000_000) throw new Error(`keys("") gave ${keys.length} keys`)
  return retained
}

/** Heap retained while streaming 1M keys against the whole listing of them (and streaming 100k), MB. */
const streamRow = (suite: Row["suite"], at1M: number, at100k: number, listing: number, note: string): Row => ({
  suite,
  operation: "streamKeys of 1M keys: most heap retained, MB",
  value: Math.round(at1M * 100) / 100,
  unit: "count",
  baseline: `keys("") of the same 1M`,
  baselineValue: Math.round(listing * 10) / 10,
  ratio: at1M / listing,
  target: 0.1,
  note: `sampled after a full GC at every tenth of the stream; streaming 100k keys: ${at100k.toFixed(2)} MB; ${note}`
})

interface Listings {
  readonly buildMs: number
  readonly buildStallMs: number
  readonly buildGcMs: number
  readonly streamUs: number | undefined
  readonly countUs: number | undefined
}

const memoryListings = async (store: KvStore.Service, size: number, label: string): Promise<Listings> => {
  const groups = size / 100
  const build = await timedWithStall(() => run(store.count(groupPrefix(0))))
  if (build.result !== 100) throw new Error(`count of a group: ${build.result}, not 100`)
  log(`first listing @${label} (index build): ${build.ms.toFixed(0)} ms, longest stall ${build.stallMs.toFixed(1)} ms, longest GC pause ${build.longestGcMs.toFixed(1)} ms`)
  let q = 7
  const next = () => groupPrefix((q = (q * 7919 + 13) % groups))
  const subjects: Array<Subject> = [{
    name: "streamKeys",
    opsPerBatch: 1,
    batch: () =>
      run(Effect.tap(Stream.runCollect(Stream.take(store.streamKeys(next()), 100)), (keys) => {
        if (keys.length !== 100) throw new Error(`streamKeys gave ${keys.length} keys`)
      }))
  }, {
    name: "count",
    opsPerBatch: 1,
    batch: () =>
      run(Effect.tap(store.count(next()), (n) => {
        if (n !== 100) throw new Error(`count gave ${n}`)
      }))
  }]
  const result = await compare(subjects, TIMING)
  return {
    buildMs: build.ms,
    buildStallMs: build.stallMs,
    buildGcMs: build.longestGcMs,
    streamUs: result.streamKeys?.usPerOp,
    countUs: result.count?.usPerOp
  }
}

const runMemoryBatches = async (rows: Array<Row>) => {
  const small = await buildService(MemoryStore.layer(), KvStore)
  const large = await buildService(MemoryStore.layer(), KvStore)
  try {
    await populate(small.service, 10_000, groupedKey)
    // the 10k listings first, before a 1M-entry heap makes every major GC slow
    const at10k = await memoryListings(small.service, 10_000, "10k")
    const populateStarted = performance.now()
    gc()
    const heapBefore = process.memoryUsage().heapUsed
    await populate(large.service, 1_000_000, groupedKey)
    gc()
    const storeMB = (process.memoryUsage().heapUsed - heapBefore) / MB
    log(`populated 1M keys in ${((performance.now() - populateStarted) / 1000).toFixed(1)} s (heap +${storeMB.toFixed(0)} MB)`)

    const at1M = await memoryListings(large.service, 1_000_000, "1M")
    rows.push(ratioRow("memory", "streamKeys, first 100 of a prefix @1M", at1M.streamUs, "same @10k", at10k.streamUs, { target: 2 }))
    rows.push(ratioRow("memory", "count of a 100-key prefix @1M", at1M.countUs, "same @10k", at10k.countUs, { target: 2 }))
    // Listings look entries up for their expiry only once some entry has expired (the expiry index
    // knows the earliest expiry); a TTL an hour away must cost them nothing.
    await run(small.service.set("ttl:x", value, "1 hour"))
    await run(large.service.set("ttl:x", value, "1 hour"))
    const listingsWithTtl = async (store: KvStore.Service, size: number) => {
      let q = 11
      const next = () => groupPrefix((q = (q * 7919 + 13) % (size / 100)))
      const measured = await compare([{
        name: "streamKeys",
        opsPerBatch: 1,
        batch: () =>
          run(Effect.tap(Stream.runCollect(Stream.take(store.streamKeys(next()), 100)), (keys) => {
            if (keys.length !== 100) throw new Error(`streamKeys gave ${keys.length} keys`)
          }))
      }, {
        name: "count",
        opsPerBatch: 1,
        batch: () =>
          run(Effect.tap(store.count(next()), (n) => {
            if (n !== 100) throw new Error(`count gave ${n}`)
          }))
      }], TIMING)
      return { countUs: measured.count?.usPerOp, streamUs: measured.streamKeys?.usPerOp }
    }
    const ttl10k = await listingsWithTtl(small.service, 10_000)
    const ttl1M = await listingsWithTtl(large.service, 1_000_000)
    rows.push(ratioRow("memory", "count of a 100-key prefix @1M, a TTL in the store", ttl1M.countUs, "same @10k", ttl10k.countUs, { target: 2 }))
    rows.push(ratioRow("memory", "count of a 100-key prefix @1M, a TTL in the store vs none", ttl1M.countUs, "same @1M, no TTL", at1M.countUs, { target: 1.5 }))
    rows.push(ratioRow("memory", "streamKeys, first 100 of a prefix @1M, a TTL in the store vs none", ttl1M.streamUs, "same @1M, no TTL", at1M.streamUs, { target: 1.5 }))
    await run(small.service.delete("ttl:x"))
    await run(large.service.delete("ttl:x"))

    // what the first listing cost before the build was sliced: the same tree built in one synchronous go
    const map = new Map(Array.from({ length: 1_000_000 }, (_, i) => [groupedKey(i), true]))
    const oneGo = await timedWithStall(async () => makeOrderedIndex(map.keys()))
    map.clear()
    log(`the same index in one go: ${oneGo.ms.toFixed(0)} ms`)
    rows.push({
      suite: "memory",
      operation: "first listing @1M (index build), wall time",
      value: at1M.buildMs,
      unit: "ms",
      baseline: "build in one go",
      baselineValue: oneGo.ms,
      ratio: at1M.buildMs / oneGo.ms,
      note: `@10k: ${at10k.buildMs.toFixed(1)} ms`
    })
    // The stall again in three fresh processes (no other store, no benchmark garbage on the heap),
    // each beside the same ticker over an idle second: a busy shared machine deschedules us too.
    const fresh: Array<{ maxStallMs: number; longestGcMs: number; idleMaxMs: number }> = []
    for (let i = 0; i < 3; i++) fresh.push(child(["indexStall", "1000000"]))
    const stalls = fresh.map((r) => r.maxStallMs)
    log(`index build stall in fresh processes: ${stalls.map((x) => x.toFixed(1)).join(", ")} ms (idle: ${fresh.map((r) => r.idleMaxMs.toFixed(1)).join(", ")} ms)`)
    rows.push({
      suite: "memory",
      operation: "first listing @1M: longest event-loop stall (median of 3 fresh processes)",
      value: median(stalls),
      unit: "ms",
      baseline: "build in one go",
      baselineValue: oneGo.stallMs,
      ratio: median(stalls) / oneGo.stallMs,
      target: 20,
      targetOn: "value",
      note: `fresh processes: ${stalls.map((x) => x.toFixed(1)).join(", ")} ms, longest GC pause ${
        fresh.map((r) => r.longestGcMs.toFixed(1)).join(", ")
      } ms, idle second ${fresh.map((r) => r.idleMaxMs.toFixed(1)).join(", ")} ms; in this process ${
        at1M.buildStallMs.toFixed(1)
      } ms (longest GC pause ${at1M.buildGcMs.toFixed(1)} ms), @10k ${at10k.buildStallMs.toFixed(1)} ms`
    })

    // set of a new key: a Map insert, plus a B+ tree insert once the index exists
    const plain = await buildService(MemoryStore.layer(), KvStore)
    const indexed = await buildService(MemoryStore.layer(), KvStore)
    try {
      await populate(plain.service, 100_000, groupedKey)
      await populate(indexed.service, 100_000, groupedKey)
      await run(indexed.service.count("g:"))
      let n = 0
      const setNew = (store: KvStore.Service): Subject["batch"] => () =>
        run(Effect.gen(function*() {
          for (let i = 0; i < 100; i++) yield* store.set(`new:${(n++).toString(36)}`, value)
        }))
      const sets = await compare([
        { name: "indexed", opsPerBatch: 100, batch: setNew(indexed.service) },
        { name: "plain", opsPerBatch: 100, batch: setNew(plain.service) }
      ], TIMING)
      rows.push(ratioRow("memory", "set of a new key, index built (100k keys)", sets.indexed?.usPerOp, "no index yet", sets.plain?.usPerOp))
    } finally {
      await plain.close()
      await indexed.close()
    }

    const stream100k = await retainedWhileStreaming(large.service.streamKeys("g:00"), 100_000)
    const stream1M = await retainedWhileStreaming(large.service.streamKeys(""), 1_000_000)
    const listing = await retainedByListing(large.service)
    log(`memory stream: heap retained +${stream1M.toFixed(2)} MB for 1M keys, +${stream100k.toFixed(2)} MB for 100k; keys("") holds ${listing.toFixed(1)} MB`)
    rows.push(streamRow("memory", stream1M, stream100k, listing, `the store's 1M entries hold ${storeMB.toFixed(0)} MB of heap; its keys("") shares the key strings with the store`))
  } finally {
    await small.close()
    await large.close()
  }
}

const TABLE = "bench_batches"
const LIVE = "(expires_at IS NULL OR expires_at > now())"
const APP = "effect-kv-bench-batches"

const runPostgresBatches = async (url: string, rows: Array<Row>) => {
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  admin.on("error", (error) => log(`admin connection: ${error.message}`))
  await admin.query(`DROP TABLE IF EXISTS ${TABLE}`)
  const built = await buildService(
    PostgresStore.layer({ table: TABLE }).pipe(
      Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 10, applicationName: APP }))
    ),
    KvStore
  )
  const store = built.service
  try {
    // 1M keys `s:0000000`..., written straight into the table (key_hash as the store computes it)
    const keyOf = (i: number) => `s:${i.toString().padStart(7, "0")}`
    const loadStarted = performance.now()
    const CHUNK = 50_000
    for (let from = 0; from < 1_000_000; from += CHUNK) {
      const keys = Array.from({ length: CHUNK }, (_, i) => keyOf(from + i))
      await admin.query(
        `INSERT INTO ${TABLE} (key_hash, key, value)
         SELECT h, k, decode(repeat('07', 100), 'hex') FROM unnest($1::bigint[], $2::text[]) AS t(h, k)`,
        [keys.map((k) => BigInt.asIntN(64, keyHash(k)).toString()), keys]
      )
    }
    await admin.query(`VACUUM ANALYZE ${TABLE}`)
    log(`loaded 1M rows in ${((performance.now() - loadStarted) / 1000).toFixed(1)} s`)

    // getMany of 100 keys against one get, in the same run
    let cursor = 0
    const nextKeys = (n: number) => {
      const out = Array.from({ length: n }, (_, i) => keyOf((cursor + i * 9973) % 1_000_000))
      cursor = (cursor + 101) % 1_000_000
      return out
    }
    const reads = await compare([
      {
        name: "getMany",
        opsPerBatch: 1,
        batch: () =>
          run(Effect.tap(store.getMany(nextKeys(100)), (found) => {
            if (found.length !== 100 || found.some(Option.isNone)) throw new Error("getMany missed keys")
          }))
      },
      { name: "get", opsPerBatch: 1, batch: () => run(store.get(nextKeys(1)[0]!)) },
      // the same work on the bare `pg` driver, one connection, prepared statements: what the server and wire cost
      {
        name: "raw getMany",
        opsPerBatch: 1,
        batch: async () => void await admin.query({ name: "raw_get_many", text: `SELECT key, value FROM ${TABLE} WHERE key = ANY($1::text[]) AND ${LIVE}`, values: [nextKeys(100)] })
      },
      {
        name: "raw get",
        opsPerBatch: 1,
        batch: async () => void await admin.query({ name: "raw_get", text: `SELECT value FROM ${TABLE} WHERE key = $1 AND ${LIVE}`, values: [nextKeys(1)[0]] })
      }
    ], TIMING)
    const raw = (reads["raw getMany"]?.usPerOp ?? NaN) / (reads["raw get"]?.usPerOp ?? NaN)
    rows.push(ratioRow("postgres", "getMany of 100 keys", reads.getMany?.usPerOp, "one get", reads.get?.usPerOp, {
      target: 2,
      note: `on the bare pg driver the same two statements give ${raw.toFixed(2)}× (${reads["raw getMany"]?.usPerOp.toFixed(0)} µs against ${reads["raw get"]?.usPerOp.toFixed(0)} µs)`
    }))
    rows.push(ratioRow("postgres", "getMany of 100 keys, against the bare driver", reads.getMany?.usPerOp, "pg, same SQL", reads["raw getMany"]?.usPerOp))

    // streaming: 100k keys (s:00…) and all 1M
    const stream100k = await retainedWhileStreaming(store.streamKeys("s:00"), 100_000)
    const streamStarted = performance.now()
    const stream1M = await retainedWhileStreaming(store.streamKeys(""), 1_000_000)
    const streamSeconds = (performance.now() - streamStarted) / 1000
    const listing = await retainedByListing(store)
    log(`postgres stream: 1M keys in ${streamSeconds.toFixed(1)} s (10 full GCs included), heap retained +${stream1M.toFixed(2)} MB; 100k: +${stream100k.toFixed(2)} MB; keys("") holds ${listing.toFixed(1)} MB`)
    rows.push(streamRow("postgres", stream1M, stream100k, listing, `1M keys streamed in ${streamSeconds.toFixed(1)} s, 10 full GCs included`))

    // deletePrefix of 100k rows, with the locks held by the store's connections polled meanwhile
    let polling = true
    let maxAdvisory = 0
    let maxLocks = 0
    let polls = 0
    const poller = (async () => {
      while (polling) {
        const r = await admin.query<{ advisory: number; all: number }>(
          `SELECT count(*) FILTER (WHERE l.locktype = 'advisory')::int AS advisory, count(*)::int AS all
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE a.application_name = $1`,
          [APP]
        )
        maxAdvisory = Math.max(maxAdvisory, r.rows[0]!.advisory)
        maxLocks = Math.max(maxLocks, r.rows[0]!.all)
        polls++
        await sleep(2)
      }
    })()
    const deleteStarted = performance.now()
    const deleted = await run(store.deletePrefix("s:01"))
    const deleteMs = performance.now() - deleteStarted
    polling = false
    await poller
    log(`deletePrefix: ${deleted} rows in ${deleteMs.toFixed(0)} ms; at most ${maxAdvisory} advisory locks (${maxLocks} locks in all) over ${polls} polls`)
    rows.push({
      suite: "postgres",
      operation: "deletePrefix of 100k rows: most advisory locks held at once",
      value: maxAdvisory,
      unit: "count",
      target: 1100,
      targetOn: "value",
      note: `${deleted} rows in ${(deleteMs / 1000).toFixed(1)} s; ${polls} polls of pg_locks from another connection; at most ${maxLocks} locks of any kind`
    })
    rows.push({ suite: "postgres", operation: "deletePrefix of 100k rows: rows removed", value: deleted, unit: "count", check: deleted === 100_000 })
  } finally {
    await built.close()
    await admin.query(`DROP TABLE IF EXISTS ${TABLE}`).catch(() => undefined)
    await admin.end()
  }
}

export const runBatches = async (postgresUrl: string | undefined): Promise<Array<Row>> => {
  const rows: Array<Row> = []
  await runMemoryBatches(rows)
  if (postgresUrl !== undefined) await runPostgresBatches(postgresUrl, rows)
  return rows
}
