/**
 * Live config reload with `watch`: the app reads its config from memory (a
 * `SubscriptionRef`), and one fiber keeps that copy current by watching the
 * config's key. An operator's write is live in every instance watching the
 * store, with no polling and no restart.
 *
 * A config that does not decode (not JSON, or not of the schema's shape) is
 * refused and the last good one stays in force; a deleted config falls back
 * to the defaults. `watch` emits the current value first, so the reloader
 * needs no separate initial read, and under a burst of writes it may skip
 * intermediate values, never the last one.
 *
 * Shows: the stored config loaded at start; a write applied live; a broken
 * write refused (the previous config kept); a delete falling back to defaults.
 *
 *   node scripts/effect4.mjs run examples/configReload.ts   (from the repository's top level)
 *
 * The program needs only `KvStore`; the backend is chosen by whoever runs it.
 * The Effect 4 twin of the Effect 3 line's examples/configReload.ts.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import { pathToFileURL } from "node:url"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { KvStore, MemoryStore } from "effect-kv"

export const AppConfig = Schema.Struct({
  greeting: Schema.String,
  maxUploadMb: Schema.Int.check(Schema.isGreaterThan(0))
})
export type AppConfig = typeof AppConfig.Type

const defaults: AppConfig = { greeting: "hello", maxUploadMb: 10 }

const decodeConfig = Schema.decodeUnknownResult(Schema.fromJsonString(AppConfig))
const encodeConfig = (config: AppConfig) => new TextEncoder().encode(JSON.stringify(config))

/** What the app sees: the config in force, and how many writes were applied or refused. */
export interface LiveConfig {
  readonly config: AppConfig
  readonly applied: number
  readonly refused: number
}

/**
 * A live copy of the config stored under `key`, kept current in the scope by
 * a fiber watching the key. Fails with `KvError` when the store cannot watch
 * (e.g. it has no change feed).
 */
export const liveConfig = (key: string) =>
  Effect.gen(function*() {
    const ref = yield* SubscriptionRef.make<LiveConfig>({ config: defaults, applied: 0, refused: 0 })
    const apply = (stored: Option.Option<Uint8Array>) =>
      SubscriptionRef.update(ref, (live): LiveConfig => {
        if (Option.isNone(stored)) return { ...live, config: defaults, applied: live.applied + 1 }
        const decoded = decodeConfig(new TextDecoder().decode(stored.value))
        return Result.isSuccess(decoded)
          ? { ...live, config: decoded.success, applied: live.applied + 1 }
          : { ...live, refused: live.refused + 1 }
      })
    const loaded = yield* Deferred.make<void, KvStore.KvError>()
    // the first value `watch` emits is the current one: once it is applied, the copy is loaded
    yield* KvStore.watch(key).pipe(
      Stream.runForEach((stored) => Effect.andThen(apply(stored), Deferred.succeed(loaded, undefined))),
      // before loading: the caller gets the error; after: the last config stays in force, and we say why
      Effect.catch((error) =>
        Effect.flatMap(Deferred.fail(loaded, error), (beforeLoading) =>
          beforeLoading ? Effect.void : Effect.logWarning(`config watch ended: ${error.message}`))
      ),
      Effect.forkScoped
    )
    yield* Deferred.await(loaded)
    return ref
  })

/** Waits until the live copy satisfies `done` (bounded: a demo must not hang). */
const until = (ref: SubscriptionRef.SubscriptionRef<LiveConfig>, done: (live: LiveConfig) => boolean) =>
  SubscriptionRef.changes(ref).pipe(
    Stream.filter(done),
    Stream.runHead,
    Effect.map(Option.getOrThrow),
    Effect.timeoutOrElse({ duration: "5 seconds", orElse: () => Effect.die(new Error("the config was not reloaded in 5 seconds")) })
  )

/** What the config-reload program observed; `feed: false` when the store has no change feed. */
export type ConfigReloadReport =
  | { readonly feed: false; readonly why: string }
  | {
    readonly feed: true
    readonly atStart: AppConfig
    readonly afterWrite: AppConfig
    readonly afterBrokenWrite: AppConfig
    readonly refused: number
    readonly afterDelete: AppConfig
  }

export const program = (prefix: string): Effect.Effect<ConfigReloadReport, KvStore.KvError, KvStore.KvStore> =>
  Effect.scoped(Effect.gen(function*() {
    const key = `${prefix}config`
    yield* KvStore.set(key, encodeConfig({ greeting: "hi", maxUploadMb: 20 }))
    const live = yield* liveConfig(key)
    const atStart = (yield* SubscriptionRef.get(live)).config
    yield* Effect.log(`loaded at start: ${JSON.stringify(atStart)}`)

    // an operator changes the config: the app sees it without a restart
    yield* KvStore.set(key, encodeConfig({ greeting: "bonjour", maxUploadMb: 50 }))
    const afterWrite = (yield* until(live, (l) => l.config.greeting === "bonjour")).config
    yield* Effect.log(`after a write: ${JSON.stringify(afterWrite)}`)

    // a broken config is refused; the one in force stays
    yield* KvStore.set(key, new TextEncoder().encode(`{"greeting":"oops","maxUploadMb":-1}`))
    const afterBroken = yield* until(live, (l) => l.refused === 1)
    yield* Effect.log(`after a broken write (refused): ${JSON.stringify(afterBroken.config)}`)

    // deleted: back to the defaults
    yield* KvStore.delete(key)
    const afterDelete = (yield* until(live, (l) => l.config.greeting === defaults.greeting)).config
    yield* Effect.log(`after delete, the defaults: ${JSON.stringify(afterDelete)}`)

    return {
      feed: true as const,
      atStart,
      afterWrite,
      afterBrokenWrite: afterBroken.config,
      refused: afterBroken.refused,
      afterDelete
    }
  })).pipe(
    // a store without a change feed refuses watch with InvalidArgument: say so instead of failing
    Effect.catchIf(
      (error) => error.reason === "InvalidArgument" && error.op === "watch",
      (error) => Effect.as(Effect.log(`not shown: ${error.message}`), { feed: false as const, why: error.message })
    )
  )

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  Effect.runPromise(program("demo:").pipe(Effect.provide(MemoryStore.layer()))).then(
    (report) => console.log(report),
    (error) => {
      console.error(error)
      process.exit(1)
    }
  )
}
