/**
 * The exported conformance suite (`effect-kv/conformance`, on `@effect/vitest` 4) on
 * MemoryStore, plus what only the memory backend promises.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import { conformance } from "effect-kv/conformance"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import { makeMemoryDriver } from "../src/internal/memoryDriver.js"

conformance("MemoryStore", MemoryStore.layer())

describe("MemoryStore options", () => {
  it.effect("a non-positive maxEntries is refused when the layer is built", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(MemoryStore.make({ maxEntries: 0 })))
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = exit.cause.reasons.find((r) => r._tag === "Fail")
        assert.instanceOf(error?._tag === "Fail" ? error.error : undefined, KvStore.KvError)
      }
    }))
})

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)

describe("MemoryStore update without a lock (a function that returns a complete Effect)", () => {
  for (const decided of ["Effect.succeed", "an Effect that yields"] as const) {
    it.effect(`a set of the key started from inside the function (${decided}) lands after the update, not under it`, () =>
      Effect.gen(function*() {
        const store = yield* MemoryStore.make()
        yield* store.set("k", bytes("old"))
        let inner: Fiber.Fiber<void, KvStore.KvError> | undefined
        const written = yield* store.update("k", () => {
          // runFork starts the set at once, while the update's read-decide-write step runs
          inner = Effect.runFork(store.set("k", bytes("inner")))
          return decided === "Effect.succeed" ? Effect.succeed(bytes("outer")) : Effect.as(Effect.yieldNow, bytes("outer"))
        })
        assert.strictEqual(new TextDecoder().decode(written), "outer")
        yield* Fiber.join(inner!)
        assert.strictEqual(new TextDecoder().decode(yield* store.get("k")), "inner", "the set was lost under the update")
      }).pipe(Effect.scoped))
  }

  it.effect("a copy of the memory driver ({ ...driver }: the front takes the lock) updates and serialises as the original", () =>
    Effect.gen(function*() {
      const store = yield* KvStore.make({ ...makeMemoryDriver(undefined) })
      const add = (n: number) => (current: Option.Option<Uint8Array>) => {
        const next = bytes(String(Number(Option.match(current, { onNone: () => "0", onSome: (v) => new TextDecoder().decode(v) })) + n))
        return n % 2 === 0 ? Effect.succeed(next) : Effect.as(Effect.yieldNow, next)
      }
      yield* Effect.forEach(Array.from({ length: 100 }, (_, i) => i), (i) => store.update("n", add(i % 2 === 0 ? 2 : 1)), { concurrency: "unbounded", discard: true })
      assert.strictEqual(new TextDecoder().decode(yield* store.get("n")), "150")
    }).pipe(Effect.scoped))
})
