/**
 * The package as a user gets it: `npm pack` (which builds through `prepare`),
 * the tarball installed into a scratch project, then plain `node` and `tsc` there.
 *
 * Offline: npm installs only the tarball (effect-kv has no dependencies of its
 * own; `--legacy-peer-deps` keeps npm from fetching the peers), and the peers
 * of the README's memory-only install line are then linked in from this repo's
 * node_modules. @effect/sql-pg is deliberately absent: the index must load
 * without it.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { afterAll, beforeAll, inject } from "vitest"

const repo = fileURLToPath(new URL("..", import.meta.url))
const run = promisify(execFile)
const npm = process.platform === "win32" ? "npm.cmd" : "npm"

/** The peers of the README's memory-only line, linked from the repo instead of downloaded. */
const memoryOnlyPeers = ["effect", "@effect/platform", "@effect/sql", "@effect/experimental"]

/** Public modules, as the build derives them: the top-level files of src/. */
const publicModules = async () =>
  (await fs.readdir(path.join(repo, "src"))).filter((f) => f.endsWith(".ts")).map((f) => f.slice(0, -3))

let tmp = ""
let app = ""

const node = async (file: string) => {
  const { stdout } = await run(process.execPath, [file], { cwd: app, timeout: 30_000 })
  return stdout.trim()
}

const tsc = (project: string) =>
  run(process.execPath, [path.join(repo, "node_modules", "typescript", "bin", "tsc"), "-p", project], {
    cwd: app,
    timeout: 60_000
  }).then(
    () => "",
    (error: { stdout?: string; stderr?: string }) => `${error.stdout ?? ""}${error.stderr ?? ""}` || String(error)
  )

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv-pack-"))
  app = path.join(tmp, "app")
  await fs.mkdir(app)
  const packed = await run(npm, ["pack", "--json", "--pack-destination", tmp], { cwd: repo, timeout: 120_000 })
  // prepare's output (the build) may precede the JSON
  const report = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("["))) as Array<{ filename: string }>
  const tarball = path.join(tmp, report[0]!.filename)

  await fs.writeFile(path.join(app, "package.json"), JSON.stringify({ name: "app", private: true }))
  await run(npm, [
    "install", "--offline", "--no-audit", "--no-fund", "--ignore-scripts", "--legacy-peer-deps", "--no-save", tarball
  ], { cwd: app, timeout: 120_000 })
  for (const name of memoryOnlyPeers) await linkPeer(name)
}, 180_000)

/** Makes the repo's copy of a package resolvable from the scratch app. */
const linkPeer = async (name: string) => {
  const link = path.join(app, "node_modules", name)
  await fs.mkdir(path.dirname(link), { recursive: true })
  await fs.symlink(await fs.realpath(path.join(repo, "node_modules", name)), link, "dir")
}

/** Entries that only load inside a test runner (vitest refuses to load elsewhere): resolved, not loaded. */
const runnerOnly = ["conformance"]

afterAll(async () => {
  if (tmp !== "") await fs.rm(tmp, { recursive: true, force: true })
})

const setAndGet = `
const program = Effect.gen(function*() {
  yield* KvStore.set("greeting", new TextEncoder().encode("hello"))
  return new TextDecoder().decode(yield* KvStore.get("greeting"))
})`

/** The README's ```js blocks, in order: quick start, its CommonJS imports, the PostgreSQL quick start. */
const readmeBlocks = async () =>
  Array.from((await fs.readFile(path.join(repo, "README.md"), "utf8")).matchAll(/```js\n([\s\S]*?)```/g), (m) => m[1]!)

/** What a quick start says it prints: its last line, `// <output>`. */
const promisedOutput = (block: string) => block.trim().split("\n").at(-1)!.replace(/^\/\/ /, "")

