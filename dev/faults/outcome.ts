/**
 * Fault scenario: writes whose answer is lost after they committed (issue 15, item 1).
 *
 * The window is forced, not waited for: with `synchronous_standby_names` set
 * to a standby that does not exist, every commit of a session whose
 * `synchronous_commit` is on waits (`wait_event = 'SyncRep'`) after it is
 * durable locally; terminating that backend loses the answer of a committed
 * statement. Only the stores' sessions turn `synchronous_commit` on.
 *
 * Two app instances (pools of 4, so concurrent increments coalesce into one
 * statement while another is in flight, and a lone one goes alone) × `FIBERS`
 * fibers increment a few counters, in bursts and paced, while this process
 * opens the window, kills most of the commits seen waiting, closes it (the
 * rest are released and answered), round after round. Then, per counter:
 *
 * - acknowledged ≤ stored ≤ attempted minus those that failed before they
 *   were sent: nothing is counted twice, nothing acknowledged is lost;
 * - no two acknowledged increments answered the same count, and none answered
 *   more than is stored;
 * - every failure says "outcome is unknown", or that the connection was lost
 *   before the statement was sent; no call outlives its bound.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import { startPostgres } from "../postgresServer.js"
import { mulberry32 } from "../random.js"
import type * as KvStore from "../../src/KvStore.js"
import { adminPool, decoder, instance, leftovers, query, sleep, tally, withSetting } from "./pg.js"
import type { ScenarioResult } from "./shared.js"

const POOL = 4
const FIBERS = 25
const OPS = 30
const KEYS = 16
/** Window open this long per round (commits wait, most are killed), then closed for `CLOSED`. */
const OPEN = 300
const CLOSED = 150
const CALL_BOUND = 30_000
const APP = "effect-kv-faults-outcome"

