/**
 * Faults that touch the whole PostgreSQL server, Effect 4, so this file runs on a server
 * of its own (never the shared test server, which other files use at the same time).
 *
 * Writes whose answer is lost after they committed: the outcome is unknown, the caller is
 * told so, and nothing is re-run. The window is forced, not waited for: with
 * `synchronous_standby_names` set to a standby that does not exist, every commit of a
 * session whose `synchronous_commit` is on waits (`wait_event = 'SyncRep'`) after it is
 * durable locally; terminating that backend then loses the answer of a committed
 * statement. Only the store's own sessions turn `synchronous_commit` on (a startup
 * parameter of their pool; the servers run with it off).
 *
 * Ported from the Effect 3 line's test/PostgresServerWide.test.ts: the coalesced
 * `setIfAbsent` and `expire` (coalesce2). The Effect 3 file's other tests (increments,
 * deletes, single writes, a large setMany) are not ported yet. The server is the
 * repository's `dev/postgresServer.ts`, loaded by a computed path as test/globalSetup.ts
 * does; the admin session is an Effect 4 `PgClient` (this package has no `pg`).
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
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import { randomUUID } from "node:crypto"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import * as KvStore from "../src/KvStore.js"
import * as PostgresStore from "../src/PostgresStore.js"

interface Server {
  readonly url: string
  readonly stop: () => Promise<void>
}

const postgresServer = pathToFileURL(
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "dev", "postgresServer.ts")
).href

const run = randomUUID().slice(0, 8)
let names = 0
const fresh = (what: string) => `${what}_${run}_${names++}`

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (s: string) => encoder.encode(s)
const text = (b: Uint8Array) => decoder.decode(b)

/** A real sleep (these tests run on the live clock). */
const sleep = (millis: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, millis)))

/** `effect`, failing the test if it has not ended after `millis` of real time. */
const bounded = (millis: number, what: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.timeoutOrElse({
      duration: millis,
      orElse: () => Effect.die(new Error(`${what}: not done after ${millis} ms`))
    })
  )

let server: Server | undefined

// its own budget: starting a server on a loaded machine may take a while
beforeAll(async () => {
  const { startPostgres } = (await import(postgresServer)) as {
    startPostgres: (options?: { readonly ignoreDatabaseUrl?: boolean }) => Promise<Server>
  }
  server = await startPostgres({ ignoreDatabaseUrl: true })
}, 180_000)

afterAll(async () => {
  await server?.stop()
}, 60_000)

/** A pool on this file's server, closed with the scope; `syncCommit` turns `synchronous_commit` on for its sessions. */
const pool = (app: string, maxConnections: number, syncCommit: boolean) =>
  PgClient.layer({
    url: Redacted.make(server!.url),
    maxConnections,
    applicationName: app,
    ...(syncCommit ? { startupParameters: { synchronous_commit: "on" } } : {})
  })

/** The admin session (synchronous_commit off: its commits never wait). */
const adminClient: Effect.Effect<SqlClient.SqlClient, unknown, Scope.Scope> = Effect.suspend(() =>
  Effect.map(Layer.build(pool(fresh("effect-kv4-admin"), 2, false)), Context.get(SqlClient.SqlClient))
)

/** A store on its own pool (small, so concurrent calls coalesce), closed with the scope. */
const instance = (table: string, maxConnections: number, app: string) =>
  Effect.map(
    Layer.build(PostgresStore.layer({ table }).pipe(Layer.provide(pool(app, maxConnections, true)))),
    Context.get(KvStore.KvStore)
  )

/** Backends of `app` whose commit waits for the standby: their statements committed locally. */
const killWaitingCommits = (admin: SqlClient.SqlClient, app: string) =>
  Effect.map(
    Effect.orDie(admin.unsafe(
      `SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND wait_event = 'SyncRep'`,
      [app]
    )),
    (rows) => rows.length
  )

/**
 * Kills what waits for the standby while `callers` run: first the lone
 * statement, then the batch behind it (the calls that queued meanwhile).
 */
const killTwice = (admin: SqlClient.SqlClient, app: string, callers: ReadonlyArray<Fiber.Fiber<unknown>>) =>
  Effect.gen(function*() {
    let kills = 0
    const allDone = Effect.sync(() => callers.every((fiber) => fiber.pollUnsafe() !== undefined))
    for (let i = 0; i < 1000 && kills < 2 && !(yield* allDone); i++) {
      yield* sleep(20)
      kills += (yield* killWaitingCommits(admin, app)) > 0 ? 1 : 0
    }
    assert.isAbove(kills, 0, "no statement was seen waiting for the standby")
  })

