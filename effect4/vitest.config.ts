import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = fileURLToPath(new URL("./src/", import.meta.url))

export default defineConfig({
  resolve: {
    alias: [
      // tests may import the package by its name, as users do, without a build
      { find: /^effect-kv$/, replacement: `${src}index.ts` },
      { find: /^effect-kv\/(.+)$/, replacement: `${src}$1.ts` }
    ],
    // Effect 4 only: a file outside this folder (the shared src/core, ../dev) must never
    // reach the Effect 3 packages of the repository's top-level node_modules
    dedupe: ["effect", "@effect/sql-pg", "@effect/vitest", "vitest"],
    // src/core is a link to ../src/core: keep the path inside this package
    preserveSymlinks: true
  },
  test: {
    include: ["test/**/*.test.ts"],
    // starts (or finds through DATABASE_URL) the PostgreSQL server the Postgres tests use
    globalSetup: ["test/globalSetup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000
  }
})
