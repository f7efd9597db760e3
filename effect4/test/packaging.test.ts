/**
 * Issue 17's "Done when", automated for the Effect 4 line: the package as a user gets it.
 * The tarball `npm pack` makes in effect4/ (packed once for the run by test/globalSetup.ts,
 * whose `prepack` builds dist) is installed into a fresh `"type": "module"` project with
 * effect 4 and @effect/sql-pg 4 — the README's install line — by the npm on PATH running
 * under this line's Node 22 (so npm judges `engines` and runs scripts with the Node the
 * package asks for). It must install without ERESOLVE or a warning about effect-kv's peers.
 *
 * Then the README's two quick starts are taken verbatim from its code blocks (found by
 * their section headings), saved as `main.ts` and run with `node main.ts`, as the README
 * says: what they print must be what their `// …` comments promise. The PostgreSQL one
 * runs against a database of its own on the test server, so its counter starts at 1.
 * Last, the installed package loads as ES modules and as CommonJS, with its NearCache entry,
 * and holds its builds, README and LICENSE (none of which the checkout's dist/ could fake).
 *
 * npm installs from its cache when it has the packages, else from the registry: nothing
 * here depends on what a cache happens to hold, or on files outside the repository.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import { execFile } from "node:child_process"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, inject } from "vitest"
import { nodeFirstOnPath } from "../scripts/pack.mjs"

const line = fileURLToPath(new URL("..", import.meta.url))
const npm = process.platform === "win32" ? "npm.cmd" : "npm"

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs a program to its end and reports its exit code and output (a failure is a result, not a throw). */
const run = (file: string, args: ReadonlyArray<string>, options: { cwd: string; timeout: number; env?: NodeJS.ProcessEnv }) =>
  new Promise<Ran>((resolve) => {
    execFile(file, args, { ...options, env: options.env ?? nodeFirstOnPath(), maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
      resolve({ code, stdout, stderr: error !== null && typeof error.code !== "number" ? `${stderr}\n${error.message}` : stderr })
    })
  })

/** The README's install line for PostgreSQL users, besides the tarball. */
const peers = ["effect@^4.1.5", "@effect/sql-pg@^4.1.5"]

/** `node main.ts` runs TypeScript by stripping types from Node 22.18 on; before, behind a flag. */
const typeStripping = (): ReadonlyArray<string> => {
  const [major, minor] = process.versions.node.split(".").map(Number) as [number, number]
  return major > 22 || (major === 22 && minor >= 18) ? [] : ["--experimental-strip-types"]
}

let tmp = ""
let app = ""
let install: Ran = { code: -1, stdout: "", stderr: "" }

beforeAll(async () => {
  const tarball = inject("tarball")
  if (tarball === "") throw new Error("no tarball: test/globalSetup.ts packs it when the run includes this file")
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv4-app-"))
  app = path.join(tmp, "app")
  await fs.mkdir(app)
  await fs.writeFile(path.join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }))
  install = await run(npm, ["install", "--prefer-offline", "--no-audit", "--no-fund", tarball, ...peers], {
    cwd: app,
    timeout: 300_000
  })
}, 330_000) // its own budget: one install of three packages and a dependency, from the registry at worst

afterAll(async () => {
  if (tmp !== "") await fs.rm(tmp, { recursive: true, force: true })
})

/** The first ```ts block under the README's `## <heading>`, as written. */
const readmeBlock = async (heading: string): Promise<string> => {
  const readme = await fs.readFile(path.join(line, "README.md"), "utf8")
  const start = readme.indexOf(`\n## ${heading}\n`)
  assert.isAtLeast(start, 0, `effect4/README.md has no section "## ${heading}"`)
  const section = readme.slice(start + 1).split(/\n## /)[0]!
  const block = /```ts\n([\s\S]*?)```/.exec(section)
  assert.isNotNull(block, `effect4/README.md's "${heading}" has no \`\`\`ts block`)
  return block![1]!
}

/**
 * What a quick start promises to print: for every `console.log(…) // comment` line, the
 * comment's first value ("1, 2, … shared by every instance" promises 1 on a first run).
 */
const promisedOutput = (block: string): ReadonlyArray<string> =>
  block.split("\n").filter((l) => /^\s*console\.log\(.*\/\/ /.test(l)).map((l) => l.slice(l.lastIndexOf("// ") + 3).split(",")[0]!.trim())

/** Saves `source` as `<dir>/main.ts` in the app and runs `node main.ts` there. */
const runMain = async (dir: string, source: string, env?: NodeJS.ProcessEnv) => {
  const cwd = path.join(app, dir)
  await fs.mkdir(cwd, { recursive: true })
  await fs.writeFile(path.join(cwd, "main.ts"), source)
  return run(process.execPath, [...typeStripping(), "main.ts"], { cwd, timeout: 60_000, ...(env === undefined ? {} : { env }) })
}

const lines = (output: string) => output.trim().split("\n").map((l) => l.trim())

/** A database of its own on the test server for the length of `f`, by its URL. */
const withFreshDatabase = async <A>(f: (url: string) => Promise<A>): Promise<A> => {
  const server = inject("databaseUrl")
  const name = `effect_kv_quickstart_${randomUUID().replaceAll("-", "")}`
  const admin = (statement: string) =>
    Effect.runPromise(
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(statement)
      }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(server) })))
    )
  await admin(`CREATE DATABASE "${name}"`)
  try {
    const url = new URL(server)
    url.pathname = `/${name}`
    return await f(url.toString())
  } finally {
    await admin(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
  }
}

