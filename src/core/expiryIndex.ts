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
 * When stale nodes outnumber current ones (and the heap is not tiny) the heap
 * is compacted: stale nodes dropped, at most one node per key kept, the rest
 * re-heapified in O(n). So the heap holds at most about twice the expiring keys,
 * and each write costs O(log n) amortized.
 *
 * Pure: no Effect import (`src/core` is compiled by both Effect lines).
 */

/** A heap smaller than this is never compacted: its stale nodes cost little, a compaction would cost more. */
const COMPACT_MIN_NODES = 1024

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
}

/** Stale nodes `earliest` drops before it settles for a lower bound. */
const EARLIEST_DROP_LIMIT = 16

export const makeExpiryIndex = (isCurrent: (key: string, expiresAt: number) => boolean): ExpiryIndex => {
  // two parallel arrays rather than an array of node objects: no allocation per node
  let times: Array<number> = []
  let keys: Array<string> = []
  let currentNodes = 0

  const swap = (i: number, j: number): void => {
    const t = times[i]!
    times[i] = times[j]!
    times[j] = t
    const k = keys[i]!
    keys[i] = keys[j]!
    keys[j] = k
  }

  const siftUp = (from: number): void => {
    let i = from
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (times[parent]! <= times[i]!) return
      swap(i, parent)
      i = parent
    }
  }

  const siftDown = (from: number): void => {
    const n = times.length
    let i = from
    for (;;) {
      const left = 2 * i + 1
      if (left >= n) return
      const right = left + 1
      const child = right < n && times[right]! < times[left]! ? right : left
      if (times[i]! <= times[child]!) return
      swap(i, child)
      i = child
    }
  }

  /** Removes the top node. */
  const dropTop = (): void => {
    const lastTime = times.pop()!
    const lastKey = keys.pop()!
    if (times.length === 0) return
    times[0] = lastTime
    keys[0] = lastKey
    siftDown(0)
  }

  /** Keeps the current nodes, one per key, and rebuilds the heap bottom-up. */
  const compact = (): void => {
    const seen = new Set<string>()
    const keptTimes: Array<number> = []
    const keptKeys: Array<string> = []
    for (let i = 0; i < times.length; i++) {
      const key = keys[i]!
      const time = times[i]!
      if (seen.has(key) || !isCurrent(key, time)) continue
      seen.add(key)
      keptTimes.push(time)
      keptKeys.push(key)
    }
    times = keptTimes
    keys = keptKeys
    // the count may have drifted where an old node matched the key's current expiry exactly
    currentNodes = times.length
    for (let i = (times.length >> 1) - 1; i >= 0; i--) siftDown(i)
  }

  const compactIfMostlyStale = (): void => {
    if (times.length >= COMPACT_MIN_NODES && times.length - currentNodes > currentNodes) compact()
  }

  return {
    size: () => times.length,
    current: () => currentNodes,
    add: (key, expiresAt) => {
      times.push(expiresAt)
      keys.push(key)
      currentNodes++
      siftUp(times.length - 1)
    },
    invalidate: () => {
      if (currentNodes > 0) currentNodes--
      compactIfMostlyStale()
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
    }
  }
}
