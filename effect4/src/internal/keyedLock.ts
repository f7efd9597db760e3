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
 * Each hold is also recorded in the fiber's context, which fibers forked during the
 * hold inherit, so `heldByCurrentFiber` can tell a write that comes from inside
 * the holder (it could never proceed: refuse it) from any other writer (wait).
 * A hold that has ended no longer counts, also for fibers forked during it.
 */
import * as Effect from "effect/Effect"
import * as Context from "effect/Context"
import type * as Fiber from "effect/Fiber"
import { matchCause } from "./matchCause.js"

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

/**
 * The holds the current fiber runs inside, as an immutable list in the fiber's context.
 * Effect 4 has no `FiberRef` with a fork hook: a forked fiber starts with the context of
 * its parent at the fork, which is exactly the snapshot the Effect 3 line builds by hand —
 * a child forked during a hold sees it, later holds of the parent are not the child's.
 * Taking a lock sets the fiber's context in place (no effect per hold) and restores it
 * when the hold ends.
 */
const CurrentHolds = Context.Reference<Hold | undefined>("effect-kv/internal/keyedLock/CurrentHolds", {
  defaultValue: () => undefined
})

type Restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

type AnyFiber = Fiber.Fiber<unknown, unknown>

const setHolds = (fiber: AnyFiber, holds: Hold | undefined): void =>
  fiber.setContext(Context.add(fiber.context, CurrentHolds, holds))

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
    const granted = Effect.callback<void>((resume) => {
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

  /**
   * Runs `body` as the holder of `lock`, marked in the fiber's holds; releases
   * whatever happens. Called uninterruptible: the handlers below run before any
   * interruption can, so no `ensuring` (a second mask and two more steps) is needed.
   */
  const hold = <A, E, R>(fiber: AnyFiber, key: string, lock: Lock, body: Effect.Effect<A, E, R>) => {
    const outer = fiber.getRef(CurrentHolds)
    const mine: Hold = { key, next: outer }
    lock.holder = mine
    setHolds(fiber, mine)
    // handlers inline, not named or in an object literal (see matchCause.ts)
    return matchCause(
      body,
      (cause) => {
        setHolds(fiber, outer)
        release(key, lock)
        return Effect.failCause(cause)
      },
      (value) => {
        setHolds(fiber, outer)
        release(key, lock)
        return Effect.succeed(value)
      }
    )
  }

  const withLock = <A, E, R>(key: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.withFiber((fiber) => {
        const existing = locks.get(key)
        if (existing === undefined) {
          const lock: Lock = { waiters: [], holder: undefined }
          locks.set(key, lock)
          return hold(fiber, key, lock, restore(effect))
        }
        return Effect.andThen(waitFor(key, existing, restore), Effect.suspend(() => hold(fiber, key, existing, restore(effect))))
      })
    )

  const heldByCurrentFiber = (key: string): Effect.Effect<boolean> =>
    CurrentHolds.useSync((holds: Hold | undefined) => {
      const holder = locks.get(key)?.holder
      if (holder === undefined) return false
      for (let hold = holds; hold !== undefined; hold = hold.next) {
        if (hold === holder) return true
      }
      return false
    })

  const keysHeldByCurrentFiber: Effect.Effect<ReadonlyArray<string>> = CurrentHolds.useSync((holds: Hold | undefined) => {
    const keys: Array<string> = []
    for (let hold = holds; hold !== undefined; hold = hold.next) {
      if (locks.get(hold.key)?.holder === hold) keys.push(hold.key)
    }
    return keys
  })

  return { isLocked: (key) => locks.has(key), heldByCurrentFiber, keysHeldByCurrentFiber, withLock }
}
