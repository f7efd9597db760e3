/**
 * The package as a user gets it: the tarball `npm pack` makes (packed once for
 * the run by test/globalSetup.ts, which builds it), installed with the npm on
 * PATH into a scratch project (CI runs this file again with npm 12 on Node 24),
 * then plain `node` and both TypeScript lines (7, the native compiler, and 5.9) there.
 *
 * npm installs the tarball and its one dependency (from its cache when it has
 * it, else from the registry: nothing here may depend on what a cache happens
 * to hold), with `--legacy-peer-deps` so that it fetches no peers; the peers of
 * the README's memory-only install line are then linked in from this repo's
 * node_modules, at the versions the rest of the suite tests. @effect/sql-pg is
 * deliberately absent from the app: the index must load without it.
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
/** What `npm install <tarball>` printed (stdout and stderr). */
let installLog = ""

const node = async (file: string) => {
  const { stdout } = await run(process.execPath, [file], { cwd: app, timeout: 60_000 })
  return stdout.trim()
}

beforeAll(async () => {
  const tarball = inject("tarball")
  if (tarball === "") throw new Error("no tarball: test/globalSetup.ts packs it when the run includes this file")
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv-app-"))
  app = path.join(tmp, "app")
  await fs.mkdir(app)
  await fs.writeFile(path.join(app, "package.json"), JSON.stringify({ name: "app", private: true }))
  const installed = await run(npm, [
    "install", "--prefer-offline", "--no-audit", "--no-fund", "--legacy-peer-deps", "--no-save", tarball
  ], { cwd: app, timeout: 240_000 })
  installLog = `${installed.stdout}${installed.stderr}`
  for (const name of memoryOnlyPeers) await linkPeer(name)
}, 300_000) // its own budget: one install of one package and a dependency, from the registry at worst

/** Makes the repo's copy of a package resolvable from `dir` (default: the scratch app). */
const linkPeer = async (name: string, dir = app) => {
  const link = path.join(dir, "node_modules", name)
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
  it("installs with the npm on PATH and no warning about effect-kv (npm 12: no install script to allow)", async () => {
    const version = (await run(npm, ["--version"], { cwd: app })).stdout.trim()
    // CI's run on Node 24 says which npm it put on PATH: make sure this file ran with it
    const expected = process.env["EFFECT_KV_EXPECT_NPM"]
    if (expected !== undefined && expected !== "") assert.strictEqual(version.split(".")[0], expected, `npm ${version}`)
    const warnings = installLog.split("\n").filter((line) => /\b(warn|ERR)/i.test(line) && /effect-kv/.test(line))
    assert.deepStrictEqual(warnings, [], installLog)
    // whatever the npm: a tarball's (or git checkout's) install scripts and prepare would need the user's approval
    const manifest = JSON.parse(await fs.readFile(path.join(app, "node_modules", "effect-kv", "package.json"), "utf8"))
    const installScripts = ["preinstall", "install", "postinstall", "prepare"].filter((s) => s in (manifest.scripts ?? {}))
    assert.deepStrictEqual(installScripts, [])
  })

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

  it("types: a strict consumer type-checks against the packed .d.ts with TypeScript 7 and 5.9 (nodenext, bundler; node10 on 5.9)", async () => {
    // a project of its own, as a TypeScript user has it: effect-kv and its peers, @effect/sql-pg,
    // and what TypeScript 6+ needs spelled out: "types": ["node"] and @types/pg (for @effect/sql-pg's types);
    // "DOM" in lib because @effect/platform's KeyValueStore declarations name DOM's Storage (or skipLibCheck)
    const typed = path.join(tmp, "typed")
    await fs.cp(path.join(app, "node_modules", "effect-kv"), path.join(typed, "node_modules", "effect-kv"), { recursive: true })
    for (const name of [...memoryOnlyPeers, "@effect/sql-pg", "@types/node", "@types/pg"]) await linkPeer(name, typed)
    // the @ts-expect-error lines fail the check if the types came out as `any`
    const program = `
import { PgClient } from "@effect/sql-pg"
import { Config, Effect, Layer } from "effect"
import { KvStore, MemoryStore, PostgresStore } from "effect-kv"
import * as PostgresStoreModule from "effect-kv/PostgresStore"
const layer: Layer.Layer<KvStore.KvStore, KvStore.KvError> = MemoryStore.layer({ maxEntries: 10 })
const get: Effect.Effect<Uint8Array, KvStore.NotFound | KvStore.KvError, KvStore.KvStore> = KvStore.get("k")
// @ts-expect-error a key is a string
KvStore.get(42)
// @ts-expect-error options are checked
PostgresStoreModule.layer({ table: 1 })
export const program = Effect.provide(get, layer)
export const pgLayer: Layer.Layer<KvStore.KvStore, unknown> = PostgresStore.layer({ table: "kv_store" }).pipe(
  Layer.provide(PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") }))
)
export const same: typeof PostgresStore.layer = PostgresStoreModule.layer
export const timer: NodeJS.Timeout = setTimeout(() => undefined, 0)
`
    const common = {
      strict: true, exactOptionalPropertyTypes: true, skipLibCheck: false, noEmit: true,
      target: "ES2022", lib: ["ES2022", "DOM"], types: ["node"]
    }
    const configs = {
      nodenext: { compilerOptions: { ...common, module: "nodenext", moduleResolution: "nodenext" }, files: ["check.mts", "check.cts"] },
      bundler: { compilerOptions: { ...common, module: "preserve", moduleResolution: "bundler" }, files: ["check.ts"] },
      node10: { compilerOptions: { ...common, module: "commonjs", moduleResolution: "node10" }, files: ["check.ts"] }
    }
    for (const file of ["check.mts", "check.cts", "check.ts"]) await fs.writeFile(path.join(typed, file), program)
    for (const [name, config] of Object.entries(configs)) {
      await fs.writeFile(path.join(typed, `tsconfig.${name}.json`), JSON.stringify(config, null, 2))
    }
    const tsc = (typescript: string, config: string) =>
      run(process.execPath, [path.join(repo, "node_modules", typescript, "bin", "tsc"), "-p", `tsconfig.${config}.json`], {
        cwd: typed,
        timeout: 300_000
      }).then(
        () => "",
        (error: { stdout?: string; stderr?: string }) => `${error.stdout ?? ""}${error.stderr ?? ""}` || String(error)
      )
    const version = async (typescript: string) =>
      JSON.parse(await fs.readFile(path.join(repo, "node_modules", typescript, "package.json"), "utf8")).version as string
    assert.match(await version("typescript"), /^7\./)
    assert.match(await version("typescript-5.9"), /^5\.9\./)
    // node10 resolution is gone from TypeScript 7 (deprecated in 6): checked on 5.9, where typesVersions serve it
    const checks: Array<[string, string]> = [
      ["typescript", "nodenext"], ["typescript", "bundler"],
      ["typescript-5.9", "nodenext"], ["typescript-5.9", "bundler"], ["typescript-5.9", "node10"]
    ]
    const results = await Promise.all(checks.map(([ts, config]) => tsc(ts, config)))
    checks.forEach(([ts, config], i) => assert.strictEqual(results[i], "", `${ts} ${config}`))
  }, 600_000) // five compilers over effect's declarations without skipLibCheck: slow on a loaded machine
})
