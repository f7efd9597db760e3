/**
 * Faults against a real PostgreSQL (test/globalSetup.ts), no mocks: what an
 * HTTP server, a busy pool, a killed backend or a timeout does to the store.
 *
 * - interruption while waiting for a pooled connection leaks nothing, for
 *   every operation, and a storm of random interruptions leaves the pool idle,
 *   no advisory lock, and no acknowledged increment lost;
 * - fibers forked inside an update function write like any other fiber once
 *   the update has ended (never inside another caller's transaction);
 * - values over 64 MiB are refused before any I/O, and an oversized row put
 *   there by hand is refused on read without harm to the process;
 * - hostile arguments give the same refusal on MemoryStore and PostgresStore;
 * - a killed backend and `statement_timeout` give typed errors, nothing written.
 *
 * Every wait that a regression could make endless is bounded by a real-time
 * race (`bounded`), so a leak fails the test instead of hanging it. Real sleeps
 * are short and only give a fiber time to reach a wait; no assertion is on timing.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import Pg from "pg"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import { mulberry32 } from "../dev/random.js"
import { hostileCases, runHostileCase } from "../src/conformance.js"
import { keyHash } from "../src/core/hash.js"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as PostgresStore from "../src/PostgresStore.js"

const databaseUrl = inject("databaseUrl")
const run = randomUUID().slice(0, 8)
let tables = 0
/** A table name no other test or run uses. */
const freshTable = (what: string) => `kv_f${what}_${run}_${tables++}`
/** An application_name that identifies one pool's backends in pg_stat_activity. */
const freshApp = (what: string) => `effect-kv-faults-${what}-${run}-${tables++}`

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (s: string) => encoder.encode(s)
const text = (b: Uint8Array) => decoder.decode(b)
/** The `key_hash` column's value for `key`: a signed int64, as text. */
const keyHashText = (key: string): string => BigInt.asIntN(64, keyHash(key)).toString()

/** A real sleep (the tests run on the live clock). */
const sleep = (millis: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, millis)))

/**
 * `effect`, failing the test if it has not ended after `millis` of real time.
 * Disconnected: a fiber stuck where interruption cannot reach does not hold the race.
 */
