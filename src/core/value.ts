import { describeKind } from "./describe.js"

/** The largest value, in bytes (64 MiB), the same on every backend. */
export const MAX_VALUE_BYTES = 64 * 1024 * 1024

// The intrinsic getters, not the properties: a Proxy, an object made with
// Uint8Array.prototype or an own `byteLength` cannot fool them, and they never throw.
const typedArrayProto = Object.getPrototypeOf(Uint8Array.prototype) as object
const getter = (name: PropertyKey) => Object.getOwnPropertyDescriptor(typedArrayProto, name)!.get!
const typedArrayName = getter(Symbol.toStringTag) as (this: unknown) => string | undefined
const byteLengthOf = getter("byteLength") as (this: Uint8Array) => number

/**
 * A view reads as empty when its buffer was transferred away (detached) or
 * shrunk below it (a resizable buffer): copying it then throws.
 */
const cannotCopy = (view: Uint8Array): boolean => {
  try {
    new Uint8Array(view)
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
  if (size === 0 && cannotCopy(value as Uint8Array)) {
    return "a value must not be a detached Uint8Array (its buffer was transferred or shrunk)"
  }
  if (size > MAX_VALUE_BYTES) return `a value must be at most ${MAX_VALUE_BYTES} bytes (64 MiB), got ${size}`
  return undefined
}

/** A fresh, plain `Uint8Array` with the bytes of `value` (also of a `Buffer` sharing a pool). */
export const copyBytes = (value: Uint8Array): Uint8Array => new Uint8Array(value)
