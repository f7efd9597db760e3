import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { KvError, KvStore, NotFound } from "../KvStore.js"
import type { Options } from "../MemoryStore.js"
import { invalidKey, invalidPrefix, compareCodePoints } from "./key.js"
import { decodeInterval, decodeTtl } from "./ttl.js"
import { invalidUpdateFunction, invalidValue } from "./value.js"
import { markUpdating, refuseWriteInsideOwnUpdate } from "./updating.js"

interface Entry {
  readonly value: Uint8Array
  /** Clock millis at which the entry stops being live; `undefined`: never. */
  readonly expiresAt: number | undefined
}

interface Waiter {
  /** Set when the lock is handed to this waiter: from then on it owns the lock. */
  granted: boolean
  resume: ((effect: Effect.Effect<void>) => void) | undefined
}

/**
 * A FIFO mutex for one key. Effect's `Semaphore` wakes every waiter on each
 * release (they race and all but one go back to sleep), which is quadratic
 * under contention: 600 queued updates of one key took 10 s. Here a release
 * hands the lock straight to the next waiter. A lock is held exactly while it
 * is in the lock table.
 */
interface KeyLock {
  readonly waiters: Array<Waiter>
}

const DEFAULT_CLEANUP_INTERVAL = Duration.minutes(1)

/**
 * A sweep slice runs for about this long before yielding to the event loop. By
 * time, not by count: the first slices run cold (interpreted) code, where 4096
 * entries took 17 ms against well under 1 ms once optimised.
 */
const SWEEP_SLICE_MILLIS = 2
/** Entries between two looks at the wall clock inside a slice. */
const SWEEP_CHECK_EVERY = 256

const decodeOptions = (
  options: Options | undefined
): Either.Either<{ readonly interval: Duration.Duration; readonly maxEntries: number | undefined }, KvError> => {
  const maxEntries = options?.maxEntries
  if (maxEntries !== undefined && !(Number.isSafeInteger(maxEntries) && maxEntries > 0)) {
    return Either.left(
      new KvError({
        reason: "InvalidArgument",
        op: "layer",
        message: `Invalid MemoryStore option: maxEntries must be a positive integer, got ${String(maxEntries)}`
      })
    )
  }
  const rawInterval = options?.cleanupInterval
  if (rawInterval === undefined) return Either.right({ interval: DEFAULT_CLEANUP_INTERVAL, maxEntries })
  return Either.map(decodeInterval("MemoryStore", "cleanupInterval", rawInterval), (interval) => ({ interval, maxEntries }))
}

/** When an entry written at `now` with a TTL of `expiresIn` ms stops being live; `undefined`: never. */
const expiryAt = (now: number, expiresIn: number | undefined): number | undefined =>
  expiresIn === undefined ? undefined : now + expiresIn

const isLive = (entry: Entry, now: number): boolean => entry.expiresAt === undefined || entry.expiresAt > now

/**
 * Gives the event loop a turn. `Effect.yieldNow` alone is not enough: Effect's
 * scheduler resumes yielded fibers on microtasks for up to 2048 rounds, and
 * timers and I/O would wait for the whole sweep.
 */
const yieldToEventLoop: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/** Builds a memory-backed `KvStore` and forks its sweeper into the current scope. */
export const make = (options?: Options): Effect.Effect<KvStore.Service, KvError, Scope.Scope> =>
  Effect.flatMap(decodeOptions(options), ({ interval, maxEntries }) =>
    Effect.flatMap(Ref.make(new Map<string, Entry>()), (state) => {
      const store = makeService(state, maxEntries)
      return sweepExpired(state).pipe(
        Effect.tapErrorCause(Effect.logWarning),
        // logged above; a failed sweep must not end the schedule
        Effect.catchAllCause(() => Effect.void),
        Effect.scheduleForked(Schedule.spaced(interval)),
        Effect.as(store)
      )
    }))

export const layer = (options?: Options): Layer.Layer<KvStore, KvError> => Layer.scoped(KvStore, make(options))

/**
 * Removes expired entries in slices, yielding between them, so a huge map does
 * not stall the process. Entries are deleted in place, so writes made while a
 * sweep is suspended are kept.
 */
const sweepExpired = (state: Ref.Ref<Map<string, Entry>>): Effect.Effect<number> =>
  Effect.flatMap(Ref.get(state), (map) =>
    Effect.clockWith((clock) => {
      // a Map iterator tolerates deletes and inserts between next() calls
      const entries = map.entries()
      let removed = 0
      const sweepSlice = Effect.sync((): boolean => {
        const now = clock.unsafeCurrentTimeMillis()
        // the wall clock, not the Effect clock: this bounds real time spent, and a TestClock stands still
        const started = performance.now()
        for (let i = 1;; i++) {
          const next = entries.next()
          if (next.done === true) return true
          const [key, entry] = next.value
          if (!isLive(entry, now)) {
            map.delete(key)
            removed++
          }
          if (i % SWEEP_CHECK_EVERY === 0 && performance.now() - started >= SWEEP_SLICE_MILLIS) return false
        }
      })
      const loop: Effect.Effect<number> = Effect.flatMap(
        sweepSlice,
        (done) => done ? Effect.sync(() => removed) : Effect.zipRight(yieldToEventLoop, loop)
      )
      return loop
    }))

