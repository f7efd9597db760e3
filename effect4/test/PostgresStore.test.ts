/**
 * PostgresStore on Effect 4 (`@effect/sql-pg` 4, the native wire-protocol client) against
 * a real PostgreSQL (test/globalSetup.ts): the exported conformance suite on a logged and
 * an unlogged table, two app instances (two pools) sharing one table, and interruption
 * while waiting for a saturated pool (the same scenario as the Effect 3 line's
 * test/PostgresFaults.test.ts: a pool of 2 held by two updates, the waiting call
 * interrupted, the pool serves again with nothing left behind).
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Latch from "effect/Latch"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import { conformance } from "effect-kv/conformance"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as KvStore from "../src/KvStore.js"
import * as PostgresStore from "../src/PostgresStore.js"

const databaseUrl = inject("databaseUrl")
const run = randomUUID().slice(0, 8)
let tables = 0
/** A table name no other test or run uses. */
const freshTable = (what: string) => `kv4_${what}_${run}_${tables++}`
/** An application_name that identifies one pool's backends in pg_stat_activity. */
const freshApp = (what: string) => `effect-kv4-${what}-${run}-${tables++}`

const pg = (applicationName: string, maxConnections?: number) =>
  PgClient.layer({
    url: Redacted.make(databaseUrl),
    applicationName,
    ...(maxConnections === undefined ? {} : { maxConnections }),
    // the suite reads back values of up to 64 MiB: one DataRow holds the whole value
    maxMessageSize: 80 * 1024 * 1024
  })

const storeLayer = (options: PostgresStore.Options) => PostgresStore.layer(options).pipe(Layer.provide(pg(freshApp("conformance"))))

// notifyChanges: the conformance suite's change feeds run on PostgreSQL too (without it, it checks their refusal)
conformance("PostgresStore on Effect 4 (logged table)", storeLayer({ table: freshTable("conformance"), notifyChanges: true }), {
  databaseClock: true
})
conformance(
  "PostgresStore on Effect 4 (unlogged table)",
  storeLayer({ table: freshTable("conformance_unlogged"), unlogged: true, notifyChanges: true }),
  { databaseClock: true }
)

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (s: string) => encoder.encode(s)
const text = (b: Uint8Array) => decoder.decode(b)

interface Instance {
  readonly store: KvStore.Service
  readonly client: PgClient.PgClient
  readonly app: string
}

/** An app instance: its own pool (`PgClient`) and store, closed with the test's scope. */
const instance = (
  options: { readonly table: string; readonly max?: number; readonly app?: string }
): Effect.Effect<Instance, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const app = options.app ?? freshApp("instance")
    const client = yield* Layer.build(pg(app, options.max ?? 4))
    const store = Context.get(
      yield* Layer.build(PostgresStore.layer({ table: options.table }).pipe(Layer.provide(Layer.succeedContext(client)))),
      KvStore.KvStore
    )
    return { store, client: Context.get(client, PgClient.PgClient), app }
  })

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

/** Fails unless the instance's pool and its backends settle idle, with no advisory lock, within 3 s. */
const settlesIdle = (i: Instance, admin: SqlClient.SqlClient) =>
  eventually(
    3000,
    Effect.gen(function*() {
      const stats = yield* i.client.poolStats
      if (stats.used > 0 || stats.pending > 0) return `pool not idle: ${JSON.stringify(stats)}`
      const busy = yield* admin.unsafe(
        `SELECT pid, state, query FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`,
        [i.app]
      )
      if (busy.length > 0) return `backends not idle: ${JSON.stringify(busy)}`
      const locks = yield* admin.unsafe(
        `SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND a.application_name = $1`,
        [i.app]
      )
      if (locks.length > 0) return `advisory locks left: ${JSON.stringify(locks)}`
      return undefined
    })
  )

