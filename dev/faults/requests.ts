/**
 * Fault scenario (b): request-style interruptions on a saturated pool.
 *
 * Like an HTTP server whose clients give up: waves of "requests", each a few
 * store calls under `Effect.timeout` of 5–150 ms, on a pool of 4 connections
 * far too small for them, so most time out while waiting for a connection, a
 * lock or the server. Afterwards every request fiber must have ended (bounded
 * real time), the pool must be idle (no connection out, nobody waiting), the
 * server must show no open transaction or advisory lock of ours, the pool must
 * again serve 4 transactions at once, and no acknowledged increment may be lost.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import { PgClient } from "@effect/sql-pg"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import Pg from "pg"
import { startPostgres } from "../postgresServer.js"
import { mulberry32 } from "../random.js"
import * as KvStore from "../../src/KvStore.js"
import * as PostgresStore from "../../src/PostgresStore.js"
import type { ScenarioResult } from "./shared.js"

const POOL = 4
const WAVES = 8
const REQUESTS_PER_WAVE = 200
const APP = "effect-kv-faults-requests"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

export const requestsScenario = async (): Promise<ScenarioResult> => {
  const lines: Array<string> = []
  const violations: Array<string> = []
  const server = await startPostgres({ ignoreDatabaseUrl: false })
  const pool = new Pg.Pool({ connectionString: server.url, max: POOL, application_name: APP })
  pool.on("error", () => {})
  const admin = new Pg.Pool({ connectionString: server.url, max: 1, application_name: "effect-kv-faults-inspect" })
  admin.on("error", () => {})
  const table = `kv_faults_requests_${Date.now()}`
  const random = mulberry32(42)

  const program = Effect.gen(function*() {
    const store = yield* PostgresStore.make({ table })
    const inspect = (text: string) =>
      Effect.promise(() => admin.query<{ n: number }>(text, [APP])).pipe(Effect.map((r) => r.rows[0]!.n))
    const keys = ["r/0", "r/1", "r/2", "r/3", "r/4"]
    let incAttempted = 0
    let incAcknowledged = 0
    let completed = 0
    let timedOut = 0
    const failures: Record<string, number> = {}

    const request = (i: number): Effect.Effect<void, KvStore.KvError | KvStore.NotFound> => {
      const key = keys[Math.floor(random() * keys.length)]!
      const r = random()
      if (r < 0.3) {
        return Effect.gen(function*() {
          incAttempted++
          yield* store.increment("r/counter")
          incAcknowledged++
        })
      }
      if (r < 0.6) {
        // a read-modify-write whose function also reads another key, as handlers do
        return Effect.asVoid(store.update(key, (current) =>
          Effect.map(store.getOption(keys[(i + 1) % keys.length]!), () =>
            encoder.encode(String(Option.match(current, { onNone: () => 0, onSome: (v) => Number(decoder.decode(v)) || 0 }) + 1)))))
      }
      if (r < 0.8) return Effect.asVoid(store.getOption(key))
      if (r < 0.9) return store.set(key, encoder.encode("1"), "10 seconds")
      return Effect.asVoid(store.delete(key))
    }

    const started = Date.now()
    for (let wave = 0; wave < WAVES; wave++) {
      const fibers = yield* Effect.forEach(Array.from({ length: REQUESTS_PER_WAVE }, (_, i) => i), (i) =>
        Effect.fork(Effect.timeout(request(i), 5 + Math.floor(random() * 146))))
      const exits = yield* Effect.forEach(fibers, Fiber.await).pipe(
        Effect.disconnect,
        Effect.timeoutOption(10_000)
      )
      if (Option.isNone(exits)) {
        violations.push(`wave ${wave + 1}: request fibers still running after 10 s`)
        break
      }
      for (const exit of exits.value) {
        if (Exit.isSuccess(exit)) {
          completed++
          continue
        }
        const failure = Exit.causeOption(exit).pipe(Option.flatMap((c) => Option.fromNullable(String(c).split("\n")[0])))
        const message = Option.getOrElse(failure, () => "?")
        if (/TimeoutException/.test(message)) timedOut++
        else failures[message.slice(0, 160)] = (failures[message.slice(0, 160)] ?? 0) + 1
      }
    }
    const elapsed = Date.now() - started

    // the pool settles idle, and the server agrees
    const deadline = Date.now() + 5000
    let problem: string | undefined
    for (;;) {
      problem = undefined
      if (pool.waitingCount > 0 || pool.idleCount !== pool.totalCount) {
        problem = `pool not idle: ${pool.totalCount} connections, ${pool.idleCount} idle, ${pool.waitingCount} waiting`
      } else {
        // asked through a separate pool: ours may be the thing that is broken
        const busy = yield* inspect(`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE application_name = $1 AND state <> 'idle'`)
        const locks = yield* inspect(`SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND a.application_name = $1`)
        if (busy > 0) problem = `${busy} backends of ours not idle`
        else if (locks > 0) problem = `${locks} advisory locks left`
      }
      if (problem === undefined || Date.now() > deadline) break
      yield* Effect.sleep(20)
    }
    if (problem !== undefined) violations.push(problem)

    // and serves POOL transactions at once again
    const latch = yield* Effect.makeLatch(false)
    let inside = 0
    const served = yield* Effect.all(
      Array.from({ length: POOL }, (_, j) =>
        store.update(`after/${j}`, () =>
          Effect.suspend(() => (++inside === POOL ? latch.open : Effect.void)).pipe(
            Effect.zipRight(latch.await),
            Effect.as(encoder.encode("ok"))
          ))),
      { concurrency: "unbounded", discard: true }
    ).pipe(Effect.disconnect, Effect.timeoutOption(5000))
    if (Option.isNone(served)) violations.push(`the pool no longer serves ${POOL} transactions at once`)

    const stored = yield* store.getOption("r/counter").pipe(Effect.disconnect, Effect.timeoutOption(5000))
    if (Option.isNone(stored)) violations.push("reading the counter did not finish within 5 s")
    const counter = Option.match(Option.flatten(stored), { onNone: () => 0, onSome: (v) => Number(decoder.decode(v)) })
    if (counter < incAcknowledged) violations.push(`counter ${counter} < ${incAcknowledged} acknowledged increments`)
    if (counter > incAttempted) violations.push(`counter ${counter} > ${incAttempted} attempted increments`)
    const total = WAVES * REQUESTS_PER_WAVE
    lines.push(`${total} requests in ${WAVES} waves on a pool of ${POOL}, timeouts 5–150 ms, in ${elapsed} ms`)
    lines.push(`${completed} completed, ${timedOut} timed out (interrupted), ${total - completed - timedOut} failed otherwise`)
    for (const [m, n] of Object.entries(failures)) lines.push(`  ${n} × ${m}`)
    lines.push(`increments: ${incAcknowledged} acknowledged, ${incAttempted} attempted, counter = ${counter}`)
    lines.push(`after: pool ${pool.totalCount} connections, ${pool.idleCount} idle, ${pool.waitingCount} waiting; ` +
      `${problem === undefined ? "no backend busy, no advisory lock" : problem}`)
    if (timedOut === 0) violations.push("no request timed out: the scenario did not interrupt anything")
    // NotFound never happens here (no get); any other failure is the store's trouble
    if (total - completed - timedOut > 0) violations.push(`${total - completed - timedOut} requests failed with an error`)
  })

  try {
    const acquire = Effect.acquireRelease(
      Effect.succeed(pool),
      () => Effect.promise(() => pool.end()).pipe(Effect.interruptible, Effect.timeoutOption(2000))
    )
    await Effect.runPromise(
      program.pipe(
        Effect.scoped,
        Effect.provide(PgClient.layerFromPool({ acquire, applicationName: APP }).pipe(Layer.provide(Reactivity.layer)))
      )
    )
  } finally {
    await admin.end().catch(() => undefined)
    await server.stop()
  }
  return { name: "request timeouts on a saturated pool (pool of 4)", lines, violations }
}
