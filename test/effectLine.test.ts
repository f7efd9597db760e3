/**
 * Effect 4 next to the Effect 3 build (API.md, Version 3): loading effect-kv
 * fails with a message naming both lines, not a `TypeError` from deep inside.
 *
 * The message and the probe are tested here with fake inputs; the last test
 * runs the guard module for real against Effect 4, installed from the npm
 * cache into a scratch directory (skipped when the cache does not have it:
 * nothing is downloaded), as ESM and as CommonJS.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import ts from "typescript-5.9" // TypeScript 7 (the build's compiler) has no JavaScript API; 5.9 has
import { effectLineProblem, majorOf, PACKAGE_VERSION } from "../src/core/effectLine.js"
import { checkEffectLine } from "../src/internal/effectLine.js"

const repo = fileURLToPath(new URL("..", import.meta.url))
const run = promisify(execFile)

describe("the Effect line check", () => {
  it("says which effect-kv to use next to Effect 4, naming both versions", () => {
    assert.strictEqual(
      effectLineProblem("4.1.5", false),
      "effect-kv 0.1.0 is built for Effect 3; this app has effect 4.1.5: use effect-kv 2.x (npm install effect-kv@2), or install effect@^3.22"
    )
    assert.match(effectLineProblem("4.0.0-beta.7", true)!, /this app has effect 4\.0\.0-beta\.7: use effect-kv 2\.x/)
    assert.match(effectLineProblem("5.0.0", false)!, /this app has effect 5\.0\.0: install effect@\^3\.22/)
    assert.match(effectLineProblem(undefined, false)!, /built for Effect 3; this app has another major version of effect/)
  })

  it("is silent on Effect 3, by version or, when the version is unknown, by the probe", () => {
    assert.isUndefined(effectLineProblem("3.22.4", true))
    assert.isUndefined(effectLineProblem("3.0.0", false))
    assert.isUndefined(effectLineProblem(undefined, true))
    assert.strictEqual(majorOf("4.1.5"), 4)
    assert.isUndefined(majorOf("latest"))
  })

  it("probes the loaded effect: Effect 3's Context passes, one without Context.Tag does not", () => {
    assert.isUndefined(checkEffectLine())
    assert.match(checkEffectLine({ Service: () => {} }, () => "4.1.5")!, /this app has effect 4\.1\.5: use effect-kv 2\.x/)
  })

  it("names the version in package.json", async () => {
    const manifest = JSON.parse(await fs.readFile(path.join(repo, "package.json"), "utf8")) as { version: string }
    assert.strictEqual(PACKAGE_VERSION, manifest.version)
  })

  it("fails at import next to a real Effect 4, as ESM and as CommonJS", async () => {
    const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv-effect4-"))
    try {
      await fs.writeFile(path.join(tmp, "package.json"), JSON.stringify({ name: "app", private: true }))
      // from the npm cache when it has effect 4, else from the registry (a fresh machine's cache is empty)
      await run("npm", [
        "install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts", "--no-save", "effect@4"
      ], { cwd: tmp, timeout: 120_000 })
      const effect4 = JSON.parse(await fs.readFile(path.join(tmp, "node_modules", "effect", "package.json"), "utf8")) as {
        version: string
      }

      // the guard and its pure half, compiled as the build does (one file each, no type check)
      for (const [format, module] of [["esm", ts.ModuleKind.ESNext], ["cjs", ts.ModuleKind.CommonJS]] as const) {
        for (const file of ["internal/effectLine.ts", "core/effectLine.ts"]) {
          const source = await fs.readFile(path.join(repo, "src", file), "utf8")
          const output = ts.transpileModule(source, { compilerOptions: { module, target: ts.ScriptTarget.ES2022 } })
          await fs.mkdir(path.join(tmp, format, path.dirname(file)), { recursive: true })
          await fs.writeFile(path.join(tmp, format, file.replace(/\.ts$/, ".js")), output.outputText)
        }
        await fs.writeFile(
          path.join(tmp, format, "package.json"),
          JSON.stringify({ type: format === "esm" ? "module" : "commonjs" })
        )
        const loaded = await run(process.execPath, [path.join(tmp, format, "internal", "effectLine.js")], {
          cwd: tmp,
          timeout: 30_000
        }).then(() => "", (error: { stderr?: string }) => error.stderr ?? String(error))
        assert.include(
          loaded,
          `effect-kv ${PACKAGE_VERSION} is built for Effect 3; this app has effect ${effect4.version}: use effect-kv 2.x`,
          `${format}: ${loaded}`
        )
        assert.notInclude(loaded, "TypeError", format)
      }
    } finally {
      await fs.rm(tmp, { recursive: true, force: true })
    }
  }, 180_000)
})
