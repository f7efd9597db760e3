/**
 * The change feed of `PostgresStore` (`Driver.changes`): every write notifies
 * the key it changed on the table's channel (`pg_notify` in the writing
 * statement or transaction, see `notifyingWrite` in core/postgresSql.ts), and
 * a subscription hears them on a connection of its own.
 *
 * Effect 4 rewrite of the Effect 3 line's module (which runs a node-postgres
 * `Client` of its own because `PgClient.listen` of `@effect/sql-pg` 0.53 hides
 * a lost connection): `@effect/sql-pg` 4 speaks the wire protocol itself, has
 * no `pg`, and its `PgClient.listen(channel)` is what this module needs. It
 * returns a `Queue` once PostgreSQL confirmed `LISTEN`, and fails that queue
 * with the `SqlError` when the listening connection dies.
 *
 * - **One listening connection per subscription**, and the front keeps one
 *   subscription per store, however many watchers. `listen` reserves it from
 *   the client's pool for as long as the subscription lasts (`LISTEN` holds
 *   for the session): a pool of one connection has none left for the store.
 * - **Loss is reported, never hidden.** When the queue fails (the server
 *   restarted, the backend was terminated, the network broke; TCP keep-alive
 *   is the client's `keepAlive` option), the feed says `Lost`, listens again
 *   on a fresh connection with a short backoff (50 ms doubling to 1 s, on
 *   real time, not the Effect `Clock`, which may be a `TestClock`) and says
 *   `Resumed`: the front then re-reads what it watches.
 * - **Expiry** writes nothing, so nothing notifies it: while subscribed, the
 *   feed asks about every 500 ms, on the database's clock, for the entries
 *   whose `expires_at` passed since its previous question (`expires_at > last
 *   AND expires_at <= now()`, the partial index on `expires_at`), carrying
 *   `now()` forward exactly (as text). A sweep that deletes an expired entry
 *   before the poll saw it notifies the key itself.
 * - **Bounded memory.** Changes wait for the consumer as a list of distinct
 *   keys (a key already waiting is not added again); past `MAX_PENDING_KEYS`
 *   the list is dropped for `Lost` + `Resumed`, which tells the front to
 *   re-read everything it watches, rather than growing without bound.
 * - **The store's end ends the stream**: closing the store closes every
 *   subscription, whose stream then ends after what was waiting.
 */
import * as Arr from "effect/Array"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import * as Scope from "effect/Scope"
import type * as SqlClient from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import * as Stream from "effect/Stream"
import type { DriverChange } from "../../KvDriver.js"
import { DriverError } from "../../KvStore.js"
import { EXPIRED_PER_POLL, syncPayload, syncTokenOf } from "../../core/postgresSql.js"
import type { Row } from "./connection.js"
import { sleepReal } from "../eventLoop.js"

export type { DriverChange } from "../../KvDriver.js"

/** Distinct keys waiting for a slow consumer before the feed gives up on them for `Lost` + `Resumed`. */
export const MAX_PENDING_KEYS = EXPIRED_PER_POLL

/** Milliseconds between two expiry polls. */
export const EXPIRY_POLL_MILLIS = 500

/**
 * The longest a subscription waits for its LISTEN connection (real time): the
 * front opens the feed inside an uninterruptible acquire, so a pool whose
 * connections are all busy must not hold a subscriber forever.
 */
export const LISTEN_TIMEOUT_MILLIS = 10_000

/** Reconnection backoff: the first wait and the longest (milliseconds). */
const BACKOFF_FIRST_MILLIS = 50
const BACKOFF_MAX_MILLIS = 1000

/** A `NOTIFY` as `@effect/sql-pg` 4's `PgConnection.Notification` gives it. */
interface Notification {
  readonly channel: string
  readonly payload: string
}

/** What this module uses of `@effect/sql-pg` 4's `PgClient` (found on the store's `SqlClient`, not imported). */
type Listen = (channel: string) => Effect.Effect<Queue.Dequeue<Notification, SqlError>, SqlError, Scope.Scope>

const listenOf = (sql: SqlClient.SqlClient): Listen | undefined => {
  const listen = (sql as unknown as { readonly listen?: unknown }).listen
  return typeof listen === "function" ? (listen as Listen) : undefined
}

/** Changes waiting for the consumer: distinct keys between markers, bounded (see `MAX_PENDING_KEYS`). */
type Pending = ReturnType<typeof makePending>

