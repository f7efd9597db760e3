/**
 * The PostgreSQL driver: `KvStore.Driver` on a table through `@effect/sql`.
 * The schema, the clock and the locking are described in `store.ts`.
 */
import type * as SqlClient from "effect/sql/SqlClient"
import { SqlError } from "effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type { Driver, Entry, RateLimitRequest, Write } from "../../KvDriver.js"
import { DriverError } from "../../KvStore.js"
import { NOT_A_COUNTER, parseCounter } from "../../core/counter.js"
import { keyHash } from "../../core/hash.js"
import { INVALID_STATE, rateLimitAnswerOf } from "../../core/rateLimit.js"
import { rateLimit4AnswerOf } from "../../core/rateLimit4.js"
import type { RateLimit4Answer, RateLimit4Request } from "../../core/rateLimit4.js"
import type { RateLimit4Statements } from "../../core/rateLimit4Sql.js"
import type { RateLimit4Driver } from "../rateLimit4Driver.js"
import { markFinal } from "../finalPage.js"
import { makeKeyedLock } from "../keyedLock.js"
import { makeCoalescer, RETRY } from "./coalesce.js"
import type { Retry } from "./coalesce.js"
import { CommitFailure, connectionFault, connectionRefused, makeConnections, sqlErrorDetail } from "./connection.js"
import type { Lock, Row } from "./connection.js"
import { MAX_READ_BYTES, prefixUpperBound } from "../../core/postgresSql.js"
import type { Statements } from "../../core/postgresSql.js"

/** Rows deleted per cleanup statement. */
export const CLEANUP_BATCH = 1000

/** Keys per statement of getMany, setMany and deleteMany, and rows per deletePrefix batch. */
export const BATCH = 1000

/**
 * Key locks one `setMany` takes in its transaction; a larger one locks the
 * table instead (EXCLUSIVE: writers of the table wait for it, readers do not),
 * as databases escalate many row locks to one table lock.
 *
 * Advisory locks live in PostgreSQL's shared lock table, sized
 * `max_locks_per_transaction` (64 by default) × the server's connections for
 * the whole server; when it is full, any session that needs a lock, on any
 * table, fails with "out of shared memory". Measured (PostgreSQL 18, defaults
 * but max_connections = 200): one transaction could take 20,000 advisory locks,
 * not 30,000; a 40,000-key `setMany` failed, and made other sessions fail with
 * it. 64 keeps every transaction of ours within the average the table is sized
 * for, however many of our connections run at once; above that a batch costs
 * one slot. The price: a `setMany` of more than 64 keys holds back the table's
 * writers while it runs (it is one statement per 1000 keys).
 *
 * Not escalated (yet): statements that each hold up to `BATCH` key locks only
 * until they end — the coalesced set/increment/delete/setIfAbsent/expire statements (try-locks; at most
 * `inFlightBudget` of them per pool), `deleteMany` per 1000 keys and
 * `deletePrefix` per 1000 rows. One pool of 10 holds at most about 10,000 at
 * once only if all of them run such statements together; inside a caller's
 * transaction the locks of `deleteMany` and `deletePrefix` add up.
 */
export const KEY_LOCKS_PER_TRANSACTION = 64

/** Bytes of values per setMany statement (sent as hex text, so twice that): a larger batch takes more statements. */
const BATCH_BYTES = 32 * 1024 * 1024

interface Hashed {
  readonly key: string
  readonly hash: bigint
}

const byHash = (a: Hashed, b: Hashed): number => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0)

/** Items that carry their key's hash as decimal text (as sent), in key_hash order: the order multi-key locks are taken in. */
const inHashOrder = <I extends { readonly hash: string }>(items: ReadonlyArray<I>): Array<I> =>
  items.map((item) => ({ item, hash: BigInt(item.hash) })).sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0))
    .map((entry) => entry.item)

/** The last item of each key, in the order of the keys' last appearance. */
const lastPerKey = <I extends { readonly key: string }>(items: ReadonlyArray<I>): Array<I> => {
  const last = new Map<string, I>()
  for (const item of items) {
    last.delete(item.key)
    last.set(item.key, item)
  }
  return Array.from(last.values())
}

/** Consecutive slices of at most `BATCH` items and (with `size`) about `BATCH_BYTES` bytes. */
const chunksOf = <A>(items: ReadonlyArray<A>, size?: (item: A) => number): Array<Array<A>> => {
  const chunks: Array<Array<A>> = []
  let chunk: Array<A> = []
  let bytes = 0
  for (const item of items) {
    const itemBytes = size === undefined ? 0 : size(item)
    if (chunk.length >= BATCH || (chunk.length > 0 && bytes + itemBytes > BATCH_BYTES)) {
      chunks.push(chunk)
      chunk = []
      bytes = 0
    }
    chunk.push(item)
    bytes += itemBytes
  }
  if (chunk.length > 0) chunks.push(chunk)
  return chunks
}

/**
 * What a lost connection (see `connectionFault`) means for the caller:
 * - `"write"`: a statement that writes, sent on its own: it may have committed,
 *   so its outcome is unknown, and it is never re-run (an increment would count twice);
 * - `"rolledBack"`: a statement of a transaction before its COMMIT: nothing was written;
 * - `"read"`: a read, already tried again (`readAgainIfLost`).
 */
