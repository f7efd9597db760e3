/**
 * mulberry32: a small deterministic pseudo-random generator in [0, 1), so a
 * test failure can be replayed and every benchmark subject walks the same keys.
 */
export const mulberry32 = (seed: number) => (): number => {
  seed |= 0
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
