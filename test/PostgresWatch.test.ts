/**
 * The PostgreSQL change feed (API.md "Change feeds"): what only a shared
 * database can get wrong. Two app instances are two stores on one table with
 * their own pools (`instance`). Deliveries are awaited in real time with
 * generous bounds; latencies are printed, never asserted.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import pg from "pg"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as KvStore from "../src/KvStore.js"
import { MAX_KEY_BYTES } from "../src/core/key.js"
import { EXPIRED_PER_POLL, NOTIFY_PAYLOAD_BYTES, notifyChannel, syncPayload, syncTokenOf } from "../src/core/postgresSql.js"
import { sleepReal, within } from "../src/internal/conformanceHelpers.js"
import * as PostgresStore from "../src/PostgresStore.js"

const databaseUrl = inject("databaseUrl")
const run = randomUUID().slice(0, 8)
let tables = 0
/** A table name no other test or run uses. */
const freshTable = () => `kv_watch_${run}_${tables++}`

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (s: string) => encoder.encode(s)
const show = (value: Option.Option<Uint8Array>) => Option.match(value, { onNone: () => "none", onSome: (v) => decoder.decode(v) })

/** How long a test waits (real time) for something it expects: generous, for a loaded machine. */
const DELIVERY_MILLIS = 5_000

/** An app instance: its own pool and store, living as long as the scope. */
const instance = (options: PostgresStore.Options, applicationName: string, url = databaseUrl) =>
  Effect.map(
    Layer.build(
      PostgresStore.layer(options).pipe(
        Layer.provide(PgClient.layer({ url: Redacted.make(url), applicationName, maxConnections: 4 }))
      )
    ),
    (ctx) => Context.get(ctx, KvStore.KvStore)
  )

/** A plain node-postgres client for looking at the server from outside, closed with the scope. */
const admin = Effect.acquireRelease(
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: databaseUrl })
    await client.connect()
    return client
  }),
  (client) => Effect.promise(() => client.end())
)

const query = (client: pg.Client, text: string, params: ReadonlyArray<unknown> = []) =>
  Effect.promise(() => client.query(text, params as Array<unknown>).then((result) => result.rows as Array<Record<string, unknown>>))

/** The backends listening on `table`'s channels (the last statement of a LISTEN connection is its LISTEN). */
const listeners = (client: pg.Client, table: string) =>
  query(client, `SELECT pid, application_name FROM pg_stat_activity WHERE query = $1`, [
    `LISTEN "${notifyChannel("public", table)}"`
  ])

/** Waits (real time, bounded) until `check` holds. */
const eventually = <E, R>(what: string, check: Effect.Effect<boolean, E, R>) =>
  within(
    DELIVERY_MILLIS,
    what,
    Effect.gen(function*() {
      while (!(yield* check)) yield* sleepReal(20)
    })
  )

/** Items of a stream as they come, and how it ended, for the test to take. */
const collect = <A, E>(stream: Stream.Stream<A, E>) =>
  Effect.gen(function*() {
    const queue = yield* Queue.unbounded<Exit.Exit<A, E | "ended">>()
    yield* stream.pipe(
      Stream.runForEach((a) => Queue.offer(queue, Exit.succeed(a))),
      Effect.exit,
      Effect.flatMap((exit) =>
        Queue.offer(queue, Exit.isSuccess(exit) ? Exit.fail("ended" as const) : Exit.failCause(exit.cause))
      ),
      Effect.forkScoped
    )
    return {
      /** The next item; fails the test after `DELIVERY_MILLIS` or when the stream ended. */
      next: Effect.flatMap(within(DELIVERY_MILLIS, "waiting for the next item", Queue.take(queue)), (exit) =>
        Exit.isSuccess(exit) ? Effect.succeed(exit.value) : Effect.dieMessage(`the stream ended: ${Cause.pretty(exit.cause)}`)),
      /** How the stream ended, waiting for it. */
      end: within(
        // generous: a stream may end only after a server-side step (a poll, a reconnection); only a failure waits it out
        4 * DELIVERY_MILLIS,
        "waiting for the stream to end",
        Effect.gen(function*() {
          while (true) {
            const exit = yield* Queue.take(queue)
            if (Exit.isFailure(exit)) return exit.cause
          }
        })
      ),
      /** Items already there, without waiting. */
      taken: Effect.map(Queue.takeAll(queue), (chunk) => Array.from(chunk))
    }
  })

