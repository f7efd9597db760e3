/**
 * The Effect 4 build's guard: next to Effect 4 it loads; next to an Effect 3 it refuses to
 * load, naming both and saying to use effect-kv 0.x (the mirror of the Effect 3 line's
 * message); its version is its package.json's.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs"
import { buildProblem, EFFECT4_BUILD } from "../src/core/effectLine.js"
import { checkEffectLine } from "../src/internal/effectLine.js"

describe("Effect line guard (Effect 4 build)", () => {
  it("loads next to Effect 4: no problem with the installed effect", () => {
    assert.isUndefined(checkEffectLine())
  })

  it("next to Effect 3 it says which line to use", () => {
    const effect3Context = { Tag: () => {}, GenericTag: () => {}, Reference: () => {} }
    assert.strictEqual(
      checkEffectLine(effect3Context, () => "3.22.4"),
      "effect-kv 2.0.0 is built for Effect 4; this app has effect 3.22.4: use effect-kv 0.x (npm install effect-kv@0), or install effect@^4.1.5"
    )
    assert.match(checkEffectLine(effect3Context, () => undefined)!, /built for Effect 4; this app has another major version of effect \(not 4\)/)
    assert.match(buildProblem(EFFECT4_BUILD, "5.0.0", false)!, /this app has effect 5\.0\.0: install effect@\^4\.1\.5/)
    assert.isUndefined(buildProblem(EFFECT4_BUILD, "4.1.5", false))
    assert.isUndefined(buildProblem(EFFECT4_BUILD, undefined, true))
  })

  it("its version is the package's", () => {
    const manifest = JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
    assert.strictEqual(EFFECT4_BUILD.packageVersion, manifest.version)
  })
})
