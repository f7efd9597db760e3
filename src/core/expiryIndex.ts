/**
 * Which keys expire when, in expiry order: a binary min-heap of
 * (expiresAt, key) nodes, so that a sweep pops only the due entries (O(expired ·
 * log n)) instead of visiting every entry of the store, and a listing can tell
 * from the earliest expiry alone that nothing has expired yet.
 *
 * Deletion is lazy. When a key's expiry changes or the key leaves the store,
 * its owner calls `invalidate()` instead of finding the node: the old node stays
 * in the heap, stale, and is skipped (dropped) when it reaches the top. The
 * owner's `isCurrent(key, expiresAt)` tells a stale node from a current one.
 *
 * When stale nodes outnumber current ones (and the heap is not tiny) the heap
 * is compacted, incrementally and in place: a scan walks the heap's array,
 * removing stale nodes (and second nodes of a key) one at a time the way a heap
 * removes any node, so it is a valid heap after every step. Every later
 * `add`/`invalidate` moves the scan a few nodes on, and the owner's sweeper
 * moves it in time-bounded slices (`compactSome`). So no single call does O(n)
 * work — compacting two million nodes in one step stalled the event loop for
 * 2.5 s — nothing large is allocated (growing a fresh million-node array cost
 * 90–140 ms of page faults in one `push` here), and the heap still holds at
 * most about three times the expiring keys.
 *
 * Pure: no Effect import (`src/core` is compiled by both Effect lines).
 */

/** A heap smaller than this is never compacted: its stale nodes cost little, a compaction would cost more. */
const COMPACT_MIN_NODES = 1024

/**
 * Nodes each `add`/`invalidate` looks at while a compaction runs. A compaction
 * starts with about twice as many nodes as current ones (S ≈ 2C) and ends after
 * at most S / 8 writes, which add at most S / 8 nodes and remove at most as many
 * current keys: the heap stays under 3 × the current nodes (plus the minimum).
 */
const COMPACT_NODES_PER_WRITE = 8

export interface ExpiryIndex {
  /** Nodes in the heap, stale ones included. */
  readonly size: () => number
  /** Nodes believed current: added, not invalidated nor popped. */
  readonly current: () => number
  /** Records that `key` expires at `expiresAt` (clock millis). */
  readonly add: (key: string, expiresAt: number) => void
  /** Records that one node added before no longer describes its key (expiry changed, key removed). */
  readonly invalidate: () => void
  /**
   * A lower bound of the earliest current expiry, `undefined` when nothing
   * expires. Drops at most a few stale nodes from the top (a listing calls
   * it and must stay cheap), so it may return a stale node's time: earlier than
   * the true earliest, never later.
   */
  readonly earliest: () => number | undefined
  /**
   * Pops the earliest current node when it is due (`expiresAt <= now`), and
   * returns its key, dropping the stale nodes above it; `undefined` when no
   * current node is due. The popped node no longer counts as current: the
   * owner removes the key without calling `invalidate()`.
   */
  readonly popDue: (now: number) => string | undefined
  /** Whether a compaction is under way (nodes are left to look at). */
  readonly compacting: () => boolean
  /**
   * Starts a compaction when the heap is mostly stale (pops alone never start
   * one), then looks at up to `maxNodes` nodes of the compaction under way;
   * whether it is now done (also when none was under way). For a sweeper that
   * finishes the compaction in slices between event-loop turns.
   */
  readonly compactSome: (maxNodes: number) => boolean
}

/** Stale nodes `earliest` drops before it settles for a lower bound. */
const EARLIEST_DROP_LIMIT = 16

/**
 * Parallel arrays rather than an array of node objects: no allocation per node.
 * `marks` holds, per node, the number of the compaction that kept or added it
 * (see `makeExpiryIndex`).
 */
interface Heap {
  readonly times: Array<number>
  readonly keys: Array<string>
  readonly marks: Array<number>
}

const swap = (heap: Heap, i: number, j: number): void => {
  const { keys, marks, times } = heap
  const t = times[i]!
  times[i] = times[j]!
  times[j] = t
  const k = keys[i]!
  keys[i] = keys[j]!
  keys[j] = k
  const m = marks[i]!
  marks[i] = marks[j]!
  marks[j] = m
}

/** Moves the node at `from` up to where it belongs; whether it moved. */
const siftUp = (heap: Heap, from: number): boolean => {
  const times = heap.times
  let i = from
  while (i > 0) {
    const parent = (i - 1) >> 1
    if (times[parent]! <= times[i]!) break
    swap(heap, i, parent)
    i = parent
  }
  return i !== from
}

const siftDown = (heap: Heap, from: number): void => {
  const times = heap.times
  const n = times.length
  let i = from
  for (;;) {
    const left = 2 * i + 1
    if (left >= n) return
    const right = left + 1
    const child = right < n && times[right]! < times[left]! ? right : left
    if (times[i]! <= times[child]!) return
    swap(heap, i, child)
    i = child
  }
}

