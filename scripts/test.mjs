/**
 * `npm test`: both package lines, one after the other, each on its own install —
 * the Effect 3 package (vitest 3 at the top level) and the Effect 4 package in effect4/
 * (vitest 5, under Node ≥ 22.12; see scripts/effect4.mjs). Arguments go to both runs.
 * A JSON report (`--outputFile.json=FILE`, as .ci/run asks for) holds the sum of both
 * runs' counts, so one "N passed, N failed" line covers the whole repository.
 * Exits non-zero when either line fails.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as effect4 from "./effect4.mjs"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const args = process.argv.slice(2)

const reportArg = args.findIndex((a) => a.startsWith("--outputFile.json="))
const report = reportArg === -1 ? undefined : path.resolve(args[reportArg].slice("--outputFile.json=".length))
const effect4Report = report === undefined ? undefined : `${report}.effect4.json`
const effect4Args = report === undefined
  ? args
  : args.map((a, i) => (i === reportArg ? `--outputFile.json=${effect4Report}` : a))

console.log("--- Effect 3 line (effect-kv 0.x, top level)")
const effect3 = spawnSync(process.execPath, [path.join(root, "node_modules", "vitest", "vitest.mjs"), "run", ...args], {
  cwd: root,
  stdio: "inherit"
})
console.log("--- Effect 4 line (effect-kv 2.x, effect4/)")
const effect4Status = effect4.test(effect4Args)

if (report !== undefined) {
  const read = (file) => (fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : undefined)
  const first = read(report)
  const second = read(effect4Report)
  const counts = ["numTotalTests", "numPassedTests", "numFailedTests", "numPendingTests", "numTodoTests"]
  const merged = { ...(first ?? {}), effect4: second }
  for (const key of counts) merged[key] = (first?.[key] ?? 0) + (second?.[key] ?? 0)
  // a line that produced no report at all counts as a failed test, never as silence
  if (first === undefined || second === undefined) merged.numFailedTests += 1
  fs.writeFileSync(report, JSON.stringify(merged))
  fs.rmSync(effect4Report, { force: true })
}

process.exitCode = (effect3.status ?? 1) !== 0 || effect4Status !== 0 ? 1 : 0
