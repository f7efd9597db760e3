/**
 * The per-key lock's step without a lock (src/internal/keyedLock.ts, `withLockedStep`):
 * the Effect 4 twin of the `keyedLock withLockedStep` tests of the Effect 3 line
 * (test/keyedLock.test.ts), where the lock's other tests live.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { makeKeyedLock } from "../src/internal/keyedLock.js"

describe("keyedLock withLockedStep", () => {
  it.effect("a step decided at once takes no lock: the key counts as locked only while the step runs", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      let during: boolean | undefined
      const result = yield* lock.withLockedStep("A", () => {
        during = lock.isLocked("A")
        return Exit.succeed(42)
      })
      assert.strictEqual(result, 42)
      assert.isTrue(during)
      assert.isFalse(lock.isLocked("A"))
      // a failure decided at once comes out unchanged, and leaves nothing either
      const failed = yield* Effect.exit(lock.withLockedStep("A", () => Exit.fail("no")))
      assert.isTrue(Exit.isFailure(failed))
      if (Exit.isFailure(failed)) {
        assert.deepStrictEqual(failed.cause.reasons.map((r) => r._tag === "Fail" ? r.error : r._tag), ["no"])
      }
      assert.isFalse(lock.isLocked("A"))
    }))

  it.effect("a step whose effect is not done holds the key until it ends: others wait, and interruption releases it", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const inside = yield* Deferred.make<void>()
      const order: Array<string> = []
      const holder = yield* Effect.forkChild(
        lock.withLockedStep("A", () => Effect.andThen(Deferred.succeed(inside, undefined), Effect.never))
      )
      yield* Deferred.await(inside)
      assert.isTrue(lock.isLocked("A"))
      const waiter = yield* Effect.forkChild(lock.withLockedStep("A", () => {
        order.push("waiter's step")
        return Exit.void
      }))
      for (let i = 0; i < 5; i++) yield* Effect.yieldNow
      assert.deepStrictEqual(order, [], "a step of a held key ran before the holder was done")
      yield* Fiber.interrupt(holder)
      yield* Fiber.join(waiter)
      assert.deepStrictEqual(order, ["waiter's step"])
      assert.isFalse(lock.isLocked("A"))
    }))

  for (const decided of ["at once", "later"] as const) {
    it.effect(`a write of the key started from inside the step (decided ${decided}) waits until the step is done`, () =>
      Effect.gen(function*() {
        const lock = makeKeyedLock()
        const order: Array<string> = []
        let inner: Fiber.Fiber<void, unknown> | undefined
        yield* lock.withLockedStep("A", () => {
          // runFork starts the fiber at once: it asks for the key while the step still runs
          inner = Effect.runFork(lock.withLock("A", Effect.sync(() => void order.push("inner write"))))
          order.push("step")
          if (decided === "at once") {
            order.push("step done")
            return Exit.void
          }
          return Effect.andThen(Effect.yieldNow, Effect.sync(() => void order.push("step done")))
        })
        yield* Fiber.join(inner!)
        assert.deepStrictEqual(order, ["step", "step done", "inner write"])
        assert.isFalse(lock.isLocked("A"))
      }))
  }

  it.effect("a fiber that holds the key already (a caller that took the lock) runs the step inside its hold", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const result = yield* lock.withLock("A", lock.withLockedStep("A", () => Effect.as(Effect.yieldNow, "inside")))
      assert.strictEqual(result, "inside")
      assert.isFalse(lock.isLocked("A"))
    }))
})