/** `n` updates of distinct keys whose functions each wait until all `n` are inside: the pool serves `n` at once. */
const servesConcurrently = (store: KvStore.Service, n: number, what: string) =>
  Effect.gen(function*() {
    const inside = yield* Latch.make(false)
    let count = 0
    const arrive = Effect.suspend(() => (++count === n ? Effect.asVoid(inside.open) : Effect.void))
    yield* Effect.all(
      Array.from({ length: n }, (_, j) =>
        store.update(`barrier/${what}/${j}`, () => Effect.andThen(arrive, inside.await).pipe(Effect.as(bytes("b"))))),
      { concurrency: "unbounded", discard: true }
    ).pipe(bounded(5000, `${n} concurrent updates after ${what}`))
  })

const adminClient = Effect.map(Layer.build(pg(freshApp("admin"), 2)), Context.get(SqlClient.SqlClient))

/** Every operation, on key `k`, as a request handler would call it; its outcome does not matter here. */
const operations: ReadonlyArray<readonly [string, (store: KvStore.Service, k: string) => Effect.Effect<unknown, unknown>]> = [
  ["get", (s, k) => s.get(k)],
  ["has", (s, k) => s.has(k)],
  ["set", (s, k) => s.set(k, bytes("v"))],
  ["setIfAbsent", (s, k) => s.setIfAbsent(k, bytes("v"))],
  ["increment", (s, k) => s.increment(k + "/n")],
  ["expire", (s, k) => s.expire(k, "1 hour")],
  ["timeToLive", (s, k) => s.timeToLive(k)],
  ["delete", (s, k) => s.delete(k)],
  ["keys", (s, k) => s.keys(k)],
  ["getMany", (s, k) => s.getMany([k, k + "/2"])],
  ["setMany", (s, k) => s.setMany([[k, bytes("m")]])],
  ["update", (s, k) => s.update(k, () => Effect.succeed(bytes("u")))],
  ["cleanup", (s) => s.cleanup]
]

const counterOf = (current: Option.Option<Uint8Array>) => Option.match(current, { onNone: () => 0, onSome: (v) => Number(text(v)) })

