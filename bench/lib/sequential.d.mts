/** Types of `sequential.mjs` (plain JavaScript, so both lines' processes load it as is). */
export interface SequentialSubject {
  readonly name: string
  readonly batch: () => Promise<unknown>
}
export declare const median: (xs: ReadonlyArray<number>) => number
export declare const timeRound: (
  subjects: ReadonlyArray<SequentialSubject>,
  options: { readonly ops: number; readonly budgetMs: number }
) => Promise<Record<string, number>>
export declare const LINES: {
  readonly memory: { readonly ops: number; readonly keys: number }
  readonly postgres: { readonly ops: number; readonly keys: number }
  readonly rounds: number
  readonly budgetMs: number
  readonly warmupMs: number
}