const bounded = (millis: number, what: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.disconnect(effect).pipe(
    Effect.timeoutFail({ duration: millis, onTimeout: () => new Error(`${what}: not done after ${millis} ms`) }),
    Effect.orDie
  )

/** Polls `check` until it returns `undefined` (fine) or `millis` have passed (fails with its last complaint). */
const eventually = <E, R>(millis: number, check: Effect.Effect<string | undefined, E, R>) =>
  Effect.gen(function*() {
    const deadline = Date.now() + millis
    for (;;) {
      const complaint = yield* check
      if (complaint === undefined) return
      if (Date.now() > deadline) return yield* Effect.die(new Error(complaint))
      yield* sleep(10)
    }
  })

interface Instance {
  readonly store: KvStore.Service
  readonly sql: SqlClient.SqlClient
  readonly pool: Pg.Pool
  readonly app: string
}

/**
 * An app instance: its own `pg` pool (so the test can see how many of its
 * connections are out), `PgClient` on it, and the store; all closed with the
 * test's scope (the pool's end bounded: a leaked connection must not hang it).
 */
const instance = (options: { readonly table: string; readonly max: number; readonly app: string; readonly url?: string }) =>
  Effect.gen(function*() {
    const pool = new Pg.Pool({
      connectionString: options.url ?? databaseUrl,
      max: options.max,
      application_name: options.app
    })
    pool.on("error", () => {})
    const acquire = Effect.acquireRelease(
      Effect.succeed(pool),
      // interruptible: a finalizer runs uninterruptibly, and a pool with a leaked connection never ends
      () => Effect.promise(() => pool.end()).pipe(Effect.interruptible, Effect.timeoutOption(1000))
    )
    const client = yield* Layer.build(
      PgClient.layerFromPool({ acquire, applicationName: options.app }).pipe(Layer.provide(Reactivity.layer))
    )
    const sql = Context.get(client, SqlClient.SqlClient)
    const store = Context.get(
      yield* Layer.build(PostgresStore.layer({ table: options.table }).pipe(Layer.provide(Layer.succeedContext(client)))),
      KvStore.KvStore
    )
    return { store, sql, pool, app: options.app } satisfies Instance
  })

/** A plain pool for inspecting the server, as a DBA would. */
const admin = Effect.map(instance({ table: freshTable("admin"), max: 2, app: freshApp("admin") }), (i) => i.sql)

/** Why the instance's pool is not idle (a connection out, a caller waiting), or `undefined`. */
const poolProblem = (i: Instance): string | undefined =>
  i.pool.waitingCount > 0 || i.pool.idleCount !== i.pool.totalCount
    ? `pool not idle: ${i.pool.totalCount} connections, ${i.pool.idleCount} idle, ${i.pool.waitingCount} callers waiting`
    : undefined

/** The instance's backends that are not idle (in a transaction, or running), as the server sees them. */
const busyBackends = (sql: SqlClient.SqlClient, app: string) =>
  sql.unsafe<{ pid: number; state: string; query: string }>(
    `SELECT pid, state, query FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`,
    [app]
  ).withoutTransform

/** Advisory locks held or awaited by the instance's backends. */
const advisoryLocks = (sql: SqlClient.SqlClient, app: string) =>
  sql.unsafe<{ pid: number; granted: boolean }>(
    `SELECT l.pid, l.granted FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND a.application_name = $1`,
    [app]
  ).withoutTransform

/** Fails unless the instance's pool and its backends settle idle, with no advisory lock, within 3 s. */
const settlesIdle = (i: Instance, sql: SqlClient.SqlClient) =>
  eventually(
    3000,
    Effect.gen(function*() {
      const pool = poolProblem(i)
      if (pool !== undefined) return pool
      const busy = yield* busyBackends(sql, i.app)
      if (busy.length > 0) return `backends not idle: ${JSON.stringify(busy)}`
      const locks = yield* advisoryLocks(sql, i.app)
      if (locks.length > 0) return `advisory locks left: ${JSON.stringify(locks)}`
      return undefined
    })
  )

/**
 * Proves the pool can again hand out `n` connections at once: `n` updates of
 * distinct keys whose functions each wait until all `n` are inside. One
 * connection short and they never all get in: the bound fails the test.
 */
const servesConcurrently = (store: KvStore.Service, n: number, what: string) =>
  Effect.gen(function*() {
    const inside = yield* Effect.makeLatch(false)
    let count = 0
    const arrive = Effect.suspend(() => (++count === n ? inside.open : Effect.void))
    yield* Effect.all(
      Array.from({ length: n }, (_, j) =>
        store.update(`barrier/${what}/${j}`, () => Effect.zipRight(arrive, inside.await).pipe(Effect.as(bytes("b"))))),
      { concurrency: "unbounded", discard: true }
    ).pipe(bounded(5000, `${n} concurrent updates after ${what}`))
  })

/** The typed failure of `exit`, failing the test when there is none. */
const failureOf = <A, E>(exit: Exit.Exit<A, E>, what: string): E => {
  if (Exit.isSuccess(exit)) assert.fail(`${what}: succeeded, expected a failure`)
  const failure = Cause.failureOption((exit as Exit.Failure<A, E>).cause)
  if (Option.isNone(failure)) assert.fail(`${what}: expected a typed failure, got ${Cause.pretty((exit as Exit.Failure<A, E>).cause)}`)
  return Option.getOrThrow(failure)
}

const expectKvError = <A, E>(exit: Exit.Exit<A, E>, op: string, reason: "InvalidArgument" | "Backend"): KvStore.KvError => {
  const error = failureOf(exit, op)
  assert.instanceOf(error, KvStore.KvError, `${op}: ${String(error)}`)
  const kv = error as unknown as KvStore.KvError
  assert.strictEqual(kv.reason, reason, kv.message)
  assert.strictEqual(kv.op, op, kv.message)
  return kv
}

/** Every operation, on key `k` (or all keys), as a request handler would call it; its outcome does not matter here. */
const operations: ReadonlyArray<readonly [string, (store: KvStore.Service, k: string) => Effect.Effect<unknown, unknown>]> = [
  ["get", (s, k) => s.get(k)],
  ["getOption", (s, k) => s.getOption(k)],
  ["has", (s, k) => s.has(k)],
  ["set", (s, k) => s.set(k, bytes("v"))],
  ["setIfAbsent", (s, k) => s.setIfAbsent(k, bytes("v"))],
  ["increment", (s, k) => s.increment(k + "/n")],
  ["expire", (s, k) => s.expire(k, "1 hour")],
  ["timeToLive", (s, k) => s.timeToLive(k)],
  ["delete", (s, k) => s.delete(k)],
  ["keys", (s, k) => s.keys(k)],
  ["update", (s, k) => s.update(k, () => Effect.succeed(bytes("u")))],
  ["cleanup", (s) => s.cleanup]
]

describe("PostgresStore faults", () => {
  describe("interruption while waiting for a pooled connection leaks nothing (pool of 2)", () => {
    for (const [op, call] of operations) {
      it.scopedLive(op, () =>
        Effect.gen(function*() {
          const sql = yield* admin
          const i = yield* instance({ table: freshTable("leak"), max: 2, app: freshApp("leak") })
          const { store } = i
          yield* store.set("k", bytes("v"))

          // two updates hold both connections until released
          const release = yield* Deferred.make<void>()
          const started = [yield* Deferred.make<void>(), yield* Deferred.make<void>()] as const
          const holders = yield* Effect.forEach(started, (s, j) =>
            Effect.forkDaemon(store.update(`hold/${j}`, () =>
              Deferred.succeed(s, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("h"))))))
          yield* Effect.forEach(started, Deferred.await).pipe(bounded(5000, "the holders' start"))

          // daemons: a fiber stuck where interruption cannot reach must not hold the test's end
          const calling = yield* Effect.forkDaemon(call(store, "k"))
          yield* sleep(50)
          assert.isTrue(Option.isNone(yield* Fiber.poll(calling)), `${op} did not wait for the exhausted pool`)
          // interrupt without waiting (an interruption that is not heard must not block the test):
          // the call ends while the pool is still exhausted, as a request whose client left must
          yield* Fiber.interruptFork(calling)
          const exit = yield* Fiber.await(calling).pipe(bounded(2000, `the interrupted ${op}, while the pool is exhausted`))
          assert.isTrue(Exit.isInterrupted(exit), `the interrupted ${op} ended with ${String(exit)}`)
          // then the pool frees up: the connection the interrupted call was waiting for must come back
          yield* Deferred.succeed(release, undefined)
          yield* Fiber.joinAll(holders).pipe(bounded(5000, "the holders"))

          // the pool serves again: both connections at once, and a burst of fresh calls
          yield* servesConcurrently(store, 2, op)
          yield* Effect.forEach(operations, ([, other], j) => other(store, `fresh/${j}`).pipe(Effect.exit), {
            concurrency: "unbounded",
            discard: true
          }).pipe(bounded(5000, "fresh calls"))
          yield* settlesIdle(i, sql)
        }))
    }
  })

  it.scopedLive("a storm of 200 random calls, 30% interrupted at a random moment, on a pool of 3", () =>
    Effect.gen(function*() {
      const sql = yield* admin
      const i = yield* instance({ table: freshTable("storm"), max: 3, app: freshApp("storm") })
      const { store } = i
      const random = mulberry32(7)
      const keys = ["s/0", "s/1", "s/2", "s/3"]
      const counter = "s/counter"
      let attempted = 0
      let acknowledged = 0
      const unexpected: Array<string> = []

      const pick = <A>(xs: ReadonlyArray<A>): A => xs[Math.floor(random() * xs.length)]!
      const randomCall = (): readonly [string, Effect.Effect<unknown, unknown>] => {
        const key = pick(keys)
        const r = random()
        if (r < 0.25) {
          return ["increment", Effect.suspend(() => {
            attempted++
            return Effect.tap(store.increment(counter), () => Effect.sync(() => acknowledged++))
          })]
        }
        if (r < 0.45) {
          return ["update", store.update(key, (current) =>
            Effect.as(sleep(Math.floor(random() * 3)), bytes(`${Option.match(current, { onNone: () => "", onSome: text })}.`.slice(-64))))]
        }
        const [op, call] = pick(operations.filter(([name]) => name !== "increment" && name !== "update"))
        return [op, call(store, key)]
      }

      const fibers = yield* Effect.forEach(Array.from({ length: 200 }), () =>
        Effect.gen(function*() {
          const [op, call] = randomCall()
          const interrupt = random() < 0.3
          const delay = Math.floor(random() * 21)
          const fiber = yield* Effect.forkDaemon(call)
          if (interrupt) yield* Effect.forkDaemon(Effect.zipRight(sleep(delay), Fiber.interrupt(fiber)))
          return { op, interrupt, fiber }
        }))
      yield* Effect.forEach(fibers, ({ fiber, interrupt, op }) =>
        Effect.map(Fiber.await(fiber), (exit) => {
          if (Exit.isSuccess(exit) || (interrupt && Exit.isInterrupted(exit))) return
          const failure = Cause.failureOption(exit.cause)
          // NotFound from get/timeToLive is an answer; anything else (KvError, a defect) is not
          if (Option.isSome(failure) && failure.value instanceof KvStore.NotFound) return
          unexpected.push(`${op}: ${Cause.pretty(exit.cause).split("\n")[0]}`)
        }), { discard: true }).pipe(bounded(20_000, "the storm's calls"))

      assert.deepStrictEqual(unexpected, [], "a call that was not interrupted failed")
      yield* settlesIdle(i, sql)
      yield* servesConcurrently(store, 3, "the storm")
      // interrupted increments may or may not have committed; acknowledged ones all did
      const stored = Option.match(yield* store.getOption(counter), { onNone: () => 0, onSome: (v) => Number(text(v)) })
      assert.isAtLeast(stored, acknowledged, "an acknowledged increment was lost")
      assert.isAtMost(stored, attempted, "more increments stored than were attempted")
      assert.isAbove(acknowledged, 0)
    }))

  describe("fibers forked inside an update function", () => {
    it.scopedLive("write like any other fiber once the update has ended, also while another update rolls back", () =>
      Effect.gen(function*() {
        const table = freshTable("forked")
        const i = yield* instance({ table, max: 2, app: freshApp("forked") })
        const reader = yield* instance({ table, max: 1, app: freshApp("reader") })
        const { store } = i
        yield* store.set("A", bytes("0"))
        yield* store.set("C/1", bytes("old"))
        yield* store.set("C/2", bytes("old"))

        const go = yield* Deferred.make<void>()
        const plus = (n: number) => (current: Option.Option<Uint8Array>) =>
          Effect.succeed(bytes(String(Option.match(current, { onNone: () => 0, onSome: (v) => Number(text(v)) }) + n)))
        /** What a forked fiber does once the update is over; each call's exit is kept. */
        const late = (tag: string) =>
          Effect.zipRight(
            Deferred.await(go),
            Effect.all([
              Effect.exit(store.set(`C/${tag}/set`, bytes(tag))),
              Effect.exit(store.update("A", plus(1))),
              Effect.exit(store.increment("A", { by: 10 })),
              Effect.exit(store.update(`C/${tag}`, () => Effect.succeed(bytes(`new ${tag}`)))),
              Effect.exit(store.delete(`C/${tag}/gone`)),
              Effect.exit(store.increment(`C/${tag}/n`))
            ])
          )
        yield* store.set("C/1/gone", bytes("x"))
        yield* store.set("C/2/gone", bytes("x"))

        const forked: Array<Fiber.RuntimeFiber<ReadonlyArray<Exit.Exit<unknown, unknown>>>> = []
        yield* store.update("A", () =>
          Effect.gen(function*() {
            forked.push(yield* Effect.fork(late("1")))
            forked.push(yield* Effect.forkDaemon(late("2")))
            return bytes("100")
          }))

        // another caller's update takes the connection back from the pool, and will roll back
        const dInside = yield* Deferred.make<void>()
        const lateDone = yield* Deferred.make<void>()
        const rollingBack = yield* Effect.fork(store.update("D", () =>
          Deferred.succeed(dInside, undefined).pipe(
            Effect.zipRight(Deferred.await(lateDone).pipe(Effect.timeout("3 seconds"), Effect.ignore)),
            Effect.zipRight(Effect.fail("D fails" as const))
          )))
        yield* Deferred.await(dInside).pipe(bounded(5000, "update D's start"))

        yield* Deferred.succeed(go, undefined)
        const exits = yield* Fiber.joinAll(forked).pipe(bounded(5000, "the forked fibers' writes"))
        yield* Deferred.succeed(lateDone, undefined)
        assert.deepStrictEqual(failureOf(yield* Fiber.await(rollingBack).pipe(bounded(5000, "update D")), "update D"), "D fails")

        // none refused, all acknowledged
        for (const [f, calls] of exits.entries()) {
          for (const [c, exit] of calls.entries()) {
            assert.isTrue(Exit.isSuccess(exit), `forked fiber ${f + 1}, call ${c + 1}: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
          }
        }
        // and all persisted, as another pool sees them
        const seen = reader.store
        assert.strictEqual(text(yield* seen.get("A")), "122") // 100, then +1 +10 from each fiber
        for (const tag of ["1", "2"]) {
          assert.strictEqual(text(yield* seen.get(`C/${tag}/set`)), tag)
          assert.strictEqual(text(yield* seen.get(`C/${tag}`)), `new ${tag}`)
          assert.isFalse(yield* seen.has(`C/${tag}/gone`))
          assert.strictEqual(text(yield* seen.get(`C/${tag}/n`)), "1")
        }
        assert.isFalse(yield* seen.has("D"))
        yield* settlesIdle(i, reader.sql)
      }))
  })

  describe("values at the limit", () => {
    const tooBig = () => new Uint8Array(64 * 1024 * 1024 + 1)

    it.scopedLive("a value of 64 MiB + 1 is refused with InvalidArgument before any I/O, nothing written", () =>
      Effect.gen(function*() {
        const i = yield* instance({ table: freshTable("big"), max: 1, app: freshApp("big") })
        const { store } = i
        // the only connection is taken: a call that went to the server would wait
        const release = yield* Deferred.make<void>()
        const started = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(store.update("hold", () =>
          Deferred.succeed(started, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("h")))))
        yield* Deferred.await(started).pipe(bounded(5000, "the holder's start"))
        expectKvError(yield* Effect.exit(store.set("big", tooBig())).pipe(bounded(2000, "set of 64 MiB + 1")), "set", "InvalidArgument")
        expectKvError(
          yield* Effect.exit(store.setIfAbsent("big", tooBig())).pipe(bounded(2000, "setIfAbsent of 64 MiB + 1")),
          "setIfAbsent",
          "InvalidArgument"
        )
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder).pipe(bounded(5000, "the holder"))
        // update: the function runs, its result is refused, nothing is written
        expectKvError(yield* Effect.exit(store.update("big", () => Effect.succeed(tooBig()))), "update", "InvalidArgument")
        assert.isFalse(yield* store.has("big"))
      }))

    it.scopedLive("a 70 MiB row inserted by hand: get, getOption and update fail with KvError Backend; the store serves on", () =>
      Effect.gen(function*() {
        const table = freshTable("huge")
        const i = yield* instance({ table, max: 2, app: freshApp("huge") })
        const { sql, store } = i
        yield* store.set("small", bytes("s"))
        // built on the server: the test process never holds the 70 MiB
        yield* sql.unsafe(
          `INSERT INTO "${table}" (key_hash, key, value) VALUES ($1, $2, decode(repeat('ab', 70 * 1024 * 1024), 'hex'))`,
          [keyHashText("huge"), "huge"]
        )
        expectKvError(yield* Effect.exit(store.get("huge")), "get", "Backend")
        expectKvError(yield* Effect.exit(store.getOption("huge")), "getOption", "Backend")
        let ran = false
        expectKvError(
          yield* Effect.exit(store.update("huge", () => Effect.sync(() => (ran = true)).pipe(Effect.as(bytes("replaced"))))),
          "update",
          "Backend"
        )
        assert.isFalse(ran, "the update function ran without the current value")
        assert.isTrue(yield* store.has("huge"))
        assert.strictEqual(text(yield* store.get("small")), "s")
        assert.isTrue(yield* store.delete("huge"))
        yield* servesConcurrently(store, 2, "the huge row")
      }), 60_000)
  })

  it.scopedLive("hostile arguments: the same reason, op and key on MemoryStore and PostgresStore", () =>
    Effect.gen(function*() {
      const prefix = `hostile/${run}/`
      const memory = Context.get(yield* Layer.build(MemoryStore.layer()), KvStore.KvStore)
      const { store: postgres } = yield* instance({ table: freshTable("hostile"), max: 2, app: freshApp("hostile") })
      const memoryCases = hostileCases(prefix)
      const postgresCases = hostileCases(prefix)
      assert.isAbove(memoryCases.length, 50)
      const problems: Array<string> = []
      for (const [index, memoryCase] of memoryCases.entries()) {
        const name = memoryCase[0]
        const a = yield* Effect.either(runHostileCase(memory, prefix, memoryCase)).pipe(bounded(5000, `MemoryStore, ${name}`))
        const b = yield* Effect.either(runHostileCase(postgres, prefix, postgresCases[index]!)).pipe(
          bounded(5000, `PostgresStore, ${name}`)
        )
        if (a._tag === "Left") problems.push(`MemoryStore: ${a.left}`)
        if (b._tag === "Left") problems.push(`PostgresStore: ${b.left}`)
        if (a._tag === "Right" && b._tag === "Right") {
          const expectedOp = name.slice(0, name.indexOf(":"))
          if (a.right.reason !== "InvalidArgument" || a.right.op !== expectedOp) {
            problems.push(`${name}: MemoryStore said ${a.right.reason}/${a.right.op}`)
          }
          if (a.right.reason !== b.right.reason || a.right.op !== b.right.op || a.right.key !== b.right.key) {
            problems.push(`${name}: MemoryStore ${JSON.stringify(a.right)} vs PostgresStore ${JSON.stringify(b.right)}`)
          }
        }
      }
      assert.deepStrictEqual(problems, [])
      // nothing written under the prefix by either
      assert.deepStrictEqual(yield* memory.keys(prefix), [])
      assert.deepStrictEqual(yield* postgres.keys(prefix), [])
    }))

  describe("killed connections and timeouts", () => {
    it.scopedLive("pg_terminate_backend in the middle of an update's function: KvError Backend, connection lost, nothing written", () =>
      Effect.gen(function*() {
        const sql = yield* admin
        const i = yield* instance({ table: freshTable("kill"), max: 2, app: freshApp("kill") })
        const { store } = i
        yield* store.set("k", bytes("before"))
        const inside = yield* Deferred.make<void>()
        const resume = yield* Deferred.make<void>()
        const updating = yield* Effect.fork(store.update("k", () =>
          Deferred.succeed(inside, undefined).pipe(Effect.zipRight(Deferred.await(resume)), Effect.as(bytes("after")))))
        yield* Deferred.await(inside).pipe(bounded(5000, "the update's start"))
        const killed = yield* sql.unsafe<{ pid: number }>(
          `SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'`,
          [i.app]
        ).withoutTransform
        assert.strictEqual(killed.length, 1, "the update's transaction was not found")
        yield* sleep(50)
        yield* Deferred.succeed(resume, undefined)
        const error = expectKvError(yield* Fiber.await(updating).pipe(bounded(5000, "the killed update")), "update", "Backend")
        assert.match(error.message, /connection to PostgreSQL was lost/)
        // nothing written, nothing locked, and the store serves
        assert.strictEqual(text(yield* store.get("k").pipe(bounded(5000, "get after the kill"))), "before")
        yield* store.update("k", () => Effect.succeed(bytes("later"))).pipe(bounded(5000, "update after the kill"))
        assert.strictEqual(text(yield* store.get("k")), "later")
        yield* servesConcurrently(store, 2, "the kill")
        yield* settlesIdle(i, sql)
      }))

    it.scopedLive("pg_terminate_backend of a statement waiting for a key's lock: KvError Backend, connection lost, nothing written", () =>
      Effect.gen(function*() {
        const sql = yield* admin
        const table = freshTable("kill_waiting")
        const holder = yield* instance({ table, max: 2, app: freshApp("holder") })
        const waiter = yield* instance({ table, max: 2, app: freshApp("waiter") })
        yield* holder.store.set("k", bytes("before"))
        const inside = yield* Deferred.make<void>()
        const resume = yield* Deferred.make<void>()
        const updating = yield* Effect.fork(holder.store.update("k", () =>
          Deferred.succeed(inside, undefined).pipe(Effect.zipRight(Deferred.await(resume)), Effect.as(bytes("updated")))))
        yield* Deferred.await(inside).pipe(bounded(5000, "the update's start"))
        // the other instance's set waits for the key's advisory lock, inside a running statement
        const setting = yield* Effect.fork(waiter.store.set("k", bytes("set")))
        let killed: ReadonlyArray<{ pid: number }> = []
        for (let i = 0; i < 100 && killed.length === 0; i++) {
          yield* sleep(10)
          killed = yield* sql.unsafe<{ pid: number }>(
            `SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE application_name = $1 AND state = 'active' AND wait_event_type = 'Lock'`,
            [waiter.app]
          ).withoutTransform
        }
        assert.strictEqual(killed.length, 1, "the waiting set was not found")
        const error = expectKvError(yield* Fiber.await(setting).pipe(bounded(5000, "the killed set")), "set", "Backend")
        // the server's 57P01 "terminating connection due to administrator command", named for what it means
        assert.match(error.message, /connection to PostgreSQL was lost/)
        yield* Deferred.succeed(resume, undefined)
        yield* Fiber.join(updating).pipe(bounded(5000, "the update"))
        // node-postgres may hand the killed connection out once more before it notices the
        // closed socket: the store runs the read again on a fresh one, so the first read succeeds
        assert.strictEqual(text(yield* waiter.store.get("k").pipe(bounded(5000, "get after the kill"))), "updated")
        yield* servesConcurrently(waiter.store, 2, "the kill")
      }))

    /** The reads of the contract, each as an app calls it once (no retry of its own). */
    const reads: ReadonlyArray<readonly [string, (store: KvStore.Service) => Effect.Effect<unknown, unknown>]> = [
      ["get", (s) => s.get("r/1")],
      ["getOption", (s) => s.getOption("r/1")],
      ["has", (s) => s.has("r/1")],
      ["getMany", (s) => s.getMany(["r/1", "r/2", "missing"])],
      ["keys", (s) => s.keys("r/")],
      ["count", (s) => s.count("r/")],
      ["timeToLive", (s) => s.timeToLive("r/1")],
      ["streamKeys", (s) => Stream.runCollect(s.streamKeys("r/", { batchSize: 1 }))],
      ["streamEntries", (s) => Stream.runCollect(s.streamEntries("r/", { batchSize: 1 }))],
      ["40 concurrent gets", (s) => Effect.all(Array.from({ length: 40 }, (_, j) => s.getOption(`r/${j % 3}`)), { concurrency: "unbounded" })],
      ["40 concurrent has", (s) => Effect.all(Array.from({ length: 40 }, (_, j) => s.has(`r/${j % 3}`)), { concurrency: "unbounded" })]
    ]

    for (const [op, read] of reads) {
      it.scopedLive(`${op} right after every pooled connection was killed succeeds at once (retried past the dead connections)`, () =>
        Effect.gen(function*() {
          const sql = yield* admin
          const i = yield* instance({ table: freshTable("dead_pool"), max: 4, app: freshApp("dead_pool") })
          yield* i.store.set("r/1", bytes("one"))
          yield* i.store.set("r/2", bytes("two"))
          // four connections open and idle in the pool, then all killed
          yield* servesConcurrently(i.store, 4, "the warm-up")
          const killed = yield* sql.unsafe<{ pid: number }>(
            // not waiting for the backends to be gone: the pool still holds them as idle, as after a failover
            `SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`,
            [i.app]
          ).withoutTransform
          assert.isAtLeast(killed.length, 4, "the pool's backends were not found")
          const exit = yield* Effect.exit(read(i.store)).pipe(bounded(10_000, `${op} after the kill`))
          assert.isTrue(Exit.isSuccess(exit), `${op}: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
          yield* servesConcurrently(i.store, 4, op)
        }))
    }

    const withStatementTimeout = `${databaseUrl}${databaseUrl.includes("?") ? "&" : "?"}options=-c%20statement_timeout%3D100`

    it.scopedLive("statement_timeout while an update waits for the key's lock: KvError Backend, no lock left", () =>
      Effect.gen(function*() {
        const sql = yield* admin
        const table = freshTable("timeout")
        const holder = yield* instance({ table, max: 2, app: freshApp("holder") })
        const i = yield* instance({ table, max: 2, app: freshApp("timeout"), url: withStatementTimeout })
        const shown = yield* i.sql.unsafe<{ statement_timeout: string }>("SHOW statement_timeout").withoutTransform
        assert.strictEqual(shown[0]!.statement_timeout, "100ms")
        const release = yield* Deferred.make<void>()
        const started = yield* Deferred.make<void>()
        const holding = yield* Effect.fork(holder.store.update("k", () =>
          Deferred.succeed(started, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("held")))))
        yield* Deferred.await(started).pipe(bounded(5000, "the holder's start"))
        const error = expectKvError(
          yield* Effect.exit(i.store.update("k", () => Effect.succeed(bytes("late")))).pipe(bounded(5000, "the timed-out update")),
          "update",
          "Backend"
        )
        assert.match(error.message, /statement timeout/)
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holding).pipe(bounded(5000, "the holder"))
        assert.strictEqual(text(yield* i.store.get("k")), "held")
        yield* settlesIdle(i, sql)
        yield* i.store.update("k", () => Effect.succeed(bytes("next"))).pipe(bounded(5000, "the next update"))
        assert.strictEqual(text(yield* holder.store.get("k")), "next")
      }))

    it.scopedLive("statement_timeout inside an update's function (pg_sleep): its SqlError unchanged, nothing written, no lock left", () =>
      Effect.gen(function*() {
        const sql = yield* admin
        const i = yield* instance({ table: freshTable("sleep"), max: 2, app: freshApp("sleep"), url: withStatementTimeout })
        yield* i.store.set("k", bytes("before"))
        const exit = yield* Effect.exit(
          i.store.update("k", () => Effect.as(i.sql`SELECT pg_sleep(0.5)`, bytes("after")))
        ).pipe(bounded(5000, "the update"))
        const error = failureOf(exit, "update with pg_sleep")
        // the function's own error comes out of update unchanged (the contract), not as KvError
        assert.strictEqual((error as { _tag?: string })._tag, "SqlError", String(error))
        assert.match(String((error as { cause?: unknown }).cause), /statement timeout/)
        assert.strictEqual(text(yield* i.store.get("k")), "before")
        yield* settlesIdle(i, sql)
        yield* i.store.update("k", () => Effect.succeed(bytes("next"))).pipe(bounded(5000, "the next update"))
        assert.strictEqual(text(yield* i.store.get("k")), "next")
      }))
  })
})
