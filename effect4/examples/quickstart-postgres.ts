import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { KvStore, PostgresStore } from "effect-kv"

const program = Effect.gen(function*() {
  const store = yield* KvStore.KvStore
  yield* store.set("greeting", new TextEncoder().encode("hello"), "1 minute")
  console.log(new TextDecoder().decode(yield* store.get("greeting"))) // hello
  console.log(yield* store.increment("visits")) // 1, 2, … shared by every instance
})

const Pg = PgClient.layer({
  url: Redacted.make(process.env["DATABASE_URL"] ?? "postgres://localhost/postgres"),
  maxMessageSize: 80 * 1024 * 1024 // read back values up to effect-kv's 64 MiB
})

Effect.runPromise(program.pipe(Effect.provide(PostgresStore.layer().pipe(Layer.provide(Pg)))))
