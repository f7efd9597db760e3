/**
 * Request batching on PostgreSQL, Effect 4: the coalesced `setIfAbsent` and `expire`
 * (ported from the Effect 3 line's test/PostgresBatching.test.ts, coalesce2). Small pools
 * make almost every call of these tests wait, so they go out in batches; two pools are
 * two app instances on one table. The Effect 3 file's other batching tests (gets, sets,
 * deletes, increments) are not ported yet; the conformance suite runs those operations
 * concurrently on both lines.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as KvStore from "../src/KvStore.js"
import { notifyChannel } from "../src/core/postgresSql.js"
import * as PostgresStore from "../src/PostgresStore.js"

const databaseUrl = inject("databaseUrl")
const run = randomUUID().slice(0, 8)
let tables = 0
/** A table name no other test or run uses. */
const freshTable = (what: string) => `kv4_${what}_${run}_${tables++}`

const pg = (maxConnections: number) =>
  PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections, applicationName: "effect-kv4-batching" })

/** A store on its own pool of `maxConnections`, closed with the test's scope. */
const instance = (options: PostgresStore.Options, maxConnections: number): Effect.Effect<{ readonly store: KvStore.Service }, unknown, Scope.Scope> =>
  Effect.map(Layer.build(PostgresStore.layer(options).pipe(Layer.provide(pg(maxConnections)))), (ctx) => ({
    store: Context.get(ctx, KvStore.KvStore)
  }))

/**
 * A pool of one for the test's own queries while the instances' pools are busy: a caller
 * waiting for a key's lock holds one of its instance's connections (one per key), so two
 * keys held by updates can take both of a pool of 2 until the updates end.
 */
const observer = Effect.map(Layer.build(pg(1)), Context.get(SqlClient.SqlClient))

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
      orElse: () => Effect.die(new Error(`${what}: still waiting after ${millis} ms`))
    })
  )

/** Polls `value` every 20 ms until `until` holds for it (bounded by the caller). */
const pollUntil = <A, E, R>(value: Effect.Effect<A, E, R>, until: (a: A) => boolean) =>
  Effect.gen(function*() {
    for (;;) {
      const a = yield* value
      if (until(a)) return a
      yield* sleep(20)
    }
  })

/**
 * What a listener hears on the table's channel, in order, from the moment PostgreSQL
 * confirmed its `LISTEN` (`PgClient.listen` returns then). Effect 4's `listen` holds a
 * connection of its client's pool (the Effect 3 line's has a client of its own): the
 * listener is a pool of its own, so the instances keep all their connections.
 */
const listening = (table: string) =>
  Effect.gen(function*() {
    const heard: Array<string> = []
    const listener = Context.get(yield* Layer.build(pg(1)), PgClient.PgClient)
    const notifications = yield* Effect.orDie(listener.listen(notifyChannel("public", table)))
    yield* Effect.forkScoped(Effect.forever(Effect.map(Queue.take(notifications), (n) => heard.push(n.payload))))
    return Effect.sync(() => heard.slice())
  })

/** The keys heard once `until` holds for them. */
const heardUntil = (heard: Effect.Effect<Array<string>>, until: (keys: Array<string>) => boolean) =>
  pollUntil(heard, until).pipe(bounded(10_000, "the notifications"))