describe("packaging (Effect 4 line)", () => {
  it("npm installs the tarball with effect 4 and @effect/sql-pg 4: exit 0, no ERESOLVE, no peer warning", async () => {
    const log = `${install.stdout}${install.stderr}`
    assert.strictEqual(install.code, 0, log)
    assert.notMatch(log, /ERESOLVE/, log)
    const warnings = log.split("\n").filter((l) => /\b(warn|ERR)/i.test(l) && /peer|effect-kv|EBADENGINE|effect@|sql-pg/i.test(l))
    assert.deepStrictEqual(warnings, [], log)
    const version = async (name: string, under = app) =>
      JSON.parse(await fs.readFile(path.join(under, "node_modules", name, "package.json"), "utf8")).version as string
    assert.strictEqual(await version("effect-kv"), "2.0.0")
    assert.match(await version("effect"), /^4\./)
    assert.match(await version("@effect/sql-pg"), /^4\./)
    // one Effect for the app and the package: no copy of its own under effect-kv or sql-pg
    for (const dependent of ["effect-kv", "@effect/sql-pg"]) {
      const nested = await fs.access(path.join(app, "node_modules", dependent, "node_modules", "effect")).then(() => true, () => false)
      assert.isFalse(nested, `${dependent} has its own effect`)
    }
  })

  it("the tarball holds package.json, README, LICENSE and both builds, nothing else", async () => {
    const installed = path.join(app, "node_modules", "effect-kv")
    assert.deepStrictEqual((await fs.readdir(installed)).sort(), ["LICENSE", "README.md", "dist", "package.json"])
    assert.deepStrictEqual((await fs.readdir(path.join(installed, "dist"))).sort(), ["cjs", "esm"])
    for (const build of ["esm", "cjs"]) {
      for (const file of ["index.js", "index.d.ts", "NearCache.js", "core"]) await fs.access(path.join(installed, "dist", build, file))
    }
    const manifest = JSON.parse(await fs.readFile(path.join(installed, "package.json"), "utf8"))
    // a tarball's install scripts would need the user's approval (npm 12); building is prepack's, at pack time
    assert.deepStrictEqual(["preinstall", "install", "postinstall", "prepare"].filter((s) => s in (manifest.scripts ?? {})), [])
  })

  it("the README's memory quick start runs verbatim as main.ts and prints what its comments say", async () => {
    const quickStart = await readmeBlock("Quick start (memory)")
    assert.include(quickStart, "MemoryStore.layer()")
    const promised = promisedOutput(quickStart)
    assert.deepStrictEqual(promised, ["hello", "1"])
    const result = await runMain("memory", quickStart)
    assert.strictEqual(result.code, 0, result.stderr)
    assert.deepStrictEqual(lines(result.stdout), promised, result.stderr)
  })

  it("the README's PostgreSQL quick start runs verbatim as main.ts with DATABASE_URL and prints what its comments say", async () => {
    const quickStart = await readmeBlock("Quick start (PostgreSQL)")
    assert.include(quickStart, "PostgresStore.layer()")
    assert.include(quickStart, `process.env["DATABASE_URL"]`)
    const promised = promisedOutput(quickStart)
    assert.deepStrictEqual(promised, ["hello", "1"])
    const result = await withFreshDatabase((url) => runMain("postgres", quickStart, { ...nodeFirstOnPath(), DATABASE_URL: url }))
    assert.strictEqual(result.code, 0, result.stderr)
    assert.deepStrictEqual(lines(result.stdout), promised, result.stderr)
  })

  it("loads as CommonJS and as ES modules, NearCache as the subpath effect-kv/NearCache too", async () => {
    await fs.writeFile(path.join(app, "load.cjs"), `
const kv = require("effect-kv")
const NearCache = require("effect-kv/NearCache")
console.log(JSON.stringify({
  exports: Object.keys(kv).filter((k) => k !== "__esModule").sort(),
  nearCache: typeof NearCache.layer === "function" && NearCache.layer === kv.NearCache.layer,
  main: require.resolve("effect-kv"),
  subpath: require.resolve("effect-kv/NearCache")
}))
`)
    await fs.writeFile(path.join(app, "load.mjs"), `
import * as kv from "effect-kv"
import * as NearCache from "effect-kv/NearCache"
console.log(JSON.stringify({
  exports: Object.keys(kv).filter((k) => k !== "default").sort(),
  nearCache: typeof NearCache.layer === "function" && NearCache.layer === kv.NearCache.layer,
  main: import.meta.resolve("effect-kv"),
  subpath: import.meta.resolve("effect-kv/NearCache")
}))
`)
    const load = async (file: string) => {
      const result = await run(process.execPath, [file], { cwd: app, timeout: 60_000 })
      assert.strictEqual(result.code, 0, result.stderr)
      return JSON.parse(result.stdout) as { exports: Array<string>; nearCache: boolean; main: string; subpath: string }
    }
    const cjs = await load("load.cjs")
    const esm = await load("load.mjs")
    const expected = ["KvDriver", "KvKeyValueStore", "KvPersistence", "KvRateLimiter", "KvStore", "MemoryStore", "NearCache", "PostgresStore"]
    assert.deepStrictEqual(cjs.exports, expected)
    assert.deepStrictEqual(esm.exports, expected)
    assert.isTrue(cjs.nearCache)
    assert.isTrue(esm.nearCache)
    assert.match(cjs.main, /\/node_modules\/effect-kv\/dist\/cjs\/index\.js$/)
    assert.match(cjs.subpath, /\/node_modules\/effect-kv\/dist\/cjs\/NearCache\.js$/)
    assert.match(esm.main, /\/node_modules\/effect-kv\/dist\/esm\/index\.js$/)
    assert.match(esm.subpath, /\/node_modules\/effect-kv\/dist\/esm\/NearCache\.js$/)
  })
})
