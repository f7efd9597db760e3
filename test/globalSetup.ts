/**
 * Vitest global setup: gives the PostgreSQL tests a server (`DATABASE_URL`, or a
 * private embedded one started here and stopped in teardown) through
 * `provide("databaseUrl", url)`; tests read it with `inject("databaseUrl")`.
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
  return () => server.stop()
}
