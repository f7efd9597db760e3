import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { KvStore, MemoryStore, PostgresStore } from "effect-kv"

describe("effect-kv", () => {
  it("exports one namespace per module", () => {
    assert.isFunction(KvStore.KvStore)
    assert.isFunction(KvStore.NotFound)
    assert.isFunction(KvStore.KvError)
    for (const accessor of ["get", "set", "delete", "update", "keys"] as const) assert.isFunction(KvStore[accessor])
    assert.isTrue(Effect.isEffect(KvStore.cleanup))
    assert.isFunction(MemoryStore.layer)
    assert.isFunction(PostgresStore.layer)
  })

  it.effect("works through the package name and the accessors", () =>
    Effect.gen(function*() {
      yield* KvStore.set("index/a", new Uint8Array([1]))
      assert.deepStrictEqual(Array.from(yield* KvStore.get("index/a")), [1])
      assert.deepStrictEqual(yield* KvStore.keys("index/"), ["index/a"])
      assert.isTrue(yield* KvStore.delete("index/a"))
    }).pipe(Effect.provide(MemoryStore.layer())))
})