type AfterLoss = "write" | "rolledBack" | "read"

const LOST = "the connection to PostgreSQL was lost"

/** What went wrong, in words. */
const describeSqlError = (error: SqlError, afterLoss: AfterLoss): string => {
  const { detail } = sqlErrorDetail(error)
  switch (connectionFault(error)) {
    case undefined:
      return detail
    case "unreachable":
      return `${LOST} (server restart, killed backend or network) before the statement was sent: ${detail}`
    case "lost":
      return afterLoss === "write"
        ? `${LOST} after the statement was sent: its outcome is unknown (it may or may not have been written): ${detail}`
        : afterLoss === "rolledBack"
        ? `${LOST} before the transaction committed: nothing was written: ${detail}`
        : `${LOST} (server restart, killed backend or network), again on a fresh connection: ${detail}`
  }
}

const toDriverError = (error: SqlError, afterLoss: AfterLoss): DriverError =>
  new DriverError({ reason: "Backend", message: describeSqlError(error, afterLoss), cause: error })

/**
 * `SqlError` failures, and `SqlError` defects (a failed RELEASE SAVEPOINT in
 * `sql.withTransaction`), become `DriverError`, a lost connection read as
 * `afterLoss` says; a failed COMMIT of our own transaction leaves the outcome
 * unknown when its connection was lost. Other failures pass untouched: they
 * are the update function's, carried by the front.
 */
const backend = <A, E, R>(
  effect: Effect.Effect<A, E | SqlError | CommitFailure, R>,
  afterLoss: AfterLoss = "write"
): Effect.Effect<A, Exclude<E, SqlError | CommitFailure> | DriverError, R> =>
  effect.pipe(
    Effect.catchDefect((defect) =>
      defect instanceof SqlError ? Effect.fail(toDriverError(defect, afterLoss)) : Effect.die(defect)
    ),
    Effect.catchIf(
      (error): error is SqlError | CommitFailure => error instanceof SqlError || error instanceof CommitFailure,
      (error) => Effect.fail(error instanceof CommitFailure ? toDriverError(error.error, "write") : toDriverError(error, afterLoss))
    )
  ) as Effect.Effect<A, Exclude<E, SqlError | CommitFailure> | DriverError, R>

/**
 * One turn of Node's event loop (not the Effect `Clock`, which may be a
 * `TestClock`): the pool reads what the sockets of its other killed
 * connections say, and drops them, before the read runs again.
 */
const eventLoopTurn: Effect.Effect<void> = Effect.callback<void>((resume) => {
  const timer = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(timer))
})

/**
 * A read is idempotent, so when its connection was lost it runs again. After
 * a failover or a restart every pooled connection may be dead at once, and
 * node-postgres hands each out once more before it notices the closed socket
 * (each then fails at once, without a round trip, and leaves the pool). So a
 * read runs again up to `poolSize` times while its connection is found dead:
 * the last attempt is on a fresh connection. A connection that cannot be made
 * (the server down) is tried once more only: that failure reaches the caller.
 */
const readAgainIfLost = (poolSize: number) => <A>(read: Effect.Effect<A, SqlError>): Effect.Effect<A, SqlError> => {
  const attempt = (retriesLeft: number, refused: boolean): Effect.Effect<A, SqlError> =>
    Effect.catchIf(
      read,
      (error) => retriesLeft > 0 && !refused && connectionFault(error) !== undefined,
      (error) => Effect.andThen(eventLoopTurn, attempt(retriesLeft - 1, connectionRefused(error)))
    )
  return attempt(poolSize, false)
}

/**
 * What the failure of a coalesced write statement means for its callers. A
 * statement whose connection was lost after it was sent may have committed:
 * re-running its items would apply them twice (an increment counted twice,
 * and acknowledged), so each caller gets the failure, which says the outcome
 * is unknown. A refusal the server reported committed nothing, so each item
 * runs alone and fails, or not, on its own. A defect proves nothing either way.
 */
const writeBatchFailed = (cause: Cause.Cause<unknown>): Exit.Exit<never, DriverError> | Retry => {
  const failure = Cause.findErrorOption(cause)
  if (Option.isSome(failure) && failure.value instanceof DriverError) {
    return connectionFault(failure.value.cause) === "lost" ? Exit.fail(failure.value) : RETRY
  }
  const defect = Cause.squash(cause)
  return Exit.fail(
    new DriverError({
      reason: "Backend",
      message: `the batch statement ended with ${defect instanceof Error ? defect.message : "a defect"}: ` +
        "its outcome is unknown (it may or may not have been written)",
      cause: defect
    })
  )
}

/** The bytes of a row, or the refusal (not read) when larger than any value effect-kv writes. */
const bytesOrError = (row: Row): Uint8Array | DriverError => {
  const value = row["value"]
  if (value instanceof Uint8Array) return value
  return new DriverError({
    reason: "Backend",
    message: value === null && Number(row["size"]) > MAX_READ_BYTES
      ? `the stored value has ${row["size"]} bytes, more than the ${MAX_READ_BYTES} any effect-kv store writes; ` +
        "it was not read"
      : `expected a BYTEA value, got ${typeof value}`
  })
}

const bytesOf = (row: Row): Effect.Effect<Uint8Array, DriverError> => {
  const bytes = bytesOrError(row)
  return bytes instanceof DriverError ? Effect.fail(bytes) : Effect.succeed(bytes)
}

