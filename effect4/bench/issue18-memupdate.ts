/**
 * The Effect 4 line's MemoryStore `update` (and `get`, `set`, `increment`) before and
 * after the carry of the update fast path (11bf604), paired in one process, from the
 * repository root under the line's Node 22:
 *
 *   $(node scripts/effect4.mjs node) node_modules/tsx/dist/cli.mjs effect4/bench/issue18-memupdate.ts [size]
 *
 * `before`: this checkout's effect4/src (links followed) with the three carried files
 * (front.ts, keyedLock.ts, memoryDriver.ts) as they are at `BASE_REF` (default main),
 * generated into effect4/.scratch/variants/before/src, so `effect` resolves from
 * effect4/node_modules; `after`: this checkout's effect4/src, copied the same way. Effect 4's own
 * `KeyValueStore.layerMemory` (`modifyUint8Array`, no copies) is the reference.
 * Measured as bench/issue18-memupdate.ts does: subjects interleaved in a rotated order
 * for ROUNDS rounds (default 7) of BATCHES timed batches (default 5, after one untimed);
 * per subject the median over rounds of each round's median, and the rounds' spread, in
 * process CPU time (user + system) and wall time. 100-byte values, random keys of a
 * working set of `size` keys (default 10000).
 */
import { execSync } from "node:child_process"
import { mkdirSync, rmSync, writeFileSync } from "node:fs"
import { loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as KeyValueStore from "effect/persistence/KeyValueStore"
import * as Scope from "effect/Scope"

type KvModule = typeof import("../src/KvStore.js")
type MemoryModule = typeof import("../src/MemoryStore.js")
type Service = import("../src/KvStore.js").KvStore.Service

const line = fileURLToPath(new URL("..", import.meta.url))
const BASE_REF = process.env["BASE_REF"] ?? "main"
const ROUNDS = Number(process.env["ROUNDS"] ?? 7)
const BATCHES = Number(process.env["BATCHES"] ?? 5)
const BATCH = 10_000
const UPDATE_BATCH = 1_000
const CARRIED = ["internal/front.ts", "internal/keyedLock.ts", "internal/memoryDriver.ts"]

const variants = `${line}.scratch/variants`
rmSync(variants, { recursive: true, force: true })
// copies with the links followed, both: a linked file (src/core, internal/ttl.ts) run through its
// link's target would resolve `effect` from the repository's top-level node_modules, Effect 3
for (const variant of ["before", "after"]) {
  mkdirSync(`${variants}/${variant}`, { recursive: true })
  execSync(`cp -rL src ${variants}/${variant}/`, { cwd: line })
}
for (const file of CARRIED) {
  writeFileSync(`${variants}/before/src/${file}`, execSync(`git show ${BASE_REF}:effect4/src/${file}`, { cwd: line }))
}

const load = async (dir: string) => ({
  kv: (await import(`${dir}/KvStore.ts`)) as KvModule,
  memory: (await import(`${dir}/MemoryStore.ts`)) as MemoryModule
})

const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** mulberry32: the same random keys for every subject. */
const mulberry32 = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

interface Subject {
  readonly name: string
  readonly opsPerBatch: number
  readonly batch: () => Promise<unknown>
}

const keyOf = (i: number) => `user:${i.toString().padStart(7, "0")}`

const loop = (name: string, seqs: Array<Array<string>>, op: (key: string) => Effect.Effect<unknown, unknown>, batch: number): Subject => {
  let n = 0
  return {
    name,
    opsPerBatch: batch,
    batch: () => {
      const keys = seqs[n++ % seqs.length]!.slice(0, batch)
      return Effect.runPromise(Effect.gen(function*() {
        for (let i = 0; i < keys.length; i++) yield* op(keys[i]!)
      }))
    }
  }
}

const measure = async (subjects: ReadonlyArray<Subject>) => {
  const cpu = new Map<string, Array<number>>(subjects.map((s) => [s.name, []]))
  const wall = new Map<string, Array<number>>(subjects.map((s) => [s.name, []]))
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < subjects.length; i++) {
      const subject = subjects[(i + round) % subjects.length]!
      await subject.batch()
      const cpus: Array<number> = []
      const walls: Array<number> = []
      for (let b = 0; b < BATCHES; b++) {
        const c0 = process.cpuUsage()
        const w0 = performance.now()
        await subject.batch()
        const w = performance.now() - w0
        const c = process.cpuUsage(c0)
        cpus.push(((c.user + c.system) * 1000) / subject.opsPerBatch)
        walls.push((w * 1e6) / subject.opsPerBatch)
      }
      cpu.get(subject.name)!.push(median(cpus))
      wall.get(subject.name)!.push(median(walls))
    }
  }
  return { cpu, wall }
}

