/**
 * The two Effect lines side by side (`npm run bench -- lines`, and part of `npm run bench`):
 * effect-kv 0.x on Effect 3 in this process, effect-kv 2.x on Effect 4 in a child process
 * under the Node 22 binary, run from `effect4/` on its own install (`effect4/bench/lines.ts`,
 * which also times Effect 4's own `KeyValueStore.layerMemory` and `KeyValueStore.layerSql`).
 * Sequential get, set and update on memory and PostgreSQL, same sizes, same harness
 * (`lib/sequential.mjs`); the processes take turns round by round (who goes first
 * alternates), so a change of the machine's load meets both lines; each figure is the
 * median of the rounds.
 *
 * Rows: effect-kv 2 against effect-kv 0 and against Effect 4's stores, as ratios (> 1:
 * effect-kv 2 is slower). The lines run on two Node versions (this one, and ≥ 22.12).
 */
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import { loadavg } from "node:os"
import * as path from "node:path"
import { createInterface } from "node:readline"
import { PgClient } from "@effect/sql-pg"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as effect4 from "../scripts/effect4.mjs"
import { KvStore } from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { buildService } from "./lib/effect.js"
import { ratioRow, type Row } from "./lib/report.js"
import { LINES, median, type SequentialSubject, timeRound } from "./lib/sequential.mjs"

const POOL_SIZE = 10
const value = new Uint8Array(100).fill(7)
const log = (message: string) => console.error(`[lines] ${message}`)
const BACKENDS = ["memory", "postgres"] as const
const OPS = ["get", "set", "update"] as const
type Backend = (typeof BACKENDS)[number]
type Op = (typeof OPS)[number]

/** effect-kv 0's subject of each operation, over a populated working set. */
const subjectsOn = async (backend: Backend, kv: KvStore.Service): Promise<Record<Op, SequentialSubject>> => {
  const { keys, ops } = LINES[backend]
  const working = Array.from({ length: keys }, (_, i) => `bench:${i}`)
  await Effect.runPromise(Effect.forEach(working, (k) => kv.set(k, value), { discard: true }))
  let cursor = 0
  const next = () => working[cursor++ % keys]!
  const run = (op: () => Effect.Effect<unknown, unknown>) => ({
    name: "effect-kv 0",
    batch: () =>
      Effect.runPromise(Effect.gen(function*() {
        for (let i = 0; i < ops; i++) yield* op()
      }))
  })
  return {
    get: run(() => kv.get(next())),
    set: run(() => kv.set(next(), value)),
    update: run(() => kv.update(next(), () => Effect.succeed(value)))
  }
}

/** The newest modification time under `dir`, following links (src/core is one). */
const newest = (dir: string): number =>
  fs.readdirSync(dir, { withFileTypes: true }).reduce((max, entry) => {
    const file = path.join(dir, entry.name)
    const stat = fs.statSync(file)
    return Math.max(max, stat.isDirectory() ? newest(file) : stat.mtimeMs)
  }, 0)

/** The Effect 4 half: installed from its lockfile, `dist` rebuilt when a source is newer, one command → one answer. */
const startEffect4 = () => {
  effect4.install()
  const node = effect4.nodeBinary()
  const built = path.join(effect4.line, "dist", "esm", "index.js")
  if (!fs.existsSync(built) || fs.statSync(built).mtimeMs < newest(path.join(effect4.line, "src"))) {
    log("building effect4/dist")
    execFileSync(node, [path.join(effect4.line, "scripts", "build.mjs")], { cwd: effect4.line, stdio: ["ignore", "ignore", "inherit"] })
  }
  const child = spawn(node, ["--no-warnings=ExperimentalWarning", "bench/lines.ts"], {
    cwd: effect4.line,
    stdio: ["pipe", "pipe", "inherit"]
  })
  const answers = createInterface({ input: child.stdout })[Symbol.asyncIterator]()
  const exited = new Promise<never>((_, reject) =>
    child.on("exit", (code) => reject(new Error(`effect4/bench/lines.ts exited with ${code}`)))
  )
  exited.catch(() => undefined) // observed by `ask`; no unhandled rejection when it ends normally
  const ask = async <A>(command: unknown): Promise<A> => {
    child.stdin.write(`${JSON.stringify(command)}\n`)
    const line = await Promise.race([answers.next(), exited])
    if (line.done === true) throw new Error("effect4/bench/lines.ts closed its output")
    return JSON.parse(line.value) as A
  }
  return { node, ask, close: () => child.stdin.end() }
}

export const runLines = async (url: string | undefined): Promise<Array<Row>> => {
  const closers: Array<() => Promise<void>> = []
  const child = startEffect4()
  try {
    const { node } = await child.ask<{ readonly node: string }>({ setup: url ?? null })
    log(`effect-kv 0 on ${process.version} here; effect-kv 2 on ${node} in effect4/`)
    const ours: Partial<Record<Backend, Record<Op, SequentialSubject>>> = {}
    const memory = await buildService(MemoryStore.layer(), KvStore)
    closers.push(memory.close)
    ours.memory = await subjectsOn("memory", memory.service)
    if (url !== undefined) {
      const postgres = await buildService(
        PostgresStore.layer({ table: "bench_kv_effect3" }).pipe(
          Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: POOL_SIZE }))
        ),
        KvStore
      )
      closers.push(postgres.close)
      ours.postgres = await subjectsOn("postgres", postgres.service)
    }

    const rows: Array<Row> = []
    for (const backend of BACKENDS) {
      const effect3 = ours[backend]
      if (effect3 === undefined) continue
      const store = backend === "memory" ? "KeyValueStore.layerMemory" : "KeyValueStore.layerSql"
      for (const op of OPS) {
        log(`${backend} ${op}`)
        const { ops } = LINES[backend]
        await timeRound([effect3[op]], { ops, budgetMs: LINES.warmupMs })
        await child.ask({ backend, op, warm: true })
        const rounds: Array<Record<string, number>> = []
        for (let round = 0; round < LINES.rounds; round++) {
          const here = () => timeRound([effect3[op]], { ops, budgetMs: LINES.budgetMs })
          const there = () => child.ask<Record<string, number>>({ backend, op })
          const [first, second] = round % 2 === 0 ? [await here(), await there()] : [await there(), await here()]
          rounds.push({ ...first, ...second })
        }
        const at = (name: string) => median(rounds.map((r) => r[name]!))
        const kv2 = at("effect-kv 2")
        const name = op === "update" ? "update (modifyUint8Array)" : op
        rows.push(ratioRow(backend, `effect-kv 2 ${op}, sequential, vs 0.x`, kv2, `effect-kv 0 ${op} (Effect 3)`, at("effect-kv 0")))
        rows.push(ratioRow(backend, `effect-kv 2 ${op}, sequential, vs Effect 4's store`, kv2, `${store} ${name}`, at(store)))
      }
    }
    const last = rows.at(-1)
    if (last !== undefined) {
      rows[rows.length - 1] = {
        ...last,
        note: `effect-kv 0 on Effect 3, ${process.version}, in this process; effect-kv 2 and Effect 4's stores on ${node} ` +
          `in a child process from effect4/; ${LINES.rounds} alternating rounds, medians; load average ${loadavg()[0]!.toFixed(1)}`
      }
    }
    return rows
  } finally {
    child.close()
    for (const close of closers.reverse()) await close().catch((e) => log(`close failed: ${String(e)}`))
  }
}