const makeService = (state: Ref.Ref<Map<string, Entry>>, maxEntries: number | undefined): KvStore.Service => {
  const trackUse = maxEntries !== undefined
  const locks = new Map<string, KeyLock>()

  /** Moves `key` to the most-recently-used end (Map iteration order is insertion order). */
  const touch = (map: Map<string, Entry>, key: string, entry: Entry): void => {
    map.delete(key)
    map.set(key, entry)
  }

  const write = (map: Map<string, Entry>, key: string, entry: Entry): void => {
    if (trackUse) {
      if (!map.delete(key) && map.size >= maxEntries) {
        const oldest = map.keys().next()
        if (oldest.done !== true) map.delete(oldest.value)
      }
    }
    map.set(key, entry)
  }

  /** Passes the lock of `key` to the next waiter, or drops it from the table when nobody waits. */
  const releaseLock = (key: string, lock: KeyLock): void => {
    const next = lock.waiters.shift()
    if (next === undefined) {
      locks.delete(key)
      return
    }
    next.granted = true
    next.resume?.(Effect.void)
  }

  /** Takes the lock of `key`, waiting interruptibly; an interrupted waiter never keeps or loses a lock. */
  const acquireLock = (
    key: string,
    restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  ): Effect.Effect<KeyLock> =>
    Effect.suspend(() => {
      const existing = locks.get(key)
      if (existing === undefined) {
        const lock: KeyLock = { waiters: [] }
        locks.set(key, lock)
        return Effect.succeed(lock)
      }
      const waiter: Waiter = { granted: false, resume: undefined }
      existing.waiters.push(waiter)
      const granted = Effect.async<void>((resume) => {
        if (waiter.granted) resume(Effect.void)
        else waiter.resume = resume
      })
      return restore(granted).pipe(
        // interrupted while waiting, or just after the lock was handed over
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            if (waiter.granted) {
              releaseLock(key, existing)
            } else {
              const index = existing.waiters.indexOf(waiter)
              if (index >= 0) existing.waiters.splice(index, 1)
            }
          })
        ),
        Effect.as(existing)
      )
    })

  /**
   * Runs `effect` holding the lock of `key`. Only `update` needs the lock to
   * exist; `set` and `delete` come here only when an update of the key is in
   * flight, so their fast path allocates nothing.
   */
  const withKeyLock = <A, E, R>(key: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(
        acquireLock(key, restore),
        (lock) => Effect.ensuring(restore(effect), Effect.sync(() => releaseLock(key, lock)))
      )
    )

  /** The slow path of `set` and `delete`: wait for the update of `key` in flight. */
  const afterUpdate = <A>(op: string, key: string, effect: Effect.Effect<A>): Effect.Effect<A, KvError> =>
    Effect.zipRight(refuseWriteInsideOwnUpdate(op, key), withKeyLock(key, effect))

  /** A miss: `NotFound`, unless the key could never have been stored. */
  const missing = (key: string): Effect.Effect<never, NotFound | KvError> =>
    Effect.fail(invalidKey("get", key) ?? new NotFound({ key }))

  /** A live entry read: counts as use, and hands out a copy. */
  const readCopy = (map: Map<string, Entry>, key: string, entry: Entry): Uint8Array => {
    if (trackUse) touch(map, key, entry)
    return entry.value.slice()
  }

  const liveCopy = (map: Map<string, Entry>, key: string, now: number): Effect.Effect<Uint8Array, NotFound | KvError> => {
    const entry = map.get(key)
    if (entry === undefined || !isLive(entry, now)) return missing(key)
    return Effect.succeed(readCopy(map, key, entry))
  }

  // The hot path. Only valid keys are ever stored, so a hit needs no key
  // validation, and an entry without expiry needs no clock.
  const get = (key: string): Effect.Effect<Uint8Array, NotFound | KvError> =>
    Effect.flatMap(Ref.get(state), (map) => {
      const entry = map.get(key)
      if (entry === undefined) return missing(key)
      if (entry.expiresAt === undefined) return Effect.succeed(readCopy(map, key, entry))
      return Effect.clockWith((clock) => liveCopy(map, key, clock.unsafeCurrentTimeMillis()))
    })

  const set = (key: string, value: Uint8Array, ttl?: Duration.DurationInput): Effect.Effect<void, KvError> => {
    const invalid = invalidKey("set", key) ?? invalidValue("set", key, value)
    if (invalid !== undefined) return Effect.fail(invalid)
    if (ttl === undefined) {
      return Effect.flatMap(Ref.get(state), (map) => {
        if (locks.has(key)) return afterUpdate("set", key, Effect.sync(() => writeCopy(map, key, value, undefined)))
        // no update of the key in flight: write at once, in the same synchronous step as the check
        writeCopy(map, key, value, undefined)
        return Effect.void
      })
    }
    const ttlMillis = decodeTtl("set", key, ttl)
    if (Either.isLeft(ttlMillis)) return Effect.fail(ttlMillis.left)
    const expiresIn = ttlMillis.right
    const writeNow = Effect.clockWith((clock) =>
      Effect.map(Ref.get(state), (map) => {
        writeCopy(map, key, value, expiryAt(clock.unsafeCurrentTimeMillis(), expiresIn))
      })
    )
    return Effect.suspend(() => locks.has(key) ? afterUpdate("set", key, writeNow) : writeNow)
  }

  /**
   * Stores a copy of `value`, taken when the effect runs rather than when it is
   * built: running one `set` effect twice writes the array as it is each time.
   */
  const writeCopy = (map: Map<string, Entry>, key: string, value: Uint8Array, expiresAt: number | undefined): Uint8Array => {
    const stored = new Uint8Array(value)
    write(map, key, { value: stored, expiresAt })
    return stored
  }

  const delete_ = (key: string): Effect.Effect<boolean, KvError> => {
    const invalid = invalidKey("delete", key)
    if (invalid !== undefined) return Effect.fail(invalid)
    const remove = (map: Map<string, Entry>, now: number): boolean => {
      const entry = map.get(key)
      if (entry === undefined) return false
      map.delete(key)
      return isLive(entry, now)
    }
    return Effect.clockWith((clock) =>
      Effect.flatMap(Ref.get(state), (map) =>
        locks.has(key)
          ? afterUpdate("delete", key, Effect.sync(() => remove(map, clock.unsafeCurrentTimeMillis())))
          : Effect.succeed(remove(map, clock.unsafeCurrentTimeMillis())))
    )
  }

  const update = <E = never, R = never>(
    key: string,
    f: (current: Option.Option<Uint8Array>) => Effect.Effect<Uint8Array, E, R>,
    ttl?: Duration.DurationInput
  ): Effect.Effect<Uint8Array, E | KvError, R> => {
    const invalid = invalidKey("update", key) ?? invalidUpdateFunction(key, f)
    if (invalid !== undefined) return Effect.fail(invalid)
    const ttlMillis = decodeTtl("update", key, ttl)
    if (Either.isLeft(ttlMillis)) return Effect.fail(ttlMillis.left)
    const expiresIn = ttlMillis.right
    const readModifyWrite = Effect.clockWith((clock) =>
      Effect.flatMap(Ref.get(state), (map) => {
        const entry = map.get(key)
        let current: Option.Option<Uint8Array> = Option.none()
        if (entry !== undefined && isLive(entry, clock.unsafeCurrentTimeMillis())) {
          current = Option.some(readCopy(map, key, entry))
        }
        return Effect.flatMap(
          markUpdating(key)(Effect.suspend(() => f(current))),
          (next): Effect.Effect<Uint8Array, KvError> => {
            const invalidNext = invalidValue("update", key, next)
            if (invalidNext !== undefined) return Effect.fail(invalidNext)
            return Effect.flatMap(Ref.get(state), (map) =>
              Effect.sync(() => writeCopy(map, key, next, expiryAt(clock.unsafeCurrentTimeMillis(), expiresIn)).slice()))
          }
        )
      })
    )
    const locked = withKeyLock(key, readModifyWrite)
    // inside its own update function the key is always locked, so an unlocked key needs no check
    return Effect.suspend(() =>
      locks.has(key) ? Effect.zipRight(refuseWriteInsideOwnUpdate("update", key), locked) : locked
    )
  }

  const keys = (prefix: string): Effect.Effect<ReadonlyArray<string>, KvError> => {
    const invalid = invalidPrefix("keys", prefix)
    if (invalid !== undefined) return Effect.fail(invalid)
    return Effect.clockWith((clock) =>
      Effect.map(Ref.get(state), (map) => {
        const now = clock.unsafeCurrentTimeMillis()
        const found: Array<string> = []
        for (const [key, entry] of map) {
          if (key.startsWith(prefix) && isLive(entry, now)) found.push(key)
        }
        return found.sort(compareCodePoints)
      })
    ).pipe(Effect.withSpan("kv.keys", { attributes: { "kv.prefix": prefix }, captureStackTrace: false }))
  }

  return {
    get,
    set,
    delete: delete_,
    update,
    keys,
    cleanup: sweepExpired(state).pipe(Effect.withSpan("kv.cleanup", { captureStackTrace: false }))
  }
}