/**
 * Opens the window (every commit of a synchronous_commit=on session waits
 * after it is durable locally) and proves it open with a probe transaction
 * seen waiting; `closeWindow` releases whatever still waits. Idempotent.
 */
const openWindow = (admin: SqlClient.SqlClient) =>
  Effect.scoped(Effect.gen(function*() {
    yield* Effect.orDie(admin.unsafe("CREATE TABLE IF NOT EXISTS sync_probe (x int)"))
    yield* Effect.orDie(admin.unsafe("ALTER SYSTEM SET synchronous_standby_names = 'nobody'"))
    yield* Effect.orDie(admin.unsafe("SELECT pg_reload_conf()"))
    const app = fresh("effect-kv4-probe")
    const probe = Context.get(yield* Layer.build(pool(app, 1, true)), SqlClient.SqlClient)
    // a transaction that writes: its commit record is what waits
    const probing = yield* Effect.forkChild(Effect.exit(probe.unsafe("INSERT INTO sync_probe VALUES (1)")))
    let killed = 0
    for (let i = 0; i < 500 && killed === 0; i++) {
      yield* sleep(20)
      killed = yield* killWaitingCommits(admin, app)
    }
    yield* Fiber.join(probing)
    assert.strictEqual(killed, 1, "the probe's commit never waited for the standby: the window did not open")
  }))

const closeWindow = (admin: SqlClient.SqlClient) =>
  Effect.orDie(Effect.andThen(
    admin.unsafe("ALTER SYSTEM RESET synchronous_standby_names"),
    admin.unsafe("SELECT pg_reload_conf()")
  ))

/** The window open for `body`, closed afterwards whatever happens. */
const inWindow = <A, E, R>(admin: SqlClient.SqlClient, body: Effect.Effect<A, E, R>) =>
  Effect.ensuring(Effect.andThen(openWindow(admin), body), closeWindow(admin))

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.findErrorOption(exit.cause)) : undefined

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
 * Runs `call` for every one of `args` inside the window, kills what waits for the standby
 * (the lone statement, then the batch behind it) and gives every call's exit. The callers
 * are forked one after another by this fiber: a child of a concurrent forEach's worker
 * would end with the worker.
 */
const callsKilledInCommit = <A, B>(
  admin: SqlClient.SqlClient,
  app: string,
  args: ReadonlyArray<A>,
  call: (arg: A) => Effect.Effect<B, KvStore.KvError>,
  what: string
) =>
  inWindow(admin, Effect.gen(function*() {
    const callers = yield* Effect.forEach(args, (arg) => Effect.forkChild(Effect.exit(call(arg))))
    yield* killTwice(admin, app, callers)
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

describe("PostgresStore on Effect 4: a write whose answer was lost is never re-run (a server of its own)", () => {
  it.live("80 coalesced setIfAbsent of 80 absent keys, their commits' answers lost: each true or 'outcome is unknown', never false; each value stored once", () =>
    Effect.gen(function*() {
      const admin = yield* adminClient
      const app = fresh("effect-kv4-unknown")
      // a pool of 4: one coalesced statement in flight at a time, the rest wait and go out together
      const store = yield* instance(fresh("kv4_unknown"), 4, app)
      const keys = Array.from({ length: 80 }, (_, k) => `s/${k}`)
      yield* store.set("warm", bytes("up"))

      const exits = yield* callsKilledInCommit(
        admin,
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

  it.live("80 coalesced expires of 80 live keys, their commits' answers lost: each true or 'outcome is unknown', never retried", () =>
    Effect.gen(function*() {
      const admin = yield* adminClient
      const app = fresh("effect-kv4-unknown")
      const store = yield* instance(fresh("kv4_unknown"), 4, app)
      const keys = Array.from({ length: 80 }, (_, k) => `e/${k}`)
      yield* store.setMany(keys.map((key) => [key, bytes("v")] as const))

      const exits = yield* callsKilledInCommit(admin, app, keys, (key) => store.expire(key, "1 hour"), "the expires")
      // a batch retried item by item would answer true where its answer was lost: more than the lone statement fails
      const unknown = trueOrUnknown(exits, keys, "expire")
      for (const key of keys) assert.isTrue(Option.isSome(yield* store.timeToLive(key)), `${key}: its expiry was not written`)
      assert.isAbove(unknown, 1, "no batch's answer was lost: the test proved nothing")
    }), 120_000)
})
