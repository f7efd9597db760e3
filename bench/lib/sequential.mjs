/**
 * Sequential timing shared by both Effect lines' processes (`bench/lines.ts` here,
 * `effect4/bench/lines.ts` under the Node 22 binary): plain JavaScript with no
 * imports, so neither process loads a package of the other line's install.
 *
 * A subject runs batches of `ops` operations (one promise per batch, the operations
 * one after another inside it). `timeRound` spends about `budgetMs` on each subject
 * in turn and gives each one's median batch time per operation; the two processes
 * take turns round by round, so a change of the machine's load meets both lines.
 */

/** @param {ReadonlyArray<number>} xs */
export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const n = s.length
  return n === 0 ? NaN : n % 2 === 1 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
}

/**
 * @param {ReadonlyArray<{ readonly name: string, readonly batch: () => Promise<unknown> }>} subjects
 * @param {{ readonly ops: number, readonly budgetMs: number }} options
 * @returns {Promise<Record<string, number>>} microseconds per operation, by subject
 */
export const timeRound = async (subjects, options) => {
  /** @type {Record<string, number>} */
  const out = {}
  for (const subject of subjects) {
    const batches = []
    const started = performance.now()
    while (batches.length < 3 || performance.now() - started < options.budgetMs) {
      const t0 = performance.now()
      await subject.batch()
      batches.push(performance.now() - t0)
    }
    out[subject.name] = (median(batches) * 1000) / options.ops
  }
  return out
}

/** The sizes and budgets both halves use, so the two processes time the same work. */
export const LINES = {
  memory: { ops: 2000, keys: 1000 },
  postgres: { ops: 100, keys: 1000 },
  rounds: 5,
  budgetMs: 120,
  warmupMs: 300
}
