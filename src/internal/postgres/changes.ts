/**
 * The change feed of `PostgresStore` (`Driver.changes`): every write notifies
 * the key it changed on the table's channel (`pg_notify` in the writing
 * statement or transaction, see `notifyingWrite` in core/postgresSql.ts), and
 * a subscription hears them on a connection of its own.
 *
 * - **One dedicated `LISTEN` connection per subscription**, and the front keeps
 *   one subscription per store, however many watchers. It is not a pooled
 *   connection: a pooled one would be handed to other work between queries,
 *   and `LISTEN` holds for the session. `PgClient.listen` of `@effect/sql-pg`
 *   0.53 does not do: it swallows the listening connection's errors (its stream
 *   neither fails nor ends when the connection dies, and it keeps the dead
 *   client) and drops empty payloads. So this module runs a node-postgres
 *   `Client` of its own, made with the pool's settings (`PgClient.config`) and
 *   the pool's own `Client` class (taken from a pooled connection, so
 *   effect-kv imports no `pg` of its own).
 * - **Loss is reported, never hidden.** When the connection dies (the server
 *   restarted, the backend was terminated, the network broke: node-postgres
 *   emits `error`/`end`; TCP keep-alive is on for a silent peer), the feed
 *   says `Lost`, reconnects with a short backoff (50 ms doubling to 1 s, on
 *   real time, not the Effect `Clock`, which may be a `TestClock`), listens
 *   again and says `Resumed`: the front then re-reads what it watches.
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
 *
 * Effect-3-specific: the raw node-postgres client (`@effect/sql-pg` 4 speaks
 * the wire protocol itself and has no `pg`).
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { DriverChange } from "../../KvDriver.js"
import { DriverError } from "../../KvStore.js"
import { EXPIRED_PER_POLL, syncPayload, syncTokenOf } from "../../core/postgresSql.js"
import type { Row } from "./connection.js"
import { sleepReal } from "../eventLoop.js"

/** Distinct keys waiting for a slow consumer before the feed gives up on them for `Lost` + `Resumed`. */
export const MAX_PENDING_KEYS = EXPIRED_PER_POLL

/** The longest a subscriber waits for the pool (once per store) or for its LISTEN connection (milliseconds). */
export const LISTEN_TIMEOUT_MILLIS = 10_000

/** The database's clock as the expiry poll's starting point (the `at` of `Statements.expiredSince`). */
const LISTEN_STARTED_AT = "SELECT now()::text AS at"

/** Milliseconds between two expiry polls. */
export const EXPIRY_POLL_MILLIS = 500

/** Reconnection backoff: the first wait and the longest (milliseconds). */
const BACKOFF_FIRST_MILLIS = 50
const BACKOFF_MAX_MILLIS = 1000

/** What this module uses of a node-postgres `Client`. */
interface ListenClient {
  connect(): Promise<void>
  query(text: string): Promise<{ readonly rows?: ReadonlyArray<Record<string, unknown>> }>
  end(): Promise<void>
  on(event: "notification", listener: (message: { readonly channel: string; readonly payload?: string }) => void): unknown
  on(event: "error", listener: (error: Error) => void): unknown
  on(event: "end", listener: () => void): unknown
}

type ClientClass = new(config: Record<string, unknown>) => ListenClient

/** The settings of `@effect/sql-pg`'s `PgClientConfig` that make a connection. */
interface PgConfig {
  readonly url?: Redacted.Redacted | undefined
  readonly host?: string | undefined
  readonly port?: number | undefined
  readonly ssl?: unknown
  readonly database?: string | undefined
  readonly username?: string | undefined
  readonly password?: Redacted.Redacted | undefined
  readonly stream?: unknown
  readonly connectTimeout?: Duration.DurationInput | undefined
  readonly applicationName?: string | undefined
  readonly types?: unknown
}

/** The `application_name` of the listening connection: says what it is, next to the pool's own name. */
export const listenApplicationName = (poolName: string | undefined): string =>
  `effect-kv listen (${poolName ?? "@effect/sql-pg"})`.slice(0, 63)

/** node-postgres settings like the ones `PgClient` gives its pool (see `PgClient.make`), with TCP keep-alive. */
const clientSettings = (config: PgConfig): Record<string, unknown> => ({
  connectionString: config.url === undefined ? undefined : Redacted.value(config.url),
  user: config.username,
  host: config.host,
  database: config.database,
  password: config.password === undefined ? undefined : Redacted.value(config.password),
  ssl: config.ssl,
  port: config.port,
  ...(config.stream === undefined ? {} : { stream: config.stream }),
  // bounded even when the pool's is not: a subscriber may wait for it uninterruptibly (the front opens the feed in an acquire)
  connectionTimeoutMillis: config.connectTimeout === undefined ? LISTEN_TIMEOUT_MILLIS : Duration.toMillis(config.connectTimeout),
  application_name: listenApplicationName(config.applicationName),
  types: config.types,
  keepAlive: true
})

