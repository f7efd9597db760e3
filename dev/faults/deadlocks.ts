/**
 * Fault scenario: nested updates taking keys in random orders (issue 15, item 6).
 *
 * Many fibers each run nested calls on a random pair of a few keys, in a
 * random order: `update(a, f)` where `f` updates or increments `b`, then adds
 * one to `a`; a pause inside `f` makes cycles likely. Once on a MemoryStore,
 * once on PostgreSQL with two app instances (two pools) on one table, where
 * the scenario's own server has `deadlock_timeout` lowered to 200 ms. Fewer
 * fibers per instance than its pool has connections: each nested call holds
 * one connection, and a pool smaller than its waiting updates is the known
 * pool-exhaustion cycle (docs/faults.md, "Pool exhaustion"), not this one.
 *
 * - every call ends within `CALL_BOUND`: nothing waits forever;
 * - the only failures are "deadlock", and a failed call writes nothing;
 * - each counter equals its acknowledged increments (one per acknowledged
 *   call that touched it);
 * - afterwards every key can be updated at once, and on PostgreSQL no
 *   advisory lock and no open transaction is left.
 *
 * Found by this scenario (2026-12-07): with more than one fiber per instance on
 * PostgreSQL, calls wait until interrupted. A cycle can run through one
 * instance's in-process key lock (a fiber holding a key's advisory lock waits
 * in the process for a key another of its fibers holds) and PostgreSQL's
 * locks (that fiber waits in PostgreSQL for the other instance): each
 * detector sees only its part. One fiber per instance (the contract's case:
 * two keys, opposite orders) holds.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as MemoryStore from "../../src/MemoryStore.js"
import { startPostgres } from "../postgresServer.js"
import { mulberry32 } from "../random.js"
import type * as KvStore from "../../src/KvStore.js"
import { adminPool, decoder, encoder, instance, leftovers, query, tally } from "./pg.js"
import type { ScenarioResult } from "./shared.js"

/** Far above PostgreSQL's detection (deadlock_timeout 200 ms here) and the contract's "about a second". */
const CALL_BOUND = 5_000
const APP = "effect-kv-faults-deadlocks"

const plusOne = (current: Option.Option<Uint8Array>) =>
  encoder.encode(String(Option.match(current, { onNone: () => 0, onSome: (v) => Number(decoder.decode(v)) }) + 1))

interface Outcome {
  readonly calls: number
  readonly acknowledged: number
  readonly deadlocks: number
  readonly slowest: number
  readonly lines: ReadonlyArray<string>
  readonly violations: ReadonlyArray<string>
}

interface Traffic {
  readonly fibers: number
  readonly ops: number
  readonly keys: number
  /** The longest pause inside an update's function, between holding its key and taking the other. */
  readonly maxPause: number
}

