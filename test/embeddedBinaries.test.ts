/**
 * The check before the embedded server starts, against a copy of the platform
 * package as npm leaves it when its postinstall is skipped (npm 12 without
 * `allowScripts`, or `--ignore-scripts`): the library links missing.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll } from "vitest"
import { binariesProblem, ensureBinariesRun, platformPackage } from "../dev/embeddedBinaries.js"

const { binariesName: packageName, binariesDir: installed } = platformPackage()
const linux = process.platform === "linux"

let tmp = ""
let copy = ""

/** The links the package's postinstall makes, from its own list. */
const links = async (dir: string) =>
  (JSON.parse(await fs.readFile(path.join(dir, "native", "pg-symlinks.json"), "utf-8")) as Array<{ target: string }>)
    .map((l) => path.join(dir, l.target))

/** A copy of the installed platform package with every link removed, as a skipped postinstall leaves it. */
const unlinkedCopy = async (name: string) => {
  const dir = path.join(tmp, name)
  await fs.cp(installed!, dir, { recursive: true, verbatimSymlinks: true })
  for (const link of await links(dir)) await fs.rm(link, { force: true })
  return dir
}

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv-pgbin-"))
  if (linux) copy = await unlinkedCopy("unlinked")
})

afterAll(async () => {
  if (tmp !== "") await fs.rm(tmp, { recursive: true, force: true })
})

// only the Linux packages ship their libraries without links
describe.runIf(linux)("embedded PostgreSQL binaries check", () => {
  it("the installed package runs", async () => {
    assert.isDefined(installed)
    assert.strictEqual(binariesProblem(installed!), undefined)
    assert.deepStrictEqual(ensureBinariesRun(installed!, packageName), { repaired: false })
  })

  it("a skipped postinstall is seen (a library does not load) and repaired with the package's own script, once", async () => {
    const problem = binariesProblem(copy)
    assert.isDefined(problem)
    assert.match(problem!, /initdb --version failed: .*lib\w+\.so/)

    assert.deepStrictEqual(ensureBinariesRun(copy, packageName), { repaired: true })
    assert.strictEqual(binariesProblem(copy), undefined)
    for (const link of await links(copy)) assert.isTrue((await fs.lstat(link)).isSymbolicLink(), link)

    // idempotent: nothing left to repair, nothing changed
    const before = await fs.readdir(path.join(copy, "native", "lib"))
    assert.deepStrictEqual(ensureBinariesRun(copy, packageName), { repaired: false })
    assert.deepStrictEqual(await fs.readdir(path.join(copy, "native", "lib")), before)
  })

  it("when it cannot be repaired: one error naming the cause and the fixes", async () => {
    const broken = await unlinkedCopy("broken")
    await fs.rm(path.join(broken, "native", "pg-symlinks.json"))
    const error = (() => {
      try {
        ensureBinariesRun(broken, packageName)
        return undefined
      } catch (e) {
        return e as Error
      }
    })()
    assert.instanceOf(error, Error)
    const message = error!.message
    assert.include(message, `the binaries of ${packageName} in ${broken} do not start`)
    assert.match(message, /initdb --version failed: .*lib\w+\.so/)
    assert.include(message, "postinstall")
    assert.include(message, `"allowScripts"`)
    assert.include(message, `npm rebuild ${packageName}`)
    assert.include(message, "DATABASE_URL")
  })
})
