import { Effect } from "effect"
import { KvStore, MemoryStore } from "effect-kv"

const program = Effect.gen(function*() {
  const store = yield* KvStore.KvStore
  yield* store.set("greeting", new TextEncoder().encode("hello"), "1 minute")
  const bytes = yield* store.get("greeting")
  console.log(new TextDecoder().decode(bytes)) // hello
  console.log(yield* store.increment("visits")) // 1
})

Effect.runPromise(program.pipe(Effect.provide(MemoryStore.layer())))
