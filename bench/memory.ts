/**
 * The in-memory suite: effect-kv's MemoryStore against the floor (a `Ref`
 * holding a `Map`), `@effect/platform`'s `KeyValueStore.layerMemory` and
 * `lru-cache` with a TTL, at 10k and 1M keys with 100-byte values; heap per
 * entry and sweeper stall are measured in child processes (`memory-child.ts`).
 */
import { spawnSync } from "node:child_process"
import { loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import { LRUCache } from "lru-cache"
import { KvStore } from "../src/KvStore.js"
import { buildService, importOptional } from "./lib/effect.js"
import { compare, median, type Subject } from "./lib/measure.js"
import { ratioRow, type Row } from "./lib/report.js"
import { mulberry32 } from "../dev/random.js"

type MemoryStoreModule = typeof import("../src/MemoryStore.js")

export const VALUE_BYTES = 100
/** Operations per timed batch (one Effect). */
const BATCH = 10_000
/** Distinct random key sequences the batches cycle through. */
const SEQUENCES = 8
const UPDATE_BATCH = 500
const MEM_TIMING = { rounds: 3, time: 200 } as const

export const keyOf = (i: number): string => `user:${i.toString().padStart(7, "0")}`
export const valueOf = (i: number): Uint8Array => {
  const v = new Uint8Array(VALUE_BYTES)
  v.fill(i & 0xff)
  return v
}

const log = (msg: string) => console.error(`[memory] ${msg}`)

interface Stores {
  readonly size: number
  readonly floor: Ref.Ref<Map<string, Uint8Array>>
  readonly platform: KeyValueStore.KeyValueStore
  readonly lru: LRUCache<string, Uint8Array>
  readonly kv: KvStore.Service | undefined
  readonly close: () => Promise<void>
}

const populate = async (size: number, memoryStore: MemoryStoreModule | undefined): Promise<Stores> => {
  const started = performance.now()
  const keys = Array.from({ length: size }, (_, i) => keyOf(i))
  const value = valueOf(1)
  const map = new Map<string, Uint8Array>()
  for (const k of keys) map.set(k, value)
  const floor = Ref.unsafeMake(map)
  const platform = await buildService(KeyValueStore.layerMemory, KeyValueStore.KeyValueStore)
  await Effect.runPromise(Effect.forEach(keys, (k) => platform.service.set(k, value), { discard: true }))
  const lru = new LRUCache<string, Uint8Array>({ max: size * 2, ttl: 10 * 60_000 })
  for (const k of keys) lru.set(k, value)
  let kv: Awaited<ReturnType<typeof buildService<KvStore, KvStore.Service, unknown>>> | undefined
  if (memoryStore !== undefined) {
    kv = await buildService(memoryStore.layer(), KvStore)
    const store = kv.service
    await Effect.runPromise(Effect.gen(function*() {
      for (const k of keys) yield* store.set(k, value)
    }))
  }
  log(`populated 4 stores with ${size} keys in ${((performance.now() - started) / 1000).toFixed(1)} s`)
  return {
    size,
    floor,
    platform: platform.service,
    lru,
    kv: kv?.service,
    close: async () => {
      await kv?.close()
      await platform.close()
    }
  }
}

const sequences = (size: number): Array<Array<string>> => {
  const random = mulberry32(size)
  return Array.from({ length: SEQUENCES }, () => Array.from({ length: BATCH }, () => keyOf(Math.floor(random() * size))))
}

/** A subject whose batch is one Effect running `op` over the next key sequence. */
const loop = (
  name: string,
  seqs: Array<Array<string>>,
  op: (key: string) => Effect.Effect<unknown, unknown>,
  batchSize = BATCH
): Subject => {
  let n = 0
  return {
    name,
    opsPerBatch: batchSize,
    batch: () => {
      const keys = seqs[n++ % seqs.length]!.slice(0, batchSize)
      return Effect.runPromise(Effect.gen(function*() {
        for (let i = 0; i < keys.length; i++) yield* op(keys[i]!)
      }))
    }
  }
}

const measureSize = async (stores: Stores, rows: Array<Row>) => {
  const { size } = stores
  const label = size >= 1_000_000 ? `${size / 1_000_000}M` : `${size / 1000}k`
  const seqs = sequences(size)
  const value = valueOf(2)
  const missing = (key: string) => new Error(`missing ${key}`)
  const kv = stores.kv

  // get
  const getSubjects: Array<Subject> = [
    loop("floor", seqs, (k) =>
      Effect.flatMap(Ref.get(stores.floor), (m) => {
        const v = m.get(k)
        return v === undefined ? Effect.die(missing(k)) : Effect.succeed(v)
      })),
    loop("layerMemory", seqs, (k) =>
      Effect.flatMap(stores.platform.getUint8Array(k), (o) => Option.isNone(o) ? Effect.die(missing(k)) : Effect.succeed(o.value))),
    loop("lru-cache", seqs, (k) =>
      Effect.flatMap(Effect.sync(() => stores.lru.get(k)), (v) => v === undefined ? Effect.die(missing(k)) : Effect.succeed(v)))
  ]
  if (kv !== undefined) getSubjects.push(loop("effect-kv", seqs, (k) => kv.get(k)))
  log(`get @${label}`)
  const get = await compare(getSubjects, MEM_TIMING)
  const kvGet = get["effect-kv"]?.usPerOp
  rows.push(ratioRow("memory", `get @${label}`, kvGet, "floor: Ref.get + Map.get", get.floor!.usPerOp, { target: 1.5 }))
  rows.push(ratioRow("memory", `get @${label} vs layerMemory`, kvGet, "KeyValueStore.layerMemory", get.layerMemory!.usPerOp, { target: 1.3 }))
  rows.push(ratioRow("memory", `get @${label} vs lru-cache`, kvGet, "lru-cache (ttl) in Effect.sync", get["lru-cache"]!.usPerOp))

  // set (overwrites existing keys, so the stores keep their size)
  const setSubjects: Array<Subject> = [
    loop("floor", seqs, (k) => Effect.map(Ref.get(stores.floor), (m) => m.set(k, value))),
    loop("layerMemory", seqs, (k) => stores.platform.set(k, value)),
    loop("lru-cache", seqs, (k) => Effect.sync(() => stores.lru.set(k, value)))
  ]
  if (kv !== undefined) setSubjects.push(loop("effect-kv", seqs, (k) => kv.set(k, value)))
  log(`set @${label}`)
  const set = await compare(setSubjects, MEM_TIMING)
  const kvSet = set["effect-kv"]?.usPerOp
  rows.push(ratioRow("memory", `set @${label}`, kvSet, "floor: Ref.get + Map.set", set.floor!.usPerOp, { target: 2 }))
  rows.push(ratioRow("memory", `set @${label} vs layerMemory`, kvSet, "KeyValueStore.layerMemory", set.layerMemory!.usPerOp, { target: 1.3 }))
  rows.push(ratioRow("memory", `set @${label} vs lru-cache`, kvSet, "lru-cache (ttl) in Effect.sync", set["lru-cache"]!.usPerOp))

  // update: read-modify-write of one key
  const updateSubjects: Array<Subject> = [
    loop("floor", seqs, (k) => Effect.map(Ref.get(stores.floor), (m) => m.set(k, m.get(k) === undefined ? value : value)), UPDATE_BATCH)
  ]
  updateSubjects.push(loop("layerMemory", seqs, (k) => stores.platform.modifyUint8Array(k, () => value), UPDATE_BATCH))
  // update costs ~100× a get: a smaller batch keeps the run within its time budget
  if (kv !== undefined) {
    updateSubjects.push(loop("effect-kv", seqs, (k) => kv.update(k, () => Effect.succeed(value)), UPDATE_BATCH))
    // counters live under their own keys: the working set's values are not decimal text
    updateSubjects.push(loop("effect-kv increment", seqs, (k) => kv.increment(`ctr:${k}`), UPDATE_BATCH))
  }
  log(`update @${label}`)
  const update = await compare(updateSubjects, { rounds: 3, time: 200, iterations: 3 })
  const kvUpdate = update["effect-kv"]?.usPerOp
  const kvIncrement = update["effect-kv increment"]?.usPerOp
  rows.push(ratioRow("memory", `update @${label}`, kvUpdate, "floor: Ref.get + Map.get + Map.set", update.floor!.usPerOp))
  rows.push(ratioRow("memory", `update @${label} vs layerMemory`, kvUpdate, "KeyValueStore.layerMemory modifyUint8Array", update.layerMemory!.usPerOp, { target: 4 }))
  rows.push(ratioRow("memory", `increment @${label} vs layerMemory`, kvIncrement, "KeyValueStore.layerMemory modifyUint8Array", update.layerMemory!.usPerOp, { target: 3 }))
  rows.push(ratioRow("memory", `increment @${label} vs update`, kvIncrement, "effect-kv update", kvUpdate))

  // keys(prefix): 100 matching keys
  const prefixes = Array.from({ length: 16 }, (_, i) => keyOf(Math.floor(((i + 0.5) * size) / 16)).slice(0, -2))
  let p = 0
  const keysSubjects: Array<Subject> = [{
    name: "floor",
    opsPerBatch: 1,
    batch: () =>
      Effect.runPromise(Effect.flatMap(Ref.get(stores.floor), (m) =>
        Effect.sync(() => {
          const prefix = prefixes[p++ % prefixes.length]!
          const out: Array<string> = []
          for (const k of m.keys()) if (k.startsWith(prefix)) out.push(k)
          if (out.sort().length !== 100) throw new Error(`expected 100 keys for ${prefix}, got ${out.length}`)
          return out
        })))
  }]
  if (kv !== undefined) {
    let q = 0
    keysSubjects.push({
      name: "effect-kv",
      opsPerBatch: 1,
      batch: () =>
        Effect.runPromise(Effect.tap(kv.keys(prefixes[q++ % prefixes.length]!), (ks) => {
          if (ks.length !== 100) throw new Error(`expected 100 keys, got ${ks.length}`)
        }))
    })
  }
  log(`keys(prefix) @${label}`)
  const keysResult = await compare(keysSubjects, { time: size > 100_000 ? 600 : 200, iterations: 3 })
  rows.push(ratioRow("memory", `keys(prefix) → 100 @${label}`, keysResult["effect-kv"]?.usPerOp, "floor: scan Map + sort", keysResult.floor!.usPerOp))
  return { keys: keysResult["effect-kv"]?.usPerOp }
}

/** Runs `memory-child.ts` in a fresh `node --expose-gc` and parses its JSON line. */
export const child = (args: ReadonlyArray<string>): any => {
  const script = fileURLToPath(new URL("./memory-child.ts", import.meta.url))
  const result = spawnSync(process.execPath, ["--expose-gc", "--max-old-space-size=4096", "--import", "tsx", script, ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    timeout: 180_000
  })
  if (result.status !== 0) throw new Error(`memory-child ${args.join(" ")} exited with ${result.status} ${result.signal ?? ""}`)
  const line = result.stdout.trim().split("\n").pop()!
  return JSON.parse(line)
}

export const runMemory = async (options: { readonly sizes?: ReadonlyArray<number> } = {}): Promise<Array<Row>> => {
  const rows: Array<Row> = []
  const memoryStore = await importOptional<MemoryStoreModule>(new URL("../src/MemoryStore.ts", import.meta.url).href)
  if (memoryStore === undefined) log("src/MemoryStore.ts is not there yet: effect-kv rows will read n/a")
  const keysAt: Record<number, number | undefined> = {}
  // BENCH_QUICK=1: a smoke run of the harness itself (10k keys, 100k entries for heap and stall)
  const quick = process.env["BENCH_QUICK"] === "1"
  for (const size of options.sizes ?? (quick ? [10_000] : [10_000, 1_000_000])) {
    const stores = await populate(size, memoryStore)
    keysAt[size] = (await measureSize(stores, rows)).keys
    await stores.close()
  }

  // heap per entry at 1M entries, each subject in its own process
  const ENTRIES = quick ? 100_000 : 1_000_000
  log(`heap per entry at ${ENTRIES} entries (child processes with --expose-gc)`)
  const map = child(["heap", "map", String(ENTRIES)])
  const kvHeap = memoryStore === undefined ? undefined : child(["heap", "effect-kv", String(ENTRIES)])
  const platformHeap = child(["heap", "layerMemory", String(ENTRIES)])
  rows.push({
    suite: "memory",
    operation: "memory per entry @1M",
    value: kvHeap?.bytesPerEntry,
    unit: "bytes/entry",
    baseline: "bare Map, same keys + values",
    baselineValue: map.bytesPerEntry,
    ratio: kvHeap === undefined ? undefined : kvHeap.bytesPerEntry / map.bytesPerEntry,
    target: 1.5,
    note: `heapUsed + external after gc; 100-byte values are off-heap ArrayBuffers (external). layerMemory: ${
      platformHeap.bytesPerEntry.toFixed(0)
    } B/entry`
  })

  // longest event-loop stall while the sweeper removes 500k expired entries of 1M, in fresh processes
  const stallOperation = "max event-loop stall, sweeping 500k expired of 1M"
  const compactOperation = "max event-loop stall, new TTLs for 1M keys (index compaction)"
  if (memoryStore !== undefined) {
    const runs = Number(process.env["BENCH_STALL_RUNS"] ?? (quick ? 1 : 5))
    log(`sweeper stall with 500k expired entries among 1M: ${runs} child processes`)
    const stalls: Array<any> = []
    const failures: Array<string> = []
    for (let run = 0; run < runs; run++) {
      try {
        stalls.push(quick ? child(["stall", "50000", "50000"]) : child(["stall", "500000", "500000"]))
      } catch (error) {
        failures.push(String(error))
      }
    }
    // from the moment the sweep is due: gaps before it come from other processes or the fill's garbage
    const walls = stalls.map((s) => s.sweepWindowMaxGapMs as number)
    const cpus = stalls.map((s) => s.sweepWindowMaxGapCpuMs as number)
    const idles = stalls.map((s) => s.idleMaxMs as number)
    const worst = (xs: ReadonlyArray<number>) => (xs.length === 0 ? undefined : Math.max(...xs))
    const fmtAll = (xs: ReadonlyArray<number>) => xs.map((x) => x.toFixed(1)).join(", ")
    rows.push({
      suite: "memory",
      operation: stallOperation,
      value: worst(walls),
      unit: "ms",
      baseline: "event loop idle (same children, worst)",
      baselineValue: worst(idles),
      target: 10,
      targetOn: "value",
      note: `worst of ${stalls.length} fresh processes (median ${walls.length === 0 ? "n/a" : median(walls).toFixed(1)} ms); ` +
        `per run wall ${fmtAll(walls)} ms, own CPU in that gap ${fmtAll(cpus)} ms, idle ${fmtAll(idles)} ms, ` +
        `longest GC pause ${fmtAll(stalls.map((s) => s.longestGcMs as number))} ms, left for a manual cleanup ` +
        `${stalls.map((s) => s.leftForCleanup).join(", ")}; load average ${loadavg().map((l) => l.toFixed(1)).join(" ")}` +
        (failures.length > 0 ? `; failed runs: ${failures.join("; ")}` : "")
    })

    const compactRuns = Number(process.env["BENCH_COMPACT_RUNS"] ?? (quick ? 1 : 3))
    log(`expiry-index compaction stall, new TTLs for 1M keys: ${compactRuns} child processes`)
    const compactions: Array<any> = []
    for (let run = 0; run < compactRuns; run++) {
      try {
        compactions.push(child(["compactStall", quick ? "100000" : "1000000"]))
      } catch (error) {
        failures.push(String(error))
      }
    }
    const compactWalls = compactions.map((c) => Math.max(c.rewriteMaxStallMs as number, c.sweepMaxStallMs as number))
    rows.push({
      suite: "memory",
      operation: compactOperation,
      value: worst(compactWalls),
      unit: "ms",
      target: 10,
      targetOn: "value",
      note: `worst of ${compactions.length} fresh processes; per run, longest gap while rewriting / while the sweeper ` +
        `finishes the compaction: ${compactions.map((c) => `${c.rewriteMaxStallMs.toFixed(1)} / ${c.sweepMaxStallMs.toFixed(1)}`).join(", ")} ms; ` +
        `longest setMany of 1000 keys ${fmtAll(compactions.map((c) => c.longestSetManyOf1000Ms as number))} ms; ` +
        `longest GC pause ${fmtAll(compactions.map((c) => c.longestGcMs as number))} ms`
    })
  } else {
    rows.push({ suite: "memory", operation: stallOperation, value: undefined, unit: "ms", target: 10, targetOn: "value" })
    rows.push({ suite: "memory", operation: compactOperation, value: undefined, unit: "ms", target: 10, targetOn: "value" })
  }
  return rows
}
