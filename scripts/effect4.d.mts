/** Types of `effect4.mjs`, for the TypeScript programs that drive the Effect 4 line (`bench/lines.ts`). */
/** The Effect 4 package's folder. */
export declare const line: string
/** The Node binary the line runs under: this one when ≥ 22.12, else the pinned Node 22 (installed on first use). */
export declare const nodeBinary: () => string
/** `npm ci` in effect4/ unless its install matches its lockfile. */
export declare const install: () => void
/** Install, type check, then `vitest run args`; the exit status. */
export declare const test: (args: ReadonlyArray<string>) => number
/** Install, then run an effect4 TypeScript file under the line's Node; the exit status. */
export declare const runFile: (file: string, args: ReadonlyArray<string>) => number