const push = (heap: Heap, key: string, expiresAt: number, mark: number): void => {
  heap.times.push(expiresAt)
  heap.keys.push(key)
  heap.marks.push(mark)
  siftUp(heap, heap.times.length - 1)
}

/**
 * Removes the node at `i`: the last node takes its place and moves up or down
 * to where it belongs. Whether it moved up (then `i` holds a former ancestor).
 */
const removeAt = (heap: Heap, i: number): boolean => {
  const { keys, marks, times } = heap
  const lastTime = times.pop()!
  const lastKey = keys.pop()!
  const lastMark = marks.pop()!
  if (i === times.length) return false
  times[i] = lastTime
  keys[i] = lastKey
  marks[i] = lastMark
  if (siftUp(heap, i)) return true
  siftDown(heap, i)
  return false
}

/**
 * Sets this many small `Set`s stand in for one: a `Set` that grows past half a
 * million keys rehashes them all in one step (74 ms measured at 524,288 keys),
 * a stall the compaction exists to avoid.
 */
const KEY_SET_PARTS = 64

/** A set of keys spread over `KEY_SET_PARTS` sets by a hash of the key, so no one set grows large. */
const makeKeySet = () => {
  const parts: Array<Set<string> | undefined> = []
  const part = (key: string): Set<string> => {
    // FNV-1a over the UTF-16 code units: cheap, and spreads keys that differ only in a few characters
    let h = 0x811c9dc5
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
    const index = (h >>> 0) % KEY_SET_PARTS
    return parts[index] ??= new Set()
  }
  return {
    has: (key: string): boolean => part(key).has(key),
    add: (key: string): void => {
      part(key).add(key)
    }
  }
}

export const makeExpiryIndex = (isCurrent: (key: string, expiresAt: number) => boolean): ExpiryIndex => {
  const heap: Heap = { times: [], keys: [], marks: [] }
  const { keys, marks, times } = heap
  /**
   * The compaction under way (or the last one). A node whose mark is this
   * number was kept or added by it: the scan may meet such a node again (heap
   * moves carry nodes past the scan) and must keep it. Only an unmarked node of
   * a key already kept is a second node, safe to drop: an identical node, or an
   * old one whose key got a newer, marked node.
   */
  let compaction = 0
  /** The next node the compaction under way looks at; `-1` when none runs. */
  let scan = -1
  /** Keys with a node kept by the compaction under way. */
  let kept = makeKeySet()
  let currentNodes = 0

  /**
   * Looks at up to `maxNodes` nodes of the compaction under way, removing
   * stale ones and second nodes of a key; whether it is done. The heap stays a
   * heap after every removal, so `popDue` and `add` work as usual meanwhile; a
   * node that heap moves carry behind the scan is simply not looked at this time.
   */
  const scanNodes = (maxNodes: number): boolean => {
    if (scan < 0) return true
    for (let n = 0; n < maxNodes && scan < times.length; n++) {
      if (marks[scan] === compaction) {
        scan++
        continue
      }
      const key = keys[scan]!
      if (!kept.has(key) && isCurrent(key, times[scan]!)) {
        kept.add(key)
        marks[scan] = compaction
        scan++
      } else if (removeAt(heap, scan)) {
        scan++ // the last node moved up behind the scan; `scan` holds its former ancestor, seen already
      } // else the last node (or a child) now sits at `scan`: look again
    }
    if (scan < times.length) return false
    scan = -1
    kept = makeKeySet()
    return true
  }

  const startCompactionIfMostlyStale = (): void => {
    if (scan >= 0) return
    if (times.length >= COMPACT_MIN_NODES && times.length - currentNodes > currentNodes) {
      compaction++
      scan = 0
    }
  }

  const dropTop = (): void => {
    removeAt(heap, 0)
  }

  return {
    size: () => times.length,
    current: () => currentNodes,
    add: (key, expiresAt) => {
      // marked as kept by a compaction under way: it is the key's newest node
      push(heap, key, expiresAt, scan >= 0 ? compaction : 0)
      currentNodes++
      scanNodes(COMPACT_NODES_PER_WRITE)
    },
    invalidate: () => {
      if (currentNodes > 0) currentNodes--
      startCompactionIfMostlyStale()
      scanNodes(COMPACT_NODES_PER_WRITE)
    },
    earliest: () => {
      for (let dropped = 0; times.length > 0 && dropped < EARLIEST_DROP_LIMIT; dropped++) {
        if (isCurrent(keys[0]!, times[0]!)) return times[0]
        dropTop()
      }
      return times.length === 0 ? undefined : times[0]
    },
    popDue: (now) => {
      while (times.length > 0 && times[0]! <= now) {
        const key = keys[0]!
        const current = isCurrent(key, times[0]!)
        dropTop()
        if (current) {
          if (currentNodes > 0) currentNodes--
          return key
        }
      }
      return undefined
    },
    compacting: () => scan >= 0,
    compactSome: (maxNodes) => {
      startCompactionIfMostlyStale()
      return scanNodes(maxNodes)
    }
  }
}
