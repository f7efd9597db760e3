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
 *
 * Deadlocks end: a fiber that holds a lock and is about to wait for another
 * first follows the wait-for chain — the other lock's holder, the lock that
 * holder waits for, its holder, and so on. When the chain comes back to the
 * fiber itself, waiting would never end, so it fails at once with a
 * `DriverError` (`Backend`) whose cause is a `Deadlock` naming the keys; the
 * fibers of the cycle that waited first go on once its holds end. The check
 * runs only when the key is locked and the fiber holds a lock, so the
 * uncontended path pays nothing. It sees the waits of this process's locks
 * only (any instance of `makeKeyedLock`): a fiber blocked elsewhere (joining
 * a child, on a database lock) ends the chain, and such a cycle is not seen.
 *
 * A read-modify-write that decides at once needs no lock at all:
 * `withLockedStep` runs its synchronous step (read, decide, write) when the
 * key is free, and takes the lock only when the step leaves an effect still
 * to run — in that same step, so no writer can come between the read and the
 * write. No other fiber runs during a synchronous step; a write started from
 * inside it (`Effect.runFork`) finds the key locked and waits.
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import { DriverError } from "../KvDriver.js"
import { matchCause } from "./matchCause.js"

export class Deadlock extends Data.TaggedError("Deadlock")<{
  readonly key: string
  readonly chain: ReadonlyArray<string>
  readonly message: string
}> {}

/** The cycle of a `Deadlock` in words, each key as `name` shows it (e.g. quoted, or redacted). */
export const describeCycle = (chain: ReadonlyArray<string>, name: (key: string) => string): string =>
  chain.length === 1
    ? "this fiber holds it already"
    : `it is held by ${
      chain.slice(1).map((next) => `a fiber that waits for key ${name(next)}`).join(", held by ")
    }, which this fiber holds`

/** One hold of a lock; `next` links the holds the fiber was already inside. */
interface Hold {
  readonly key: string
  /** The cell of the fiber that holds it: where the wait-for check finds what that fiber waits for. */
  readonly cell: Cell
  readonly next: Hold | undefined
}

interface Waiter {
  /** Set when the lock is handed to this waiter: from then on it owns the lock. */
  granted: boolean
  resume: ((effect: Effect.Effect<void>) => void) | undefined
  /** The waiting fiber's cell when it holds locks (then others' wait-for checks may pass through it). */
  readonly cell: Cell | undefined
}

interface Lock {
  readonly key: string
  readonly waiters: Array<Waiter>
  /** The hold running now; `undefined` between a hand-over and the next hold's start. */
  holder: Hold | undefined
}

/**
 * A fiber's place in the wait-for graph: the lock it waits for while it holds
 * others. One per fiber that has taken a lock, found through the fiber itself
 * (`cells`), not its context: a forked fiber inherits its parent's context,
 * and must not inherit its parent's waits.
 */
interface Cell {
  waitingFor: Lock | undefined
}

/** The cells of fibers that took a lock; shared by every `makeKeyedLock`, as the wait-for graph is. */
const cells = new WeakMap<object, Cell>()

