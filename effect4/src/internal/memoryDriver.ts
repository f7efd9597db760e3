/**
 * The in-memory driver: entries in one `Map` (insertion order doubles as the
 * least-recently-used order), expiry on the Effect `Clock` (so `TestClock`
 * drives it), and a sweep of expired entries that pops them from an expiry
 * index (a min-heap, `core/expiryIndex.ts`) in slices: it costs O(expired), not
 * O(entries).
 *
 * Every write checks the key's lock and writes in the same synchronous step,
 * so no write can land between an update's read and its write; a write of a
 * locked key waits for the lock (see `KvStore.Driver`). A batch checks all its
 * keys in one step; when one is locked it takes all their locks in code point
 * order (the order every batch uses, so batches never deadlock) and writes
 * once it holds them all.
 *
 * Listings (`keys`, `count`, stream pages) read an ordered index of the keys,
 * built the first time one is asked for (in slices that yield to the event
 * loop) and kept up to date by every write from the moment the build starts:
 * a store that never lists keys pays nothing for it.
 *
 * Change feed (`changes`): every write, removal, eviction and sweep tells the
 * subscribers' listeners in the same synchronous step; with none subscribed a
 * write pays one size check. While someone is subscribed, a fiber sweeps the
 * expired entries at the next expiry in the index (at least once a second,
 * on the Effect `Clock`), so an expiry is reported within about a second.
 */
import type * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import type { DriverChange } from "../KvDriver.js"
import type { Driver, Entry as LiveEntry, Write } from "../KvStore.js"
import { DriverError } from "../KvStore.js"
import { addToCounter, encodeCounter, NOT_A_COUNTER, parseCounter } from "../core/counter.js"
import { makeExpiryIndex } from "../core/expiryIndex.js"
import { yieldToEventLoop } from "./eventLoop.js"
import { markFinal } from "./finalPage.js"
import { driversLockingModify, makeKeyedLock } from "./keyedLock.js"
import { makeLazyOrderedIndex } from "./orderedIndex.js"
import type { OrderedIndex } from "./orderedIndex.js"

interface Entry {
  readonly value: Uint8Array
  /** Clock millis at which the entry stops being live; `undefined`: never. */
  readonly expiresAt: number | undefined
}

/**
 * A sweep slice runs for about this long before yielding to the event loop. By
 * time, not by count: the first slices run cold (interpreted) code, where 4096
 * entries took 17 ms against well under 1 ms once optimised.
 */
const SWEEP_SLICE_MILLIS = 2
/** Entries between two looks at the wall clock inside a slice. */
const SWEEP_CHECK_EVERY = 256

/** The longest a subscribed store waits between two looks for expired entries. */
const EXPIRY_CHECK_MILLIS = 1000

const isLive = (entry: Entry, now: number): boolean => entry.expiresAt === undefined || entry.expiresAt > now

const expiryAt = (now: number, ttl: number | undefined): number | undefined => (ttl === undefined ? undefined : now + ttl)

