/**
 * The per-key lock's bookkeeping of holds (src/internal/keyedLock.ts): a fiber
 * keeps its holds in a cell it changes in place, and a fork gets a snapshot.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { makeKeyedLock } from "../src/internal/keyedLock.js"

describe("keyedLock holds", () => {
  it.effect("nested holds: inside A, then inside A and B, then inside A again; nothing once both end", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const seen: Array<string> = []
      const record = (label: string) =>
        Effect.map(Effect.all([lock.heldByCurrentFiber("A"), lock.heldByCurrentFiber("B")]), ([a, b]) => {
          seen.push(`${label}: A=${a} B=${b}`)
        })
      yield* lock.withLock(
        "A",
        Effect.zipRight(record("in A"), Effect.zipRight(lock.withLock("B", record("in A+B")), record("back in A")))
      )
      yield* record("after")
      assert.deepStrictEqual(seen, ["in A: A=true B=false", "in A+B: A=true B=true", "back in A: A=true B=false", "after: A=false B=false"])
      assert.isFalse(lock.isLocked("A"))
      assert.isFalse(lock.isLocked("B"))
    }))

  it.effect("a child forked inside A sees A while it is held, and not the parent's later hold of B", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const go = yield* Deferred.make<void>()
      const child = yield* lock.withLock(
        "A",
        Effect.gen(function*() {
          const inA = yield* lock.heldByCurrentFiber("A")
          assert.isTrue(inA)
          return yield* Effect.forkDaemon(
            Effect.zipRight(
              Effect.map(lock.heldByCurrentFiber("A"), (a) => `during A: ${a}`),
              Deferred.await(go)
            ).pipe(
              Effect.zipRight(Effect.all([lock.heldByCurrentFiber("A"), lock.heldByCurrentFiber("B")]))
            )
          )
        })
      )
      // the parent now holds B; the child, forked during A, must not count as inside B
      const answer = yield* lock.withLock("B", Effect.zipRight(Deferred.succeed(go, undefined), Fiber.join(child)))
      assert.deepStrictEqual(answer, [false, false])
    }))

  it.effect("the parent's holds are not changed by a child that takes locks of its own", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const result = yield* lock.withLock(
        "A",
        Effect.gen(function*() {
          const inside = yield* Deferred.make<void>()
          const release = yield* Deferred.make<void>()
          const child = yield* Effect.fork(lock.withLock("C", Effect.zipRight(Deferred.succeed(inside, undefined), Deferred.await(release))))
          yield* Deferred.await(inside)
          const parentInC = yield* lock.heldByCurrentFiber("C")
          const parentInA = yield* lock.heldByCurrentFiber("A")
          yield* Deferred.succeed(release, undefined)
          yield* Fiber.join(child)
          return [parentInA, parentInC]
        })
      )
      assert.deepStrictEqual(result, [true, false])
    }))

  it.effect("an interrupted holder leaves no lock and no hold behind", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const inside = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(lock.withLock("A", Effect.zipRight(Deferred.succeed(inside, undefined), Effect.never)))
      yield* Deferred.await(inside)
      assert.isTrue(lock.isLocked("A"))
      const waiter = yield* Effect.fork(lock.withLock("A", lock.heldByCurrentFiber("A")))
      yield* Fiber.interrupt(holder)
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(holder)))
      assert.isTrue(yield* Fiber.join(waiter))
      assert.isFalse(lock.isLocked("A"))
      assert.deepStrictEqual(yield* lock.keysHeldByCurrentFiber, [])
    }))
})
