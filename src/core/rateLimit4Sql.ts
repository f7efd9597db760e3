/**
 * The Effect 4 line's rate-limiter steps (`rateLimit4.ts`) as one PostgreSQL
 * statement each, decided on the database's clock under the key's advisory
 * lock, so app instances whose clocks disagree still share one window.
 *
 * The shape follows the Effect 3 line's `rateLimitStatement` (postgresSql.ts),
 * for the same reason: after waiting for the key's lock a statement still reads
 * with the snapshot it started with, which may predate what the lock's previous
 * holder committed; only `ON CONFLICT DO UPDATE` sees (and locks) the latest row.
 * So the step runs twice in the text: from no state in the `INSERT`'s row, and
 * from `cur`, the latest row, in the `DO UPDATE`.
 *
 * The statement always writes the state after the step — an ended one (its
 * `expiresAt` not after now) where the JavaScript step keeps none — so that
 * `rateLimit4AnswerOf` can read the answer back from `RETURNING`, which sees
 * only the row written. Whether a fixed window or token bucket took the call's
 * tokens comes back through `updated_at`, as in the Effect 3 statement: the
 * decision's time when taken, an earlier one when not. The row's `expires_at` is
 * the state's `expiresAt` rounded up to the microsecond, so the row lives
 * exactly as long as the state counts.
 *
 * Arithmetic is float8, written in the JavaScript's order, so the numbers are
 * the same doubles; `now` is `clock_timestamp()` once the lock is held, in whole
 * milliseconds as the Effect `Clock` gives them. States are read with regular
 * expressions (a stored value that is not JSON must not make the statement
 * fail): a flat object of numbers and one lowercase string, in any field order,
 * no spaces — what `JSON.stringify` and this statement write. A live value of
 * another shape is left alone and no row comes back.
 */
import { GRACE_MILLIS, MAX_WINDOW_MILLIS } from "./rateLimit4.js"
import type { RateLimit4Request } from "./rateLimit4.js"

/**
 * The statements, by kind of call. All take $1 key_hash, $2 key, then:
 * fixedWindow $3 tokens, $4 refill ms, $5 limit (null: none);
 * tokenBucket $3 tokens, $4 refill ms, $5 limit, $6 allow overflow;
 * adaptiveConsume $3 tokens, $4 fallback window ms;
 * adaptiveFeedback (a 429 with a Retry-After) $3 epoch, $4 tokens, $5 Retry-After ms, clamped.
 * Each returns kept (the state's text), admitted, now (ms) — no row for a live foreign value.
 */
export type RateLimit4Statements = { readonly [K in RateLimit4Request["kind"]]: string }

/** A JSON number as `JSON.stringify` and PostgreSQL's float8 output print one. */
const NUMBER = "-?(?:0|[1-9][0-9]*)(?:[.][0-9]+)?(?:[eE][-+]?[0-9]+)?"
const MEMBER = `"[A-Za-z]+":(?:${NUMBER}|"[a-z]+")`
const FLAT_OBJECT = `^[{]${MEMBER}(?:,${MEMBER})*[}]$`

const FIELDS = {
  fixedWindow: ["count", "expiresAt"],
  tokenBucket: ["tokens", "lastRefill", "expiresAt"],
  adaptive: [
    "epoch",
    "cooldownUntil",
    "learningStartedAt",
    "observedTokens",
    "learnedLimit",
    "learnedWindowMillis",
    "expiresAt"
  ]
} as const

type Fields = Record<string, string>

/** `CASE` per field: the first case whose condition holds gives every field. */
const cases = (names: ReadonlyArray<string>, branches: ReadonlyArray<readonly [string, Fields]>, otherwise: Fields): Fields =>
  Object.fromEntries(names.map((name) => [
    name,
    `CASE ${branches.map(([when, fields]) => `WHEN ${when} THEN ${fields[name]}`).join(" ")} ELSE ${otherwise[name]} END`
  ]))

/** One step: from the state's fields (`p.<field>`, `p.present`: a live state) to the fields kept and whether tokens were taken. */
interface StepText {
  readonly fields: ReadonlyArray<string>
  readonly withPhase: boolean
  /** LATERAL subqueries after `p`; the last one is `w` with every field and `admitted` */
  readonly body: string
}

const fixedWindow: StepText = {
  fields: FIELDS.fixedWindow,
  withPhase: false,
  body: `LATERAL (SELECT CASE WHEN p.present THEN p.count ELSE 0 END AS count, ` +
    `CASE WHEN p.present THEN p."expiresAt" ELSE c.now END AS expires) f, ` +
    // a limit of 0 is a limit (Effect 4's layerStoreMemory tests `limit !== undefined`)
    `LATERAL (SELECT NOT coalesce($5::float8 IS NOT NULL AND f.count + $3::float8 > $5::float8, false) AS admitted) d, ` +
    `LATERAL (SELECT d.admitted, CASE WHEN d.admitted THEN f.count + $3::float8 ELSE f.count END AS count, ` +
    `CASE WHEN NOT d.admitted THEN f.expires ` +
    `WHEN $5::float8 IS NULL THEN f.expires + $4::float8 * $3::float8 ` +
    `WHEN f.expires = c.now AND $3::float8 > 0 THEN c.now + $4::float8 * $5::float8 ` +
    `ELSE f.expires END AS "expiresAt") w`
}

