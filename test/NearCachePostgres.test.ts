/**
 * `NearCache` on PostgreSQL with two app instances (two pools on one table):
 * a write on A reaches B's cache by `LISTEN`/`NOTIFY` (the measured latency is
 * printed), and after B's listening connection is terminated B never serves
 * a value older than `maxStaleness`. A `PostgresStore` with `notifyChanges:
 * false` offers no feed, so a near cache over it is refused.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as KvStore from "../src/KvStore.js"
import * as NearCache from "../src/NearCache.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { listenApplicationName } from "../src/internal/postgres/changes.js"

const run = randomUUID().slice(0, 8)
const table = `kv_nearcache_${run}`
const encoder = new TextEncoder()
const decoder = new TextDecoder()
const show = (value: Option.Option<Uint8Array>) => Option.match(value, { onNone: () => "none", onSome: (v) => decoder.decode(v) })

const pool = (applicationName: string) => PgClient.layer({ url: Redacted.make(inject("databaseUrl")), applicationName })

/** An app instance: its own pool, its store, and (unless `cache` is false) a near cache over it. */
const instance = (name: string, options: { readonly cache?: NearCache.Options | false; readonly store?: PostgresStore.Options } = {}) => {
  const applicationName = `effect-kv-nearcache-${name}-${run}`
  const store = PostgresStore.layer({ table, notifyChanges: true, ...options.store })
  const layer = options.cache === false ? store : NearCache.layer(options.cache).pipe(Layer.provide(store))
  return Effect.map(
    Layer.build(layer.pipe(Layer.provideMerge(pool(applicationName)))),
    (context) => ({ store: Context.get(context, KvStore.KvStore), sql: Context.get(context, SqlClient.SqlClient), applicationName })
  )
}

const sleepReal = (millis: number) =>
  Effect.async<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), millis)
    return Effect.sync(() => clearTimeout(timer))
  })

describe("NearCache on PostgreSQL, two instances", () => {
  it.scoped("a write on A reaches B's cache by the feed (TestClock: staleness cannot help)", () =>
    Effect.gen(function*() {
      const a = yield* instance("a", { cache: false })
      const b = yield* instance("b", { cache: { maxStaleness: "1 hour" } })
      const key = `flag/${run}`
      const latencies: Array<number> = []
      for (let i = 0; i < 20; i++) {
        yield* a.store.set(key, encoder.encode(`v${i}`))
        const started = performance.now()
        // a hit until the notification arrives; bounded generously, measured for the report
        for (;;) {
          if (show(yield* b.store.getOption(key)) === `v${i}`) break
          if (performance.now() - started > 10_000) assert.fail(`B never saw v${i}`)
          yield* sleepReal(1)
        }
        latencies.push(performance.now() - started)
      }
      latencies.sort((x, y) => x - y)
      console.log(
        `NearCache A→B on PostgreSQL: median ${latencies[10]!.toFixed(1)} ms, max ${latencies[19]!.toFixed(1)} ms over 20 writes`
      )
      // and B's reads are hits meanwhile: the cache holds the key
      yield* b.store.getOption(key)
    }), 60_000)

  it.live("after B's LISTEN connection is terminated, B never serves a value older than maxStaleness", () =>
    Effect.gen(function*() {
      const maxStaleness = 300
      const a = yield* instance("a2", { cache: false })
      const b = yield* instance("b2", { cache: { maxStaleness } })
      const key = `lost/${run}`
      yield* a.store.set(key, encoder.encode("v0"))
      assert.strictEqual(show(yield* b.store.getOption(key)), "v0")
      const killed = yield* a.sql<{ readonly pid: number }>`
        SELECT pg_terminate_backend(pid) AS killed, pid FROM pg_stat_activity
        WHERE application_name = ${listenApplicationName(b.applicationName)}`
      assert.isAbove(killed.length, 0, "B's listening connection was found")
      for (let i = 1; i <= 5; i++) {
        yield* a.store.set(key, encoder.encode(`v${i}`))
        const written = yield* Clock.currentTimeMillis
        // for a second and a half, every read that starts after written + maxStaleness must see v_i
        for (;;) {
          const startedAt = yield* Clock.currentTimeMillis
          const seen = show(yield* b.store.getOption(key))
          if (startedAt > written + maxStaleness) {
            assert.strictEqual(seen, `v${i}`, `${startedAt - written} ms after the write`)
          }
          if (startedAt > written + 1_500) break
          yield* sleepReal(10)
        }
      }
    }).pipe(Effect.scoped), 60_000)

  it.scoped("a PostgresStore without notifications (notifyChanges: false) is refused: a near cache needs a feed", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(instance("quiet", { store: { notifyChanges: false } }))
      assert.instanceOf(error, KvStore.KvError)
      assert.strictEqual((error as KvStore.KvError).reason, "InvalidArgument")
      assert.strictEqual((error as KvStore.KvError).op, "layer")
      assert.include((error as KvStore.KvError).message, "change feed")
    }))
})
