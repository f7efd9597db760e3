/**
 * An existing `KeyValueStore` program (from `@effect/platform`) moved to
 * effect-kv by changing one layer.
 *
 * `visitCounter` below is written against `KeyValueStore` only, as many
 * programs are. It used to run on `KeyValueStore.layerMemory`; giving it
 * `KvKeyValueStore.layer()` instead stores its data in the `KvStore` — on
 * PostgreSQL, shared by every instance — and makes its `modify` atomic, so
 * concurrent visits are all counted.
 *
 * Shows: 20 concurrent visits counted exactly, a typed (`forSchema`) profile
 * read back, and `size` counting only this program's keys.
 *
 * The program needs only `KvStore`; the backend is chosen by whoever runs it.
 */
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { KvKeyValueStore, type KvStore } from "effect-kv"

const Profile = Schema.Struct({ name: Schema.String, visits: Schema.Number })

/** The existing program: it knows nothing of effect-kv. */
const visitCounter = Effect.gen(function*() {
  const kv = yield* KeyValueStore.KeyValueStore
  yield* kv.set("visits", "0")
  yield* Effect.all(
    Array.from({ length: 20 }, () => kv.modify("visits", (n) => String(Number(n) + 1))),
    { concurrency: "unbounded", discard: true }
  )
  const visits = Number(Option.getOrElse(yield* kv.get("visits"), () => "0"))
  const profiles = kv.forSchema(Profile)
  yield* profiles.set("profile:ada", { name: "Ada", visits })
  return { visits, profile: yield* profiles.get("profile:ada"), size: yield* kv.size }
})

/** What the KeyValueStore program observed. */
export interface KeyValueStoreReport {
  readonly visits: number
  readonly profileName: string | undefined
  readonly size: number
}

export const program = (prefix: string): Effect.Effect<KeyValueStoreReport, never, KvStore.KvStore> =>
  visitCounter.pipe(
    // was: Effect.provide(KeyValueStore.layerMemory)
    Effect.provide(KvKeyValueStore.layer({ prefix })),
    Effect.tap(({ size, visits }) =>
      Effect.log(`20 concurrent visits -> counted ${visits}; ${size} keys under the program's prefix`)
    ),
    Effect.map(({ profile, size, visits }) => ({
      visits,
      profileName: Option.getOrUndefined(Option.map(profile, (p) => p.name)),
      size
    })),
    Effect.orDie
  )
