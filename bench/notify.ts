/**
 * The cost of `notifyChanges` (issue 19): `set` on a store that notifies
 * every write against the same store that does not, on one server, one pool,
 * interleaved (see `compare`), sequentially and at 50 fibers, on a logged and
 * an unlogged table; printed as ratios notify-on / notify-off. A listener is
 * subscribed to the notifying tables while they are measured, as it would be
 * in an application that watches.
 *
 * The contract: `notifyChanges` is on by default when this costs under 10%.
 *
 * Also: end-to-end propagation of a write on one instance (pool A) to a
 * watcher on another (pool B), median and p99, one write at a time.
 */
import { PgClient } from "@effect/sql-pg"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import pg from "pg"
import { notifyChannel } from "../src/core/postgresSql.js"
import { KvStore } from "../src/KvStore.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { buildService } from "./lib/effect.js"
import { compare, median, type Subject } from "./lib/measure.js"
import { ratioRow, type Row } from "./lib/report.js"

const POOL_SIZE = 10
const VALUE_BYTES = 100
const WORKING_SET = 10_000
const PROPAGATION_WRITES = 300
/** Many short interleaved rounds: the ratio is the median of the rounds' ratios, steadier than a ratio of medians on a busy machine. */
const TIMING = { rounds: 11, time: 150, iterations: 3, warmupTime: 50, warmupIterations: 1 } as const
const batchSize = (c: number) => (c === 1 ? 50 : 500)

const log = (msg: string) => console.error(`[notify] ${msg}`)
const keyOf = (i: number) => `key:${i.toString().padStart(7, "0")}`
const value = new Uint8Array(VALUE_BYTES).fill(7)

const percentile = (xs: ReadonlyArray<number>, p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!
}

