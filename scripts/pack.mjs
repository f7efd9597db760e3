/**
 * Packs effect-kv as `npm publish` would, without touching the checkout: the
 * files a build needs are copied to a staging directory (its node_modules a
 * link to ours), where `npm pack` runs `prepack` (the build) and writes the
 * tarball to `destination`. The checkout's own dist/ is left alone, so a test
 * run that packs does not change what another run beside it sees.
 *
 * Used once per test run by test/globalSetup.ts (not in a hook with a time
 * limit: the build is the slow part). Usage: `node scripts/pack.mjs <dir>`,
 * prints the tarball's path.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const run = promisify(execFile)
const npm = process.platform === "win32" ? "npm.cmd" : "npm"

/** What the build and the tarball read; the rest of the checkout stays out. */
const staged = ["package.json", "README.md", "LICENSE", "src", "scripts", "tsconfig.json", "tsconfig.build.json", "tsconfig.build.cjs.json"]

/** Packs into `destination` (created if missing); resolves to the tarball's absolute path. */
export const pack = async (destination) => {
  await fs.mkdir(destination, { recursive: true })
  const stage = await fs.mkdtemp(path.join(destination, "stage-"))
  try {
    for (const entry of staged) await fs.cp(path.join(root, entry), path.join(stage, entry), { recursive: true })
    await fs.symlink(path.join(root, "node_modules"), path.join(stage, "node_modules"), "dir")
    await run(npm, ["pack", "--pack-destination", destination], { cwd: stage, maxBuffer: 64 * 1024 * 1024 })
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
    console.error("usage: node scripts/pack.mjs <directory>")
    process.exit(2)
  }
  console.log(await pack(path.resolve(destination)))
}
