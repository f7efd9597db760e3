/**
 * Side-by-side timing on tinybench. Every subject runs a *batch* of operations
 * per tinybench iteration (one Effect, or one promise chain for plain drivers),
 * so the cost of entering the Effect runtime is amortised the same way for the
 * baseline and for effect-kv. Subjects of one comparison run interleaved, in a
 * rotated order, for several rounds; the reported figure is the median over
 * rounds of each round's median batch time, divided by the batch size.
 */
import { Bench } from "tinybench"

export interface Subject {
  readonly name: string
  /** Operations performed by one call of `batch`. */
  readonly opsPerBatch: number
  readonly batch: () => unknown
  /**
   * Untimed preparation before every batch (e.g. re-inserting keys to delete):
   * run inside the task, with the batch's own duration reported to tinybench.
   */
  readonly beforeEach?: () => Promise<void> | void
}

export interface Measured {
  readonly name: string
  /** Median time per operation, microseconds. */
  readonly usPerOp: number
  /** Per-round medians, microseconds per operation. */
  readonly rounds: ReadonlyArray<number>
  readonly samples: number
}

export interface CompareOptions {
  readonly rounds?: number
  /** Time budget per subject per round, ms. */
  readonly time?: number
  /** Minimum batches per subject per round. */
  readonly iterations?: number
  readonly warmupTime?: number
  readonly warmupIterations?: number
}

export const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const n = s.length
  if (n === 0) return NaN
  return n % 2 === 1 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2
}

export const compare = async (
  subjects: ReadonlyArray<Subject>,
  options: CompareOptions = {}
): Promise<Record<string, Measured>> => {
  const rounds = options.rounds ?? 3
  const perRound = new Map<string, Array<number>>(subjects.map((s) => [s.name, []]))
  const sampleCount = new Map<string, number>(subjects.map((s) => [s.name, 0]))
  for (let round = 0; round < rounds; round++) {
    const bench = new Bench({
      time: options.time ?? 300,
      iterations: options.iterations ?? 5,
      warmup: true,
      warmupTime: options.warmupTime ?? (round === 0 ? 100 : 30),
      warmupIterations: options.warmupIterations ?? 2,
      throws: true
    })
    // rotate the order each round so no subject always runs first (cold) or last
    const ordered = subjects.map((_, i) => subjects[(i + round) % subjects.length]!)
    for (const subject of ordered) {
      const { batch, beforeEach } = subject
      bench.add(
        subject.name,
        beforeEach === undefined ? batch : async () => {
          await beforeEach()
          const started = performance.now()
          await batch()
          return { overriddenDuration: performance.now() - started }
        }
      )
    }
    await bench.run()
    for (const task of bench.tasks) {
      const result = task.result
      if (result.state !== "completed") {
        throw new Error(`benchmark ${task.name} did not complete: ${result.state}${"error" in result ? ` ${String(result.error)}` : ""}`)
      }
      const subject = subjects.find((s) => s.name === task.name)!
      perRound.get(task.name)!.push((result.latency.p50 * 1000) / subject.opsPerBatch)
      sampleCount.set(task.name, sampleCount.get(task.name)! + result.latency.samplesCount)
    }
  }
  const out: Record<string, Measured> = {}
  for (const subject of subjects) {
    const r = perRound.get(subject.name)!
    out[subject.name] = { name: subject.name, usPerOp: median(r), rounds: r, samples: sampleCount.get(subject.name)! }
  }
  return out
}

/** Runs `n` async workers over `count` indices: a plain-promise equivalent of `Effect.forEach(..., { concurrency })`. */
export const runConcurrently = async (
  count: number,
  concurrency: number,
  f: (i: number) => Promise<unknown>
): Promise<void> => {
  let next = 0
  const worker = async () => {
    while (next < count) {
      const i = next++
      await f(i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
}
