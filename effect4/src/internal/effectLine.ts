/**
 * Refuses to load next to an `effect` of another major line, with a message
 * naming both (see `core/effectLine.ts`). Every public entry imports this
 * module first, so in CommonJS it runs before any other module of effect-kv
 * touches Effect. In ESM, every static import of the whole module graph is
 * resolved before any code runs: this check runs first only when every module
 * the graph imports exists in the installed `effect` (see `checkEffectLine`'s
 * test for which do not, in Effect 4).
 *
 * This is the Effect 4 build's mirror of the Effect 3 line's check: next to
 * an Effect 3 it says "use effect-kv 0.x". The probe costs nothing on Effect 4:
 * only when `Context.Service` (Effect 4's service key, `Context.Tag` in
 * Effect 3) is missing, or Effect 3's `Context.Tag` is there, is `effect`'s
 * `package.json` read for its version.
 */
import * as Context from "effect/Context"
import { buildProblem, EFFECT4_BUILD } from "../core/effectLine.js"

/** `true` when the loaded `effect` has Effect 4's API. */
const hasEffect4Api = (context: object): boolean => {
  const record = context as Record<string, unknown>
  return typeof record["Service"] === "function" && typeof record["Tag"] !== "function"
}

/**
 * The installed `effect`'s version: through `require` in CommonJS, through
 * `module.createRequire` from the working directory in ESM (Node 20.16+),
 * else `undefined`.
 */
const installedEffectVersion = (): string | undefined => {
  const read = (load: (id: string) => unknown): string | undefined => {
    const manifest = load("effect/package.json") as { readonly version?: unknown } | undefined
    return typeof manifest?.version === "string" ? manifest.version : undefined
  }
  try {
    if (typeof require === "function") return read(require)
  } catch {
    // fall through to the ESM way
  }
  try {
    const nodeModule = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process
      ?.getBuiltinModule?.("node:module") as { createRequire?: (from: string) => (id: string) => unknown } | undefined
    if (nodeModule?.createRequire !== undefined) return read(nodeModule.createRequire(`${process.cwd()}/`))
  } catch {
    // unknown: the probe decides
  }
  return undefined
}

/**
 * Why the loaded `effect` cannot run this build, or `undefined` when it can.
 * `context` and `readVersion` are parameters for tests.
 */
export const checkEffectLine = (
  context: object = Context,
  readVersion: () => string | undefined = installedEffectVersion
): string | undefined => hasEffect4Api(context) ? undefined : buildProblem(EFFECT4_BUILD, readVersion(), false)

const problem = checkEffectLine()
if (problem !== undefined) {
  const error = new Error(problem)
  error.name = "EffectVersionMismatch"
  throw error
}
