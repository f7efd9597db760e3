/**
 * The shape check of an options object given to a layer or constructor: every
 * name known, every value of the expected type. A caller in plain JavaScript
 * who writes `{ tableName: "my_kv" }` or `{ unlogged: "yes" }` must hear about
 * it instead of silently getting the defaults. Ranges (a positive integer, a
 * valid identifier, a positive duration) are checked by the code that uses the
 * value; this module only says whether the options can be read as declared.
 *
 * Pure TypeScript, no Effect import: each Effect line wraps the problem in its
 * own `KvError`.
 */
import { describeKind } from "./describe.js"

/** The type an option's value must have (`undefined` is always allowed: the default). */
export type OptionKind = "boolean" | "string" | "number" | "duration"

/** Option name → the type of its value. */
export type OptionSpec = Readonly<Record<string, OptionKind>>

const EXPECTED: Record<OptionKind, string> = {
  boolean: "a boolean",
  string: "a string",
  number: "a number",
  duration: "a Duration, number (milliseconds), bigint (nanoseconds), [seconds, nanos] or string such as \"5 seconds\""
}

/** A `Duration.DurationInput` by its type only; its value is checked where it is decoded. */
const isDurationLike = (value: unknown): boolean =>
  typeof value === "number" || typeof value === "bigint" || typeof value === "string" ||
  (typeof value === "object" && value !== null)

/** "a string", "an array", "null": the kind of a value for a message, without touching it. */
const kindWithArticle = (value: unknown): string => {
  if (Array.isArray(value)) return "an array"
  const kind = describeKind(value)
  return kind === "null" || kind === "undefined" || kind === "an object" ? kind : `a ${kind}`
}

/** "Unknown option tableName for PostgresStore.layer (did you mean table?)". */
export const unknownOption = (where: string, name: string, known: ReadonlyArray<string>): string => {
  const suggestion = closestName(name, known)
  return `Unknown option ${name} for ${where}` +
    (suggestion !== undefined
      ? ` (did you mean ${suggestion}?)`
      : known.length > 0
      ? ` (known options: ${known.join(", ")})`
      : " (it takes no options)")
}

const hasKind = (value: unknown, kind: OptionKind): boolean =>
  kind === "duration" ? isDurationLike(value) : typeof value === kind

/** Edit distance, for "did you mean": names are short, so the quadratic table is nothing. */
const distance = (a: string, b: string): number => {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!
      row[j] = Math.min(above + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1))
      diagonal = above
    }
  }
  return row[b.length]!
}

/**
 * The known name closest to `name`: one that differs only in case, contains it
 * or is contained in it (`tableName` → `table`), or is at most a third of its
 * letters away (`cleanupIntervall` → `cleanupInterval`).
 */
export const closestName = (name: string, known: ReadonlyArray<string>): string | undefined => {
  const lower = name.toLowerCase()
  let best: { readonly name: string; readonly score: number } | undefined
  for (const candidate of known) {
    const other = candidate.toLowerCase()
    const score = other === lower
      ? 0
      : lower.includes(other) || other.includes(lower)
      ? 1
      : distance(lower, other) <= Math.max(1, Math.floor(other.length / 3))
      ? 1 + distance(lower, other)
      : Infinity
    if (score < (best?.score ?? Infinity)) best = { name: candidate, score }
  }
  return best?.name
}

/** Why `options` is neither absent (`undefined`, `null`) nor a plain object, or `undefined`. */
export const objectProblem = (where: string, options: unknown): string | undefined =>
  options === undefined || options === null || (typeof options === "object" && !Array.isArray(options))
    ? undefined
    : `Invalid options for ${where}: expected an object, got ${kindWithArticle(options)}`

/**
 * Why `options` cannot be taken as options of `where` (e.g.
 * `"PostgresStore.layer"`), or `undefined` when they can. `undefined` and
 * `null` mean "no options"; anything else must be a plain object (not an
 * array, not a function) whose own enumerable names are all in `spec`, each
 * value `undefined` or of its kind. Never throws: an object whose properties
 * cannot be read (a Proxy, a throwing getter) is a problem, not an exception.
 */
export const optionsProblem = (where: string, options: unknown, spec: OptionSpec): string | undefined => {
  const notAnObject = objectProblem(where, options)
  if (notAnObject !== undefined || options === undefined || options === null) return notAnObject
  try {
    const known = Object.keys(spec)
    for (const name of Object.keys(options)) {
      if (!Object.hasOwn(spec, name)) {
        return unknownOption(where, name, known)
      }
      const value: unknown = (options as Record<string, unknown>)[name]
      const kind = spec[name]!
      if (value !== undefined && !hasKind(value, kind)) {
        return `Invalid option ${name}: expected ${EXPECTED[kind]}, got ${kindWithArticle(value)} (${where})`
      }
    }
    return undefined
  } catch {
    return `Invalid options for ${where}: they could not be read`
  }
}

/** The options of `MemoryStore.layer`, `make` and `layerConfig`. */
export const MEMORY_STORE_OPTIONS: OptionSpec = {
  cleanupInterval: "duration",
  maxEntries: "number",
  redactKeys: "boolean"
}

/** The options of `PostgresStore.layer`, `make` and `layerConfig`. */
export const POSTGRES_STORE_OPTIONS: OptionSpec = {
  table: "string",
  schema: "string",
  unlogged: "boolean",
  cleanupInterval: "duration",
  createTable: "boolean",
  notifyChanges: "boolean",
  redactKeys: "boolean"
}

/** The options of `KvStore.make(driver, options)`. */
export const MAKE_OPTIONS: OptionSpec = {
  cleanupInterval: "duration",
  redactKeys: "boolean"
}

/** The options of the bridges (`KvKeyValueStore`, `KvPersistence`, `KvRateLimiter`). */
export const BRIDGE_OPTIONS: OptionSpec = {
  prefix: "string"
}

/** The options of `NearCache.layer` and `make`. */
export const NEAR_CACHE_OPTIONS: OptionSpec = {
  maxEntries: "number",
  maxStaleness: "duration"
}
