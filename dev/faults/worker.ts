/**
 * One application process for `restart.ts`: `FIBERS` fibers, each doing
 * `OPS` contended writes on a few keys through PostgresStore, retrying a
 * failed call the way an application would (a short pause, then again) until
 * it is acknowledged or the deadline passes. Prints one JSON line with what it
 * saw, and exits on its own.
 *
 * - `update` appends the call's own id to the key's list of ids, idempotently:
 *   a retry whose id is already there (the earlier attempt committed but its
 *   answer was lost with the connection) keeps the value and counts as
 *   `alreadyApplied`. So the stored ids must be exactly the acknowledged ones.
 * - `increment` cannot be made idempotent: an attempt that failed may have
 *   committed. The counter must hold at least the acknowledged increments and
 *   at most those plus the failed attempts.
 *
 * argv: url table workerId fibers ops deadlineMillis
 */
import { PgClient } from "@effect/sql-pg"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { mulberry32 } from "../random.js"
import * as KvStore from "../../src/KvStore.js"
import * as PostgresStore from "../../src/PostgresStore.js"
import type { WorkerReport } from "./shared.js"
import { COUNTER_KEY, UPDATE_KEYS } from "./shared.js"

const [url, table, worker, fibersText, opsText, deadlineText] = process.argv.slice(2)
const fibers = Number(fibersText)
const ops = Number(opsText)
const deadline = Date.now() + Number(deadlineText)

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const program = Effect.gen(function*() {
  const store = yield* KvStore.KvStore
  // the parent starts its restarts once every worker is connected
  process.stdout.write("ready\n")
  const acknowledged: Record<string, Array<string>> = Object.fromEntries(UPDATE_KEYS.map((k) => [k, []]))
  const errors: Record<string, number> = {}
  let alreadyApplied = 0
  let incAcknowledged = 0
  let incFailed = 0
  let gaveUp = 0
  const started = Date.now()

  /** Runs `attempt` until it succeeds or the deadline passes; `onFailure` sees each failed attempt. */
  const retrying = <A>(attempt: Effect.Effect<A, KvStore.KvError>, onFailure: () => void) =>
    Effect.gen(function*() {
      for (let tries = 0;; tries++) {
        const result = yield* Effect.either(attempt)
        if (result._tag === "Right") return Option.some(result.right)
        onFailure()
        const message = result.left.message.split("\n")[0]!.replace(/\d+/g, "N").slice(0, 160)
        errors[message] = (errors[message] ?? 0) + 1
        if (Date.now() > deadline) {
          gaveUp++
          return Option.none<A>()
        }
        yield* Effect.sleep(Duration.millis(Math.min(20 * 2 ** tries, 250)))
      }
    })

  const fiber = (f: number) =>
    Effect.gen(function*() {
      const random = mulberry32(Number(worker) * 1000 + f)
      for (let i = 0; i < ops; i++) {
        if (random() < 0.5) {
          const key = UPDATE_KEYS[Math.floor(random() * UPDATE_KEYS.length)]!
          const id = `${worker}.${f}.${i}`
          let retry = false
          const done = yield* retrying(
            store.update(key, (current) =>
              Effect.sync(() => {
                const ids = Option.match(current, { onNone: () => "", onSome: (v) => decoder.decode(v) })
                const present = ids.split(" ").includes(id)
                if (present && retry) alreadyApplied++
                return present ? encoder.encode(ids) : encoder.encode(ids === "" ? id : `${ids} ${id}`)
              })),
            () => (retry = true)
          )
          if (Option.isSome(done)) acknowledged[key]!.push(id)
        } else {
          const done = yield* retrying(store.increment(COUNTER_KEY), () => incFailed++)
          if (Option.isSome(done)) incAcknowledged++
        }
      }
    })

  yield* Effect.forEach(Array.from({ length: fibers }, (_, f) => f), fiber, { concurrency: "unbounded", discard: true })
  const report: WorkerReport = {
    worker,
    acknowledged,
    alreadyApplied,
    increments: { acknowledged: incAcknowledged, failedAttempts: incFailed },
    errors,
    gaveUp,
    millis: Date.now() - started
  }
  process.stdout.write(JSON.stringify(report) + "\n")
})

Effect.runPromise(
  program.pipe(
    Effect.provide(PostgresStore.layer({ table, createTable: false })),
    Effect.provide(PgClient.layer({
      url: Redacted.make(url!),
      maxConnections: 10,
      connectTimeout: Duration.seconds(2),
      applicationName: `effect-kv-faults-worker-${worker}`
    }))
  )
).then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`worker ${worker} failed: ${String(error)}\n`)
    process.exit(2)
  }
)
