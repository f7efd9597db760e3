/**
 * Fault scenario (a): PostgreSQL restarted under contended traffic.
 *
 * Two worker processes (dev/faults/worker.ts) × 50 fibers do idempotent
 * `update`s and plain `increment`s on a few keys, retrying failed calls as an
 * application would, while this process restarts the server twice: once
 * cleanly (fast shutdown), once as a crash (immediate shutdown, crash
 * recovery). Then, from a fresh connection:
 *
 * - every acknowledged update's id is stored, and no id is stored that was not
 *   acknowledged (updates are idempotent: a retry that finds its id keeps the value);
 * - the counter holds at least the acknowledged increments and at most those
 *   plus the failed attempts; the difference (committed, answer lost with the
 *   connection) is reported, not hidden;
 * - each worker exits on its own, within the bound;
 * - no advisory lock and no open transaction is left on the server.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as KvStore from "../../src/KvStore.js"
import * as PostgresStore from "../../src/PostgresStore.js"
import { startRestartable } from "./server.js"
import type { ScenarioResult, WorkerReport } from "./shared.js"
import { COUNTER_KEY, UPDATE_KEYS } from "./shared.js"

const WORKERS = 2
const FIBERS = 50
const OPS = 40
/** Workers stop retrying after this; they must have exited well before `EXIT_BOUND`. */
const DEADLINE = 30_000
const EXIT_BOUND = 45_000

interface Child {
  readonly ready: Promise<void>
  readonly report: Promise<{ readonly report?: WorkerReport; readonly problem?: string }>
}

const workerPath = fileURLToPath(new URL("./worker.ts", import.meta.url))
const tsx = fileURLToPath(new URL("../../node_modules/.bin/tsx", import.meta.url))

const startWorker = (url: string, table: string, id: number): Child => {
  const child = spawn(tsx, [workerPath, url, table, String(id), String(FIBERS), String(OPS), String(DEADLINE)], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stdout = ""
  let stderr = ""
  let onReady = () => {}
  const ready = new Promise<void>((resolve) => (onReady = resolve))
  child.stdout.on("data", (chunk) => {
    stdout += String(chunk)
    if (stdout.startsWith("ready\n")) onReady()
  })
  child.stderr.on("data", (chunk) => (stderr += String(chunk)))
  const report = new Promise<{ report?: WorkerReport; problem?: string }>((resolve) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      resolve({ problem: `worker ${id} did not exit within ${EXIT_BOUND} ms (a fiber is stuck); killed` })
    }, EXIT_BOUND)
    child.on("exit", (code) => {
      clearTimeout(timer)
      onReady()
      const line = stdout.trim().split("\n").pop() ?? ""
      try {
        if (code !== 0) throw new Error(`exit code ${code}`)
        resolve({ report: JSON.parse(line) as WorkerReport })
      } catch (error) {
        resolve({ problem: `worker ${id}: ${String(error)}\n${stderr.slice(-2000)}` })
      }
    })
  })
  return { ready, report }
}

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

