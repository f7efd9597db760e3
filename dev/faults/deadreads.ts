/**
 * Fault scenario: reads right after their pooled connections were killed (issue 15, item 7).
 *
 * node-postgres can hand out a killed connection once before it notices the
 * closed socket; reads are retried once on a fresh connection. Here readers
 * read without pause (single gets and has, which coalesce, getMany, count,
 * a stream page) through a warm pool of 4 while every backend of the pool is
 * killed, round after round: no read may fail, and each must end within its bound.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import { startPostgres } from "../postgresServer.js"
import type * as KvStore from "../../src/KvStore.js"
import { adminPool, encoder, instance, query, sleep, tally } from "./pg.js"
import type { ScenarioResult } from "./shared.js"

const POOL = 4
const READERS = 20
const ROUNDS = 15
/** Between kills: the pool is warm again by then, and no read meets two kills. */
const BETWEEN = 250
const CALL_BOUND = 10_000
const APP = "effect-kv-faults-deadreads"

export const deadreadsScenario = async (): Promise<ScenarioResult> => {
  const lines: Array<string> = []
  const violations: Array<string> = []
  const server = await startPostgres({ ignoreDatabaseUrl: true })

  const program = Effect.gen(function*() {
    const admin = yield* adminPool(server.url)
    const store = yield* instance(server.url, "kv_faults_deadreads", POOL, APP)
    yield* Effect.forEach([0, 1, 2], (i) => store.set(`r/${i}`, encoder.encode(String(i))), { discard: true })
    const reads: ReadonlyArray<(s: KvStore.Service) => Effect.Effect<unknown, KvStore.KvError>> = [
      (s) => s.getOption("r/1"),
      (s) => s.has("r/2"),
      (s) => s.getMany(["r/0", "r/1", "missing"]),
      (s) => s.count("r/"),
      (s) => Stream.runDrain(Stream.take(s.streamEntries("r/", { batchSize: 2 }), 3))
    ]
    let running = true
    let ok = 0
    let stuck = 0
    const failures = tally()
    const reader = (n: number) =>
      Effect.whileLoop({
        while: () => running,
        body: () =>
          Effect.either(reads[n % reads.length]!(store)).pipe(
            Effect.disconnect,
            Effect.timeoutOption(CALL_BOUND),
            Effect.map((result) => {
              if (Option.isNone(result)) stuck++
              else if (Either.isRight(result.value)) ok++
              else failures.add(result.value.left.message)
            })
          ),
        step: () => {}
      })
    const started = Date.now()
    const reading = yield* Effect.fork(Effect.all(Array.from({ length: READERS }, (_, n) => reader(n)), { concurrency: "unbounded", discard: true }))
    let killed = 0
    for (let round = 0; round < ROUNDS; round++) {
      yield* sleep(BETWEEN)
      killed += (yield* query(admin, "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", [APP])).length
    }
    yield* sleep(BETWEEN)
    running = false
    yield* reading
    const elapsed = Date.now() - started
    lines.push(`${READERS} readers on a pool of ${POOL} for ${elapsed} ms, every backend of the pool killed ${ROUNDS} times ` +
      `(${killed} backends): ${ok} reads ok, ${failures.total()} failed, ${stuck} past ${CALL_BOUND} ms`)
    lines.push(...failures.lines())
    if (failures.total() > 0) violations.push(`${failures.total()} reads failed`)
    if (stuck > 0) violations.push(`${stuck} reads did not end within ${CALL_BOUND} ms`)
    if (killed < ROUNDS) violations.push(`only ${killed} backends killed in ${ROUNDS} rounds: the kills missed the pool`)
  })

  try {
    await Effect.runPromise(Effect.scoped(program))
  } finally {
    await server.stop()
  }
  return { name: `reads while every backend of a warm pool is killed (${ROUNDS} rounds)`, lines, violations }
}
