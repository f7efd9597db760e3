/** The results table: rows, targets, printing and `bench/results.json`. */
import { execSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import * as os from "node:os"

export interface Row {
  readonly suite: "memory" | "postgres"
  readonly operation: string
  /** The measured effect-kv figure. */
  readonly value: number | undefined
  readonly unit: "µs/op" | "bytes/entry" | "ms" | "ops/s" | "count"
  readonly baseline?: string
  readonly baselineValue?: number | undefined
  /** value / baselineValue, or for "ops/s" baselineValue / value (so >1 is always "slower"). */
  readonly ratio?: number | undefined
  /** Upper bound on the ratio (or on the value when `targetOn` is "value"). */
  readonly target?: number
  readonly targetOn?: "ratio" | "value"
  readonly note?: string
  /** For rows judged by a check rather than a bound (e.g. the exact final count). */
  readonly check?: boolean
}

export interface ScoredRow extends Row {
  readonly met: boolean | undefined
}

export const score = (row: Row): ScoredRow => {
  if (row.check !== undefined) return { ...row, met: row.check }
  if (row.target === undefined) return { ...row, met: undefined }
  const x = row.targetOn === "value" ? row.value : row.ratio
  return { ...row, met: x === undefined || Number.isNaN(x) ? undefined : x <= row.target }
}

/** Builds a comparison row; `ratio` is subject / baseline time. */
export const ratioRow = (
  suite: Row["suite"],
  operation: string,
  value: number | undefined,
  baseline: string,
  baselineValue: number | undefined,
  extra: Partial<Row> = {}
): Row => ({
  suite,
  operation,
  value,
  unit: "µs/op",
  baseline,
  baselineValue,
  ratio: value !== undefined && baselineValue !== undefined ? value / baselineValue : undefined,
  ...extra
})

const fmt = (x: number | undefined, unit: Row["unit"]): string => {
  if (x === undefined || Number.isNaN(x)) return "n/a"
  switch (unit) {
    case "µs/op":
      return x >= 100 ? `${x.toFixed(0)} µs` : x >= 1 ? `${x.toFixed(2)} µs` : `${(x * 1000).toFixed(0)} ns`
    case "bytes/entry":
      return `${x.toFixed(0)} B`
    case "ms":
      return `${x.toFixed(1)} ms`
    case "ops/s":
      return `${x.toFixed(0)}/s`
    case "count":
      return `${x}`
  }
}

const opsPerSec = (x: number | undefined, unit: Row["unit"]): string =>
  unit === "µs/op" && x !== undefined && !Number.isNaN(x) ? `${Math.round(1e6 / x).toLocaleString("en-US")}` : ""

export const formatTable = (rows: ReadonlyArray<ScoredRow>): string => {
  const header = ["suite", "operation", "effect-kv", "ops/s", "baseline", "baseline value", "ratio", "target", "met?"]
  const body = rows.map((r) => [
    r.suite,
    r.operation,
    fmt(r.value, r.unit),
    opsPerSec(r.value, r.unit),
    r.baseline ?? "",
    r.baselineValue === undefined ? "" : fmt(r.baselineValue, r.unit),
    r.ratio === undefined || Number.isNaN(r.ratio) ? "" : `${r.ratio.toFixed(2)}×`,
    r.check !== undefined ? "exact" : r.target === undefined ? "" : r.targetOn === "value" ? `≤ ${r.target} ${r.unit}` : `≤ ${r.target}×`,
    r.met === undefined ? (r.target === undefined ? "" : "n/a") : r.met ? "met" : "MISSED"
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)))
  const line = (cells: ReadonlyArray<string>) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`
  const out = [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...body.map(line)]
  const notes = rows.filter((r) => r.note !== undefined).map((r) => `- ${r.operation}: ${r.note}`)
  return [...out, ...(notes.length > 0 ? ["", "Notes:", ...notes] : [])].join("\n")
}

/**
 * The targets of a run in one block: every row with a target, met or missed,
 * its figure against the bound, missed ones first. What `bench/FINDINGS.md`
 * must explain is the "missed" list.
 */
export const formatSummary = (rows: ReadonlyArray<ScoredRow>): string => {
  const judged = rows.filter((r) => r.target !== undefined || r.check !== undefined)
  const figure = (r: ScoredRow) =>
    r.check !== undefined
      ? (r.check ? "exact" : "not exact")
      : r.targetOn === "value"
      ? `${fmt(r.value, r.unit)} (≤ ${r.target} ${r.unit})`
      : `${r.ratio === undefined || Number.isNaN(r.ratio) ? "n/a" : `${r.ratio.toFixed(2)}×`} (≤ ${r.target}×)`
  const line = (r: ScoredRow) => `  ${r.met === true ? "met   " : r.met === false ? "MISSED" : "n/a   "}  ${r.suite}: ${r.operation}: ${figure(r)}`
  const missed = judged.filter((r) => r.met === false)
  const met = judged.filter((r) => r.met === true)
  const unknown = judged.filter((r) => r.met === undefined)
  return [
    `Targets: ${met.length} met, ${missed.length} missed${unknown.length > 0 ? `, ${unknown.length} not measured` : ""}`,
    ...missed.map(line),
    ...unknown.map(line),
    ...met.map(line)
  ].join("\n")
}

export const machine = () => {
  const sh = (cmd: string) => {
    try {
      return execSync(cmd, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim()
    } catch {
      return undefined
    }
  }
  return {
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadavg: os.loadavg(),
    lscpuModel: sh("lscpu | grep 'Model name' | sed 's/.*: *//'")
  }
}

export const writeResults = (path: string, rows: ReadonlyArray<ScoredRow>, extra: Record<string, unknown>) => {
  writeFileSync(path, JSON.stringify({ date: new Date().toISOString(), machine: machine(), ...extra, rows }, null, 2) + "\n")
}
