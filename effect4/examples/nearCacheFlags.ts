/**
 * Feature flags read on every request, through a near cache on PostgreSQL.
 *
 * Two app instances (two connection pools, as two processes would have)
 * share one table. Each wraps its store in `NearCache.layer()`, so a flag
 * read on a request is answered from memory: no round trip. An operator
 * flips the flag on instance A; instance B hears it by `LISTEN`/`NOTIFY` and
 * its next request sees the new value, within milliseconds.
 *
 *   DATABASE_URL=postgres://user:pw@localhost/app node scripts/effect4.mjs run examples/nearCacheFlags.ts
 *
 * (from the repository's top level: the Effect 4 line's Node 22, with the
 * package built by `npm run demo:effect4` or effect4/scripts/build.mjs). The
 * Effect 4 twin of the Effect 3 line's examples/nearCacheFlags.ts.
 */
import { PgClient } from "@effect/sql-pg"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { pathToFileURL } from "node:url"
import { KvStore, NearCache, PostgresStore } from "effect-kv"

const on = new TextEncoder().encode("on")
const isOn = (value: Option.Option<Uint8Array>) => Option.isSome(value) && new TextDecoder().decode(value.value) === "on"

/** What one request does with the flag: read it (from memory after the first read) and branch on it. */
const handleRequest = (store: KvStore.KvStore.Service, flag: string) =>
  Effect.map(store.getOption(flag), (value) => (isOn(value) ? "new checkout" : "old checkout"))

/** What the program observed. */
export interface Report {
  readonly requests: number
  readonly beforeFlip: string
  /** Milliseconds from A's write until B's next request saw it. */
  readonly seenAfterMillis: number
  readonly afterFlip: string
}

/** Instance B serves requests; instance A (an operator's tool) flips the flag once. */
export const program = (a: KvStore.KvStore.Service, b: KvStore.KvStore.Service, flag: string): Effect.Effect<Report, KvStore.KvError> =>
  Effect.gen(function*() {
    yield* a.delete(flag)
    let beforeFlip = ""
    const requests = 10_000
    const started = performance.now()
    for (let i = 0; i < requests; i++) beforeFlip = yield* handleRequest(b, flag)
    yield* Effect.log(`${requests} requests on B: ${beforeFlip}, ${((performance.now() - started) * 1000 / requests).toFixed(1)} µs per flag read`)

    yield* a.set(flag, on)
    const flipped = performance.now()
    let afterFlip = beforeFlip
    while (afterFlip === beforeFlip) {
      yield* Effect.sleep("1 millis")
      afterFlip = yield* handleRequest(b, flag)
    }
    const seenAfterMillis = performance.now() - flipped
    yield* Effect.log(`flipped on A; B's requests see "${afterFlip}" after ${seenAfterMillis.toFixed(1)} ms`)
    return { requests, beforeFlip, seenAfterMillis, afterFlip }
  })

/** One app instance: its own pool, its store, a near cache in front. */
const instance = (url: string, name: string) =>
  Effect.map(
    Layer.build(
      NearCache.layer().pipe(
        Layer.provide(PostgresStore.layer({ table: "feature_flags", notifyChanges: true })),
        Layer.provide(PgClient.layer({ url: Redacted.make(url), applicationName: name }))
      )
    ),
    Context.get(KvStore.KvStore)
  )

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // plain Node cannot load the repository's embedded server (a TypeScript program with .js imports): as the demo,
  // this runs on the server DATABASE_URL names; test/NearCache.test.ts runs `program` on memory
  const url = process.env["DATABASE_URL"]
  if (url === undefined) {
    console.log("set DATABASE_URL to run the feature-flag example on PostgreSQL")
    process.exit(0)
  }
  const report = await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const a = yield* instance(url, "flags-admin")
    const b = yield* instance(url, "flags-web")
    return yield* program(a, b, "flag:new-checkout")
  })))
  console.log(report)
}