export const restartScenario = async (): Promise<ScenarioResult> => {
  const lines: Array<string> = []
  const violations: Array<string> = []
  const server = await startRestartable()
  const table = "kv_faults_restart"
  const withStore = <A, E>(f: (store: KvStore.Service, sql: SqlClient.SqlClient) => Effect.Effect<A, E>) =>
    Effect.runPromise(
      Effect.gen(function*() {
        const store = yield* PostgresStore.make({ table })
        const sql = yield* SqlClient.SqlClient
        return yield* f(store, sql)
      }).pipe(
        Effect.scoped,
        Effect.provide(PgClient.layer({ url: Redacted.make(server.url), maxConnections: 2, applicationName: "effect-kv-faults-check" }))
      )
    )
  try {
    await withStore(() => Effect.void) // creates the table
    const started = Date.now()
    const workers = Array.from({ length: WORKERS }, (_, id) => startWorker(server.url, table, id))
    await Promise.all(workers.map((w) => w.ready))
    lines.push(`workers connected after ${Date.now() - started} ms`)
    await sleep(400)
    lines.push(`restart 1 (fast shutdown) at ${Date.now() - started} ms`)
    await server.restart("fast")
    await sleep(600)
    lines.push(`restart 2 (immediate shutdown: a crash) at ${Date.now() - started} ms`)
    await server.restart("immediate")
    const outcomes = await Promise.all(workers.map((w) => w.report))
    lines.push(`workers done after ${Date.now() - started} ms`)

    const reports: Array<WorkerReport> = []
    for (const outcome of outcomes) {
      if (outcome.problem !== undefined) violations.push(outcome.problem)
      if (outcome.report !== undefined) reports.push(outcome.report)
    }

    const { locks, open, stored } = await withStore((store, sql) =>
      Effect.gen(function*() {
        const stored: Record<string, Array<string>> = {}
        for (const key of [...UPDATE_KEYS, COUNTER_KEY]) {
          const value = yield* store.getOption(key)
          stored[key] = Option.match(value, { onNone: () => [], onSome: (v) => new TextDecoder().decode(v).split(" ") })
        }
        const locks = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory'`
        const open = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()`
        return { stored, locks: locks[0]!.n, open: open[0]!.n }
      })
    )

    let updatesAcknowledged = 0
    for (const key of UPDATE_KEYS) {
      const acknowledged = new Set(reports.flatMap((r) => r.acknowledged[key] ?? []))
      const ids = stored[key]!
      updatesAcknowledged += acknowledged.size
      const storedSet = new Set(ids)
      const lost = [...acknowledged].filter((id) => !storedSet.has(id))
      const extra = ids.filter((id) => !acknowledged.has(id))
      if (ids.length !== storedSet.size) violations.push(`${key}: an id stored twice`)
      if (lost.length > 0) violations.push(`${key}: ${lost.length} acknowledged updates lost, e.g. ${lost.slice(0, 5).join(", ")}`)
      if (extra.length > 0) violations.push(`${key}: ${extra.length} stored updates never acknowledged, e.g. ${extra.slice(0, 5).join(", ")}`)
    }
    const alreadyApplied = reports.reduce((n, r) => n + r.alreadyApplied, 0)
    const incAcknowledged = reports.reduce((n, r) => n + r.increments.acknowledged, 0)
    const incFailed = reports.reduce((n, r) => n + r.increments.failedAttempts, 0)
    const counter = Number(stored[COUNTER_KEY]![0] ?? 0)
    const gaveUp = reports.reduce((n, r) => n + r.gaveUp, 0)
    const errors: Record<string, number> = {}
    for (const r of reports) for (const [m, n] of Object.entries(r.errors)) errors[m] = (errors[m] ?? 0) + n

    lines.push(`${WORKERS} workers × ${FIBERS} fibers × ${OPS} calls = ${WORKERS * FIBERS * OPS} calls`)
    lines.push(`updates: ${updatesAcknowledged} acknowledged, all stored exactly once; ` +
      `${alreadyApplied} retries found their update already committed (answer lost with the connection)`)
    lines.push(`increments: ${incAcknowledged} acknowledged, ${incFailed} failed attempts (retried), counter = ${counter}: ` +
      `${counter - incAcknowledged} committed without an acknowledgement`)
    lines.push(`calls given up at the deadline: ${gaveUp}`)
    lines.push(`failed attempts by error:`)
    for (const [m, n] of Object.entries(errors).sort((a, b) => b[1] - a[1])) lines.push(`  ${n} × ${m}`)
    lines.push(`after: ${locks} advisory locks, ${open} open transactions`)

    if (updatesAcknowledged + incAcknowledged + gaveUp !== WORKERS * FIBERS * OPS && reports.length === WORKERS) {
      violations.push(`calls unaccounted for: ${updatesAcknowledged + incAcknowledged + gaveUp} of ${WORKERS * FIBERS * OPS}`)
    }
    if (gaveUp > 0) violations.push(`${gaveUp} calls never succeeded before the deadline`)
    if (counter < incAcknowledged) violations.push(`counter ${counter} < ${incAcknowledged} acknowledged increments: a write was lost`)
    if (counter > incAcknowledged + incFailed) {
      violations.push(`counter ${counter} > acknowledged + failed attempts (${incAcknowledged + incFailed}): an increment applied twice`)
    }
    if (incFailed + Object.keys(errors).length === 0) violations.push("no call failed: the restarts did not hit the traffic")
    if (locks > 0) violations.push(`${locks} advisory locks left`)
    if (open > 0) violations.push(`${open} transactions left open`)
  } finally {
    await server.stop()
  }
  return { name: "PostgreSQL restarted under contended traffic (2 processes × 50 fibers)", lines, violations }
}
