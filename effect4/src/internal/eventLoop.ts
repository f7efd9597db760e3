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

/**
 * Waits in real time, not on the program's `Clock` (which may be a `TestClock`
 * that never moves): for connections and other work outside the program.
 * Interruptible, clearing its timer.
 */
export const sleepReal = (millis: number): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), millis)
    return Effect.sync(() => clearTimeout(timer))
  })