describe("packaging", () => {
  it("the tarball holds the builds, sources for the maps, README and LICENSE, and no tests", async () => {
    const installed = path.join(app, "node_modules", "effect-kv")
    for (const file of ["LICENSE", "README.md", "dist/esm/index.js", "dist/cjs/index.js", "src/index.ts"]) {
      await fs.access(path.join(installed, file))
    }
    assert.deepStrictEqual(JSON.parse(await fs.readFile(path.join(installed, "dist/esm/package.json"), "utf8")).type, "module")
    assert.deepStrictEqual(JSON.parse(await fs.readFile(path.join(installed, "dist/cjs/package.json"), "utf8")).type, "commonjs")
    const files = await fs.readdir(installed)
    assert.deepStrictEqual(files.sort(), ["LICENSE", "README.md", "dist", "package.json", "src"])
  })

  it("ESM under plain node: import { KvStore, MemoryStore } from \"effect-kv\"", async () => {
    await fs.writeFile(path.join(app, "esm.mjs"), `
import { Effect } from "effect"
import { KvStore, MemoryStore } from "effect-kv"
${setAndGet}
const value = await Effect.runPromise(program.pipe(Effect.provide(MemoryStore.layer())))
console.log(value, import.meta.resolve("effect-kv"))
`)
    const [value, resolved] = (await node("esm.mjs")).split(" ")
    assert.strictEqual(value, "hello")
    assert.match(resolved!, /\/node_modules\/effect-kv\/dist\/esm\/index\.js$/)
  })

  it("CommonJS under plain node: require(\"effect-kv\") and require(\"effect-kv/MemoryStore\")", async () => {
    await fs.writeFile(path.join(app, "cjs.cjs"), `
const { Effect } = require("effect")
const { KvStore, MemoryStore } = require("effect-kv")
const MemoryStoreModule = require("effect-kv/MemoryStore")
${setAndGet}
Effect.runPromise(program.pipe(Effect.provide(MemoryStoreModule.layer()))).then((value) => {
  console.log(value, MemoryStoreModule.layer === MemoryStore.layer, require.resolve("effect-kv"))
})
`)
    const [value, same, resolved] = (await node("cjs.cjs")).split(" ")
    assert.strictEqual(value, "hello")
    assert.strictEqual(same, "true")
    assert.match(resolved!, /\/node_modules\/effect-kv\/dist\/cjs\/index\.js$/)
  })

  it("the README's quick start runs verbatim as ESM and, with its require lines, as CommonJS", async () => {
    const [quickStart, requires] = await readmeBlocks()
    const imports = `import { Effect, Option } from "effect"\nimport { KvStore, MemoryStore } from "effect-kv"\n`
    assert.include(quickStart!, imports)
    await fs.writeFile(path.join(app, "quickstart.mjs"), quickStart!)
    await fs.writeFile(path.join(app, "quickstart.cjs"), quickStart!.replace(imports, requires!))
    const expected = promisedOutput(quickStart!)
    assert.strictEqual(await node("quickstart.mjs"), expected)
    assert.strictEqual(await node("quickstart.cjs"), expected)
  })

  it("the README's PostgreSQL quick start runs verbatim (with @effect/sql-pg added)", async () => {
    const pgQuickStart = (await readmeBlocks())[2]!
    assert.include(pgQuickStart, "PgClient.layerConfig")
    // its own node_modules holds @effect/sql-pg; the rest resolves from the app's
    const dir = path.join(app, "pg")
    await fs.mkdir(path.join(dir, "node_modules", "@effect"), { recursive: true })
    await fs.symlink(
      await fs.realpath(path.join(repo, "node_modules", "@effect", "sql-pg")),
      path.join(dir, "node_modules", "@effect", "sql-pg"),
      "dir"
    )
    await fs.writeFile(path.join(dir, "pg-quickstart.mjs"), pgQuickStart)
    const { stdout } = await run(process.execPath, ["pg-quickstart.mjs"], {
      cwd: dir,
      timeout: 30_000,
      env: { ...process.env, DATABASE_URL: inject("databaseUrl") }
    })
    assert.strictEqual(stdout.trim(), promisedOutput(pgQuickStart))
  })

  it("every public module loads both ways; internal modules are not exported", async () => {
    const modules = await publicModules()
    const specifiers = modules.filter((m) => !runnerOnly.includes(m)).map((m) => (m === "index" ? "effect-kv" : `effect-kv/${m}`))
    const resolvedOnly = runnerOnly.map((m) => `effect-kv/${m}`)
    await fs.writeFile(path.join(app, "all.mjs"), `
import { createRequire } from "node:module"
const require = createRequire(import.meta.url)
const specifiers = ${JSON.stringify(specifiers)}
const report = {}
for (const s of specifiers) {
  const esm = await import(s)
  const cjs = require(s)
  report[s] = [Object.keys(esm).filter((k) => k !== "default").sort().join(), Object.keys(cjs).filter((k) => k !== "__esModule").sort().join()]
}
for (const s of ["effect-kv/internal/key", "effect-kv/dist/esm/index.js"]) {
  try { require(s); report[s] = "loaded" } catch (e) { report[s] = e.code }
}
for (const s of ${JSON.stringify(resolvedOnly)}) report[s] = [import.meta.resolve(s), require.resolve(s)]
console.log(JSON.stringify(report))
`)
    const report = JSON.parse(await node("all.mjs")) as Record<string, unknown>
    for (const s of specifiers) {
      const [esm, cjs] = report[s] as [string, string]
      assert.isAbove(esm.length, 0, s)
      assert.strictEqual(esm, cjs, s)
    }
    for (const s of resolvedOnly) {
      const [esm, cjs] = report[s] as [string, string]
      assert.match(esm, /\/dist\/esm\/[^/]+\.js$/, s)
      assert.match(cjs, /\/dist\/cjs\/[^/]+\.js$/, s)
    }
    assert.strictEqual(report["effect-kv/internal/key"], "ERR_PACKAGE_PATH_NOT_EXPORTED")
    assert.strictEqual(report["effect-kv/dist/esm/index.js"], "ERR_PACKAGE_PATH_NOT_EXPORTED")
  })

  it("types resolve for ESM and CommonJS (module node16) and for moduleResolution node10", async () => {
    // the @ts-expect-error lines fail the check if the types came out as `any`
    const body = (from: (s: string) => string) => `
${from("effect")}
${from("effect-kv")}
const layer: Layer.Layer<KvStore.KvStore, KvStore.KvError> = MemoryStore.layer({ maxEntries: 10 })
const get: Effect.Effect<Uint8Array, KvStore.NotFound | KvStore.KvError, KvStore.KvStore> = KvStore.get("k")
// @ts-expect-error a key is a string
KvStore.get(42)
export const program = Effect.provide(get, layer)
`
    const esmImport = (s: string) =>
      s === "effect" ? `import { Effect, Layer } from "effect"` : `import { KvStore, MemoryStore } from "effect-kv"`
    const subpaths = `
import * as PostgresStore from "effect-kv/PostgresStore"
// @ts-expect-error options are checked
PostgresStore.layer({ table: 1 })
`
    await fs.writeFile(path.join(app, "check-esm.mts"), body(esmImport) + subpaths)
    await fs.writeFile(path.join(app, "check-cjs.cts"), body(esmImport) + subpaths)
    await fs.mkdir(path.join(app, "node10"))
    await fs.writeFile(path.join(app, "node10", "check.ts"), body(esmImport) + subpaths)
    const common = { strict: true, noEmit: true, skipLibCheck: false, types: [], lib: ["ES2022", "DOM"], target: "ES2022" }
    await fs.writeFile(path.join(app, "tsconfig.json"), JSON.stringify({
      compilerOptions: { ...common, module: "node16", moduleResolution: "node16" },
      files: ["check-esm.mts", "check-cjs.cts"]
    }))
    await fs.writeFile(path.join(app, "node10", "tsconfig.json"), JSON.stringify({
      compilerOptions: { ...common, module: "commonjs", moduleResolution: "node10" },
      files: ["check.ts"]
    }))
    const [nodeNext, node10] = await Promise.all([tsc("tsconfig.json"), tsc("node10/tsconfig.json")])
    assert.strictEqual(nodeNext, "", "module node16")
    assert.strictEqual(node10, "", "moduleResolution node10")
  })
})
