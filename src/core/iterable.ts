import { describeKind } from "./describe.js"

/**
 * Reads a caller's iterable once, into an array, without ever throwing: a
 * string (an iterable of characters, surely a mistake), anything not
 * iterable, and an iterator that throws give the problem in words instead.
 */
export const readIterable = (
  iterable: unknown,
  what: string
): Array<unknown> | { readonly problem: string; readonly cause?: unknown } => {
  if (typeof iterable === "string") return { problem: `expected an iterable of ${what}, got a string` }
  try {
    if (
      iterable === null || (typeof iterable !== "object" && typeof iterable !== "function") ||
      typeof (iterable as Record<symbol, unknown>)[Symbol.iterator] !== "function"
    ) {
      return { problem: `expected an iterable of ${what}, got ${describeKind(iterable)}` }
    }
    return Array.from(iterable as Iterable<unknown>)
  } catch (cause) {
    return { problem: `reading the ${what} threw`, cause }
  }
}

/** The key and value of one `[key, value]` entry, or the problem in words; never throws. */
export const readEntry = (
  entry: unknown
): { readonly key: unknown; readonly value: unknown } | { readonly problem: string; readonly cause?: unknown } => {
  try {
    if (!Array.isArray(entry)) return { problem: `expected a [key, value] pair, got ${describeKind(entry)}` }
    return { key: entry[0], value: entry[1] }
  } catch (cause) {
    return { problem: "reading it threw", cause }
  }
}
