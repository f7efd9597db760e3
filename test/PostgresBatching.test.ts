/**
 * Request batching on PostgreSQL (issue 11): concurrent gets, `has` and sets
 * coalesce into one statement per free connection. Small pools make almost
 * every call of these tests wait, so they go out in batches.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as KvStore from "../src/KvStore.js"
import { notifyChannel } from "../src/core/postgresSql.js"
import * as PostgresStore from "../src/PostgresStore.js"

const databaseUrl = inject("databaseUrl")
const run = randomUUID().slice(0, 8)
const freshTable = (what: string) => `kv_${what}_${run}`

const pg = (maxConnections: number) =>
  PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections, applicationName: "effect-kv-batching" })

/** A store on its own pool of `maxConnections`, with the pool's SqlClient. */
const instance = (options: PostgresStore.Options, maxConnections: number) =>
  Effect.map(
    Layer.build(Layer.provideMerge(PostgresStore.layer(options), pg(maxConnections))),
    (ctx) => ({
      store: Context.get(ctx, KvStore.KvStore),
      sql: Context.get(ctx, SqlClient.SqlClient),
      pg: Context.get(ctx, PgClient.PgClient)
    })
  )

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const bytes = (s: string) => encoder.encode(s)
const text = (b: Uint8Array) => decoder.decode(b)

const sleep = (millis: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, millis)))

