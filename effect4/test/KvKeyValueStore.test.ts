/**
 * KvKeyValueStore against Effect 4's own `KeyValueStore` (`effect/persistence`), on
 * MemoryStore and on PostgresStore: the service's methods, its `prefix` combinator, a
 * `modify` that loses no write under concurrency (where `KeyValueStore.make`'s default is
 * a get then a set), and errors as `KeyValueStoreError` with the `KvError` as cause.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as KeyValueStore from "effect/persistence/KeyValueStore"
import * as Redacted from "effect/Redacted"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as KvKeyValueStore from "../src/KvKeyValueStore.js"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as PostgresStore from "../src/PostgresStore.js"

const run = randomUUID().slice(0, 8)
const backends: ReadonlyArray<readonly [string, Layer.Layer<KvStore.KvStore, unknown>]> = [
  ["MemoryStore", MemoryStore.layer()],
  [
    "PostgresStore",
    PostgresStore.layer({ table: `kv4_kvs_${run}` }).pipe(
      Layer.provide(PgClient.layer({ url: Redacted.make(inject("databaseUrl")), applicationName: "effect-kv4-kvs" }))
    )
  ]
]

for (const [name, store] of backends) {
  layer(KvKeyValueStore.layer({ prefix: `kvs/${run}/` }).pipe(Layer.provideMerge(store)), { timeout: 60_000 })(
    `KvKeyValueStore on ${name}`,
    (it) => {
      it.effect("get, set, has, remove, size, keys, clear stay inside the prefix", () =>
        Effect.gen(function*() {
          const kv = yield* KeyValueStore.KeyValueStore
          const service = yield* KvStore.KvStore
          yield* service.set("outside", new TextEncoder().encode("x"))
          yield* kv.clear
          assert.isTrue(yield* kv.isEmpty)
          yield* kv.set("a", "1")
          yield* kv.set("b", new Uint8Array([0xff, 0x00]))
          assert.strictEqual(yield* kv.get("a"), "1")
          assert.strictEqual(yield* kv.get("missing"), undefined)
          assert.deepStrictEqual(yield* kv.getUint8Array("b"), new Uint8Array([0xff, 0x00]))
          assert.strictEqual(yield* kv.get("b"), "/wA=") // not UTF-8: base64, as makeStringOnly stores it
          assert.isTrue(yield* kv.has("a"))
          assert.strictEqual(yield* kv.size, 2)
          assert.deepStrictEqual(yield* kv.keys, ["a", "b"])
          yield* kv.remove("a")
          assert.isFalse(yield* kv.has("a"))
          yield* kv.clear
          assert.strictEqual(yield* kv.size, 0)
          assert.isTrue(yield* service.has("outside"), "clear stayed inside the prefix")
        }))

      it.effect("clearPrefix and Effect 4's prefix combinator", () =>
        Effect.gen(function*() {
          const kv = yield* KeyValueStore.KeyValueStore
          yield* kv.clear
          const users = KeyValueStore.prefix(kv, "users/")
          yield* users.set("1", "ada")
          yield* kv.set("other", "x")
          assert.strictEqual(yield* kv.get("users/1"), "ada")
          yield* kv.clearPrefix("users/")
          assert.strictEqual(yield* users.get("1"), undefined)
          assert.strictEqual(yield* kv.get("other"), "x")
        }))

      it.effect("modify is atomic: 40 concurrent modifies of one key lose no write; a missing key is left alone", () =>
        Effect.gen(function*() {
          const kv = yield* KeyValueStore.KeyValueStore
          assert.strictEqual(yield* kv.modify("absent", (s) => s + "!"), undefined)
          assert.isFalse(yield* kv.has("absent"))
          yield* kv.set("n", "0")
          yield* Effect.all(
            Array.from({ length: 40 }, () => kv.modify("n", (s) => String(Number(s) + 1))),
            { concurrency: "unbounded", discard: true }
          )
          assert.strictEqual(yield* kv.get("n"), "40")
        }))

      it.effect("an invalid key, and a key that is not a string, fail with KeyValueStoreError", () =>
        Effect.gen(function*() {
          const kv = yield* KeyValueStore.KeyValueStore
          const error = yield* Effect.flip(kv.set("bad\u0000key", "v"))
          assert.instanceOf(error, KeyValueStore.KeyValueStoreError)
          assert.strictEqual(error.method, "set")
          assert.instanceOf(error.cause, KvStore.KvError)
          const notString = yield* Effect.flip(kv.get(42 as unknown as string))
          assert.instanceOf(notString, KeyValueStore.KeyValueStoreError)
          assert.include(notString.message, "Invalid key for get: expected a string")
        }))

      it.effect("options that cannot be taken make every operation fail with KeyValueStoreError naming the option", () =>
        Effect.gen(function*() {
          const service = yield* KvStore.KvStore
          for (const options of [{ prefix: 42 }, { prefx: "a/" }]) {
            const kv = KvKeyValueStore.make(service, options as never)
            const error = yield* Effect.flip(kv.get("a"))
            assert.instanceOf(error, KeyValueStore.KeyValueStoreError)
            assert.instanceOf(error.cause, KvStore.KvError)
            assert.include(error.message, "pref")
          }
        }))
    }
  )
}
