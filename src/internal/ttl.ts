import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import { KvError } from "../KvStore.js"

/** Durations above this are refused: an expiry that far out would not fit a timestamp (about 10,000 years). */
export const MAX_TTL_MILLIS = 10_000 * 365.25 * 24 * 3600 * 1000

const DURATION_STRING = /^(-?\d+(?:\.\d+)?)\s+(nanos?|micros?|millis?|seconds?|minutes?|hours?|days?|weeks?)$/

/**
 * Why a raw duration input is not acceptable, checked before `Duration.decode`,
 * which silently clamps negative and NaN inputs to zero (for a TTL: "no expiry")
 * and throws on malformed ones. `what` names the input in the message ("a TTL").
 */
const rawProblem = (input: unknown, what: string): string | undefined => {
  const tooLarge = `${what} must be at most 10,000 years`
  if (Duration.isDuration(input)) return undefined // a Duration is never negative
  if (typeof input === "number") {
    return Number.isNaN(input) ? `${what} must not be NaN` : input < 0 ? `${what} must not be negative, got ${input}` : undefined
  }
  if (typeof input === "bigint") return input < 0n ? `${what} must not be negative, got ${input}n` : undefined
  if (Array.isArray(input)) {
    if (input.length !== 2 || !input.every((n) => typeof n === "number")) {
      return `${what} given as a pair must be [seconds, nanos] numbers`
    }
    const [seconds, nanos] = input as [number, number]
    if (Number.isNaN(seconds) || Number.isNaN(nanos)) return `${what} must not be NaN`
    if (seconds === -Infinity || nanos === -Infinity) return `${what} must not be negative`
    if (seconds === Infinity || nanos === Infinity) return undefined
    const total = seconds * 1e9 + nanos
    if (total < 0) return `${what} must not be negative, got [${seconds}, ${nanos}]`
    return Number.isFinite(total) ? undefined : tooLarge
  }
  if (typeof input === "string") {
    const match = DURATION_STRING.exec(input)
    if (match === null) return `${what} given as a string must look like "5 seconds", got ${JSON.stringify(input)}`
    const amount = Number(match[1])
    if (amount < 0) return `${what} must not be negative, got ${JSON.stringify(input)}`
    return Number.isFinite(amount) ? undefined : tooLarge
  }
  return `${what} must be a Duration, number, bigint, [seconds, nanos] or string, got ${typeof input}`
}

/** Milliseconds (`undefined` for zero or infinite), or why `input` is refused. */
const decodeMillis = (input: Duration.DurationInput, what: string): Either.Either<number | undefined, string> => {
  const problem = rawProblem(input, what)
  if (problem !== undefined) return Either.left(problem)
  const duration = Duration.decode(input)
  if (!Duration.isFinite(duration) || Duration.isZero(duration)) return Either.right(undefined)
  const millis = Duration.toMillis(duration)
  return millis <= MAX_TTL_MILLIS ? Either.right(millis) : Either.left(`${what} must be at most 10,000 years`)
}

/**
 * Decodes a TTL into milliseconds (`undefined`: no expiry), or a `KvError`
 * (`InvalidArgument`) for a negative, NaN, malformed or absurdly large TTL.
 */
export const decodeTtl = (
  op: string,
  key: string,
  ttl: Duration.DurationInput | undefined
): Either.Either<number | undefined, KvError> =>
  ttl === undefined ? Either.right(undefined) : Either.mapLeft(
    decodeMillis(ttl, "a TTL"),
    (problem) => new KvError({ reason: "InvalidArgument", op, key, message: `Invalid TTL for ${op}: ${problem}` })
  )

/**
 * Decodes a layer's period option (`cleanupInterval`): a positive, finite
 * duration, else a `KvError` (`InvalidArgument`, op `"layer"`).
 */
export const decodeInterval = (
  store: string,
  option: string,
  input: Duration.DurationInput
): Either.Either<Duration.Duration, KvError> => {
  const millis = decodeMillis(input, option)
  if (Either.isRight(millis) && millis.right !== undefined) return Either.right(Duration.millis(millis.right))
  const problem = Either.isLeft(millis) ? millis.left : `${option} must be a positive, finite duration, got ${format(input)}`
  return Either.left(new KvError({ reason: "InvalidArgument", op: "layer", message: `Invalid ${store} option: ${problem}` }))
}

const format = (input: unknown): string =>
  typeof input === "bigint"
    ? `${input}n`
    : typeof input === "number"
    ? String(input)
    : Duration.isDuration(input)
    ? Duration.format(input)
    : JSON.stringify(input) ?? String(input)