const quoteIdentifier = (name: string): string => `"${name.replaceAll("\"", "\"\"")}"`

/** Changes waiting for the consumer: distinct keys between markers, bounded (see `MAX_PENDING_KEYS`). */
type Pending = ReturnType<typeof makePending>

const makePending = () => {
  let events: Array<DriverChange> = []
  let keys = new Set<string>()
  let connected = true
  let ended = false
  let waiting: ((effect: Effect.Effect<Chunk.Chunk<DriverChange>, Option.Option<never>>) => void) | undefined
  const drain = (): Chunk.Chunk<DriverChange> => {
    const out = events
    events = []
    keys = new Set()
    return Chunk.unsafeFromArray(out)
  }
  const wake = () => {
    const resume = waiting
    if (resume === undefined || (events.length === 0 && !ended)) return
    waiting = undefined
    resume(events.length > 0 ? Effect.sync(drain) : Effect.fail(Option.none()))
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
    resumed: (): void => {
      connected = true
      events.push({ _tag: "Resumed" })
      wake()
    },
    /** A sync marker: after it, a key already waiting is told again (its listener may start at the marker). */
    synced: (token: string): void => {
      events.push({ _tag: "Synced", token })
      keys = new Set()
      wake()
    },
    /** The stream ends (after what is waiting): the store was closed. */
    end: (): void => {
      ended = true
      wake()
    },
    /** The changes waiting, as soon as there are some; `none` once ended. */
    take: Effect.async<Chunk.Chunk<DriverChange>, Option.Option<never>>((resume) => {
      if (events.length > 0) return resume(Effect.sync(drain))
      if (ended) return resume(Effect.fail(Option.none()))
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

/**
 * The `Client` class of the pool behind `sql` (a pooled connection's
 * constructor), taken once, uninterruptibly: `sql.reserve` of
 * `@effect/sql-pg` 0.53 leaks a connection when interrupted while it waits.
 */
const clientClassOf = (sql: SqlClient.SqlClient): Effect.Effect<ClientClass, DriverError> =>
  Effect.raceFirst(
    // on a fiber of its own, so that losing the race leaves it to finish and give the connection back
    Effect.uninterruptible(Effect.scoped(sql.reserve)).pipe(
      Effect.mapError((error: SqlError) => feedError("could not reach PostgreSQL to open the change feed", error)),
      Effect.forkDaemon,
      Effect.flatMap(Fiber.join),
      Effect.interruptible
    ),
    // bounded: a subscriber opens the feed inside the front's uninterruptible acquire
    Effect.interruptible(Effect.zipRight(
      sleepReal(LISTEN_TIMEOUT_MILLIS),
      Effect.fail(feedError(
        `could not open the change feed: no connection of the pool came free within ${LISTEN_TIMEOUT_MILLIS / 1000} s`
      ))
    ))
  ).pipe(
    Effect.flatMap((connection) => {
      const pooled = (connection as unknown as { readonly pg?: { readonly constructor?: unknown } }).pg
      return typeof pooled?.constructor === "function"
        ? Effect.succeed(pooled.constructor as ClientClass)
        : Effect.fail(feedError("the SqlClient's connections are not node-postgres clients: no change feed"))
    })
  )

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
 * `PgClient`), or `undefined` when it can.
 */
export const changeFeedProblem = (sql: SqlClient.SqlClient): string | undefined => {
  const config = (sql as unknown as { readonly config?: unknown }).config
  return typeof config === "object" && config !== null
    ? undefined
    : "the store's SqlClient is not @effect/sql-pg's PgClient, whose connection settings the change feed's LISTEN connection needs"
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
  const config = (sql as unknown as { readonly config: PgConfig }).config
  const settings = clientSettings(config)
  const listen = `LISTEN ${quoteIdentifier(channel)}`
  let clientClass: ClientClass | undefined
  let closed = false
  const subscriptions = new Set<Scope.CloseableScope>()

  /**
   * A listening connection in `scope`: connected and `LISTEN`ing when this
   * succeeds; `dead` completes when it is lost. Closing the scope ends it
   * without that counting as a loss.
   */
  const connectIn = (scope: Scope.Scope, Client: ClientClass, pending: Pending) =>
    Effect.flatMap(Deferred.make<void>(), (dead) => {
      const client = new Client(settings)
      let ending = false
      const lost = () => {
        if (!ending) Deferred.unsafeDone(dead, Exit.void)
      }
      client.on("notification", (message) => {
        // an empty payload is not a key (effect-kv never sends one); `listen` of sql-pg drops them too
        if (typeof message.payload !== "string" || message.payload === "") return
        if (message.channel !== channel) return
        const token = syncTokenOf(message.payload)
        if (token === undefined) pending.changed(message.payload)
        else pending.synced(token)
      })
      client.on("error", lost)
      client.on("end", lost)
      const end = Effect.suspend(() => {
        ending = true
        // bounded: a finalizer is uninterruptible, and `end` of a connection that never finished may not settle
        return Effect.promise(() => client.end().catch(() => undefined)).pipe(
          Effect.interruptible,
          Effect.timeoutOption(1000),
          Effect.asVoid
        )
      })
      return Scope.addFinalizer(scope, end).pipe(
        Effect.zipRight(Effect.tryPromise({
          // the database's now(), on this connection (a subscriber never waits for a pooled one: a busy pool
          // must not hold up a watcher's start): expiry polling starts there, whatever LISTEN hears
          try: async () => {
            await client.connect()
            const started = await client.query(LISTEN_STARTED_AT)
            await client.query(listen)
            return started.rows?.[0]?.["at"] ?? null
          },
          catch: (cause) => feedError("could not open the change feed's LISTEN connection", cause)
        })),
        Effect.map((at) => ({ dead, at }))
      )
    })

  const changes: Effect.Effect<Stream.Stream<DriverChange>, DriverError, Scope.Scope> = Effect.gen(function*() {
    if (closed) return yield* Effect.fail(feedError("the store was closed: its change feed is gone"))
    if (clientClass === undefined) clientClass = yield* clientClassOf(sql)
    const Client = clientClass
    const outer = yield* Effect.scope
    const subscription = yield* Scope.fork(outer, ExecutionStrategy.sequential)
    subscriptions.add(subscription)
    yield* Scope.addFinalizer(subscription, Effect.sync(() => subscriptions.delete(subscription)))
    const pending = makePending()
    const started = yield* Effect.gen(function*() {
      let session = yield* Scope.fork(subscription, ExecutionStrategy.sequential)
      const connected = yield* connectIn(session, Client, pending)
      let dead = connected.dead
      // where expiry polling starts: the database's now() when the feed opened
      let last: unknown = connected.at

      /** Lost, then reconnect (backoff on real time) and Resumed; forever, until the subscription ends. */
      const reconnecting: Effect.Effect<never> = Effect.gen(function*() {
        while (true) {
          yield* Deferred.await(dead)
          pending.lost()
          yield* Scope.close(session, Exit.void)
          let wait = BACKOFF_FIRST_MILLIS
          while (true) {
            session = yield* Scope.fork(subscription, ExecutionStrategy.sequential)
            const attempt = yield* Effect.either(connectIn(session, Client, pending))
            if (attempt._tag === "Right") {
              dead = attempt.right.dead
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
        Effect.zipRight(
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
            Effect.catchAllCause((cause) => Effect.logDebug("effect-kv: the change feed's expiry poll failed", cause))
          )
        )
      )

      // interruptible: a subscriber may open the feed inside an uninterruptible region (the front's acquire)
      yield* Effect.forkIn(Effect.interruptible(reconnecting), subscription)
      yield* Effect.forkIn(Effect.interruptible(polling), subscription)
    }).pipe(Effect.exit)
    if (Exit.isFailure(started)) {
      yield* Scope.close(subscription, Exit.void)
      return yield* Effect.failCause(started.cause)
    }
    // the store's scope closing ends the subscription's stream: the front tells its watchers
    yield* Scope.addFinalizer(subscription, Effect.sync(pending.end))
    return Stream.repeatEffectChunkOption(pending.take)
  })

  /** `Driver.syncChanges`: the marker goes out on a pooled connection, after the caller's acknowledged writes. */
  const sync = (token: string): Effect.Effect<void, DriverError> =>
    onPool("SELECT pg_notify($1, $2)", [channel, syncPayload(token)]).pipe(
      Effect.mapError((error) => feedError("could not sync with the change feed", error)),
      Effect.asVoid
    )

  const close = Effect.suspend(() => {
    closed = true
    return Effect.forEach(Array.from(subscriptions), (scope) => Scope.close(scope, Exit.void), { discard: true })
  })

  return { changes, sync, close }
}