const tokenBucket: StepText = {
  fields: FIELDS.tokenBucket,
  withPhase: false,
  body: `LATERAL (SELECT CASE WHEN p.present THEN p.tokens ELSE $5::float8 END AS tokens, ` +
    `CASE WHEN p.present THEN p."lastRefill" ELSE c.now END AS last) f, ` +
    `LATERAL (SELECT floor((c.now - f.last) / $4::float8) AS add) r, ` +
    `LATERAL (SELECT CASE WHEN r.add > 0 THEN least($5::float8, f.tokens + r.add) ELSE f.tokens END AS tokens, ` +
    `CASE WHEN r.add > 0 THEN f.last + r.add * $4::float8 ELSE f.last END AS last) g, ` +
    // a full bucket restarts its refill interval now
    `LATERAL (SELECT g.tokens, CASE WHEN g.tokens >= $5::float8 THEN c.now ELSE g.last END AS last, ` +
    `g.tokens - $3::float8 AS remaining) h, ` +
    `LATERAL (SELECT $6::boolean OR h.remaining >= 0 AS admitted) d, ` +
    `LATERAL (SELECT d.admitted, k.tokens, h.last AS "lastRefill", ` +
    `h.last + ceil($5::float8 - k.tokens) * $4::float8 AS "expiresAt" ` +
    `FROM (SELECT CASE WHEN d.admitted THEN h.remaining ELSE h.tokens END AS tokens) k) w`
}

const ADAPTIVE = ["phase", ...FIELDS.adaptive]
const same: Fields = Object.fromEntries(ADAPTIVE.map((name) => [name, name === "phase" ? "p.phase" : `p."${name}"`]))
/** No state: an ended cooldown, read back as "inactive". */
const ended: Fields = {
  phase: "'cooldown'",
  epoch: "0",
  cooldownUntil: "c.now",
  learningStartedAt: "0",
  observedTokens: "0",
  learnedLimit: "0",
  learnedWindowMillis: "0",
  expiresAt: "c.now"
}
const cooldown = (epoch: string, until: string): Fields => ({
  phase: "'cooldown'",
  epoch,
  cooldownUntil: until,
  learningStartedAt: "0",
  observedTokens: "0",
  learnedLimit: "0",
  learnedWindowMillis: "0",
  expiresAt: `${until} + ${GRACE_MILLIS}`
})
const clampWindow = (millis: string) => `CASE WHEN ${millis} <= 0 THEN 1 ELSE least(${millis}, ${MAX_WINDOW_MILLIS}) END`
const columns = (fields: Fields, extra: string) =>
  `SELECT ${ADAPTIVE.map((name) => `${fields[name]} AS "${name}"`).join(", ")}, ${extra}`

const adaptiveConsume: StepText = {
  fields: FIELDS.adaptive,
  withPhase: true,
  body: `LATERAL (SELECT p."learnedWindowMillis" / nullif(p."learnedLimit", 0) AS refill, ` +
    `p."cooldownUntil" <= c.now AS over) q, ` +
    `LATERAL (SELECT CASE WHEN q.over THEN 0 ELSE p."observedTokens" END + $3::float8 AS observed, ` +
    `CASE WHEN q.over THEN c.now ELSE p."cooldownUntil" END + q.refill * $3::float8 AS until) m, ` +
    `LATERAL (${
      columns(
        cases(ADAPTIVE, [
          ["NOT p.present", ended],
          ["p.phase = 'cooldown' AND p.\"cooldownUntil\" > c.now", same],
          ["p.phase = 'cooldown'", {
            ...same,
            phase: "'learning'",
            epoch: "p.epoch + 1",
            learningStartedAt: "c.now",
            observedTokens: "$3::float8",
            expiresAt: `c.now + $4::float8 + ${GRACE_MILLIS}`
          }],
          ["p.phase = 'learning'", { ...same, observedTokens: `p."observedTokens" + $3::float8` }]
        ], { ...same, observedTokens: "m.observed", cooldownUntil: "m.until" }),
        "true AS admitted"
      )
    }) w`
}

const adaptiveFeedback: StepText = {
  fields: FIELDS.adaptive,
  withPhase: true,
  body: `LATERAL (SELECT c.now + $5::float8 AS until, p."observedTokens" - $4::float8 AS accepted, ` +
    `${clampWindow(`c.now - p."learningStartedAt" + $5::float8`)} AS learned) q, ` +
    `LATERAL (${
      columns(
        cases(ADAPTIVE, [
          ["NOT p.present AND $3::float8 <> 0", ended],
          ["NOT p.present", cooldown("0", "q.until")],
          ["p.epoch <> $3::float8", same],
          ["p.phase = 'cooldown'", {
            ...same,
            cooldownUntil: `greatest(p."cooldownUntil", q.until)`,
            expiresAt: `greatest(p."cooldownUntil", q.until) + ${GRACE_MILLIS}`
          }],
          ["p.phase = 'learning' AND q.accepted <= 0", cooldown("p.epoch", "q.until")],
          ["p.phase = 'learning'", {
            phase: "'learned'",
            epoch: "p.epoch + 1",
            cooldownUntil: `p."learningStartedAt" + q.learned`,
            learningStartedAt: `p."learningStartedAt"`,
            observedTokens: "q.accepted",
            learnedLimit: "q.accepted",
            learnedWindowMillis: "q.learned",
            expiresAt: `c.now + q.learned + ${GRACE_MILLIS}`
          }]
        ], cooldown("p.epoch", "q.until")),
        "true AS admitted"
      )
    }) w`
}

