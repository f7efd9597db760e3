/**
 * Vitest global setup: gives the PostgreSQL tests a server (`DATABASE_URL`, or a
 * private embedded one started here and stopped in teardown) through
 * `provide("databaseUrl", url)` and `DATABASE_URL`; tests read it with `inject("databaseUrl")`.
 *
 * It also packs the package once for test/packaging.test.ts (`provide("tarball", path)`),
 * while the server starts: the build is the slow part of packing (minutes on a
 * loaded 2-core machine), and global setup has no time limit, unlike a hook.
 * Skipped when the run's file filters leave the packaging tests out.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { TestProject } from "vitest/node"
import { startPostgres } from "../dev/postgresServer.js"
import { pack } from "../scripts/pack.mjs"

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
    /** The packed tarball's path; "" when this run does not include the packaging tests. */
    tarball: string
  }
}

const packagingTests = fileURLToPath(new URL("./packaging.test.ts", import.meta.url))

/**
 * Does this run include the packaging tests? Vitest keeps the command line's
 * file filters (substrings of the paths) in `filenamePattern`, which is not a
 * public API: when it is absent, assume yes.
 */
const runsPackagingTests = (project: TestProject): boolean => {
  const filters = (project.vitest as unknown as { filenamePattern?: ReadonlyArray<string> }).filenamePattern
  if (!Array.isArray(filters) || filters.length === 0) return true
  return filters.some((f) => packagingTests.includes(f.replace(/^\.\//, "")) || path.resolve(f) === packagingTests)
}

export default async function setup(project: TestProject) {
  const packDir = runsPackagingTests(project) ? await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv-pack-")) : undefined
  const removePack = () => (packDir === undefined ? Promise.resolve() : fs.rm(packDir, { recursive: true, force: true }))
  const [server, tarball] = await Promise.allSettled([
    startPostgres(),
    packDir === undefined ? Promise.resolve("") : pack(packDir)
  ])
  if (server.status === "rejected" || tarball.status === "rejected") {
    if (server.status === "fulfilled") await server.value.stop()
    await removePack()
    const error = server.status === "rejected" ? server.reason : (tarball as PromiseRejectedResult).reason
    throw server.status === "rejected" ? error : new Error(`npm pack failed: ${String(error)}`, { cause: error })
  }
  project.provide("databaseUrl", server.value.url)
  project.provide("tarball", tarball.value)
  // test files that look for DATABASE_URL find the same server (workers inherit the environment)
  const previous = process.env["DATABASE_URL"]
  process.env["DATABASE_URL"] = server.value.url
  return async () => {
    if (previous === undefined) delete process.env["DATABASE_URL"]
    else process.env["DATABASE_URL"] = previous
    try {
      await server.value.stop()
    } finally {
      await removePack()
    }
  }
}
