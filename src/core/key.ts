import { describeKind } from "./describe.js"

/** The longest key, in UTF-8 bytes: it must fit a PostgreSQL b-tree entry (about 2700 bytes). */
export const MAX_KEY_BYTES = 2048

// With the `u` flag a surrogate class matches only a lone surrogate, never half of a pair.
const LONE_SURROGATE = /\p{Surrogate}/u

/** UTF-8 length of a well-formed string, without encoding it. */
export const utf8Length = (s: string): number => {
  let bytes = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    // each half of a surrogate pair counts 2: 4 bytes per astral code point
    bytes += c < 0x80 ? 1 : c < 0x800 || (c >= 0xd800 && c <= 0xdfff) ? 2 : 3
  }
  return bytes
}

/** Why `key` is not a valid key (never throws, whatever `key` is), or `undefined`. */
export const keyProblem = (key: unknown): string | undefined => {
  if (typeof key !== "string") return `a key must be a string, got ${describeKind(key)}`
  if (key.length === 0) return "a key must not be empty"
  // fast path: short keys cannot exceed the limit even at 3 bytes per UTF-16 unit
  if (key.length * 3 > MAX_KEY_BYTES && utf8Length(key) > MAX_KEY_BYTES) {
    return `a key must be at most ${MAX_KEY_BYTES} UTF-8 bytes, got ${utf8Length(key)}`
  }
  if (key.includes("\u0000")) return "a key must not contain a NUL character"
  if (LONE_SURROGATE.test(key)) return "a key must not contain a lone UTF-16 surrogate"
  return undefined
}

/** Like `keyProblem`, but the empty prefix (everything) is allowed. */
export const prefixProblem = (prefix: unknown): string | undefined => {
  if (prefix === "") return undefined
  const problem = keyProblem(prefix)
  return problem === undefined ? undefined : problem.replace("a key", "a prefix")
}

/**
 * Orders strings by Unicode code point, which is the order of their UTF-8 bytes
 * and of PostgreSQL's `COLLATE "C"`. JavaScript's default sort compares UTF-16
 * units, which puts U+E000..U+FFFF after astral characters.
 */
export const compareCodePoints = (a: string, b: string): number => {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x !== y) {
      // a surrogate (0xD800..0xDFFF) stands for a code point above 0xFFFF
      const xs = x >= 0xd800 && x <= 0xdfff
      const ys = y >= 0xd800 && y <= 0xdfff
      if (xs !== ys) return xs ? 1 : -1
      return x - y
    }
  }
  return a.length - b.length
}
