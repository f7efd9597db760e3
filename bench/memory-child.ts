/**
 * Measurements that need a process of their own, run by `memory.ts` with
 * `node --expose-gc --import tsx bench/memory-child.ts ...`; prints one JSON line.
 *
 *   heap <map|effect-kv|layerMemory> <entries>   heapUsed + external per entry after gc
 *   stall <entries> [permanent]                  longest event-loop stall while the
 *                                                sweeper removes `entries` expired entries
 *                                                (among `permanent` more without a TTL)
 *   indexStall <entries>                         longest event-loop stall during the first
 *                                                listing of `entries` keys (the index build)
 *   compactStall <entries>                       longest event-loop stall while every one of
 *                                                `entries` keys with a TTL is given a new one
 *                                                (the expiry index's compaction), then swept
 */
import { monitorEventLoopDelay, PerformanceObserver } from "node:perf_hooks"
import { setTimeout as sleep } from "node:timers/promises"
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { KvStore } from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import { buildService } from "./lib/effect.js"

const VALUE_BYTES = 100
const keyOf = (i: number): string => `user:${i.toString().padStart(7, "0")}`
const valueOf = (i: number): Uint8Array => new Uint8Array(VALUE_BYTES).fill(i & 0xff)

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error("run with --expose-gc")

const settledMemory = async (): Promise<number> => {
  for (let i = 0; i < 4; i++) {
    gc()
    await sleep(10)
  }
  const m = process.memoryUsage()
  return m.heapUsed + m.external
}

const heap = async (subject: string, entries: number) => {
  let keep: unknown
  let close = async () => {}
  let before: number
  if (subject === "map") {
    before = await settledMemory()
    const map = new Map<string, Uint8Array>()
    for (let i = 0; i < entries; i++) map.set(keyOf(i), valueOf(i))
    keep = map
  } else if (subject === "layerMemory" || subject === "effect-kv") {
    const built = subject === "layerMemory"
      ? await buildService(KeyValueStore.layerMemory, KeyValueStore.KeyValueStore)
      : await buildService(MemoryStore.layer(), KvStore)
    close = built.close
    before = await settledMemory()
    const store: { set: (key: string, value: Uint8Array) => Effect.Effect<void, unknown> } = built.service
    await Effect.runPromise(Effect.gen(function*() {
      for (let i = 0; i < entries; i++) yield* store.set(keyOf(i), valueOf(i))
    }))
    keep = store
  } else {
    throw new Error(`unknown subject ${subject}`)
  }
  const after = await settledMemory()
  const bytesPerEntry = (after - before) / entries
  if (keep === undefined) throw new Error("unreachable")
  await close()
  return { subject, entries, bytesPerEntry }
}

/**
 * Fills a store whose sweeper runs every `INTERVAL_MS` (real clock) with
 * entries that expire at once, then records the event-loop delay around the
 * first sweep. A 1 ms timer also logs when the longest gap happened, to check
 * it coincides with the sweep rather than with something else.
 */
