/**
 * Builds the Effect 4 package like the Effect 3 one (`../scripts/build.mjs`, whose
 * `packageFields` this reuses): `dist/esm` (ES modules, type-checked) and `dist/cjs`
 * (CommonJS, which Node ≥ 22.12 can load next to Effect 4's ES-only modules through
 * `require(esm)`), each with the same declarations.
 *
 * `src/core` is a symbolic link to the repository's `src/core`, the pure modules both
 * lines share; `preserveSymlinks` (tsconfig.json) compiles them as this package's
 * `dist/*\/core`, so the tarball holds plain files and no path outside the package.
 * Every top-level `src/*.ts` is a public entry; `exports`/`typesVersions`/`main`/`module`/
 * `types` of package.json follow that list (commit the change when the build updates them).
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { packageFields } from "../../scripts/build.mjs"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const at = (...parts) => path.join(root, ...parts)

/** Public modules: the top-level files of src/, without extension, index first. */
export const entries = () =>
  fs.readdirSync(at("src"))
    .filter((name) => name.endsWith(".ts") && !name.endsWith(".d.ts"))
    .map((name) => name.slice(0, -3))
    .sort((a, b) => (a === "index" ? -1 : b === "index" ? 1 : a < b ? -1 : a > b ? 1 : 0))

const tsc = (project) =>
  execFileSync(process.execPath, [at("node_modules", "typescript", "bin", "tsc"), "-p", at(project)], {
    stdio: "inherit"
  })

/** The ESM build's declarations, for the CommonJS files too (same text; resolved as CommonJS there). */
const copyDeclarations = (from, to) => {
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name)
    const target = path.join(to, entry.name)
    if (entry.isDirectory()) copyDeclarations(source, target)
    else if (entry.name.endsWith(".d.ts")) fs.copyFileSync(source, target)
  }
}

const writeJson = (file, value) => fs.writeFileSync(file, JSON.stringify(value, null, 2) + "\n")

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  fs.rmSync(at("dist"), { recursive: true, force: true })
  tsc("tsconfig.build.json")
  tsc("tsconfig.build.cjs.json")
  copyDeclarations(at("dist", "esm"), at("dist", "cjs"))
  writeJson(at("dist", "esm", "package.json"), { type: "module", sideEffects: false })
  writeJson(at("dist", "cjs", "package.json"), { type: "commonjs", sideEffects: false })

  const manifestPath = at("package.json")
  const manifest = JSON.parse(fs.readFileSync(manifestPath, "utf8"))
  const fields = packageFields(entries())
  const stale = Object.keys(fields).filter((k) => JSON.stringify(manifest[k]) !== JSON.stringify(fields[k]))
  if (stale.length > 0) {
    const updated = {}
    for (const [key, value] of Object.entries(manifest)) {
      updated[key] = key in fields ? fields[key] : value
      if (key === "sideEffects") for (const k of Object.keys(fields)) if (!(k in manifest)) updated[k] = fields[k]
    }
    for (const k of Object.keys(fields)) if (!(k in updated)) updated[k] = fields[k]
    writeJson(manifestPath, updated)
    console.log(`build: package.json ${stale.join(", ")} updated for entries ${entries().join(", ")}; commit it`)
  }
}
