/**
 * The two backends the bridge tests run on: MemoryStore under the TestClock,
 * and PostgresStore on the test server (see test/globalSetup.ts), where
 * expiry follows the database's clock and time steps also wait for real.
 */
import { PgClient } from "@effect/sql-pg"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as PostgresStore from "../src/PostgresStore.js"

export interface Backend {
  readonly name: string
  readonly layer: Layer.Layer<KvStore.KvStore, unknown>
  /** Expiry follows the backend's own clock, so `advance` also sleeps. */
  readonly databaseClock: boolean
  /** A second app instance on the same data (its own pool on PostgreSQL), living as long as the scope. */
  readonly otherInstance: Effect.Effect<KvStore.Service, unknown, Scope.Scope | KvStore.KvStore>
}

const run = randomUUID().slice(0, 8)

/** A key prefix no other test, file or run uses. */
export const freshPrefix = (what: string): string => `${what}/${run}/${randomUUID().slice(0, 8)}/`

const postgresLayer = (table: string, applicationName: string) =>
  PostgresStore.layer({ table }).pipe(
    Layer.provide(PgClient.layer({ url: Redacted.make(inject("databaseUrl")), applicationName }))
  )

/** MemoryStore and PostgresStore (on a table of its own for `file`). */
export const backends = (file: string): ReadonlyArray<Backend> => {
  const table = `kv_${file}_${run}`
  return [
    {
      name: "MemoryStore",
      layer: MemoryStore.layer(),
      databaseClock: false,
      // in memory, "another instance" can only be another user of the same store
      otherInstance: KvStore.KvStore
    },
    {
      name: "PostgresStore",
      layer: postgresLayer(table, "effect-kv-test-a"),
      databaseClock: true,
      otherInstance: Effect.map(Layer.build(postgresLayer(table, "effect-kv-test-b")), Context.get(KvStore.KvStore))
    }
  ]
}

/** Waits in real time, clearing its timer when interrupted. */
export const sleepReal = (millis: number): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), millis)
    return Effect.sync(() => clearTimeout(timer))
  })

/** Moves time forward: the TestClock, and for a backend on its own clock the real one too. */
export const advance = (backend: Backend, duration: Duration.DurationInput): Effect.Effect<void> =>
  backend.databaseClock
    ? Effect.zipRight(TestClock.adjust(duration), sleepReal(Duration.toMillis(Duration.decode(duration))))
    : TestClock.adjust(duration)