/** Takes values of a `watch` until one is `expected`; the values seen before it. */
const until = (watcher: { readonly next: Effect.Effect<Option.Option<Uint8Array>> }, expected: string) =>
  Effect.gen(function*() {
    const before: Array<string> = []
    while (true) {
      const value = show(yield* watcher.next)
      if (value === expected) return before
      before.push(value)
    }
  })

describe("PostgresStore change feed", () => {
  it("a key notified always fits a notification's payload", () => {
    // a key is at most MAX_KEY_BYTES UTF-8 bytes: no key needs a "too long, re-read" marker
    assert.isBelow(MAX_KEY_BYTES, NOTIFY_PAYLOAD_BYTES)
  })

  it("channels: one per table and schema, within PostgreSQL's 63-byte identifier limit", () => {
    assert.strictEqual(notifyChannel("public", "kv_store"), "effect_kv.public.kv_store")
    assert.notStrictEqual(notifyChannel("public", "kv_a"), notifyChannel("public", "kv_b"))
    assert.notStrictEqual(notifyChannel("a_b", "c"), notifyChannel("a", "b_c"))
    const long = "t".repeat(63)
    const a = notifyChannel("s".repeat(63), long)
    const b = notifyChannel("s".repeat(62) + "x", long)
    assert.isAtMost(a.length, 63)
    assert.isAtMost(b.length, 63)
    assert.notStrictEqual(a, b)
  })

  it.scopedLive("a write on instance A reaches instance B's watch (latency printed)", () =>
    Effect.gen(function*() {
      const table = freshTable()
      const a = yield* instance({ table, notifyChanges: true }, "watch-test-a")
      const b = yield* instance({ table, notifyChanges: true }, "watch-test-b")
      const watcher = yield* collect(b.watch("greeting"))
      assert.strictEqual(show(yield* watcher.next), "none")
      const latencies: Array<number> = []
      for (let i = 0; i < 20; i++) {
        const started = performance.now()
        yield* a.set("greeting", bytes(`hello ${i}`))
        yield* until(watcher, `hello ${i}`)
        latencies.push(performance.now() - started)
      }
      latencies.sort((x, y) => x - y)
      console.log(
        `A → B propagation over 20 writes: median ${latencies[10]!.toFixed(1)} ms, max ${latencies[19]!.toFixed(1)} ms`
      )
      // deleted on A: B's watch says none
      assert.isTrue(yield* a.delete("greeting"))
      yield* until(watcher, "none")
    }))

  it.scopedLive("every kind of write notifies; a rolled-back update notifies nothing", () =>
    Effect.gen(function*() {
      const table = freshTable()
      const a = yield* instance({ table, notifyChanges: true }, "watch-test-a")
      const b = yield* instance({ table, notifyChanges: true }, "watch-test-b")
      const changes = yield* collect(b.watchPrefix("p/"))
      // live once it reports a marker (watchPrefix gives no first item)
      yield* within(
        DELIVERY_MILLIS,
        "watchPrefix to start",
        Effect.gen(function*() {
          while (true) {
            yield* a.set("p/ready", bytes("ready"))
            const seen = yield* Effect.raceFirst(Effect.map(changes.next, Option.some), Effect.as(sleepReal(100), Option.none()))
            if (Option.isSome(seen)) return
          }
        })
      )
      yield* changes.taken
      /** Writes on A, then a marker: the keys B heard of before the marker. */
      const heard = (write: Effect.Effect<unknown, unknown>) =>
        Effect.gen(function*() {
          yield* Effect.exit(write)
          const marker = `p/marker-${randomUUID()}`
          yield* a.set(marker, bytes("m"))
          const keys: Array<string> = []
          while (true) {
            const change = yield* changes.next
            if (change.key === marker) return keys
            if (!change.key.startsWith("p/marker-") && change.key !== "p/ready") keys.push(change.key)
          }
        })
      // the update's function writes another key in the update's transaction, then fails: all rolled back
      const failed = yield* Effect.exit(
        a.update("p/k", () => Effect.zipRight(a.set("p/inner", bytes("i")), Effect.fail("refused")))
      )
      assert.isTrue(Exit.isFailure(failed))
      assert.deepStrictEqual(yield* heard(Effect.void), [], "a rolled-back update notified")
      assert.isFalse(yield* a.has("p/inner"))
      assert.deepStrictEqual(yield* heard(a.update("p/k", () => Effect.succeed(bytes("u")))), ["p/k"])
      assert.deepStrictEqual(yield* heard(a.set("p/k", bytes("s"))), ["p/k"])
      assert.deepStrictEqual(yield* heard(a.setIfAbsent("p/k", bytes("x"))), [], "a setIfAbsent that wrote nothing notified")
      assert.deepStrictEqual(yield* heard(a.setIfAbsent("p/new", bytes("x"))), ["p/new"])
      assert.deepStrictEqual(yield* heard(a.increment("p/n")), ["p/n"])
      assert.deepStrictEqual(yield* heard(a.expire("p/n", "1 hour")), ["p/n"])
      assert.deepStrictEqual(yield* heard(a.delete("p/n")), ["p/n"])
      assert.deepStrictEqual(yield* heard(a.delete("p/n")), [], "a delete that removed nothing notified")
      assert.deepStrictEqual(
        (yield* heard(a.setMany([["p/m1", bytes("1")], ["p/m2", bytes("2")]]))).sort(),
        ["p/m1", "p/m2"]
      )
      assert.deepStrictEqual((yield* heard(a.deleteMany(["p/m1", "p/m2"]))).sort(), ["p/m1", "p/m2"])
      yield* a.setMany([["p/d/1", bytes("1")], ["p/d/2", bytes("2")]])
      yield* heard(Effect.void)
      assert.deepStrictEqual((yield* heard(a.deletePrefix("p/d/"))).sort(), ["p/d/1", "p/d/2"])
      // coalesced sets: many fibers at once go out as batch statements, each key notified
      const many = Array.from({ length: 200 }, (_, i) => `p/c/${i}`)
      const coalesced = yield* heard(Effect.forEach(many, (key) => a.set(key, bytes("c")), { concurrency: 50 }))
      assert.deepStrictEqual(new Set(coalesced), new Set(many))
    }))

  it("a sync marker's payload is never a key, fits a notification and gives its token back", () => {
    const payload = syncPayload("l1x.abc.42")
    assert.isAbove(payload.length, MAX_KEY_BYTES)
    assert.isAtMost(new TextEncoder().encode(payload).length, NOTIFY_PAYLOAD_BYTES)
    assert.strictEqual(syncTokenOf(payload), "l1x.abc.42")
    assert.isUndefined(syncTokenOf("effect-kv sync l1x.abc.42 "))
    assert.isUndefined(syncTokenOf("x".repeat(MAX_KEY_BYTES)))
  })

  it.scopedLive("a watcher joining an open feed hears no notification of a write made before it started", () =>
    Effect.gen(function*() {
      const table = freshTable()
      const a = yield* instance({ table, notifyChanges: true }, "watch-sync-a")
      // another watcher keeps the feed open, so notifications of earlier writes are still on their way
      yield* collect(a.watch("other"))
      for (let round = 0; round < 20; round++) {
        yield* a.set(`k${round}`, bytes("v1"))
        yield* a.set(`p${round}:before`, bytes("x"))
        const watcher = yield* collect(a.watch(`k${round}`))
        const prefix = yield* collect(a.watchPrefix(`p${round}:`))
        assert.strictEqual(show(yield* watcher.next), "v1")
        yield* a.set(`k${round}`, bytes("v2"))
        // without the sync marker the earlier write's notification came first: "v1" again
        assert.strictEqual(show(yield* watcher.next), "v2")
        // the prefix watcher starts in the background: write after it until it hears something
        let heard: Array<KvStore.Change> = []
        while (heard.length === 0) {
          yield* a.set(`p${round}:after`, bytes("y"))
          yield* sleepReal(20)
          heard = (yield* prefix.taken).flatMap((exit) => Exit.isSuccess(exit) ? [exit.value] : [])
        }
        assert.deepStrictEqual(heard.map((change) => change.key), [`p${round}:after`])
      }
    }))

  it.scopedLive("a watcher starting while the pool is busy can be interrupted, and a watch inside an update ends", () =>
    Effect.gen(function*() {
      const table = freshTable()
      const ctx = yield* Layer.build(PostgresStore.layer({ table, notifyChanges: true }).pipe(
        Layer.provide(PgClient.layer({ url: Redacted.make(databaseUrl), applicationName: "watch-busy", maxConnections: 1 }))
      ))
      const store = Context.get(ctx, KvStore.KvStore)
      const inside = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      // the update holds the pool's only connection while the watcher starts
      const holder = yield* Effect.fork(store.update("held", () =>
        Effect.zipRight(Deferred.succeed(inside, undefined), Effect.as(Deferred.await(release), bytes("1")))))
      yield* Deferred.await(inside)
      const watcher = yield* Effect.fork(Stream.runHead(store.watch("k")))
      yield* sleepReal(200)
      // a hang check, not a timing: the interruption hung for good before (the open waited for the pool uninterruptibly)
      const outcome = yield* Effect.raceFirst(
        Effect.as(Fiber.interrupt(watcher), "interrupted"),
        Effect.as(sleepReal(DELIVERY_MILLIS), "still waiting")
      )
      assert.strictEqual(outcome, "interrupted")
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      // a watch started inside the update's own function (the only connection held) gives up at its timeout
      const inner = yield* store.update("cfg", () =>
        Stream.runHead(store.watch("other")).pipe(Effect.timeout("1 second"), Effect.either, Effect.as(bytes("2"))))
      assert.strictEqual(decoder.decode(inner), "2")
      // and once the pool is free the store watches as usual
      assert.strictEqual(show(Option.flatten(yield* Stream.runHead(store.watch("cfg")))), "2")
    }))

  it.scopedLive("1,000 watchers of a store share one LISTEN connection", () =>
    Effect.gen(function*() {
      const table = freshTable()
      const client = yield* admin
      const b = yield* instance({ table, notifyChanges: true }, "watch-test-b")
      assert.lengthOf(yield* listeners(client, table), 0, "listening before anyone watches")
      const watchers = yield* Effect.forEach(
        Array.from({ length: 1000 }, (_, i) => `k${i % 100}`),
        (key) => collect(b.watch(key)),
        { concurrency: "unbounded" }
      )
      for (const watcher of watchers) assert.strictEqual(show(yield* watcher.next), "none")
      const listening = yield* listeners(client, table)
      assert.lengthOf(listening, 1, JSON.stringify(listening))
      assert.strictEqual(listening[0]!["application_name"], "effect-kv listen (watch-test-b)")
    }))

  it.scopedLive("after the LISTEN connection is killed, watch emits what was written meanwhile and watchPrefix says resync", () =>
    Effect.gen(function*() {
      const table = freshTable()
      const client = yield* admin
      const a = yield* instance({ table, notifyChanges: true }, "watch-test-a")
      // B logs in as a role of its own, so that the test can hold back its reconnection (NOLOGIN) and write
      // while B cannot be listening: a gap that no timing decides
      const role = `watch_b_${run}_${tables}`
      yield* query(client, `CREATE ROLE ${role} LOGIN PASSWORD 'watch'`)
      yield* Effect.addFinalizer(() =>
        Effect.ignore(query(client, `DROP OWNED BY ${role}; DROP ROLE IF EXISTS ${role}`))
      )
      yield* query(client, `GRANT ALL ON public.${table} TO ${role}`)
      const url = new URL(databaseUrl)
      url.username = role
      url.password = "watch"
      const bScope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(bScope, Exit.void))
      const b = yield* Scope.extend(instance({ table, notifyChanges: true }, "watch-test-b", url.href), bScope)
      yield* a.set("p/key", bytes("before"))
      const watcher = yield* collect(b.watch("p/key"))
      assert.strictEqual(show(yield* watcher.next), "before")
      const prefixWatcher = yield* collect(b.watchPrefix("p/"))
      const [listening] = yield* listeners(client, table)
      assert.isDefined(listening)

      yield* query(client, `ALTER ROLE ${role} NOLOGIN`)
      yield* query(client, `SELECT pg_terminate_backend($1, 5000)`, [listening!["pid"]])
      yield* a.set("p/key", bytes("meanwhile")) // notified while nobody of B listens
      yield* sleepReal(200) // B tries to reconnect, and is refused
      assert.lengthOf(yield* listeners(client, table), 0)
      yield* query(client, `ALTER ROLE ${role} LOGIN`)

      assert.deepStrictEqual(yield* until(watcher, "meanwhile"), [])
      const ended = yield* prefixWatcher.end
      const error = Cause.failureOption(ended)
      assert.isTrue(Option.isSome(error), Cause.pretty(ended))
      const kvError = error.pipe(Option.getOrThrow) as KvStore.KvError
      assert.instanceOf(kvError, KvStore.KvError)
      assert.strictEqual(kvError.reason, "Backend")
      assert.match(kvError.message, /resync/)
      // listening again: later writes are heard
      const [again] = yield* listeners(client, table)
      assert.isDefined(again)
      assert.notStrictEqual(again!["pid"], listening!["pid"])
      yield* a.set("p/key", bytes("after"))
      yield* until(watcher, "after")
    }))

  it.scopedLive("an entry that expires is reported", () =>
    Effect.gen(function*() {
      const table = freshTable()
      const a = yield* instance({ table, notifyChanges: true }, "watch-test-a")
      const b = yield* instance({ table, notifyChanges: true }, "watch-test-b")
      const watcher = yield* collect(b.watch("short"))
      assert.strictEqual(show(yield* watcher.next), "none")
      const written = performance.now()
      yield* a.set("short", bytes("brief"), "300 millis")
      yield* until(watcher, "brief")
      yield* until(watcher, "none")
      console.log(`expiry of a 300 ms entry reported after ${(performance.now() - written).toFixed(0)} ms`)
    }))

  it.scopedLive("more entries expiring at once than one poll reads: watchPrefix is told to resync, never a silent gap", () =>
    Effect.gen(function*() {
      const table = freshTable()
      const a = yield* instance({ table, notifyChanges: true }, "watch-test-a")
      const prefix = yield* collect(a.watchPrefix("many/"))
      // wait until the prefix watcher is live: it hears a marker key
      let live = false
      while (!live) {
        yield* a.set("many/marker", bytes("m"))
        yield* sleepReal(20)
        live = (yield* prefix.taken).length > 0
      }
      // written by an instance that does not notify: only the expiry poll can tell of these entries
      const quiet = yield* instance({ table, notifyChanges: false }, "watch-test-quiet")
      const many = Array.from({ length: EXPIRED_PER_POLL + 1 }, (_, i) => [`many/${i}`, bytes("x")] as const)
      yield* quiet.setMany(many)
      // then all of them given one expiry by one statement, whose commit comes long before that expiry: an
      // entry committed after its expiry passed is not a poll's to see, and a 10,001-key batch on a loaded
      // machine may take seconds between its clock reading and its commit
      const client = yield* admin
      yield* query(
        client,
        `UPDATE "public"."${table}" SET expires_at = now() + interval '2 seconds' WHERE key LIKE 'many/%' AND key <> 'many/marker'`
      )
      // the poll finds more than it reads: every watcher hears "anything may have changed"
      const ended = yield* prefix.end
      assert.include(Cause.pretty(ended), "resync")
    }))

  it.scopedLive("notifyChanges: false (the default): watch and watchPrefix fail with InvalidArgument naming the option", () =>
    Effect.gen(function*() {
      const table = freshTable()
      const store = yield* instance({ table, notifyChanges: false }, "watch-test-a")
      const byDefault = yield* instance({ table }, "watch-test-b")
      for (
        const [op, stream] of [
          ["watch", store.watch("k")],
          ["watchPrefix", store.watchPrefix("p/")],
          ["watch", byDefault.watch("k")],
          ["watchPrefix", byDefault.watchPrefix("p/")]
        ] as const
      ) {
        const exit = yield* Effect.exit(Stream.runHead(stream as Stream.Stream<unknown, KvStore.KvError>))
        const error = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
        assert.isTrue(Option.isSome(error), `${op} did not fail`)
        const kvError = Option.getOrThrow(error)
        assert.strictEqual(kvError.reason, "InvalidArgument")
        assert.strictEqual(kvError.op, op)
        assert.match(kvError.message, /notifyChanges/)
      }
      // and its writes notify nobody
      const client = yield* admin
      yield* query(client, `LISTEN "${notifyChannel("public", table)}"`)
      let heard = 0
      client.on("notification", () => heard++)
      yield* store.set("k", bytes("v"))
      yield* query(client, "SELECT 1")
      yield* sleepReal(50)
      assert.strictEqual(heard, 0)
    }))

  it.scopedLive("the store's scope closing closes its LISTEN connection and ends its watchers", () =>
    Effect.gen(function*() {
      const table = freshTable()
      const client = yield* admin
      const storeScope = yield* Scope.make()
      const b = yield* Scope.extend(instance({ table, notifyChanges: true }, "watch-test-b"), storeScope)
      // the watcher lives in the test's scope, longer than the store
      const watcher = yield* collect(b.watch("k"))
      assert.strictEqual(show(yield* watcher.next), "none")
      assert.lengthOf(yield* listeners(client, table), 1)
      yield* Scope.close(storeScope, Exit.void)
      yield* eventually("the LISTEN connection to close", Effect.map(listeners(client, table), (rows) => rows.length === 0))
      yield* watcher.end
    }))
})
