/**
 * The per-key lock's bookkeeping of holds (src/internal/keyedLock.ts): a fiber
 * keeps its holds in a cell it changes in place, and a fork gets a snapshot.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Cause from "effect/Cause"
import * as Option from "effect/Option"
import { DriverError } from "../src/KvStore.js"
import { Deadlock, makeKeyedLock } from "../src/internal/keyedLock.js"
import type { KeyedLock } from "../src/internal/keyedLock.js"

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

describe("keyedLock deadlocks", () => {
  /** The `Deadlock` a lock wait was refused with, or undefined when the exit is not such a refusal. */
  const deadlockOf = (exit: Exit.Exit<unknown, unknown>): Deadlock | undefined => {
    if (Exit.isSuccess(exit)) return undefined
    const failure = Cause.failureOption(exit.cause)
    if (Option.isNone(failure) || !(failure.value instanceof DriverError)) return undefined
    return failure.value.cause instanceof Deadlock ? failure.value.cause : undefined
  }

  /**
   * Fiber i holds keys[i] and, once every fiber holds its key, waits for
   * keys[i + 1] (mod n): a cycle. Each records what it did inside.
   */
  const cycle = (lock: KeyedLock, keys: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const holding = yield* Effect.forEach(keys, () => Deferred.make<void>())
      const done: Array<string> = []
      const fibers = yield* Effect.forEach(keys, (key, i) =>
        Effect.fork(lock.withLock(
          key,
          Deferred.succeed(holding[i]!, undefined).pipe(
            Effect.zipRight(Effect.forEach(holding, Deferred.await, { discard: true })),
            Effect.zipRight(lock.withLock(keys[(i + 1) % keys.length]!, Effect.sync(() => done.push(key))))
          )
        )))
      const exits = yield* Effect.forEach(fibers, Fiber.await)
      return { exits, done }
    })

  for (const keys of [["A", "B"], ["A", "B", "C"], ["A", "B", "C", "D", "E"]]) {
    it.live(`a cycle of ${keys.length}: the fiber that would close it fails at once, naming the cycle; the others go on`, () =>
      Effect.gen(function*() {
        const lock = makeKeyedLock()
        const { done, exits } = yield* Effect.timeoutFail(cycle(lock, keys), {
          duration: "5 seconds",
          onTimeout: () => new Error("the cycle was not broken (deadlock)")
        })
        const refused = exits.flatMap((exit, i) => (deadlockOf(exit) === undefined ? [] : [i]))
        assert.strictEqual(refused.length, 1, `refused: ${refused}`)
        const loser = refused[0]!
        for (const [i, exit] of exits.entries()) if (i !== loser) assert.isTrue(Exit.isSuccess(exit))
        const deadlock = deadlockOf(exits[loser]!)!
        const waited = keys[(loser + 1) % keys.length]!
        assert.strictEqual(deadlock.key, waited)
        // from the key it waited for round to its own
        assert.deepStrictEqual(deadlock.chain, Array.from(keys, (_, j) => keys[(loser + 1 + j) % keys.length]!))
        assert.include(deadlock.message, "would deadlock")
        assert.strictEqual(done.length, keys.length - 1)
        assert.notInclude(done, keys[loser])
        for (const key of keys) assert.isFalse(lock.isLocked(key))
      }))
  }

  it.live("a chain that is no cycle waits; so does a fiber that holds nothing", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const holdingB = yield* Deferred.make<void>()
      const releaseB = yield* Deferred.make<void>()
      // X holds B until released; Y holds A and waits for B; Z holds nothing and waits for A
      const x = yield* Effect.fork(lock.withLock("B", Effect.zipRight(Deferred.succeed(holdingB, undefined), Deferred.await(releaseB))))
      yield* Deferred.await(holdingB)
      const holdingA = yield* Deferred.make<void>()
      const y = yield* Effect.fork(lock.withLock("A", Effect.zipRight(Deferred.succeed(holdingA, undefined), lock.withLock("B", Effect.void))))
      yield* Deferred.await(holdingA)
      const z = yield* Effect.fork(lock.withLock("A", Effect.void))
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      assert.isTrue(Option.isNone(yield* Fiber.poll(y)))
      assert.isTrue(Option.isNone(yield* Fiber.poll(z)))
      yield* Deferred.succeed(releaseB, undefined)
      for (const fiber of [x, y, z]) assert.isTrue(Exit.isSuccess(yield* Fiber.await(fiber)))
    }))

  it.live("a wait given up (interrupted) leaves no edge behind: the holder that gave up is waited for, no deadlock", () =>
    // releasing A however the test ends: Y holds it uninterruptibly until then
    Effect.flatMap(Deferred.make<void>(), (releaseA) =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const holdingB = yield* Deferred.make<void>()
      const xMayGo = yield* Deferred.make<void>()
      const yGaveUp = yield* Deferred.make<void>()
      // X holds B and, later, wants A
      const x = yield* Effect.fork(lock.withLock(
        "B",
        Deferred.succeed(holdingB, undefined).pipe(
          Effect.zipRight(Deferred.await(xMayGo)),
          Effect.zipRight(lock.withLock("A", Effect.void))
        )
      ))
      yield* Deferred.await(holdingB)
      // Y holds A (uninterruptibly), waits for B interruptibly, is interrupted there and keeps holding A
      const yWaits = yield* Deferred.make<void>()
      const y = yield* Effect.fork(Effect.uninterruptible(lock.withLock(
        "A",
        Deferred.succeed(yWaits, undefined).pipe(
          Effect.zipRight(Effect.exit(Effect.interruptible(lock.withLock("B", Effect.void)))),
          Effect.zipRight(Deferred.succeed(yGaveUp, undefined)),
          Effect.zipRight(Deferred.await(releaseA))
        )
      )))
      yield* Deferred.await(yWaits)
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      yield* Fiber.interruptFork(y)
      yield* Deferred.await(yGaveUp)
      yield* Deferred.succeed(xMayGo, undefined)
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      assert.isTrue(Option.isNone(yield* Fiber.poll(x)), "X did not wait for A")
      yield* Deferred.succeed(releaseA, undefined)
      const exit = yield* Fiber.await(x)
      assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
      yield* Fiber.await(y)
      assert.isFalse(lock.isLocked("A"))
    }).pipe(Effect.ensuring(Deferred.succeed(releaseA, undefined)))))

  it.live("a wait that ended with the lock leaves no edge behind", () =>
    Effect.flatMap(Deferred.make<void>(), (releaseA) =>
      Effect.gen(function*() {
        const lock = makeKeyedLock()
        const holdingB = yield* Deferred.make<void>()
        const releaseB = yield* Deferred.make<void>()
        const w = yield* Effect.fork(lock.withLock("B", Effect.zipRight(Deferred.succeed(holdingB, undefined), Deferred.await(releaseB))))
        yield* Deferred.await(holdingB)
        // Y holds A, waits for B until W is done, uses it, releases it and keeps A
        const yDoneWithB = yield* Deferred.make<void>()
        const y = yield* Effect.fork(lock.withLock(
          "A",
          lock.withLock("B", Effect.void).pipe(
            Effect.zipRight(Deferred.succeed(yDoneWithB, undefined)),
            Effect.zipRight(Deferred.await(releaseA))
          )
        ))
        for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
        // X queues for B after Y (the same lock, handed on), then wants A: by then Y waits for nothing
        const x = yield* Effect.fork(lock.withLock("B", lock.withLock("A", Effect.void)))
        for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
        yield* Deferred.succeed(releaseB, undefined)
        yield* Deferred.await(yDoneWithB)
        for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
        assert.isTrue(Option.isNone(yield* Fiber.poll(x)), "X did not wait for A")
        yield* Deferred.succeed(releaseA, undefined)
        for (const fiber of [w, x, y]) {
          const exit = yield* Fiber.await(fiber)
          assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
        }
      }).pipe(Effect.ensuring(Deferred.succeed(releaseA, undefined)))))

  it.effect("waiting for a key the fiber holds itself is refused, not a wait forever", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const exit = yield* Effect.exit(lock.withLock("A", lock.withLock("A", Effect.void)))
      const deadlock = deadlockOf(exit)
      assert.isDefined(deadlock)
      assert.deepStrictEqual(deadlock!.chain, ["A"])
      assert.isFalse(lock.isLocked("A"))
    }))

  it.live("the cycle passes through two lock instances (a driver's and the front's)", () =>
    Effect.gen(function*() {
      const first = makeKeyedLock()
      const second = makeKeyedLock()
      const holding = [yield* Deferred.make<void>(), yield* Deferred.make<void>()] as const
      const both = Effect.zipRight(Deferred.await(holding[0]), Deferred.await(holding[1]))
      const a = yield* Effect.fork(first.withLock("A", Deferred.succeed(holding[0], undefined).pipe(Effect.zipRight(both), Effect.zipRight(second.withLock("B", Effect.void)))))
      const b = yield* Effect.fork(second.withLock("B", Deferred.succeed(holding[1], undefined).pipe(Effect.zipRight(both), Effect.zipRight(first.withLock("A", Effect.void)))))
      const exits = [yield* Fiber.await(a), yield* Fiber.await(b)]
      assert.strictEqual(exits.filter((exit) => deadlockOf(exit) !== undefined).length, 1)
      assert.strictEqual(exits.filter(Exit.isSuccess).length, 1)
    }))
})

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
      assert.deepStrictEqual(failed, Exit.fail("no"))
      assert.isFalse(lock.isLocked("A"))
    }))

  it.effect("a step whose effect is not done holds the key until it ends: others wait, and interruption releases it", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const inside = yield* Deferred.make<void>()
      const order: Array<string> = []
      const holder = yield* Effect.fork(lock.withLockedStep("A", () => Effect.zipRight(Deferred.succeed(inside, undefined), Effect.never)))
      yield* Deferred.await(inside)
      assert.isTrue(lock.isLocked("A"))
      const waiter = yield* Effect.fork(lock.withLockedStep("A", () => {
        order.push("waiter's step")
        return Exit.void
      }))
      for (let i = 0; i < 5; i++) yield* Effect.yieldNow()
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
        let inner: Fiber.RuntimeFiber<void, unknown> | undefined
        yield* lock.withLockedStep("A", () => {
          // runFork starts the fiber at once: it asks for the key while the step still runs
          inner = Effect.runFork(lock.withLock("A", Effect.sync(() => void order.push("inner write"))))
          order.push("step")
          if (decided === "at once") {
            order.push("step done")
            return Exit.void
          }
          return Effect.zipRight(Effect.yieldNow(), Effect.sync(() => void order.push("step done")))
        })
        yield* Fiber.join(inner!)
        assert.deepStrictEqual(order, ["step", "step done", "inner write"])
        assert.isFalse(lock.isLocked("A"))
      }))
  }

  it.effect("a fiber that holds the key already (a caller that took the lock) runs the step inside its hold", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const result = yield* lock.withLock("A", lock.withLockedStep("A", () => Effect.as(Effect.yieldNow(), "inside")))
      assert.strictEqual(result, "inside")
      assert.isFalse(lock.isLocked("A"))
    }))
})
