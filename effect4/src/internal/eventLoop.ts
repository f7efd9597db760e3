import * as Effect from "effect/Effect"

/**
 * Gives the event loop a turn. `Effect.yieldNow` alone is not enough: Effect's
 * scheduler resumes yielded fibers on microtasks for up to 2048 rounds, and
 * timers (an `Effect.timeout`) and I/O would wait for the whole loop.
 */
export const yieldToEventLoop: Effect.Effect<void> = Effect.callback<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})
