import * as Duration from "effect/Duration"
import { describeKind } from "../core/describe.js"

/** Durations above this are refused: an expiry that far out would not fit a timestamp (about 10,000 years). */
export const MAX_TTL_MILLIS = 10_000 * 365.25 * 24 * 3600 * 1000

/** The backends' resolution: a positive TTL below it counts as this much, never as "no expiry". */
const MIN_TTL_MILLIS = 1

const DURATION_STRING = /^(-?\d+(?:\.\d+)?)\s+(nanos?|micros?|millis?|seconds?|minutes?|hours?|days?|weeks?)$/

const UNIT_MILLIS: Record<string, number> = {
  nano: 1e-6,
  micro: 1e-3,
  milli: 1,
  second: 1000,
  minute: 60_000,
  hour: 3_600_000,
  day: 86_400_000,
  week: 604_800_000
}

/** A decoded duration: milliseconds, `undefined` for zero or infinite, or why the input is refused. */
export type Decoded = { readonly millis: number | undefined } | { readonly problem: string }

const ok = (millis: number | undefined): Decoded => ({ millis })
const refuse = (problem: string): Decoded => ({ problem })

/**
 * A finite input whose milliseconds overflow to `Infinity` (`10n ** 400n`,
 * `"1e400 millis"` written out) is too large, not "never expires": only an
 * infinite input means that.
 */
const finite = (millis: number, what: string): Decoded =>
  millis === Infinity ? refuse(`${what} must be at most 10,000 years`) : ok(millis)

/**
 * Milliseconds from the raw input, checked before anything is rounded or
 * clamped: Effect's `Duration.decode` turns negative and NaN inputs into zero
 * (for a TTL: "never expires") and throws on malformed ones, so it is used for
 * `Duration` values only. `NaN` here stands for a negative total.
 */
const rawMillis = (input: unknown, what: string): Decoded => {
  if (typeof input === "number") {
    if (Number.isNaN(input)) return refuse(`${what} must not be NaN`)
    return input < 0 ? refuse(`${what} must not be negative, got ${input}`) : ok(input)
  }
  if (typeof input === "bigint") {
    return input < 0n ? refuse(`${what} must not be negative, got ${input}n`) : finite(Number(input) / 1e6, what) // nanos
  }
  if (typeof input === "string") {
    const match = DURATION_STRING.exec(input)
    if (match === null) {
      return refuse(`${what} given as a string must look like "5 seconds", got ${JSON.stringify(input)}`)
    }
    const amount = Number(match[1])
    if (amount < 0) return refuse(`${what} must not be negative, got ${JSON.stringify(input)}`)
    const millis = amount * UNIT_MILLIS[match[2]!.replace(/s$/, "")]!
    // "0.000…1 nanos" is positive even where the arithmetic underflows to zero
    return millis === 0 && /[1-9]/.test(match[1]!) ? ok(MIN_TTL_MILLIS) : finite(millis, what)
  }
  if (Array.isArray(input)) {
    const [seconds, nanos] = input as Array<unknown>
    if (input.length !== 2 || typeof seconds !== "number" || typeof nanos !== "number") {
      return refuse(`${what} given as a pair must be [seconds, nanos] numbers`)
    }
    if (Number.isNaN(seconds) || Number.isNaN(nanos)) return refuse(`${what} must not be NaN`)
    if (seconds === -Infinity || nanos === -Infinity) return refuse(`${what} must not be negative`)
    if (seconds === Infinity || nanos === Infinity) return ok(Infinity)
    const millis = seconds * 1000 + nanos / 1e6
    if (millis < 0) return refuse(`${what} must not be negative, got [${seconds}, ${nanos}]`)
    // [0, 5e-324] is positive even where the arithmetic underflows to zero
    if (millis === 0 && seconds >= 0 && nanos >= 0 && (seconds > 0 || nanos > 0)) return ok(MIN_TTL_MILLIS)
    return finite(millis, what)
  }
  if (Duration.isDuration(input)) {
    // Effect 4's durations can be negative (down to -Infinity): never "no expiry"
    const millis = Duration.toMillis(input)
    if (!(millis >= 0)) return refuse(`${what} must not be negative, got ${Duration.format(input)}`)
    return Duration.isFinite(input) ? finite(millis, what) : ok(Infinity)
  }
  if (input === "Infinity") return ok(Infinity) // Effect 4's spelling of an infinite input
  if (typeof input === "object" && input !== null) return objectMillis(input as Record<string, unknown>, what)
  return refuse(`${what} must be a Duration, number, bigint, [seconds, nanos] or string, got ${describeKind(input)}`)
}

const OBJECT_UNIT_MILLIS: Record<string, number> = {
  weeks: 604_800_000,
  days: 86_400_000,
  hours: 3_600_000,
  minutes: 60_000,
  seconds: 1000,
  milliseconds: 1,
  microseconds: 1e-3,
  nanoseconds: 1e-6
}

/**
 * Effect 4's `{ seconds: 30, milliseconds: 5 }` form (Effect 3 has none): every field a
 * non-negative finite number, no other field, so a typo never becomes "no expiry".
 */
const objectMillis = (input: Record<string, unknown>, what: string): Decoded => {
  const proto = Object.getPrototypeOf(input)
  if ((proto !== Object.prototype && proto !== null) || Object.keys(input).length === 0) {
    return refuse(`${what} given as an object must be a plain object with fields among ${Object.keys(OBJECT_UNIT_MILLIS).join(", ")}`)
  }
  let millis = 0
  let positive = false
  for (const [field, amount] of Object.entries(input)) {
    const unit = OBJECT_UNIT_MILLIS[field]
    if (unit === undefined) return refuse(`${what} given as an object has an unknown field ${JSON.stringify(field)}`)
    if (amount === undefined) continue
    if (typeof amount !== "number" || !Number.isFinite(amount) || amount < 0) {
      return refuse(`${what} field ${field} must be a non-negative finite number, got ${describeKind(amount)}`)
    }
    if (amount > 0) positive = true
    millis += amount * unit
  }
  return millis === 0 && positive ? ok(MIN_TTL_MILLIS) : finite(millis, what)
}

/**
 * Decodes a duration given by a caller; `what` names it in messages ("a TTL").
 * Zero and infinity decode to `undefined`; a positive amount below 1 ms to 1 ms.
 * Never throws, whatever the input (a Proxy, a throwing getter).
 */
export const decodeDuration = (input: unknown, what: string): Decoded => {
  let decoded: Decoded
  try {
    decoded = rawMillis(input, what)
  } catch {
    return refuse(`${what} could not be read`)
  }
  if ("problem" in decoded) return decoded
  const millis = decoded.millis!
  if (!(millis >= 0)) return refuse(`${what} is not a valid duration`)
  if (millis === 0 || millis === Infinity) return ok(undefined)
  if (millis > MAX_TTL_MILLIS) return refuse(`${what} must be at most 10,000 years`)
  return ok(Math.max(millis, MIN_TTL_MILLIS))
}

/** For messages about options: the input as the caller wrote it, never throwing. */
export const formatDuration = (input: unknown): string => {
  try {
    return typeof input === "bigint"
      ? `${input}n`
      : typeof input === "number"
      ? String(input)
      : Duration.isDuration(input)
      ? Duration.format(input)
      : JSON.stringify(input) ?? describeKind(input)
  } catch {
    return describeKind(input)
  }
}
