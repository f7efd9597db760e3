/**
 * Change feeds on `MemoryStore` and the front's fan-out (the Effect 3 line's
 * test/watch.test.ts on Effect 4): one driver
 * subscription per store however many watchers, released by the last one;
 * every kind of write reported; expiry on the `TestClock`; what watchers do
 * when the driver's feed is lost, resumes or fails; the shared feed for
 * `NearCache` (`serviceChanges`) with prefixed views. The behaviour every
 * backend shares is in the conformance suite (`watchConformance.ts`).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Deferred from "effect/Deferred"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { TestClock } from "effect/testing"
import type { Driver, DriverChange } from "../src/KvDriver.js"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import { serviceChanges, serviceRateLimits } from "../src/internal/front.js"
import { makeMemoryDriver } from "../src/internal/memoryDriver.js"

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)
const show = (value: Option.Option<Uint8Array>): string =>
  Option.match(value, { onNone: () => "none", onSome: (v) => JSON.stringify(new TextDecoder().decode(v)) })

/** Waits in real time (not on the TestClock), for fibers woken elsewhere to run. */
const sleepReal = (millis: number) =>
  Effect.callback<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), millis)
    return Effect.sync(() => clearTimeout(timer))
  })

/** Fails the test instead of hanging when `effect` takes longer than `millis` of real time. */
const within = <A, E, R>(millis: number, what: string, effect: Effect.Effect<A, E, R>) =>
  Effect.raceFirst(effect, Effect.flatMap(sleepReal(millis), () => Effect.die(`timed out: ${what}`)))

interface Watcher<A> {
  readonly next: Effect.Effect<A>
  readonly poll: (millis: number) => Effect.Effect<Option.Option<A>>
  readonly fiber: Fiber.Fiber<void, unknown>
  /** How the stream ended, once it has. */
  readonly exit: Effect.Effect<Exit.Exit<void, unknown>>
}

const start = <A, E, R>(stream: Stream.Stream<A, E, R>): Effect.Effect<Watcher<A>, never, Scope.Scope | R> =>
  Effect.gen(function*() {
    const queue = yield* Queue.unbounded<A>()
    const fiber = yield* Effect.forkScoped(Stream.runForEach(stream, (a) => Queue.offer(queue, a)))
    return {
      next: within(5_000, "waiting for a change", Queue.take(queue)),
      poll: (millis) =>
        Effect.raceFirst(Effect.asSome(Queue.take(queue)), Effect.as(sleepReal(millis), Option.none<A>())),
      fiber: fiber as Fiber.Fiber<void, unknown>,
      exit: within(5_000, "waiting for the stream to end", Fiber.await(fiber))
    }
  })

/**
 * Starts `store.watchPrefix(prefix)` and returns once it is live: a marker
 * key under the prefix is written until the watcher reports it (the stream
 * has no first item to say it subscribed). The marker's changes are left out.
 */
const startPrefix = (store: KvStore.KvStore.Service, prefix: string) =>
  Effect.gen(function*() {
    const marker = prefix + "\uffffmarker"
    let live = false
    const watcher = yield* start(Stream.filter(store.watchPrefix(prefix), (change) => {
      if (change.key !== marker) return true
      live = true
      return false
    }))
    for (let i = 0; !live; i++) {
      assert.isBelow(i, 100, "watchPrefix never reported its marker")
      yield* store.set(marker, bytes("m"))
      yield* sleepReal(20)
    }
    yield* store.delete(marker)
    return watcher
  })

/** A memory driver whose `changes` subscriptions are counted: opened in all, and open now. */
const countingDriver = (maxEntries?: number) => {
  const inner = makeMemoryDriver(maxEntries)
  const counts = { opened: 0, open: 0 }
  const driver: Driver = {
    ...inner,
    changes: Effect.acquireRelease(
      Effect.sync(() => {
        counts.opened++
        counts.open++
      }),
      () => Effect.sync(() => counts.open--)
    ).pipe(Effect.andThen(inner.changes!))
  }
  return { driver, counts }
}

/** A driver whose feed the test drives: changes published by hand, `"fail"` ends it (which it must never do). */
const scriptedDriver = Effect.gen(function*() {
  const inner = makeMemoryDriver(undefined)
  const hub = yield* PubSub.unbounded<DriverChange | "fail">()
  const driver: Driver = {
    ...inner,
    // a feed never ends while its scope is open: one that does has failed
    changes: Effect.map(PubSub.subscribe(hub), (subscription) =>
      Stream.takeWhile(Stream.fromSubscription(subscription), (item): item is DriverChange => item !== "fail"))
  }
  return { driver, publish: (item: DriverChange | "fail") => PubSub.publish(hub, item) }
})

