/**
 * Change feeds (`watch`, `watchPrefix`) over a driver's `changes`: the store
 * keeps one driver subscription, opened by its first listener and closed when
 * its last one leaves, and fans every change out to its listeners in one
 * synchronous step. A listener of one key is found by the key (a change costs
 * nothing for the watchers of other keys); prefix watchers and the near
 * cache's feed see every change.
 *
 * A watcher does not queue the changes it is told of: it marks them (one
 * flag for `watch`, a set of dirty keys for `watchPrefix`) and reads the
 * current values when it next pulls. Its memory is bounded by the distinct
 * keys changed meanwhile, not by the writes, so a slow consumer never grows
 * with a burst; and as every read happens after the change it follows, the
 * last value of a burst is never skipped.
 */
import * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import type { Driver, DriverChange, DriverError } from "../KvDriver.js"
import type { Change } from "../KvStore.js"
import { KvError } from "../KvStore.js"
import type { Errors } from "./errors.js"
import { copyBytes } from "../core/value.js"

/**
 * The store's shared change subscription as `NearCache` uses it: joined for
 * the scope's lifetime (opened by the store's first listener), live when the
 * effect succeeds. The stream fails with `KvError` (`Backend`) if the
 * driver's feed fails; the effect fails with `KvError` (`InvalidArgument`)
 * on a store without a feed. Keys are the service's own (a prefixed view
 * reports only its keys, without its prefix).
 */
export type ChangeFeed = Effect.Effect<Stream.Stream<DriverChange, KvError>, KvError, Scope.Scope>

/** Keys a `watchPrefix` reader reads at once (one `getMany`). */
const READ_BATCH = 1000

/**
 * A stream of `pull`'s batches, pulled again on an empty one (an Effect 4
 * stream's pull must give a non-empty array), until `pull` fails.
 */
const repeatBatches = <A>(pull: Effect.Effect<ReadonlyArray<A>, KvError>): Stream.Stream<A, KvError> => {
  const nonEmpty: Effect.Effect<Arr.NonEmptyReadonlyArray<A>, KvError> = Effect.flatMap(
    pull,
    (batch) => Arr.isReadonlyArrayNonEmpty(batch) ? Effect.succeed(batch) : nonEmpty
  )
  return Stream.fromPull(Effect.succeed(nonEmpty))
}

/** One party told of the store's changes, synchronously, in the order the driver reports them. */
interface Listener {
  /** Only this key's `Changed` (and every `Lost`/`Resumed`); `undefined`: every change. */
  readonly key: string | undefined
  readonly change: (change: DriverChange) => void
  /** The driver's feed failed or ended: this listener hears nothing more. */
  readonly fail: (cause: Cause.Cause<unknown>) => void
}

/** The open driver subscription and who listens to it. */
interface Feed {
  readonly scope: Scope.Closeable
  readonly byKey: Map<string, Set<Listener>>
  readonly all: Set<Listener>
  listeners: number
  /** Set when the driver's feed failed or ended: a listener joining it late is failed at once. */
  ended: Cause.Cause<unknown> | undefined
}