const stall = async (entries: number, permanent: number) => {
  // long enough for the fill on a loaded 2-core machine (500k sets took up to 14 s)
  const INTERVAL_MS = 25_000
  const t0 = performance.now()
  const built = await buildService(MemoryStore.layer({ cleanupInterval: `${INTERVAL_MS} millis` }), KvStore)
  const store = built.service
  // chunks of 1000 keys, expiring and permanent alternating: the expiring keys are spread over the
  // whole key range and the map's insertion order
  const CHUNK = 1000
  for (let from = 0, chunk = 0; from < entries + permanent; from += CHUNK, chunk++) {
    const batch = Array.from({ length: Math.min(CHUNK, entries + permanent - from) }, (_, i) => [keyOf(from + i), valueOf(from + i)] as const)
    const expiring = chunk % 2 === 0 || from >= 2 * permanent
    await Effect.runPromise(expiring ? store.setMany(batch, 1) : store.setMany(batch)) // 1 ms
  }
  const filledAt = performance.now() - t0
  await sleep(50)

  // idle reference: the same process doing nothing for 500 ms
  const idle = monitorEventLoopDelay({ resolution: 1 })
  idle.enable()
  await sleep(500)
  idle.disable()

  if (performance.now() - t0 > INTERVAL_MS - 200) {
    throw new Error(`filling took ${filledAt.toFixed(0)} ms: the first sweep already ran; raise INTERVAL_MS`)
  }
  const histogram = monitorEventLoopDelay({ resolution: 1 })
  let last = performance.now()
  let longestGap = 0
  let longestGapAt = 0
  let longestGcMs = 0
  const gcs = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) longestGcMs = Math.max(longestGcMs, entry.duration)
  })
  gcs.observe({ entryTypes: ["gc"] })
  /**
   * Ticker gaps over 5 ms: [seconds since t0, wall ms, process CPU ms]; the sweep is due at
   * INTERVAL_MS. On a loaded machine a wall gap may be the process waiting for a core; the CPU
   * time the process used meanwhile (all its threads, GC helpers included) tells our own work.
   */
  const gaps: Array<[number, number, number]> = []
  let sweepWindowGap = 0
  let sweepWindowCpu = 0
  const cpuMs = () => {
    const cpu = process.cpuUsage()
    return (cpu.user + cpu.system) / 1000
  }
  let lastCpu = cpuMs()
  const ticker = setInterval(() => {
    const now = performance.now()
    const cpu = cpuMs()
    if (now - last > 5) gaps.push([Number(((now - t0) / 1000).toFixed(2)), Number((now - last).toFixed(1)), Number((cpu - lastCpu).toFixed(1))])
    // from the moment the sweep is due (the ticker's gaps before it are other processes, or the fill's garbage)
    if (now - t0 >= INTERVAL_MS) {
      sweepWindowGap = Math.max(sweepWindowGap, now - last)
      sweepWindowCpu = Math.max(sweepWindowCpu, Math.min(cpu - lastCpu, now - last))
    }
    lastCpu = cpu
    if (now - last > longestGap) {
      longestGap = now - last
      longestGapAt = now - t0
    }
    last = now
  }, 1)
  histogram.enable()
  // the sweep starts INTERVAL_MS after the layer was built; give it 3 s to finish
  await sleep(INTERVAL_MS + 3_000 - (performance.now() - t0))
  histogram.disable()
  clearInterval(ticker)
  gcs.disconnect()

  // nothing should be left for a manual cleanup if the sweeper did its job
  const leftForCleanup = await Effect.runPromise(store.cleanup)
  const live = (await Effect.runPromise(store.keys(""))).length
  await built.close()
  return {
    entries,
    permanent,
    mode: `real clock, cleanupInterval ${INTERVAL_MS} ms`,
    fillMs: filledAt,
    maxStallMs: histogram.max / 1e6,
    p99StallMs: histogram.percentile(99) / 1e6,
    idleMaxMs: idle.max / 1e6,
    longestGapMs: longestGap,
    longestGapAtMs: longestGapAt,
    longestGcMs,
    sweepWindowMaxGapMs: sweepWindowGap,
    sweepWindowMaxGapCpuMs: sweepWindowCpu,
    gapsOver5ms: gaps.filter(([at]) => at * 1000 >= INTERVAL_MS - 100).slice(0, 20),
    leftForCleanup,
    live,
    note: `sweeper triggered by a real cleanupInterval of ${INTERVAL_MS} ms (not TestClock, not a direct cleanup call); ` +
      `longest 1 ms-timer gap ${longestGap.toFixed(1)} ms at t=${(longestGapAt / 1000).toFixed(2)} s (sweep due at ${
        INTERVAL_MS / 1000
      } s); entries left for a manual cleanup afterwards: ${leftForCleanup}, live keys: ${live}`
  }
}