/** `fibers` fibers per store × `ops` nested calls on `keys` keys; the invariants checked through `stores[0]`. */
const nestedTraffic = (label: string, stores: ReadonlyArray<KvStore.Service>, traffic: Traffic) =>
  Effect.gen(function*() {
    const { fibers, maxPause, ops } = traffic
    const KEYS = traffic.keys
    const keys = Array.from({ length: KEYS }, (_, k) => `${label.replace(/\W+/g, "-")}/${k}`)
    const acknowledged = new Map<string, number>()
    const failures = tally()
    let deadlocks = 0
    let acks = 0
    let stuck = 0
    let slowest = 0

    const fiber = (store: KvStore.Service, seed: number) =>
      Effect.gen(function*() {
        const random = mulberry32(seed)
        for (let i = 0; i < ops; i++) {
          const a = Math.floor(random() * KEYS)
          const b = (a + 1 + Math.floor(random() * (KEYS - 1))) % KEYS
          const pause = Duration.millis(Math.floor(random() * (maxPause + 1)))
          const inner = random() < 0.5
            ? Effect.asVoid(store.update(keys[b]!, (current) => Effect.succeed(plusOne(current))))
            : Effect.asVoid(store.increment(keys[b]!))
          const call = store.update(keys[a]!, (current) =>
            Effect.sleep(pause).pipe(Effect.zipRight(inner), Effect.as(plusOne(current))))
          const t0 = Date.now()
          const result = yield* Effect.either(call).pipe(Effect.disconnect, Effect.timeoutOption(CALL_BOUND))
          slowest = Math.max(slowest, Date.now() - t0)
          if (Option.isNone(result)) {
            // interrupted at the bound; the fiber stops here, so a scenario that finds a hang stays bounded
            stuck++
            return
          }
          if (Either.isRight(result.value)) {
            acks++
            for (const k of [a, b]) acknowledged.set(keys[k]!, (acknowledged.get(keys[k]!) ?? 0) + 1)
          } else if (/deadlock/.test(result.value.left.message)) deadlocks++
          else failures.add(result.value.left.message)
        }
      })

    yield* Effect.forEach(
      stores.flatMap((store, s) => Array.from({ length: fibers }, (_, f) => fiber(store, s * 1000 + f + 1))),
      (f) => f,
      { concurrency: "unbounded", discard: true }
    )

    const violations: Array<string> = []
    let wrong = 0
    for (const key of keys) {
      const stored = Option.match(yield* stores[0]!.getOption(key), { onNone: () => 0, onSome: (v) => Number(decoder.decode(v)) })
      const expected = acknowledged.get(key) ?? 0
      if (stored !== expected) {
        wrong++
        violations.push(`${label}: ${key} holds ${stored}, ${expected} acknowledged increments touched it`)
      }
    }
    // nothing left locked: every key can be updated, from every instance, at once
    for (const store of stores) {
      const free = yield* Effect.forEach(keys, (key) => store.update(key, (current) => Effect.succeed(current.pipe(Option.getOrElse(() => encoder.encode("0"))))), {
        discard: true
      }).pipe(Effect.either, Effect.disconnect, Effect.timeoutOption(5000))
      if (Option.isNone(free) || Either.isLeft(free.value)) violations.push(`${label}: a key could not be updated afterwards`)
    }
    const calls = stores.length * fibers * ops
    if (stuck > 0) violations.push(`${label}: ${stuck} calls did not end within ${CALL_BOUND} ms (waiting forever?)`)
    if (failures.total() > 0) violations.push(`${label}: ${failures.total()} calls failed with something other than a deadlock`)
    if (deadlocks === 0 && stuck === 0) violations.push(`${label}: no deadlock happened: the scenario proved nothing`)
    const lines = [
      `${label}: ${stores.length} × ${fibers} fibers × ${ops} nested calls on ${KEYS} keys = ${calls}: ${acks} acknowledged, ` +
      `${deadlocks} failed "deadlock", ${failures.total()} failed otherwise, ${stuck} past ${CALL_BOUND} ms (that fiber stopped), ` +
      `${calls - acks - deadlocks - failures.total() - stuck} not run; slowest call ${slowest} ms; ` +
      `${KEYS - wrong} of ${KEYS} counters equal their acknowledged increments`,
      ...failures.lines("    ")
    ]
    return { calls, acknowledged: acks, deadlocks, slowest, lines, violations } satisfies Outcome
  })

export const deadlocksScenario = async (): Promise<ScenarioResult> => {
  const lines: Array<string> = []
  const violations: Array<string> = []
  const report = (outcome: Outcome) => {
    lines.push(...outcome.lines)
    violations.push(...outcome.violations)
  }

  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const store = yield* MemoryStore.make()
    report(yield* nestedTraffic("memory", [store], { fibers: 40, ops: 50, keys: 6, maxPause: 2 }))
  })))

  const server = await startPostgres({ ignoreDatabaseUrl: true })
  try {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const admin = yield* adminPool(server.url)
      yield* query(admin, "ALTER SYSTEM SET deadlock_timeout = '200ms'")
      yield* query(admin, "SELECT pg_reload_conf()")
      const stores: Array<KvStore.Service> = []
      for (const name of ["a", "b"]) stores.push(yield* instance(server.url, "kv_faults_deadlocks", 8, `${APP}-${name}`))
      // the contract's case: two keys in opposite orders, one fiber per instance
      report(yield* nestedTraffic("postgres, 1 fiber per instance", stores, { fibers: 1, ops: 40, keys: 2, maxPause: 5 }))
      // many fibers per instance: a cycle may run through both instances' in-process key locks and PostgreSQL's locks
      report(yield* nestedTraffic("postgres, 6 fibers per instance", stores, { fibers: 6, ops: 30, keys: 6, maxPause: 5 }))
      const after = yield* leftovers(admin, `${APP}-%`)
      lines.push(`after: ${after.locks} advisory locks, ${after.open} open transactions`)
      if (after.locks > 0) violations.push(`${after.locks} advisory locks left`)
      if (after.open > 0) violations.push(`${after.open} transactions left open`)
    })))
  } finally {
    await server.stop()
  }
  return { name: "nested updates of random key pairs in random orders (MemoryStore; PostgreSQL, 2 pools)", lines, violations }
}
