import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import { KvError } from "../KvStore.js"

/** TTLs above this are refused: their expiry would not fit a timestamp (about 10,000 years). */
export const MAX_TTL_MILLIS = 10_000 * 365.25 * 24 * 3600 * 1000

const TOO_LARGE = "a TTL must be at most 10,000 years (omit it for no expiry)"

const DURATION_STRING = /^(-?\d+(?:\.\d+)?)\s+(nanos?|micros?|millis?|seconds?|minutes?|hours?|days?|weeks?)$/

/**
 * Why a raw TTL is not acceptable, checked before `Duration.decode`, which
 * silently clamps negative and NaN inputs to zero (that is, to "no expiry").
 */
const rawTtlProblem = (ttl: unknown): string | undefined => {
  if (Duration.isDuration(ttl)) return undefined // a Duration is never negative
  if (typeof ttl === "number") {
    return Number.isNaN(ttl) ? "a TTL must not be NaN" : ttl < 0 ? `a TTL must not be negative, got ${ttl}` : undefined
  }
  if (typeof ttl === "bigint") return ttl < 0n ? `a TTL must not be negative, got ${ttl}n` : undefined
  if (Array.isArray(ttl)) {
    if (ttl.length !== 2 || !ttl.every((n) => typeof n === "number")) {
      return "a TTL pair must be [seconds, nanos] numbers"
    }
    const [seconds, nanos] = ttl as [number, number]
    if (Number.isNaN(seconds) || Number.isNaN(nanos)) return "a TTL must not be NaN"
    if (seconds === -Infinity || nanos === -Infinity) return "a TTL must not be negative"
    if (seconds === Infinity || nanos === Infinity) return undefined
    const total = seconds * 1e9 + nanos
    if (total < 0) return `a TTL must not be negative, got [${seconds}, ${nanos}]`
    return Number.isFinite(total) ? undefined : TOO_LARGE
  }
  if (typeof ttl === "string") {
    const match = DURATION_STRING.exec(ttl)
    if (match === null) return `a TTL string must look like "5 seconds", got ${JSON.stringify(ttl)}`
    const amount = Number(match[1])
    if (amount < 0) return `a TTL must not be negative, got ${JSON.stringify(ttl)}`
    return Number.isFinite(amount) ? undefined : TOO_LARGE
  }
  return `a TTL must be a Duration, number, bigint, [seconds, nanos] or string, got ${typeof ttl}`
}

/**
 * Decodes a TTL into milliseconds (`undefined`: no expiry), or a `KvError`
 * (`InvalidArgument`) for a negative, NaN, malformed or absurdly large TTL.
 */
export const decodeTtl = (
  op: string,
  key: string,
  ttl: Duration.DurationInput | undefined
): Either.Either<number | undefined, KvError> => {
  if (ttl === undefined) return Either.right(undefined)
  const problem = rawTtlProblem(ttl)
  if (problem === undefined) {
    const duration = Duration.decode(ttl)
    if (!Duration.isFinite(duration) || Duration.isZero(duration)) return Either.right(undefined)
    const millis = Duration.toMillis(duration)
    if (millis <= MAX_TTL_MILLIS) return Either.right(millis)
  }
  return Either.left(
    new KvError({
      reason: "InvalidArgument",
      op,
      key,
      message: `Invalid TTL for ${op}: ${problem ?? TOO_LARGE}`
    })
  )
}