describe("PostgresStore request batching on Effect 4", () => {
  it.live("400 concurrent setIfAbsent of 50 keys on two pools of 2: one winner per absent key, its value stored, an update in flight waited for, each write notified", () =>
    Effect.gen(function*() {
      const table = freshTable("batch_set_if_absent")
      const a = yield* instance({ table, notifyChanges: true }, 2)
      const b = yield* instance({ table, createTable: false, notifyChanges: true }, 2)
      // absent/0..29 never written, gone/0..9 expired (the database's clock), live/0..8 live; held is being created by an update
      yield* a.store.setMany(Array.from({ length: 9 }, (_, i) => [`live/${i}`, bytes("kept")] as const))
      yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) => a.store.set(`gone/${i}`, bytes("x"), "1 millis"))
      yield* sleep(50)
      const heard = yield* listening(table)
      const inside = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const updating = yield* Effect.forkChild(b.store.update("held", () =>
        Deferred.succeed(inside, undefined).pipe(Effect.andThen(Deferred.await(release)), Effect.as(bytes("updated")))))
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
      const setting = yield* Effect.forkChild(Effect.all(calls, { concurrency: "unbounded" }))
      // release the update once every absent and expired key is written: the batches holding held's calls have run
      const watcher = yield* observer
      const written = Effect.map(
        watcher.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE (key LIKE 'absent/%' OR key LIKE 'gone/%') AND expires_at > now() + interval '1 minute'`),
        (rows) => rows[0]!.n
      )
      yield* pollUntil(written, (n) => n === 40).pipe(bounded(30_000, "the setIfAbsent of the other keys"))
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
      const ms = Duration.toMillis(Option.getOrThrow(yield* a.store.timeToLive("absent/0")))
      assert.isTrue(ms > 3_500_000 && ms <= 3_600_000, `${ms} ms left`)
      // 40 writes and the update's: each notified once, nothing else (a marker written last ends the wait)
      yield* a.store.set("end", bytes("end"))
      const keysNotified = yield* heardUntil(heard, (keys) => keys.includes("end"))
      assert.deepStrictEqual(keysNotified.slice().sort(), [...keys.filter((key) => !key.startsWith("live/")), "end"].sort())
    }), 60_000)

  it.live("306 concurrent expires of 51 keys on two pools of 4 and 2: true for every call on a live key, updates in flight waited for (one creating its key), each change notified", () =>
    Effect.gen(function*() {
      const table = freshTable("batch_expire")
      // A's expires of held and created wait for B's updates each in a transaction of its own, one
      // connection each while they wait (as a lone expire of a held key does): A needs more for its
      // batches (as on main since 3a2b26a; the test's own count runs on a pool of its own here)
      const a = yield* instance({ table, notifyChanges: true }, 4)
      const b = yield* instance({ table, createTable: false, notifyChanges: true }, 2)
      yield* a.store.setMany(Array.from({ length: 30 }, (_, i) => [`live/${i}`, bytes(`v${i}`)] as const))
      yield* a.store.set("held", bytes("before"))
      yield* Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) => a.store.set(`gone/${i}`, bytes("x"), "1 millis"))
      yield* sleep(50)
      const heard = yield* listening(table)
      // held (live) and created (missing until its update commits) are being updated by the other instance
      const release = yield* Deferred.make<void>()
      const updating = yield* Effect.forEach(["held", "created"], (key) =>
        Effect.gen(function*() {
          const inside = yield* Deferred.make<void>()
          const fiber = yield* Effect.forkChild(b.store.update(key, () =>
            Deferred.succeed(inside, undefined).pipe(Effect.andThen(Deferred.await(release)), Effect.as(bytes("updated")))))
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
      const expiring = yield* Effect.forkChild(Effect.all(calls, { concurrency: "unbounded" }))
      // release the updates once every live key has an expiry: the batches holding held's calls have run
      // (asked on a pool of its own: A's callers of held and created may hold both of A's connections meanwhile)
      const watcher = yield* observer
      const changed = Effect.map(
        watcher.unsafe<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE key LIKE 'live/%' AND expires_at IS NOT NULL`),
        (rows) => rows[0]!.n
      )
      yield* pollUntil(changed, (n) => n === 30).pipe(bounded(30_000, "the expires of the other keys"))
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
        assert.deepStrictEqual(
          Option.map(stored[i]!, text),
          live(key) ? Option.some(updated(key) ? "updated" : `v${i - 19}`) : Option.none(),
          key
        )
        if (!live(key)) continue
        // one of the expiries asked, on the database's clock (after the update's write: never written past)
        const ms = Duration.toMillis(Option.getOrThrow(yield* a.store.timeToLive(key)))
        assert.isTrue(hours.some((h) => ms > h * 3_600_000 - 60_000 && ms <= h * 3_600_000), `${key}: ${ms} ms left`)
      }
      // every live key's change was notified (held's and created's by their updates too), and nothing else (a marker written last ends the wait)
      yield* a.store.set("end", bytes("end"))
      const keysNotified = new Set(yield* heardUntil(heard, (keys) => keys.includes("end")))
      assert.deepStrictEqual(Array.from(keysNotified).sort(), [...keys.filter(live), "end"].sort())
    }), 60_000)

  it.live("queued expires of one key, one statement in flight at a time: every one true, the last one's TTL stored", () =>
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

  it.live("queued setIfAbsent of one key, one statement in flight at a time: the first caller wins, with its value", () =>
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
})
