/**
 * The Effect 4 line never reaches the Effect 3 packages of the repository's top level:
 * every `effect…` module that its sources (and the shared files linked into them) import
 * must be one that effect4/node_modules exports. TypeScript would otherwise quietly walk
 * up to ../node_modules for a subpath that Effect 4 no longer has (`effect/TestClock`).
 */
import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const require = createRequire(path.join(root, "package.json"))

const sources = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name)
    // follows the links to the shared files, as the build does
    if (fs.statSync(file).isDirectory()) return sources(file)
    return entry.name.endsWith(".ts") ? [file] : []
  })

describe("imports", () => {
  const files = [...sources(path.join(root, "src")), ...sources(path.join(root, "test"))]

  it("src/core (shared with the Effect 3 line) imports nothing but its own files", () => {
    for (const file of sources(path.join(root, "src", "core"))) {
      const specifiers = [...fs.readFileSync(file, "utf8").matchAll(/from "([^"]+)"/g)].map((m) => m[1]!)
      assert.deepStrictEqual(specifiers.filter((s) => !s.startsWith("./")), [], file)
    }
  })

  it("every effect module imported resolves inside effect4/node_modules", () => {
    const effectRoot = path.dirname(require.resolve("effect/package.json"))
    assert.isTrue(effectRoot.startsWith(root), effectRoot)
    assert.match(JSON.parse(fs.readFileSync(path.join(effectRoot, "package.json"), "utf8")).version, /^4\./)
    let checked = 0
    for (const file of files) {
      for (const [, specifier] of fs.readFileSync(file, "utf8").matchAll(/from "((?:effect|@effect\/[^/"]+)(?:\/[^"]*)?)"/g)) {
        const resolved = require.resolve(specifier!)
        assert.isTrue(resolved.startsWith(root + path.sep), `${file}: ${specifier} resolves to ${resolved}`)
        checked++
      }
    }
    assert.isAbove(checked, 20)
  })
})
