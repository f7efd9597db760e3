/**
 * @effect/platform's KeyValueStore served by effect-kv, on both backends:
 * strings as UTF-8, clear and size inside the prefix, atomic modify with
 * KeyValueStore's "nothing when missing", errors as PlatformError, forSchema.
 */
import * as PlatformError from "@effect/platform/Error"
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import { assert, layer } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as KvKeyValueStore from "../src/KvKeyValueStore.js"
import * as KvStore from "../src/KvStore.js"
import { backends, freshPrefix } from "./backends.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** A KeyValueStore under a fresh prefix of the KvStore in context. */
const kvs = (prefix: string) =>
  Effect.map(KvStore.KvStore, (store) => KvKeyValueStore.make(store, { prefix }))

for (const backend of backends("kvs")) {
  layer(backend.layer)(`KvKeyValueStore on ${backend.name}`, (it) => {
    it.effect("strings are stored as UTF-8 under the prefix; bytes round-trip", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const prefix = freshPrefix("kvs")
        const kv = yield* kvs(prefix)
        yield* kv.set("greeting", "héllo")
        assert.deepStrictEqual(yield* kv.get("greeting"), Option.some("héllo"))
        assert.strictEqual(decoder.decode(yield* store.get(`${prefix}greeting`)), "héllo")
        assert.deepStrictEqual(yield* kv.getUint8Array("greeting"), Option.some(encoder.encode("héllo")))

        yield* kv.set("bytes", new Uint8Array([0xff, 0, 1]))
        assert.deepStrictEqual(yield* kv.getUint8Array("bytes"), Option.some(new Uint8Array([0xff, 0, 1])))
        // bytes that are not UTF-8 read as text the way KeyValueStore.layerMemory shows binary values: base64
        assert.deepStrictEqual(yield* kv.get("bytes"), Option.some("/wAB"))

        assert.isTrue(yield* kv.has("greeting"))
        yield* kv.remove("greeting")
        assert.isFalse(yield* kv.has("greeting"))
        assert.deepStrictEqual(yield* kv.get("greeting"), Option.none())
      }))

    it.effect("clear and size stay inside the prefix", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const outer = freshPrefix("kvs")
        const kv = yield* kvs(`${outer}inside/`)
        yield* store.set(`${outer}outside`, encoder.encode("keep me"))
        yield* store.set(`${outer}insidex`, encoder.encode("keep me too")) // shares the text, not the prefix
        yield* Effect.forEach(["a", "b", "c"], (key) => kv.set(key, key))
        assert.strictEqual(yield* kv.size, 3)
        assert.isFalse(yield* kv.isEmpty)
        yield* kv.clear
        assert.strictEqual(yield* kv.size, 0)
        assert.isTrue(yield* kv.isEmpty)
        assert.deepStrictEqual(yield* store.keys(outer), [`${outer}insidex`, `${outer}outside`])
      }))

    it.effect("modify does nothing on a missing key, as KeyValueStore specifies", () =>
      Effect.gen(function*() {
        const kv = yield* kvs(freshPrefix("kvs"))
        assert.deepStrictEqual(yield* kv.modify("missing", (s) => s + "!"), Option.none())
        assert.isFalse(yield* kv.has("missing"))
        assert.deepStrictEqual(yield* kv.modifyUint8Array("missing", (b) => b), Option.none())
        assert.isFalse(yield* kv.has("missing"))
        yield* kv.set("there", "a")
        assert.deepStrictEqual(yield* kv.modify("there", (s) => s + "!"), Option.some("a!"))
        assert.deepStrictEqual(yield* kv.get("there"), Option.some("a!"))
        assert.deepStrictEqual(
          yield* kv.modifyUint8Array("there", (b) => new Uint8Array([...b, 0x3f])),
          Option.some(encoder.encode("a!?"))
        )
      }))

    it.effect("100 concurrent modify increments end exact", () =>
      Effect.gen(function*() {
        const kv = yield* kvs(freshPrefix("kvs"))
        yield* kv.set("n", "0")
        yield* Effect.all(
          Array.from({ length: 100 }, () => kv.modify("n", (s) => String(Number(s) + 1))),
          { concurrency: "unbounded", discard: true }
        )
        assert.deepStrictEqual(yield* kv.get("n"), Option.some("100"))
      }))

    it.effect("two instances modifying one key lose no increment", () =>
      Effect.gen(function*() {
        const prefix = freshPrefix("kvs")
        const a = yield* kvs(prefix)
        const b = KvKeyValueStore.make(yield* backend.otherInstance, { prefix })
        yield* a.set("n", "0")
        yield* Effect.all(
          Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? a : b).modify("n", (s) => String(Number(s) + 1))),
          { concurrency: "unbounded", discard: true }
        )
        assert.deepStrictEqual(yield* b.get("n"), Option.some("60"))
      }).pipe(Effect.scoped))

    it.effect("a KvError becomes a PlatformError with the KvError as its cause", () =>
      Effect.gen(function*() {
        const kv = yield* kvs(freshPrefix("kvs"))
        const exit = yield* Effect.exit(kv.set("x".repeat(3000), "too long a key"))
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? Option.getOrThrow(Cause.failureOption(exit.cause)) : undefined
        assert.instanceOf(error, PlatformError.BadArgument)
        assert.strictEqual(error?._tag, "BadArgument")
        assert.strictEqual(error?.method, "set")
        assert.instanceOf(error?.cause, KvStore.KvError)
      }))

    it.effect("a key that is not a string is refused with BadArgument, never converted (\"app/42\")", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const prefix = freshPrefix("kvs")
        const kv = yield* kvs(prefix)
        yield* kv.set("42", "the string key")
        const calls: ReadonlyArray<readonly [string, (key: string) => Effect.Effect<unknown, PlatformError.PlatformError>]> = [
          ["get", (key) => kv.get(key)],
          ["getUint8Array", (key) => kv.getUint8Array(key)],
          ["set", (key) => kv.set(key, "x")],
          ["remove", (key) => kv.remove(key)],
          ["has", (key) => kv.has(key)],
          ["modify", (key) => kv.modify(key, () => "x")],
          ["modifyUint8Array", (key) => kv.modifyUint8Array(key, () => encoder.encode("x"))]
        ]
        const badKeys: ReadonlyArray<unknown> = [42, undefined, null, Symbol("k"), { toString: () => "42" }, ["42"], 42n]
        for (const [method, call] of calls) {
          for (const key of badKeys) {
            const exit = yield* Effect.exit(call(key as string))
            const error = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
            assert.instanceOf(error, PlatformError.BadArgument, `${method}(${typeof key}) did not fail with BadArgument`)
            assert.strictEqual(error?.method, method)
          }
        }
        // nothing written, and the string key "42" untouched
        assert.deepStrictEqual(yield* store.keys(prefix), [`${prefix}42`])
        assert.deepStrictEqual(yield* kv.get("42"), Option.some("the string key"))
      }))

    it.effect("forSchema of the KeyValueStore works", () =>
      Effect.gen(function*() {
        const kv = yield* kvs(freshPrefix("kvs"))
        const Point = Schema.Struct({ x: Schema.Number, y: Schema.Number })
        const points = kv.forSchema(Point)
        yield* points.set("p", { x: 1, y: 2 })
        assert.deepStrictEqual(yield* points.get("p"), Option.some({ x: 1, y: 2 }))
        assert.deepStrictEqual(yield* points.modify("p", (p) => ({ ...p, x: 3 })), Option.some({ x: 3, y: 2 }))
        yield* kv.set("bad", "{\"x\":\"one\"}")
        const bad = yield* Effect.exit(points.get("bad"))
        assert.isTrue(Exit.isFailure(bad) && Option.isSome(Cause.failureOption(bad.cause)))
      }))
  })
}

layer(Layer.provide(KvKeyValueStore.layer({ prefix: "app/" }), backends("kvs")[0]!.layer))(
  "KvKeyValueStore.layer",
  (it) => {
    it.effect("a program written against KeyValueStore runs on the layer", () =>
      Effect.gen(function*() {
        const kv = yield* KeyValueStore.KeyValueStore
        yield* kv.set("visits", "1")
        yield* kv.modify("visits", (n) => String(Number(n) + 1))
        assert.deepStrictEqual(yield* kv.get("visits"), Option.some("2"))
        assert.strictEqual(yield* kv.size, 1)
      }))
  }
)