describe("PostgresStore on Effect 4", () => {
  describe("two app instances (two pools) on one table", () => {
    it.live("2 × 50 concurrent increments and 2 × 30 updates of one key lose no write", () =>
      Effect.scoped(Effect.gen(function*() {
        const table = freshTable("instances")
        const a = yield* instance({ table })
        const b = yield* instance({ table })
        yield* Effect.all(
          [a, b].flatMap(({ store }) => [
            ...Array.from({ length: 50 }, () => store.increment("count")),
            ...Array.from({ length: 30 }, () =>
              store.update("updated", (current) => Effect.succeed(bytes(String(counterOf(current) + 1)))))
          ]),
          { concurrency: "unbounded", discard: true }
        )
        assert.strictEqual(text(yield* a.store.get("count")), "100")
        assert.strictEqual(text(yield* b.store.get("updated")), "60")
      })))

    it.live("a key's lock is one for both instances: an update on one makes a set on the other wait", () =>
      Effect.scoped(Effect.gen(function*() {
        const table = freshTable("lock")
        const a = yield* instance({ table })
        const b = yield* instance({ table })
        const inside = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const updating = yield* Effect.forkChild(a.store.update("k", () =>
          Deferred.succeed(inside, undefined).pipe(Effect.andThen(Deferred.await(release)), Effect.as(bytes("from update")))))
        yield* Deferred.await(inside)
        const setting = yield* Effect.forkChild(b.store.set("k", bytes("from set")))
        yield* sleep(100)
        assert.isUndefined(setting.pollUnsafe(), "the set did not wait for the other instance's update")
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(updating)
        yield* Fiber.join(setting)
        assert.strictEqual(text(yield* a.store.get("k")), "from set")
      })))
  })

  describe("interruption while waiting for a pooled connection leaks nothing (pool of 2)", () => {
    for (const [op, call] of operations) {
      it.live(op, () =>
        Effect.scoped(Effect.gen(function*() {
          const admin = yield* adminClient
          const i = yield* instance({ table: freshTable("leak"), max: 2, app: freshApp("leak") })
          const { store } = i
          yield* store.set("k", bytes("v"))

          // two updates hold both connections until released
          const release = yield* Deferred.make<void>()
          const started = [yield* Deferred.make<void>(), yield* Deferred.make<void>()] as const
          const holders = yield* Effect.forEach(started, (s, j) =>
            Effect.forkDetach(store.update(`hold/${j}`, () =>
              Deferred.succeed(s, undefined).pipe(Effect.andThen(Deferred.await(release)), Effect.as(bytes("h"))))))
          yield* Effect.forEach(started, Deferred.await).pipe(bounded(5000, "the holders' start"))

          const calling = yield* Effect.forkDetach(call(store, "k"))
          yield* sleep(50)
          assert.isUndefined(calling.pollUnsafe(), `${op} did not wait for the exhausted pool`)
          yield* Effect.forkDetach(Fiber.interrupt(calling))
          const exit = yield* Fiber.await(calling).pipe(bounded(2000, `the interrupted ${op}, while the pool is exhausted`))
          assert.isTrue(Exit.hasInterrupts(exit) && Exit.isFailure(exit), `the interrupted ${op} ended with ${String(exit)}`)
          yield* Deferred.succeed(release, undefined)
          yield* Fiber.joinAll(holders).pipe(bounded(5000, "the holders"))

          // the pool serves again: both connections at once, and a burst of fresh calls
          yield* servesConcurrently(store, 2, op)
          yield* Effect.forEach(operations, ([, other], j) => Effect.exit(other(store, `fresh/${j}`)), {
            concurrency: "unbounded",
            discard: true
          }).pipe(bounded(5000, "fresh calls"))
          yield* settlesIdle(i, admin)
        })))
    }
  })

  it.live("a value larger than the client's maxMessageSize fails with a KvError naming the option; the store serves on", () =>
    Effect.scoped(Effect.gen(function*() {
      const table = freshTable("message")
      const client = yield* Layer.build(PgClient.layer({ url: Redacted.make(databaseUrl), applicationName: freshApp("message") }))
      const store = Context.get(
        yield* Layer.build(PostgresStore.layer({ table }).pipe(Layer.provide(Layer.succeedContext(client)))),
        KvStore.KvStore
      )
      yield* store.set("big", new Uint8Array(17 * 1024 * 1024))
      const exit = yield* Effect.exit(store.get("big"))
      const error = Exit.isFailure(exit) ? Cause.findErrorOption(exit.cause) : Option.none()
      assert.isTrue(Option.isSome(error) && error.value instanceof KvStore.KvError, String(exit))
      if (Option.isSome(error) && error.value instanceof KvStore.KvError) {
        assert.strictEqual(error.value.reason, "Backend")
        assert.include(error.value.message, "maxMessageSize: 80 * 1024 * 1024")
      }
      yield* store.set("small", bytes("fine"))
      assert.strictEqual(text(yield* store.get("small")), "fine")
    })))

  describe("layer", () => {
    it.live("a bad table name is refused before any SQL, with InvalidArgument", () =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(Layer.build(storeLayer({ table: "Bad-Name" })).pipe(Effect.scoped))
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          const error = Cause.findErrorOption(exit.cause)
          assert.isTrue(Option.isSome(error) && error.value instanceof KvStore.KvError && error.value.reason === "InvalidArgument")
        }
      }))

    it.live("a table of the wrong shape is refused with a message that says what to fix", () =>
      Effect.scoped(Effect.gen(function*() {
        const admin = yield* adminClient
        const table = freshTable("shape")
        yield* admin.unsafe(`CREATE TABLE "${table}" (key text PRIMARY KEY, value bytea NOT NULL)`)
        const exit = yield* Effect.exit(Layer.build(storeLayer({ table, createTable: false })))
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          const error = Cause.findErrorOption(exit.cause)
          assert.isTrue(Option.isSome(error) && error.value instanceof KvStore.KvError)
          const message = Option.isSome(error) ? (error.value as KvStore.KvError).message : ""
          assert.include(message, "key_hash is missing")
          assert.include(message, "COLLATE \"C\"")
        }
      })))
  })
})