const STEPS: { readonly [K in RateLimit4Request["kind"]]: StepText } = {
  fixedWindow,
  tokenBucket,
  adaptiveConsume,
  adaptiveFeedback
}

const statement = (t: string, step: StepText): string => {
  const text = (alias: string) => `encode(${alias}.value, 'escape')`
  const liveRow = (at: string) => `(cur.expires_at IS NULL OR cur.expires_at > ${at})`
  /** The stored text when it is a flat object small enough to be a state, else NULL. */
  const candidate = `CASE WHEN octet_length(cur.value) <= 1000 AND ${text("cur")} ~ '${FLAT_OBJECT}' THEN ${text("cur")} END`
  const field = (name: string) => `(regexp_match(x.t, '[{,]"${name}":(${NUMBER})[,}]'))[1]::float8 AS "${name}"`
  const phase = `(regexp_match(x.t, '[{,]"phase":"(cooldown|learning|learned)"[,}]'))[1] AS phase`
  const parsedFields = [...step.fields.map(field), ...(step.withPhase ? [phase] : [])].join(", ")
  const valid = [...step.fields.map((name) => `pr."${name}" IS NOT NULL`), ...(step.withPhase ? ["pr.phase IS NOT NULL"] : [])]
    .join(" AND ")
  /** `p`: the state's fields and `present` (a live state), from `x.t` (NULL: no state). */
  const parse = `LATERAL (SELECT ${parsedFields}) pr, ` +
    `LATERAL (SELECT pr.*, coalesce(${valid} AND pr."expiresAt" > c.now, false) AS present) p`
  const nullFields = [...step.fields.map((name) => `NULL::float8 AS "${name}"`), ...(step.withPhase ? ["NULL::text AS phase"] : [])]
    .join(", ")
  const kept = `convert_to('{' || ${
    [...(step.withPhase ? [`'"phase":"' || w.phase || '"'`] : []), ...step.fields.map((name) => `'"${name}":' || (w."${name}")::text`)]
      .join(" || ',' || ")
  } || '}', 'UTF8')`
  /** The row written from the step `w`; `before`: the row's own `updated_at` (NULL: none). */
  const written = (before: string) =>
    `${kept} AS value, to_timestamp(ceil(w."expiresAt" * 1000) / 1000000) AS expires_at, ` +
    `CASE WHEN w.admitted THEN c.at ELSE least(${before}, c.at - interval '1 microsecond') END AS updated_at`
  const validCur = `(SELECT ${valid} FROM (SELECT ${candidate} AS t) x, LATERAL (SELECT ${parsedFields}) pr)`
  return `WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock($1::bigint)), ` +
    `c AS MATERIALIZED (SELECT ms AS now, to_timestamp(ms / 1000) AS at FROM l, ` +
    `LATERAL (SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::float8 AS ms) n) ` +
    `INSERT INTO ${t} AS cur (key_hash, key, value, expires_at, updated_at) ` +
    `SELECT $1::bigint, $2::text, s.value, s.expires_at, s.updated_at FROM c, ` +
    `LATERAL (SELECT ${written("NULL::timestamptz")} FROM (SELECT ${nullFields}, false AS present) p, ${step.body}) s ` +
    `ON CONFLICT (key) DO UPDATE SET key_hash = excluded.key_hash, (value, expires_at, updated_at) = (` +
    `SELECT ${written("cur.updated_at")} FROM c, ` +
    `LATERAL (SELECT CASE WHEN ${liveRow("c.at")} THEN ${candidate} END AS t) x, ${parse}, ${step.body}) ` +
    // a live value that is not this kind's state is left alone: no row comes back
    `WHERE NOT (${liveRow("(SELECT at FROM c)")} AND NOT ${validCur}) ` +
    `RETURNING encode(value, 'escape') AS kept, updated_at = (SELECT at FROM c) AS admitted, (SELECT now FROM c) AS now`
}

/** The statements on a store's table: `qualifiedTable` of its `makeStatements`. */
export const makeRateLimit4Statements = (qualifiedTable: string): RateLimit4Statements => ({
  fixedWindow: statement(qualifiedTable, STEPS.fixedWindow),
  tokenBucket: statement(qualifiedTable, STEPS.tokenBucket),
  adaptiveConsume: statement(qualifiedTable, STEPS.adaptiveConsume),
  adaptiveFeedback: statement(qualifiedTable, STEPS.adaptiveFeedback)
})
