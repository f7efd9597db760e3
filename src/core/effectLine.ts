/**
 * Which Effect line this build of effect-kv needs, and the words for an
 * application that has another one installed (`npm install effect` gives
 * Effect 4 now). Without this check such an app fails deep inside, with a
 * `TypeError` or `Cannot find module …/effect/dist/Encoding.js`, naming
 * neither package.
 *
 * Pure TypeScript, no Effect import: the Effect 4 line of effect-kv compiles
 * it too and describes itself with `EFFECT4_BUILD`.
 */

/** This package's version; `test/effectLine.test.ts` holds it equal to package.json's. */
export const PACKAGE_VERSION = "0.1.0"

/** The Effect major this build is for. */
export const EFFECT_MAJOR = 3

/** A build of effect-kv: its version, the Effect major it runs on and the range to install. */
export interface Build {
  readonly packageVersion: string
  readonly effectMajor: number
  readonly effectRange: string
}

/** The Effect 3 line (this directory's package). */
export const EFFECT3_BUILD: Build = { packageVersion: PACKAGE_VERSION, effectMajor: EFFECT_MAJOR, effectRange: "^3.22" }

/** The Effect 4 line (`effect4/`; `effect4/test/effectLine.test.ts` holds its version equal to its package.json's). */
export const EFFECT4_BUILD: Build = { packageVersion: "2.0.0", effectMajor: 4, effectRange: "^4.1.5" }

/** The effect-kv major line built for each other Effect major (Effect 4 → effect-kv 2.x). */
const LINE_FOR_EFFECT_MAJOR: Readonly<Record<number, string>> = { 3: "0.x", 4: "2.x" }

/** The major of a version string such as `"4.1.5"` or `"4.0.0-beta.3"`, or `undefined`. */
export const majorOf = (version: string | undefined): number | undefined => {
  const match = version === undefined ? null : /^(\d+)\./.exec(version)
  return match === null ? undefined : Number(match[1])
}

/**
 * What to tell an application whose `effect` is not the line this build is
 * for, or `undefined` when it is. `effectVersion` is the installed version
 * when it could be read; `isThisLine` is what a probe of the loaded `effect`
 * found (its API is Effect 3's), which decides when the version is unknown.
 */
export const effectLineProblem = (
  effectVersion: string | undefined,
  isThisLine: boolean
): string | undefined => buildProblem(EFFECT3_BUILD, effectVersion, isThisLine)

/** `effectLineProblem` for the build `build` (`isThisLine`: the probe found `build`'s Effect API). */
export const buildProblem = (
  build: Build,
  effectVersion: string | undefined,
  isThisLine: boolean
): string | undefined => {
  const major = majorOf(effectVersion)
  if (major === undefined ? isThisLine : major === build.effectMajor) return undefined
  const installed = effectVersion === undefined
    ? `another major version of effect (not ${build.effectMajor})`
    : `effect ${effectVersion}`
  const line = major === undefined ? undefined : LINE_FOR_EFFECT_MAJOR[major]
  const install = `effect@${build.effectRange}`
  return `effect-kv ${build.packageVersion} is built for Effect ${build.effectMajor}; this app has ${installed}: ` +
    (line === undefined
      ? `install ${install} (npm install ${install}) or an effect-kv line built for your Effect`
      : `use effect-kv ${line} (npm install effect-kv@${line.replace(".x", "")}), or install ${install}`)
}
