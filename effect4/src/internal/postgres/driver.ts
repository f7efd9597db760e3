/**
 * The PostgreSQL driver: `KvStore.Driver` on a table through `@effect/sql`.
 * The schema, the clock and the locking are described in `store.ts`.
 */
import type * as SqlClient from "effect/sql/SqlClient"
import { SqlError } from "effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type { Driver, Entry, Write } from "../../KvStore.js"
import { DriverError } from "../../KvStore.js"
import { NOT_A_COUNTER, parseCounter } from "../../core/counter.js"
import { keyHash } from "../../core/hash.js"
import { makeKeyedLock } from "../keyedLock.js"
import { makeCoalescer, RETRY } from "./coalesce.js"
import { makeConnections } from "./connection.js"
import type { Row } from "./connection.js"
import { MAX_READ_BYTES, prefixUpperBound } from "../../core/postgresSql.js"
import type { Statements } from "../../core/postgresSql.js"

/** Rows deleted per cleanup statement. */
export const CLEANUP_BATCH = 1000

/** Keys per statement of getMany, setMany and deleteMany, and rows per deletePrefix batch. */
export const BATCH = 1000

/** Bytes of values per setMany statement (sent as hex text, so twice that): a larger batch takes more statements. */
const BATCH_BYTES = 32 * 1024 * 1024

interface Hashed {
  readonly key: string
  readonly hash: bigint
}

const byHash = (a: Hashed, b: Hashed): number => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0)

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
 * What went wrong, in words: `effect/sql` 4 classifies the failure in `reason`, whose
 * cause carries the server's message and SQLSTATE `code` (or the socket's error).
 */
const describeSqlError = (error: SqlError): string => {
  const cause = error.reason.cause
  const detail = cause instanceof Error ? cause.message : error.message
  const code = typeof cause === "object" && cause !== null ? (cause as { readonly code?: unknown }).code : undefined
  if (/exceeds maxMessageSize/.test(detail)) {
    return `the row is larger than the PostgreSQL client's maxMessageSize (${detail}); effect-kv values reach ` +
      "64 MiB: give PgClient.layer maxMessageSize: 80 * 1024 * 1024 to read them"
  }
  return error.reason._tag === "ConnectionError" || lostConnection(code, detail)
    ? `the connection to PostgreSQL was lost (server restart, killed backend or network): ${detail}`
    : detail
}

/**
 * Whether an error means the connection is gone or the server is not there:
 * node-postgres's own words for a dead client, socket errors, and the server's
 * admin shutdown (57P01–57P03: terminated by an administrator, crash shutdown,
 * starting up or shutting down).
 */
const lostConnection = (code: unknown, detail: string): boolean =>
  (typeof code === "string" && (/^57P0[123]$/.test(code) || /^(ECONNRESET|ECONNREFUSED|EPIPE)$/.test(code))) ||
  /not queryable|Connection terminated/i.test(detail)

const toDriverError = (error: SqlError): DriverError =>
  new DriverError({ reason: "Backend", message: describeSqlError(error), cause: error })

/**
 * `SqlError` failures, and `SqlError` defects (a failed COMMIT or ROLLBACK in
 * `sql.withTransaction`), become `DriverError`. Other failures pass untouched:
 * they are the update function's, carried by the front.
 */
const backend = <A, E, R>(effect: Effect.Effect<A, E | SqlError, R>): Effect.Effect<A, Exclude<E, SqlError> | DriverError, R> =>
  effect.pipe(
    Effect.catchDefect((defect) => defect instanceof SqlError ? Effect.fail(toDriverError(defect)) : Effect.die(defect)),
    Effect.catchIf(
      (error): error is SqlError => error instanceof SqlError,
      (error) => Effect.fail(toDriverError(error))
    )
  ) as Effect.Effect<A, Exclude<E, SqlError> | DriverError, R>

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

interface SetItem {
  readonly key: string
  readonly hash: string
  readonly value: Uint8Array
  readonly ttl: number | null
}

const ttlParam = (ttl: number | undefined): number | null => ttl ?? null

