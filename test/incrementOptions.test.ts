/**
 * `increment(key, options)` takes options as an object: `increment(key, 42)`
 * is a caller's mistake (it is not `{ by: 42 }`), refused on every backend
 * with InvalidArgument and nothing written, never read as the defaults.
 */
import { assert, layer } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as KvStore from "../src/KvStore.js"
import { backends, freshPrefix } from "./backends.js"

for (const backend of backends("increment_options")) {
  layer(backend.layer)(`increment options (${backend.name})`, (it) => {
    it.effect("a number, string, boolean, null or function as options is refused; nothing is written", () =>
      Effect.gen(function*() {
        const store = yield* KvStore.KvStore
        const key = `${freshPrefix("increment-options")}n`
        for (const options of [42, "42", true, null, () => 1]) {
          const exit = yield* Effect.exit(store.increment(key, options as never))
          assert.isTrue(Exit.isFailure(exit), `increment(key, ${String(options)}) succeeded`)
          const error = Option.getOrThrow(Cause.failureOption((exit as Exit.Failure<number, KvStore.KvError>).cause))
          assert.instanceOf(error, KvStore.KvError)
          assert.strictEqual(error.reason, "InvalidArgument")
          assert.strictEqual(error.op, "increment")
          assert.strictEqual(error.key, key)
          assert.match(error.message, /options/)
        }
        assert.isFalse(yield* store.has(key))
        // the rule for arguments still holds: a bad key is reported before bad options
        const badKey = yield* Effect.exit(store.increment("", 42 as never))
        assert.isTrue(Exit.isFailure(badKey))
        const keyError = Option.getOrThrow(Cause.failureOption((badKey as Exit.Failure<number, KvStore.KvError>).cause))
        assert.match((keyError as KvStore.KvError).message, /Invalid key/)
        // and objects still work, an empty one meaning the defaults
        assert.strictEqual(yield* store.increment(key, {}), 1)
        assert.strictEqual(yield* store.increment(key, { by: 41 }), 42)
        assert.strictEqual(yield* store.increment(key), 43)
      }))
  })
}