const spread = (xs: ReadonlyArray<number>) => `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}`

const impls: Array<[string, Awaited<ReturnType<typeof load>>]> = [
  ["before", await load(`${variants}/before/src`)],
  ["after", await load(`${variants}/after/src`)]
]
const size = Number(process.argv[2] ?? 10_000)
const head = execSync("git rev-parse --short HEAD", { cwd: line }).toString().trim()
const base = execSync(`git rev-parse --short ${BASE_REF}`, { cwd: line }).toString().trim()
console.log(`issue 18, Effect 4 line, MemoryStore per-call cost; before = effect4/src with ${CARRIED.join(", ")} of ${BASE_REF} (${base}), after = ${head}`)
console.log(`node ${process.version}, effect ${(await import("effect/package.json", { with: { type: "json" } })).default.version}, ${ROUNDS} rounds, load average at start ${loadavg().map((l) => l.toFixed(2)).join(" ")}`)

const scope = Effect.runSync(Scope.make())
const value = new Uint8Array(100).fill(2)
const all = Array.from({ length: size }, (_, i) => keyOf(i))
const random = mulberry32(size)
const seqs = Array.from({ length: 8 }, () => Array.from({ length: BATCH }, () => keyOf(Math.floor(random() * size))))
const platform = Context.get(await Effect.runPromise(Layer.buildWithScope(KeyValueStore.layerMemory, scope)), KeyValueStore.KeyValueStore)
await Effect.runPromise(Effect.forEach(all, (k) => platform.set(k, value), { discard: true }))
const stores: Array<[string, Service]> = []
for (const [name, impl] of impls) {
  const store = await Effect.runPromise(Scope.provide(scope)(impl.memory.make()))
  await Effect.runPromise(Effect.forEach(all, (k) => store.set(k, value), { discard: true }))
  stores.push([name, store])
}
const missing = (k: string) => Effect.die(new Error(`missing ${k}`))
const sections: Array<[string, Array<Subject>]> = [
  ["get", [
    loop("layerMemory getUint8Array", seqs, (k) => Effect.flatMap(platform.getUint8Array(k), (o) => o === undefined ? missing(k) : Effect.succeed(o)), BATCH),
    ...stores.map(([name, store]) => loop(`effect-kv ${name}`, seqs, (k) => store.get(k), BATCH))
  ]],
  ["set", [
    loop("layerMemory set", seqs, (k) => platform.set(k, value), BATCH),
    ...stores.map(([name, store]) => loop(`effect-kv ${name}`, seqs, (k) => store.set(k, value), BATCH))
  ]],
  ["update", [
    loop("layerMemory modifyUint8Array", seqs, (k) => platform.modifyUint8Array(k, () => value), UPDATE_BATCH),
    ...stores.map(([name, store]) => loop(`effect-kv ${name}`, seqs, (k) => store.update(k, () => Effect.succeed(value)), UPDATE_BATCH)),
    ...stores.map(([name, store]) => loop(`effect-kv ${name} increment`, seqs, (k) => store.increment(`ctr:${k}`), UPDATE_BATCH))
  ]]
]
const label = size >= 1_000_000 ? `${size / 1_000_000}M` : `${size / 1000}k`
for (const [section, subjects] of sections) {
  const { cpu, wall } = await measure(subjects)
  const first = subjects[0]!.name
  const c0 = median(cpu.get(first)!)
  const w0 = median(wall.get(first)!)
  console.log(`\n${section} @${label} (load average after ${loadavg().map((l) => l.toFixed(2)).join(" ")})`)
  console.log(`  ${"".padEnd(34)} ${"CPU ns/op".padStart(9)} ${"rounds".padStart(11)} ${"× first".padStart(7)}   ${"wall ns/op".padStart(10)} ${"rounds".padStart(11)} ${"× first".padStart(7)}`)
  for (const s of subjects) {
    const c = median(cpu.get(s.name)!)
    const w = median(wall.get(s.name)!)
    console.log(
      `  ${s.name.padEnd(34)} ${c.toFixed(0).padStart(9)} ${spread(cpu.get(s.name)!).padStart(11)} ${(c / c0).toFixed(2).padStart(6)}×   ` +
        `${w.toFixed(0).padStart(10)} ${spread(wall.get(s.name)!).padStart(11)} ${(w / w0).toFixed(2).padStart(6)}×`
    )
  }
}
await Effect.runPromise(Scope.close(scope, Exit.void))
process.exit(0)
