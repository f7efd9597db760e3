/**
 * The request coalescer of PostgresStore (src/internal/postgres/coalesce.ts) on
 * statements simulated in memory, each held open by a Deferred, so every
 * interleaving is decided by the test, not by timing.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import { makeCoalescer, RETRY } from "../src/internal/postgres/coalesce.js"

/** Lets forked fibers run until they block. */
const settle = Effect.repeatN(Effect.yieldNow(), 20)

interface Statement {
  readonly items: ReadonlyArray<string>
  readonly gate: Deferred.Deferred<void>
}

/**
 * A lane whose statements wait for their gate: `one` answers `item!`, `many`
 * answers each item the same way; an item "locked" answers RETRY, "bad" fails
 * the whole statement, "bad-alone" fails only when run alone.
 */
const harness = (maxInFlight: number) =>
  Effect.sync(() => {
    const statements: Array<Statement> = []
    const alone: Array<string> = []
    const coalescer = makeCoalescer(maxInFlight)
    const statement = (items: ReadonlyArray<string>) =>
      Effect.flatMap(Deferred.make<void>(), (gate) => {
        statements.push({ items, gate })
        return Deferred.await(gate)
      })
    const answer = (item: string) => `${item}!`
    const lane = coalescer.lane<string, string, string>({
      one: (item) =>
        Effect.flatMap(statement([item]), () =>
          item.startsWith("bad") ? Effect.fail(`${item} failed`) : Effect.succeed(item === "locked" ? RETRY : answer(item))),
      many: (items) =>
        Effect.flatMap(statement(items), () =>
          items.includes("bad")
            ? Effect.fail("the batch failed")
            : Effect.succeed(items.map((item) => (item === "locked" ? RETRY : Exit.succeed(answer(item)))))),
      alone: (item) =>
        Effect.suspend(() => {
          alone.push(item)
          return item.startsWith("bad") ? Effect.fail(`${item} failed alone`) : Effect.succeed(`${item} alone`)
        }),
      maxItems: 3
    })
    const open = (i: number) => Deferred.succeed(statements[i]!.gate, undefined)
    return { statements, alone, lane, open }
  })

