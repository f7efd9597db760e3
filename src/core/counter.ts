/**
 * Counters for `increment`: an integer stored as its canonical decimal text in
 * UTF-8 (what `String(n)` prints), within ±(2^53 − 1).
 */

/** Canonical decimal text of a safe integer: no `+`, no leading zeros, no `-0`, at most 16 digits. */
const CANONICAL = /^(?:0|-?[1-9][0-9]{0,15})$/

/** The integer stored in `bytes`, or `undefined` when they are not canonical decimal text of a safe integer. */
export const parseCounter = (bytes: Uint8Array): number | undefined => {
  if (bytes.length === 0 || bytes.length > 17) return undefined
  const text = String.fromCharCode(...bytes)
  if (!CANONICAL.test(text)) return undefined
  const n = Number(text)
  return Number.isSafeInteger(n) ? n : undefined
}

/** The bytes of `String(n)`. */
export const encodeCounter = (n: number): Uint8Array => {
  const text = String(n)
  const bytes = new Uint8Array(text.length)
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i)
  return bytes
}

export const NOT_A_COUNTER = "the stored value is not an integer in canonical decimal text"

/** `current + by`, or why it cannot be stored. */
export const addToCounter = (current: number, by: number): number | string => {
  const next = current + by
  return Number.isSafeInteger(next) ? next : `the result ${current} + ${by} is outside ±(2^53 − 1)`
}