/** The widest gap between two ticks of a 1 ms timer while `f` runs, and `f`'s own time. */
const widestTickGap = async (f: () => Promise<unknown>) => {
  let last = performance.now()
  let widest = 0
  const ticker = setInterval(() => {
    const now = performance.now()
    widest = Math.max(widest, now - last)
    last = now
  }, 1)
  await sleep(5)
  widest = 0
  const started = performance.now()
  await f()
  const ms = performance.now() - started
  await sleep(5) // a stall at the very end shows when the delayed tick finally runs
  clearInterval(ticker)
  return { ms, widest }
}

/**
 * Fills a store with `entries` keys (never listed), then times its first
 * listing, which builds the ordered index in slices, with the longest
 * event-loop stall meanwhile; beside it the same ticker over an idle second.
 */
const indexStall = async (entries: number) => {
  const built = await buildService(MemoryStore.layer(), KvStore)
  const store = built.service
  for (let from = 0; from < entries; from += 10_000) {
    const chunk = Array.from({ length: Math.min(10_000, entries - from) }, (_, i) => [keyOf(from + i), valueOf(from + i)] as const)
    await Effect.runPromise(store.setMany(chunk))
  }
  await settledMemory()
  const idle = await widestTickGap(() => sleep(1000))
  let longestGcMs = 0
  const gcs = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) longestGcMs = Math.max(longestGcMs, entry.duration)
  })
  gcs.observe({ entryTypes: ["gc"] })
  const build = await widestTickGap(() => Effect.runPromise(store.count("user:00000")))
  gcs.disconnect()
  await built.close()
  return { entries, buildMs: build.ms, maxStallMs: build.widest, longestGcMs, idleMaxMs: idle.widest }
}

/**
 * Fills a store with `entries` keys expiring in an hour, then gives every key a
 * new expiry, 1000 keys per `setMany` with an event-loop turn between: each
 * rewrite leaves a stale node in the expiry index, and once stale nodes
 * outnumber current ones the index compacts. Reports the longest gap of a
 * 1 ms timer and the longest single `setMany` of 1000 keys meanwhile, then
 * the same for a sweep (`cleanup`) that finishes the compaction.
 */
const compactStall = async (entries: number) => {
  const built = await buildService(MemoryStore.layer(), KvStore)
  const store = built.service
  const CHUNK = 1000
  const fill = async (ttl: Duration.DurationInput) => {
    let longestChunkMs = 0
    for (let from = 0; from < entries; from += CHUNK) {
      const batch = Array.from({ length: Math.min(CHUNK, entries - from) }, (_, i) => [keyOf(from + i), valueOf(from + i)] as const)
      const started = performance.now()
      await Effect.runPromise(store.setMany(batch, ttl))
      longestChunkMs = Math.max(longestChunkMs, performance.now() - started)
      await new Promise((resolve) => setImmediate(resolve))
    }
    return longestChunkMs
  }
  await fill("1 hour")
  await settledMemory()
  let longestGcMs = 0
  const gcs = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) longestGcMs = Math.max(longestGcMs, entry.duration)
  })
  gcs.observe({ entryTypes: ["gc"] })
  let longestChunkMs = 0
  const rewrite = await widestTickGap(async () => {
    longestChunkMs = await fill("2 hours")
  })
  const sweep = await widestTickGap(() => Effect.runPromise(store.cleanup))
  gcs.disconnect()
  await built.close()
  return {
    entries,
    rewriteMs: rewrite.ms,
    rewriteMaxStallMs: rewrite.widest,
    longestSetManyOf1000Ms: longestChunkMs,
    sweepMs: sweep.ms,
    sweepMaxStallMs: sweep.widest,
    longestGcMs
  }
}

const [mode, a, b] = process.argv.slice(2)
const result = mode === "heap"
  ? await heap(a!, Number(b))
  : mode === "stall"
  ? await stall(Number(a), Number(b ?? 0))
  : mode === "indexStall"
  ? await indexStall(Number(a))
  : mode === "compactStall"
  ? await compactStall(Number(a))
  : (() => {
    throw new Error(`usage: memory-child.ts heap <subject> <entries> | stall <entries> [permanent] | indexStall <entries> | compactStall <entries>`)
  })()
console.log(JSON.stringify(result))
