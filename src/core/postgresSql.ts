/**
 * The fixed SQL texts of `PostgresStore`, built once per layer from validated
 * identifiers. See `internal/postgres/store.ts` for why each statement looks as it does.
 */
import { keyHash } from "./hash.js"
import { MAX_KEY_BYTES } from "./key.js"
import { STATE_FIELDS } from "./rateLimit.js"
import type { RateLimitRequest } from "./rateLimit.js"

/**
 * Table and schema names: a lowercase letter or `_`, then lowercase letters,
 * digits or `_`, at most 63 bytes (PostgreSQL's identifier limit; longer names
 * would be truncated silently). These are exactly the names that mean the same
 * quoted and unquoted, so a person typing them in `psql` needs no quotes. They
 * are quoted in every statement anyway.
 */
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/

/** What is wrong with a table or schema name, in words; `undefined` when it is valid. */
export const identifierProblem = (what: "table" | "schema", name: unknown): string | undefined =>
  typeof name === "string" && IDENTIFIER.test(name)
    ? undefined
    : `Invalid ${what} name ${typeof name === "string" ? JSON.stringify(name) : String(name)}: ` +
      "use 1 to 63 lowercase letters, digits or underscores, not starting with a digit"

const quote = (identifier: string): string => `"${identifier.replaceAll("\"", "\"\"")}"`

/**
 * The smallest string above every string that starts with `prefix`, in code
 * point order (`COLLATE "C"`): the last code point incremented, skipping the
 * surrogate range; trailing U+10FFFF cannot be incremented and is dropped.
 * `undefined` when nothing is left: no upper bound.
 */
export const prefixUpperBound = (prefix: string): string | undefined => {
  const codePoints = Array.from(prefix, (c) => c.codePointAt(0)!)
  while (codePoints.length > 0) {
    const last = codePoints.pop()!
    if (last < 0x10ffff) {
      codePoints.push(last + 1 === 0xd800 ? 0xe000 : last + 1)
      return String.fromCodePoint(...codePoints)
    }
  }
  return undefined
}

/** Signed 64-bit advisory lock ids for the layer's own work, derived from the table's name. */
const lockId = (purpose: string, schema: string, table: string): string =>
  keyHash(`effect-kv:${purpose}:${schema}.${table}`).toString()

/**
 * The most expired keys one expiry poll of a change feed reads, plus one: a poll
 * that finds more reports "anything may have changed" (the feed's bound on
 * waiting keys, `MAX_PENDING_KEYS`, is the same) instead of loading them all.
 */
export const EXPIRED_PER_POLL = 10_000

/** The payload limit of `pg_notify` (bytes); a key notified must fit (see `MAX_KEY_BYTES` in key.ts: 2048). */
export const NOTIFY_PAYLOAD_BYTES = 7999

/**
 * The `LISTEN`/`NOTIFY` channel of a table's change feed: `effect_kv.<schema>.<table>`,
 * or, past PostgreSQL's 63-byte identifier limit (`pg_notify` refuses a longer
 * channel), a shortened name with a hash of the whole, so two tables never share one.
 * Only lowercase letters, digits, `_` and `.`: safe as a literal and, quoted, as an identifier.
 */
export const notifyChannel = (schema: string, table: string): string => channelName("effect_kv", schema, table)

const SYNC_HEAD = "effect-kv sync "

/**
 * The payload of a sync marker (`Driver.syncChanges`), sent on the table's own
 * channel so it arrives after every change that committed before it (one
 * channel keeps its order on every client). Padded past `MAX_KEY_BYTES`
 * characters, it can never be a key: a key has at most that many bytes, so
 * at most that many characters.
 */
export const syncPayload = (token: string): string => `${SYNC_HEAD}${token} `.padEnd(MAX_KEY_BYTES + 1, "-")

/** The token of a sync marker's payload, `undefined` when the payload is a key. */
export const syncTokenOf = (payload: string): string | undefined => {
  if (payload.length <= MAX_KEY_BYTES || !payload.startsWith(SYNC_HEAD)) return undefined
  return payload.slice(SYNC_HEAD.length, payload.indexOf(" ", SYNC_HEAD.length))
}

const channelName = (head: string, schema: string, table: string): string => {
  const full = `${head}.${schema}.${table}`
  if (full.length <= 63) return full
  return `${head}.${`${schema}.${table}`.slice(0, 32)}.${BigInt.asUintN(64, keyHash(full)).toString(36)}`
}

