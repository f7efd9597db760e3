/**
 * Batch, prefix and stream operations and prefixed views (issue 9): the
 * conformance in `src/internal/batchConformance.ts` (part of `effect-kv/conformance`) on MemoryStore and on PostgresStore
 * (logged and unlogged), then what only each backend can get wrong.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as TestClock from "effect/TestClock"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { batchConformance } from "../src/internal/batchConformance.js"
import { bytes, sleepReal, text, within } from "../src/internal/conformanceHelpers.js"

const databaseUrl = inject("databaseUrl")
const run = randomUUID().slice(0, 8)
const freshTable = (what: string) => `kv_${what}_${run}`
const pg = (applicationName = "effect-kv-batches") => PgClient.layer({ url: Redacted.make(databaseUrl), applicationName })
const storeLayer = (options: PostgresStore.Options) => PostgresStore.layer(options).pipe(Layer.provide(pg()))

// MemoryStore and PostgresStore (logged and unlogged) run it as part of the exported
// conformance suite (test/MemoryStore.test.ts, test/PostgresStore.test.ts); here the LRU bound
batchConformance("MemoryStore (maxEntries)", MemoryStore.layer({ maxEntries: 1_000_000 }))

/** An app instance: its own pool and store, for the test's scope. */
const instance = (options: PostgresStore.Options) =>
  Effect.map(Layer.build(storeLayer(options)), (ctx) => Context.get(ctx, KvStore.KvStore))

const admin = Effect.map(Layer.build(pg("effect-kv-batches-admin")), (ctx) => Context.get(ctx, SqlClient.SqlClient))

