/**
 * The built declarations say what each public name does (issue 16): the
 * declaration files are emitted here, as `npm run build` emits them
 * (`tsconfig.build.json`, declarations only, into a scratch directory), and
 * each public entry's `.d.ts` is read back with the TypeScript parser (see
 * `declarationDocs.ts` for the rules). The emit takes tens of seconds on a
 * busy machine: it runs inside the test, with a generous timeout, not in a hook.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { declarationFileProblems, declarationProblems } from "./declarationDocs.js"

const repo = fileURLToPath(new URL("..", import.meta.url))
const run = promisify(execFile)

describe("built declarations", () => {
  it("catch the faults they are meant to catch", async () => {
    const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv-dts-rules-"))
    try {
      const file = path.join(tmp, "Sample.d.ts")
      await fs.writeFile(file, [
        "/**",
        " * @since 0.1.0",
        " */",
        "export declare const onlyTags: number;",
        "/**",
        " * A view.",
        " * @since 0.1.0",
        "/**",
        " * Typed values.",
        " * @since 0.1.0",
        " */",
        "export declare const swallowing: number;",
        "export declare const undocumented: number;",
        "/**",
        " * An in-process store backed by a `Ref`; see `internal/memoryDriver.ts`.",
        " * @since 0.2.0",
        " */",
        "export interface Lies {",
        "  readonly member: string;",
        "}",
        ""
      ].join("\n"))
      const problems = declarationFileProblems(file).join("\n")
      for (
        const expected of [
          "onlyTags's doc comment has only tags",
          "swallowing's doc comment swallowed another one",
          "undocumented has no doc comment",
          "Lies's doc says MemoryStore is backed by a Ref",
          "Lies's doc points at an internal module",
          "Lies's doc carries a @since other than 0.1.0",
          "Lies.member has no doc comment"
        ]
      ) assert.include(problems, expected)
    } finally {
      await fs.rm(tmp, { recursive: true, force: true })
    }
  })

  it("document every public name, truthfully", async () => {
    const out = await fs.mkdtemp(path.join(os.tmpdir(), "effect-kv-dts-"))
    try {
      await run(process.execPath, [
        path.join(repo, "node_modules", "typescript", "bin", "tsc"),
        "-p",
        path.join(repo, "tsconfig.build.json"),
        "--emitDeclarationOnly",
        "--declarationMap",
        "false",
        "--sourceMap",
        "false",
        "--outDir",
        out
      ], { cwd: repo, timeout: 280_000 })
      const files = (await fs.readdir(out)).filter((f) => f.endsWith(".d.ts"))
      assert.includeMembers(files, ["index.d.ts", "KvStore.d.ts", "KvDriver.d.ts", "MemoryStore.d.ts", "PostgresStore.d.ts"])
      assert.deepStrictEqual(declarationProblems(out), [])
    } finally {
      await fs.rm(out, { recursive: true, force: true })
    }
  }, 300_000)
})
