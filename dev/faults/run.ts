/**
 * `npm run faults`: the repeatable fault scenarios against real PostgreSQL
 * servers, one after the other, with a summary. Exits non-zero on any violation.
 *
 * - restart.ts: PostgreSQL restarted (cleanly, then as a crash) under
 *   contended writes from 2 processes × 50 fibers that retry as apps do;
 * - requests.ts: request timeouts interrupting calls on a saturated pool;
 * - outcome.ts: committed increments whose answer is lost (forced SyncRep
 *   window), coalesced and single, from 2 pools;
 * - deadlocks.ts: nested updates of random key pairs in random orders, on
 *   MemoryStore and on 2 PostgreSQL pools;
 * - locktable.ts: a setMany of 60k keys, and one of 100k killed, beside
 *   bystander sessions on another table;
 * - deadreads.ts: reads while every backend of a warm pool is killed.
 *
 * `npm run faults -- <name>` runs one scenario (names below).
 */
import { restartScenario } from "./restart.js"
import type { ScenarioResult } from "./shared.js"
import { requestsScenario } from "./requests.js"
import { outcomeScenario } from "./outcome.js"
import { deadlocksScenario } from "./deadlocks.js"
import { locktableScenario } from "./locktable.js"
import { deadreadsScenario } from "./deadreads.js"

const scenarios: ReadonlyArray<readonly [string, () => Promise<ScenarioResult>]> = [
  ["restart", restartScenario],
  ["requests", requestsScenario],
  ["outcome", outcomeScenario],
  ["deadlocks", deadlocksScenario],
  ["locktable", locktableScenario],
  ["deadreads", deadreadsScenario]
]

/** A scenario still running after this is stuck: reported, and the run fails. */
const SCENARIO_BOUND = 100_000

const only = process.argv[2]
let failed = 0
const started = Date.now()
for (const [name, scenario] of scenarios) {
  if (only !== undefined && only !== name) continue
  const t0 = Date.now()
  let result: ScenarioResult
  try {
    let timer: NodeJS.Timeout | undefined
    result = await Promise.race([
      scenario(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not done after ${SCENARIO_BOUND / 1000} s: something is stuck`)), SCENARIO_BOUND)
      })
    ]).finally(() => clearTimeout(timer))
  } catch (error) {
    result = { name, lines: [], violations: [`the scenario itself failed: ${error instanceof Error ? error.stack : String(error)}`] }
  }
  console.log(`\n== ${result.name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`)
  for (const line of result.lines) console.log(`   ${line}`)
  if (result.violations.length === 0) {
    console.log("   OK")
  } else {
    failed++
    for (const v of result.violations) console.log(`   VIOLATION: ${v}`)
  }
}
console.log(`\nfaults: ${failed === 0 ? "all scenarios held" : `${failed} scenario(s) violated`} (${((Date.now() - started) / 1000).toFixed(1)} s)`)
process.exit(failed === 0 ? 0 : 1)
