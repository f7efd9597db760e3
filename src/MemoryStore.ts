/**
 * An in-process `KvStore`: entries in a `Ref`, expiry on the Effect `Clock`
 * (so `TestClock` drives it), a sweeper fiber in the layer's scope and an
 * optional least-recently-used bound.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Layer from "effect/Layer"
import type { KvError, KvStore } from "./KvStore.js"
import * as internal from "./internal/memoryStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The sweeper fiber's period, default 1 minute: a positive, finite duration. */
  readonly cleanupInterval?: Duration.DurationInput | undefined
  /** An optional bound on the number of entries: a positive integer; the least recently used go first. */
  readonly maxEntries?: number | undefined
}

/**
 * Provides `KvStore` in memory. `cleanupInterval` (default 1 minute) is the
 * period of the fiber that sweeps expired entries; it stops when the layer's
 * scope closes. With `maxEntries`, writing a new key beyond the bound evicts
 * the least recently used entry (`get`, `set` and `update` count as use,
 * `keys` does not). Fails with `KvError` (`InvalidArgument`, op `"layer"`)
 * only for invalid options: `maxEntries` must be a positive integer and
 * `cleanupInterval` a positive finite duration.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: (options?: Options) => Layer.Layer<KvStore, KvError> = internal.layer