export const outcomeScenario = async (): Promise<ScenarioResult> => {
  const lines: Array<string> = []
  const violations: Array<string> = []
  const server = await startPostgres({ ignoreDatabaseUrl: true })
  const table = "kv_faults_outcome"

  const program = Effect.gen(function*() {
    const admin = yield* adminPool(server.url)
    const syncUrl = withSetting(server.url, "synchronous_commit", "on")
    const stores: Array<KvStore.Service> = []
    for (const name of ["a", "b"]) stores.push(yield* instance(syncUrl, table, POOL, `${APP}-${name}`))
    const keys = Array.from({ length: KEYS }, (_, k) => `c/${k}`)
    yield* Effect.forEach(stores, (store) => store.has("warm"), { discard: true }) // pools open

    const attempted = new Map<string, number>()
    const notSent = new Map<string, number>()
    const answers = new Map<string, Array<number>>()
    const bump = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1)
    const failures = tally()
    let unknown = 0
    let beforeSending = 0
    let stuck = 0

    const fiber = (store: KvStore.Service, seed: number) =>
      Effect.gen(function*() {
        const random = mulberry32(seed)
        for (let i = 0; i < OPS; i++) {
          // bursts (coalesced behind a statement in flight) and paced calls (often alone)
          if (random() < 0.3) yield* sleep(Math.floor(random() * 15))
          const key = keys[Math.floor(random() * keys.length)]!
          bump(attempted, key)
          const result = yield* Effect.either(store.increment(key)).pipe(Effect.disconnect, Effect.timeoutOption(CALL_BOUND))
          if (Option.isNone(result)) {
            stuck++
            continue
          }
          if (Either.isRight(result.value)) {
            answers.set(key, [...(answers.get(key) ?? []), result.value.right])
            continue
          }
          const message = result.value.left.message
          if (/outcome is unknown/.test(message)) unknown++
          else if (/before the statement was sent/.test(message)) {
            beforeSending++
            bump(notSent, key)
          } else failures.add(message)
        }
      })

    let rounds = 0
    let killed = 0
    const openWindow = Effect.zipRight(
      query(admin, "ALTER SYSTEM SET synchronous_standby_names = 'nobody'"),
      query(admin, "SELECT pg_reload_conf()")
    )
    const closeWindow = Effect.zipRight(
      query(admin, "ALTER SYSTEM RESET synchronous_standby_names"),
      query(admin, "SELECT pg_reload_conf()")
    )
    // most commits seen waiting are killed (answer lost); the rest are released when the window closes
    const killSome = Effect.map(
      query<{ pid: number }>(
        admin,
        `SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name LIKE $1 AND wait_event = 'SyncRep' AND random() < 0.7`,
        [`${APP}-%`]
      ),
      (rows) => (killed += rows.length)
    )
    const controller = Effect.forever(Effect.gen(function*() {
      rounds++
      yield* openWindow
      for (let t = 0; t < OPEN; t += 25) {
        yield* sleep(25)
        yield* killSome
      }
      yield* closeWindow
      yield* sleep(CLOSED)
    })).pipe(Effect.ensuring(closeWindow))

    const started = Date.now()
    const breaking = yield* Effect.fork(controller)
    yield* Effect.forEach(
      stores.flatMap((store, s) => Array.from({ length: FIBERS }, (_, f) => fiber(store, s * 1000 + f + 1))),
      (f) => f,
      { concurrency: "unbounded", discard: true }
    )
    yield* Fiber.interrupt(breaking)
    const elapsed = Date.now() - started

    let acknowledged = 0
    let stored = 0
    let twice = 0
    for (const key of keys) {
      const value = Option.match(yield* stores[0]!.getOption(key), { onNone: () => 0, onSome: (v) => Number(decoder.decode(v)) })
      const acked = answers.get(key) ?? []
      const tried = attempted.get(key) ?? 0
      const mayHave = tried - (notSent.get(key) ?? 0)
      acknowledged += acked.length
      stored += value
      if (value < acked.length) violations.push(`${key}: ${value} stored < ${acked.length} acknowledged: an acknowledged increment was lost`)
      if (value > mayHave) {
        twice += value - mayHave
        violations.push(`${key}: ${value} stored > ${mayHave} attempted (and sent): an increment counted twice`)
      }
      if (new Set(acked).size !== acked.length) violations.push(`${key}: two acknowledged increments answered the same count`)
      const highest = Math.max(0, ...acked)
      if (highest > value) violations.push(`${key}: an increment answered ${highest}, only ${value} stored`)
    }
    const after = yield* leftovers(admin, `${APP}-%`)

    const total = stores.length * FIBERS * OPS
    lines.push(`${stores.length} pools of ${POOL} × ${FIBERS} fibers × ${OPS} increments of ${KEYS} counters = ${total} calls in ${elapsed} ms`)
    lines.push(`${rounds} rounds of the window (${OPEN} ms open, ${CLOSED} ms closed): ${killed} commits killed while waiting for the standby`)
    lines.push(`${acknowledged} acknowledged, ${unknown} failed "outcome is unknown", ${beforeSending} failed before sending, ` +
      `${failures.total()} failed otherwise, ${stuck} past ${CALL_BOUND} ms`)
    lines.push(`stored ${stored} in all: ${stored - acknowledged} committed without an acknowledgement ` +
      `(of ${unknown} unknown outcomes), ${twice} counted twice`)
    lines.push(...failures.lines())
    lines.push(`after: ${after.locks} advisory locks, ${after.open} open transactions`)
    if (failures.total() > 0) violations.push(`${failures.total()} failures neither "outcome is unknown" nor before sending`)
    if (stuck > 0) violations.push(`${stuck} calls did not end within ${CALL_BOUND} ms`)
    if (acknowledged + unknown + beforeSending + failures.total() + stuck !== total) violations.push("calls unaccounted for")
    if (killed === 0 || unknown === 0) violations.push("no commit's answer was lost: the window never caught a commit")
    if (acknowledged === 0) violations.push("nothing was acknowledged: the scenario proved nothing")
    if (after.locks > 0) violations.push(`${after.locks} advisory locks left`)
    if (after.open > 0) violations.push(`${after.open} transactions left open`)
  })

  try {
    await Effect.runPromise(Effect.scoped(program))
  } finally {
    await server.stop()
  }
  return { name: "committed writes whose answer is lost (forced SyncRep window, 2 pools × 25 fibers)", lines, violations }
}