const makePending = () => {
  let events: Array<DriverChange> = []
  let keys = new Set<string>()
  let connected = true
  let ended = false
  let waiting: ((effect: Effect.Effect<Arr.NonEmptyReadonlyArray<DriverChange>, Cause.Done>) => void) | undefined
  const drain = (): Arr.NonEmptyReadonlyArray<DriverChange> => {
    const out = events as unknown as Arr.NonEmptyReadonlyArray<DriverChange>
    events = []
    keys = new Set()
    return out
  }
  const wake = () => {
    const resume = waiting
    if (resume === undefined || (events.length === 0 && !ended)) return
    waiting = undefined
    resume(events.length > 0 ? Effect.sync(drain) : Cause.done())
  }
  return {
    changed: (key: string): void => {
      if (keys.has(key)) return
      if (keys.size >= MAX_PENDING_KEYS) {
        // too far behind: what it missed is "anything", said with the markers a reconnection uses
        events = connected ? [{ _tag: "Lost" }, { _tag: "Resumed" }] : [{ _tag: "Lost" }]
        keys = new Set()
      } else {
        keys.add(key)
        events.push({ _tag: "Changed", key })
      }
      wake()
    },
    lost: (): void => {
      connected = false
      events.push({ _tag: "Lost" })
      keys = new Set()
      wake()
    },
    /** A sync marker: after it, a key already waiting is told again (its listener may start at the marker). */
    synced: (token: string): void => {
      events.push({ _tag: "Synced", token })
      keys = new Set()
      wake()
    },
    resumed: (): void => {
      connected = true
      events.push({ _tag: "Resumed" })
      wake()
    },
    /** The stream ends (after what is waiting): the store was closed. */
    end: (): void => {
      ended = true
      wake()
    },
    /** The changes waiting, as soon as there are some; `Done` once ended (the stream's pull). */
    take: Effect.callback<Arr.NonEmptyReadonlyArray<DriverChange>, Cause.Done>((resume) => {
      if (events.length > 0) return resume(Effect.sync(drain))
      if (ended) return resume(Cause.done())
      waiting = resume
      return Effect.sync(() => {
        if (waiting === resume) waiting = undefined
      })
    })
  }
}

const feedError = (message: string, cause?: unknown): DriverError =>
  new DriverError({
    reason: "Backend",
    message: cause instanceof Error && cause.message !== "" ? `${message}: ${cause.message}` : message,
    cause
  })

