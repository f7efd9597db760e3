/**
 * Vitest global setup: gives the PostgreSQL tests a server (`DATABASE_URL`, or a
 * private embedded one started here and stopped in teardown) through
 * `provide("databaseUrl", url)` and `DATABASE_URL`; tests read it with `inject("databaseUrl")`.
 */
import type { TestProject } from "vitest/node"
import { startPostgres } from "../dev/postgresServer.js"

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
  }
}

export default async function setup(project: TestProject) {
  const server = await startPostgres()
  project.provide("databaseUrl", server.url)
  // test files that look for DATABASE_URL find the same server (workers inherit the environment)
  const previous = process.env["DATABASE_URL"]
  process.env["DATABASE_URL"] = server.url
  return async () => {
    if (previous === undefined) delete process.env["DATABASE_URL"]
    else process.env["DATABASE_URL"] = previous
    await server.stop()
  }
}