export interface Statements {
  readonly qualifiedTable: string
  /** The channel every write notifies with the key it changed, or `undefined` when the store does not notify */
  readonly channel: string | undefined
  /** `$1` the previous poll's `at` (text; `null`: none yet) → at (text), key: entries that expired since then, on the database's clock */
  readonly expiredSince: string
  readonly quotedSchema: string
  /** $1 "schema"."table", $2 "schema" → present, hasschema */
  readonly tableExists: string
  readonly createSchema: string
  /** Creates table and index if missing; run in one transaction, serialised by the advisory lock first */
  readonly createTable: ReadonlyArray<string>
  /** $1 key → value (null when too large to read safely), size */
  readonly get: string
  /** $1 key → one row when live */
  readonly has: string
  /** $1 key → ms (null: never expires); no row when missing */
  readonly timeToLive: string
  /** $1 key_hash, $2 key, $3 value, $4 ttl ms or null; waits for an update of the key in flight */
  readonly set: string
  /** like `set`, but writes only over a missing or expired entry → one row when written */
  readonly setIfAbsent: string
  /** $1 key_hash, $2 key, $3 by, $4 ttl ms or null → n; no row when the stored value is not a counter or the result unsafe */
  readonly increment: string
  /** like `increment`, but only if it gets the key's lock without waiting; no row otherwise (or when refused) */
  readonly incrementIfFree: string
  /** $1 key_hash, $2 key → free, deleted; deletes only when no update of the key is in flight (free) */
  readonly deleteIfFree: string
  /** $1 key → deleted; inside a transaction holding the key's lock */
  readonly deleteLocked: string
  /** $1 key_hash, $2 key, $3 ttl ms or null → free, changed; only when no update of the key is in flight */
  readonly expireIfFree: string
  /** $1 key, $2 ttl ms or null → changed; inside a transaction holding the key's lock */
  readonly expireLocked: string
  /** $1 key_hash: the key's lock, until the transaction ends */
  readonly lockKey: string
  /** $1 key → value, size, live, expires_in (ms, null: never); locks the row if there is one */
  readonly readForUpdate: string
  /**
   * $1 key_hash, $2 key: `lockKey`, then `readForUpdate` in the same statement. Its snapshot predates
   * the lock wait, but `FOR UPDATE` follows a row that the lock's previous holder updated to its latest
   * version; a row that holder inserted (or deleted and inserted) is not seen: no row back means "read
   * again" with `readForUpdate`, whose new snapshot sees it
   */
  readonly lockAndReadForUpdate: string
  /** $1 key_hash, $2 key, $3 value, $4 ttl ms or null; inside a transaction holding the key's lock */
  readonly upsert: string
  /** $1 key_hash, $2 key, $3 value; keeps the entry's expiry; inside a transaction holding the key's lock */
  readonly upsertKeepExpiry: string
  /** $1 prefix, $2 upper bound → key */
  readonly keysInRange: string
  /** $1 prefix → key */
  readonly keysFrom: string
  /** → key */
  readonly keysAll: string
  /** $1 batch size → n */
  readonly cleanupBatch: string
  /** $1 batch size → mine, n; deletes only if this instance holds the sweep lock */
  readonly sweepBatch: string
  /** BEGIN and the key's lock in one round trip (the hash is our own integer, not user text) */
  readonly beginAndLock: (hash: bigint) => string

  /** $1 keys text[] → key, value (null when too large to read safely), size; live rows only */
  readonly getMany: string
  /** $1 keys text[] → key; live rows only */
  readonly hasMany: string
  /**
   * $1 key_hash, $2 key, $3 value, $4 ttl ms or null → row count 1 when written: writes only if it gets the
   * key's lock without waiting (no update of the key is in flight); else nothing, and the caller waits with `set`.
   * Read its command tag's row count, not rows: it returns none unless it notifies (a `RETURNING`
   * measured 1.32× a plain upsert's time where the counted form took 1.09×, on a named statement)
   */
  readonly setIfFree: string
  /**
   * `setIfFree` returning one row when written, for a client that reports no row count (the Effect 4
   * line's `@effect/sql-pg`)
   */
  readonly setIfFreeReturning: string
  /**
   * $1 key_hashes bigint[], $2 keys text[] (distinct), $3 values bytea[], $4 ttls float8[] (ms or null) → key
   * of each row written: like `setIfFree` for each key, in one statement
   */
  readonly setManyIfFree: string
  /**
   * $1 key_hashes bigint[], $2 keys text[] (distinct), $3 amounts bigint[], $4 ttls float8[] (ms or null) →
   * key, n of each key incremented: like `increment` for each key whose lock it gets without waiting; a key
   * whose lock is held, or whose value is not a counter or would leave the safe range, gets no row
   */
  readonly incrementManyIfFree: string
  /**
   * $1 key_hashes bigint[], $2 keys text[], $3 values bytea[], $4 ttl ms or null: takes the keys' locks in
   * key_hash order, then upserts; the keys must be distinct
   */
  readonly setMany: string
  /**
   * The whole table, in place of many keys' locks (see `KEY_LOCKS_PER_TRANSACTION` in the driver): EXCLUSIVE
   * waits for every transaction that writes or locks rows of the table and holds back new ones until this
   * one ends; plain reads go on
   */
  readonly lockTable: string
  /** BEGIN and `lockTable`, in one round trip */
  readonly beginAndLockTable: string
  /** $1 key_hashes bigint[], $2 keys text[], $3 values bytea[], $4 ttl ms or null: `setMany` under `lockTable`, no key locks */
  readonly setManyLocked: string
  /** $1 key_hashes bigint[], $2 keys text[] → free, deleted; deletes only when no update of any key is in flight */
  readonly deleteManyIfFree: string
  /** $1 keys text[] → deleted; inside a transaction holding the keys' locks */
  readonly deleteManyLocked: string
  /**
   * $1 key_hashes bigint[], $2 keys text[] (distinct) → key, free, deleted per key: coalesced
   * `delete` calls, each key deleted only when no update of it is in flight (free)
   */
  readonly deleteEachIfFree: string
  /**
   * $1 key_hash, $2 key, $3 value, $4 ttl ms or null → free, written: `setIfAbsent` only if it gets the
   * key's lock without waiting (free); else nothing, and the caller waits with `setIfAbsent`
   */
  readonly setIfAbsentIfFree: string
  /**
   * $1 key_hashes bigint[], $2 keys text[] (distinct), $3 values bytea[], $4 ttls float8[] (ms or null) →
   * key, free, written per key: coalesced `setIfAbsent` calls, each key written only when no update of it
   * is in flight (free) and it is missing or expired
   */
  readonly setIfAbsentEachIfFree: string
  /**
   * $1 key_hashes bigint[], $2 keys text[] (distinct), $3 ttls float8[] (ms or null) → key, free, changed
   * per key: coalesced `expire` calls, each live key's expiry replaced only when no update of it is in
   * flight (free)
   */
  readonly expireEachIfFree: string
  /** $1 key_hashes bigint[]: their locks in key_hash order, until the transaction ends */
  readonly lockKeys: string
  /** BEGIN and the keys' locks in key_hash order, in one round trip (our own integers, not user text) */
  readonly beginAndLockMany: (hashes: ReadonlyArray<bigint>) => string
  /**
   * One rate-limiter step on the database's clock, under the key's lock (see `rateLimitStatement`).
   * $1 key_hash, $2 key, $3 tokens, $4 refill ms, $5 limit (null or 0: none) → kept, admitted, now;
   * no row when the key holds a live value that is not a fixed-window state
   */
  readonly rateLimitFixedWindow: string
  /** Like `rateLimitFixedWindow` for a token bucket: $5 limit, $6 allow overflow */
  readonly rateLimitTokenBucket: string
  /** Statements over the keys starting with a prefix, by whether the prefix has an upper bound */
  readonly ranged: {
    readonly withUpper: RangedStatements
    readonly withoutUpper: RangedStatements
  }
}

