/**
 * Faults that touch the whole PostgreSQL server, so this file runs on a
 * server of its own (never the shared test server, which other files use at
 * the same time).
 *
 * 1. Writes whose answer is lost after they committed (issue 15, item 1): the
 *    outcome is unknown, the caller is told so, and nothing is re-run — an
 *    increment is counted once or not at all, never twice. The window is
 *    forced, not waited for: with `synchronous_standby_names` set to a standby
 *    that does not exist, every commit of a session whose `synchronous_commit`
 *    is on waits (`wait_event = 'SyncRep'`) after it is durable locally;
 *    terminating that backend then loses the answer of a committed statement.
 *    Only the store's own sessions turn `synchronous_commit` on (the servers
 *    run with it off).
 * 2. A large `setMany` (issue 15, item 2) must not fill the server's shared
 *    lock table, which would make other sessions, on other tables, fail.
 */
import { PgClient } from "@effect/sql-pg"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import Pg from "pg"
import { randomUUID } from "node:crypto"
import { startPostgres } from "../dev/postgresServer.js"
import type { PostgresServer } from "../dev/postgresServer.js"
import * as KvStore from "../src/KvStore.js"
import * as PostgresStore from "../src/PostgresStore.js"

const run = randomUUID().slice(0, 8)
let names = 0
const fresh = (what: string) => `${what}_${run}_${names++}`

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (s: string) => encoder.encode(s)
const text = (b: Uint8Array) => decoder.decode(b)

const sleep = (millis: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, millis)))