/** Fails the test instead of hanging it. */
const bounded = (millis: number, what: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.timeoutFail(effect, { duration: millis, onTimeout: () => new Error(`${what}: still waiting after ${millis} ms`) })

type Instance = Effect.Effect.Success<ReturnType<typeof instance>>

/**
 * What `listener` hears on the table's channel, in order, once it is heard
 * listening (a probe that `notifier` sends came back); the probe left out.
 */
const listening = (notifier: Instance, listener: Instance, table: string) =>
  Effect.gen(function*() {
    const channel = notifyChannel("public", table)
    const heard: Array<string> = []
    yield* Effect.forkScoped(listener.pg.listen(channel).pipe(Stream.runForEach((key) => Effect.sync(() => heard.push(key)))))
    yield* Effect.repeat(
      Effect.zipRight(notifier.sql.unsafe(`SELECT pg_notify('${channel}', 'probe')`), Effect.sync(() => heard.includes("probe"))),
      { until: (ok) => ok, schedule: Schedule.spaced("20 millis") }
    ).pipe(bounded(10_000, "the LISTEN"))
    return Effect.sync(() => heard.filter((key) => key !== "probe"))
  })

/** The keys heard once `until` holds for them. */
const heardUntil = (heard: Effect.Effect<Array<string>>, until: (keys: Array<string>) => boolean) =>
  Effect.repeat(heard, { until, schedule: Schedule.spaced("20 millis") }).pipe(
    bounded(10_000, "the notifications"),
    Effect.zipRight(heard)
  )

describe("PostgresStore request batching", () => {
  it.scopedLive("200 concurrent gets, has and sets of mixed keys on a pool of 2 give exactly the right answers", () =>
    Effect.gen(function*() {
      const { store } = yield* instance({ table: freshTable("batch_mixed") }, 2)
      yield* store.setMany(Array.from({ length: 50 }, (_, i) => [`pre/${i}`, bytes(`pre ${i}`)] as const))
      yield* store.set("pre/empty", new Uint8Array(0))
      const calls = Array.from({ length: 200 }, (_, i) => {
        switch (i % 4) {
          // a fiber's set, then its get of the same key: the get sees the set
          case 0:
            return Effect.zipRight(
              store.set(`own/${i}`, bytes(`own ${i}`)),
              Effect.map(store.get(`own/${i}`), (v) => `own/${i}=${text(v)}`)
            )
          // preloaded keys, some missing (duplicates of one key in a batch too)
          case 1:
            return Effect.map(
              store.getOption(i % 8 === 1 ? `pre/${i % 50}` : `missing/${i % 3}`),
              (v) => `${i}:${Option.match(v, { onNone: () => "none", onSome: text })}`
            )
          case 2:
            return Effect.map(store.has(i % 8 === 2 ? `pre/${i % 50}` : `missing/${i}`), (h) => `${i}:${h}`)
          default:
            // concurrent sets of one key: one of the values wins, and each call is acknowledged
            return Effect.as(store.set(`shared/${i % 5}`, bytes(`shared ${i}`)), `${i}:set`)
        }
      })
      const answers = yield* Effect.all(calls, { concurrency: "unbounded" }).pipe(bounded(20_000, "200 calls"))
      const expected = Array.from({ length: 200 }, (_, i) => {
        switch (i % 4) {
          case 0:
            return `own/${i}=own ${i}`
          case 1:
            return `${i}:${i % 8 === 1 ? `pre ${i % 50}` : "none"}`
          case 2:
            return `${i}:${i % 8 === 2}`
          default:
            return `${i}:set`
        }
      })
      assert.deepStrictEqual(answers, expected)
      for (let k = 0; k < 5; k++) {
        const value = text(yield* store.get(`shared/${k}`))
        const writers = Array.from({ length: 200 }, (_, i) => i).filter((i) => i % 4 === 3 && i % 5 === k)
        assert.include(writers.map((i) => `shared ${i}`), value)
      }
      // every set landed: read back in one statement
      const own = yield* store.getMany(Array.from({ length: 50 }, (_, j) => `own/${j * 4}`))
      assert.deepStrictEqual(own.map((v) => Option.map(v, text)), Array.from({ length: 50 }, (_, j) => Option.some(`own ${j * 4}`)))
      assert.strictEqual((yield* store.get("pre/empty")).length, 0)
    }))

  it.scopedLive("a slow update of A (another instance) holds back no batched set of other keys; a set of A waits, then wins", () =>
    Effect.gen(function*() {
      const table = freshTable("batch_slow")
      const holder = yield* instance({ table }, 2)
      const writer = yield* instance({ table, createTable: false }, 3)
      const inside = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const updating = yield* Effect.fork(holder.store.update("A", () =>
        Deferred.succeed(inside, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("from update")))))
      yield* Deferred.await(inside).pipe(bounded(5000, "the update's start"))
      // sets of A among 60 sets of other keys, all at once
      const settingA = yield* Effect.fork(
        Effect.all(Array.from({ length: 3 }, () => writer.store.set("A", bytes("from set"))), { concurrency: "unbounded" })
      )
      const others = yield* Effect.all(
        Array.from({ length: 60 }, (_, i) => writer.store.set(`other/${i}`, bytes(`v${i}`))),
        { concurrency: "unbounded" }
      ).pipe(Effect.exit, bounded(10_000, "the sets of other keys while A is locked"))
      assert.isTrue(Exit.isSuccess(others), Exit.isFailure(others) ? Cause.pretty(others.cause) : "")
      const values = yield* writer.store.getMany(Array.from({ length: 60 }, (_, i) => `other/${i}`))
      assert.deepStrictEqual(values.map((v) => Option.map(v, text)), Array.from({ length: 60 }, (_, i) => Option.some(`v${i}`)))
      // the sets of A still wait for the update
      yield* sleep(100)
      assert.isTrue(Option.isNone(yield* Fiber.poll(settingA)), "a set of A finished while its update was in flight")
      assert.strictEqual(text(yield* holder.store.get("A").pipe(Effect.orElseSucceed(() => bytes("missing")))), "missing")
      yield* Deferred.succeed(release, undefined)
      assert.strictEqual(text(yield* Fiber.join(updating)), "from update")
      yield* Fiber.join(settingA).pipe(bounded(5000, "the sets of A after the update"))
      assert.strictEqual(text(yield* writer.store.get("A")), "from set")
    }))

  it.scopedLive("600 concurrent deletes of 60 keys on two pools of 2: one true per live key, an update in flight waited for, each removal notified", () =>
    Effect.gen(function*() {
      const table = freshTable("batch_delete")
      const a = yield* instance({ table, notifyChanges: true }, 2)
      const b = yield* instance({ table, createTable: false, notifyChanges: true }, 2)
      // live/0..39 live, gone/0..9 expired (the database's clock), missing/0..9 never written
      yield* a.store.setMany(Array.from({ length: 40 }, (_, i) => [`live/${i}`, bytes(`v${i}`)] as const))
      yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) => a.store.set(`gone/${i}`, bytes("x"), "1 millis"))
      yield* sleep(50)
      // every removal is announced on the table's channel: listening (a probe heard) before deleting
      const channel = notifyChannel("public", table)
      const heard: Array<string> = []
      yield* Effect.forkScoped(b.pg.listen(channel).pipe(Stream.runForEach((key) => Effect.sync(() => heard.push(key)))))
      yield* Effect.repeat(
        Effect.zipRight(a.sql.unsafe(`SELECT pg_notify('${channel}', 'probe')`), Effect.sync(() => heard.includes("probe"))),
        { until: (ok) => ok, schedule: Schedule.spaced("20 millis") }
      ).pipe(bounded(10_000, "the LISTEN"))
      // live/0 is being updated by the other instance while the deletes start: its deletes must wait
      const inside = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const updating = yield* Effect.fork(b.store.update("live/0", () =>
        Deferred.succeed(inside, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("updated")))))
      yield* Deferred.await(inside).pipe(bounded(5000, "the update's start"))
      // live/0 last: its deletes on pool A (B's wait in B's front, behind B's update) queue behind
      // missing/0's, which alone takes A's statement slot, so they go out in batches
      const keys = [
        ...Array.from({ length: 10 }, (_, i) => `missing/${i}`),
        ...Array.from({ length: 10 }, (_, i) => `gone/${i}`),
        ...Array.from({ length: 40 }, (_, i) => `live/${39 - i}`)
      ]
      // each key deleted 10 times, 5 on each pool, interleaved
      let released = false
      const calls = Array.from({ length: 600 }, (_, n) => {
        const key = keys[n % keys.length]!
        const store = Math.floor(n / keys.length) % 2 === 0 ? a.store : b.store
        return Effect.map(store.delete(key), (removed) => [key, removed, released] as const)
      })
      const deleting = yield* Effect.fork(Effect.all(calls, { concurrency: "unbounded" }))
      // release the update only once every other live key is gone: the batches holding live/0's deletes have run
      const othersLeft = Effect.map(
        a.sql.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE key LIKE 'live/%' AND key <> 'live/0'`),
        (rows) => rows[0]!.n
      )
      yield* Effect.repeat(othersLeft, { until: (n) => n === 0, schedule: Schedule.spaced("20 millis") }).pipe(
        bounded(30_000, "the deletes of the other keys")
      )
      released = true
      yield* Deferred.succeed(release, undefined)
      assert.strictEqual(text(yield* Fiber.join(updating)), "updated")
      const answers = yield* Fiber.join(deleting).pipe(bounded(30_000, "600 deletes"))
      const trues = new Map<string, number>()
      for (const [key, removed, afterRelease] of answers) {
        if (removed) trues.set(key, (trues.get(key) ?? 0) + 1)
        // a delete of live/0 waits for its update: none is answered while the update holds the key
        if (key === "live/0") assert.isTrue(afterRelease, "a delete of live/0 was answered while its update was in flight")
      }
      assert.deepStrictEqual(
        keys.filter((key) => trues.has(key)),
        keys.filter((key) => key.startsWith("live/")),
        "exactly the live keys were removed"
      )
      for (const [key, count] of trues) assert.strictEqual(count, 1, `${key}: ${count} deletes answered true`)
      // nothing survives: the update's value was written, then deleted (never skipped)
      const left = yield* a.store.getMany(keys)
      assert.isTrue(left.every(Option.isNone), "a key survived its deletes")
      // 40 removals and the update's write: each notified (the update's first, as it committed first)
      const notified = Effect.sync(() => heard.filter((key) => key !== "probe"))
      yield* Effect.repeat(notified, { until: (keys) => keys.length >= 41, schedule: Schedule.spaced("20 millis") })
        .pipe(bounded(10_000, "the notifications"))
      const keysNotified = yield* notified
      assert.deepStrictEqual(
        keysNotified.slice().sort(),
        [...Array.from({ length: 40 }, (_, i) => `live/${i}`), "live/0"].sort()
      )
    }))

  it.scopedLive("400 concurrent setIfAbsent of 50 keys on two pools of 2: one winner per absent key, its value stored, an update in flight waited for, each write notified", () =>
    Effect.gen(function*() {
      const table = freshTable("batch_set_if_absent")
      const a = yield* instance({ table, notifyChanges: true }, 2)
      const b = yield* instance({ table, createTable: false, notifyChanges: true }, 2)
      // absent/0..29 never written, gone/0..9 expired (the database's clock), live/0..8 live; held is being created by an update
      yield* a.store.setMany(Array.from({ length: 9 }, (_, i) => [`live/${i}`, bytes("kept")] as const))
      yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) => a.store.set(`gone/${i}`, bytes("x"), "1 millis"))
      yield* sleep(50)
      const heard = yield* listening(a, b, table)
      const inside = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const updating = yield* Effect.fork(b.store.update("held", () =>
        Deferred.succeed(inside, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("updated")))))
      yield* Deferred.await(inside).pipe(bounded(5000, "the update's start"))
      // held last: its calls on pool A queue behind the others and go out in batches (B's wait in B's front)
      const keys = [
        ...Array.from({ length: 30 }, (_, i) => `absent/${i}`),
        ...Array.from({ length: 10 }, (_, i) => `gone/${i}`),
        ...Array.from({ length: 9 }, (_, i) => `live/${i}`),
        "held"
      ]
      let released = false
      // each key 8 times, 4 on each pool, interleaved, each call with a value of its own
      const calls = Array.from({ length: 8 * keys.length }, (_, n) => {
        const key = keys[n % keys.length]!
        const round = Math.floor(n / keys.length)
        const value = `${key}#${round}`
        return Effect.map(
          (round % 2 === 0 ? a.store : b.store).setIfAbsent(key, bytes(value), "1 hour"),
          (won) => [key, value, won, released] as const
        )
      })
      const setting = yield* Effect.fork(Effect.all(calls, { concurrency: "unbounded" }))
      // release the update once every absent and expired key is written: the batches holding held's calls have run
      const written = Effect.map(
        a.sql.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE (key LIKE 'absent/%' OR key LIKE 'gone/%') AND expires_at > now() + interval '1 minute'`),
        (rows) => rows[0]!.n
      )
      yield* Effect.repeat(written, { until: (n) => n === 40, schedule: Schedule.spaced("20 millis") }).pipe(
        bounded(30_000, "the setIfAbsent of the other keys")
      )
      released = true
      yield* Deferred.succeed(release, undefined)
      assert.strictEqual(text(yield* Fiber.join(updating)), "updated")
      const answers = yield* Fiber.join(setting).pipe(bounded(30_000, "400 setIfAbsent"))
      const winners = new Map<string, Array<string>>()
      for (const [key, value, won, afterRelease] of answers) {
        if (won) winners.set(key, [...(winners.get(key) ?? []), value])
        if (key === "held") assert.isTrue(afterRelease, "a setIfAbsent of held was answered while its update was in flight")
      }
      const stored = yield* a.store.getMany(keys)
      for (const [i, key] of keys.entries()) {
        const won = winners.get(key) ?? []
        const value = Option.map(stored[i]!, text)
        if (key.startsWith("absent/") || key.startsWith("gone/")) {
          assert.strictEqual(won.length, 1, `${key}: ${won.length} calls returned true`)
          assert.deepStrictEqual(value, Option.some(won[0]!), `${key}: the stored value is not the winner's`)
        } else {
          // live ones kept; held was created by the update first, never written past
          assert.deepStrictEqual(won, [], `${key} was live, yet a setIfAbsent returned true`)
          assert.deepStrictEqual(value, Option.some(key === "held" ? "updated" : "kept"), key)
        }
      }
      // the TTLs were computed on the database's clock: about an hour left
      const left = yield* a.store.timeToLive("absent/0")
      const ms = Option.getOrThrow(left).pipe(Duration.toMillis)
      assert.isTrue(ms > 3_500_000 && ms <= 3_600_000, `${ms} ms left`)
      // 40 writes and the update's: each notified once, nothing else (a marker written last ends the wait)
      yield* a.store.set("end", bytes("end"))
      const keysNotified = yield* heardUntil(heard, (keys) => keys.includes("end"))
      assert.deepStrictEqual(keysNotified.slice().sort(), [...keys.filter((key) => !key.startsWith("live/")), "end"].sort())
    }))

  it.scopedLive("306 concurrent expires of 51 keys on two pools of 4 and 2: true for every call on a live key, updates in flight waited for (one creating its key), each change notified", () =>
    Effect.gen(function*() {
      const table = freshTable("batch_expire")
      // A's expires of held and created wait for B's updates each in a transaction of its own, one
      // connection each while they wait (as a lone expire of a held key does): A needs two more for its
      // batches and the test's own count of the expiries set
      const a = yield* instance({ table, notifyChanges: true }, 4)
      const b = yield* instance({ table, createTable: false, notifyChanges: true }, 2)
      yield* a.store.setMany(Array.from({ length: 30 }, (_, i) => [`live/${i}`, bytes(`v${i}`)] as const))
      yield* a.store.set("held", bytes("before"))
      yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) => a.store.set(`gone/${i}`, bytes("x"), "1 millis"))
      yield* sleep(50)
      const heard = yield* listening(a, b, table)
      // held (live) and created (missing until its update commits) are being updated by the other instance
      const release = yield* Deferred.make<void>()
      const updating = yield* Effect.forEach(["held", "created"], (key) =>
        Effect.gen(function*() {
          const inside = yield* Deferred.make<void>()
          const fiber = yield* Effect.fork(b.store.update(key, () =>
            Deferred.succeed(inside, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("updated")))))
          yield* Deferred.await(inside).pipe(bounded(5000, "the update's start"))
          return fiber
        }))
      const keys = [
        ...Array.from({ length: 9 }, (_, i) => `missing/${i}`),
        ...Array.from({ length: 10 }, (_, i) => `gone/${i}`),
        ...Array.from({ length: 30 }, (_, i) => `live/${i}`),
        "held",
        "created"
      ]
      const live = (key: string) => key.startsWith("live/") || key === "held" || key === "created"
      const updated = (key: string) => key === "held" || key === "created"
      const hours = [1, 2, 3, 4, 5, 6]
      let released = false
      const calls = Array.from({ length: hours.length * keys.length }, (_, n) => {
        const key = keys[n % keys.length]!
        const round = Math.floor(n / keys.length)
        return Effect.map(
          (round % 2 === 0 ? a.store : b.store).expire(key, Duration.hours(hours[round]!)),
          (wasLive) => [key, wasLive, released] as const
        )
      })
      const expiring = yield* Effect.fork(Effect.all(calls, { concurrency: "unbounded" }))
      // release the update once every live key has an expiry: the batches holding held's calls have run
      const changed = Effect.map(
        a.sql.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE key LIKE 'live/%' AND expires_at IS NOT NULL`),
        (rows) => rows[0]!.n
      )
      yield* Effect.repeat(changed, { until: (n) => n === 30, schedule: Schedule.spaced("20 millis") }).pipe(
        bounded(30_000, "the expires of the other keys")
      )
      released = true
      yield* Deferred.succeed(release, undefined)
      for (const fiber of updating) assert.strictEqual(text(yield* Fiber.join(fiber)), "updated")
      const answers = yield* Fiber.join(expiring).pipe(bounded(30_000, "306 expires"))
      for (const [key, wasLive, afterRelease] of answers) {
        // created exists once its update commits: an expire that waits for the update finds it live
        assert.strictEqual(wasLive, live(key), `expire of ${key} answered ${wasLive}`)
        if (updated(key)) assert.isTrue(afterRelease, `an expire of ${key} was answered while its update was in flight`)
      }
      const stored = yield* a.store.getMany(keys)
      for (const [i, key] of keys.entries()) {
        assert.deepStrictEqual(Option.map(stored[i]!, text), live(key) ? Option.some(updated(key) ? "updated" : `v${i - 19}`) : Option.none(), key)
        if (!live(key)) continue
        // one of the expiries asked, on the database's clock (after the update's write: never written past)
        const ms = Duration.toMillis(Option.getOrThrow(yield* a.store.timeToLive(key)))
        assert.isTrue(hours.some((h) => ms > h * 3_600_000 - 60_000 && ms <= h * 3_600_000), `${key}: ${ms} ms left`)
      }
      // every live key's change was notified (held's and created's by their updates too), and nothing else (a marker written last ends the wait)
      yield* a.store.set("end", bytes("end"))
      const keysNotified = new Set(yield* heardUntil(heard, (keys) => keys.includes("end")))
      assert.deepStrictEqual(
        Array.from(keysNotified).sort(),
        [...keys.filter(live), "end"].sort()
      )
    }))

  it.scopedLive("queued expires of one key, one statement in flight at a time: every one true, the last one's TTL stored", () =>
    Effect.gen(function*() {
      // a pool of 1: one coalesced statement at a time, so statements run in the order their calls arrived
      const { store } = yield* instance({ table: freshTable("batch_expire_order") }, 1)
      const keys = Array.from({ length: 20 }, (_, i) => `k/${i}`)
      yield* store.setMany(keys.map((key) => [key, bytes("v")] as const))
      // call n expires key n % 20 for (n / 20 + 1) hours: the last call of each key asks 5 hours
      const answers = yield* Effect.all(
        Array.from({ length: 100 }, (_, n) => store.expire(keys[n % keys.length]!, Duration.hours(Math.floor(n / keys.length) + 1))),
        { concurrency: "unbounded" }
      ).pipe(bounded(20_000, "100 expires"))
      assert.isTrue(answers.every((wasLive) => wasLive), "an expire of a live key answered false")
      for (const key of keys) {
        const ms = Duration.toMillis(Option.getOrThrow(yield* store.timeToLive(key)))
        assert.isTrue(ms > 5 * 3_600_000 - 60_000 && ms <= 5 * 3_600_000, `${key}: ${ms} ms left, not the last expiry asked`)
      }
    }))

  it.scopedLive("queued setIfAbsent of one key, one statement in flight at a time: the first caller wins, with its value", () =>
    Effect.gen(function*() {
      const { store } = yield* instance({ table: freshTable("batch_sia_order") }, 1)
      const keys = Array.from({ length: 20 }, (_, i) => `k/${i}`)
      const answers = yield* Effect.all(
        Array.from({ length: 100 }, (_, n) =>
          Effect.map(store.setIfAbsent(keys[n % keys.length]!, bytes(`call ${n}`)), (won) => [n, won] as const)),
        { concurrency: "unbounded" }
      ).pipe(bounded(20_000, "100 setIfAbsent"))
      // the first call of each key arrived first: it finds the key absent, the later ones find it written
      assert.deepStrictEqual(answers.filter(([, won]) => won).map(([n]) => n), Array.from({ length: 20 }, (_, n) => n))
      const stored = yield* store.getMany(keys)
      assert.deepStrictEqual(stored.map((v) => Option.map(v, text)), keys.map((_, n) => Option.some(`call ${n}`)))
    }))

  it.scopedLive("interrupting some waiting callers leaves the others' answers and the pool intact", () =>
    Effect.gen(function*() {
      const table = freshTable("batch_interrupt")
      const { store } = yield* instance({ table }, 1)
      yield* store.setMany(Array.from({ length: 40 }, (_, i) => [`k/${i}`, bytes(`v${i}`)] as const))
      // the only connection is held by an update: every call below waits, one for the pool, the rest queued
      const inside = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const updating = yield* Effect.fork(store.update("held", () =>
        Deferred.succeed(inside, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("h")))))
      yield* Deferred.await(inside).pipe(bounded(5000, "the update's start"))
      const calls = yield* Effect.forEach(Array.from({ length: 40 }, (_, i) => i), (i) =>
        Effect.fork(
          i % 2 === 0
            ? Effect.map(store.get(`k/${i}`), text)
            : Effect.as(store.set(`k/${i}`, bytes(`new ${i}`)), "set")
        ))
      yield* sleep(100)
      // interrupt every third caller, the first one (waiting for the pool) among them
      const interrupted = calls.filter((_, i) => i % 3 === 0)
      yield* Effect.forEach(interrupted, Fiber.interrupt).pipe(bounded(5000, "interrupting waiting callers"))
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(updating)
      for (let i = 0; i < calls.length; i++) {
        const exit = yield* Fiber.await(calls[i]!).pipe(bounded(10_000, `call ${i}`))
        if (i % 3 === 0) {
          assert.isTrue(Exit.isInterrupted(exit), `call ${i}: ${String(exit)}`)
        } else {
          assert.deepStrictEqual(exit, Exit.succeed(i % 2 === 0 ? `v${i}` : "set"), `call ${i}`)
        }
      }
      // nothing left behind: the single connection serves on, updates and batches alike
      yield* Effect.all(
        Array.from({ length: 20 }, (_, i) => store.set(`after/${i}`, bytes("ok"))),
        { concurrency: "unbounded" }
      ).pipe(bounded(5000, "sets after the interruptions"))
      assert.strictEqual(text(yield* store.update("held", () => Effect.succeed(bytes("again")))), "again")
      // an interrupted set was either written in full or not at all
      for (let i = 1; i < 40; i += 2) {
        const v = text(yield* store.get(`k/${i}`))
        assert.include([`v${i}`, `new ${i}`], v)
        if (i % 3 !== 0) assert.strictEqual(v, `new ${i}`)
      }
    }))

  it.scopedLive("a trigger that refuses one key fails that set only; the others of its batch are written", () =>
    Effect.gen(function*() {
      const table = freshTable("batch_trigger")
      const { sql, store } = yield* instance({ table }, 1)
      yield* sql.unsafe(
        `CREATE FUNCTION ${table}_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ ` +
          `BEGIN IF NEW.key LIKE 'bad%' THEN RAISE EXCEPTION 'refused %', NEW.key; END IF; RETURN NEW; END $$`
      )
      yield* sql.unsafe(
        `CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON ${table} FOR EACH ROW EXECUTE FUNCTION ${table}_refuse()`
      )
      const keys = Array.from({ length: 60 }, (_, i) => (i % 20 === 7 ? `bad/${i}` : `good/${i}`))
      const exits = yield* Effect.all(keys.map((key) => Effect.exit(store.set(key, bytes(key)))), {
        concurrency: "unbounded"
      }).pipe(bounded(10_000, "60 sets"))
      for (let i = 0; i < keys.length; i++) {
        const exit = exits[i]!
        if (keys[i]!.startsWith("bad")) {
          assert.isTrue(Exit.isFailure(exit), `${keys[i]} was written`)
          const error = Option.getOrThrow(Cause.failureOption((exit as Exit.Failure<void, KvStore.KvError>).cause))
          assert.instanceOf(error, KvStore.KvError)
          assert.strictEqual(error.reason, "Backend")
          assert.strictEqual(error.op, "set")
          assert.strictEqual(error.key, keys[i])
          assert.match(error.message, /refused/)
        } else {
          assert.isTrue(Exit.isSuccess(exit), `${keys[i]}: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
        }
      }
      const stored = yield* store.getMany(keys)
      assert.deepStrictEqual(
        stored.map((v) => Option.map(v, text)),
        keys.map((key) => (key.startsWith("bad") ? Option.none() : Option.some(key)))
      )
    }))

  it.scopedLive("300 concurrent increments of 6 keys on a pool of 2: every answer distinct, every count exact; a non-counter fails alone", () =>
    Effect.gen(function*() {
      const table = freshTable("batch_increment")
      const { store } = yield* instance({ table }, 2)
      const other = yield* instance({ table, createTable: false }, 2)
      yield* store.set("ctr/text", bytes("not a number"))
      yield* store.set("ctr/0", bytes("41"))
      const exits = yield* Effect.all(
        Array.from({ length: 300 }, (_, i) => {
          const key = i % 50 === 7 ? "ctr/text" : `ctr/${i % 5}`
          // both instances, so batches of one process meet the other's locks
          return Effect.exit((i % 3 === 0 ? other.store : store).increment(key, { by: i % 2 === 0 ? 1 : 2 }))
        }),
        { concurrency: "unbounded" }
      ).pipe(bounded(20_000, "300 increments"))
      const answers = new Map<string, Array<number>>()
      for (let i = 0; i < 300; i++) {
        const exit = exits[i]!
        if (i % 50 === 7) {
          assert.isTrue(Exit.isFailure(exit), `increment ${i} of a non-counter succeeded`)
          const error = Option.getOrThrow(Cause.failureOption((exit as Exit.Failure<number, KvStore.KvError>).cause))
          assert.strictEqual(error.reason, "InvalidArgument")
          continue
        }
        assert.isTrue(Exit.isSuccess(exit), `increment ${i}: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
        const key = `ctr/${i % 5}`
        answers.set(key, [...(answers.get(key) ?? []), (exit as Exit.Success<number, never>).value])
      }
      for (let k = 0; k < 5; k++) {
        const key = `ctr/${k}`
        const amounts = Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 50 !== 7 && i % 5 === k)
          .map((i) => (i % 2 === 0 ? 1 : 2))
        const start = k === 0 ? 41 : 0
        const total = start + amounts.reduce((a, b) => a + b, 0)
        assert.strictEqual(text(yield* store.get(key)), String(total), key)
        // every increment saw a different count: the answers are distinct and the largest is the total
        const seen = answers.get(key)!
        assert.strictEqual(new Set(seen).size, seen.length, `${key}: two increments gave the same answer`)
        assert.strictEqual(Math.max(...seen), total)
      }
      assert.strictEqual(text(yield* store.get("ctr/text")), "not a number")
    }))

  it.scopedLive("inside a transaction nothing is batched: concurrent calls see the transaction's own writes", () =>
    Effect.gen(function*() {
      const table = freshTable("batch_tx")
      const { sql, store } = yield* instance({ table }, 2)
      yield* store.set("tx/seen", bytes("before"))
      const inTx = yield* sql.withTransaction(
        Effect.gen(function*() {
          yield* Effect.all(Array.from({ length: 10 }, (_, i) => store.set(`tx/${i}`, bytes(`t${i}`))), {
            concurrency: "unbounded"
          })
          yield* store.set("tx/seen", bytes("inside"))
          return yield* Effect.all(
            [
              Effect.map(store.get("tx/seen"), text),
              Effect.map(store.has("tx/3"), String),
              Effect.map(store.getOption("tx/9"), (v) => Option.match(v, { onNone: () => "none", onSome: text }))
            ],
            { concurrency: "unbounded" }
          )
        })
      )
      assert.deepStrictEqual(inTx, ["inside", "true", "t9"])
      // and the transaction's writes were the transaction's: rolled back, they are gone
      const rolledBack = yield* Effect.exit(sql.withTransaction(
        Effect.zipRight(store.set("tx/rolled", bytes("x")), Effect.fail("abort"))
      ))
      assert.isTrue(Exit.isFailure(rolledBack))
      assert.isFalse(yield* store.has("tx/rolled"))
    }))
})
