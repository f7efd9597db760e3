/**
 * The keys of a `MemoryStore` in code point order, for listings that must not
 * sort the whole map per call (`keys`, `count`, stream pages): a B+ tree
 * (`sorted-btree`), so a page costs O(log n + page) and adding or removing a
 * key O(log n).
 */
import SortedBTree from "sorted-btree"
import { compareCodePoints } from "./key.js"

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

export const makeOrderedIndex = (keys: Iterable<string>): OrderedIndex => {
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
