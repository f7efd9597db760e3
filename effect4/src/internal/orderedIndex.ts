/**
 * The keys of a `MemoryStore` in code point order, for listings that must not
 * sort the whole map per call (`keys`, `count`, stream pages): a B+ tree
 * (`sorted-btree`), so a page costs O(log n + page) and adding or removing a
 * key O(log n).
 *
 * The index is built lazily, the first time a listing asks for it, and in
 * slices that yield to the event loop: a million keys take seconds to insert,
 * which in one go would stall every timer and socket of the process.
 */
import * as Effect from "effect/Effect"
import SortedBTree from "sorted-btree"
import { compareCodePoints } from "../core/key.js"

type BTree = import("sorted-btree").default<string, undefined>
type BTreeClass = new(entries?: Array<[string, undefined]>, compare?: (a: string, b: string) => number) => BTree

// A CommonJS module: Node's ESM loader gives `module.exports` as the default
// import (the class is its `default`); bundlers and vitest may give the class.
const BTreeClass: BTreeClass = (SortedBTree as unknown as { readonly default?: BTreeClass }).default ??
  (SortedBTree as unknown as BTreeClass)

export interface OrderedIndex {
  readonly add: (key: string) => void
  readonly remove: (key: string) => void
  /**
   * Calls `visit` on the keys starting with `prefix` and greater than `after`
   * (when given), ascending, until it returns `false` or the keys run out.
   */
  readonly scan: (prefix: string, after: string | undefined, visit: (key: string) => boolean) => void
}

export const makeOrderedIndex = (keys: Iterable<string> = []): OrderedIndex => {
  const tree = new BTreeClass(undefined, compareCodePoints)
  for (const key of keys) tree.set(key, undefined)
  return {
    add: (key) => {
      tree.set(key, undefined)
    },
    remove: (key) => {
      tree.delete(key)
    },
    scan: (prefix, after, visit) => {
      const from = after !== undefined && compareCodePoints(after, prefix) > 0 ? after : prefix
      for (const key of from === "" ? tree.keys() : tree.keys(from)) {
        if (key === after) continue
        if (!key.startsWith(prefix)) return
        if (!visit(key)) return
      }
    }
  }
}

/** A build slice runs for about this long before yielding (by time: cold code runs far slower than warm). */
const BUILD_SLICE_MILLIS = 2
/** Keys inserted between two looks at the wall clock inside a slice. */
const BUILD_CHECK_EVERY = 256

/**
 * Gives the event loop a turn. `Effect.yieldNow` alone is not enough: Effect's
 * scheduler resumes yielded fibers on microtasks for up to 2048 rounds, and
 * timers and I/O would wait for the whole build.
 */
const yieldToEventLoop: Effect.Effect<void> = Effect.callback<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/**
 * An ordered index of the keys of a `Map`, built on first use.
 *
 * The owner calls `maintained?.add(key)` when a key enters the map and
 * `maintained?.remove(key)` when one leaves it. `maintained` is `undefined`
 * until the first `ready`, so a map that is never listed pays nothing; from
 * the moment the build starts it is the tree being built, and every write
 * goes into it at once, while the build inserts the map's keys through one
 * live `Map` iterator, slice by slice. That converges on exactly the map's
 * keys:
 *
 * - a key in the map at the end either was written (added) after the build
 *   started, and went into the tree then, or has been in the map since before
 *   the build, and a Map iterator visits every entry not deleted before it
 *   reaches it (re-inserted entries move to the end and are visited again —
 *   adding twice is harmless);
 * - a key that leaves the map leaves the tree with it, and the iterator never
 *   visits a deleted entry, so the build cannot bring one back.
 *
 * Listings wait for `ready`. Several may run build slices at once (they share
 * the iterator), and an interrupted build is continued by the next listing.
 */
export interface LazyOrderedIndex {
  /** The index kept up to date by the owner's writes: the tree being built, or built; `undefined` before the first listing. */
  readonly maintained: OrderedIndex | undefined
  /** The complete index, inserting the map's remaining keys first in slices that yield to the event loop. */
  readonly ready: Effect.Effect<OrderedIndex>
}

export const makeLazyOrderedIndex = (mapKeys: () => Iterator<string>): LazyOrderedIndex => {
  let maintained: OrderedIndex | undefined
  let pending: Iterator<string> | undefined
  let complete: Effect.Effect<OrderedIndex> | undefined

  /** Inserts keys for about one slice; whether the build is done. */
  const buildSlice = (index: OrderedIndex): boolean => {
    if (pending === undefined) return true
    // the wall clock, not the Effect clock: this bounds real time spent, and a TestClock stands still
    const started = performance.now()
    for (let i = 1;; i++) {
      const next = pending.next()
      if (next.done === true) {
        pending = undefined
        complete = Effect.succeed(index)
        return true
      }
      index.add(next.value)
      if (i % BUILD_CHECK_EVERY === 0 && performance.now() - started >= BUILD_SLICE_MILLIS) return false
    }
  }

  const build = (index: OrderedIndex): Effect.Effect<OrderedIndex> =>
    Effect.flatMap(
      Effect.sync(() => buildSlice(index)),
      (done) => (done ? Effect.succeed(index) : Effect.andThen(yieldToEventLoop, build(index)))
    )

  const ready: Effect.Effect<OrderedIndex> = Effect.suspend(() => {
    if (complete !== undefined) return complete
    if (maintained === undefined) {
      maintained = makeOrderedIndex()
      pending = mapKeys()
    }
    return build(maintained)
  })

  return {
    get maintained() {
      return maintained
    },
    ready
  }
}
