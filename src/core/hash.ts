const encoder = new TextEncoder()

/**
 * 64-bit FNV-1a of the key's UTF-8 bytes, as a signed int64 so it fits a
 * PostgreSQL `BIGINT` (the seed's `key_hash`).
 *
 * The 64-bit state is kept in four 16-bit limbs (lowest first) so the loop
 * runs on small integers instead of allocating a BigInt per byte (about 3×
 * faster). The FNV prime is 2^40 + 0x1b3, so `h * prime` is
 * `h * 0x1b3 + (h << 40)`: every limb times 0x1b3, plus limbs 0 and 1 shifted
 * into limbs 2 and 3 by 8 bits, carries propagated upwards, bits above 64 dropped.
 */
export const keyHash = (key: string): bigint => {
  let h0 = 0x2325
  let h1 = 0x8422
  let h2 = 0x9ce4
  let h3 = 0xcbf2
  for (const byte of encoder.encode(key)) {
    h0 ^= byte
    const r0 = h0 * 0x1b3
    const r1 = h1 * 0x1b3 + (r0 >>> 16)
    const r2 = h2 * 0x1b3 + (r1 >>> 16) + (h0 << 8)
    const r3 = h3 * 0x1b3 + (r2 >>> 16) + (h1 << 8)
    h0 = r0 & 0xffff
    h1 = r1 & 0xffff
    h2 = r2 & 0xffff
    h3 = r3 & 0xffff
  }
  const high = BigInt(((h3 << 16) | h2) >>> 0)
  const low = BigInt(((h1 << 16) | h0) >>> 0)
  return BigInt.asIntN(64, (high << 32n) | low)
}
