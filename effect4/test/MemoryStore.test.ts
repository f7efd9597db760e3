/**
 * The exported conformance suite (`effect-kv/conformance`, on `@effect/vitest` 4) on
 * MemoryStore, plus what only the memory backend promises.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { conformance } from "effect-kv/conformance"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"

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
