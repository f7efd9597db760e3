/**
 * The Effect 4 line in one run: the store on memory, then on PostgreSQL when DATABASE_URL
 * names a server, with Effect 4's own KeyValueStore served by effect-kv.
 *
 *   npm run demo:effect4                      (from the repository's top level; builds first)
 *   DATABASE_URL=postgres://… npm run demo:effect4
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { KeyValueStore } from "effect/persistence"
import { KvKeyValueStore, KvStore, MemoryStore, PostgresStore } from "effect-kv"

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)

const tour = (backend: string) =>
  Effect.gen(function*() {
    const store = yield* KvStore.KvStore
    console.log(`\n— effect-kv 2.x on Effect 4, ${backend}`)
    yield* store.set("demo4/greeting", new TextEncoder().encode("hello"), "1 minute")
    console.log("get:", text(yield* store.get("demo4/greeting")))
    yield* Effect.all(Array.from({ length: 20 }, () => store.increment("demo4/visits")), { concurrency: "unbounded" })
    console.log("20 concurrent increments:", text(yield* store.get("demo4/visits")))
    console.log("keys:", yield* store.keys("demo4/"))
    const kv = yield* KeyValueStore.KeyValueStore
    yield* kv.set("note", "stored through Effect 4's KeyValueStore")
    console.log("KeyValueStore.get:", yield* kv.get("note"))
    yield* store.deletePrefix("demo4/")
    yield* kv.clear
  })

const bridge = KvKeyValueStore.layer({ prefix: "demo4/kv/" })

const memory = tour("MemoryStore").pipe(Effect.provide(bridge.pipe(Layer.provideMerge(MemoryStore.layer()))))

const url = process.env["DATABASE_URL"]
const postgres = url === undefined
  ? Effect.sync(() => console.log("\n(set DATABASE_URL to run the same tour on PostgreSQL)"))
  : tour("PostgresStore").pipe(
    Effect.provide(bridge.pipe(
      Layer.provideMerge(PostgresStore.layer({ table: "kv_demo4" })),
      Layer.provide(PgClient.layer({ url: Redacted.make(url) }))
    ))
  )

Effect.runPromise(Effect.andThen(memory, postgres)).catch((error) => {
  console.error(error)
  process.exit(1)
})