describe("PostgresStore batches", () => {
  it.scoped("two instances (separate pools): overlapping batches, updates and deletePrefix never deadlock, no increment lost", () =>
    Effect.gen(function*() {
      const table = freshTable("pools")
      const [a, b] = yield* Effect.all([instance({ table }), instance({ table })])
      const keys = Array.from({ length: 40 }, (_, i) => `k${i}`)
      const subset = (seed: number) => keys.filter((_, i) => (i + seed) % 4 !== 0).sort(() => (seed % 2 === 0 ? 1 : -1))
      const increment = (store: KvStore.KvStore.Service, key: string) =>
        store.update(key, (current) =>
          Effect.succeed(bytes(String(Option.match(current, { onNone: () => 0, onSome: (v) => Number(text(v)) }) + 1))))
      const work = Array.from({ length: 80 }, (_, i) => {
        const store = i % 2 === 0 ? a : b
        switch (i % 4) {
          case 0:
            return store.setMany(subset(i).map((k) => [k, bytes(String(i))] as const))
          case 1:
            return store.deleteMany(subset(i).reverse())
          case 2:
            return Effect.zipRight(increment(store, keys[i % 40]!), increment(store, "counter"))
          default:
            return i % 8 === 3 ? store.deletePrefix("k1") : increment(store, "counter")
        }
      })
      yield* within(60_000, "two pools", Effect.all(work, { concurrency: "unbounded", discard: true }))
      assert.strictEqual(text(yield* a.get("counter")), "30") // 20 from case 2, 10 from case 3
    }), 90_000)

  it.scoped("setMany of 2500 keys is all or nothing: a failing later batch leaves nothing written", () =>
    Effect.gen(function*() {
      const table = freshTable("atomic")
      const store = yield* instance({ table })
      const sql = yield* admin
      // a trigger refuses one key: the statement holding it fails after other batches have run
      yield* sql.unsafe(
        `CREATE FUNCTION ${table}_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN ` +
          `IF NEW.key = 'k-refused' THEN RAISE EXCEPTION 'refused by test'; END IF; RETURN NEW; END $$`
      )
      yield* sql.unsafe(`CREATE TRIGGER refuse BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION ${table}_refuse()`)
      const entries = Array.from({ length: 2500 }, (_, i) => [`k${i}`, bytes("v")] as const)
      const exit = yield* Effect.exit(store.setMany([...entries, ["k-refused", bytes("x")]]))
      assert.isTrue(exit._tag === "Failure")
      assert.strictEqual(yield* store.count(""), 0)
      yield* store.setMany(entries)
      assert.strictEqual(yield* store.count(""), 2500)
    }))

  it.scoped("deletePrefix of 5000 rows never holds more than about 1000 key locks at once", () =>
    Effect.gen(function*() {
      const table = freshTable("bounded")
      const store = yield* instance({ table })
      const sql = yield* admin
      yield* store.setMany(Array.from({ length: 5000 }, (_, i) => [`p/${String(i).padStart(5, "0")}`, bytes("v")] as const))
      yield* store.set("q/outside", bytes("o"))
      // Every deletePrefix batch takes one advisory lock per key (they show in pg_locks, row locks do not)
      // and holds it until its statement ends: watch them from a second connection while the delete runs.
      // An update of a key in the middle, from another instance, holds that key for a while, so a batch
      // certainly waits there holding the locks it has taken (on a loaded machine a free-running delete
      // could finish between two samples).
      const other = yield* instance({ table })
      const updating = yield* Effect.fork(other.update("p/02500", () => Effect.as(sleepReal(500), bytes("u"))))
      yield* sleepReal(50)
      let most = 0
      let samples = 0
      const watch = yield* Effect.fork(Effect.forever(Effect.gen(function*() {
        const rows = yield* sql.unsafe<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()`
        )
        most = Math.max(most, rows[0]!.n)
        samples++
      })))
      const removed = yield* store.deletePrefix("p/")
      yield* Fiber.interrupt(watch)
      yield* Fiber.join(updating)
      assert.strictEqual(removed, 5000)
      assert.strictEqual(yield* store.count(""), 1)
      assert.isAbove(samples, 0)
      // the update's own lock is one of them: more than one means a batch's locks were seen
      assert.isAbove(most, 1, "the watcher never saw a batch's locks")
      assert.isAtMost(most, 1001, `saw ${most} advisory locks at once (a batch's and the update's)`)
    }), 60_000)

  it.scoped("deletePrefix waits for an update in flight from another instance, then deletes its result", () =>
    Effect.gen(function*() {
      const table = freshTable("prefixwait")
      const [a, b] = yield* Effect.all([instance({ table }), instance({ table })])
      yield* a.setMany(Array.from({ length: 1500 }, (_, i) => [`p/${i}`, bytes("v")] as const))
      const updating = yield* Effect.fork(a.update("p/700", () => Effect.as(sleepReal(300), bytes("u"))))
      yield* sleepReal(50)
      assert.strictEqual(yield* b.deletePrefix("p/"), 1500)
      yield* Fiber.join(updating)
      // the update committed before the delete reached its row: deleted, not skipped
      assert.isFalse(yield* a.has("p/700"))
    }))
})

describe("MemoryStore ordered index", () => {
  it.scoped("listings stay right as writes, deletes, sweeps and evictions follow the first one", () =>
    Effect.gen(function*() {
      const store = yield* Effect.map(Layer.build(MemoryStore.layer({ maxEntries: 5 })), Context.get(KvStore.KvStore))
      yield* store.setMany([["c", bytes("")], ["a", bytes("")], ["b", bytes("")]])
      assert.deepStrictEqual(yield* store.keys(""), ["a", "b", "c"]) // builds the index
      yield* store.set("\u{1F600}", bytes(""))
      yield* store.set("\uE000", bytes(""))
      yield* store.set("d", bytes("")) // evicts "a", the least recently used (setMany writes in key order)
      assert.deepStrictEqual(yield* store.keys(""), ["b", "c", "d", "\uE000", "\u{1F600}"])
      yield* store.delete("b")
      yield* store.set("e", bytes(""), "1 second")
      assert.strictEqual(yield* store.deleteMany(["c", "zz"]), 1)
      assert.deepStrictEqual(yield* store.keys(""), ["d", "e", "\uE000", "\u{1F600}"])
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual(yield* store.cleanup, 1)
      assert.deepStrictEqual(yield* store.keys(""), ["d", "\uE000", "\u{1F600}"])
      assert.strictEqual(yield* store.count(""), 3)
      assert.strictEqual(yield* store.deletePrefix(""), 3)
      assert.deepStrictEqual(yield* store.keys(""), [])
    }))
})
