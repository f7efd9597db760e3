import { describeKind } from "./describe.js"

/** The largest value, in bytes (64 MiB), the same on every backend. */
export const MAX_VALUE_BYTES = 64 * 1024 * 1024

// The intrinsic getters, not the properties: a Proxy, an object made with
// Uint8Array.prototype or an own `byteLength` cannot fool them, and they never throw.
const typedArrayProto = Object.getPrototypeOf(Uint8Array.prototype) as object
const getter = (name: PropertyKey) => Object.getOwnPropertyDescriptor(typedArrayProto, name)!.get!
const typedArrayName = getter(Symbol.toStringTag) as (this: unknown) => string | undefined
const byteLengthOf = getter("byteLength") as (this: Uint8Array) => number
const bufferOf = getter("buffer") as (this: Uint8Array) => ArrayBufferLike

/** A buffer whose memory was transferred away: any view of it throws. */
const isDetached = (buffer: ArrayBufferLike): boolean => {
  try {
    new Uint8Array(buffer, 0, 0)
    return false
  } catch {
    return true
  }
}

/** Why `value` is not a storable value (never throws), or `undefined`. A `Buffer` is a `Uint8Array`. */
export const valueProblem = (value: unknown): string | undefined => {
  if (typedArrayName.call(value) !== "Uint8Array") {
    return `a value must be a Uint8Array, got ${describeKind(value)}`
  }
  const size = byteLengthOf.call(value as Uint8Array)
  if (size === 0 && isDetached(bufferOf.call(value as Uint8Array))) {
    return "a value must not be a detached Uint8Array (its buffer was transferred)"
  }
  if (size > MAX_VALUE_BYTES) return `a value must be at most ${MAX_VALUE_BYTES} bytes (64 MiB), got ${size}`
  return undefined
}

/** A fresh, plain `Uint8Array` with the bytes of `value` (also of a `Buffer` sharing a pool). */
export const copyBytes = (value: Uint8Array): Uint8Array => new Uint8Array(value)
