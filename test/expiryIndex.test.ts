/**
 * The memory store's expiry index (`src/core/expiryIndex.ts`), on its own: a
 * `Map` of key → expiry plays the store, and a brute-force scan of that map is
 * the reference for what is due.
 */
import { assert, describe, it } from "@effect/vitest"
import { makeExpiryIndex } from "../src/core/expiryIndex.js"

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
const prng = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = seed
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** A store of key → expiry (`undefined`: never) kept in step with an index, the way the memory driver does it. */
const makeModel = () => {
  const store = new Map<string, number | undefined>()
  const index = makeExpiryIndex((key, expiresAt) => store.get(key) === expiresAt)
  const set = (key: string, expiresAt: number | undefined) => {
    const before = store.get(key)
    if (before !== expiresAt) {
      if (before !== undefined) index.invalidate()
      if (expiresAt !== undefined) index.add(key, expiresAt)
    }
    store.set(key, expiresAt)
  }
  const remove = (key: string) => {
    if (!store.has(key)) return
    if (store.get(key) !== undefined) index.invalidate()
    store.delete(key)
  }
  /**
   * Pops every due key and removes it from the store, then finishes a
   * compaction under way in small slices, as the memory driver's sweeper does;
   * the keys in pop order.
   */
  const sweep = (now: number): Array<string> => {
    const popped: Array<string> = []
    for (let key = index.popDue(now); key !== undefined; key = index.popDue(now)) {
      assert.isAtMost(store.get(key)!, now, `${key} popped before it was due`)
      popped.push(key)
      store.delete(key)
    }
    while (!index.compactSome(256)) { /* the driver yields to the event loop here */ }
    return popped
  }
  const due = (now: number) => [...store].filter(([, at]) => at !== undefined && at <= now).map(([key]) => key)
  const trueEarliest = () => Math.min(...[...store.values()].filter((at): at is number => at !== undefined))
  return { store, index, set, remove, sweep, due, trueEarliest }
}

