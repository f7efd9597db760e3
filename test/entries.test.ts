/**
 * The package's entries: `effect-kv` exports the KeyValueStore bridge, and
 * never loads the optional `@effect/experimental` (only the subpath entries
 * `effect-kv/KvPersistence` and `effect-kv/KvRateLimiter` do).
 */
import { assert, describe, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { dirname, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { KvKeyValueStore } from "effect-kv"
import * as KvPersistence from "effect-kv/KvPersistence"
import * as KvRateLimiter from "effect-kv/KvRateLimiter"

const src = resolve(dirname(fileURLToPath(import.meta.url)), "../src")

/** Every module specifier `file` loads at run time (type-only imports left out), following relative ones. */
const runtimeImports = (file: string, seen = new Set<string>()): Set<string> => {
  if (seen.has(file)) return seen
  seen.add(file)
  const text = readFileSync(file, "utf8")
  for (const match of text.matchAll(/^(?:import|export)(?!\s+type\b)[^"']*?from\s+["']([^"']+)["']/gm)) {
    const specifier = match[1]!
    if (specifier.startsWith(".")) runtimeImports(resolve(dirname(file), specifier.replace(/\.js$/, ".ts")), seen)
    else seen.add(specifier)
  }
  return seen
}

describe("package entries", () => {
  it("effect-kv does not load @effect/experimental; the subpath entries do", () => {
    const main = [...runtimeImports(`${src}/index.ts`)]
    assert.isTrue(main.some((s) => s.startsWith("@effect/platform")), "the KeyValueStore bridge is in the index")
    assert.deepStrictEqual(main.filter((s) => s.startsWith("@effect/experimental")), [])
    assert.isTrue([...runtimeImports(`${src}/KvPersistence.ts`)].some((s) => s.startsWith("@effect/experimental")))
  })

  it("export the layers", () => {
    assert.isFunction(KvKeyValueStore.layer)
    assert.isFunction(KvPersistence.layer)
    assert.isFunction(KvPersistence.layerResult)
    assert.isFunction(KvRateLimiter.layerStore)
  })
})