/**
 * Statements over a key range. Their first parameters are the prefix and,
 * `withUpper`, its upper bound ($1, $2); `next` is the number of the next one.
 */
export interface RangedStatements {
  readonly next: number
  /** → n */
  readonly count: string
  /** $next key after (`""`: from the start), $next+1 limit → key */
  readonly keysPage: string
  /**
   * $next after, $next+1 limit, $next+2 max bytes → key, value, size, seen: the next `limit` live
   * entries cut where their values pass `max bytes` (the first one however large); values past the
   * cut are never read. `seen` entries were looked at: fewer rows than that means cut by bytes.
   */
  readonly entriesPage: string
  /**
   * $next after, $next+1 limit → seen, last, n: takes the locks of the next `limit` live keys in key_hash
   * order, then deletes them (the ones still live); `seen` keys were looked at, the last being `last`
   */
  readonly deletePrefixBatch: string
}

/** The largest value read back (64 MiB): anything larger was not written by effect-kv and is refused, not read. */
export const MAX_READ_BYTES = 64 * 1024 * 1024

const live = (clock: string, alias = "") => `(${alias}expires_at IS NULL OR ${alias}expires_at > ${clock})`
const expiryOf = (param: string) => `clock_timestamp() + ${param}::float8 * interval '1 millisecond'`
const expiry = expiryOf("$4")
const millisLeft = (clock: string) => `(extract(epoch FROM (expires_at - ${clock})) * 1000)::float8`
/** The stored text of a counter, when it is one: canonical decimal of at most 16 digits. */
const counterText = (alias: string) =>
  `CASE WHEN octet_length(${alias}.value) <= 17 AND encode(${alias}.value, 'escape') ~ '^(0|-?[1-9][0-9]{0,15})$' ` +
  `THEN encode(${alias}.value, 'escape')::bigint END`
const SAFE = "9007199254740991"

