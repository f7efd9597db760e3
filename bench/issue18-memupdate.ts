/**
 * MemoryStore `get`/`set`/`update` before and after the issue-18 work, paired in
 * one process: `npx tsx bench/issue18-memupdate.ts [sizes...]` (default 10000).
 *
 * Subjects, interleaved in a rotated order for `ROUNDS` rounds (default 7) of
 * `BATCHES` timed batches each (default 5, after one untimed): per subject the
 * median over rounds of each round's median, and the spread of the rounds, in
 * process CPU time (user + system of all threads, so GC helper threads count)
 * and in wall-clock time. CPU time is the figure to read on a shared machine:
 * wall time there also counts the time spent waiting for a core.
 *
 * - `before`: the sources at `BASE_REF` (default the branch point, 8ef579c),
 *   unpacked with `git archive` into `.scratch/variants/before/src`;
 * - `after`: this checkout's `src/`;
 * - `after, no copies`: this checkout's `src/` with `copyBytes` made the
 *   identity (generated into `.scratch/variants/nocopy/src`): the same path
 *   without the copies the contract requires, so what the copies cost and what
 *   remains can be told apart;
 * - `layerMemory`: `@effect/platform`'s `KeyValueStore.layerMemory` (get:
 *   `getUint8Array`, set, update: `modifyUint8Array`), no copies;
 * - `lru-cache` (with a TTL) in `Effect.sync`, no copies;
 * - `floor`: a `Ref` holding a `Map`.
 *
 * 100-byte values (above V8's 64-byte on-heap typed-array limit, so a copy is
 * an off-heap `ArrayBuffer`), random keys of the working set, one Effect per
 * batch of operations.
 */
import { execSync } from "node:child_process"
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import { LRUCache } from "lru-cache"
import { mulberry32 } from "../dev/random.js"
import { buildService } from "./lib/effect.js"
import { median, type Subject } from "./lib/measure.js"

type KvModule = typeof import("../src/KvStore.js")
type MemoryModule = typeof import("../src/MemoryStore.js")
type Service = import("../src/KvStore.js").KvStore.Service

const root = fileURLToPath(new URL("..", import.meta.url))
const BASE_REF = process.env["BASE_REF"] ?? "8ef579c"
const ROUNDS = Number(process.env["ROUNDS"] ?? 7)
/** Timed batches per subject per round (after one untimed). */
const BATCHES = Number(process.env["BATCHES"] ?? 5)
const VALUE_BYTES = 100
const BATCH = 10_000
const UPDATE_BATCH = 1_000

const variants = `${root}.scratch/variants`
const prepare = () => {
  rmSync(variants, { recursive: true, force: true })
  mkdirSync(`${variants}/before`, { recursive: true })
  execSync(`git archive ${BASE_REF} src | tar -x -C ${variants}/before`, { cwd: root })
  mkdirSync(`${variants}/nocopy`, { recursive: true })
  execSync(`cp -r src ${variants}/nocopy/`, { cwd: root })
  const valueTs = `${variants}/nocopy/src/core/value.ts`
  const text = readFileSync(valueTs, "utf8")
  const patched = text.replace(
    /export const copyBytes = \(value: Uint8Array\): Uint8Array => [^\n]*/,
    "export const copyBytes = (value: Uint8Array): Uint8Array => value"
  )
  if (patched === text) throw new Error("could not make copyBytes the identity in the no-copy variant")
  writeFileSync(valueTs, patched)
}

const load = async (dir: string) => ({
  kv: (await import(`${dir}/KvStore.ts`)) as KvModule,
  memory: (await import(`${dir}/MemoryStore.ts`)) as MemoryModule
})

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

/** Per-op time of each subject, interleaved: each round runs every subject's batches in a rotated order. */
interface Timing {
  /** Median over rounds of the round's median per-op process CPU time (user + system, all threads), ns. */
  readonly cpu: number
  /** The same for wall-clock time, ns. */
  readonly wall: number
  readonly cpuRounds: ReadonlyArray<number>
  readonly wallRounds: ReadonlyArray<number>
}

const measure = async (subjects: ReadonlyArray<Subject>, rounds: number, batches: number): Promise<Record<string, Timing>> => {
  const cpu = new Map<string, Array<number>>(subjects.map((s) => [s.name, []]))
  const wall = new Map<string, Array<number>>(subjects.map((s) => [s.name, []]))
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < subjects.length; i++) {
      const subject = subjects[(i + round) % subjects.length]!
      await subject.batch() // warm
      const cpus: Array<number> = []
      const walls: Array<number> = []
      for (let b = 0; b < batches; b++) {
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
  const out: Record<string, Timing> = {}
  for (const s of subjects) {
    const c = cpu.get(s.name)!
    const w = wall.get(s.name)!
    out[s.name] = { cpu: median(c), wall: median(w), cpuRounds: c, wallRounds: w }
  }
  return out
}

const spread = (xs: ReadonlyArray<number>) => `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}`

prepare()
const impls: Array<[string, Awaited<ReturnType<typeof load>>]> = [
  ["before", await load(`${variants}/before/src`)],
  ["after", await load(`${root}src`)],
  ["after, no copies", await load(`${variants}/nocopy/src`)]
]

const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0)
console.log(`issue 18, MemoryStore per-call cost; before = ${BASE_REF}, after = ${execSync("git rev-parse --short HEAD", { cwd: root }).toString().trim()}${execSync("git status --porcelain src", { cwd: root }).toString().trim() === "" ? "" : " + uncommitted changes"}`)
console.log(`node ${process.version}, ${ROUNDS} rounds, load average at start ${loadavg().map((l) => l.toFixed(2)).join(" ")}`)