export const makeChangeFeeds = (driver: Driver, errors: Errors) => {
  const { checkKey, checkPrefix, fromDriver, fromDriverCause, invalid } = errors
  /** Opening and closing the driver subscription, one at a time. */
  const mutex = Semaphore.makeUnsafe(1)
  let feed: Feed | undefined

  const noFeed = (op: string, key: string | undefined): KvError =>
    invalid(op, key, `Cannot ${op}: this ${driver.name} store has no change feed (its driver offers no \`changes\`)`)

  const dispatch = (to: Feed, change: DriverChange): void => {
    if (change._tag === "Changed") {
      const keyed = to.byKey.get(change.key)
      if (keyed !== undefined) for (const listener of keyed) listener.change(change)
      for (const listener of to.all) listener.change(change)
      return
    }
    for (const keyed of to.byKey.values()) for (const listener of keyed) listener.change(change)
    for (const listener of to.all) listener.change(change)
  }

  /** Tells every listener of `ended` that it failed, and forgets it (the next listener opens anew). */
  const endFeed = (ended: Feed, cause: Cause.Cause<unknown>): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (feed === ended) feed = undefined
      ended.ended = cause
      for (const keyed of ended.byKey.values()) for (const listener of keyed) listener.fail(cause)
      for (const listener of ended.all) listener.fail(cause)
      ended.byKey.clear()
      ended.all.clear()
      // from another fiber: this one runs in the scope it closes
      return Effect.asVoid(Effect.forkDetach(Scope.close(ended.scope, Exit.void)))
    })

  /**
   * Opens the driver subscription and forks its reader into the feed's scope.
   * Only the wait for the driver is interruptible; an interrupted or failed
   * open closes what it began.
   */
  const open = (changes: NonNullable<Driver["changes"]>): Effect.Effect<Feed, Cause.Cause<DriverError>> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(Scope.make(), (scope) =>
        restore(Scope.provide(changes, scope)).pipe(
          Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : Scope.close(scope, exit)),
          Effect.sandbox,
          Effect.flatMap((stream) => {
            const opened: Feed = { scope, byKey: new Map(), all: new Set(), listeners: 0, ended: undefined }
            return Stream.runForEach(stream, (change) => Effect.sync(() => dispatch(opened, change))).pipe(
              Effect.onExit((exit) =>
                Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? Effect.void : endFeed(
                  opened,
                  Exit.isFailure(exit) ? exit.cause : Cause.die(new Error("the change feed ended"))
                )
              ),
              // the reader must stay interruptible: it is forked from inside an uninterruptible region
              Effect.interruptible,
              Effect.forkIn(scope),
              Effect.as(opened)
            )
          })
        )))

  /** This process's part of a sync token (another instance's tokens reach the feed too). */
  const tokenBase = `${Date.now().toString(36)}.${Math.random().toString(36).slice(2)}.`
  let tokens = 0

  /**
   * Adds `listener` for the scope's lifetime (see `join`), live once the feed
   * has reported every change acknowledged before: on a driver with
   * `syncChanges` the listener hears nothing until its own `Synced` token (or
   * a `Resumed`, after which it cannot know less anyway), so a notification of
   * a write made before it started never reaches it as a later change.
   */
  const listen = (
    op: string,
    key: string | undefined,
    changes: NonNullable<Driver["changes"]>,
    listener: Listener
  ): Effect.Effect<void, KvError, Scope.Scope> => {
    const sync = driver.syncChanges
    if (sync === undefined) return join(op, key, changes, listener)
    return Effect.gen(function*() {
      const token = `${tokenBase}${++tokens}`
      const synced = yield* Deferred.make<void>()
      let live = false
      const goLive = () => {
        live = true
        Deferred.doneUnsafe(synced, Exit.void)
      }
      yield* join(op, key, changes, {
        key: listener.key,
        change: (change) => {
          if (live) listener.change(change)
          else if (change._tag === "Synced" ? change.token === token : change._tag === "Resumed") goLive()
        },
        fail: (cause) => {
          goLive()
          listener.fail(cause)
        }
      })
      yield* Effect.catchCause(sync(token), fromDriverCause(op, key))
      yield* Deferred.await(synced)
    })
  }

  /**
   * Adds `listener` for the scope's lifetime, opening the driver
   * subscription for the first one; the last one to leave closes it. The
   * waits (for another opener, for the driver) are interruptible; the
   * listener is registered and its removal scheduled in one uninterruptible
   * step, so an interrupted join leaves nothing behind.
   */
  const join = (
    op: string,
    key: string | undefined,
    changes: NonNullable<Driver["changes"]>,
    listener: Listener
  ): Effect.Effect<void, KvError, Scope.Scope> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.andThen(
        restore(mutex.take(1)),
        Effect.suspend(() => feed !== undefined ? Effect.succeed(feed) : restore(open(changes))).pipe(
          Effect.mapError((cause) => fromDriver(op, key, cause)),
          Effect.map((to) => {
            feed = to
            register(to, listener)
            return to
          }),
          Effect.ensuring(mutex.release(1)),
          Effect.flatMap((to) => Effect.addFinalizer(() => leave(to, listener)))
        )
      )
    )

  const register = (to: Feed, listener: Listener): void => {
    to.listeners++
    if (to.ended !== undefined) {
      listener.fail(to.ended)
      return
    }
    if (listener.key === undefined) {
      to.all.add(listener)
    } else {
      const keyed = to.byKey.get(listener.key)
      if (keyed === undefined) to.byKey.set(listener.key, new Set([listener]))
      else keyed.add(listener)
    }
  }

  const leave = (to: Feed, listener: Listener): Effect.Effect<void> =>
    mutex.withPermits(1)(Effect.suspend(() => {
      if (listener.key === undefined) {
        to.all.delete(listener)
      } else {
        const keyed = to.byKey.get(listener.key)
        keyed?.delete(listener)
        if (keyed?.size === 0) to.byKey.delete(listener.key)
      }
      to.listeners--
      if (to.listeners > 0 || feed !== to) return Effect.void
      feed = undefined
      return Scope.close(to.scope, Exit.void)
    }))

  /** The driver's `get`, its bytes kept (the front copies them before a caller sees them). */
  const read = (op: string, key: string) => Effect.catchCause(driver.get(key), fromDriverCause(op, key))

  const readMany = (op: string, prefix: string, keys: ReadonlyArray<string>) =>
    Effect.catchCause(
      driver.getMany !== undefined ? driver.getMany(keys) : Effect.forEach(keys, driver.get),
      fromDriverCause(op, prefix)
    )

  const sameValue = (a: Option.Option<Uint8Array>, b: Option.Option<Uint8Array>): boolean => {
    if (Option.isNone(a) || Option.isNone(b)) return Option.isNone(a) && Option.isNone(b)
    const x = a.value
    const y = b.value
    if (x.length !== y.length) return false
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false
    return true
  }

  const copyOption = (value: Option.Option<Uint8Array>): Option.Option<Uint8Array> =>
    Option.isSome(value) ? Option.some(copyBytes(value.value)) : value

  /**
   * Subscribes, then reads and emits the current value; after each pull's
   * wake-up re-reads: emitted after a `Changed`, after a `Resumed` only when
   * it differs from the last emitted.
   */
  const watch = (key: string): Stream.Stream<Option.Option<Uint8Array>, KvError> =>
    Stream.unwrap(Effect.suspend(() => {
      const bad = checkKey("watch", key)
      if (bad !== undefined) return Effect.fail(bad)
      const changes = driver.changes
      if (changes === undefined) return Effect.fail(noFeed("watch", key))
      let changed = false
      let resumed = false
      let failure: KvError | undefined
      return Effect.gen(function*() {
        const wake = yield* Queue.sliding<void>(1)
        yield* listen("watch", key, changes, {
          key,
          change: (change) => {
            if (change._tag === "Changed") changed = true
            else if (change._tag === "Resumed") resumed = true
            else return
            Queue.offerUnsafe(wake, undefined)
          },
          fail: (cause) => {
            failure = fromDriver("watch", key, cause)
            Queue.offerUnsafe(wake, undefined)
          }
        })
        let last = yield* read("watch", key)
        const next = Effect.flatMap(Queue.take(wake), (): Effect.Effect<ReadonlyArray<Option.Option<Uint8Array>>, KvError> => {
          if (failure !== undefined) return Effect.fail(failure)
          if (!changed && !resumed) return Effect.succeed([])
          const emitAnyway = changed
          changed = false
          resumed = false
          return Effect.map(read("watch", key), (value) => {
            if (!emitAnyway && sameValue(value, last)) return []
            last = value
            return [copyOption(value)]
          })
        })
        return Stream.concat(Stream.succeed(copyOption(last)), repeatBatches(next))
      })
    }))

  /**
   * Subscribes, then emits a `Change` for each key under `prefix` marked
   * dirty since the last pull, read after its mark, at most `READ_BATCH` keys
   * per read. After a `Resumed` it cannot know which keys changed: it fails.
   */
  const watchPrefix = (prefix: string): Stream.Stream<Change, KvError> =>
    Stream.unwrap(Effect.suspend(() => {
      const bad = checkPrefix("watchPrefix", prefix)
      if (bad !== undefined) return Effect.fail(bad)
      const changes = driver.changes
      if (changes === undefined) return Effect.fail(noFeed("watchPrefix", prefix))
      const dirty = new Set<string>()
      let failure: KvError | undefined
      return Effect.gen(function*() {
        const wake = yield* Queue.sliding<void>(1)
        yield* listen("watchPrefix", prefix, changes, {
          key: undefined,
          change: (change) => {
            if (change._tag === "Changed") {
              if (!change.key.startsWith(prefix)) return
              dirty.add(change.key)
            } else if (change._tag === "Resumed") {
              failure ??= KvError.backend(
                "watchPrefix",
                `${driver.name} change feed was interrupted; changes under the prefix may have been missed: resync`,
                undefined
              )
            } else {
              return
            }
            Queue.offerUnsafe(wake, undefined)
          },
          fail: (cause) => {
            failure ??= fromDriver("watchPrefix", prefix, cause)
            Queue.offerUnsafe(wake, undefined)
          }
        })
        const next = Effect.flatMap(Queue.take(wake), (): Effect.Effect<ReadonlyArray<Change>, KvError> => {
          if (failure !== undefined) return Effect.fail(failure)
          if (dirty.size === 0) return Effect.succeed([])
          const keys: Array<string> = []
          for (const key of dirty) {
            keys.push(key)
            if (keys.length === READ_BATCH) break
          }
          for (const key of keys) dirty.delete(key)
          if (dirty.size > 0) Queue.offerUnsafe(wake, undefined)
          return Effect.map(readMany("watchPrefix", prefix, keys), (values) =>
            keys.map((key, i): Change => ({ key, value: copyOption(values[i]!) })))
        })
        return repeatBatches(next)
      })
    }))

  /** The shared subscription for `NearCache` (see `ChangeFeed`). */
  const feedOf: ChangeFeed = Effect.suspend(() => {
    const changes = driver.changes
    if (changes === undefined) return Effect.fail(noFeed("watch", undefined))
    return Effect.gen(function*() {
      const queue = yield* Queue.unbounded<DriverChange | KvError>()
      yield* listen("watch", undefined, changes, {
        key: undefined,
        change: (change) => Queue.offerUnsafe(queue, change),
        fail: (cause) => Queue.offerUnsafe(queue, fromDriver("watch", undefined, cause))
      })
      return Stream.mapEffect(
        Stream.fromQueue(queue),
        (item) => item instanceof KvError ? Effect.fail(item) : Effect.succeed(item)
      )
    })
  })

  return { watch, watchPrefix, changes: feedOf }
}