export const makeStatements = (options: {
  readonly schema: string
  readonly table: string
  readonly unlogged: boolean
  /** Every write notifies the key it changed on `notifyChannel(schema, table)`, in its own statement or transaction. */
  readonly notifyChanges?: boolean | undefined
}): Statements => {
  const { schema, table } = options
  const channel = options.notifyChanges === true ? notifyChannel(schema, table) : undefined
  const channelLiteral = `'${channel}'`
  /**
   * The count of a write CTE's rows (each `RETURNING key`), notifying each key
   * when the store notifies: `count(pg_notify(...))` evaluates the call for every row.
   */
  const countOf = (cte: string) =>
    channel === undefined ? `(SELECT count(*) FROM ${cte})` : `(SELECT count(pg_notify(${channelLiteral}, key)) FROM ${cte})`
  /**
   * A write (`INSERT`/`UPDATE`) after the CTEs `ctes`, returning `returning`
   * (expression, name). Notifying, its `RETURNING` also calls `pg_notify` for
   * every row written; the notification is sent at commit, so a write rolled
   * back, or that wrote no row, notifies nothing.
   */
  const notifyingWrite = (
    ctes: string | undefined,
    write: string,
    returning: ReadonlyArray<readonly [expression: string, name: string]> = []
  ) => {
    const columns = [
      ...returning.map(([e, n]) => (e === n ? e : `${e} AS ${n}`)),
      ...(channel === undefined ? [] : [`pg_notify(${channelLiteral}, key) AS notified`])
    ]
    return `${ctes === undefined ? "" : `WITH ${ctes} `}${write}${columns.length === 0 ? "" : ` RETURNING ${columns.join(", ")}`}`
  }
  const t = `${quote(schema)}.${quote(table)}`
  const indexName = `${table}_expires_at_idx`.length <= 63
    ? `${table}_expires_at_idx`
    : `${table.slice(0, 42)}_expires_${lockId("index", schema, table).replace("-", "n").slice(0, 12)}`
  const upsertTail = `ON CONFLICT (key) DO UPDATE SET key_hash = excluded.key_hash, value = excluded.value, ` +
    `expires_at = excluded.expires_at, updated_at = excluded.updated_at`
  const lockCte = `l AS MATERIALIZED (SELECT pg_advisory_xact_lock($1::bigint))`
  const sweepLock = lockId("sweep", schema, table)
  const expiredIds = (gate: string) =>
    `ARRAY(SELECT ctid FROM ${t} WHERE ${gate}expires_at IS NOT NULL AND expires_at <= now() ` +
    `LIMIT $1 FOR UPDATE SKIP LOCKED)`
  const safeValue = `CASE WHEN octet_length(value) <= ${MAX_READ_BYTES} THEN value END AS value, octet_length(value) AS size`
  const current = counterText("cur")
  const liveCur = live("clock_timestamp()", "cur.")
  const amount = `convert_from(excluded.value, 'UTF8')::bigint`
  /** `increment` after its lock CTE `l`: `from` is `FROM l`, or `FROM l WHERE l.free` after a try-lock */
  const incrementBody = (lock: string, from: string) =>
    notifyingWrite(
      lock,
      `INSERT INTO ${t} AS cur (key_hash, key, value, expires_at, updated_at) ` +
      `SELECT $1::bigint, $2::text, convert_to($3::bigint::text, 'UTF8'), ${expiry}, clock_timestamp() ${from} ` +
      `ON CONFLICT (key) DO UPDATE SET key_hash = excluded.key_hash, ` +
      `value = CASE WHEN ${liveCur} ` +
      `THEN convert_to((${current} + $3::bigint)::text, 'UTF8') ELSE excluded.value END, ` +
      `expires_at = CASE WHEN ${liveCur} THEN cur.expires_at ELSE excluded.expires_at END, ` +
      `updated_at = excluded.updated_at ` +
      `WHERE CASE WHEN NOT ${liveCur} THEN true ` +
      `WHEN ${current} IS NULL THEN false ` +
      `ELSE abs(${current}) <= ${SAFE} AND abs(${current} + $3::bigint) <= ${SAFE} END`,
      [["encode(value, 'escape')", "n"]]
    )
  const tryLockCte = `l AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($1::bigint) AS free)`
  const setIfFreeWrite = `INSERT INTO ${t} (key_hash, key, value, expires_at, updated_at) ` +
    `SELECT $1::bigint, $2::text, $3::bytea, ${expiry}, clock_timestamp() FROM l WHERE l.free ${upsertTail}`
  return {
    qualifiedTable: t,
    channel,
    // `expires_at > $1` on the partial index; now() once, carried to the next poll as exact text
    expiredSince: `SELECT c.at::text AS at, e.key FROM (SELECT now() AS at) c LEFT JOIN LATERAL (` +
      `SELECT key FROM ${t} WHERE $1::timestamptz IS NOT NULL AND expires_at > $1::timestamptz AND expires_at <= c.at ` +
      `LIMIT ${EXPIRED_PER_POLL + 1}) e ON true`,
    quotedSchema: quote(schema),
    tableExists: `SELECT to_regclass($1) IS NOT NULL AS present, to_regnamespace($2) IS NOT NULL AS hasschema`,
    createSchema: `CREATE SCHEMA IF NOT EXISTS ${quote(schema)}`,
    createTable: [
      `SELECT pg_advisory_xact_lock(${lockId("create", schema, table)})`,
      `CREATE ${options.unlogged ? "UNLOGGED " : ""}TABLE IF NOT EXISTS ${t} (` +
      `key_hash BIGINT NOT NULL, ` +
      `key TEXT COLLATE "C" NOT NULL PRIMARY KEY, ` +
      `value BYTEA NOT NULL, ` +
      `expires_at TIMESTAMPTZ, ` +
      `updated_at TIMESTAMPTZ NOT NULL DEFAULT now())`,
      `CREATE INDEX IF NOT EXISTS ${quote(indexName)} ON ${t} (expires_at) WHERE expires_at IS NOT NULL`
    ],
    get: `SELECT ${safeValue} FROM ${t} WHERE key = $1 AND ${live("now()")}`,
    has: `SELECT 1 AS present FROM ${t} WHERE key = $1 AND ${live("now()")}`,
    timeToLive: `SELECT CASE WHEN expires_at IS NULL THEN NULL ELSE ${millisLeft("now()")} END AS ms ` +
      `FROM ${t} WHERE key = $1 AND ${live("now()")}`,
    set: notifyingWrite(
      lockCte,
      `INSERT INTO ${t} (key_hash, key, value, expires_at, updated_at) ` +
        `SELECT $1::bigint, $2::text, $3::bytea, ${expiry}, clock_timestamp() FROM l ${upsertTail}`
    ),
    setIfAbsent: notifyingWrite(
      lockCte,
      `INSERT INTO ${t} AS cur (key_hash, key, value, expires_at, updated_at) ` +
        `SELECT $1::bigint, $2::text, $3::bytea, ${expiry}, clock_timestamp() FROM l ${upsertTail} ` +
        `WHERE NOT ${liveCur}`,
      [["1", "written"]]
    ),
    // ON CONFLICT sees the latest committed row even though the statement's snapshot predates
    // the lock wait. The WHERE refuses a live non-counter or an unsafe result: no row comes back.
    increment: incrementBody(lockCte, "FROM l"),
    incrementIfFree: incrementBody(tryLockCte, "FROM l WHERE l.free"),
    deleteIfFree: `WITH ${tryLockCte}, ` +
      `d AS (DELETE FROM ${t} t USING l WHERE l.free AND t.key = $2 AND ${live("now()", "t.")} RETURNING t.key) ` +
      `SELECT l.free AS free, ${countOf("d")}::int AS deleted FROM l`,
    deleteLocked: `WITH d AS (DELETE FROM ${t} WHERE key = $1 AND ${live("clock_timestamp()")} RETURNING key) ` +
      `SELECT ${countOf("d")}::int AS deleted`,
    expireIfFree: `WITH ${tryLockCte}, ` +
      `u AS (UPDATE ${t} t SET expires_at = ${expiryOf("$3")}, updated_at = clock_timestamp() FROM l ` +
      `WHERE l.free AND t.key = $2 AND ${live("now()", "t.")} RETURNING t.key) ` +
      `SELECT l.free AS free, ${countOf("u")}::int AS changed FROM l`,
    expireLocked: `WITH u AS (UPDATE ${t} SET expires_at = ${expiryOf("$2")}, updated_at = clock_timestamp() ` +
      `WHERE key = $1 AND ${live("clock_timestamp()")} RETURNING key) SELECT ${countOf("u")}::int AS changed`,
    lockKey: `SELECT pg_advisory_xact_lock($1::bigint)`,
    readForUpdate: `SELECT ${safeValue}, ${live("clock_timestamp()")} AS live, ` +
      `CASE WHEN expires_at IS NULL THEN NULL ELSE ${millisLeft("clock_timestamp()")} END AS expires_in ` +
      `FROM ${t} WHERE key = $1 FOR UPDATE`,
    // the lock's subquery gates the scan (a one-time filter): the row is read only once the lock is held
    lockAndReadForUpdate: `WITH ${lockCte} SELECT ${safeValue}, ${live("clock_timestamp()")} AS live, ` +
      `CASE WHEN expires_at IS NULL THEN NULL ELSE ${millisLeft("clock_timestamp()")} END AS expires_in ` +
      `FROM ${t} WHERE key = $2::text AND (SELECT count(*) FROM l) = 1 FOR UPDATE`,
    upsert: notifyingWrite(
      undefined,
      `INSERT INTO ${t} (key_hash, key, value, expires_at, updated_at) ` +
        `VALUES ($1::bigint, $2::text, $3::bytea, ${expiry}, clock_timestamp()) ${upsertTail}`
    ),
    upsertKeepExpiry: notifyingWrite(
      undefined,
      `INSERT INTO ${t} (key_hash, key, value, expires_at, updated_at) ` +
        `VALUES ($1::bigint, $2::text, $3::bytea, NULL, clock_timestamp()) ` +
        `ON CONFLICT (key) DO UPDATE SET key_hash = excluded.key_hash, value = excluded.value, ` +
        `updated_at = excluded.updated_at`
    ),
    keysInRange: `SELECT key FROM ${t} WHERE key >= $1::text COLLATE "C" AND key < $2::text COLLATE "C" ` +
      `AND ${live("now()")} ORDER BY key COLLATE "C"`,
    keysFrom: `SELECT key FROM ${t} WHERE key >= $1::text COLLATE "C" AND ${live("now()")} ORDER BY key COLLATE "C"`,
    keysAll: `SELECT key FROM ${t} WHERE ${live("now()")} ORDER BY key COLLATE "C"`,
    // notifying: a watcher's poll may not have seen the entry expire before it was deleted
    cleanupBatch: `WITH d AS (DELETE FROM ${t} WHERE ctid = ANY(${expiredIds("")}) AND expires_at <= now() ` +
      `RETURNING key) SELECT ${countOf("d")}::int AS n`,
    sweepBatch: `WITH g AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(${sweepLock}) AS mine), ` +
      `d AS (DELETE FROM ${t} WHERE ctid = ANY(${expiredIds("(SELECT mine FROM g) AND ")}) ` +
      `AND expires_at <= now() RETURNING key) ` +
      `SELECT g.mine AS mine, ${countOf("d")}::int AS n FROM g`,
    beginAndLock: (hash) => `BEGIN; SELECT pg_advisory_xact_lock(${BigInt.asIntN(64, hash).toString()})`,
    getMany: `SELECT key, ${safeValue} FROM ${t} WHERE key = ANY($1::text[]) AND ${live("now()")}`,
    hasMany: `SELECT key FROM ${t} WHERE key = ANY($1::text[]) AND ${live("now()")}`,
    // A try-lock never waits, so no lock order is needed, and a key whose lock is held is left out
    // rather than waiting (and holding back the other keys): its caller waits alone. The CTE is
    // materialised so every try-lock is taken before any row is written, and only those rows.
    setIfFree: notifyingWrite(tryLockCte, setIfFreeWrite),
    setIfFreeReturning: notifyingWrite(tryLockCte, setIfFreeWrite, [["1", "written"]]),
    setManyIfFree: notifyingWrite(
      `l AS MATERIALIZED (SELECT u.h, u.k, u.v, u.ms, pg_try_advisory_xact_lock(u.h) AS free ` +
        `FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::float8[]) AS u(h, k, v, ms))`,
      `INSERT INTO ${t} (key_hash, key, value, expires_at, updated_at) ` +
        `SELECT l.h, l.k, l.v, ${expiryOf("l.ms")}, clock_timestamp() FROM l WHERE l.free ${upsertTail}`,
      [["key", "key"]]
    ),
    // `increment` for many keys: the amount comes back as the inserted value (its canonical text)
    incrementManyIfFree: notifyingWrite(
      `l AS MATERIALIZED (SELECT u.h, u.k, u.by, u.ms, pg_try_advisory_xact_lock(u.h) AS free ` +
        `FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::float8[]) AS u(h, k, by, ms))`,
      `INSERT INTO ${t} AS cur (key_hash, key, value, expires_at, updated_at) ` +
      `SELECT l.h, l.k, convert_to(l.by::text, 'UTF8'), ${expiryOf("l.ms")}, clock_timestamp() FROM l WHERE l.free ` +
      `ON CONFLICT (key) DO UPDATE SET key_hash = excluded.key_hash, ` +
      `value = CASE WHEN ${liveCur} ` +
      `THEN convert_to((${current} + ${amount})::text, 'UTF8') ELSE excluded.value END, ` +
      `expires_at = CASE WHEN ${liveCur} THEN cur.expires_at ELSE excluded.expires_at END, ` +
      `updated_at = excluded.updated_at ` +
      `WHERE CASE WHEN NOT ${liveCur} THEN true ` +
      `WHEN ${current} IS NULL THEN false ` +
      `ELSE abs(${current}) <= ${SAFE} AND abs(${current} + ${amount}) <= ${SAFE} END`,
      [["key", "key"], ["encode(value, 'escape')", "n"]]
    ),
    setMany: notifyingWrite(
      `l AS MATERIALIZED (${lockAll("pg_advisory_xact_lock", "unnest($1::bigint[])")})`,
      `INSERT INTO ${t} (key_hash, key, value, expires_at, updated_at) ` +
        `SELECT u.h, u.k, u.v, ${expiry}, clock_timestamp() FROM l, unnest($1::bigint[], $2::text[], $3::bytea[]) AS u(h, k, v) ` +
        upsertTail
    ),
    lockTable: `LOCK TABLE ${t} IN EXCLUSIVE MODE`,
    beginAndLockTable: `BEGIN; LOCK TABLE ${t} IN EXCLUSIVE MODE`,
    setManyLocked: notifyingWrite(
      undefined,
      `INSERT INTO ${t} (key_hash, key, value, expires_at, updated_at) ` +
        `SELECT u.h, u.k, u.v, ${expiry}, clock_timestamp() FROM unnest($1::bigint[], $2::text[], $3::bytea[]) AS u(h, k, v) ` +
        upsertTail
    ),
    // like deleteIfFree: a statement that waited for a lock would not see what the holder committed
    deleteManyIfFree: `WITH l AS MATERIALIZED (${tryLockAll("unnest($1::bigint[])")}), ` +
      `d AS (DELETE FROM ${t} t USING l WHERE l.free AND t.key = ANY($2::text[]) AND ${live("now()", "t.")} RETURNING t.key) ` +
      `SELECT l.free AS free, ${countOf("d")}::int AS deleted FROM l`,
    // like deleteManyIfFree, answering per key: a key whose lock is held is left for its caller to wait alone.
    // Try-locks never wait, yet they are taken in key-hash order (the driver sorts) like every multi-key lock.
    deleteEachIfFree: `WITH l AS MATERIALIZED (SELECT u.h, u.k, pg_try_advisory_xact_lock(u.h) AS free ` +
      `FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS u(h, k, i) ORDER BY u.i), ` +
      `d AS (DELETE FROM ${t} t USING l WHERE l.free AND t.key = l.k AND ${live("now()", "t.")} RETURNING t.key) ` +
      `SELECT l.k AS key, l.free AS free, (d.key IS NOT NULL) AS deleted, ${countOf("d")}::int AS notified ` +
      `FROM l LEFT JOIN d ON d.key = l.k`,
    // like setIfFree for setIfAbsent: ON CONFLICT sees (and locks) the latest row, so a row the lock's previous
    // holder committed after this statement's snapshot is still found live, and not written over
    setIfAbsentIfFree: `WITH ${tryLockCte}, ` +
      `w AS (INSERT INTO ${t} AS cur (key_hash, key, value, expires_at, updated_at) ` +
      `SELECT $1::bigint, $2::text, $3::bytea, ${expiry}, clock_timestamp() FROM l WHERE l.free ${upsertTail} ` +
      `WHERE NOT ${liveCur} RETURNING cur.key) ` +
      `SELECT l.free AS free, ${countOf("w")}::int AS written FROM l`,
    // setIfAbsentIfFree per key, like deleteEachIfFree: try-locks in the order given (the driver sorts by key_hash)
    setIfAbsentEachIfFree: `WITH l AS MATERIALIZED (SELECT u.h, u.k, u.v, u.ms, pg_try_advisory_xact_lock(u.h) AS free ` +
      `FROM unnest($1::bigint[], $2::text[], $3::bytea[], $4::float8[]) WITH ORDINALITY AS u(h, k, v, ms, i) ORDER BY u.i), ` +
      `w AS (INSERT INTO ${t} AS cur (key_hash, key, value, expires_at, updated_at) ` +
      `SELECT l.h, l.k, l.v, ${expiryOf("l.ms")}, clock_timestamp() FROM l WHERE l.free ${upsertTail} ` +
      `WHERE NOT ${liveCur} RETURNING cur.key) ` +
      `SELECT l.k AS key, l.free AS free, (w.key IS NOT NULL) AS written, ${countOf("w")}::int AS notified ` +
      `FROM l LEFT JOIN w ON w.key = l.k`,
    // expireIfFree per key, like deleteEachIfFree
    expireEachIfFree: `WITH l AS MATERIALIZED (SELECT u.h, u.k, u.ms, pg_try_advisory_xact_lock(u.h) AS free ` +
      `FROM unnest($1::bigint[], $2::text[], $3::float8[]) WITH ORDINALITY AS u(h, k, ms, i) ORDER BY u.i), ` +
      `x AS (UPDATE ${t} t SET expires_at = ${expiryOf("l.ms")}, updated_at = clock_timestamp() FROM l ` +
      `WHERE l.free AND t.key = l.k AND ${live("now()", "t.")} RETURNING t.key) ` +
      `SELECT l.k AS key, l.free AS free, (x.key IS NOT NULL) AS changed, ${countOf("x")}::int AS notified ` +
      `FROM l LEFT JOIN x ON x.key = l.k`,
    deleteManyLocked: `WITH d AS (DELETE FROM ${t} WHERE key = ANY($1::text[]) AND ${live("clock_timestamp()")} RETURNING key) ` +
      `SELECT ${countOf("d")}::int AS deleted`,
    lockKeys: lockAll("pg_advisory_xact_lock", "unnest($1::bigint[])"),
    beginAndLockMany: (hashes) =>
      `BEGIN; ${
        lockAll("pg_advisory_xact_lock", `unnest('{${hashes.map((h) => BigInt.asIntN(64, h).toString()).join(",")}}'::bigint[])`)
      }`,
    ranged: { withUpper: ranged(t, safeValue, true, countOf), withoutUpper: ranged(t, safeValue, false, countOf) },
    rateLimitFixedWindow: rateLimitStatement(t, lockCte, "fixed-window", notifyingWrite),
    rateLimitTokenBucket: rateLimitStatement(t, lockCte, "token-bucket", notifyingWrite)
  }
}

