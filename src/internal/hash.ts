const FNV_OFFSET = 0xcbf29ce484222325n
const FNV_PRIME = 0x100000001b3n
const MASK_64 = 0xffffffffffffffffn
const encoder = new TextEncoder()

/**
 * 64-bit FNV-1a of the key's UTF-8 bytes, as a signed int64 so it fits a
 * PostgreSQL `BIGINT` (the seed's `key_hash`).
 */
export const keyHash = (key: string): bigint => {
  let h = FNV_OFFSET
  for (const byte of encoder.encode(key)) {
    h = ((h ^ BigInt(byte)) * FNV_PRIME) & MASK_64
  }
  return BigInt.asIntN(64, h)
}
