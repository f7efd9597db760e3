/**
 * Conformance for the change feeds (API.md "Change feeds"), part of the
 * exported suite: `watch`, `watchPrefix`, their prefixed and typed views, on
 * any store. A store whose driver has no feed must refuse every watcher with
 * `KvError` (`InvalidArgument`); each test checks that instead when the
 * store says it has none. Deliveries are awaited in real time with generous
 * bounds (a feed may run on another connection); expiry is moved by the
 * `TestClock`, and with `databaseClock` by real waits as well. Each test works
 * under a fresh prefix of its own.
 */
import { assert, layer } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { randomUUID } from "node:crypto"
import * as KvStore from "../KvStore.js"
import { bytes, sleepReal, text, within } from "./conformanceHelpers.js"

/** How long a test waits (real time) for a change it expects: generous, for loaded machines. */
const DELIVERY_MILLIS = 10_000

/** What a watcher saw, in order: values, or the failure that ended it. */
type Seen<A> = { readonly _tag: "Value"; readonly value: A } | { readonly _tag: "Failed"; readonly cause: Cause.Cause<unknown> }

interface Watcher<A> {
  /** The next item, failing the test after `DELIVERY_MILLIS` without one. */
  readonly next: Effect.Effect<A>
  /** The next item within `millis` of real time, if any. */
  readonly poll: (millis: number) => Effect.Effect<Option.Option<A>>
}

/** Runs `stream` in the test's scope, its items queued for the test to take. */
const start = <A, E, R>(stream: Stream.Stream<A, E, R>, what: string): Effect.Effect<Watcher<A>, never, Scope.Scope | R> =>
  Effect.gen(function*() {
    const queue = yield* Queue.unbounded<Seen<A>>()
    yield* Stream.runForEach(stream, (value) => Queue.offer(queue, { _tag: "Value", value })).pipe(
      Effect.catchAllCause((cause) => Queue.offer(queue, { _tag: "Failed", cause })),
      Effect.forkScoped
    )
    const unwrap = (seen: Seen<A>): A => {
      if (seen._tag === "Failed") assert.fail(`${what} failed: ${Cause.pretty(seen.cause)}`)
      return seen.value
    }
    return {
      next: Effect.map(within(DELIVERY_MILLIS, `${what}: waiting for a change`, Queue.take(queue)), unwrap),
      poll: (millis) =>
        Effect.raceFirst(
          Effect.map(Queue.take(queue), (seen) => Option.some(unwrap(seen))),
          Effect.as(sleepReal(millis), Option.none<A>())
        )
    }
  })

const show = (value: Option.Option<Uint8Array>): string =>
  Option.match(value, { onNone: () => "none", onSome: (v) => JSON.stringify(text(v)) })

/** The typed failure of `exit`; fails the test on success, a defect or an interruption. */
const failureOf = <A, E>(exit: Exit.Exit<A, E>, what: string): E => {
  if (Exit.isSuccess(exit)) assert.fail(`${what} succeeded; expected a failure`)
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) assert.fail(`${what}: not a typed failure: ${Cause.pretty(exit.cause)}`)
  return failure.value
}

const assertRefused = (error: unknown, op: string, what: string): void => {
  assert.instanceOf(error, KvStore.KvError, `${what}: expected a KvError, got ${String(error)}`)
  const e = error as KvStore.KvError
  assert.strictEqual(e.reason, "InvalidArgument", e.message)
  assert.strictEqual(e.op, op, e.message)
}

/** The first item of `stream`, or how it failed; bounded in real time. */
const firstOf = <A, E>(stream: Stream.Stream<A, E>, what: string) =>
  Effect.exit(within(DELIVERY_MILLIS, what, Stream.runHead(stream)))

class Flag extends Schema.Class<Flag>("Flag")({ on: Schema.Boolean, note: Schema.String }) {}

export interface WatchConformanceOptions {
  readonly databaseClock: boolean
}