/**
 * `SELECT count(lock(h))` over the distinct hashes of `source` in ascending
 * order: every statement that holds several keys' locks takes them in this one
 * order, so no two of them wait for each other in a cycle. The subquery has an
 * ORDER BY, so PostgreSQL does not flatten it: the locks are taken as the
 * sorted rows arrive.
 */
const lockAll = (lock: string, source: string) =>
  `SELECT count(${lock}(h))::int AS n FROM (SELECT DISTINCT h FROM ${source} AS u(h) ORDER BY h) s`

/** Try-locks never wait; every one is tried (an aggregate does not stop early) and held until the statement's transaction ends. */
const tryLockAll = (source: string) =>
  `SELECT coalesce(bool_and(pg_try_advisory_xact_lock(h)), true) AS free FROM (SELECT DISTINCT h FROM ${source} AS u(h) ORDER BY h) s`

const ranged = (t: string, safeValue: string, withUpper: boolean, countOf: (cte: string) => string): RangedStatements => {
  const range = `key >= $1::text COLLATE "C"${withUpper ? ` AND key < $2::text COLLATE "C"` : ""}`
  const next = withUpper ? 3 : 2
  const after = `$${next}::text COLLATE "C"`
  // bigint: a page size is any positive safe integer (an int4 parameter refuses 2^31 and above)
  const limit = `$${next + 1}::bigint`
  const page = (columns: string) =>
    `SELECT ${columns} FROM ${t} WHERE ${range} AND key > ${after} AND ${live("now()")} ` +
    `ORDER BY key COLLATE "C" LIMIT ${limit}`
  return {
    next,
    count: `SELECT count(*)::bigint AS n FROM ${t} WHERE ${range} AND ${live("now()")}`,
    keysPage: page("key"),
    // The window functions see each value's size without reading the value (octet_length of a
    // TOASTed bytea reads its header); only the rows kept by the outer WHERE send their values.
    entriesPage: `SELECT key, ${safeValue}, seen FROM (` +
      `SELECT key, value, row_number() OVER w AS n, sum(octet_length(value)) OVER w AS running, count(*) OVER () AS seen ` +
      `FROM (${page("key, value")}) p WINDOW w AS (ORDER BY key COLLATE "C" ROWS UNBOUNDED PRECEDING)` +
      `) w WHERE n = 1 OR running <= $${next + 2}::bigint ORDER BY key COLLATE "C"`,
    // The DELETE's snapshot predates the lock wait, but a row changed meanwhile is re-read at its latest
    // version (and re-checked) before it is deleted. The locks' subquery gates the DELETE (a one-time
    // filter), so no row is touched before every lock of the batch is held.
    deletePrefixBatch: `WITH k AS MATERIALIZED (${page("key, key_hash")}), ` +
      `l AS MATERIALIZED (${lockAll("pg_advisory_xact_lock", "(SELECT key_hash FROM k)")}), ` +
      // = ANY(ARRAY(...)): a primary-key lookup per key (a join with k would scan the whole table)
      `d AS (DELETE FROM ${t} t WHERE t.key = ANY(ARRAY(SELECT key FROM k)) AND (SELECT n FROM l) IS NOT NULL ` +
      `AND ${live("now()", "t.")} RETURNING t.key) ` +
      `SELECT (SELECT count(*) FROM k)::int AS seen, (SELECT max(key) FROM k) AS last, ${countOf("d")}::int AS n`
  }
}