describe("change feeds on MemoryStore", () => {
  it.effect("1,000 watchers share one driver subscription, and the last one to end closes it", () =>
    Effect.gen(function*() {
      const { counts, driver } = countingDriver()
      const store = yield* KvStore.make(driver)
      const watchers = yield* Effect.forEach(
        Array.from({ length: 1000 }, (_, i) => `k${i % 10}`),
        (key) => start(store.watch(key))
      )
      for (const watcher of watchers) assert.strictEqual(show(yield* watcher.next), "none")
      const prefixWatchers = yield* Effect.forEach(Array.from({ length: 10 }, () => 0), () => startPrefix(store, "k"))
      assert.strictEqual(counts.opened, 1, "one driver subscription for every watcher")
      yield* store.set("k3", bytes("v"))
      for (const [i, watcher] of watchers.entries()) {
        if (i % 10 === 3) assert.strictEqual(show(yield* watcher.next), '"v"')
      }
      for (const watcher of prefixWatchers) assert.strictEqual((yield* watcher.next).key, "k3")
      // a watcher of another key heard nothing
      assert.isTrue(Option.isNone(yield* watchers[0]!.poll(20)))
      yield* Effect.forEach(watchers.slice(1), (watcher) => Fiber.interrupt(watcher.fiber))
      yield* Effect.forEach(prefixWatchers, (watcher) => Fiber.interrupt(watcher.fiber))
      assert.strictEqual(counts.open, 1, "one watcher is left: the subscription stays")
      yield* store.set("k0", bytes("still"))
      assert.strictEqual(show(yield* watchers[0]!.next), '"still"')
      yield* Fiber.interrupt(watchers[0]!.fiber)
      assert.strictEqual(counts.open, 0, "the last watcher's end closed the driver subscription")
      // the next watcher opens a new one
      const again = yield* start(store.watch("k1"))
      assert.strictEqual(show(yield* again.next), "none")
      assert.deepStrictEqual(counts, { opened: 2, open: 1 })
    }))

  it.effect("a stream that ends by itself (take) releases its subscription", () =>
    Effect.gen(function*() {
      const { counts, driver } = countingDriver()
      const store = yield* KvStore.make(driver)
      const first = yield* Stream.runCollect(Stream.take(store.watch("k"), 1))
      assert.strictEqual(first.length, 1)
      assert.deepStrictEqual(counts, { opened: 1, open: 0 })
    }))

  it.effect("a bad key or prefix is refused before any subscription is opened", () =>
    Effect.gen(function*() {
      const { counts, driver } = countingDriver()
      const store = yield* KvStore.make(driver)
      for (const stream of [store.watch(""), store.watch(7 as unknown as string), store.watchPrefix("\u0000")]) {
        const exit = yield* Effect.exit(Stream.runHead(stream as Stream.Stream<unknown, KvStore.KvError>))
        assert.isTrue(Exit.isFailure(exit))
        const error = Option.getOrThrow(Cause.findErrorOption((exit as Exit.Failure<unknown, KvStore.KvError>).cause))
        assert.strictEqual(error.reason, "InvalidArgument")
      }
      assert.strictEqual(counts.opened, 0)
    }))

  it.effect("a store that redacts keys keeps them out of watchers' errors", () =>
    Effect.gen(function*() {
      const { changes: _, ...rest } = makeMemoryDriver(undefined)
      const store = yield* KvStore.make(rest, { redactKeys: true })
      const exit = yield* Effect.exit(Stream.runHead(store.watch("secret-token")))
      const error = Option.getOrThrow(Cause.findErrorOption((exit as Exit.Failure<unknown, KvStore.KvError>).cause))
      assert.strictEqual(error.key, "[redacted]")
      assert.notInclude(error.message, "secret-token")
    }))

  it.effect("a driver without changes: watchers fail with InvalidArgument saying the store has no feed", () =>
    Effect.gen(function*() {
      const { changes: _, ...rest } = makeMemoryDriver(undefined)
      const store = yield* KvStore.make(rest)
      for (const [op, stream] of [["watch", store.watch("k")], ["watchPrefix", store.watchPrefix("p/")]] as const) {
        const exit = yield* Effect.exit(Stream.runHead(stream as Stream.Stream<unknown, KvStore.KvError>))
        const error = Option.getOrThrow(Cause.findErrorOption((exit as Exit.Failure<unknown, KvStore.KvError>).cause))
        assert.strictEqual(error.reason, "InvalidArgument")
        assert.strictEqual(error.op, op)
        assert.match(error.message, /no change feed/)
      }
    }))

  it.effect("expiry is reported on the TestClock: nothing before the deadline, none within a second after", () =>
    Effect.gen(function*() {
      const store = yield* MemoryStore.make()
      yield* store.set("session", bytes("s"), "5 seconds")
      const watcher = yield* start(store.watch("session"))
      const changes = yield* startPrefix(store, "")
      assert.strictEqual(show(yield* watcher.next), '"s"')
      yield* TestClock.adjust("4900 millis")
      assert.isTrue(Option.isNone(yield* watcher.poll(50)), "reported before it expired")
      yield* TestClock.adjust("100 millis")
      let reported = yield* watcher.poll(50)
      for (let step = 0; step < 10 && Option.isNone(reported); step++) {
        yield* TestClock.adjust("100 millis")
        reported = yield* watcher.poll(50)
      }
      assert.isTrue(Option.isSome(reported), "not reported within a second of the expiry")
      assert.strictEqual(show(Option.getOrThrow(reported)), "none")
      const change = yield* changes.next
      assert.strictEqual(change.key, "session")
      assert.strictEqual(show(change.value), "none")
    }))

  it.effect("an entry written with a short TTL while the checker sleeps long is still reported within a second", () =>
    Effect.gen(function*() {
      const store = yield* MemoryStore.make()
      yield* store.set("later", bytes("l"), "1 hour")
      const watcher = yield* start(store.watch("soon"))
      assert.strictEqual(show(yield* watcher.next), "none")
      yield* store.set("soon", bytes("s"), "200 millis")
      assert.strictEqual(show(yield* watcher.next), '"s"')
      let reported: Option.Option<Option.Option<Uint8Array>> = Option.none()
      for (let step = 0; step < 12 && Option.isNone(reported); step++) {
        yield* TestClock.adjust("100 millis")
        reported = yield* watcher.poll(30)
      }
      assert.isTrue(Option.isSome(reported), "not reported within 1.2 s")
      assert.strictEqual(show(Option.getOrThrow(reported)), "none")
    }))

  it.effect("every kind of write is reported", () =>
    Effect.gen(function*() {
      const store = yield* MemoryStore.make({ maxEntries: 100 })
      const cases: ReadonlyArray<readonly [string, string, Effect.Effect<unknown, unknown>, string]> = [
        ["set", "a", store.set("a", bytes("1")), '"1"'],
        ["setIfAbsent", "b", store.setIfAbsent("b", bytes("2")), '"2"'],
        ["update", "a", store.update("a", () => Effect.succeed(bytes("3"))), '"3"'],
        ["increment", "n", store.increment("n", { by: 5 }), '"5"'],
        ["expire", "a", store.expire("a", "1 hour"), '"3"'],
        ["setMany", "c", store.setMany([["c", bytes("4")], ["d", bytes("5")]]), '"4"'],
        ["deleteMany", "c", store.deleteMany(["c"]), "none"],
        ["delete", "b", store.delete("b"), "none"],
        ["deletePrefix", "d", store.deletePrefix("d"), "none"],
        [
          "rateLimit",
          "limit",
          serviceRateLimits.get(store)!("limit", { algorithm: "fixed-window", tokens: 1, refillMillis: 1000, limit: 10 }),
          "some"
        ]
      ]
      for (const [op, key, write, expected] of cases) {
        const watcher = yield* start(store.watch(key))
        yield* watcher.next
        yield* write
        const value = show(yield* watcher.next)
        if (expected === "some") assert.notStrictEqual(value, "none", op)
        else assert.strictEqual(value, expected, op)
        yield* Fiber.interrupt(watcher.fiber)
      }
    }))

  it.effect("cleanup of expired entries and eviction by maxEntries are reported", () =>
    Effect.gen(function*() {
      const store = yield* MemoryStore.make({ maxEntries: 2 })
      const changes = yield* startPrefix(store, "")
      yield* store.set("old", bytes("o"))
      yield* store.set("mid", bytes("m"))
      yield* store.set("new", bytes("n")) // evicts "old"
      const seen = new Map<string, string>()
      while (seen.get("old") !== "none" || seen.get("new") !== '"n"') {
        const change = yield* changes.next
        seen.set(change.key, show(change.value))
      }
      yield* store.set("ttl", bytes("t"), "100 millis")
      yield* TestClock.adjust("200 millis")
      yield* store.cleanup
      while (seen.get("ttl") !== "none") {
        const change = yield* changes.next
        seen.set(change.key, show(change.value))
      }
    }))

  it.effect("a slow watcher holds one dirty flag, not every write: 10,000 sets while it does not pull come as a few values", () =>
    Effect.gen(function*() {
      const store = yield* MemoryStore.make()
      yield* Effect.scoped(Effect.gen(function*() {
        const pull = yield* Stream.toPull(store.watch("k"))
        assert.strictEqual(show((yield* pull)[0]), "none")
        for (let i = 1; i <= 10_000; i++) yield* store.set("k", bytes(String(i)))
        const values: Array<string> = []
        while (values.at(-1) !== '"10000"') {
          const chunk = yield* within(5_000, "pull", pull)
          for (const value of chunk) values.push(show(value))
        }
        assert.isAtMost(values.length, 3, `a slow watcher got ${values.length} values`)
      }))
    }))

  it.effect("Resumed: watch re-reads and emits only a changed value; watchPrefix fails saying to resync", () =>
    Effect.gen(function*() {
      const { driver, publish } = yield* scriptedDriver
      const store = yield* KvStore.make(driver)
      yield* store.set("k", bytes("v1"))
      const watcher = yield* start(store.watch("k"))
      const prefix = yield* start(store.watchPrefix(""))
      assert.strictEqual(show(yield* watcher.next), '"v1"')
      yield* publish({ _tag: "Lost" })
      yield* publish({ _tag: "Resumed" })
      assert.isTrue(Option.isNone(yield* watcher.poll(100)), "an unchanged value was emitted again after Resumed")
      yield* publish({ _tag: "Lost" })
      yield* store.set("k", bytes("v2")) // missed by the feed (this driver reports nothing by itself)
      yield* publish({ _tag: "Resumed" })
      assert.strictEqual(show(yield* watcher.next), '"v2"')
      const exit = yield* prefix.exit
      const error = Option.getOrThrow(Cause.findErrorOption((exit as Exit.Failure<void, KvStore.KvError>).cause))
      assert.strictEqual(error.reason, "Backend")
      assert.strictEqual(error.op, "watchPrefix")
      assert.match(error.message, /resync/)
    }))

  it.effect("a driver feed that ends ends every watcher with a Backend error; the next watcher subscribes anew", () =>
    Effect.gen(function*() {
      const { driver, publish } = yield* scriptedDriver
      const store = yield* KvStore.make(driver)
      const watcher = yield* start(store.watch("k"))
      assert.strictEqual(show(yield* watcher.next), "none")
      yield* publish("fail")
      const exit = yield* watcher.exit
      const error = Option.getOrThrow(Cause.findErrorOption((exit as Exit.Failure<void, KvStore.KvError>).cause))
      assert.strictEqual(error.reason, "Backend")
      assert.strictEqual(error.op, "watch")
      assert.match(error.message, /change feed ended/)
      const again = yield* start(store.watch("k"))
      assert.strictEqual(show(yield* again.next), "none")
      yield* publish({ _tag: "Changed", key: "k" })
      yield* store.set("k", bytes("x"))
      yield* publish({ _tag: "Changed", key: "k" })
      assert.strictEqual(show(yield* again.next), '"x"')
    }))

  it.effect("serviceChanges: the shared feed for NearCache, with a prefixed view's keys mapped", () =>
    Effect.gen(function*() {
      const { counts, driver } = countingDriver()
      const store = yield* KvStore.make(driver)
      const view = KvStore.prefixed(store, "app/")
      const feed = yield* serviceChanges.get(view)!
      const seen = yield* start(feed)
      const watcher = yield* start(store.watch("other"))
      yield* watcher.next
      assert.strictEqual(counts.opened, 1, "the near cache's feed and the watchers share one subscription")
      yield* store.set("other", bytes("x"))
      yield* store.set("app", bytes("x")) // the view's prefix itself is not one of its keys
      yield* view.set("k", bytes("y"))
      assert.deepStrictEqual(yield* seen.next, { _tag: "Changed", key: "k" })
      assert.isTrue(Option.isNone(yield* seen.poll(50)))
    }))

  it.effect("KvStore.watch and watchPrefix accessors use the store in context", () =>
    Effect.gen(function*() {
      const watcher = yield* start(KvStore.watch("k"))
      assert.strictEqual(show(yield* watcher.next), "none")
      const changes = yield* startPrefix(yield* KvStore.KvStore, "")
      yield* KvStore.set("k", bytes("v"))
      assert.strictEqual(show(yield* watcher.next), '"v"')
      assert.strictEqual((yield* changes.next).key, "k")
    }).pipe(Effect.provide(MemoryStore.layer())))
  it.live("a watcher that outlives its MemoryStore ends when the store's scope closes, as on PostgreSQL", () =>
    Effect.gen(function*() {
      const storeScope = yield* Scope.make()
      const store = yield* Scope.provide(MemoryStore.make(), storeScope)
      const started = yield* Deferred.make<void>()
      const watcher = yield* Effect.forkChild(store.watch("k").pipe(
        Stream.tap(() => Deferred.succeed(started, undefined)),
        Stream.runDrain
      ))
      yield* Deferred.await(started)
      yield* Scope.close(storeScope, Exit.void)
      // it ran on for good before: nothing ended the memory feed
      const exit = yield* within(5_000, "the watcher to end", Fiber.await(watcher))
      assert.isTrue(Exit.isFailure(exit), "the watcher ended without a failure")
      // and a new watcher of the closed store is refused at once
      const late = yield* Effect.exit(Stream.runHead(store.watch("k")))
      assert.isTrue(Exit.isFailure(late))
    }))
})