/** Fails the test instead of hanging it. */
const bounded = (millis: number, what: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.disconnect(effect).pipe(
    Effect.timeoutFail({ duration: millis, onTimeout: () => new Error(`${what}: not done after ${millis} ms`) }),
    Effect.orDie
  )

let server: PostgresServer | undefined
let admin: Pg.Pool | undefined

// its own budget: starting a server on a loaded machine may take a while
beforeAll(async () => {
  server = await startPostgres({ ignoreDatabaseUrl: true })
  admin = new Pg.Pool({ connectionString: server.url, max: 3, application_name: "effect-kv-unknown-admin" })
  admin.on("error", () => {})
}, 180_000)

afterAll(async () => {
  await admin?.query("ALTER SYSTEM RESET synchronous_standby_names").catch(() => {})
  await admin?.end().catch(() => {})
  await server?.stop()
}, 60_000)

const adminQuery = <R extends Record<string, unknown>>(text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.promise(() => admin!.query<R>(text, params as Array<unknown>).then((result) => result.rows))

/** The store's sessions: synchronous_commit on, so their commits wait for the (missing) standby while the window is open. */
const urlWithSyncCommit = () => `${server!.url}${server!.url.includes("?") ? "&" : "?"}options=-c%20synchronous_commit%3Don`

/** A store on its own pool (small, so concurrent calls coalesce), closed with the scope. */
const instance = (table: string, maxConnections: number, app: string) =>
  Effect.map(
    Layer.build(
      PostgresStore.layer({ table }).pipe(
        Layer.provide(PgClient.layer({ url: Redacted.make(urlWithSyncCommit()), maxConnections, applicationName: app }))
      )
    ),
    Context.get(KvStore.KvStore)
  )

/** Backends of `app` whose commit waits for the standby: their statements committed locally. */
const killWaitingCommits = (app: string) =>
  Effect.map(
    adminQuery<{ pid: number }>(
      `SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND wait_event = 'SyncRep'`,
      [app]
    ),
    (rows) => rows.length
  )

/**
 * Kills what waits for the standby while `callers` run: first the lone
 * statement, then the batch behind it (the calls that queued meanwhile).
 */
const killTwice = (app: string, callers: ReadonlyArray<Fiber.Fiber<unknown>>) =>
  Effect.gen(function*() {
    let kills = 0
    const allDone = Effect.map(Effect.forEach(callers, Fiber.poll), (polls) => polls.every(Option.isSome))
    for (let i = 0; i < 1000 && kills < 2 && !(yield* allDone); i++) {
      yield* sleep(20)
      kills += (yield* killWaitingCommits(app)) > 0 ? 1 : 0
    }
    assert.isAbove(kills, 0, "no statement was seen waiting for the standby")
  })

/**
 * Opens the window (every commit of a synchronous_commit=on session waits
 * after it is durable locally) and proves it open with a probe transaction
 * seen waiting; `closeWindow` releases whatever still waits. Idempotent.
 */
const openWindow = Effect.gen(function*() {
  yield* adminQuery("CREATE TABLE IF NOT EXISTS sync_probe (x int)")
  yield* adminQuery("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
  yield* adminQuery("SELECT pg_reload_conf()")
  const app = fresh("effect-kv-probe")
  const probe = new Pg.Client({ connectionString: urlWithSyncCommit(), application_name: app })
  probe.on("error", () => {})
  yield* Effect.promise(() => probe.connect())
  // a transaction that writes: its commit record is what waits
  const probing = probe.query("INSERT INTO sync_probe VALUES (1)").catch(() => undefined)
  let killed = 0
  for (let i = 0; i < 500 && killed === 0; i++) {
    yield* sleep(20)
    killed = yield* killWaitingCommits(app)
  }
  yield* Effect.promise(() => probing)
  yield* Effect.promise(() => probe.end().catch(() => {}))
  assert.strictEqual(killed, 1, "the probe's commit never waited for the standby: the window did not open")
})

const closeWindow = Effect.gen(function*() {
  yield* adminQuery("ALTER SYSTEM RESET synchronous_standby_names")
  yield* adminQuery("SELECT pg_reload_conf()")
})

/** The window open for `body`, closed afterwards whatever happens. */
const inWindow = <A, E, R>(body: Effect.Effect<A, E, R>) => Effect.ensuring(Effect.zipRight(openWindow, body), closeWindow)

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

/** The caller's failure, which must be KvError Backend saying the outcome is unknown. */
const assertOutcomeUnknown = <A, E>(exit: Exit.Exit<A, E>, op: string) => {
  const error = failureOf(exit)
  assert.instanceOf(error, KvStore.KvError, `${op}: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "succeeded"}`)
  const kv = error as unknown as KvStore.KvError
  assert.strictEqual(kv.reason, "Backend", kv.message)
  assert.strictEqual(kv.op, op, kv.message)
  assert.match(kv.message, /outcome is unknown/, kv.message)
}

/**
 * Runs `call` for every one of `args` at once inside the window, kills what waits for the
 * standby (the lone statement, then the batch behind it) and gives every call's exit.
 */
const callsKilledInCommit = <A, B>(
  app: string,
  args: ReadonlyArray<A>,
  call: (arg: A) => Effect.Effect<B, KvStore.KvError>,
  what: string
) =>
  inWindow(Effect.gen(function*() {
    const callers = yield* Effect.forEach(args, (arg) => Effect.fork(Effect.exit(call(arg))), { concurrency: "unbounded" })
    yield* killTwice(app, callers)
    return callers
  })).pipe(Effect.flatMap((callers) => Effect.forEach(callers, Fiber.join)), bounded(60_000, what))

/**
 * How many of `exits` failed "outcome is unknown"; every other one must have
 * answered `true` (a batch re-run after its answer was lost would answer `false`).
 */
const trueOrUnknown = (exits: ReadonlyArray<Exit.Exit<boolean, KvStore.KvError>>, keys: ReadonlyArray<string>, op: string) => {
  let unknown = 0
  for (const [i, exit] of exits.entries()) {
    if (Exit.isSuccess(exit)) assert.isTrue(exit.value, `${keys[i]}: its ${op} answered false`)
    else {
      unknown++
      assertOutcomeUnknown(exit, op)
    }
  }
  return unknown
}

describe("PostgresStore: a write whose answer was lost is never re-run (a server of its own)", () => {
  it.scopedLive("80 coalesced increments of 40 counters, their commits' answers lost: none counted twice, every acknowledged one once", () =>
    Effect.gen(function*() {
      const app = fresh("effect-kv-unknown")
      // a pool of 4: one coalesced statement in flight at a time, the rest wait and go out together
      const store = yield* instance(fresh("kv_unknown"), 4, app)
      const keys = Array.from({ length: 40 }, (_, k) => `c/${k}`)
      yield* store.set("warm", bytes("up"))

      const exits = yield* callsKilledInCommit(
        app,
        Array.from({ length: 80 }, (_, i) => keys[i % keys.length]!),
        (key) => store.increment(key),
        "the increments"
      )

      let acknowledged = 0
      let unknown = 0
      const answers = new Map<string, Array<number>>()
      for (const [i, exit] of exits.entries()) {
        const key = keys[i % keys.length]!
        if (Exit.isSuccess(exit)) {
          acknowledged++
          answers.set(key, [...(answers.get(key) ?? []), exit.value])
        } else {
          unknown++
          assertOutcomeUnknown(exit, "increment")
        }
      }
      for (const key of keys) {
        const stored = Option.match(yield* store.getOption(key), { onNone: () => 0, onSome: (v) => Number(text(v)) })
        const acked = answers.get(key) ?? []
        // acknowledged ≤ stored ≤ attempted (2 per counter): nothing counted twice
        assert.isAtMost(stored, 2, `${key}: ${stored} stored of 2 increments (answers ${acked})`)
        assert.isAtLeast(stored, acked.length, `${key}: an acknowledged increment was lost`)
        // every acknowledged increment returned the count it made: distinct, and at most what is stored
        assert.strictEqual(new Set(acked).size, acked.length, `${key}: two increments answered the same count ${acked}`)
        for (const n of acked) assert.isAtMost(n, stored, `${key}: answered ${n}, ${stored} stored`)
      }
      assert.strictEqual(acknowledged + unknown, 80)
      // the lone statement's answer and the batch's were lost
      assert.isAbove(unknown, 1, "no batch's answer was lost: the test proved nothing")
    }), 120_000)

  it.scopedLive("80 coalesced deletes of 80 live keys, their commits' answers lost: each true or 'outcome is unknown', never false", () =>
    Effect.gen(function*() {
      const app = fresh("effect-kv-unknown")
      // a pool of 4: one coalesced statement in flight at a time, the rest wait and go out together
      const store = yield* instance(fresh("kv_unknown"), 4, app)
      const keys = Array.from({ length: 80 }, (_, k) => `d/${k}`)
      yield* store.setMany(keys.map((key) => [key, bytes("v")] as const))

      const exits = yield* callsKilledInCommit(app, keys, (key) => store.delete(key), "the deletes")
      // a re-run batch would find its keys already gone and answer false
      const unknown = trueOrUnknown(exits, keys, "delete")
      // every acknowledged delete removed its key; the lost ones committed before their answers were lost
      const left = yield* store.getMany(keys)
      assert.isTrue(left.every(Option.isNone), "a key survived its delete")
      assert.isAbove(unknown, 1, "no batch's answer was lost: the test proved nothing")
    }), 120_000)

  it.scopedLive("80 coalesced setIfAbsent of 80 absent keys, their commits' answers lost: each true or 'outcome is unknown', never false; each value stored once", () =>
    Effect.gen(function*() {
      const app = fresh("effect-kv-unknown")
      const store = yield* instance(fresh("kv_unknown"), 4, app)
      const keys = Array.from({ length: 80 }, (_, k) => `s/${k}`)
      yield* store.set("warm", bytes("up"))

      const exits = yield* callsKilledInCommit(
        app,
        keys,
        (key) => store.setIfAbsent(key, bytes(`${key} once`)),
        "the setIfAbsent calls"
      )
      // a re-run batch would find its keys already written and answer false
      const unknown = trueOrUnknown(exits, keys, "setIfAbsent")
      // every key written, with its caller's value: the lost ones committed before their answers were lost
      const stored = yield* store.getMany(keys)
      assert.deepStrictEqual(stored.map((v) => Option.map(v, text)), keys.map((key) => Option.some(`${key} once`)))
      assert.isAbove(unknown, 1, "no batch's answer was lost: the test proved nothing")
    }), 120_000)

  it.scopedLive("80 coalesced expires of 80 live keys, their commits' answers lost: each true or 'outcome is unknown', never retried", () =>
    Effect.gen(function*() {
      const app = fresh("effect-kv-unknown")
      const store = yield* instance(fresh("kv_unknown"), 4, app)
      const keys = Array.from({ length: 80 }, (_, k) => `e/${k}`)
      yield* store.setMany(keys.map((key) => [key, bytes("v")] as const))

      const exits = yield* callsKilledInCommit(app, keys, (key) => store.expire(key, "1 hour"), "the expires")
      // a batch retried item by item would answer true where its answer was lost: more than the lone statement fails
      const unknown = trueOrUnknown(exits, keys, "expire")
      for (const key of keys) assert.isTrue(Option.isSome(yield* store.timeToLive(key)), `${key}: its expiry was not written`)
      assert.isAbove(unknown, 1, "no batch's answer was lost: the test proved nothing")
    }), 120_000)

  it.scopedLive("single writes whose commit's answer is lost: KvError 'outcome is unknown', written once, not re-run", () =>
    Effect.gen(function*() {
      const app = fresh("effect-kv-unknown")
      const store = yield* instance(fresh("kv_unknown"), 4, app)
      yield* store.set("counter", bytes("10"))
      yield* store.set("expiring", bytes("e"))
      yield* store.set("deleted", bytes("d"))
      yield* store.set("updated", bytes("1"))
      const calls: ReadonlyArray<readonly [string, Effect.Effect<unknown, KvStore.KvError>]> = [
        ["increment", store.increment("counter", { by: 5 })],
        ["setIfAbsent", store.setIfAbsent("absent", bytes("a"))],
        ["update", store.update("updated", (v) => Effect.succeed(bytes(String(Number(text(Option.getOrThrow(v))) + 1))))],
        ["delete", store.delete("deleted")],
        ["expire", store.expire("expiring", "1 hour")],
        ["set", store.set("plain", bytes("p"))]
      ]
      yield* inWindow(Effect.forEach(calls, ([op, call]) =>
        Effect.gen(function*() {
          const calling = yield* Effect.fork(Effect.exit(call))
          let killed = 0
          for (let i = 0; i < 500 && killed === 0; i++) {
            yield* sleep(20)
            killed = yield* killWaitingCommits(app)
          }
          assert.strictEqual(killed, 1, `${op}: its commit was not seen waiting`)
          assertOutcomeUnknown(yield* Fiber.join(calling).pipe(bounded(10_000, op)), op)
          // a read takes the killed connection if the pool hands it out once more (and is retried)
          yield* store.has("counter")
        }), { discard: true })).pipe(bounded(60_000, "the single writes"))
      // each committed exactly once, before its answer was lost
      assert.strictEqual(text(yield* store.get("counter")), "15")
      assert.strictEqual(text(yield* store.get("absent")), "a")
      assert.strictEqual(text(yield* store.get("updated")), "2")
      assert.isFalse(yield* store.has("deleted"))
      assert.isTrue(Option.isSome(yield* store.timeToLive("expiring")))
      assert.strictEqual(text(yield* store.get("plain")), "p")
    }), 120_000)
})

describe("PostgresStore: a large setMany hurts no other session (a server of its own)", () => {
  it.scopedLive("setMany of 40,000 keys while bystanders run transactions on another table and updates hit its keys", () =>
    Effect.gen(function*() {
      const app = fresh("effect-kv-big")
      const store = yield* instance(fresh("kv_big"), 4, app)
      const prefix = "big/"
      const entries = Array.from({ length: 40_000 }, (_, i) => [`${prefix}${String(i).padStart(5, "0")}`, bytes(`v${i}`)] as const)
      const contested = entries.slice(0, 8).map(([key]) => key)
      yield* adminQuery("CREATE TABLE IF NOT EXISTS bystander (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
      let done = false
      let bystanderOk = 0
      const bystanderErrors: Array<string> = []
      const bystanders = new Pg.Pool({ connectionString: server!.url, max: 3, application_name: fresh("bystander") })
      bystanders.on("error", () => {})
      yield* Effect.addFinalizer(() => Effect.promise(() => bystanders.end().catch(() => {})))
      // another application's transactions: a row on its own table and a few advisory locks of its own
      const bystander = (n: number) =>
        Effect.promise(async () => {
          while (!done) {
            const client = await bystanders.connect()
            try {
              await client.query("BEGIN")
              await client.query("SELECT pg_advisory_xact_lock(-1000000 - $1::int * 10 - g) FROM generate_series(1, 5) g", [n])
              await client.query("INSERT INTO bystander DEFAULT VALUES")
              await client.query("COMMIT")
              bystanderOk++
            } catch (error) {
              bystanderErrors.push((error as Error).message)
              await client.query("ROLLBACK").catch(() => {})
            } finally {
              client.release()
            }
          }
        })
      const running = yield* Effect.fork(Effect.all([0, 1, 2].map(bystander), { concurrency: "unbounded", discard: true }))
      // updates of keys in the batch, until it is done: each appends its id to what it read; the batch writes "S"
      let ids = 0
      const updater = (key: string) =>
        Effect.whileLoop({
          while: () => !done,
          body: () => store.update(key, (current) => Effect.succeed(bytes(`${Option.match(current, { onNone: () => "", onSome: text })}.${ids++}`))),
          step: () => {}
        })
      const updates = yield* Effect.fork(Effect.all(contested.map(updater), { concurrency: "unbounded", discard: true }))
      yield* sleep(50)
      const written = yield* Effect.exit(store.setMany(entries.map(([key]) => [key, bytes(contested.includes(key) ? "S" : key)] as const)))
      yield* sleep(50)
      done = true
      const updated = yield* Fiber.await(updates).pipe(bounded(60_000, "the updates"))
      yield* Fiber.join(running).pipe(bounded(60_000, "the bystanders"))

      assert.isTrue(Exit.isSuccess(written), Exit.isFailure(written) ? Cause.pretty(written.cause) : "")
      assert.deepStrictEqual(bystanderErrors.slice(0, 5), [], `${bystanderErrors.length} bystander transactions failed`)
      assert.isAbove(bystanderOk, 0)
      assert.isTrue(Exit.isSuccess(updated), Exit.isFailure(updated) ? Cause.pretty(updated.cause) : "")
      // all of it, and no update lost: each contested key holds the batch's "S" and then only updates that read it
      assert.strictEqual(yield* store.count(prefix), entries.length)
      assert.strictEqual(text(yield* store.get(entries[39_999]![0])), entries[39_999]![0])
      const seen = new Set<string>()
      for (const key of contested) {
        const value = text(yield* store.get(key))
        assert.match(value, /^S(\.\d+)*$/, `${key}: ${value}`)
        for (const id of value.split(".").slice(1)) {
          assert.isFalse(seen.has(id), `update ${id} applied twice`)
          seen.add(id)
        }
      }
    }), 180_000)
})