for (const size of sizes.length > 0 ? sizes : [10_000]) {
  const value = new Uint8Array(VALUE_BYTES).fill(2)
  const all = Array.from({ length: size }, (_, i) => keyOf(i))
  const random = mulberry32(size)
  const seqs = Array.from({ length: 8 }, () => Array.from({ length: BATCH }, () => keyOf(Math.floor(random() * size))))
  const map = new Map<string, Uint8Array>(all.map((k) => [k, value]))
  const floor = Ref.unsafeMake(map)
  const platform = await buildService(KeyValueStore.layerMemory, KeyValueStore.KeyValueStore)
  await Effect.runPromise(Effect.forEach(all, (k) => platform.service.set(k, value), { discard: true }))
  const lru = new LRUCache<string, Uint8Array>({ max: size * 2, ttl: 10 * 60_000 })
  for (const k of all) lru.set(k, value)
  const stores: Array<[string, Service, () => Promise<void>]> = []
  for (const [name, impl] of impls) {
    const built = await buildService(impl.memory.layer(), impl.kv.KvStore)
    const store = built.service as Service
    await Effect.runPromise(Effect.gen(function*() {
      for (const k of all) yield* store.set(k, value)
    }))
    stores.push([name, store, built.close])
  }
  const missing = (k: string) => Effect.die(new Error(`missing ${k}`))
  const sections: Array<[string, Array<Subject>]> = [
    ["get", [
      loop("floor: Ref.get + Map.get", seqs, (k) => Effect.flatMap(Ref.get(floor), (m) => { const v = m.get(k); return v === undefined ? missing(k) : Effect.succeed(v) }), BATCH),
      loop("layerMemory getUint8Array", seqs, (k) => Effect.flatMap(platform.service.getUint8Array(k), (o) => Option.isNone(o) ? missing(k) : Effect.succeed(o.value)), BATCH),
      loop("lru-cache", seqs, (k) => Effect.flatMap(Effect.sync(() => lru.get(k)), (v) => v === undefined ? missing(k) : Effect.succeed(v)), BATCH),
      ...stores.map(([name, store]) => loop(`effect-kv ${name}`, seqs, (k) => store.get(k), BATCH))
    ]],
    ["set", [
      loop("floor: Ref.get + Map.set", seqs, (k) => Effect.map(Ref.get(floor), (m) => m.set(k, value)), BATCH),
      loop("layerMemory set", seqs, (k) => platform.service.set(k, value), BATCH),
      loop("lru-cache", seqs, (k) => Effect.sync(() => lru.set(k, value)), BATCH),
      ...stores.map(([name, store]) => loop(`effect-kv ${name}`, seqs, (k) => store.set(k, value), BATCH))
    ]],
    ["update", [
      loop("layerMemory modifyUint8Array", seqs, (k) => platform.service.modifyUint8Array(k, () => value), UPDATE_BATCH),
      ...stores.map(([name, store]) => loop(`effect-kv ${name}`, seqs, (k) => store.update(k, () => Effect.succeed(value)), UPDATE_BATCH)),
      ...stores.filter(([name]) => name !== "after, no copies").map(([name, store]) =>
        loop(`effect-kv ${name} increment`, seqs, (k) => store.increment(`ctr:${k}`), UPDATE_BATCH)
      )
    ]]
  ]
  const label = size >= 1_000_000 ? `${size / 1_000_000}M` : `${size / 1000}k`
  for (const [section, subjects] of sections) {
    const result = await measure(subjects, ROUNDS, BATCHES)
    const first = subjects[0]!.name
    const base = result[first]!
    console.log(`\n${section} @${label} (load average after ${loadavg().map((l) => l.toFixed(2)).join(" ")})`)
    console.log(`  ${"".padEnd(34)} ${"CPU ns/op".padStart(9)} ${"rounds".padStart(11)} ${"× first".padStart(7)}   ${"wall ns/op".padStart(10)} ${"rounds".padStart(11)} ${"× first".padStart(7)}`)
    for (const s of subjects) {
      const r = result[s.name]!
      console.log(
        `  ${s.name.padEnd(34)} ${r.cpu.toFixed(0).padStart(9)} ${spread(r.cpuRounds).padStart(11)} ${(r.cpu / base.cpu).toFixed(2).padStart(6)}×   ` +
          `${r.wall.toFixed(0).padStart(10)} ${spread(r.wallRounds).padStart(11)} ${(r.wall / base.wall).toFixed(2).padStart(6)}×`
      )
    }
  }
  for (const [, , close] of stores) await close()
  await platform.close()
}
process.exit(0)
