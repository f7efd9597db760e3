/**
 * The fixed SQL texts of `PostgresStore`, built once per layer from validated
 * identifiers. See `postgresStore.ts` for why each statement looks as it does.
 */
import { KvError } from "../KvStore.js"
import { keyHash } from "./hash.js"

/**
 * Table and schema names: a lowercase letter or `_`, then lowercase letters,
 * digits or `_`, at most 63 bytes (PostgreSQL's identifier limit; longer names
 * would be truncated silently). These are exactly the names that mean the same
 * quoted and unquoted, so a person typing them in `psql` needs no quotes. They
 * are quoted in every statement anyway.
 */
const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/

export const invalidIdentifier = (what: "table" | "schema", name: unknown): KvError | undefined =>
  typeof name === "string" && IDENTIFIER.test(name) ? undefined : new KvError({
    reason: "InvalidArgument",
    op: "layer",
    message: `Invalid ${what} name ${typeof name === "string" ? JSON.stringify(name) : String(name)}: ` +
      "use 1 to 63 lowercase letters, digits or underscores, not starting with a digit"
  })

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

export interface Statements {
  readonly qualifiedTable: string
  readonly quotedSchema: string
  /** $1 "schema"."table", $2 "schema" → present, hasschema */
  readonly tableExists: string
  readonly createSchema: string
  /** Creates table and index if missing; run in one transaction, serialised by the advisory lock first */
  readonly createTable: ReadonlyArray<string>
  /** $1 key → value */
  readonly get: string
  /** $1 key_hash, $2 key, $3 value, $4 ttl ms or null; waits for an update of the key in flight */
  readonly set: string
  /** $1 key_hash, $2 key → free, deleted; deletes only when no update of the key is in flight (free) */
  readonly deleteIfFree: string
  /** $1 key_hash: the key's lock, until the transaction ends */
  readonly lockKey: string
  /** $1 key → deleted; inside a transaction holding the key's lock */
  readonly deleteLocked: string
  /** $1 key → value, live; locks the row if there is one */
  readonly readForUpdate: string
  /** $1 key_hash, $2 key, $3 value, $4 ttl ms or null; inside a transaction holding the key's lock */
  readonly upsert: string
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
}

const live = (clock: string, alias = "") => `(${alias}expires_at IS NULL OR ${alias}expires_at > ${clock})`
const expiry = "clock_timestamp() + $4::float8 * interval '1 millisecond'"

export const makeStatements = (options: {
  readonly schema: string
  readonly table: string
  readonly unlogged: boolean
}): Statements => {
  const { schema, table } = options
  const t = `${quote(schema)}.${quote(table)}`
  const indexName = `${table}_expires_at_idx`.length <= 63
    ? `${table}_expires_at_idx`
    : `${table.slice(0, 42)}_expires_${lockId("index", schema, table).replace("-", "n").slice(0, 12)}`
  const upsertTail = `ON CONFLICT (key) DO UPDATE SET key_hash = excluded.key_hash, value = excluded.value, ` +
    `expires_at = excluded.expires_at, updated_at = excluded.updated_at`
  const sweepLock = lockId("sweep", schema, table)
  const expiredIds = (gate: string) =>
    `ARRAY(SELECT ctid FROM ${t} WHERE ${gate}expires_at IS NOT NULL AND expires_at <= now() ` +
    `LIMIT $1 FOR UPDATE SKIP LOCKED)`
  return {
    qualifiedTable: t,
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
    get: `SELECT value FROM ${t} WHERE key = $1 AND ${live("now()")}`,
    set: `WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock($1::bigint)) ` +
      `INSERT INTO ${t} (key_hash, key, value, expires_at, updated_at) ` +
      `SELECT $1::bigint, $2::text, $3::bytea, ${expiry}, clock_timestamp() FROM l ${upsertTail}`,
    deleteIfFree: `WITH l AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($1::bigint) AS free), ` +
      `d AS (DELETE FROM ${t} t USING l WHERE l.free AND t.key = $2 AND ${live("now()", "t.")} RETURNING 1) ` +
      `SELECT l.free AS free, (SELECT count(*) FROM d)::int AS deleted FROM l`,
    lockKey: `SELECT pg_advisory_xact_lock($1::bigint)`,
    deleteLocked: `WITH d AS (DELETE FROM ${t} WHERE key = $1 AND ${live("clock_timestamp()")} RETURNING 1) ` +
      `SELECT count(*)::int AS deleted FROM d`,
    readForUpdate: `SELECT value, ${live("clock_timestamp()")} AS live FROM ${t} WHERE key = $1 FOR UPDATE`,
    upsert: `INSERT INTO ${t} (key_hash, key, value, expires_at, updated_at) ` +
      `VALUES ($1::bigint, $2::text, $3::bytea, ${expiry}, clock_timestamp()) ${upsertTail}`,
    keysInRange: `SELECT key FROM ${t} WHERE key >= $1::text COLLATE "C" AND key < $2::text COLLATE "C" ` +
      `AND ${live("now()")} ORDER BY key COLLATE "C"`,
    keysFrom: `SELECT key FROM ${t} WHERE key >= $1::text COLLATE "C" AND ${live("now()")} ORDER BY key COLLATE "C"`,
    keysAll: `SELECT key FROM ${t} WHERE ${live("now()")} ORDER BY key COLLATE "C"`,
    cleanupBatch: `WITH d AS (DELETE FROM ${t} WHERE ctid = ANY(${expiredIds("")}) AND expires_at <= now() ` +
      `RETURNING 1) SELECT count(*)::int AS n FROM d`,
    sweepBatch: `WITH g AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(${sweepLock}) AS mine), ` +
      `d AS (DELETE FROM ${t} WHERE ctid = ANY(${expiredIds("(SELECT mine FROM g) AND ")}) ` +
      `AND expires_at <= now() RETURNING 1) ` +
      `SELECT g.mine AS mine, (SELECT count(*) FROM d)::int AS n FROM g`,
    beginAndLock: (hash) => `BEGIN; SELECT pg_advisory_xact_lock(${BigInt.asIntN(64, hash).toString()})`
  }
}
