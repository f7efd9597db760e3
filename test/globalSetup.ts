/**
 * Vitest global setup: gives the PostgreSQL tests a server (`DATABASE_URL`, or a
 * private embedded one started here and stopped in teardown) through
 * `provide("databaseUrl", url)`; tests read it with `inject("databaseUrl")`.
 *
 * When the run is filtered to test files that never inject `databaseUrl`
 * (say `vitest run MemoryStore`), no server is started.
 */
import * as fs from "node:fs/promises"
import type { TestProject } from "vitest/node"
import { startPostgres } from "../dev/postgresServer.js"

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
  }
}

const needsDatabase = async (project: TestProject): Promise<boolean> => {
  try {
    // the CLI file filters; internal to vitest, so read defensively and start the server when unsure
    const filters = (project.vitest as unknown as { filenamePattern?: ReadonlyArray<string> }).filenamePattern
    if (filters === undefined || filters.length === 0) return true
    const { testFiles } = await project.globTestFiles([...filters])
    for (const file of testFiles) {
      if ((await fs.readFile(file, "utf-8")).includes("databaseUrl")) return true
    }
    return false
  } catch {
    return true
  }
}

export default async function setup(project: TestProject) {
  if (!(await needsDatabase(project))) return
  const server = await startPostgres()
  project.provide("databaseUrl", server.url)
  return () => server.stop()
}
