/**
 * Names the kind of a value for an error message without touching it: no
 * property read, no conversion to text, so a Proxy or an object with a
 * throwing `toString` cannot throw from here.
 */
export const describeKind = (value: unknown): string =>
  value === null ? "null" : typeof value === "object" ? "an object" : typeof value