export const makeMemoryDriver = (maxEntries: number | undefined): Driver & {
  /** Ends every subscription (the store's scope closes): watchers are told, as on PostgreSQL. */
  readonly close: Effect.Effect<void>
} => {
  const map = new Map<string, Entry>()
  const lock = makeKeyedLock()
  const trackUse = maxEntries !== undefined
  /** The keys in code point order, from the first listing on (built in slices, see `makeLazyOrderedIndex`). */
  const index = makeLazyOrderedIndex(() => map.keys())

  /** The change feed's subscribers, told of every key written or removed. */
  const listeners = new Set<(key: string) => void>()
  const changed = (key: string): void => {
    if (listeners.size === 0) return
    for (const listener of listeners) listener(key)
  }

  /** The keys of the entries with an expiry, earliest first; a node is current while the key's entry still expires then. */
  const expiry = makeExpiryIndex((key, expiresAt) => map.get(key)?.expiresAt === expiresAt)

  /**
   * Whether no entry has expired at `now`, so listings need not look entries
   * up for their expiry: at a million keys those lookups, cache misses mostly,
   * cost ten times the index scan.
   */
  const noneExpired = (now: number): boolean => {
    const earliest = expiry.earliest()
    return earliest === undefined || earliest > now
  }

  /** A listing: `f` on the complete index, in one synchronous step. */
  const listing = <A>(f: (ordered: OrderedIndex, now: number) => A): Effect.Effect<A> =>
    Effect.flatMap(index.ready, (ordered) => read((now) => f(ordered, now)))

  /** Moves `key` to the most-recently-used end (Map iteration order is insertion order). */
  const touch = (key: string, entry: Entry): void => {
    if (!trackUse) return
    map.delete(key)
    map.set(key, entry)
  }

  /** Removes `key`, whose entry is `entry`. */
  const remove = (key: string, entry: Entry): void => {
    map.delete(key)
    if (entry.expiresAt !== undefined) expiry.invalidate()
    index.maintained?.remove(key)
    changed(key)
  }

  const put = (key: string, entry: Entry): void => {
    const before = map.get(key)
    if (before?.expiresAt !== entry.expiresAt) {
      if (before?.expiresAt !== undefined) expiry.invalidate()
      if (entry.expiresAt !== undefined) expiry.add(key, entry.expiresAt)
    }
    if (trackUse) {
      if (before !== undefined) {
        map.delete(key)
      } else {
        if (map.size >= maxEntries) {
          const oldest = map.entries().next()
          if (oldest.done !== true) remove(oldest.value[0], oldest.value[1])
        }
        index.maintained?.add(key)
      }
    } else if (before === undefined) {
      index.maintained?.add(key)
    }
    map.set(key, entry)
    changed(key)
  }

  /** The live entry of `key` at `now`, counted as use. */
  const live = (key: string, now: number): Entry | undefined => {
    const entry = map.get(key)
    if (entry === undefined || !isLive(entry, now)) return undefined
    touch(key, entry)
    return entry
  }

  /**
   * A write: the lock check and `step` in one synchronous step; when an update
   * of the key is in flight, `step` runs once it is done. (`clockWith` calls
   * its function when the effect runs: no `Effect.suspend` needed.)
   */
  const writeStep = <A>(key: string, step: (now: number) => A): Effect.Effect<A, DriverError> =>
    Effect.clockWith((clock) =>
      lock.isLocked(key)
        ? lock.withLock(key, Effect.sync(() => step(clock.currentTimeMillisUnsafe())))
        : Effect.succeed(step(clock.currentTimeMillisUnsafe()))
    )

  /**
   * A write of several keys (distinct, sorted by code point): the lock checks
   * and `step` in one synchronous step; when one of them is locked, `step`
   * runs holding all their locks, taken in order.
   */
  const batchStep = <A>(sortedKeys: ReadonlyArray<string>, step: (now: number) => A): Effect.Effect<A, DriverError> =>
    Effect.clockWith((clock) =>
      sortedKeys.some(lock.isLocked)
        ? sortedKeys.reduceRight(
          (inner: Effect.Effect<A, DriverError>, key) => lock.withLock(key, inner),
          Effect.sync(() => step(clock.currentTimeMillisUnsafe()))
        )
        : Effect.succeed(step(clock.currentTimeMillisUnsafe()))
    )

  /** Removes `key`; whether its entry was live. */
  const deleteLive = (key: string, now: number): boolean => {
    const entry = map.get(key)
    if (entry === undefined) return false
    remove(key, entry)
    return isLive(entry, now)
  }

  /** Up to `limit` live keys under `prefix` after `after`, ascending. */
  const liveKeysPage = (
    ordered: OrderedIndex,
    prefix: string,
    after: string | undefined,
    limit: number,
    now: number
  ): Array<string> => {
    const page: Array<string> = []
    const check = !noneExpired(now)
    ordered.scan(prefix, after, (key) => {
      if (!check || isLive(map.get(key)!, now)) page.push(key)
      return page.length < limit
    })
    return page
  }

  const read = <A>(f: (now: number) => A): Effect.Effect<A> =>
    Effect.clockWith((clock) => Effect.sync(() => f(clock.currentTimeMillisUnsafe())))

  // The hot path: an entry without expiry needs no clock.
  const get = (key: string): Effect.Effect<Option.Option<Uint8Array>> =>
    Effect.suspend(() => {
      const entry = map.get(key)
      if (entry === undefined) return Effect.succeed(Option.none())
      if (entry.expiresAt === undefined) {
        touch(key, entry)
        return Effect.succeed(Option.some(entry.value))
      }
      return read((now) => Option.map(Option.fromNullishOr(live(key, now)), (e) => e.value))
    })

  const apply = (key: string, write: Write, before: Entry | undefined, now: number): void => {
    if (write._tag === "Keep") return
    const expiresAt = write.ttl === "unchanged" ? before?.expiresAt : expiryAt(now, write.ttl)
    put(key, { value: write.value, expiresAt })
  }

  /**
   * Takes the key's lock itself (the front does not: see `driversLockingModify`):
   * the read, `f` and, when `f` decides at once (its effect an `Exit`, as the
   * front's is for an update function that returns `Effect.succeed`), the
   * write run in one synchronous step that needs no lock. Otherwise the lock,
   * taken in that same step, is held until `f`'s effect is done and written.
   */
  const modify = <A, E, R>(
    key: string,
    f: (current: Option.Option<LiveEntry>) => Effect.Effect<readonly [A, Write], E, R>
  ): Effect.Effect<A, E | DriverError, R> =>
    lock.withLockedStep(key, (fiber): Effect.Effect<A, E, R> => {
      // the fiber's Clock read directly: Effect.clockWith would be one more effect per call
      const clock = fiber.getRef(Clock.Clock)
      const now = clock.currentTimeMillisUnsafe()
      const before = live(key, now)
      const current: Option.Option<LiveEntry> = before === undefined
        ? Option.none()
        : Option.some({ value: before.value, expiresIn: before.expiresAt === undefined ? undefined : before.expiresAt - now })
      const decided = f(current)
      if (Exit.isExit(decided)) {
        const done = decided as Exit.Exit<readonly [A, Write], E>
        if (Exit.isFailure(done)) return Exit.failCause(done.cause)
        apply(key, done.value[1], before, now)
        return Exit.succeed(done.value[0])
      }
      return Effect.map(decided, ([result, write]) => {
        apply(key, write, before, clock.currentTimeMillisUnsafe())
        return result
      })
    })

  /**
   * Removes expired entries in slices, yielding between them, so a huge map
   * does not stall the process: each slice pops the due keys from the expiry
   * index, so a sweep visits only expired entries, then moves on a compaction
   * of the index under way (see `core/expiryIndex.ts`) in the same slices. Entries are deleted in
   * place, so writes made while a sweep is suspended are kept (a key rewritten
   * meanwhile has a new expiry, and its old node is stale).
   */
  const sweepExpired: Effect.Effect<number> = Effect.clockWith((clock) =>
    Effect.suspend(() => {
      let removed = 0
      const sweepSlice = Effect.sync((): boolean => {
        const now = clock.currentTimeMillisUnsafe()
        // the wall clock, not the Effect clock: this bounds real time spent, and a TestClock stands still
        const started = performance.now()
        for (let i = 1;; i++) {
          const key = expiry.popDue(now)
          if (key === undefined) break
          // popped: the index no longer counts its node, so no `remove` (which would invalidate it again)
          map.delete(key)
          index.maintained?.remove(key)
          changed(key)
          removed++
          if (i % SWEEP_CHECK_EVERY === 0 && performance.now() - started >= SWEEP_SLICE_MILLIS) return false
        }
        // then the rest of a compaction of the index under way (writes move only a few nodes each)
        while (!expiry.compactSome(SWEEP_CHECK_EVERY)) {
          if (performance.now() - started >= SWEEP_SLICE_MILLIS) return false
        }
        return true
      })
      const loop: Effect.Effect<number> = Effect.flatMap(
        sweepSlice,
        (done) => (done ? Effect.sync(() => removed) : Effect.andThen(yieldToEventLoop, loop))
      )
      return loop
    })
  )

  /**
   * Sweeps now, then at the next expiry in the index, looking at least once
   * a second (an entry written meanwhile may expire earlier): each sweep
   * reports the entries it removes. Runs until interrupted.
   */
  const reportExpiries: Effect.Effect<never> = Effect.clockWith((clock) => {
    const nextWait = Effect.sync(() => {
      const earliest = expiry.earliest()
      const now = clock.currentTimeMillisUnsafe()
      return Duration.millis(earliest === undefined ? EXPIRY_CHECK_MILLIS : Math.min(EXPIRY_CHECK_MILLIS, Math.max(1, earliest - now)))
    })
    return Effect.forever(Effect.andThen(sweepExpired, Effect.flatMap(nextWait, Effect.sleep)))
  })

  const queues = new Set<Queue.Queue<DriverChange, Cause.Done>>()
  let closed = false

  const close = Effect.suspend(() => {
    closed = true
    return Effect.forEach(Array.from(queues), (queue) => Queue.end(queue), { discard: true })
  })

  const changes: Driver["changes"] = Effect.gen(function*() {
    if (closed) return yield* Effect.fail(new DriverError({ reason: "Backend", message: "the store was closed: its change feed is gone" }))
    const queue = yield* Queue.unbounded<DriverChange, Cause.Done>()
    const listener = (key: string): void => {
      Queue.offerUnsafe(queue, { _tag: "Changed", key })
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        listeners.add(listener)
        queues.add(queue)
      }),
      () =>
        Effect.andThen(
          Effect.sync(() => {
            listeners.delete(listener)
            queues.delete(queue)
          }),
          Queue.shutdown(queue)
        )
    )
    // forked from the acquire's uninterruptible region: made interruptible so the scope can end it
    yield* Effect.forkScoped(Effect.interruptible(reportExpiries))
    return Stream.fromQueue(queue)
  })

  const driver: Driver & { readonly close: Effect.Effect<void> } = {
    name: "MemoryStore",
    changes,
    close,
    lock,
    get,
    set: (key, value, ttl) => writeStep(key, (now) => put(key, { value, expiresAt: expiryAt(now, ttl) })),
    delete: (key) => writeStep(key, (now) => deleteLive(key, now)),
    modify,
    keys: (prefix) =>
      listing((ordered, now) => {
        const found: Array<string> = []
        const check = !noneExpired(now)
        ordered.scan(prefix, undefined, (key) => {
          if (!check || isLive(map.get(key)!, now)) found.push(key)
          return true
        })
        return found
      }),
    keysPage: (prefix, after, limit) => listing((ordered, now) => liveKeysPage(ordered, prefix, after, limit, now)),
    entriesPage: (prefix, after, limit, maxBytes = Infinity) =>
      listing((ordered, now) => {
        const page: Array<readonly [string, Uint8Array]> = []
        let bytes = 0
        let more = false
        ordered.scan(prefix, after, (key) => {
          const entry = map.get(key)!
          if (!isLive(entry, now)) return true
          bytes += entry.value.length
          // the first entry comes however large; a later one that passes the bound waits for the next page
          if (page.length === limit || (page.length > 0 && bytes > maxBytes)) {
            more = true
            return false
          }
          page.push([key, entry.value])
          return true
        })
        return more ? page : markFinal(page)
      }),
    count: (prefix) =>
      prefix === ""
        ? read((now) => {
          if (noneExpired(now)) return map.size
          let n = 0
          for (const entry of map.values()) if (isLive(entry, now)) n++
          return n
        })
        : listing((ordered, now) => {
          let n = 0
          const check = !noneExpired(now)
          ordered.scan(prefix, undefined, (key) => {
            if (!check || isLive(map.get(key)!, now)) n++
            return true
          })
          return n
        }),
    getMany: (keys) =>
      read((now) =>
        keys.map((key) => {
          const entry = live(key, now)
          return entry === undefined ? Option.none() : Option.some(entry.value)
        })
      ),
    setMany: (entries, ttl) =>
      batchStep(entries.map(([key]) => key), (now) => {
        const expiresAt = expiryAt(now, ttl)
        for (const [key, value] of entries) put(key, { value, expiresAt })
      }),
    deleteMany: (keys) =>
      batchStep(keys, (now) => {
        let n = 0
        for (const key of keys) if (deleteLive(key, now)) n++
        return n
      }),
    cleanup: sweepExpired,
    has: (key) => read((now) => map.has(key) && isLive(map.get(key)!, now)),
    timeToLive: (key) =>
      read((now) => {
        const entry = map.get(key)
        if (entry === undefined || !isLive(entry, now)) return Option.none()
        return Option.some(entry.expiresAt === undefined ? undefined : entry.expiresAt - now)
      }),
    setIfAbsent: (key, value, ttl) =>
      writeStep(key, (now) => {
        if (live(key, now) !== undefined) return false
        put(key, { value, expiresAt: expiryAt(now, ttl) })
        return true
      }),
    increment: (key, by, ttl) =>
      Effect.flatten(writeStep(key, (now): Effect.Effect<number, DriverError> => {
        const before = live(key, now)
        const stored = before === undefined ? 0 : parseCounter(before.value)
        if (stored === undefined) return Effect.fail(new DriverError({ reason: "InvalidArgument", message: NOT_A_COUNTER }))
        const next = addToCounter(stored, by)
        if (typeof next === "string") return Effect.fail(new DriverError({ reason: "InvalidArgument", message: next }))
        put(key, { value: encodeCounter(next), expiresAt: before === undefined ? expiryAt(now, ttl) : before.expiresAt })
        return Effect.succeed(next)
      })),
    expire: (key, ttl) =>
      writeStep(key, (now) => {
        const before = live(key, now)
        if (before === undefined) return false
        put(key, { value: before.value, expiresAt: expiryAt(now, ttl) })
        return true
      })
  }
  driversLockingModify.add(driver)
  return driver
}