/** Bytes of values per coalesced `set` statement (sent as hex text in an array): more wait for the next one. */
const SET_BATCH_BYTES = 4 * 1024 * 1024

/** The pool's size, when the client says (`PgClient`'s `config.maxConnections`); node-postgres's default otherwise. */
const poolSize = (sql: SqlClient.SqlClient): number => {
  const max = (sql as unknown as { readonly config?: { readonly maxConnections?: unknown } }).config?.maxConnections
  return typeof max === "number" && Number.isSafeInteger(max) && max > 0 ? max : 10
}

/**
 * Coalesced statements in flight at once. Fewer statements carry more keys
 * each: on a pool of 10 with 50 callers, a budget of 2–3 served gets and sets
 * in 35–45 µs each where a budget of 10 (4 keys a statement) took 55–80 µs,
 * and the JavaScript side, not the server, was the limit. A quarter of the
 * pool leaves connections for updates and the application.
 */
const inFlightBudget = (poolSize: number): number => Math.max(1, Math.ceil(poolSize / 4))

interface IncrementItem {
  readonly key: string
  readonly hash: string
  readonly by: number
  readonly ttl: number | null
}

interface TtlItem {
  readonly key: string
  readonly hash: string
  readonly ttl: number | null
}

interface SetItem {
  readonly key: string
  readonly hash: string
  readonly value: Uint8Array
  readonly ttl: number | null
}

const ttlParam = (ttl: number | undefined): number | null => ttl ?? null

/** Statements and transactions before `backend` makes their failures `DriverError`. */
type Sql<A> = Effect.Effect<A, SqlError | DriverError | CommitFailure>

/**
 * The driver on `statements`' table. `feed`: the table's change feed (see
 * `changes.ts`), when the store notifies and can listen.
 */