export const makeDriver = (sql: SqlClient.SqlClient, statements: Statements): Driver => {
  const { inTransaction, liveTransaction, onPool, run, withTransaction } = makeConnections(sql)
  const hashOf = (key: string): string => keyHash(key).toString()

  const getWith = (runner: typeof run) => (key: string) =>
    backend(runner(statements.get, [key])).pipe(
      Effect.flatMap((rows) => (rows.length === 0 ? Effect.succeed(Option.none()) : Effect.map(bytesOf(rows[0]!), Option.some)))
    )
  const getOnPool = getWith(onPool)
  const hasOnPool = (key: string) => backend(Effect.map(onPool(statements.has, [key]), (rows) => rows.length > 0))
  const setOnPool = (item: SetItem) =>
    backend(Effect.asVoid(onPool(statements.set, [item.hash, item.key, item.value, item.ttl])))

  // --- coalescing (see coalesce.ts): outside a caller's transaction only ---

  const coalescer = makeCoalescer(inFlightBudget(poolSize(sql)))

  /** Distinct keys of `items`, in first appearance. */
  const distinctKeys = <I>(items: ReadonlyArray<I>, keyOf: (item: I) => string): Array<string> =>
    Array.from(new Set(items.map(keyOf)))

  const getLane = coalescer.lane<string, Option.Option<Uint8Array>, DriverError>({
    one: getOnPool,
    alone: getOnPool,
    maxItems: BATCH,
    many: (keys) =>
      Effect.map(backend(onPool(statements.getMany, [distinctKeys(keys, (key) => key)])), (rows) => {
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
      Effect.map(backend(onPool(statements.hasMany, [distinctKeys(keys, (key) => key)])), (rows) => {
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
        onPool(statements.setIfFree, [item.hash, item.key, item.value, item.ttl]),
        (rows) => (rows.length > 0 ? undefined : RETRY)
      )),
    alone: (item) => waitingWrites.withLock(item.key, setOnPool(item)),
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
  (item: I): Effect.Effect<A, DriverError> =>
    Effect.flatMap(liveTransaction, (transaction) => (Option.isSome(transaction) ? inTransaction(item) : coalesced(item)))

  const get = unlessInTransaction(getWith(run), getLane.run)
  const has = unlessInTransaction(
    (key: string) => backend(Effect.map(run(statements.has, [key]), (rows) => rows.length > 0)),
    hasLane.run
  )
  const setItem = unlessInTransaction(
    (item: SetItem) => backend(Effect.asVoid(run(statements.set, [item.hash, item.key, item.value, item.ttl]))),
    setLane.run
  )

  /** A write statement that runs at once unless an update of the key is in flight; then `locked` runs after it. */
  const unlessLocked = (
    free: Effect.Effect<ReadonlyArray<Row>, SqlError>,
    locked: (hash: string) => Effect.Effect<ReadonlyArray<Row>, SqlError>,
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
    Effect.flatMap(liveTransaction, (transaction) =>
      Option.isSome(transaction)
        ? Effect.andThen(run(statements.lockKey, [hash]), run(statement, params))
        : inTransaction([statements.lockKey, [hash]], run(statement, params)))

  const delete_ = (key: string) => {
    const hash = hashOf(key)
    return backend(
      unlessLocked(run(statements.deleteIfFree, [hash, key]), (h) => afterLock(h, statements.deleteLocked, [key]), hash)
    ).pipe(Effect.map((row) => Number(row?.["deleted"] ?? 0) > 0))
  }

  const expire = (key: string, ttl: number | undefined) => {
    const hash = hashOf(key)
    return backend(
      unlessLocked(
        run(statements.expireIfFree, [hash, key, ttlParam(ttl)]),
        (h) => afterLock(h, statements.expireLocked, [key, ttlParam(ttl)]),
        hash
      )
    ).pipe(Effect.map((row) => Number(row?.["changed"] ?? 0) > 0))
  }

  const writeRow = (key: string, hash: string, write: Write) => {
    if (write._tag === "Keep") return Effect.void
    return write.ttl === "unchanged"
      ? run(statements.upsertKeepExpiry, [hash, key, write.value])
      : run(statements.upsert, [hash, key, write.value, ttlParam(write.ttl)])
  }

  /**
   * Atomic read-modify-write: the key's advisory lock, then (a new statement,
   * with a fresh snapshot that sees what the previous holder committed) the row
   * `FOR UPDATE`, `f`, the write, and COMMIT. Inside a caller's transaction it
   * joins it through a savepoint, and the key stays locked until that ends.
   */
  const modify: Driver["modify"] = <A, E, R>(
    key: string,
    f: (current: Option.Option<Entry>) => Effect.Effect<readonly [A, Write], E, R>
  ) => {
    const hash = hashOf(key)
    const body = run(statements.readForUpdate, [key]).pipe(
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
      Effect.flatMap(liveTransaction, (transaction) =>
        Option.isNone(transaction)
          ? inTransaction([statements.lockKey, [hash]], body)
          : withTransaction(Effect.andThen(run(statements.lockKey, [hash]), body)))
    ) as Effect.Effect<A, E | DriverError, R>
  }

  const keys = (prefix: string) => {
    const upper = prefix === "" ? undefined : prefixUpperBound(prefix)
    const query = prefix === ""
      ? run(statements.keysAll, [])
      : upper === undefined
      ? run(statements.keysFrom, [prefix])
      : run(statements.keysInRange, [prefix, upper])
    return backend(Effect.map(query, (rows) => rows.map((row) => String(row["key"]))))
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
    maxItems: BATCH
  })
  const incrementItem = unlessInTransaction(incrementWith(run), incrementLane.run)

  const increment = (key: string, by: number, ttl: number | undefined) =>
    incrementItem({ key, hash: hashOf(key), by, ttl: ttlParam(ttl) })

  const getMany = (keys: ReadonlyArray<string>) =>
    backend(
      Effect.forEach(chunksOf(keys), (chunk) => run(statements.getMany, [chunk]), { concurrency: 1 })
    ).pipe(
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
   * All or nothing: one statement for up to `BATCH` keys, else one transaction
   * (or the caller's) over several. Every statement takes its keys' locks in
   * key_hash order, and the entries are split in that order, so a transaction
   * of several statements also takes its locks in one ascending order.
   */
  const setMany = (entries: ReadonlyArray<readonly [string, Uint8Array]>, ttl: number | undefined) => {
    const sorted = entries.map(([key, value]) => ({ key, value, hash: keyHash(key) })).sort(byHash)
    const chunks = chunksOf(sorted, (entry) => entry.value.length)
    const statement = (chunk: ReadonlyArray<Hashed & { readonly value: Uint8Array }>) =>
      run(statements.setMany, [
        chunk.map((e) => e.hash.toString()),
        chunk.map((e) => e.key),
        chunk.map((e) => e.value),
        ttlParam(ttl)
      ])
    if (chunks.length === 1) return backend(Effect.asVoid(statement(chunks[0]!)))
    const all = Effect.forEach(chunks, statement, { discard: true })
    return backend(
      Effect.flatMap(liveTransaction, (transaction) =>
        Option.isSome(transaction) ? withTransaction(all) : inTransaction(undefined, all))
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
          Effect.flatMap((rows) =>
            rows[0]?.["free"] === true ? Effect.succeed(rows) : Effect.flatMap(liveTransaction, (transaction) =>
              Option.isSome(transaction)
                ? Effect.andThen(run(statements.lockKeys, [hashes]), run(statements.deleteManyLocked, [chunkKeys]))
                : inTransaction([statements.lockKeys, [hashes]], run(statements.deleteManyLocked, [chunkKeys])))
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
    return backend(Effect.map(run(ranged.count, params), (rows) => Number(rows[0]?.["n"] ?? 0)))
  }

  const keysPage = (prefix: string, after: string | undefined, limit: number) => {
    const { params, ranged } = rangeOf(prefix)
    return backend(Effect.map(run(ranged.keysPage, [...params, after ?? "", limit]), (rows) => rows.map((row) => String(row["key"]))))
  }

  const entriesPage = (prefix: string, after: string | undefined, limit: number) => {
    const { params, ranged } = rangeOf(prefix)
    return backend(run(ranged.entriesPage, [...params, after ?? "", limit])).pipe(
      Effect.flatMap((rows) => Effect.forEach(rows, (row) => Effect.map(bytesOf(row), (value) => [String(row["key"]), value] as const)))
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
      backend(Effect.map(run(statements.timeToLive, [key]), (rows) =>
        rows.length === 0
          ? Option.none()
          : Option.some(rows[0]!["ms"] === null ? undefined : Math.max(0, Number(rows[0]!["ms"]))))),
    setIfAbsent: (key, value, ttl) =>
      backend(Effect.map(run(statements.setIfAbsent, [hashOf(key), key, value, ttlParam(ttl)]), (rows) => rows.length > 0)),
    increment,
    expire,
    getMany,
    setMany,
    deleteMany,
    deletePrefix,
    count,
    keysPage,
    entriesPage
  }
}
