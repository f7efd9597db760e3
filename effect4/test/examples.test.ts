/**
 * The Effect 4 line's examples that run without a server, checked on MemoryStore (as the
 * Effect 3 line's test/examples.test.ts checks its own).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as ConfigReload from "../examples/configReload.js"
import * as MemoryStore from "../src/MemoryStore.js"

describe("examples", () => {
  it.live("config reload: the stored config at start, a write live, a broken one refused, a delete back to defaults", () =>
    Effect.gen(function*() {
      const report = yield* ConfigReload.program("c:").pipe(Effect.provide(MemoryStore.layer()))
      assert.isTrue(report.feed)
      if (!report.feed) return
      assert.deepStrictEqual(report.atStart, { greeting: "hi", maxUploadMb: 20 })
      assert.deepStrictEqual(report.afterWrite, { greeting: "bonjour", maxUploadMb: 50 })
      assert.deepStrictEqual(report.afterBrokenWrite, { greeting: "bonjour", maxUploadMb: 50 })
      assert.strictEqual(report.refused, 1)
      assert.deepStrictEqual(report.afterDelete, { greeting: "hello", maxUploadMb: 10 })
    }))
})