export const runNotify = async (url: string): Promise<Array<Row>> => {
  const rows: Array<Row> = []
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  const closers: Array<() => Promise<void>> = [() => admin.end()]
  try {
    const pool = await buildService(PgClient.layer({ url: Redacted.make(url), maxConnections: POOL_SIZE }), PgClient.PgClient)
    closers.push(pool.close)
    const sqlContext = Layer.succeedContext(pool.context)
    const store = async (table: string, unlogged: boolean, notifyChanges: boolean) => {
      await admin.query(`DROP TABLE IF EXISTS ${table}`)
      const built = await buildService(
        PostgresStore.layer({ table, unlogged, notifyChanges }).pipe(Layer.provide(sqlContext)),
        KvStore
      )
      closers.push(built.close)
      await Effect.runPromise(built.service.setMany(Array.from({ length: WORKING_SET }, (_, i) => [keyOf(i), value] as const)))
      await admin.query(`ANALYZE ${table}`)
      return built.service
    }
    // a listener on every notifying table, as an application that watches would have
    const listener = new pg.Client({ connectionString: url })
    await listener.connect()
    closers.push(() => listener.end())
    let heard = 0
    listener.on("notification", () => heard++)

    let cursor = 0
    const nextKeys = (n: number) => {
      const out = new Array<string>(n)
      for (let i = 0; i < n; i++) out[i] = keyOf((cursor + i) % WORKING_SET)
      cursor = (cursor + n) % WORKING_SET
      return out
    }
    const subject = (name: string, c: number, kv: KvStore.Service): Subject => ({
      name,
      opsPerBatch: batchSize(c),
      batch: () =>
        Effect.runPromise(Effect.forEach(nextKeys(batchSize(c)), (k) => kv.set(k, value), { concurrency: c, discard: true }))
    })

    for (const unlogged of [false, true]) {
      const kind = unlogged ? "unlogged" : "logged"
      const on = await store(`bench_notify_on_${kind}`, unlogged, true)
      const off = await store(`bench_notify_off_${kind}`, unlogged, false)
      await listener.query(`LISTEN "${notifyChannel("public", `bench_notify_on_${kind}`)}"`)
      for (const c of [1, 50]) {
        const label = c === 1 ? "sequential" : `${c} fibers`
        log(`set, ${kind}, ${label}`)
        for (let i = 0; i < 3; i++) { // warm both
          await subject("on", c, on).batch()
          await subject("off", c, off).batch()
        }
        const measured = await compare([subject("notify on", c, on), subject("notify off", c, off)], TIMING)
        const onRounds = measured["notify on"]!.rounds
        const offRounds = measured["notify off"]!.rounds
        const ratios = onRounds.map((x, i) => x / offRounds[i]!)
        const row = {
          ...ratioRow(
            "postgres",
            `set with notifyChanges, ${kind}, ${label}`,
            measured["notify on"]!.usPerOp,
            "same store, notifyChanges: false",
            measured["notify off"]!.usPerOp,
            { target: 1.1, note: "ratio: median of the rounds' ratios; default on when under 1.1" }
          ),
          ratio: median(ratios)
        }
        rows.push(row)
        log(
          `  on ${row.value?.toFixed(1)} µs, off ${row.baselineValue?.toFixed(1)} µs: ×${row.ratio.toFixed(3)} ` +
            `(rounds ${ratios.map((r) => r.toFixed(2)).join(" ")})`
        )
      }
    }
    log(`the listener heard ${heard} notifications`)

    // propagation: a write on instance A, heard by a watcher on instance B (its own pool and LISTEN connection)
    log("propagation A → B")
    const table = "bench_notify_propagation"
    const a = await store(table, false, true)
    const poolB = await buildService(
      PgClient.layer({ url: Redacted.make(url), maxConnections: 2, applicationName: "bench-b" }),
      PgClient.PgClient
    )
    closers.push(poolB.close)
    const b = await buildService(
      PostgresStore.layer({ table, notifyChanges: true }).pipe(Layer.provide(Layer.succeedContext(poolB.context))),
      KvStore
    )
    closers.push(b.close)
    const latencies = await propagation(a, b.service)
    const p50 = median(latencies)
    const p99 = percentile(latencies, 99)
    log(`  ${latencies.length} writes: median ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`)
    rows.push({
      suite: "postgres",
      operation: "propagation A → B (set to watch), median",
      value: p50,
      unit: "ms",
      target: 100,
      targetOn: "value",
      note: "one write at a time; the contract: within 100 ms"
    })
    rows.push({
      suite: "postgres",
      operation: "propagation A → B (set to watch), p99",
      value: p99,
      unit: "ms",
      target: 100,
      targetOn: "value"
    })
  } finally {
    for (const close of closers.reverse()) await close().catch((error) => log(`close: ${String(error)}`))
  }
  return rows
}

/**
 * Milliseconds from the start of each `set` on `a` to the moment `b`'s watch
 * of the key emits the value written, one write at a time.
 */
const propagation = async (a: KvStore.Service, b: KvStore.Service): Promise<Array<number>> => {
  const scope = Effect.runSync(Scope.make())
  try {
    const key = "propagation"
    await Effect.runPromise(a.set(key, new Uint8Array([0])))
    let resolveNext: ((n: number) => void) | undefined
    await Effect.runPromise(
      b.watch(key).pipe(
        Stream.runForEach((v) =>
          Effect.sync(() => {
            if (Option.isSome(v) && v.value.length === 4) resolveNext?.(new DataView(v.value.buffer, v.value.byteOffset).getUint32(0))
          })
        ),
        Effect.forkIn(scope)
      )
    )
    await new Promise((resolve) => setTimeout(resolve, 200)) // the watch's first value and LISTEN are in place
    const latencies: Array<number> = []
    for (let i = 1; i <= PROPAGATION_WRITES; i++) {
      const bytes = new Uint8Array(4)
      new DataView(bytes.buffer).setUint32(0, i)
      const heard = new Promise<number>((resolve) => {
        resolveNext = (n) => {
          if (n === i) resolve(performance.now())
        }
      })
      const started = performance.now()
      await Effect.runPromise(a.set(key, bytes))
      const at = await Promise.race([heard, new Promise<number>((resolve) => setTimeout(() => resolve(NaN), 5000))])
      if (Number.isNaN(at)) throw new Error(`write ${i} was not heard within 5 s`)
      latencies.push(at - started)
    }
    return latencies
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
}
