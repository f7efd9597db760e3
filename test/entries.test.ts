/**
 * The package's entries: `effect-kv` exports one namespace per module, Effect
 * style, the bridges included, and each module is also its own entry
 * (`effect-kv/KvPersistence`, ...) with the very same exports.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Index from "effect-kv"
import * as KvKeyValueStoreEntry from "effect-kv/KvKeyValueStore"
import * as KvPersistence from "effect-kv/KvPersistence"
import * as KvRateLimiter from "effect-kv/KvRateLimiter"

describe("package entries", () => {
  it("the index and the subpath entries export the same modules", () => {
    assert.strictEqual(Index.KvKeyValueStore.layer, KvKeyValueStoreEntry.layer)
    assert.strictEqual(Index.KvPersistence.layer, KvPersistence.layer)
    assert.strictEqual(Index.KvPersistence.layerResult, KvPersistence.layerResult)
    assert.strictEqual(Index.KvRateLimiter.layerStore, KvRateLimiter.layerStore)
  })

  it("export the layers", () => {
    assert.isFunction(Index.KvKeyValueStore.layer)
    assert.isFunction(KvPersistence.layer)
    assert.isFunction(KvPersistence.layerResult)
    assert.isFunction(KvRateLimiter.layerStore)
  })
})
