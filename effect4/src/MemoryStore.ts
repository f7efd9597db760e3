/**
 * An in-process `KvStore`: entries in memory, expiry on the Effect `Clock`
 * (so `TestClock` drives it), a sweeper fiber in the scope and an optional
 * least-recently-used bound.
 *
 * @since 0.1.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import type * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { MEMORY_STORE_OPTIONS, optionsProblem } from "./core/options.js"
import { makeMemoryDriver } from "./internal/memoryDriver.js"
import { unwrapConfig } from "./internal/options.js"
import * as KvStore from "./KvStore.js"

/**
 * Options of `layer`, `make` and `layerConfig`. Checked when the store is
 * built: an unknown name or a value of the wrong type fails with `KvError`
 * (`InvalidArgument`, op `"layer"`) naming the option.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The sweeper fiber's period, default 1 minute: a positive, finite duration (a number is milliseconds). */
  readonly cleanupInterval?: Duration.Input | undefined
  /** An optional bound on the number of entries: a positive integer; the least recently used go first. */
  readonly maxEntries?: number | undefined
  /** Keep keys out of errors and spans (see `KvStore.MakeOptions`). Default `false`. */
  readonly redactKeys?: boolean | undefined
}

const DEFAULT_CLEANUP_INTERVAL = Duration.minutes(1)

const makeFor = (
  where: string,
  options: Options | undefined
): Effect.Effect<KvStore.Service, KvStore.KvError, Scope.Scope> =>
  Effect.suspend(() => {
    const problem = optionsProblem(where, options, MEMORY_STORE_OPTIONS)
    if (problem !== undefined) return Effect.fail(KvStore.KvError.invalidArgument("layer", problem))
    const maxEntries = options?.maxEntries
    if (maxEntries !== undefined && !(Number.isSafeInteger(maxEntries) && maxEntries > 0)) {
      return Effect.fail(KvStore.KvError.invalidArgument(
        "layer",
        `Invalid MemoryStore option: maxEntries must be a positive integer, got ${maxEntries}`
      ))
    }
    const driver = makeMemoryDriver(maxEntries)
    // added before the front's own finalizers, so it runs after them: watchers outliving the store are ended
    return Effect.andThen(
      Effect.addFinalizer(() => driver.close),
      KvStore.make(driver, {
        cleanupInterval: options?.cleanupInterval ?? DEFAULT_CLEANUP_INTERVAL,
        redactKeys: options?.redactKeys
      })
    )
  })

/**
 * Builds a memory-backed store and forks its sweeper into the scope; closing
 * the scope stops it. Fails with `KvError` (`InvalidArgument`, op `"layer"`)
 * only for invalid options: an unknown name or a value of the wrong type,
 * a `maxEntries` that is not a positive integer, a `cleanupInterval` that is
 * not a positive finite duration.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options?: Options): Effect.Effect<KvStore.Service, KvStore.KvError, Scope.Scope> =>
  makeFor("MemoryStore.make", options)

/**
 * Provides `KvStore` in memory, for one process (tests, a single instance, a
 * cache). With `maxEntries`, writing a new key beyond the bound evicts the
 * least recently used entry (`get`, `set` and `update` count as use, `keys`
 * does not). Fails with `KvError` (`InvalidArgument`, op `"layer"`) only for
 * invalid options (see `make`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<KvStore.KvStore, KvStore.KvError> =>
  Layer.effect(KvStore.KvStore, makeFor("MemoryStore.layer", options))

/**
 * Like `layer`, with the options read from `Config`, e.g.
 * `MemoryStore.layerConfig({ maxEntries: Config.integer("KV_MAX_ENTRIES") })`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Wrap<Options>
): Layer.Layer<KvStore.KvStore, KvStore.KvError | Config.ConfigError> =>
  Layer.unwrap(Effect.map(
    unwrapConfig("MemoryStore.layerConfig", config, MEMORY_STORE_OPTIONS),
    (options) => Layer.effect(KvStore.KvStore, makeFor("MemoryStore.layerConfig", options))
  ))
