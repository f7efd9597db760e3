/**
 * Builds the package the way Effect 3's own packages ship:
 *
 *   dist/esm   ES modules + their .d.ts (and maps), marked {"type":"module"}
 *   dist/cjs   CommonJS + their .d.ts (and maps), marked {"type":"commonjs"}
 *
 * Each format carries its own declarations, so TypeScript sees ESM types for
 * `import` and CommonJS types for `require` (`module: node16`/`nodenext`), and
 * `main`/`types`/`typesVersions` serve `moduleResolution: node10`.
 *
 * Every top-level `src/*.ts` is a public entry (`src/index.ts` is "."; `src/internal/`
 * is private). The `exports`, `typesVersions`, `main`, `module` and `types` fields of
 * package.json are derived from that list: adding `src/Foo.ts` and building updates
 * them (commit the change). Usage: `node scripts/build.mjs` (also `npm run build`).
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const at = (...parts) => path.join(root, ...parts)

/** Public modules: the top-level files of src/, without extension. */
export const entries = () =>
  fs.readdirSync(at("src"))
    .filter((name) => name.endsWith(".ts") && !name.endsWith(".d.ts"))
    .map((name) => name.slice(0, -3))
    .sort((a, b) => (a === "index" ? -1 : b === "index" ? 1 : a < b ? -1 : a > b ? 1 : 0))

/** The package.json fields that point at the build, for these entries. */
export const packageFields = (names) => {
  const exports = { "./package.json": "./package.json" }
  const typesVersions = {}
  for (const name of names) {
    exports[name === "index" ? "." : `./${name}`] = {
      import: { types: `./dist/esm/${name}.d.ts`, default: `./dist/esm/${name}.js` },
      default: { types: `./dist/cjs/${name}.d.ts`, default: `./dist/cjs/${name}.js` }
    }
    if (name !== "index") typesVersions[name] = [`./dist/cjs/${name}.d.ts`]
  }
  return {
    main: "./dist/cjs/index.js",
    module: "./dist/esm/index.js",
    types: "./dist/cjs/index.d.ts",
    exports,
    typesVersions: { "*": typesVersions }
  }
}

const tsc = (project) =>
  execFileSync(process.execPath, [at("node_modules", "typescript", "bin", "tsc"), "-p", at(project)], {
    stdio: "inherit"
  })

const writeJson = (file, value) => fs.writeFileSync(file, JSON.stringify(value, null, 2) + "\n")

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  fs.rmSync(at("dist"), { recursive: true, force: true })
  tsc("tsconfig.build.json")
  tsc("tsconfig.build.cjs.json")
  writeJson(at("dist", "esm", "package.json"), { type: "module", sideEffects: false })
  writeJson(at("dist", "cjs", "package.json"), { type: "commonjs", sideEffects: false })

  const manifestPath = at("package.json")
  const manifest = JSON.parse(fs.readFileSync(manifestPath, "utf8"))
  const fields = packageFields(entries())
  const stale = Object.keys(fields).filter((k) => JSON.stringify(manifest[k]) !== JSON.stringify(fields[k]))
  if (stale.length > 0) {
    // keep the key order of package.json; new keys go after "sideEffects"
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