/** A JSON number as `JSON.stringify` and PostgreSQL's float8 output print one (no leading `+`, no `NaN`). */
const JSON_NUMBER = "-?[0-9]+(?:[.][0-9]+)?(?:[eE][-+]?[0-9]+)?"

/**
 * `rateLimitStep` of `core/rateLimit.ts` as one statement, on the database's
 * clock (`clock_timestamp()` once the key's lock is held, in whole
 * milliseconds like the Effect `Clock`), in float8 arithmetic written in the
 * same order as the JavaScript so that the numbers are the same doubles.
 *
 * Why it is shaped like this: after waiting for the key's lock, a statement
 * still reads with the snapshot it started with, which may predate what the
 * lock's previous holder committed; only `ON CONFLICT DO UPDATE` sees (and
 * locks) the latest row. So the step runs twice in the text: from no state in
 * the `INSERT`'s row, and from `cur`, the latest row, in the `DO UPDATE`. A
 * live value that is not this algorithm's state is left alone (no row comes
 * back). `RETURNING` sees only the row written, so the statement always
 * writes — the state it found when it refuses, which changes nothing — and
 * says whether it admitted through `updated_at`: the decision's time when
 * the call's tokens were taken, an earlier time (the row's own, or 1 µs
 * before the decision) when not. The state's `expires_at` is the moment it
 * stops mattering, rounded up to the microsecond, so the row is never gone
 * while the state would still count.
 */
