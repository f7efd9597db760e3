/**
 * A caller's iterable of keys or entries read into an array — before any
 * I/O, at most `MAX_BATCH_ITEMS` + 1 items pulled — in slices of about
 * `SLICE_MILLIS`, giving the event loop a turn between them, so a slow or
 * endless iterable neither stalls the process nor escapes an `Effect.timeout`.
 * A batch read in one slice (any ordinary one) costs no turn.
 */
import * as Effect from "effect/Effect"
import { startReading } from "../core/iterable.js"
import type { IterableProblem } from "../core/iterable.js"
import { yieldToEventLoop } from "./eventLoop.js"

const SLICE_MILLIS = 10

/** The items, or why the iterable was refused; interruption closes the iterator. */
export const readBatch = (iterable: unknown, what: string): Effect.Effect<Array<unknown> | IterableProblem> =>
  Effect.suspend(() => {
    const reading = startReading(iterable, what)
    if (!("readOn" in reading)) return Effect.succeed(reading)
    const slice = (): Effect.Effect<Array<unknown> | IterableProblem> => {
      const started = performance.now()
      const outcome = reading.readOn(() => performance.now() - started >= SLICE_MILLIS)
      if (outcome === "done") return Effect.succeed(reading.items)
      if (outcome !== "paused") return Effect.succeed(outcome)
      return Effect.andThen(yieldToEventLoop, Effect.suspend(slice))
    }
    return Effect.onInterrupt(slice(), () => Effect.sync(reading.close))
  })