export const makeDriver = (
  sql: SqlClient.SqlClient,
  statements: Statements,
  rateLimit4Statements: RateLimit4Statements,
  feed?: Pick<Driver, "changes" | "syncChanges">
): Driver & RateLimit4Driver => {
  const { ifInTransaction, inTransaction, liveTransaction, onPool, run, withTransaction } = makeConnections(sql)
  const readAgain = readAgainIfLost(poolSize(sql))
  /** A read as the caller's answer: run again past dead connections, then its failure as `DriverError`. */
  const backendRead = <A>(read: Effect.Effect<A, SqlError>): Effect.Effect<A, DriverError> => backend(readAgain(read), "read")
  const hashOf = (key: string): string => keyHash(key).toString()

  /**
   * `inTransaction` as the driver's: a lost connection before COMMIT wrote
   * nothing; a failed COMMIT (a `CommitFailure`, for `backend`) may have.
   */
  const ownTransaction = <A, E, R>(lock: Lock | undefined, body: Effect.Effect<A, E, R>) =>
    Effect.catchIf(
      inTransaction(lock, body),
      (error): error is SqlError => error instanceof SqlError,
      (error) => Effect.fail(toDriverError(error, "rolledBack"))
    ) as Effect.Effect<A, Exclude<E, SqlError> | DriverError | CommitFailure, R>

  const fromGetRows = (rows: ReadonlyArray<Row>) =>
    rows.length === 0 ? Effect.succeed(Option.none()) : Effect.map(bytesOf(rows[0]!), Option.some)
  const getWith = (runner: typeof run) => (key: string) => Effect.flatMap(backendRead(runner(statements.get, [key])), fromGetRows)
  const getOnPool = getWith(onPool)
  const hasOnPool = (key: string) => backendRead(Effect.map(onPool(statements.has, [key]), (rows) => rows.length > 0))
  const setOnPool = (item: SetItem) =>
    backend(Effect.asVoid(onPool(statements.set, [item.hash, item.key, item.value, item.ttl])))

  // --- coalescing (see coalesce.ts): outside a caller's transaction only ---

  const coalescer = makeCoalescer(inFlightBudget(poolSize(sql)))

  /** Distinct keys of `items`, in first appearance. */
  const distinctKeys = <I>(items: ReadonlyArray<I>, keyOf: (item: I) => string): Array<string> =>
    Array.from(new Set(items.map(keyOf)))

  // a read batch that fails is retried item by item (the default `batchFailed`), each past dead connections
  const getLane = coalescer.lane<string, Option.Option<Uint8Array>, DriverError>({
    one: getOnPool,
    alone: getOnPool,
    maxItems: BATCH,
    many: (keys) =>
      Effect.map(backend(onPool(statements.getMany, [distinctKeys(keys, (key) => key)]), "read"), (rows) => {
        const found = new Map<string, Row>()
        for (const row of rows) found.set(String(row["key"]), row)
        return keys.map((key) => {
          const row = found.get(key)
          if (row === undefined) return Exit.succeed(Option.none())
          const bytes = bytesOrError(row)
          return bytes instanceof DriverError ? Exit.fail(bytes) : Exit.succeed(Option.some(bytes))
        })
      })
  })

  const hasLane = coalescer.lane<string, boolean, DriverError>({
    one: hasOnPool,
    alone: hasOnPool,
    maxItems: BATCH,
    many: (keys) =>
      Effect.map(backend(onPool(statements.hasMany, [distinctKeys(keys, (key) => key)]), "read"), (rows) => {
        const live = new Set(rows.map((row) => String(row["key"])))
        return keys.map((key) => Exit.succeed(live.has(key)))
      })
  })

  /**
   * Sets write only keys whose lock they get without waiting; a key whose
   * update is in flight comes back `RETRY` and its caller waits with `set`.
   * Two queued sets of one key are concurrent calls: the later one's value is
   * written, and both are answered once it is.
   */
  // Writes that must wait for a key's lock wait here one per key, so they hold one pooled connection per key, not one each.
  const waitingWrites = makeKeyedLock()

  const setLane = coalescer.lane<SetItem, void, DriverError>({
    one: (item) =>
      backend(Effect.map(
        onPool(statements.setIfFreeReturning, [item.hash, item.key, item.value, item.ttl]),
        (rows) => (rows.length > 0 ? undefined : RETRY)
      )),
    alone: (item) => waitingWrites.withLock(item.key, setOnPool(item)),
    batchFailed: writeBatchFailed,
    maxItems: BATCH,
    sizeOf: (item) => item.value.length,
    maxBytes: SET_BATCH_BYTES,
    many: (items) => {
      const last = new Map<string, SetItem>()
      for (const item of items) {
        last.delete(item.key)
        last.set(item.key, item)
      }
      const rows = Array.from(last.values())
      return Effect.map(
        backend(onPool(statements.setManyIfFree, [
          rows.map((item) => item.hash),
          rows.map((item) => item.key),
          rows.map((item) => item.value),
          rows.map((item) => item.ttl)
        ])),
        (written) => {
          const done = new Set(written.map((row) => String(row["key"])))
          return items.map((item) => (done.has(item.key) ? Exit.void : RETRY))
        }
      )
    }
  })

  /** `coalesced` outside a live transaction; inside one, the single statement joins it. */
  const unlessInTransaction = <I, A>(
    inTransaction: (item: I) => Effect.Effect<A, DriverError>,
    coalesced: (item: I) => Effect.Effect<A, DriverError>
  ) =>
  (item: I): Effect.Effect<A, DriverError> => ifInTransaction(() => inTransaction(item), () => coalesced(item))

  const get = unlessInTransaction(getWith(run), getLane.run)
  const has = unlessInTransaction(
    (key: string) => backendRead(Effect.map(run(statements.has, [key]), (rows) => rows.length > 0)),
    hasLane.run
  )
  const setItem = unlessInTransaction(
    (item: SetItem) => backend(Effect.asVoid(run(statements.set, [item.hash, item.key, item.value, item.ttl]))),
    setLane.run
  )

  /** A write statement that runs at once unless an update of the key is in flight; then `locked` runs after it. */
  const unlessLocked = (
    free: Effect.Effect<ReadonlyArray<Row>, SqlError>,
    locked: (hash: string) => Effect.Effect<ReadonlyArray<Row>, SqlError | DriverError | CommitFailure>,
    hash: string
  ) =>
    Effect.flatMap(free, (rows) =>
      rows[0]?.["free"] === true
        ? Effect.succeed(rows[0])
        : Effect.map(locked(hash), (lockedRows) => lockedRows[0]))

  /**
   * Waits for the key's lock in a transaction of its own, then runs `statement`
   * as a fresh statement, whose snapshot sees what the lock's holder committed.
   */
  const afterLock = (hash: string, statement: string, params: ReadonlyArray<unknown>) =>
    Effect.flatMap(liveTransaction, (transaction): Sql<ReadonlyArray<Row>> =>
      Option.isSome(transaction)
        ? Effect.andThen(run(statements.lockKey, [hash]), run(statement, params))
        : ownTransaction([statements.lockKey, [hash]], run(statement, params)))

  const deleteWith = (runner: typeof run) => (key: string) => {
    const hash = hashOf(key)
    return backend(
      unlessLocked(runner(statements.deleteIfFree, [hash, key]), (h) => afterLock(h, statements.deleteLocked, [key]), hash)
    ).pipe(Effect.map((row) => Number(row?.["deleted"] ?? 0) > 0))
  }

  /**
   * Deletes of keys whose lock they get without waiting go out together; a
   * key whose update is in flight comes back `RETRY` and its caller waits
   * alone, as `delete` does. Two queued deletes of one key are concurrent
   * calls: the first answers whether it removed the entry, the later ones
   * `false` (it was gone once the first had removed it).
   */
  const deleteLane = coalescer.lane<string, boolean, DriverError>({
    one: (key) =>
      backend(Effect.map(
        onPool(statements.deleteIfFree, [hashOf(key), key]),
        (rows) => (rows[0]?.["free"] === true ? Number(rows[0]["deleted"] ?? 0) > 0 : RETRY)
      )),
    alone: (key) => waitingWrites.withLock(key, deleteWith(onPool)(key)),
    batchFailed: writeBatchFailed,
    maxItems: BATCH,
    many: (keys) => {
      const sorted = distinctKeys(keys, (key) => key).map((key) => ({ key, hash: keyHash(key) })).sort(byHash)
      return Effect.map(
        backend(onPool(statements.deleteEachIfFree, [sorted.map((e) => e.hash.toString()), sorted.map((e) => e.key)])),
        (rows) => {
          const outcome = new Map<string, boolean | Retry>()
          for (const row of rows) outcome.set(String(row["key"]), row["free"] === true ? row["deleted"] === true : RETRY)
          const answered = new Set<string>()
          return keys.map((key) => {
            const result = outcome.get(key) ?? RETRY
            if (result === RETRY) return RETRY
            // a later delete of the same key in the batch found it already gone
            const first = !answered.has(key)
            answered.add(key)
            return Exit.succeed(first && result)
          })
        }
      )
    }
  })

  const delete_ = unlessInTransaction(deleteWith(run), deleteLane.run)

  const expireWith = (runner: typeof run) => (item: TtlItem) =>
    backend(
      unlessLocked(
        runner(statements.expireIfFree, [item.hash, item.key, item.ttl]),
        (h) => afterLock(h, statements.expireLocked, [item.key, item.ttl]),
        item.hash
      )
    ).pipe(Effect.map((row) => Number(row?.["changed"] ?? 0) > 0))

  /**
   * Expires of keys whose lock they get without waiting go out together; a
   * key whose update is in flight comes back `RETRY` and its caller waits
   * alone, as `expire` does. Queued expires of one key are concurrent calls
   * run one after another at once: each answers whether the key was live,
   * and the last one's TTL is the one stored (one write, one notification).
   */
  const expireLane = coalescer.lane<TtlItem, boolean, DriverError>({
    one: (item) =>
      backend(Effect.map(
        onPool(statements.expireIfFree, [item.hash, item.key, item.ttl]),
        (rows) => (rows[0]?.["free"] === true ? Number(rows[0]["changed"] ?? 0) > 0 : RETRY)
      )),
    alone: (item) => waitingWrites.withLock(item.key, expireWith(onPool)(item)),
    batchFailed: writeBatchFailed,
    maxItems: BATCH,
    many: (items) => {
      const sorted = inHashOrder(lastPerKey(items))
      return Effect.map(
        backend(onPool(statements.expireEachIfFree, [
          sorted.map((item) => item.hash),
          sorted.map((item) => item.key),
          sorted.map((item) => item.ttl)
        ])),
        (rows) => {
          const outcome = new Map<string, boolean | Retry>()
          for (const row of rows) outcome.set(String(row["key"]), row["free"] === true ? row["changed"] === true : RETRY)
          return items.map((item) => {
            const result = outcome.get(item.key) ?? RETRY
            return result === RETRY ? RETRY : Exit.succeed(result)
          })
        }
      )
    }
  })

  const expireItem = unlessInTransaction(expireWith(run), expireLane.run)
  const expire = (key: string, ttl: number | undefined) => expireItem({ key, hash: hashOf(key), ttl: ttlParam(ttl) })

  const setIfAbsentWith = (runner: typeof run) => (item: SetItem) =>
    backend(Effect.map(runner(statements.setIfAbsent, [item.hash, item.key, item.value, item.ttl]), (rows) => rows.length > 0))

  /**
   * setIfAbsent of keys whose lock they get without waiting go out together;
   * a key whose update is in flight comes back `RETRY` and its caller waits
   * alone with the single statement. Queued calls of one key are concurrent
   * calls run one after another in arrival order: only the first can find
   * the key absent, so only its value is sent, and the later ones answer
   * `false` (the key is live once the first wrote it, or was already).
   */
  const setIfAbsentLane = coalescer.lane<SetItem, boolean, DriverError>({
    one: (item) =>
      backend(Effect.map(
        onPool(statements.setIfAbsentIfFree, [item.hash, item.key, item.value, item.ttl]),
        (rows) => (rows[0]?.["free"] === true ? Number(rows[0]["written"] ?? 0) > 0 : RETRY)
      )),
    alone: (item) => waitingWrites.withLock(item.key, setIfAbsentWith(onPool)(item)),
    batchFailed: writeBatchFailed,
    maxItems: BATCH,
    sizeOf: (item) => item.value.length,
    maxBytes: SET_BATCH_BYTES,
    many: (items) => {
      const first = new Map<string, SetItem>()
      for (const item of items) if (!first.has(item.key)) first.set(item.key, item)
      const sorted = inHashOrder(Array.from(first.values()))
      return Effect.map(
        backend(onPool(statements.setIfAbsentEachIfFree, [
          sorted.map((item) => item.hash),
          sorted.map((item) => item.key),
          sorted.map((item) => item.value),
          sorted.map((item) => item.ttl)
        ])),
        (rows) => {
          const outcome = new Map<string, boolean | Retry>()
          for (const row of rows) outcome.set(String(row["key"]), row["free"] === true ? row["written"] === true : RETRY)
          return items.map((item) => {
            const result = outcome.get(item.key) ?? RETRY
            if (result === RETRY) return RETRY
            return Exit.succeed(first.get(item.key) === item && result)
          })
        }
      )
    }
  })

  const setIfAbsentItem = unlessInTransaction(setIfAbsentWith(run), setIfAbsentLane.run)
  const setIfAbsent = (key: string, value: Uint8Array, ttl: number | undefined) =>
    setIfAbsentItem({ key, hash: hashOf(key), value, ttl: ttlParam(ttl) })

  const writeRow = (key: string, hash: string, write: Write) => {
    if (write._tag === "Keep") return Effect.void
    return write.ttl === "unchanged"
      ? run(statements.upsertKeepExpiry, [hash, key, write.value])
      : run(statements.upsert, [hash, key, write.value, ttlParam(write.ttl)])
  }

  /**
   * Atomic read-modify-write: the key's advisory lock and the row `FOR UPDATE`
   * in one statement, `f`, the write, and COMMIT — four round trips with BEGIN,
   * as the Effect 3 line's (which joins BEGIN and the lock instead; this client
   * has no simple-query protocol). That statement's snapshot predates its lock
   * wait: `FOR UPDATE` follows a row the previous holder updated to its latest
   * version, but a row it inserted is not seen, so no row back is read again by
   * a new statement (a fifth round trip, for keys that were missing). Inside a
   * caller's transaction it joins it through a savepoint, and the key stays
   * locked until that ends.
   */
  const modify: Driver["modify"] = <A, E, R>(
    key: string,
    f: (current: Option.Option<Entry>) => Effect.Effect<readonly [A, Write], E, R>
  ) => {
    const hash = hashOf(key)
    const body = run(statements.lockAndReadForUpdate, [hash, key]).pipe(
      Effect.flatMap((rows) => rows.length > 0 ? Effect.succeed(rows) : run(statements.readForUpdate, [key])),
      Effect.flatMap((rows) => {
        const row = rows[0]
        if (row === undefined || row["live"] !== true) return Effect.succeed(Option.none<Entry>())
        const expiresIn = row["expires_in"] === null ? undefined : Number(row["expires_in"])
        return Effect.map(bytesOf(row), (value) => Option.some<Entry>({ value, expiresIn }))
      }),
      Effect.flatMap(f),
      Effect.flatMap(([result, write]) => Effect.as(writeRow(key, hash, write), result))
    )
    return backend(
      ifInTransaction<A, E | SqlError | DriverError | CommitFailure, R>(
        () => sql.withTransaction(body),
        () => ownTransaction(undefined, body)
      )
    ) as Effect.Effect<A, E | DriverError, R>
  }

  const keys = (prefix: string) => {
    const upper = prefix === "" ? undefined : prefixUpperBound(prefix)
    const query = prefix === ""
      ? run(statements.keysAll, [])
      : upper === undefined
      ? run(statements.keysFrom, [prefix])
      : run(statements.keysInRange, [prefix, upper])
    return backendRead(Effect.map(query, (rows) => rows.map((row) => String(row["key"]))))
  }

  /** Runs `batch` until a batch comes back short or `mayGoOn` says stop; the total. */
  const deleteInBatches = (batch: Effect.Effect<ReadonlyArray<Row>, SqlError>, mayGoOn: (row: Row | undefined) => boolean) => {
    const loop = (total: number): Effect.Effect<number, SqlError> =>
      Effect.flatMap(batch, (rows) => {
        const n = Number(rows[0]?.["n"] ?? 0)
        return n >= CLEANUP_BATCH && mayGoOn(rows[0]) ? loop(total + n) : Effect.succeed(total + n)
      })
    return backend(loop(0))
  }

  const incrementWith = (runner: typeof run) => (item: IncrementItem) =>
    backend(runner(statements.increment, [item.hash, item.key, item.by, item.ttl])).pipe(
      Effect.flatMap((rows) => {
        if (rows.length > 0) return Effect.succeed(Number(rows[0]!["n"]))
        // refused by the statement: say why (the row is read again only on this rare path)
        return Effect.flatMap(get(item.key), (found) => {
          const stored = Option.isSome(found) ? parseCounter(found.value) : 0
          return Effect.fail(
            new DriverError({
              reason: "InvalidArgument",
              message: stored === undefined ? NOT_A_COUNTER : `the result ${stored} + ${item.by} is outside ±(2^53 − 1)`
            })
          )
        })
      })
    )

  /**
   * Increments of distinct keys that get their lock without waiting go out
   * together. A second increment of a key already in the batch, a key whose
   * lock is held, and a refused one (not a counter, unsafe result) each run
   * alone, which waits for the lock and says why it refuses.
   */
  const incrementMany = (items: ReadonlyArray<IncrementItem>) => {
    const seen = new Set<string>()
    const first: Array<IncrementItem> = []
    for (const item of items) {
      if (seen.has(item.key)) continue
      seen.add(item.key)
      first.push(item)
    }
    return Effect.map(
      backend(onPool(statements.incrementManyIfFree, [
        first.map((item) => item.hash),
        first.map((item) => item.key),
        first.map((item) => item.by),
        first.map((item) => item.ttl)
      ])),
      (rows) => {
        const done = new Map<string, number>()
        for (const row of rows) done.set(String(row["key"]), Number(row["n"]))
        const sent = new Set(first)
        return items.map((item) => {
          const n = sent.has(item) ? done.get(item.key) : undefined
          return n === undefined ? RETRY : Exit.succeed(n)
        })
      }
    )
  }

  const incrementAlone = incrementWith(onPool)
  const incrementLane = coalescer.lane<IncrementItem, number, DriverError>({
    one: (item) =>
      backend(Effect.map(
        onPool(statements.incrementIfFree, [item.hash, item.key, item.by, item.ttl]),
        (rows) => (rows.length > 0 ? Number(rows[0]!["n"]) : RETRY)
      )),
    many: incrementMany,
    alone: (item) => waitingWrites.withLock(item.key, incrementAlone(item)),
    batchFailed: writeBatchFailed,
    maxItems: BATCH
  })
  const incrementItem = unlessInTransaction(incrementWith(run), incrementLane.run)

  const increment = (key: string, by: number, ttl: number | undefined) =>
    incrementItem({ key, hash: hashOf(key), by, ttl: ttlParam(ttl) })

  const getMany = (keys: ReadonlyArray<string>) =>
    Effect.forEach(chunksOf(keys), (chunk) => backendRead(run(statements.getMany, [chunk])), { concurrency: 1 }).pipe(
      Effect.flatMap((results) => {
        const found = new Map<string, Row>()
        for (const rows of results) for (const row of rows) found.set(String(row["key"]), row)
        return Effect.forEach(keys, (key) => {
          const row = found.get(key)
          return row === undefined ? Effect.succeedNone : Effect.map(bytesOf(row), Option.some)
        })
      })
    )

  /**
   * All or nothing. Up to `KEY_LOCKS_PER_TRANSACTION` keys: one statement that
   * takes its keys' locks in key_hash order (so two batches never wait for each
   * other in a cycle). More: one transaction (or the caller's) that locks the
   * table (`lockTable`, one lock-table slot however many keys), then writes
   * `BATCH` keys per statement. Once it holds the table lock no writer of the
   * table is running or can start, so the keys' locks are not needed: an
   * update that holds a key's lock has not read its row yet (it reads with
   * `FOR UPDATE`, which waits for the table lock) and then sees the batch's
   * value; the try-lock statements and `deletePrefix` wait for the table lock
   * at their start. The batch waits for nothing once it holds the table, so it
   * is in no deadlock of its own making.
   */
  const setMany = (entries: ReadonlyArray<readonly [string, Uint8Array]>, ttl: number | undefined) => {
    const sorted = entries.map(([key, value]) => ({ key, value, hash: keyHash(key) })).sort(byHash)
    const statement = (text: string) => (chunk: ReadonlyArray<Hashed & { readonly value: Uint8Array }>) =>
      run(text, [
        chunk.map((e) => e.hash.toString()),
        chunk.map((e) => e.key),
        chunk.map((e) => e.value),
        ttlParam(ttl)
      ])
    const chunks = chunksOf(sorted, (entry) => entry.value.length)
    const escalate = sorted.length > KEY_LOCKS_PER_TRANSACTION
    if (chunks.length === 1 && !escalate) return backend(Effect.asVoid(statement(statements.setMany)(chunks[0]!)))
    // a few keys of large values: several statements, each taking its keys' locks (in one ascending order)
    const all = Effect.forEach(chunks, statement(escalate ? statements.setManyLocked : statements.setMany), { discard: true })
    return backend(
      Effect.flatMap(liveTransaction, (transaction): Sql<void> =>
        Option.isSome(transaction)
          ? withTransaction(escalate ? Effect.andThen(run(statements.lockTable, []), all) : all)
          : ownTransaction(escalate ? [statements.lockTable, []] : undefined, all))
    )
  }

  /**
   * Per statement of up to `BATCH` keys, like `delete`: at once when no update
   * of any of them is in flight, else in a transaction that waits for their
   * locks first. Not all or nothing across statements (nor promised to be).
   */
  const deleteMany = (keys: ReadonlyArray<string>) => {
    const sorted = keys.map((key) => ({ key, hash: keyHash(key) })).sort(byHash)
    return backend(
      Effect.reduce(chunksOf(sorted), () => 0, (total: number, chunk) => {
        const hashes = chunk.map((e) => e.hash.toString())
        const chunkKeys = chunk.map((e) => e.key)
        return run(statements.deleteManyIfFree, [hashes, chunkKeys]).pipe(
          Effect.flatMap((rows): Sql<ReadonlyArray<Row>> =>
            rows[0]?.["free"] === true ? Effect.succeed(rows) : Effect.flatMap(liveTransaction, (transaction): Sql<ReadonlyArray<Row>> =>
              Option.isSome(transaction)
                ? Effect.andThen(run(statements.lockKeys, [hashes]), run(statements.deleteManyLocked, [chunkKeys]))
                : ownTransaction([statements.lockKeys, [hashes]], run(statements.deleteManyLocked, [chunkKeys])))
          ),
          Effect.map((rows) => total + Number(rows[0]?.["deleted"] ?? 0))
        )
      })
    )
  }

  /** The statements for `prefix`'s range and their leading parameters. */
  const rangeOf = (prefix: string) => {
    const upper = prefix === "" ? undefined : prefixUpperBound(prefix)
    return upper === undefined
      ? { ranged: statements.ranged.withoutUpper, params: [prefix] }
      : { ranged: statements.ranged.withUpper, params: [prefix, upper] }
  }

  /**
   * Batch after batch of up to `BATCH` live keys in key order (keyset), each one
   * statement that waits for the locks of its keys (in key_hash order) and
   * deletes them: never more than `BATCH` rows and locks held at once, and an
   * update in flight is waited for, then its result deleted — never skipped.
   */
  const deletePrefix = (prefix: string) => {
    const { params, ranged } = rangeOf(prefix)
    const loop = (after: string, total: number): Effect.Effect<number, SqlError> =>
      Effect.flatMap(run(ranged.deletePrefixBatch, [...params, after, BATCH]), (rows) => {
        const row = rows[0]
        const n = total + Number(row?.["n"] ?? 0)
        return Number(row?.["seen"] ?? 0) >= BATCH && typeof row?.["last"] === "string" ? loop(row["last"], n) : Effect.succeed(n)
      })
    return backend(loop("", 0))
  }

  const count = (prefix: string) => {
    const { params, ranged } = rangeOf(prefix)
    return backendRead(Effect.map(run(ranged.count, params), (rows) => Number(rows[0]?.["n"] ?? 0)))
  }

  const keysPage = (prefix: string, after: string | undefined, limit: number) => {
    const { params, ranged } = rangeOf(prefix)
    return backendRead(Effect.map(run(ranged.keysPage, [...params, after ?? "", limit]), (rows) => rows.map((row) => String(row["key"]))))
  }

  /** Bounded in count and, in the statement, in bytes: values past the bound are not read. */
  const entriesPage = (prefix: string, after: string | undefined, limit: number, maxBytes = Number.MAX_SAFE_INTEGER) => {
    const { params, ranged } = rangeOf(prefix)
    return backendRead(run(ranged.entriesPage, [...params, after ?? "", limit, maxBytes])).pipe(
      Effect.flatMap((rows) =>
        Effect.map(
          Effect.forEach(rows, (row) => Effect.map(bytesOf(row), (value) => [String(row["key"]), value] as const)),
          // the last page: short of the limit, and nothing cut by bytes
          (entries) => rows.length < limit && rows.length === Number(rows[0]?.["seen"] ?? 0) ? markFinal(entries) : entries
        )
      )
    )
  }

  /** One statement on the database's clock, under the key's lock (see `rateLimitStatement` in postgresSql.ts). */
  const rateLimit = (key: string, request: RateLimitRequest) => {
    const statement = request.algorithm === "fixed-window"
      ? run(statements.rateLimitFixedWindow, [hashOf(key), key, request.tokens, request.refillMillis, request.limit ?? null])
      : run(statements.rateLimitTokenBucket, [
        hashOf(key),
        key,
        request.tokens,
        request.refillMillis,
        request.limit,
        request.allowOverflow
      ])
    return Effect.flatMap(backend(statement), (rows) => {
      const row = rows[0]
      if (row === undefined) return Effect.fail(new DriverError({ reason: "InvalidArgument", message: INVALID_STATE }))
      const answer = rateLimitAnswerOf(request, String(row["kept"]), row["admitted"] === true, Number(row["now"]))
      return answer === undefined
        ? Effect.fail(new DriverError({ reason: "Backend", message: `the rate limiter step kept ${String(row["kept"])}` }))
        : Effect.succeed(answer)
    })
  }

  /**
   * Effect 4's limiter step: one statement on the database's clock under the key's lock
   * (see `core/rateLimit4Sql.ts`), the answer read back from the state it kept.
   */
  const rateLimit4 = <R extends RateLimit4Request>(key: string, request: R) => {
    const params = request.kind === "fixedWindow"
      ? [request.tokens, request.refillMillis, request.limit ?? null]
      : request.kind === "tokenBucket"
      ? [request.tokens, request.refillMillis, request.limit, request.allowOverflow]
      : request.kind === "adaptiveConsume"
      ? [request.tokens, request.fallbackWindowMillis]
      : [request.epoch, request.tokens, request.retryAfterMillis]
    return Effect.flatMap(
      backend(run(rateLimit4Statements[request.kind], [hashOf(key), key, ...params])),
      (rows): Effect.Effect<RateLimit4Answer<R>, DriverError> => {
        const row = rows[0]
        if (row === undefined) return Effect.fail(new DriverError({ reason: "InvalidArgument", message: INVALID_STATE }))
        const kept = String(row["kept"])
        const answer = rateLimit4AnswerOf(request, kept, row["admitted"] === true, Number(row["now"]))
        return answer === undefined && request.kind !== "adaptiveFeedback"
          ? Effect.fail(new DriverError({ reason: "Backend", message: `the rate limiter step kept ${kept}` }))
          : Effect.succeed(answer as RateLimit4Answer<R>)
      }
    )
  }

  return {
    name: "PostgreSQL",
    get,
    set: (key, value, ttl) => setItem({ key, hash: hashOf(key), value, ttl: ttlParam(ttl) }),
    delete: delete_,
    modify,
    keys,
    cleanup: deleteInBatches(run(statements.cleanupBatch, [CLEANUP_BATCH]), () => true),
    // several instances may sweep at once: each batch is gated by a try-lock, losers stop this round
    sweep: deleteInBatches(run(statements.sweepBatch, [CLEANUP_BATCH]), (row) => row?.["mine"] === true),
    has,
    timeToLive: (key) =>
      backendRead(Effect.map(run(statements.timeToLive, [key]), (rows) =>
        rows.length === 0
          ? Option.none()
          : Option.some(rows[0]!["ms"] === null ? undefined : Math.max(0, Number(rows[0]!["ms"]))))),
    setIfAbsent,
    increment,
    expire,
    getMany,
    setMany,
    deleteMany,
    deletePrefix,
    count,
    keysPage,
    entriesPage,
    rateLimit,
    rateLimit4,
    changes: feed?.changes,
    syncChanges: feed?.syncChanges
  }
}