describe("coalesce", () => {
  it.effect("a lone caller runs its own statement at once; callers beyond the budget wait and go out together", () =>
    Effect.gen(function*() {
      const h = yield* harness(2)
      const first = yield* Effect.fork(h.lane.run("a"))
      yield* settle
      assert.deepStrictEqual(h.statements.map((s) => s.items), [["a"]])
      const second = yield* Effect.fork(h.lane.run("b"))
      yield* settle
      // the budget is full now: these wait
      const queued = yield* Effect.forEach(["c", "d", "e", "f"], (item) => Effect.fork(h.lane.run(item)))
      yield* settle
      assert.deepStrictEqual(h.statements.map((s) => s.items), [["a"], ["b"]])
      yield* h.open(0)
      assert.strictEqual(yield* Fiber.join(first), "a!")
      yield* settle
      // a free slot sends what waits, up to maxItems in one statement
      assert.deepStrictEqual(h.statements.map((s) => s.items), [["a"], ["b"], ["c", "d", "e"]])
      yield* h.open(1)
      yield* settle
      assert.deepStrictEqual(h.statements.map((s) => s.items), [["a"], ["b"], ["c", "d", "e"], ["f"]])
      yield* h.open(2)
      yield* h.open(3)
      assert.deepStrictEqual(yield* Fiber.join(second), "b!")
      assert.deepStrictEqual(yield* Effect.forEach(queued, Fiber.join), ["c!", "d!", "e!", "f!"])
    }))

  it.effect("interrupted callers: a queued one is never sent, one in flight does not disturb its batch", () =>
    Effect.gen(function*() {
      const h = yield* harness(1)
      const first = yield* Effect.fork(h.lane.run("a"))
      yield* settle
      const queued = yield* Effect.forEach(["b", "c", "d", "e"], (item) => Effect.fork(h.lane.run(item)))
      yield* settle
      // c is interrupted while queued: it must not be sent
      yield* Fiber.interrupt(queued[1]!)
      yield* h.open(0)
      yield* settle
      assert.deepStrictEqual(h.statements.map((s) => s.items), [["a"], ["b", "d", "e"]])
      // d is interrupted while its batch is in flight: b and e still get their answers
      yield* Fiber.interrupt(queued[2]!)
      yield* h.open(1)
      assert.strictEqual(yield* Fiber.join(first), "a!")
      assert.strictEqual(yield* Fiber.join(queued[0]!), "b!")
      assert.strictEqual(yield* Fiber.join(queued[3]!), "e!")
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(queued[1]!)))
      assert.isTrue(Exit.isInterrupted(yield* Fiber.await(queued[2]!)))
      // nothing is left behind: the budget is free again and a lone caller goes at once
      const later = yield* Effect.fork(h.lane.run("z"))
      yield* settle
      assert.deepStrictEqual(h.statements.at(-1)!.items, ["z"])
      yield* h.open(h.statements.length - 1)
      assert.strictEqual(yield* Fiber.join(later), "z!")
    }))

  it.effect("an interrupted lone caller frees its slot: the callers queued behind it are sent", () =>
    Effect.gen(function*() {
      const h = yield* harness(1)
      const first = yield* Effect.fork(h.lane.run("a"))
      yield* settle
      const queued = yield* Effect.forEach(["b", "c"], (item) => Effect.fork(h.lane.run(item)))
      yield* settle
      yield* Fiber.interrupt(first)
      yield* settle
      assert.deepStrictEqual(h.statements.map((s) => s.items), [["a"], ["b", "c"]])
      yield* h.open(1)
      assert.deepStrictEqual(yield* Effect.forEach(queued, Fiber.join), ["b!", "c!"])
    }))

  it.effect("RETRY runs the item alone on its caller's fiber; a failed batch retries each item alone", () =>
    Effect.gen(function*() {
      const h = yield* harness(1)
      const first = yield* Effect.fork(h.lane.run("a"))
      yield* settle
      const retried = yield* Effect.forEach(["b", "locked", "c"], (item) => Effect.fork(h.lane.run(item)))
      yield* settle
      yield* h.open(0)
      yield* settle
      yield* h.open(1)
      assert.deepStrictEqual(yield* Effect.forEach(retried, Fiber.join), ["b!", "locked alone", "c!"])
      assert.deepStrictEqual(h.alone, ["locked"])
      assert.strictEqual(yield* Fiber.join(first), "a!")

      // a batch with a bad item fails as a whole: each item is retried alone, only the bad one fails
      const holder = yield* Effect.fork(h.lane.run("x"))
      yield* settle
      const batch = yield* Effect.forEach(["d", "bad", "e"], (item) => Effect.fork(Effect.either(h.lane.run(item))))
      yield* settle
      yield* h.open(h.statements.length - 1)
      yield* settle
      yield* h.open(h.statements.length - 1)
      const answers = yield* Effect.forEach(batch, Fiber.join)
      assert.deepStrictEqual(answers.map((e) => (e._tag === "Right" ? e.right : `error: ${e.left}`)), [
        "d alone",
        "error: bad failed alone",
        "e alone"
      ])
      assert.strictEqual(yield* Fiber.join(holder), "x!")
    }))

  it.effect("a lone caller's failure is its own, and the budget is given back", () =>
    Effect.gen(function*() {
      const h = yield* harness(1)
      const bad = yield* Effect.fork(Effect.either(h.lane.run("bad-alone")))
      yield* settle
      yield* h.open(0)
      const result = yield* Fiber.join(bad)
      assert.deepStrictEqual(Option.getOrUndefined(Option.fromNullable(result._tag === "Left" ? result.left : undefined)), "bad-alone failed")
      const next = yield* Effect.fork(h.lane.run("a"))
      yield* settle
      assert.strictEqual(h.statements.length, 2)
      yield* h.open(1)
      assert.strictEqual(yield* Fiber.join(next), "a!")
    }))

  it.effect("batchFailed decides: a batch whose outcome is unknown fails every caller and runs nothing alone", () =>
    Effect.gen(function*() {
      const alone: Array<string> = []
      const gates: Array<Deferred.Deferred<void>> = []
      const gated = Effect.flatMap(Deferred.make<void>(), (gate) => {
        gates.push(gate)
        return Deferred.await(gate)
      })
      const lane = makeCoalescer(1).lane<string, string, string>({
        one: (item) => Effect.as(gated, `${item}!`),
        many: (items) => Effect.zipRight(gated, Effect.fail(items.includes("lost") ? "connection lost" : "refused")),
        alone: (item) => Effect.sync(() => (alone.push(item), `${item} alone`)),
        batchFailed: (cause) =>
          Cause.failureOption(cause).pipe(Option.getOrUndefined) === "connection lost"
            ? Exit.fail("outcome is unknown")
            : RETRY,
        maxItems: 10
      })
      const holder = yield* Effect.fork(lane.run("x"))
      yield* settle
      const lost = yield* Effect.forEach(["a", "lost", "b"], (item) => Effect.fork(Effect.either(lane.run(item))))
      yield* settle
      yield* Deferred.succeed(gates[0]!, undefined)
      yield* settle
      yield* Deferred.succeed(gates[1]!, undefined)
      const answers = yield* Effect.forEach(lost, Fiber.join)
      assert.deepStrictEqual(answers.map((e) => (e._tag === "Left" ? e.left : e.right)), [
        "outcome is unknown",
        "outcome is unknown",
        "outcome is unknown"
      ])
      assert.deepStrictEqual(alone, [])
      assert.strictEqual(yield* Fiber.join(holder), "x!")

      // a refusal: each item runs alone
      const holder2 = yield* Effect.fork(lane.run("y"))
      yield* settle
      const refused = yield* Effect.forEach(["c", "d"], (item) => Effect.fork(lane.run(item)))
      yield* settle
      yield* Deferred.succeed(gates[2]!, undefined)
      yield* settle
      yield* Deferred.succeed(gates[3]!, undefined)
      assert.deepStrictEqual(yield* Effect.forEach(refused, Fiber.join), ["c alone", "d alone"])
      assert.strictEqual(yield* Fiber.join(holder2), "y!")
    }))
})