const rateLimitStatement = (
  t: string,
  lockCte: string,
  algorithm: RateLimitRequest["algorithm"],
  notifyingWrite: (
    ctes: string | undefined,
    write: string,
    returning: ReadonlyArray<readonly [string, string]>
  ) => string
): string => {
  const [first, second] = STATE_FIELDS[algorithm]
  const statePattern = `^[{]"${first}":(${JSON_NUMBER}),"${second}":(${JSON_NUMBER})[}]$`
  const parsed = (alias: string) =>
    `CASE WHEN octet_length(${alias}.value) <= 200 THEN regexp_match(encode(${alias}.value, 'escape'), '${statePattern}') END`
  const liveAt = (at: string) => `(cur.expires_at IS NULL OR cur.expires_at > ${at})`
  const tokens = "$3::float8"
  const refill = "$4::float8"
  const limit = "$5::float8"
  /** The step from (a, b) — the stored state's two numbers, both NULL when there is none — written before `before`. */
  const step = (a: string, b: string, before: string) => {
    const kept = (x: string, y: string) =>
      `convert_to('{"${first}":' || (${x})::text || ',"${second}":' || (${y})::text || '}', 'UTF8') AS value`
    const expiresAt = (until: string) => `to_timestamp(ceil((${until}) * 1000) / 1000000) AS expires_at`
    const updatedAt = `CASE WHEN w.admitted THEN c.at ELSE least(${before}, c.at - interval '1 microsecond') END AS updated_at`
    if (algorithm === "fixed-window") {
      return `SELECT ${kept("w.count", "w.expires")}, ${expiresAt("w.expires")}, ${updatedAt} ` +
        `FROM (SELECT CASE WHEN ${b} > c.now THEN ${a} ELSE 0 END AS count, ` +
        `CASE WHEN ${b} > c.now THEN ${b} ELSE c.now END AS expires) f, ` +
        // `limit` 0 or NULL: no limit (layerStoreMemory tests `options.limit &&`)
        `LATERAL (SELECT NOT coalesce(${limit} <> 0 AND f.count + ${tokens} > ${limit}, false) AS admitted) d, ` +
        `LATERAL (SELECT d.admitted, CASE WHEN d.admitted THEN f.count + ${tokens} ELSE f.count END AS count, ` +
        `CASE WHEN d.admitted THEN f.expires + ${refill} * ${tokens} ELSE f.expires END AS expires) w`
    }
    return `SELECT ${kept("w.tokens", "w.last")}, ` +
      `${expiresAt(`c.now + greatest(1, w.last + (${limit} - w.tokens) * ${refill} - c.now)`)}, ${updatedAt} ` +
      `FROM (SELECT floor((c.now - ${b}) / ${refill}) AS add) r, ` +
      `LATERAL (SELECT CASE WHEN ${b} IS NULL THEN ${limit} WHEN r.add > 0 THEN least(${limit}, ${a} + r.add) ELSE ${a} END AS tokens, ` +
      `CASE WHEN ${b} IS NULL THEN c.now WHEN r.add > 0 THEN ${b} + r.add * ${refill} ELSE ${b} END AS last) f, ` +
      `LATERAL (SELECT $6::boolean OR f.tokens - ${tokens} >= 0 AS admitted) d, ` +
      `LATERAL (SELECT d.admitted, CASE WHEN d.admitted THEN f.tokens - ${tokens} ELSE f.tokens END AS tokens, f.last) w`
  }
  return notifyingWrite(
    `${lockCte}, ` +
      `c AS MATERIALIZED (SELECT ms AS now, to_timestamp(ms / 1000) AS at FROM l, ` +
      `LATERAL (SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::float8 AS ms) n)`,
    `INSERT INTO ${t} AS cur (key_hash, key, value, expires_at, updated_at) ` +
    `SELECT $1::bigint, $2::text, s.value, s.expires_at, s.updated_at FROM c, ` +
    `LATERAL (${step("NULL::float8", "NULL::float8", "NULL::timestamptz")}) s ` +
    `ON CONFLICT (key) DO UPDATE SET key_hash = excluded.key_hash, (value, expires_at, updated_at) = (` +
    `SELECT s.value, s.expires_at, s.updated_at FROM c, ` +
    `LATERAL (SELECT CASE WHEN ${liveAt("c.at")} THEN ${parsed("cur")} END AS m) p, ` +
    `LATERAL (${step("p.m[1]::float8", "p.m[2]::float8", "cur.updated_at")}) s) ` +
    `WHERE NOT (${liveAt("(SELECT at FROM c)")} AND ${parsed("cur")} IS NULL)`,
    [["encode(value, 'escape')", "kept"], ["updated_at = (SELECT at FROM c)", "admitted"], ["(SELECT now FROM c)", "now"]]
  )
}
