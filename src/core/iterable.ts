import { describeKind } from "./describe.js"

/** The most keys or entries one batch (`getMany`, `setMany`, `deleteMany`) may hold. */
export const MAX_BATCH_ITEMS = 1_000_000

/** Why a caller's iterable was refused, in words. */
export interface IterableProblem {
  readonly problem: string
  readonly cause?: unknown
}

/**
 * A caller's iterable being read into `items`, slice by slice, so a slow or
 * endless one neither holds the event loop nor fills the heap.
 */
export interface IterableReading {
  readonly items: Array<unknown>
  /**
   * Reads on until the iterable ends (`"done"`), `pause()` says to let others
   * run (`"paused"`: call again), or a problem: it threw, or it holds more than
   * the bound (then at most bound + 1 items were pulled and it is closed).
   * `pause` is asked every 1024 items.
   */
  readonly readOn: (pause: () => boolean) => "done" | "paused" | IterableProblem
  /** Ends the reading early: the iterator's `return`, as a `break` out of `for…of` calls it; never throws. */
  readonly close: () => void
}

/**
 * Starts reading a caller's iterable of `what` ("keys", "entries"), without
 * ever throwing: a string (an iterable of characters, surely a mistake),
 * anything not iterable, and an iterator that throws give the problem in words.
 */
export const startReading = (
  iterable: unknown,
  what: string,
  max: number = MAX_BATCH_ITEMS
): IterableReading | IterableProblem => {
  if (typeof iterable === "string") return { problem: `expected an iterable of ${what}, got a string` }
  let iterator: Iterator<unknown>
  try {
    if (
      iterable === null || (typeof iterable !== "object" && typeof iterable !== "function") ||
      typeof (iterable as Record<symbol, unknown>)[Symbol.iterator] !== "function"
    ) {
      return { problem: `expected an iterable of ${what}, got ${describeKind(iterable)}` }
    }
    iterator = (iterable as Iterable<unknown>)[Symbol.iterator]()
  } catch (cause) {
    return { problem: `reading the ${what} threw`, cause }
  }
  const items: Array<unknown> = []
  let open = true
  const close = (): void => {
    if (!open) return
    open = false
    try {
      iterator.return?.()
    } catch {
      // the reading is over either way; its refusal (or the interruption) says why
    }
  }
  const readOn = (pause: () => boolean): "done" | "paused" | IterableProblem => {
    try {
      for (;;) {
        const next = iterator.next()
        if (next.done === true) {
          open = false
          return "done"
        }
        items.push(next.value)
        if (items.length > max) {
          close()
          return { problem: `a batch holds at most ${max.toLocaleString("en-US")} ${what}, and this one has more` }
        }
        if ((items.length & 1023) === 0 && pause()) return "paused"
      }
    } catch (cause) {
      open = false
      return { problem: `reading the ${what} threw`, cause }
    }
  }
  return { items, readOn, close }
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
