import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = fileURLToPath(new URL("./src/", import.meta.url))

export default defineConfig({
  resolve: {
    // tests may import the package by its name, as users do, without a build
    alias: [
      { find: /^effect-kv$/, replacement: `${src}index.ts` },
      { find: /^effect-kv\/(.+)$/, replacement: `${src}$1.ts` }
    ]
  },
  test: {
    include: ["test/**/*.test.ts"],
    // starts (or finds through DATABASE_URL) the PostgreSQL server the Postgres tests use
    globalSetup: ["test/globalSetup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000
  }
})
