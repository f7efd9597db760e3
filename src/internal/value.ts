import { KvError } from "../KvStore.js"

/**
 * A `KvError` (`InvalidArgument`) when `value`, given to `set` or returned by an
 * update function, is not a `Uint8Array` (a `Buffer` is one), else `undefined`.
 */
export const invalidValue = (op: string, key: string, value: unknown): KvError | undefined =>
  value instanceof Uint8Array ? undefined : new KvError({
    reason: "InvalidArgument",
    op,
    key,
    message: op === "update"
      ? `Invalid value for update: the update function must return a Uint8Array, got ${describe(value)}`
      : `Invalid value for ${op}: a value must be a Uint8Array, got ${describe(value)}`
  })

const describe = (value: unknown): string =>
  value === null ? "null" : typeof value === "object" ? (value.constructor?.name ?? "object") : typeof value

/** A `KvError` (`InvalidArgument`) when `update` is given something other than a function. */
export const invalidUpdateFunction = (key: string, f: unknown): KvError | undefined =>
  typeof f === "function" ? undefined : new KvError({
    reason: "InvalidArgument",
    op: "update",
    key,
    message: `Invalid function for update: expected a function, got ${describe(f)}`
  })
