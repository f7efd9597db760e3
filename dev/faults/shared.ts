/** What the fault scripts share: the worker's keys and report, a scenario's result. */

export interface WorkerReport {
  readonly worker: string
  /** Ids of the acknowledged updates, by key. */
  readonly acknowledged: Record<string, ReadonlyArray<string>>
  /** Update retries that found their id already stored (committed, answer lost). */
  readonly alreadyApplied: number
  readonly increments: { readonly acknowledged: number; readonly failedAttempts: number }
  /** Failed attempts by error message (first line), all kinds. */
  readonly errors: Record<string, number>
  /** Calls given up at the deadline. */
  readonly gaveUp: number
  readonly millis: number
}

export const UPDATE_KEYS = ["list/0", "list/1", "list/2"]
export const COUNTER_KEY = "counter"

export interface ScenarioResult {
  readonly name: string
  readonly lines: ReadonlyArray<string>
  readonly violations: ReadonlyArray<string>
}
