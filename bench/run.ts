/**
 * `npm run bench` (everything), `npm run bench -- memory`, `npm run bench -- postgres`,
 * `npm run bench -- batches` (batch, prefix and stream operations on both backends),
 * `npm run bench -- lines` (effect-kv 2 on Effect 4 against effect-kv 0 and Effect 4's own
 * KeyValueStore layers, the Effect 4 half in a child process on Node 22: `lines.ts`),
 * `npm run bench -- nearcache` (the near cache's hit against a MemoryStore get and a Map, and over PostgreSQL),
 * `npm run bench -- notify` (the cost of `notifyChanges` on `set`, and change propagation between instances).
 * Prints the table and writes `bench/results.json`. PostgreSQL comes from
 * `DATABASE_URL` or the embedded server the tests use (`dev/postgresServer.ts`).
 */
import { fileURLToPath } from "node:url"
import { startPostgres } from "../dev/postgresServer.js"
import { runBatches } from "./batches.js"
import { runLines } from "./lines.js"
import { runMemory } from "./memory.js"
import { runNearCache } from "./nearCache.js"
import { runNotify } from "./notify.js"
import { runPostgres } from "./postgres.js"
import { formatSummary, formatTable, type Row, score, writeResults } from "./lib/report.js"

const args = process.argv.slice(2).filter((a) => a !== "--")
const which = args[0] ?? "all"
if (!["all", "memory", "postgres", "batches", "lines", "notify", "nearcache"].includes(which)) {
  console.error("usage: npm run bench [-- memory|postgres|batches|lines|notify|nearcache]")
  process.exit(2)
}

const started = performance.now()
const rows: Array<Row> = []
const failures: Array<string> = []

if (which === "all" || which === "memory") {
  try {
    rows.push(...(await runMemory()))
  } catch (error) {
    failures.push(`memory: ${error instanceof Error ? error.stack ?? error.message : String(error)}`)
  }
}
let postgres: Record<string, unknown> | undefined
if (which !== "memory") {
  const server = await startPostgres()
  postgres = { embedded: server.embedded, collation: server.collation }
  const suites = [
    ...(which === "all" || which === "postgres" ? [["postgres", () => runPostgres(server.url)] as const] : []),
    ...(which === "all" || which === "batches" ? [["batches", () => runBatches(server.url)] as const] : []),
    ...(which === "all" || which === "lines" ? [["lines", () => runLines(server.url)] as const] : []),
    ...(which === "all" || which === "nearcache" ? [["nearcache", () => runNearCache(server.url)] as const] : []),
    ...(which === "all" || which === "notify" ? [["notify", () => runNotify(server.url)] as const] : [])
  ]
  try {
    for (const [name, suite] of suites) {
      try {
        rows.push(...(await suite()))
      } catch (error) {
        failures.push(`${name}: ${error instanceof Error ? error.stack ?? error.message : String(error)}`)
      }
    }
  } finally {
    await server.stop()
  }
}

const scored = rows.map(score)
const elapsed = (performance.now() - started) / 1000
console.log()
console.log(formatTable(scored))
const met = scored.filter((r) => r.met === true).length
const missed = scored.filter((r) => r.met === false).length
console.log(`\n${formatSummary(scored)}`)
console.log(`\ntargets: ${met} met, ${missed} missed; ran ${which} in ${elapsed.toFixed(0)} s`)
const resultsPath = fileURLToPath(new URL("./results.json", import.meta.url))
writeResults(resultsPath, scored, { suite: which, elapsedSeconds: elapsed, postgres, failures })
console.log(`wrote ${resultsPath}`)
if (failures.length > 0) {
  console.error(`\n${failures.join("\n\n")}`)
  process.exitCode = 1
}
