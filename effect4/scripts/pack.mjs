/**
 * Packs the Effect 4 line (effect-kv 2.x) as `npm publish` in effect4/ would, without
 * touching the checkout (as ../../scripts/pack.mjs does for the Effect 3 line): the files
 * the build reads are copied to a staging directory, where `npm pack` runs `prepack` (the
 * build) and writes the tarball to `destination`.
 *
 * The staging directory repeats the repository's layout, `stage/effect4/…` beside
 * `stage/src` and `stage/scripts/build.mjs`, because the line's sources are partly links
 * (`src/core → ../../src/core`, per-file links into ../../src) copied as links, and its
 * build imports `../../scripts/build.mjs`. `stage/effect4/node_modules` is a link to
 * effect4/node_modules (Effect 4), and nothing in the stage reaches the top-level Effect 3.
 *
 * npm and the build run under the Node that runs this script (the Effect 4 line's Node 22:
 * its directory goes first on PATH, so npm and `prepack`'s `node` are that one).
 * Used once per test run by effect4/test/globalSetup.ts. Usage (with Node >= 22.12):
 * `node effect4/scripts/pack.mjs <dir>`, prints the tarball's path.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const line = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const repo = path.dirname(line)
const run = promisify(execFile)
const npm = process.platform === "win32" ? "npm.cmd" : "npm"

/** What the build and the tarball read, relative to the repository. */
const staged = [
  "src",
  "scripts/build.mjs",
  "effect4/package.json",
  "effect4/README.md",
  "effect4/LICENSE",
  "effect4/src",
  "effect4/scripts",
  "effect4/tsconfig.json",
  "effect4/tsconfig.build.json",
  "effect4/tsconfig.build.cjs.json"
]

/** The environment npm runs in: this Node first on PATH. */
export const nodeFirstOnPath = () => ({
  ...process.env,
  PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env["PATH"] ?? ""}`
})

/** Packs into `destination` (created if missing); resolves to the tarball's absolute path. */
export const pack = async (destination) => {
  await fs.mkdir(destination, { recursive: true })
  const stage = await fs.mkdtemp(path.join(destination, "stage-"))
  try {
    for (const entry of staged) {
      await fs.cp(path.join(repo, entry), path.join(stage, entry), { recursive: true, verbatimSymlinks: true })
    }
    await fs.symlink(path.join(line, "node_modules"), path.join(stage, "effect4", "node_modules"), "dir")
    await run(npm, ["pack", "--pack-destination", destination], {
      cwd: path.join(stage, "effect4"),
      env: nodeFirstOnPath(),
      maxBuffer: 64 * 1024 * 1024
    })
    // the one tarball there (npm's report is not parsed: its --json output differs between npm lines)
    const tarballs = (await fs.readdir(destination)).filter((f) => f.endsWith(".tgz"))
    if (tarballs.length !== 1) throw new Error(`npm pack left ${tarballs.length} tarballs in ${destination}`)
    return path.join(destination, tarballs[0])
  } finally {
    await fs.rm(stage, { recursive: true, force: true })
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const destination = process.argv[2]
  if (destination === undefined) {
    console.error("usage: node effect4/scripts/pack.mjs <directory>")
    process.exit(2)
  }
  console.log(await pack(path.resolve(destination)))
}