export interface ChangeFeedOptions {
  readonly sql: SqlClient.SqlClient
  /** The table's channel (`notifyChannel` in core/postgresSql.ts). */
  readonly channel: string
  /** `Statements.expiredSince`. */
  readonly expiredSince: string
  /** Runs a statement on a pooled connection, outside any transaction (`Connections.onPool`). */
  readonly onPool: (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Row>, SqlError>
}

/**
 * Why `sql` cannot carry a change feed (it is not `@effect/sql-pg`'s
 * `PgClient`, which has `listen`, or its pool has no connection to spare),
 * or `undefined` when it can.
 */
export const changeFeedProblem = (sql: SqlClient.SqlClient): string | undefined => {
  if (listenOf(sql) === undefined) {
    return "the store's SqlClient is not @effect/sql-pg's PgClient, whose listen the change feed needs"
  }
  const config = (sql as unknown as { readonly config?: { readonly maxConnections?: unknown } }).config
  // the LISTEN connection is reserved from the pool: with one connection, every other statement would wait forever
  return config?.maxConnections === 1
    ? "the store's PgClient pool has one connection, and the change feed's LISTEN would hold it: give PgClient.layer maxConnections of 2 or more to watch"
    : undefined
}

/**
 * `Driver.changes` for the table, and `close`, which ends every subscription's
 * connection (the store's scope runs it, so no `LISTEN` connection outlives the
 * store even if a subscriber's scope does).
 */
export const makeChangeFeed = (options: ChangeFeedOptions): {
  readonly changes: Effect.Effect<Stream.Stream<DriverChange>, DriverError, Scope.Scope>
  readonly sync: (token: string) => Effect.Effect<void, DriverError>
  readonly close: Effect.Effect<void>
} => {
  const { channel, expiredSince, onPool, sql } = options
  const listen = listenOf(sql)
  let closed = false
  const subscriptions = new Set<Scope.Closeable>()

  /**
   * A listening connection in `scope`: `LISTEN`ing when this succeeds; `dead`
   * completes when it is lost (its queue failed). Closing the scope ends it
   * (the reader is interrupted, which is not a loss).
   */
  const connectIn = (scope: Scope.Scope, pending: Pending) =>
    Effect.gen(function*() {
      if (listen === undefined) return yield* Effect.fail(feedError(changeFeedProblem(sql)!))
      const dead = yield* Deferred.make<void>()
      const queue = yield* Effect.raceFirst(
        Effect.interruptible(Scope.provide(listen(channel), scope)).pipe(
          Effect.mapError((error) => feedError("could not open the change feed's LISTEN connection", error))
        ),
        Effect.andThen(
          sleepReal(LISTEN_TIMEOUT_MILLIS),
          Effect.fail(feedError(
            `could not open the change feed's LISTEN connection: no connection of the pool came free within ${LISTEN_TIMEOUT_MILLIS / 1000} s`
          ))
        )
      )
      const reading = Effect.forever(Effect.map(Queue.takeAll(queue), (notifications) => {
        for (const notification of notifications) {
          // an empty payload is not a key (effect-kv never sends one)
          if (notification.channel !== channel || notification.payload === "") continue
          const token = syncTokenOf(notification.payload)
          if (token === undefined) pending.changed(notification.payload)
          else pending.synced(token)
        }
      }))
      let ending = false
      yield* reading.pipe(
        // any end but the scope's is a loss: a failed queue (the connection died) or one the client closed
        // under us (its interruption)
        Effect.catchCause(() => ending ? Effect.void : Effect.asVoid(Deferred.succeed(dead, undefined))),
        Effect.forkIn(scope)
      )
      // added after the reader's fork, so it runs first: the scope's own end is not a loss
      yield* Scope.addFinalizer(scope, Effect.sync(() => {
        ending = true
      }))
      return dead
    })

  const changes: Effect.Effect<Stream.Stream<DriverChange>, DriverError, Scope.Scope> = Effect.gen(function*() {
    if (closed) return yield* Effect.fail(feedError("the store was closed: its change feed is gone"))
    const outer = yield* Effect.scope
    const subscription = yield* Scope.fork(outer, "sequential")
    subscriptions.add(subscription)
    yield* Scope.addFinalizer(subscription, Effect.sync(() => subscriptions.delete(subscription)))
    const pending = makePending()
    const started = yield* Effect.gen(function*() {
      let session = yield* Scope.fork(subscription, "sequential")
      let dead = yield* connectIn(session, pending)
      // where expiry polling starts: the database's now(), read after LISTEN, so nothing falls in between
      // bounded like the LISTEN connection: a subscriber opens the feed inside the front's join
      const first = yield* Effect.raceFirst(
        Effect.interruptible(backendRead(onPool(expiredSince, [null]))),
        Effect.interruptible(Effect.andThen(
          sleepReal(LISTEN_TIMEOUT_MILLIS),
          Effect.fail(feedError(
            `could not start the change feed's expiry poll: no connection of the pool came free within ${LISTEN_TIMEOUT_MILLIS / 1000} s`
          ))
        ))
      )
      let last: unknown = first[0]?.["at"] ?? null

      /** Lost, then listen again (backoff on real time) and Resumed; forever, until the subscription ends. */
      const reconnecting: Effect.Effect<never> = Effect.gen(function*() {
        while (true) {
          yield* Deferred.await(dead)
          pending.lost()
          yield* Scope.close(session, Exit.void)
          let wait = BACKOFF_FIRST_MILLIS
          while (true) {
            session = yield* Scope.fork(subscription, "sequential")
            const attempt = yield* Effect.result(connectIn(session, pending))
            if (Result.isSuccess(attempt)) {
              dead = attempt.success
              break
            }
            yield* Scope.close(session, Exit.void)
            yield* sleepReal(wait)
            wait = Math.min(wait * 2, BACKOFF_MAX_MILLIS)
          }
          pending.resumed()
        }
      })

      /** Entries that expired since the previous poll, as changes; a failed poll is tried again from the same point. */
      const polling: Effect.Effect<never> = Effect.forever(
        Effect.andThen(
          sleepReal(EXPIRY_POLL_MILLIS),
          Effect.suspend(() => onPool(expiredSince, [last])).pipe(
            Effect.map((rows) => {
              if (rows.length > EXPIRED_PER_POLL) {
                // more expired than one poll reads: the rest would be skipped, so say "anything may have changed"
                pending.lost()
                pending.resumed()
              } else {
                for (const row of rows) if (typeof row["key"] === "string") pending.changed(row["key"])
              }
              if (rows[0]?.["at"] !== undefined) last = rows[0]["at"]
            }),
            Effect.catchCause((cause) => Effect.logDebug("effect-kv: the change feed's expiry poll failed", cause))
          )
        )
      )

      yield* Effect.forkIn(reconnecting, subscription)
      yield* Effect.forkIn(polling, subscription)
    }).pipe(Effect.exit)
    if (Exit.isFailure(started)) {
      yield* Scope.close(subscription, Exit.void)
      return yield* Effect.failCause(started.cause)
    }
    // the store's scope closing ends the subscription's stream: the front tells its watchers
    yield* Scope.addFinalizer(subscription, Effect.sync(pending.end))
    return Stream.fromPull(Effect.succeed(pending.take))
  })

  const close = Effect.suspend(() => {
    closed = true
    return Effect.forEach(Array.from(subscriptions), (scope) => Scope.close(scope, Exit.void), { discard: true })
  })

  /** `Driver.syncChanges`: the marker goes out on a pooled connection, after the caller's acknowledged writes. */
  const sync = (token: string): Effect.Effect<void, DriverError> =>
    onPool("SELECT pg_notify($1, $2)", [channel, syncPayload(token)]).pipe(
      Effect.mapError((error) => feedError("could not sync with the change feed", error)),
      Effect.asVoid
    )

  return { changes, sync, close }
}

const backendRead = <A>(effect: Effect.Effect<A, SqlError>): Effect.Effect<A, DriverError> =>
  Effect.mapError(effect, (error) => feedError("could not start the change feed's expiry poll", error))