export const watchConformance = (
  name: string,
  store: Layer.Layer<KvStore.KvStore, unknown>,
  options: WatchConformanceOptions
): void => {
  const run = randomUUID().slice(0, 8)
  let n = 0
  const fresh = () => `watch-${run}-${n++}/`

  /** Moves time forward for the store: the TestClock, and with a database clock the real one too. */
  const advance = (duration: Duration.DurationInput): Effect.Effect<void> =>
    options.databaseClock
      ? Effect.zipRight(TestClock.adjust(duration), sleepReal(Duration.toMillis(Duration.decode(duration))))
      : TestClock.adjust(duration)

  /**
   * Whether the store has a change feed: `watch` gives its first value. Without
   * one, both watchers must be refused with `InvalidArgument`: checked here,
   * and the test then has nothing more to prove.
   */
  const hasFeed = (prefix: string) =>
    Effect.gen(function*() {
      const store = yield* KvStore.KvStore
      const exit = yield* firstOf(store.watch(prefix + "probe"), "watch (probe)")
      if (Exit.isSuccess(exit)) return true
      assertRefused(failureOf(exit, "watch"), "watch", "watch on a store without a change feed")
      const prefixExit = yield* firstOf(store.watchPrefix(prefix), "watchPrefix (probe)")
      assertRefused(failureOf(prefixExit, "watchPrefix"), "watchPrefix", "watchPrefix on a store without a change feed")
      return false
    })

  /**
   * Starts `watchPrefix(prefix)` and returns once it is live: a marker key
   * under the prefix is written until the watcher reports it (the stream
   * gives no first item to say it subscribed). Changes of the marker are
   * left out of what the test sees.
   */
  const startPrefix = <A, E, R, R2>(
    stream: Stream.Stream<{ readonly key: string; readonly value: A }, E, R>,
    marker: string,
    write: Effect.Effect<unknown, unknown, R2>
  ) =>
    Effect.gen(function*() {
      let live = false
      const watcher = yield* start(
        Stream.filter(stream, (change) => {
          if (change.key !== marker) return true
          live = true
          return false
        }),
        "watchPrefix"
      )
      for (let i = 0; !live; i++) {
        if (i * 100 > DELIVERY_MILLIS) assert.fail("watchPrefix never reported a write under its prefix")
        yield* Effect.orDie(write)
        yield* sleepReal(100)
      }
      return watcher
    })

  layer(store, { timeout: 60_000 })(`${name} change feeds`, (it) => {
    it.scoped("watch emits the current value, then the value after each change; none after delete", () =>
      Effect.gen(function*() {
        const prefix = fresh()
        if (!(yield* hasFeed(prefix))) return
        const key = prefix + "k"
        yield* KvStore.set(key, bytes("v1"))
        const watcher = yield* start(KvStore.watch(key), "watch")
        assert.strictEqual(show(yield* watcher.next), '"v1"')
        yield* KvStore.set(key, bytes("v2"))
        assert.strictEqual(show(yield* watcher.next), '"v2"')
        yield* KvStore.delete(key)
        assert.strictEqual(show(yield* watcher.next), "none")
        yield* KvStore.update(key, () => Effect.succeed(bytes("v3")))
        assert.strictEqual(show(yield* watcher.next), '"v3"')
        const missing = yield* start(KvStore.watch(prefix + "missing"), "watch")
        assert.strictEqual(show(yield* missing.next), "none", "a missing key starts with none")
      }))

    it.scoped("watchers get their own copies of values: changing one changes neither the store nor another watcher", () =>
      Effect.gen(function*() {
        const prefix = fresh()
        if (!(yield* hasFeed(prefix))) return
        const key = prefix + "k"
        yield* KvStore.set(key, bytes("abc"))
        const one = yield* start(KvStore.watch(key), "watch")
        const two = yield* start(KvStore.watch(key), "watch")
        const first = Option.getOrThrow(yield* one.next)
        first.fill(120)
        assert.strictEqual(show(yield* two.next), '"abc"')
        assert.strictEqual(text(yield* KvStore.get(key)), "abc")
      }))

    it.scoped("watch never skips the last value: a burst of 1000 sets from 10 fibers ends on the stored value", () =>
      Effect.gen(function*() {
        const prefix = fresh()
        if (!(yield* hasFeed(prefix))) return
        const key = prefix + "k"
        const watcher = yield* start(KvStore.watch(key), "watch")
        assert.strictEqual(show(yield* watcher.next), "none")
        const written = new Set<string>()
        yield* Effect.forEach(
          Array.from({ length: 10 }, (_, fiber) => fiber),
          (fiber) =>
            Effect.forEach(Array.from({ length: 100 }, (_, i) => `${fiber}-${i}`), (value) => {
              written.add(value)
              return KvStore.set(key, bytes(value))
            }, { discard: true }),
          { concurrency: "unbounded", discard: true }
        )
        const stored = text(yield* KvStore.get(key))
        let last = ""
        while (last !== stored) {
          const value = yield* watcher.next
          assert.isTrue(Option.isSome(value), "a set key was reported as none")
          last = text(Option.getOrThrow(value))
          assert.isTrue(written.has(last), `watch emitted a value never written: ${last}`)
        }
        // nothing older may follow the stored value
        for (;;) {
          const later = yield* watcher.poll(200)
          if (Option.isNone(later)) break
          assert.strictEqual(show(later.value), JSON.stringify(stored), "a value after the last write")
        }
      }))

    it.scoped("an entry that expires is reported as none within about a second", () =>
      Effect.gen(function*() {
        const prefix = fresh()
        if (!(yield* hasFeed(prefix))) return
        const key = prefix + "k"
        yield* KvStore.set(key, bytes("short"), Duration.millis(300))
        const watcher = yield* start(KvStore.watch(key), "watch")
        assert.strictEqual(show(yield* watcher.next), '"short"')
        yield* advance(Duration.millis(400))
        let reported: Option.Option<Option.Option<Uint8Array>> = Option.none()
        // about a second past the expiry, in steps, so a feed that checks at intervals gets its turn
        for (let step = 0; step < 8 && Option.isNone(reported); step++) {
          reported = yield* watcher.poll(step === 0 ? 200 : 100)
          if (Option.isNone(reported)) yield* advance(Duration.millis(250))
        }
        assert.isTrue(Option.isSome(reported), "the expiry was not reported within 2 seconds")
        assert.strictEqual(show(Option.getOrThrow(reported)), "none")
      }))

    it.scoped("watchPrefix reports the keys under the prefix changed after it started, none outside, no snapshot", () =>
      Effect.gen(function*() {
        const prefix = fresh()
        if (!(yield* hasFeed(prefix))) return
        const under = prefix + "in/"
        yield* KvStore.set(under + "old", bytes("before"))
        const watcher = yield* startPrefix(KvStore.watchPrefix(under), under + "marker", KvStore.set(under + "marker", bytes("m")))
        yield* KvStore.set(prefix + "out", bytes("x"))
        yield* KvStore.set(prefix + "in", bytes("x")) // the prefix without its slash is outside
        yield* KvStore.set(under + "a", bytes("1"))
        yield* KvStore.set(under + "b", bytes("2"))
        yield* KvStore.delete(under + "a")
        yield* KvStore.setMany([[under + "c", bytes("3")], [under + "d", bytes("4")]])
        const expected = new Map([[under + "a", "none"], [under + "b", '"2"'], [under + "c", '"3"'], [under + "d", '"4"']])
        const last = new Map<string, string>()
        const settled = () => [...expected].every(([key, value]) => last.get(key) === value)
        while (!settled()) {
          const change = yield* watcher.next
          assert.isTrue(expected.has(change.key), `watchPrefix reported ${JSON.stringify(change.key)}`)
          last.set(change.key, show(change.value))
        }
        for (;;) {
          const later = yield* watcher.poll(200)
          if (Option.isNone(later)) break
          assert.strictEqual(show(later.value.value), expected.get(later.value.key), `late change of ${later.value.key}`)
        }
      }))

    it.scoped("watchPrefix never skips a key's last value under a burst from 10 fibers", () =>
      Effect.gen(function*() {
        const prefix = fresh()
        if (!(yield* hasFeed(prefix))) return
        const watcher = yield* startPrefix(KvStore.watchPrefix(prefix), prefix + "marker", KvStore.set(prefix + "marker", bytes("m")))
        const keys = ["k0", "k1", "k2", "k3", "k4"].map((k) => prefix + k)
        yield* Effect.forEach(
          Array.from({ length: 10 }, (_, fiber) => fiber),
          (fiber) =>
            Effect.forEach(
              Array.from({ length: 100 }, (_, i) => i),
              (i) => i % 17 === 16 ? KvStore.delete(keys[(fiber + i) % 5]!) : KvStore.set(keys[(fiber + i) % 5]!, bytes(`${fiber}-${i}`)),
              { discard: true }
            ),
          { concurrency: "unbounded", discard: true }
        )
        const stored = new Map<string, string>()
        for (const key of keys) stored.set(key, show(yield* KvStore.getOption(key)))
        const last = new Map<string, string>()
        while (![...stored].every(([key, value]) => last.get(key) === value)) {
          const change = yield* watcher.next
          last.set(change.key, show(change.value))
        }
      }))

    it.scoped("a prefixed view watches its own keys: keys and prefixes mapped, its bad keys refused", () =>
      Effect.gen(function*() {
        const prefix = fresh()
        if (!(yield* hasFeed(prefix))) return
        const base = yield* KvStore.KvStore
        const view = KvStore.prefixed(base, prefix + "view/")
        yield* base.set(prefix + "view/k", bytes("v1"))
        const watcher = yield* start(view.watch("k"), "view.watch")
        assert.strictEqual(show(yield* watcher.next), '"v1"')
        yield* view.set("k", bytes("v2"))
        assert.strictEqual(show(yield* watcher.next), '"v2"')
        const changes = yield* startPrefix(view.watchPrefix("sub/"), "sub/marker", view.set("sub/marker", bytes("m")))
        yield* base.set(prefix + "view/sub/x", bytes("x"))
        yield* base.set(prefix + "elsewhere/sub/x", bytes("x"))
        const change = yield* changes.next
        assert.strictEqual(change.key, "sub/x")
        assert.strictEqual(show(change.value), '"x"')
        const bad = yield* firstOf(view.watch(""), "view.watch(\"\")")
        assertRefused(failureOf(bad, "view.watch"), "watch", "a view's empty key")
      }))

    it.scoped("forSchema watches decode values; a value that does not decode ends the stream with ParseError", () =>
      Effect.gen(function*() {
        const prefix = fresh()
        if (!(yield* hasFeed(prefix))) return
        const base = yield* KvStore.KvStore
        const flags = KvStore.forSchema(base, Flag)
        const key = prefix + "flag"
        yield* flags.set(key, new Flag({ on: true, note: "first" }))
        const watcher = yield* start(flags.watch(key), "forSchema watch")
        const first = yield* watcher.next
        assert.isTrue(Option.isSome(first) && first.value instanceof Flag && first.value.note === "first")
        const changes = yield* startPrefix(flags.watchPrefix(prefix), prefix + "marker", flags.set(prefix + "marker", new Flag({ on: false, note: "m" })))
        yield* flags.set(key, new Flag({ on: false, note: "second" }))
        const second = yield* watcher.next
        assert.isTrue(Option.isSome(second) && second.value.on === false && second.value.note === "second")
        const change = yield* changes.next
        assert.strictEqual(change.key, key)
        assert.isTrue(Option.isSome(change.value) && change.value.value.note === "second")
        // bytes that are not JSON of the schema: the typed watcher fails with ParseError
        const subscribed = yield* Deferred.make<void>()
        const badWatcher = yield* Effect.fork(Effect.exit(within(
          DELIVERY_MILLIS,
          "forSchema watch of bad bytes",
          Stream.runDrain(Stream.tap(flags.watch(prefix + "bad"), () => Deferred.succeed(subscribed, undefined)))
        )))
        yield* within(DELIVERY_MILLIS, "forSchema watch's first value", Deferred.await(subscribed))
        yield* base.set(prefix + "bad", bytes("not json"))
        const ended = yield* Fiber.join(badWatcher)
        assert.isTrue(ParseResult.isParseError(failureOf(ended, "forSchema watch")), "expected a ParseError")
      }))

    it.scoped("bad keys and prefixes are refused with InvalidArgument before subscribing", () =>
      Effect.gen(function*() {
        const prefix = fresh()
        const store = yield* KvStore.KvStore
        for (const key of ["", "a\u0000b", "\ud800", "x".repeat(2049), 42, undefined] as Array<unknown>) {
          const exit = yield* firstOf(store.watch(key as string), `watch(${String(key).slice(0, 10)})`)
          assertRefused(failureOf(exit, "watch"), "watch", `watch of ${JSON.stringify(key)?.slice(0, 20)}`)
        }
        for (const bad of ["a\u0000b", "\ud800", 42, null] as Array<unknown>) {
          const exit = yield* firstOf(store.watchPrefix(bad as string), "watchPrefix")
          assertRefused(failureOf(exit, "watchPrefix"), "watchPrefix", `watchPrefix of ${String(bad).slice(0, 20)}`)
        }
        assert.deepStrictEqual(yield* store.keys(prefix), [])
      }))

    it.scoped("many watchers of one key all see the change; interrupted watchers leave the others working", () =>
      Effect.gen(function*() {
        const prefix = fresh()
        if (!(yield* hasFeed(prefix))) return
        const key = prefix + "k"
        const watchers = yield* Effect.forEach(Array.from({ length: 50 }, (_, i) => i), () => start(KvStore.watch(key), "watch"))
        for (const watcher of watchers) assert.strictEqual(show(yield* watcher.next), "none")
        // half of them end early: a take of one item ends its stream and its subscription
        yield* Effect.forEach(Array.from({ length: 25 }, (_, i) => i), () => Stream.runHead(KvStore.watch(key)), { concurrency: 25 })
        yield* KvStore.set(key, bytes("v"))
        for (const watcher of watchers) assert.strictEqual(show(yield* watcher.next), '"v"')
      }))
  })
}
