/**
 * Carries changes of the Effect 3 sources into the Effect 4 line's copies.
 *
 * Most of effect4/src is linked to the shared files (src/core, ttl.ts, matchCause.ts);
 * the files that touch an Effect API that differs are copies of their Effect 3 twin with
 * a few lines changed (docs/effect4.md lists them and the share). effect4/UPSTREAM holds
 * the commit whose src/ the copies match. This applies `git diff UPSTREAM..HEAD` of each
 * twin to its copy with a three-way merge (the diff names the twin's old blob, so git can
 * merge even though the path differs): a fix made once in src/ lands in both lines, and
 * only a hunk that meets an Effect 4 line stops as a conflict to resolve by hand.
 * Then it records HEAD in effect4/UPSTREAM.
 *
 *   node scripts/effect4-carry.mjs          carry (then type-check and test effect4/ yourself:
 *                                           `cd effect4 && npx tsc --noEmit -p .`, `node scripts/effect4.mjs test`)
 *   node scripts/effect4-carry.mjs --list   the copies and how far each differs now
 */
import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const git = (...args) => execFileSync("git", args, { cwd: root, encoding: "utf8", maxBuffer: 1 << 28 })
const upstreamFile = path.join(root, "effect4", "UPSTREAM")

/**
 * Copies rewritten for Effect 4 rather than carried: a change to their twin is ported by
 * hand. connection.ts is built on @effect/sql 4's client and its error reasons;
 * KvPersistence.ts serves Effect 4's Persistence (object | undefined values, PersistenceError);
 * internal/rateLimiter.ts runs Effect 4's arithmetic (core/rateLimit4.ts) and adaptive methods;
 * internal/postgres/changes.ts listens with @effect/sql-pg 4's PgClient.listen, not a raw `pg` Client.
 */
export const rewritten = new Set([
  "internal/postgres/connection.ts",
  "KvPersistence.ts",
  "internal/rateLimiter.ts",
  "internal/postgres/changes.ts"
])

/** effect4/src files that are copies (not links) of a file of the same path under src/. */
export const copies = () => {
  const out = []
  const walk = (dir) => {
    for (const entry of fs.readdirSync(path.join(root, "effect4", "src", dir), { withFileTypes: true })) {
      const rel = path.join(dir, entry.name)
      if (entry.isSymbolicLink()) continue
      if (entry.isDirectory()) walk(rel)
      else if (entry.name.endsWith(".ts") && fs.existsSync(path.join(root, "src", rel))) out.push(rel)
    }
  }
  walk("")
  return out.sort()
}

/** src files (outside the linked src/core) with no twin under effect4/src yet. */
export const missing = () => {
  const out = []
  const walk = (dir) => {
    for (const entry of fs.readdirSync(path.join(root, "src", dir), { withFileTypes: true })) {
      const rel = path.join(dir, entry.name)
      if (entry.isDirectory()) {
        if (rel !== "core") walk(rel)
      } else if (entry.name.endsWith(".ts") && !fs.existsSync(path.join(root, "effect4", "src", rel))) out.push(rel)
    }
  }
  walk("")
  return out.sort()
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const base = fs.readFileSync(upstreamFile, "utf8").trim()
  if (process.argv.includes("--list")) {
    for (const rel of copies()) {
      // --no-index exits 1 when the files differ
      const changed = spawnSync("git", ["diff", "--no-index", "--numstat", `src/${rel}`, `effect4/src/${rel}`], {
        cwd: root,
        encoding: "utf8"
      }).stdout.trim()
      console.log(rel, changed === "" ? "identical" : changed.split("\t").slice(0, 2).join(" added, ") + " removed")
    }
  } else {
    const head = git("rev-parse", "HEAD").trim()
    let conflicts = 0
    for (const rel of copies()) {
      if (rewritten.has(rel)) {
        if (git("diff", base, head, "--", `src/${rel}`) !== "") console.log(`BY HAND: src/${rel} changed; port it to effect4/src/${rel}`)
        continue
      }
      const patch = git("diff", "--full-index", base, head, "--", `src/${rel}`)
      if (patch === "") continue
      const moved = patch.replaceAll(`a/src/${rel}`, `a/effect4/src/${rel}`).replaceAll(`b/src/${rel}`, `b/effect4/src/${rel}`)
      try {
        execFileSync("git", ["apply", "--3way", "-"], { cwd: root, input: moved, stdio: ["pipe", "inherit", "inherit"] })
        console.log(`carried: src/${rel}`)
      } catch {
        conflicts++
        console.log(`CONFLICT: effect4/src/${rel} (resolve the markers, keeping the Effect 4 spelling)`)
      }
    }
    for (const rel of missing()) {
      conflicts++
      console.log(`NEW: src/${rel} has no twin; copy it to effect4/src/${rel} (or link it when it touches no Effect API that differs) and port it`)
    }
    fs.writeFileSync(upstreamFile, head + "\n")
    console.log(conflicts === 0 ? `effect4/UPSTREAM = ${head}` : `${conflicts} file(s) to resolve by hand`)
    process.exitCode = conflicts === 0 ? 0 : 1
  }
}