const cellOf = (fiber: AnyFiber): Cell => {
  let cell = cells.get(fiber)
  if (cell === undefined) {
    cell = { waitingFor: undefined }
    cells.set(fiber, cell)
  }
  return cell
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

/** Hops of the wait-for chain followed at most: a longer chain is a cycle elsewhere, not through this fiber. */
const MAX_CHAIN = 10_000

type Restore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

type AnyFiber = Fiber.Fiber<unknown, unknown>

/** The running fiber, as `withLockedStep` gives it to its step: its context read synchronously (`getRef`), no effect per read. */
export type FiberWithRefs = AnyFiber

const setHolds = (fiber: AnyFiber, holds: Hold | undefined): void =>
  fiber.setContext(Context.add(fiber.context, CurrentHolds, holds))

export interface KeyedLock {
  /** Whether some fiber holds (or waits for) the lock of `key`: the cheap check before anything else. */
  readonly isLocked: (key: string) => boolean
  /** Whether the current fiber runs inside the hold of `key` that is running now. */
  readonly heldByCurrentFiber: (key: string) => Effect.Effect<boolean>
  /** The keys whose running holds the current fiber is inside (for writes that cannot name their keys up front). */
  readonly keysHeldByCurrentFiber: Effect.Effect<ReadonlyArray<string>>
  /**
   * Runs `effect` holding the lock of `key`, waiting interruptibly; interruption
   * never leaves a lock behind. Fails with a `DriverError` (`Backend`, its cause
   * a `Deadlock`) instead of waiting when the wait would close a cycle.
   */
  readonly withLock: <A, E, R>(key: string, effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | DriverError, R>
  /**
   * `withLock(key, Effect.suspend(step))`, cheaper when nobody holds `key`:
   * `step` (synchronous: a read, a decision, maybe a write) then runs at once,
   * and when the effect it returns is complete already (an `Exit`), nothing
   * else could have run meanwhile, so no lock is taken at all. Otherwise the
   * lock is taken in the same synchronous step and held while that effect
   * runs. While `step` runs, `isLocked(key)` is true: a write of the key
   * started from inside it waits until the step and its effect are done.
   * Called while the current fiber already holds `key` (a caller that took
   * the lock itself), `step` runs inside that hold. `step` is given the
   * running fiber, to read its services without another effect.
   */
  readonly withLockedStep: <A, E, R>(
    key: string,
    step: (fiber: FiberWithRefs) => Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | DriverError, R>
}

/**
 * Drivers whose `modify` takes their `lock` itself (with `withLockedStep`), so
 * the front does not take it first: a modification decided in one synchronous
 * step then costs no lock. A copy of such a driver (`{ ...driver }`) is not in
 * the set; the front then takes the lock and the driver's `modify` runs inside
 * that hold, as `withLockedStep` allows.
 */
export const driversLockingModify = new WeakSet<object>()

export interface KeyedLockOptions {
  /**
   * Where a fiber that already holds a lock waits for a key another fiber
   * holds. By default here, in the process, where the cycle check sees the
   * wait. With `true` it does not wait here: its effect runs without this
   * key's lock and waits in the driver's own store instead (PostgreSQL's
   * advisory lock in the caller's transaction). The front's lock of a store
   * shared by several processes needs this: a cycle through two instances
   * whose waits were split between a process's lock and the database's would
   * be seen by neither detector, while one whose waits all happen in the
   * database is seen by the database's. A fiber that holds nothing still
   * waits here (it cannot close a cycle), which keeps a write of a locked key
   * from taking a pooled connection only to wait.
   */
  readonly holdersWaitInDriver?: boolean | undefined
}

export const makeKeyedLock = (options?: KeyedLockOptions): KeyedLock => {
  const holdersWaitInDriver = options?.holdersWaitInDriver === true
  const locks = new Map<string, Lock>()
  /** The key whose `withLockedStep` step runs now, without an entry in `locks` unless someone asked for it meanwhile. */
  let stepping: string | undefined

  const isLocked = (key: string): boolean => key === stepping || locks.has(key)

  /**
   * The lock of `key` when someone holds or waits for it. During the step of
   * `key` that is the step's lock, made now (holder `undefined`, as between a
   * hand-over and the next hold): the step holds it, or hands it on, once done.
   */
  const lockOf = (key: string): Lock | undefined => {
    const existing = locks.get(key)
    if (existing !== undefined || key !== stepping) return existing
    const lock: Lock = { key, waiters: [], holder: undefined }
    locks.set(key, lock)
    return lock
  }

  /** Passes the lock of `key` to the next waiter, or drops it from the table when nobody waits. */
  const release = (key: string, lock: Lock): void => {
    lock.holder = undefined
    const next = lock.waiters.shift()
    if (next === undefined) {
      locks.delete(key)
      return
    }
    next.granted = true
    if (next.cell !== undefined) next.cell.waitingFor = undefined
    next.resume?.(Effect.void)
  }

  /**
   * Waits until `waiter` is handed the lock; an interrupted waiter never keeps
   * or loses a lock. `cell`: the waiting fiber's, when it holds locks.
   */
  const waitFor = (key: string, lock: Lock, restore: Restore, cell: Cell | undefined): Effect.Effect<void> => {
    const waiter: Waiter = { granted: false, resume: undefined, cell }
    lock.waiters.push(waiter)
    if (cell !== undefined) cell.waitingFor = lock
    const granted = Effect.callback<void>((resume) => {
      if (waiter.granted) resume(Effect.void)
      else waiter.resume = resume
    })
    return restore(granted).pipe(
      // interrupted while waiting, or just after the lock was handed over
      Effect.onInterrupt(() =>
        Effect.sync(() => {
          if (cell !== undefined && cell.waitingFor === lock) cell.waitingFor = undefined
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
    const mine: Hold = { key, cell: cellOf(fiber), next: outer }
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

  /**
   * The keys along the wait-for chain from `lock` back to a hold of `cell`'s
   * fiber (a cycle: waiting for `lock` would never end), or `undefined`.
   */
  const cycleBack = (cell: Cell, lock: Lock): Array<string> | undefined => {
    const chain = [lock.key]
    let current = lock
    for (let hops = 0; hops < MAX_CHAIN; hops++) {
      const holder = current.holder
      if (holder === undefined) return undefined
      if (holder.cell === cell) return chain
      const next = holder.cell.waitingFor
      if (next === undefined) return undefined
      chain.push(next.key)
      current = next
    }
    return undefined
  }

  const deadlock = (key: string, chain: ReadonlyArray<string>): DriverError => {
    const message = `waiting for key ${JSON.stringify(key)} would deadlock: ${describeCycle(chain, JSON.stringify)}`
    return new DriverError({ reason: "Backend", message, cause: new Deadlock({ key, chain, message }) })
  }

  /**
   * The wait for `existing`, the lock of `key` someone holds, then `body`
   * holding it; or a `Deadlock` failure when waiting would close a cycle. When
   * the fiber itself runs inside the current hold of `key` (see
   * `withLockedStep`), `body` runs inside it.
   */
  const afterHolder = <A, E, R>(
    fiber: FiberWithRefs,
    key: string,
    existing: Lock,
    restore: Restore,
    body: (fiber: FiberWithRefs) => Effect.Effect<A, E, R>,
    reentrant: boolean
  ): Effect.Effect<A, E | DriverError, R> => {
    // only a fiber that holds a lock (its own holds come first in its context) can close a cycle
    const cell = cells.get(fiber)
    const holding = cell !== undefined && fiber.getRef(CurrentHolds)?.cell === cell
    if (holding) {
      if (reentrant && existing.holder !== undefined && existing.holder.cell === cell) {
        return restore(Effect.suspend(() => body(fiber)))
      }
      const chain = cycleBack(cell, existing)
      if (chain !== undefined) return Effect.fail(deadlock(key, chain))
      if (holdersWaitInDriver) return restore(Effect.suspend(() => body(fiber)))
    }
    return Effect.andThen(
      waitFor(key, existing, restore, holding ? cell : undefined),
      // `body` is called inside the hold: should it throw, the hold still ends
      Effect.suspend(() => hold(fiber, key, existing, restore(Effect.suspend(() => body(fiber)))))
    )
  }

  const withLock = <A, E, R>(key: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | DriverError, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.withFiber<A, E | DriverError, R>((fiber) => {
        const existing = lockOf(key)
        if (existing === undefined) {
          const lock: Lock = { key, waiters: [], holder: undefined }
          locks.set(key, lock)
          return hold(fiber, key, lock, restore(effect))
        }
        return afterHolder(fiber, key, existing, restore, () => effect, false)
      })
    )

  const withLockedStep = <A, E, R>(
    key: string,
    step: (fiber: FiberWithRefs) => Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | DriverError, R> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.withFiber<A, E | DriverError, R>((fiber) => {
        if (isLocked(key)) {
          const existing = lockOf(key)!
          return afterHolder(fiber, key, existing, restore, step, true)
        }
        const outer = stepping
        stepping = key
        let effect: Effect.Effect<A, E, R>
        try {
          effect = step(fiber)
        } catch (defect) {
          effect = Effect.die(defect)
        } finally {
          stepping = outer
        }
        // someone asked for the key during the step (a write started from inside it): the step's lock exists now
        const lock = locks.get(key)
        if (Exit.isExit(effect)) {
          if (lock !== undefined) release(key, lock)
          return effect
        }
        if (lock !== undefined) return hold(fiber, key, lock, restore(effect))
        const fresh: Lock = { key, waiters: [], holder: undefined }
        locks.set(key, fresh)
        return hold(fiber, key, fresh, restore(effect))
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

  return { isLocked, heldByCurrentFiber, keysHeldByCurrentFiber, withLock, withLockedStep }
}
