/**
 * Request coalescing for `PostgresStore`: concurrent single-key calls that
 * find every statement slot busy wait in a queue, and whatever waits when a
 * slot frees goes out together as one statement over an array of keys.
 *
 * - **No timer window.** At most `maxInFlight` statements (a share of the
 *   pool: see `inFlightBudget` in driver.ts) run at once. A call that finds a free slot and nobody waiting runs its own
 *   single-key statement at once, on its own fiber: a lone caller pays
 *   nothing. Only calls that would have waited for a pooled connection anyway
 *   are batched.
 * - **A batch runs in a daemon fiber** that no caller owns. Its callers wait on
 *   it interruptibly: an interrupted caller still queued is taken out (nothing
 *   of it is sent); one whose batch is already on its way stops waiting, and
 *   the others get their answers as if it had never left. (A write whose batch
 *   was sent may then still land, whole, as a single statement interrupted
 *   while the server runs it may; it is never retried for a caller that left.)
 * - **Fallback.** A batch answers each item with its own exit, or `RETRY`: the
 *   item then runs `alone` on its caller's fiber, outside the budget (e.g. a
 *   write whose key's lock was taken, which must wait for it). When the batch
 *   statement itself fails, the lane's `batchFailed` says what that means for
 *   its items: by default each is retried alone, so a failure reaches exactly
 *   the calls it belongs to (one bad key cannot fail its neighbours). A write
 *   lane must not retry a batch that may have committed (its connection was
 *   lost after it was sent): re-running it would apply its items twice, so
 *   there every caller gets the failure instead.
 * - **Only outside transactions.** The driver sends a call inside the caller's
 *   live transaction straight to it, never here: a batch runs on the pool.
 */
import type * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"

/** A batch's answer for an item that must run on its own (see `Lane.alone`). */
export const RETRY: unique symbol = Symbol.for("effect-kv/internal/postgres/coalesce/RETRY")
export type Retry = typeof RETRY

export interface LaneOptions<I, A, E> {
  /** One item as one statement, inside the budget. */
  readonly one: (item: I) => Effect.Effect<A | Retry, E>
  /** Several items (at least two) as one statement, inside the budget: one answer per item, in order. */
  readonly many: (items: ReadonlyArray<I>) => Effect.Effect<ReadonlyArray<Exit.Exit<A, E> | Retry>, unknown>
  /** One item on the caller's fiber, outside the budget, after `RETRY`. */
  readonly alone: (item: I) => Effect.Effect<A, E>
  /**
   * What the failure of a batch statement (`many`) means for every item of it:
   * `RETRY` (each runs `alone`: nothing of the batch was written) or the failure
   * each caller gets. Default: `RETRY`.
   */
  readonly batchFailed?: ((cause: Cause.Cause<unknown>) => Exit.Exit<never, E> | Retry) | undefined
  /** Items per statement. */
  readonly maxItems: number
  /** Bytes of an item (default 0) and bytes per statement: a larger item still goes, alone. */
  readonly sizeOf?: ((item: I) => number) | undefined
  readonly maxBytes?: number | undefined
}

export interface Lane<I, A, E> {
  readonly run: (item: I) => Effect.Effect<A, E>
}

export interface Coalescer {
  readonly lane: <I, A, E>(options: LaneOptions<I, A, E>) => Lane<I, A, E>
}

interface Waiting<I, A, E> {
  readonly item: I
  /** Set when a batch took it: from then on it is sent, whatever its caller does. */
  taken: boolean
  /** The batch's answer, once there is one. */
  outcome: Exit.Exit<A, E> | Retry | undefined
  resume: ((effect: Effect.Effect<A, E>) => void) | undefined
}

interface Queue {
  readonly size: () => number
  /** Takes the next batch off the queue: the effect that sends it and answers its callers. */
  readonly take: () => Effect.Effect<void>
}

export const makeCoalescer = (maxInFlight: number): Coalescer => {
  let inFlight = 0
  const queues: Array<Queue> = []
  let turn = 0

  /** Sends queued batches while slots are free, the lanes taking turns. */
  const pump: Effect.Effect<void> = Effect.suspend(() => {
    let sends: Array<Effect.Effect<void>> | undefined
    while (inFlight < maxInFlight) {
      let queue: Queue | undefined
      for (let i = 0; i < queues.length; i++) {
        const candidate = queues[(turn + i) % queues.length]!
        if (candidate.size() > 0) {
          queue = candidate
          turn = (turn + i + 1) % queues.length
          break
        }
      }
      if (queue === undefined) break
      inFlight++
      ;(sends ??= []).push(Effect.forkDetach(Effect.ensuring(queue.take(), release)))
    }
    return sends === undefined ? Effect.void : Effect.all(sends, { discard: true })
  })

  const release: Effect.Effect<void> = Effect.suspend(() => {
    inFlight--
    return pump
  })

  const lane = <I, A, E>(options: LaneOptions<I, A, E>): Lane<I, A, E> => {
    const { alone, many, maxItems, one } = options
    const batchFailed = options.batchFailed ?? (() => RETRY)
    const sizeOf = options.sizeOf
    const maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY
    let waiting: Array<Waiting<I, A, E>> = []

    const settle = (entry: Waiting<I, A, E>, outcome: Exit.Exit<A, E> | Retry): void => {
      entry.outcome = outcome
      entry.resume?.(outcome === RETRY ? alone(entry.item) : outcome)
    }

    const take = (): Effect.Effect<void> => {
      let count = 0
      let bytes = 0
      while (count < waiting.length && count < maxItems) {
        const size = sizeOf === undefined ? 0 : sizeOf(waiting[count]!.item)
        if (count > 0 && bytes + size > maxBytes) break
        bytes += size
        count++
      }
      const batch = waiting.slice(0, count)
      waiting = waiting.slice(count)
      for (const entry of batch) entry.taken = true
      if (batch.length === 1) {
        const entry = batch[0]!
        return Effect.map(Effect.exit(one(entry.item)), (exit) =>
          settle(entry, exit._tag === "Success" && exit.value === RETRY ? RETRY : exit as Exit.Exit<A, E>))
      }
      return Effect.map(Effect.exit(many(batch.map((entry) => entry.item))), (exit) => {
        const failed = exit._tag === "Failure" ? batchFailed(exit.cause) : RETRY
        for (let i = 0; i < batch.length; i++) {
          settle(batch[i]!, exit._tag === "Success" ? exit.value[i] ?? RETRY : failed)
        }
      })
    }

    queues.push({ size: () => waiting.length, take })

    const afterOne = (item: I) => (result: A | Retry): Effect.Effect<A, E> =>
      result === RETRY ? alone(item) : Effect.succeed(result)

    const run = (item: I): Effect.Effect<A, E> =>
      Effect.suspend(() => {
        if (inFlight < maxInFlight && waiting.length === 0) {
          inFlight++
          return Effect.flatMap(Effect.ensuring(one(item), release), afterOne(item))
        }
        const entry: Waiting<I, A, E> = { item, taken: false, outcome: undefined, resume: undefined }
        waiting.push(entry)
        const answer = Effect.callback<A, E>((resume) => {
          const outcome = entry.outcome
          if (outcome !== undefined) resume(outcome === RETRY ? alone(item) : outcome)
          else entry.resume = resume
          // interrupted: a caller still queued leaves the queue; a batch already sent goes on without it
          return Effect.sync(() => {
            entry.resume = undefined
            if (!entry.taken) waiting = waiting.filter((other) => other !== entry)
          })
        })
        return inFlight < maxInFlight ? Effect.andThen(pump, answer) : answer
      })

    return { run }
  }

  return { lane }
}