describe("expiryIndex", () => {
  it("pops due keys earliest first, and only the due ones", () => {
    const m = makeModel()
    m.set("c", 30)
    m.set("a", 10)
    m.set("never", undefined)
    m.set("b", 20)
    m.set("d", 40)
    assert.strictEqual(m.index.earliest(), 10)
    assert.deepStrictEqual(m.sweep(9), [])
    assert.deepStrictEqual(m.sweep(30), ["a", "b", "c"])
    assert.strictEqual(m.index.earliest(), 40)
    assert.deepStrictEqual([...m.store.keys()].sort(), ["d", "never"])
    assert.deepStrictEqual(m.sweep(1000), ["d"])
    assert.strictEqual(m.index.earliest(), undefined)
    assert.strictEqual(m.index.size(), 0)
  })

  it("skips the nodes of keys rewritten, deleted or given no expiry since", () => {
    const m = makeModel()
    m.set("later", 10)
    m.set("later", 100) // its node at 10 is stale
    m.set("deleted", 20)
    m.remove("deleted")
    m.set("kept", 30)
    m.set("kept", undefined) // no expiry any more
    m.set("readded", 40)
    m.remove("readded")
    m.set("readded", 50)
    assert.strictEqual(m.index.current(), 2)
    assert.deepStrictEqual(m.sweep(60), ["readded"])
    assert.deepStrictEqual([...m.store.keys()].sort(), ["kept", "later"])
    assert.deepStrictEqual(m.sweep(100), ["later"])
    assert.strictEqual(m.index.size(), 0)
  })

  it("earliest is never later than the true earliest expiry, and exact once stale tops are dropped", () => {
    const m = makeModel()
    for (let i = 0; i < 100; i++) m.set(`k${i}`, 1000 + i)
    for (let i = 0; i < 50; i++) m.set(`k${i}`, 5000 + i) // the 50 earliest nodes go stale
    // at most a few stale nodes dropped per call: a lower bound until the sweep catches up
    assert.isAtMost(m.index.earliest()!, m.trueEarliest())
    // each call drops a few more; a sweep drops every stale node that is due
    assert.deepStrictEqual(m.sweep(1049), [])
    assert.strictEqual(m.index.earliest(), 1050)
  })

  it("compacts when stale nodes outnumber current ones, keeping one node per key", () => {
    const m = makeModel()
    for (let i = 0; i < 2000; i++) m.set(`k${i}`, 10_000 + i)
    assert.strictEqual(m.index.size(), 2000)
    // rewrite every key many times: without compaction the heap would hold 20k nodes
    for (let round = 1; round <= 10; round++) {
      for (let i = 0; i < 2000; i++) {
        m.set(`k${i}`, 10_000 + i + round)
        // compaction runs a few nodes per write: the heap may pass twice the keys while it drains
        assert.isAtMost(m.index.size(), 3 * 2000, `round ${round}: ${m.index.size()} nodes for 2000 keys`)
      }
    }
    // deleting most keys compacts too
    for (let i = 0; i < 1900; i++) m.remove(`k${i}`)
    m.sweep(0) // nothing due: the sweeper finishes the compaction
    assert.isFalse(m.index.compacting())
    assert.isAtMost(m.index.size(), 2 * 1024)
    const left = [...m.store.keys()].sort()
    assert.strictEqual(left.length, 100)
    assert.deepStrictEqual(m.sweep(1e9).sort(), left)
    assert.strictEqual(m.store.size, 0)
    assert.strictEqual(m.index.size(), 0)
  })

  it("a key whose old node has its current expiry again is popped once and the count heals at compaction", () => {
    const m = makeModel()
    m.set("k", 10)
    m.set("k", 20)
    m.set("k", 10) // the old node (k, 10) looks current again: two nodes match
    assert.deepStrictEqual(m.sweep(10), ["k"])
    assert.strictEqual(m.index.size(), 1, "the node at 20 is left, stale")
    assert.deepStrictEqual(m.sweep(20), [])
    assert.strictEqual(m.index.size(), 0)
    // many duplicates of one key: compaction keeps one
    for (let i = 0; i < 3000; i++) {
      m.set("d", 100)
      m.set("d", 200)
    }
    m.set("d", 100)
    m.sweep(0)
    assert.isAtMost(m.index.size(), 2 * 1024)
    assert.deepStrictEqual(m.sweep(1000), ["d"])
  })

  it("agrees with a brute-force scan over random writes, deletes and sweeps", () => {
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const random = prng(seed)
      const m = makeModel()
      // few keys, short TTLs: stale nodes mostly dropped by sweeps; many keys, long TTLs: heaps that compact
      const keySpace = seed <= 3 ? 500 : 3000
      const ttlRange = seed <= 3 ? 200 : 100_000
      let now = 0
      let stepsCompacting = 0
      for (let step = 0; step < 20_000; step++) {
        if (m.index.compacting()) stepsCompacting++
        const key = `k${Math.floor(random() * keySpace)}`
        const r = random()
        if (r < 0.55) m.set(key, now + 1 + Math.floor(random() * ttlRange))
        else if (r < 0.65) m.set(key, undefined)
        else if (r < 0.8) m.remove(key)
        else if (r < 0.97) now += Math.floor(random() * 20)
        else {
          const expected = m.due(now).sort()
          assert.deepStrictEqual(m.sweep(now).sort(), expected, `seed ${seed}, step ${step}`)
        }
        // the brute-force earliest scans the whole store: every step for few keys, every tenth for many
        if (keySpace <= 1024 || step % 10 === 0) {
          const earliest = m.index.earliest()
          const trueEarliest = m.trueEarliest()
          if (trueEarliest === Infinity) assert.isTrue(earliest === undefined || earliest <= now + ttlRange)
          else assert.isAtMost(earliest!, trueEarliest, `seed ${seed}, step ${step}`)
        }
        // a compaction starts at twice the current nodes (or 1024 nodes) and ends within an eighth as many writes
        assert.isAtMost(m.index.size(), Math.max(3 * m.index.current() + 1, 1024 + 1024 / 8 + 1), `seed ${seed}, step ${step}`)
      }
      if (keySpace > 1024) assert.isAbove(stepsCompacting, 0, `seed ${seed}: no compaction ran`)
      // nothing lost across the compactions: every key with an expiry is still found by a sweep
      const expiring = m.due(Infinity).sort()
      assert.deepStrictEqual(m.sweep(Infinity).sort(), expiring, `seed ${seed}`)
    }
  })

  it("compacts a large heap a few nodes per write, never in one step, and the sweeper finishes it", () => {
    const m = makeModel()
    const keys = 100_000
    for (let i = 0; i < keys; i++) m.set(`k${i}`, 1_000_000 + i)
    // delete keys until a compaction starts; the write that starts it moves only a few nodes
    let i = 0
    while (!m.index.compacting()) {
      const before = m.index.size()
      m.remove(`k${i++}`)
      assert.isAtLeast(m.index.size(), before - 8, `write ${i} did more than a slice of compaction`)
    }
    assert.isAtLeast(m.index.size(), keys - 8 - i, "the compaction has only begun")
    // further writes keep moving it a few nodes at a time, the heap shrinking as stale nodes are dropped
    for (let w = 0; w < 1000; w++) {
      const before = m.index.size()
      m.set(`new${w}`, 2_000_000 + w)
      assert.isAtLeast(m.index.size(), before + 1 - 8)
    }
    assert.isTrue(m.index.compacting())
    // a lower bound of the earliest live expiry while the compaction is half done
    assert.isAtMost(m.index.earliest()!, 1_000_000 + i)
    const live = [...m.store.keys()]
    // the sweeper's slices finish it, dropping every stale node
    assert.deepStrictEqual(m.sweep(0), [])
    assert.isFalse(m.index.compacting())
    assert.strictEqual(m.index.size(), live.length)
    assert.strictEqual(m.index.current(), live.length)
    assert.deepStrictEqual(m.sweep(1e9).sort(), live.sort())
    assert.strictEqual(m.index.size(), 0)
  })

  it("pops due keys in order while a compaction is under way", () => {
    const m = makeModel()
    for (let i = 0; i < 4000; i++) m.set(`k${i}`, 10_000 + i)
    for (let i = 0; i < 2100; i++) m.remove(`k${i}`)
    assert.isTrue(m.index.compacting())
    // new keys land in the fresh heap, some earlier than everything left in the draining one
    for (let i = 0; i < 50; i++) m.set(`early${i}`, 5_000 + i)
    const popped: Array<string> = []
    for (let key = m.index.popDue(12_000); key !== undefined; key = m.index.popDue(12_000)) {
      popped.push(key)
      m.store.delete(key)
    }
    const expected = [
      ...Array.from({ length: 50 }, (_, i) => `early${i}`),
      ...Array.from({ length: 12_000 - 10_000 + 1 - 2100 }, (_, i) => `k${2100 + i}`)
    ]
    assert.deepStrictEqual(popped, expected)
  })
})
