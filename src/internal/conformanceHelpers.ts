/**
 * Small helpers shared by the conformance suites (`src/conformance.ts` and
 * `batchConformance.ts`): text as bytes, real-time waits and bounds, the
 * expected key order.
 */
import * as Effect from "effect/Effect"
import { sleepReal } from "./eventLoop.js"

export { sleepReal }

const encoder = new TextEncoder()
const decoder = new TextDecoder()
export const bytes = (text: string): Uint8Array => encoder.encode(text)
export const text = (value: Uint8Array): string => decoder.decode(value)

/**
 * Fails the test (instead of hanging until vitest's timeout) when `effect` does
 * not finish within `millis` of real time: for checks that a lock is released
 * and that independent updates do not wait for each other. Real time, because
 * `TestClock` never fires a timeout on its own.
 */
export const within = <A, E, R>(millis: number, what: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.raceFirst(effect, Effect.flatMap(sleepReal(millis), () => Effect.dieMessage(`timed out: ${what}`)))

/** The expected order: UTF-8 byte order, computed independently of the code under test. */
export const byUtf8Bytes = (a: string, b: string): number =>
  Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"))

/** A value of the wrong type, as plain JavaScript can pass it. */
export const loose = <A>(value: unknown): A => value as A
