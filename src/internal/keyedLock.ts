/**
 * A FIFO lock per key, for the writes of one process: `withLock(key, effect)`
 * runs `effect` while no other holder of the same key runs. Keys that nobody
 * holds cost nothing: a lock exists exactly while it is held or waited for.
 *
 * Why not Effect's `Semaphore`: it wakes every waiter on each release (they race
 * and all but one go back to sleep), which is quadratic under contention — 600
 * queued updates of one key took 10 s. Here a release hands the lock straight
 * to the next waiter.
 *
 * Each hold is also recorded in a `FiberRef`, which fibers forked during the
 * hold inherit, so `heldByCurrentFiber` can tell a write that comes from inside
 * the holder (it could never proceed: refuse it) from any other writer (wait).
 * A hold that has ended no longer counts, also for fibers forked during it.
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import { globalValue } from "effect/GlobalValue"

/** One hold of a lock; `next` links the holds the fiber was already inside. */
interface Hold {
  readonly key: string
  readonly next: Hold | undefined
}

interface Waiter {
  /** Set when the lock is handed to this waiter: from then on it owns the lock. */
  granted: boolean
  resume: ((effect: Effect.Effect<void>) => void) | undefined
}

interface Lock {
  readonly waiters: Array<Waiter>
  /** The hold running now; `undefined` between a hand-over and the next hold's start. */
  holder: Hold | undefined
}

/** The holds the current fiber runs inside. A joined child never changes its parent's. */
const currentHolds = globalValue(
  "effect-kv/internal/keyedLock/currentHolds",
  () => FiberRef.unsafeMake<Hold | undefined>(undefined, { join: (parent) => parent })
)

type Restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

/** The fiber runtime's own FiberRef access: synchronous, no effect per read or write. */
interface FiberWithRefs {
  getFiberRef<X>(fiberRef: FiberRef.FiberRef<X>): X
  setFiberRef<X>(fiberRef: FiberRef.FiberRef<X>, value: X): void
}

export interface KeyedLock {
  /** Whether some fiber holds (or waits for) the lock of `key`: the cheap check before anything else. */
  readonly isLocked: (key: string) => boolean
  /** Whether the current fiber runs inside the hold of `key` that is running now. */
  readonly heldByCurrentFiber: (key: string) => Effect.Effect<boolean>
  /** The keys whose running holds the current fiber is inside (for writes that cannot name their keys up front). */
  readonly keysHeldByCurrentFiber: Effect.Effect<ReadonlyArray<string>>
  /** Runs `effect` holding the lock of `key`, waiting interruptibly; interruption never leaves a lock behind. */
  readonly withLock: <A, E, R>(key: string, effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

export const makeKeyedLock = (): KeyedLock => {
  const locks = new Map<string, Lock>()

  /** Passes the lock of `key` to the next waiter, or drops it from the table when nobody waits. */
  const release = (key: string, lock: Lock): void => {
    lock.holder = undefined
    const next = lock.waiters.shift()
    if (next === undefined) {
      locks.delete(key)
      return
    }
    next.granted = true
    next.resume?.(Effect.void)
  }

  /** Waits until `waiter` is handed the lock; an interrupted waiter never keeps or loses a lock. */
  const waitFor = (key: string, lock: Lock, restore: Restore): Effect.Effect<void> => {
    const waiter: Waiter = { granted: false, resume: undefined }
    lock.waiters.push(waiter)
    const granted = Effect.async<void>((resume) => {
      if (waiter.granted) resume(Effect.void)
      else waiter.resume = resume
    })
    return restore(granted).pipe(
      // interrupted while waiting, or just after the lock was handed over
      Effect.onInterrupt(() =>
        Effect.sync(() => {
          if (waiter.granted) {
            release(key, lock)
          } else {
            const index = lock.waiters.indexOf(waiter)
            if (index >= 0) lock.waiters.splice(index, 1)
          }
        })
      )
    )
  }

  /** Runs `body` as the holder of `lock`, marked in the fiber's holds; releases whatever happens. */
  const hold = <A, E, R>(fiber: FiberWithRefs, key: string, lock: Lock, body: Effect.Effect<A, E, R>) => {
    const outer = fiber.getFiberRef(currentHolds)
    const mine: Hold = { key, next: outer }
    lock.holder = mine
    fiber.setFiberRef(currentHolds, mine)
    return Effect.ensuring(
      body,
      Effect.sync(() => {
        fiber.setFiberRef(currentHolds, outer)
        release(key, lock)
      })
    )
  }

  const withLock = <A, E, R>(key: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.withFiberRuntime((fiber) => {
        const runtime = fiber as unknown as FiberWithRefs
        const existing = locks.get(key)
        if (existing === undefined) {
          const lock: Lock = { waiters: [], holder: undefined }
          locks.set(key, lock)
          return hold(runtime, key, lock, restore(effect))
        }
        return Effect.zipRight(waitFor(key, existing, restore), Effect.suspend(() => hold(runtime, key, existing, restore(effect))))
      })
    )

  const heldByCurrentFiber = (key: string): Effect.Effect<boolean> =>
    Effect.map(FiberRef.get(currentHolds), (holds) => {
      const holder = locks.get(key)?.holder
      if (holder === undefined) return false
      for (let hold = holds; hold !== undefined; hold = hold.next) {
        if (hold === holder) return true
      }
      return false
    })

  const keysHeldByCurrentFiber: Effect.Effect<ReadonlyArray<string>> = Effect.map(FiberRef.get(currentHolds), (holds) => {
    const keys: Array<string> = []
    for (let hold = holds; hold !== undefined; hold = hold.next) {
      if (locks.get(hold.key)?.holder === hold) keys.push(hold.key)
    }
    return keys
  })

  return { isLocked: (key) => locks.has(key), heldByCurrentFiber, keysHeldByCurrentFiber, withLock }
}
