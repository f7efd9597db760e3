/**
 * Fault scenario: a large `setMany` next to other sessions (issue 15, item 2).
 *
 * One advisory lock per key in one transaction used to fill PostgreSQL's
 * shared lock table (sized for the whole server), so a 40,000-key batch
 * failed with "out of shared memory" and made unrelated sessions on other
 * tables fail with it. Now a batch above 64 keys takes one table lock.
 *
 * Bystanders (another application: transactions with a few advisory locks of
 * their own and an insert into their own table) run all along, while:
 *
 * 1. a `setMany` of `BIG` keys runs, and updates hit some of its keys: it
 *    succeeds, all of it is stored, no bystander fails, and the peak number of
 *    locks the store's sessions hold at once is measured;
 * 2. a `setMany` of `BIGGER` keys is killed (`pg_terminate_backend`) once it
 *    has written: it fails with `KvError`, and none of it is stored (all or nothing).
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import Pg from "pg"
import { startPostgres } from "../postgresServer.js"
import { adminPool, decoder, encoder, instance, leftovers, query, sleep, tally } from "./pg.js"
import type { ScenarioResult } from "./shared.js"

const BIG = 60_000
const BIGGER = 100_000
const APP = "effect-kv-faults-locktable"
const BATCH_BOUND = 60_000

export const locktableScenario = async (): Promise<ScenarioResult> => {
  const lines: Array<string> = []
  const violations: Array<string> = []
  const server = await startPostgres({ ignoreDatabaseUrl: true })

  const program = Effect.gen(function*() {
    const admin = yield* adminPool(server.url)
    const store = yield* instance(server.url, "kv_faults_locktable", 4, APP)
    yield* query(admin, "CREATE TABLE bystander (id serial PRIMARY KEY, at timestamptz DEFAULT now())")

    // another application's transactions, on its own table, with advisory locks of its own
    const bystanders = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const pool = new Pg.Pool({ connectionString: server.url, max: 3, application_name: "effect-kv-faults-bystander" })
        pool.on("error", () => {})
        return pool
      }),
      (pool) => Effect.promise(() => pool.end().catch(() => undefined))
    )
    let running = true
    let bystanderOk = 0
    const bystanderErrors = tally()
    const bystander = (n: number) =>
      Effect.promise(async () => {
        while (running) {
          const client = await bystanders.connect()
          try {
            await client.query("BEGIN")
            await client.query("SELECT pg_advisory_xact_lock(-1000000 - $1::int * 10 - g) FROM generate_series(1, 5) g", [n])
            await client.query("INSERT INTO bystander DEFAULT VALUES")
            await client.query("COMMIT")
            bystanderOk++
          } catch (error) {
            bystanderErrors.add((error as Error).message)
            await client.query("ROLLBACK").catch(() => {})
          } finally {
            client.release()
          }
        }
      })
    const bystanding = yield* Effect.fork(Effect.all([0, 1, 2].map(bystander), { concurrency: "unbounded", discard: true }))

    // the most locks the store's sessions hold at once
    let peakLocks = 0
    const watching = yield* Effect.fork(Effect.forever(Effect.zipRight(
      Effect.map(
        query<{ n: number }>(admin, `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE a.application_name = $1`, [APP]),
        (rows) => (peakLocks = Math.max(peakLocks, rows[0]!.n))
      ),
      sleep(10)
    )))

    // 1. the big batch, with updates of some of its keys until it is done
    const entries = Array.from({ length: BIG }, (_, i) => `big/${String(i).padStart(6, "0")}`)
    const contested = entries.slice(0, 8)
    let updating = true
    let updates = 0
    const updateErrors = tally()
    const updater = (key: string) =>
      Effect.whileLoop({
        while: () => updating,
        body: () =>
          Effect.either(store.update(key, (current) =>
            Effect.succeed(encoder.encode(`${Option.match(current, { onNone: () => "", onSome: (v) => decoder.decode(v) })}.u`)))).pipe(
              Effect.map(Either.match({ onLeft: (e) => updateErrors.add(e.message), onRight: () => updates++ }))
            ),
        step: () => {}
      })
    const updaters = yield* Effect.fork(Effect.all(contested.map(updater), { concurrency: "unbounded", discard: true }))
    yield* sleep(100)
    let t0 = Date.now()
    const written = yield* Effect.either(store.setMany(entries.map((key) => [key, encoder.encode(contested.includes(key) ? "S" : key)] as const))).pipe(
      Effect.disconnect,
      Effect.timeoutOption(BATCH_BOUND)
    )
    const bigMillis = Date.now() - t0
    yield* sleep(100)
    updating = false
    yield* Fiber.join(updaters)
    const bigPeak = peakLocks
    const stored = yield* store.count("big/")
    const contestedValues = yield* Effect.forEach(contested, (key) => Effect.map(store.get(key), (v) => decoder.decode(v)))
    if (Option.isNone(written)) violations.push(`setMany of ${BIG} keys did not end within ${BATCH_BOUND} ms`)
    else if (Either.isLeft(written.value)) violations.push(`setMany of ${BIG} keys failed: ${written.value.left.message}`)
    if (stored !== BIG) violations.push(`${stored} of ${BIG} keys stored`)
    for (const [i, value] of contestedValues.entries()) {
      // the batch's "S", then only updates that read it (or updates, then the batch's "S" over them)
      if (!/^S(\.u)*$/.test(value)) violations.push(`${contested[i]}: ${value}: an update and the batch interleaved`)
    }
    if (updateErrors.total() > 0) violations.push(`${updateErrors.total()} updates of the batch's keys failed`)
    lines.push(`setMany of ${BIG} keys: ${Option.isSome(written) && Either.isRight(written.value) ? "ok" : "FAILED"} in ${bigMillis} ms, ` +
      `${stored} stored; ${updates} updates of ${contested.length} of its keys meanwhile; ` +
      `at most ${bigPeak} locks held at once by the store's sessions`)

    // 2. a bigger batch killed once it has written: all or nothing
    const bigger = Array.from({ length: BIGGER }, (_, i) => [`bigger/${String(i).padStart(6, "0")}`, encoder.encode("x")] as const)
    t0 = Date.now()
    const killedBatch = yield* Effect.fork(Effect.either(store.setMany(bigger)).pipe(Effect.disconnect, Effect.timeoutOption(BATCH_BOUND)))
    let killed = 0
    for (let i = 0; i < 2000 && killed === 0; i++) {
      const done = yield* Fiber.poll(killedBatch)
      if (Option.isSome(done)) break
      yield* sleep(5)
      killed = (yield* query(
        admin,
        `SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND backend_xid IS NOT NULL`,
        [APP]
      )).length
    }
    const killedAfter = Date.now() - t0
    const second = yield* Fiber.join(killedBatch)
    const biggerStored = yield* store.count("bigger/")
    if (Option.isNone(second)) violations.push(`the killed setMany did not end within ${BATCH_BOUND} ms`)
    else if (killed > 0 && Either.isRight(second.value)) violations.push("the killed setMany succeeded")
    if (biggerStored !== 0 && biggerStored !== BIGGER) violations.push(`${biggerStored} of ${BIGGER} keys of the killed setMany stored: not all or nothing`)
    if (killed === 0) violations.push(`the setMany of ${BIGGER} keys ended before it could be killed`)
    lines.push(`setMany of ${BIGGER} keys killed after ${killedAfter} ms: ` +
      `${Option.isSome(second) && Either.isLeft(second.value) ? `KvError "${second.value.left.message.slice(0, 120)}"` : "no error"}; ` +
      `${biggerStored} of its keys stored`)

    running = false
    yield* Fiber.join(bystanding)
    yield* Fiber.interrupt(watching)
    lines.push(`bystanders: ${bystanderOk} transactions committed, ${bystanderErrors.total()} failed`, ...bystanderErrors.lines())
    if (bystanderErrors.total() > 0) violations.push(`${bystanderErrors.total()} bystander transactions failed`)
    if (bystanderOk === 0) violations.push("no bystander transaction ran: the scenario proved nothing")
    const after = yield* leftovers(admin, APP)
    lines.push(`after: ${after.locks} advisory locks, ${after.open} open transactions`)
    if (after.locks > 0) violations.push(`${after.locks} advisory locks left`)
    if (after.open > 0) violations.push(`${after.open} transactions left open`)
  })

  try {
    await Effect.runPromise(Effect.scoped(program))
  } finally {
    await server.stop()
  }
  return { name: `a setMany of ${BIG / 1000}k and one of ${BIGGER / 1000}k keys (killed) next to bystander sessions`, lines, violations }
}
