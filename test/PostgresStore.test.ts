/**
 * PostgresStore against a real PostgreSQL (see test/globalSetup.ts): the shared
 * conformance suite on a logged and an unlogged table, then what only a shared
 * database can get wrong: several app instances (separate pools), hash
 * collisions, the index behind `keys`, cleanup batches and the sweep schedule,
 * hostile names, killed connections.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as KvStore from "../src/KvStore.js"
import { keyHash } from "../src/core/hash.js"
import { prefixUpperBound } from "../src/core/postgresSql.js"
import { makeDriver } from "../src/internal/postgres/driver.js"
import { statementsFor } from "../src/internal/postgres/store.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { conformance } from "./conformance.js"
import { sleepReal } from "../src/internal/conformanceHelpers.js"

const databaseUrl = inject("databaseUrl")
const run = randomUUID().slice(0, 8)
/** A table name no other test or run uses. */
const freshTable = (what: string) => `kv_${what}_${run}`

const pg = (applicationName = "effect-kv-test") =>
  PgClient.layer({ url: Redacted.make(databaseUrl), applicationName })

const storeLayer = (options: PostgresStore.Options, applicationName?: string) =>
  PostgresStore.layer(options).pipe(Layer.provide(pg(applicationName)))

// notifyChanges: the conformance suite's change feeds run on PostgreSQL too (without it, it checks their refusal)
conformance("PostgresStore (logged table)", storeLayer({ table: freshTable("conformance"), notifyChanges: true }), {
  databaseClock: true
})
conformance(
  "PostgresStore (unlogged table)",
  storeLayer({ table: freshTable("conformance_unlogged"), unlogged: true, notifyChanges: true }),
  { databaseClock: true }
)

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (s: string) => encoder.encode(s)
const text = (b: Uint8Array) => decoder.decode(b)

/** An app instance: its own pool and store, living as long as the test's scope. */
const instance = (options: PostgresStore.Options, applicationName?: string) =>
  Effect.map(Layer.build(storeLayer(options, applicationName)), (ctx) => Context.get(ctx, KvStore.KvStore))

/** A plain SQL connection pool for setting up and inspecting tables, as a DBA would. */
const admin = Effect.map(Layer.build(pg("effect-kv-admin")), (ctx) => Context.get(ctx, SqlClient.SqlClient))

const sleep = (millis: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, millis)))

const increment = (store: KvStore.Service, key: string) =>
  store.update(key, (current) =>
    Effect.succeed(bytes(String(Option.match(current, { onNone: () => 0, onSome: (v) => Number(text(v)) }) + 1))))

const expectKvError = <A, E>(exit: Exit.Exit<A, E>, op: string, reason: "InvalidArgument" | "Backend") => {
  assert.isTrue(Exit.isFailure(exit), `expected ${op} to fail`)
  if (Exit.isFailure(exit)) {
    const failure = Cause.failureOption(exit.cause)
    assert.isTrue(Option.isSome(failure), `expected a typed failure, got ${Cause.pretty(exit.cause)}`)
    const error = Option.getOrThrow(failure)
    assert.instanceOf(error, KvStore.KvError)
    assert.strictEqual((error as KvStore.KvError).reason, reason, (error as KvStore.KvError).message)
    assert.strictEqual((error as KvStore.KvError).op, op)
  }
}

describe("PostgresStore", () => {
  describe("several app instances on one database", () => {
    it.scoped("2 × 50 concurrent increments of one missing key lose no write", () =>
      Effect.gen(function*() {
        const table = freshTable("instances")
        const [a, b] = yield* Effect.all([instance({ table }), instance({ table })])
        const key = "counter/missing"
        yield* Effect.all(
          Array.from({ length: 100 }, (_, i) => increment(i % 2 === 0 ? a : b, key)),
          { concurrency: "unbounded", discard: true }
        )
        assert.strictEqual(text(yield* a.get(key)), "100")
        assert.strictEqual(text(yield* b.get(key)), "100")
      }))

    it.scoped("2 × 50 concurrent increments of one expired key lose no write", () =>
      Effect.gen(function*() {
        const table = freshTable("instances")
        const [a, b] = yield* Effect.all([instance({ table }), instance({ table })])
        const key = "counter/expired"
        yield* a.set(key, bytes("1000"), "30 millis")
        yield* sleep(60)
        yield* Effect.all(
          Array.from({ length: 100 }, (_, i) => increment(i % 2 === 0 ? a : b, key)),
          { concurrency: "unbounded", discard: true }
        )
        assert.strictEqual(text(yield* b.get(key)), "100")
      }))

    it.scoped("increment: 2 pools × 50 fibers × 20 increments of one missing key end at exactly 2000", () =>
      Effect.gen(function*() {
        const table = freshTable("instances")
        const [a, b] = yield* Effect.all([instance({ table }), instance({ table })])
        const key = "counter/increment"
        const results = yield* Effect.all(
          Array.from({ length: 100 }, (_, i) =>
            Effect.forEach(Array.from({ length: 20 }), () => (i % 2 === 0 ? a : b).increment(key))),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(text(yield* a.get(key)), "2000")
        // every answer is a distinct value: no two increments saw the same count
        const answers = results.flat().sort((x, y) => x - y)
        assert.deepStrictEqual(answers, Array.from({ length: 2000 }, (_, i) => i + 1))
      }))

    it.scoped("increments interleaved with updates of the same key across two pools lose nothing", () =>
      Effect.gen(function*() {
        const table = freshTable("instances")
        const [a, b] = yield* Effect.all([instance({ table }), instance({ table })])
        const key = "counter/mixed"
        // updates add 10, increments add 1: 2 × 30 of each
        const addTen = (store: KvStore.Service) =>
          store.update(key, (current) =>
            Effect.succeed(bytes(String(Option.match(current, { onNone: () => 0, onSome: (v) => Number(text(v)) }) + 10))))
        yield* Effect.all(
          Array.from({ length: 120 }, (_, i) => {
            const store = i % 2 === 0 ? a : b
            return i % 4 < 2 ? store.increment(key) : addTen(store)
          }),
          { concurrency: "unbounded", discard: true }
        )
        assert.strictEqual(text(yield* b.get(key)), String(60 * 1 + 60 * 10))
      }))

    it.scoped("setIfAbsent of one missing key from two pools: exactly one writes", () =>
      Effect.gen(function*() {
        const table = freshTable("instances")
        const [a, b] = yield* Effect.all([instance({ table }), instance({ table })])
        for (let round = 0; round < 10; round++) {
          const key = `lease/${round}`
          const answers = yield* Effect.all(
            Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).setIfAbsent(key, bytes(`owner-${i}`), "10 seconds")),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(answers.filter((x) => x).length, 1, `round ${round}: ${answers}`)
          const winner = answers.indexOf(true)
          assert.strictEqual(text(yield* a.get(key)), `owner-${winner}`)
        }
      }))

    it.scoped("a set from one instance waits for an update in flight in another", () =>
      Effect.gen(function*() {
        const table = freshTable("instances")
        const [a, b] = yield* Effect.all([instance({ table }), instance({ table })])
        const key = "waits/missing"
        const started = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const updating = yield* Effect.fork(
          a.update(key, () => Deferred.succeed(started, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("u"))))
        )
        yield* Deferred.await(started)
        const setting = yield* Effect.fork(b.set(key, bytes("s")))
        const deleting = yield* Effect.fork(b.delete(key + "/other"))
        yield* sleep(100)
        assert.isNull(yield* Fiber.poll(setting).pipe(Effect.map(Option.getOrNull)), "set did not wait")
        assert.isFalse(yield* Fiber.join(deleting), "a delete of another key waits for nothing")
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(updating)
        yield* Fiber.join(setting)
        assert.strictEqual(text(yield* a.get(key)), "s")
      }))

    it.scoped("nested updates in opposite orders on two instances: PostgreSQL's detector ends it with KvError \"deadlock\"; the other completes", () =>
      Effect.gen(function*() {
        const table = freshTable("deadlock")
        const [one, two] = yield* Effect.all([instance({ table }), instance({ table })])
        const holding = [yield* Deferred.make<void>(), yield* Deferred.make<void>()] as const
        const both = Effect.zipRight(Deferred.await(holding[0]), Deferred.await(holding[1]))
        const crossed = (store: KvStore.Service, i: 0 | 1, outer: string, inner: string) =>
          store.update(outer, () =>
            Deferred.succeed(holding[i], undefined).pipe(
              Effect.zipRight(both),
              Effect.zipRight(store.update(inner, () => Effect.succeed(bytes(String(i))))),
              Effect.as(bytes(String(i)))
            ))
        const fibers = [yield* Effect.fork(crossed(one, 0, "a", "b")), yield* Effect.fork(crossed(two, 1, "b", "a"))]
        // PostgreSQL checks for deadlocks after deadlock_timeout (1 s by default)
        const exits = yield* Effect.timeoutFail(Effect.forEach(fibers, Fiber.await), {
          duration: "20 seconds",
          onTimeout: () => new Error("nested updates on two instances waited for each other (deadlock)")
        })
        const failed = exits.flatMap((exit, i) => (Exit.isFailure(exit) ? [i] : []))
        assert.strictEqual(failed.length, 1, exits.map((exit) => (Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "ok")).join("; "))
        const loser = failed[0]!
        expectKvError(exits[loser]!, "update", "Backend")
        const error = Option.getOrThrow(Cause.failureOption((exits[loser] as Exit.Failure<unknown, KvStore.KvError>).cause))
        assert.include(error.message, "deadlock")
        // the winner wrote both keys; the loser nothing
        const winner = String(1 - loser)
        assert.strictEqual(text(yield* one.get("a")), winner)
        assert.strictEqual(text(yield* one.get("b")), winner)
      }))

    it.scoped("nested updates in opposite orders, two fibers on each of two instances: every call ends, the only failures say \"deadlock\"", () =>
      Effect.gen(function*() {
        // A cycle here can pass through both a process's own key lock and PostgreSQL's advisory locks
        // (A's fiber 1 holds "a" and waits for "b" held by B's fiber 1, whose nested wait for "a" would sit
        // behind A's fiber 2 in A's process lock). Only waits in one place can be seen by one detector.
        const table = freshTable("deadlock2x2")
        const [one, two] = yield* Effect.all([instance({ table }), instance({ table })])
        yield* one.setMany([["a", bytes("0")], ["b", bytes("0")]])
        const add = (current: Option.Option<Uint8Array>) =>
          Effect.succeed(bytes(String(Number(Option.isSome(current) ? text(current.value) : "0") + 1)))
        const crossed = (store: KvStore.Service, outer: string, inner: string) =>
          store.update(outer, (current) =>
            sleepReal(20).pipe(Effect.zipRight(store.update(inner, add)), Effect.zipRight(add(current))))
        const calls = [
          crossed(one, "a", "b"), crossed(one, "a", "b"), crossed(one, "b", "a"),
          crossed(two, "b", "a"), crossed(two, "b", "a"), crossed(two, "a", "b")
        ]
        const exits = yield* Effect.timeoutFail(
          Effect.forEach(Array.from({ length: 4 }, () => calls).flat(), (call) => Effect.exit(call), { concurrency: "unbounded" }),
          { duration: "30 seconds", onTimeout: () => new Error("nested updates on two instances waited for each other (deadlock)") }
        )
        let acknowledged = 0
        for (const exit of exits) {
          if (Exit.isSuccess(exit)) {
            acknowledged++
            continue
          }
          const error = Option.getOrThrow(Cause.failureOption(exit.cause)) as KvStore.KvError
          assert.strictEqual(error.reason, "Backend", error.message)
          assert.include(error.message, "deadlock")
        }
        assert.isAbove(acknowledged, 0)
        // each acknowledged call added one to both keys; a failed one added nothing
        assert.strictEqual(text(yield* one.get("a")), String(acknowledged))
        assert.strictEqual(text(yield* one.get("b")), String(acknowledged))
      }), 60_000)

    it.scoped("concurrent layer builds create one table without failing", () =>
      Effect.gen(function*() {
        const table = freshTable("race")
        const stores = yield* Effect.all(Array.from({ length: 4 }, () => instance({ table })), { concurrency: "unbounded" })
        yield* stores[0]!.set("k", bytes("v"))
        assert.strictEqual(text(yield* stores[3]!.get("k")), "v")
      }))
  })

  describe("schema", () => {
    it.scoped("two keys with colliding key_hash both survive with their own values", () =>
      Effect.gen(function*() {
        const table = freshTable("collide")
        const store = yield* instance({ table })
        const sql = yield* admin
        yield* store.set("first", bytes("one"))
        // the second row carries the first key's hash, as a real FNV-1a collision would
        yield* sql.unsafe(
          `INSERT INTO ${statementsFor({ table }).qualifiedTable} (key_hash, key, value) VALUES ($1, $2, $3)`,
          [keyHash("first").toString(), "second", Buffer.from("two")]
        )
        const hashes = yield* sql.unsafe<{ n: string }>(
          `SELECT count(DISTINCT key_hash)::text AS n FROM ${statementsFor({ table }).qualifiedTable}`
        )
        assert.strictEqual(hashes[0]!.n, "1")
        assert.strictEqual(text(yield* store.get("first")), "one")
        assert.strictEqual(text(yield* store.get("second")), "two")
        yield* store.update("second", () => Effect.succeed(bytes("two!")))
        yield* store.set("first", bytes("one!"))
        assert.strictEqual(text(yield* store.get("first")), "one!")
        assert.strictEqual(text(yield* store.get("second")), "two!")
        assert.deepStrictEqual(yield* store.keys(""), ["first", "second"])
        assert.isTrue(yield* store.delete("first"))
        assert.strictEqual(text(yield* store.get("second")), "two!")
      }))

    it.scoped("a row inserted by hand with key_hash, key and value only is a live entry without expiry", () =>
      Effect.gen(function*() {
        const table = freshTable("byhand")
        const store = yield* instance({ table })
        const sql = yield* admin
        yield* sql.unsafe(
          `INSERT INTO ${statementsFor({ table }).qualifiedTable} (key_hash, key, value) VALUES (42, 'hand', '\\x6869')`
        )
        assert.strictEqual(text(yield* store.get("hand")), "hi")
        assert.deepStrictEqual(yield* store.keys("ha"), ["hand"])
        const seen = yield* store.update("hand", (current) => Effect.succeed(Option.getOrElse(current, () => bytes("none"))))
        assert.strictEqual(text(seen), "hi")
        assert.isTrue(yield* store.delete("hand"))
      }))

    it.scoped("the key column sorts by code point although the database collation is not C", () =>
      Effect.gen(function*() {
        const sql = yield* admin
        const collation = yield* sql.unsafe<{ c: string }>(
          `SELECT coalesce(datlocale, datcollate) AS c FROM pg_database WHERE datname = current_database()`
        )
        // informative: the embedded server is initialised with en-US where possible
        console.log(`database collation: ${collation[0]!.c}`)
        const table = freshTable("order")
        const store = yield* instance({ table })
        const keys = ["a", "B", "b", "Z", "é", "\u{1F600}", "\uFFFD", "a b", "a_b", "ab"]
        yield* Effect.forEach(keys, (k) => store.set(k, bytes(k)), { discard: true })
        const expected = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)))
        assert.deepStrictEqual(yield* store.keys(""), expected)
      }))

    it.scoped("table and schema names are quoted: a reserved word and a new schema work", () =>
      Effect.gen(function*() {
        const schema = `kv_schema_${run}`
        const store = yield* instance({ schema, table: "select" })
        yield* store.set("k", bytes("v"))
        assert.strictEqual(text(yield* store.get("k")), "v")
      }))
  })

  describe("streamEntries is bounded in bytes", () => {
    it.scoped("8 MiB values: the statement itself stops at 16 MiB (2 values a page), and a stream's pages follow it", () =>
      Effect.gen(function*() {
        const table = freshTable("bigpages")
        const store = yield* instance({ table })
        const sql = yield* admin
        const MiB = 1024 * 1024
        const count = 6
        // the values made by the server: nothing this big crosses the wire to write them
        yield* sql.unsafe(
          `INSERT INTO ${table} (key_hash, key, value) SELECT 0, 'big/' || lpad(i::text, 2, '0'), ` +
            `convert_to(repeat(chr(64 + i), ${8 * MiB}), 'UTF8') FROM generate_series(1, ${count}) AS i`
        )
        // the driver alone, as the front calls it: the cut is made in SQL, not after reading
        const driver = makeDriver(sql, statementsFor({ table }))
        const pages: Array<number> = []
        let after: string | undefined = undefined
        for (;;) {
          const page: ReadonlyArray<readonly [string, Uint8Array]> = yield* driver.entriesPage!("big/", after, 1000, 16 * MiB)
          if (page.length === 0) break
          pages.push(page.length)
          after = page[page.length - 1]![0]
          if (page.length < 2) break
        }
        assert.deepStrictEqual(pages, [2, 2, 2])
        const heapBefore = process.memoryUsage().heapUsed
        let peak = 0
        const chunks = yield* Stream.runCollect(Stream.mapChunks(store.streamEntries("big/"), (chunk) => {
          peak = Math.max(peak, process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers)
          return Chunk.of(Chunk.toReadonlyArray(chunk).map(([key, value]) => [key, value.length] as const))
        }))
        const sizes = Chunk.toReadonlyArray(chunks).map((page) => page.map(([, size]) => size / MiB))
        assert.deepStrictEqual(sizes, [[8, 8], [8, 8], [8, 8]])
        // informative only (a loaded machine's heap is no assertion): the peak stays near two pages
        console.log(`streaming ${count} × 8 MiB: heap + buffers peaked ${((peak - heapBefore) / MiB).toFixed(0)} MiB above the start`)
      }))
  })

  describe("keys(prefix) is served by the primary-key index", () => {
    it("upper bounds: last code point + 1, skipping surrogates, dropping trailing U+10FFFF", () => {
      assert.strictEqual(prefixUpperBound("ab"), "ac")
      assert.strictEqual(prefixUpperBound("a\uD7FF"), "a\uE000")
      assert.strictEqual(prefixUpperBound("a\u{10FFFF}"), "b")
      assert.strictEqual(prefixUpperBound("a\u{FFFF}"), "a\u{10000}")
      assert.strictEqual(prefixUpperBound("\u{10FFFF}\u{10FFFF}"), undefined)
    })

    it.scoped("EXPLAIN of the store's own statements on 100k rows shows an index scan", () =>
      Effect.gen(function*() {
        const table = freshTable("explain")
        yield* instance({ table })
        const sql = yield* admin
        const statements = statementsFor({ table })
        yield* sql.unsafe(
          `INSERT INTO ${statements.qualifiedTable} (key_hash, key, value, expires_at) ` +
            `SELECT i, 'user/' || lpad(i::text, 6, '0'), '\\x00', CASE WHEN i % 3 = 0 THEN now() + interval '1 hour' END ` +
            `FROM generate_series(1, 100000) AS i`
        )
        yield* sql.unsafe(`ANALYZE ${statements.qualifiedTable}`)
        const plans: Array<string> = []
        for (
          const [statement, params] of [
            [statements.keysInRange, ["user/0012", prefixUpperBound("user/0012")]],
            [statements.keysInRange, ["user/0", prefixUpperBound("user/0")]],
            [statements.keysFrom, ["user/09999"]],
            [statements.get, ["user/000042"]]
          ] as const
        ) {
          const rows = yield* sql.unsafe<{ "QUERY PLAN": string }>(`EXPLAIN ${statement}`, [...params])
          const plan = rows.map((row) => row["QUERY PLAN"]).join("\n")
          plans.push(plan)
          assert.include(plan, "Index", plan)
          assert.notInclude(plan, "Seq Scan", plan)
        }
        console.log(plans.join("\n---\n"))
        const store = yield* instance({ table, createTable: false })
        assert.strictEqual((yield* store.keys("user/0012")).length, 100)
        assert.deepStrictEqual((yield* store.keys("user/00001")).slice(0, 3), ["user/000010", "user/000011", "user/000012"])
      }), { timeout: 60_000 })
  })

  describe("cleanup", () => {
    it.scoped("deletes a backlog in batches and returns the count", () =>
      Effect.gen(function*() {
        const table = freshTable("cleanup")
        const store = yield* instance({ table })
        const sql = yield* admin
        const t = statementsFor({ table }).qualifiedTable
        yield* sql.unsafe(
          `INSERT INTO ${t} (key_hash, key, value, expires_at) ` +
            `SELECT i, 'old/' || i, '\\x00', now() - interval '1 second' FROM generate_series(1, 2500) AS i`
        )
        yield* store.set("live/forever", bytes("x"))
        yield* store.set("live/later", bytes("x"), "1 hour")
        assert.strictEqual(yield* store.cleanup, 2500)
        assert.strictEqual(yield* store.cleanup, 0)
        assert.deepStrictEqual(yield* store.keys(""), ["live/forever", "live/later"])
        const left = yield* sql.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${t}`)
        assert.strictEqual(left[0]!.n, 2)
      }))

    // live: the sweep runs on the real clock's schedule
    it.scopedLive("the scheduled sweep of two instances removes expired rows without errors", () =>
      Effect.gen(function*() {
        const warnings: Array<string> = []
        const logger = Logger.make(({ logLevel, message }) => {
          if (logLevel._tag === "Warning" || logLevel._tag === "Error") warnings.push(String(message))
        })
        const table = freshTable("sweep")
        const t = statementsFor({ table }).qualifiedTable
        const sql = yield* admin
        const build = instance({ table, cleanupInterval: "30 millis" }).pipe(
          Effect.provide(Logger.replace(Logger.defaultLogger, logger))
        )
        const [a] = yield* Effect.all([build, build], { concurrency: "unbounded" })
        yield* sql.unsafe(
          `INSERT INTO ${t} (key_hash, key, value, expires_at) ` +
            `SELECT i, 'old/' || i, '\\x00', now() - interval '1 second' FROM generate_series(1, 3000) AS i`
        )
        yield* a.set("live", bytes("x"))
        let left = -1
        for (let i = 0; i < 100 && left !== 1; i++) {
          yield* sleep(30)
          left = (yield* sql.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${t}`))[0]!.n
        }
        assert.strictEqual(left, 1, "expired rows were not swept")
        assert.deepStrictEqual(warnings, [])
      }))
  })

  describe("bad options", () => {
    const hostile = ["kv; DROP TABLE x", "\"quoted\"", "", "a".repeat(64), "with space", "Upper", "1st", "kv\u0000"]
    for (const name of hostile) {
      it.scoped(`refuses table/schema name ${JSON.stringify(name)} at layer build`, () =>
        Effect.gen(function*() {
          expectKvError(yield* Effect.exit(instance({ table: name })), "layer", "InvalidArgument")
          expectKvError(yield* Effect.exit(instance({ schema: name })), "layer", "InvalidArgument")
        }))
    }

    it.scoped("takes null options (from JavaScript) as the defaults", () =>
      Effect.gen(function*() {
        const store = yield* instance(null as unknown as PostgresStore.Options)
        const key = `null-options/${run}`
        yield* store.set(key, bytes("v"))
        assert.strictEqual(text(yield* store.get(key)), "v")
        assert.isTrue(yield* store.delete(key))
      }))

    it.scoped("accepts a 63-character name", () =>
      Effect.gen(function*() {
        const store = yield* instance({ table: `kv_${run}_`.padEnd(63, "x") })
        yield* store.set("k", bytes("v"))
        assert.strictEqual(text(yield* store.get("k")), "v")
      }))

    it.scoped("refuses a non-positive or invalid cleanupInterval", () =>
      Effect.gen(function*() {
        for (const interval of [0, -1, Number.NaN, "-1 millis", Infinity] as const) {
          expectKvError(
            yield* Effect.exit(instance({ table: freshTable("interval"), cleanupInterval: interval })),
            "layer",
            "InvalidArgument"
          )
        }
      }))

    // the layer's table check refuses a missing table (issue 10; more cases in tableCheck.test.ts)
    it.scoped("createTable: false on a missing table fails the layer with KvError Backend", () =>
      Effect.gen(function*() {
        expectKvError(yield* Effect.exit(instance({ table: freshTable("missing"), createTable: false })), "layer", "Backend")
      }))
  })

  describe("backend trouble", () => {
    const terminate = (sql: SqlClient.SqlClient, applicationName: string) =>
      sql.unsafe(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
        [applicationName]
      )

    it.scoped("killed connections give KvError, never a defect, and the next call succeeds", () =>
      Effect.gen(function*() {
        const table = freshTable("killed")
        const app = `effect-kv-victim-${run}`
        const victim = yield* instance({ table }, app)
        const other = yield* instance({ table })
        const sql = yield* admin
        yield* victim.set("k", bytes("1"))

        // killed while idle in the pool
        yield* terminate(sql, app)
        yield* sleep(50)
        const afterIdle = yield* Effect.exit(victim.get("k"))
        if (Exit.isFailure(afterIdle)) expectKvError(afterIdle, "get", "Backend")
        assert.strictEqual(text(yield* victim.get("k")), "1")

        // killed while a set waits for the key's lock (held by the other instance's update)
        const started = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const holding = yield* Effect.fork(
          other.update("k", () => Deferred.succeed(started, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("2"))))
        )
        yield* Deferred.await(started)
        const setting = yield* Effect.fork(victim.set("k", bytes("3")))
        yield* sleep(50)
        yield* terminate(sql, app)
        expectKvError(yield* Fiber.await(setting), "set", "Backend")
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holding)
        assert.strictEqual(text(yield* victim.get("k")), "2")

        // killed in the middle of the victim's own update: the function ran, the write did not happen
        const inside = yield* Deferred.make<void>()
        const resume = yield* Deferred.make<void>()
        const updating = yield* Effect.fork(
          victim.update("k", () => Deferred.succeed(inside, undefined).pipe(Effect.zipRight(Deferred.await(resume)), Effect.as(bytes("4"))))
        )
        yield* Deferred.await(inside)
        yield* terminate(sql, app)
        yield* sleep(50)
        yield* Deferred.succeed(resume, undefined)
        expectKvError(yield* Fiber.await(updating), "update", "Backend")
        assert.strictEqual(text(yield* victim.get("k")), "2")
        // and the key is not left locked
        yield* victim.update("k", () => Effect.succeed(bytes("5"))).pipe(Effect.timeout("2 seconds"))
        assert.strictEqual(text(yield* other.get("k")), "5")
      }))

    it.scoped("a connection that forgot the prepared statements (DEALLOCATE ALL) still serves every call", () =>
      Effect.gen(function*() {
        const table = freshTable("deallocate")
        const pool = yield* Layer.build(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 }))
        const sql = Context.get(pool, SqlClient.SqlClient)
        const store = Context.get(yield* Layer.build(PostgresStore.layer({ table })).pipe(Effect.provide(pool)), KvStore.KvStore)
        yield* store.set("k", bytes("1"))
        assert.strictEqual(text(yield* store.get("k")), "1")
        yield* sql.unsafe("DEALLOCATE ALL") // the pool's only connection
        assert.strictEqual(text(yield* store.get("k")), "1")
        yield* store.set("k", bytes("2"))
        assert.deepStrictEqual(yield* store.keys(""), ["k"])
        assert.isTrue(yield* store.delete("k"))
      }))

    it.scoped("an interrupted update leaves no advisory lock behind", () =>
      Effect.gen(function*() {
        const table = freshTable("interrupt")
        const app = `effect-kv-interrupt-${run}`
        const store = yield* instance({ table }, app)
        const sql = yield* admin
        const advisoryLocks = sql.unsafe<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid ` +
            `WHERE l.locktype = 'advisory' AND a.application_name = $1`,
          [app]
        ).pipe(Effect.map((rows) => rows[0]!.n))
        const started = yield* Deferred.make<void>()
        const fiber = yield* Effect.fork(
          store.update("k", () => Deferred.succeed(started, undefined).pipe(Effect.zipRight(Effect.never)))
        )
        yield* Deferred.await(started)
        assert.strictEqual(yield* advisoryLocks, 1, "the update holds the key's lock while its function runs")
        yield* Fiber.interrupt(fiber)
        assert.strictEqual(yield* advisoryLocks, 0)

        // interrupted while waiting for the lock
        const holder = yield* Deferred.make<void>()
        const holding = yield* Effect.fork(
          store.update("k", () => Deferred.succeed(holder, undefined).pipe(Effect.zipRight(Effect.never)))
        )
        yield* Deferred.await(holder)
        const waiting = yield* Effect.fork(store.update("k", () => Effect.succeed(bytes("w"))))
        yield* sleep(50)
        yield* Fiber.interrupt(waiting)
        yield* Fiber.interrupt(holding)
        assert.strictEqual(yield* advisoryLocks, 0)
        yield* store.update("k", () => Effect.succeed(bytes("after"))).pipe(Effect.timeout("2 seconds"))
        assert.strictEqual(text(yield* store.get("k")), "after")
      }))

    it.scoped("update joins an outer transaction; the function's own SqlError comes out unchanged", () =>
      Effect.gen(function*() {
        const table = freshTable("nested")
        const pool = yield* Layer.build(pg())
        const sql = Context.get(pool, SqlClient.SqlClient)
        const store = Context.get(
          yield* Layer.build(PostgresStore.layer({ table })).pipe(Effect.provide(pool)),
          KvStore.KvStore
        )
        const exit = yield* Effect.exit(
          store.update("k", () => Effect.as(sql.unsafe("SELECT 1/0"), bytes("x")))
        )
        assert.isTrue(Exit.isFailure(exit))
        if (Exit.isFailure(exit)) {
          const failure = Option.getOrThrow(Cause.failureOption(exit.cause))
          assert.notInstanceOf(failure, KvStore.KvError, "the function's SqlError must not become a KvError")
          assert.strictEqual((failure as { _tag: string })._tag, "SqlError")
        }
        // rolled back with the outer transaction
        const aborted = yield* Effect.exit(
          sql.withTransaction(
            store.update("k", () => Effect.succeed(bytes("inner"))).pipe(Effect.zipRight(Effect.fail("abort" as const)))
          )
        )
        assert.isTrue(Exit.isFailure(aborted))
        assert.isTrue(Exit.isFailure(yield* Effect.exit(store.get("k"))))
        // committed with it
        yield* sql.withTransaction(
          Effect.zipRight(
            store.update("k", () => Effect.succeed(bytes("1"))),
            store.update("k", (v) => Effect.succeed(bytes(Option.match(v, { onNone: () => "none", onSome: text }) + "+1")))
          )
        )
        assert.strictEqual(text(yield* store.get("k")), "1+1")
      }))
  })
})
