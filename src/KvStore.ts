/**
 * The key-value store contract: the `KvStore` service tag, its errors and
 * module-level accessors. Backends (`MemoryStore`, `PostgresStore`) provide it.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Option from "effect/Option"

/**
 * What every backend offers. Values are bytes; keys are strings of 1 to 2048
 * UTF-8 bytes without NUL or lone surrogates. A TTL of `undefined`, `0`,
 * `Duration.zero` or `Duration.infinity` means the entry never expires.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** The live value of `key`, or `NotFound` when it is missing or expired. */
  get(key: string): Effect.Effect<Uint8Array, NotFound | KvError>
  /** Writes `value`, replacing the entry and its expiry. */
  set(key: string, value: Uint8Array, ttl?: Duration.DurationInput): Effect.Effect<void, KvError>
  /** Removes `key`; `true` when a live entry was removed. */
  delete(key: string): Effect.Effect<boolean, KvError>
  /**
   * Atomic read-modify-write: `f` sees the current value (`Option.none()` when
   * missing or expired) while no other writer can change `key`; what it returns
   * is written with `ttl` and returned. If `f` fails or the fiber is
   * interrupted, nothing is written.
   */
  update<E = never, R = never>(
    key: string,
    f: (current: Option.Option<Uint8Array>) => Effect.Effect<Uint8Array, E, R>,
    ttl?: Duration.DurationInput
  ): Effect.Effect<Uint8Array, E | KvError, R>
  /** The live keys starting with `prefix`, sorted by Unicode code point. */
  keys(prefix: string): Effect.Effect<ReadonlyArray<string>, KvError>
  /** Removes expired entries now; succeeds with how many were removed. */
  readonly cleanup: Effect.Effect<number, KvError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class KvStore extends Context.Tag("effect-kv/KvStore")<KvStore, Service>() {}

type Service_ = Service

/**
 * @since 0.1.0
 */
export declare namespace KvStore {
  /**
   * @since 0.1.0
   * @category models
   */
  export type Service = Service_
}

/**
 * The key is missing or its entry has expired.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotFound extends Data.TaggedError("NotFound")<{ readonly key: string }> {
  override get message(): string {
    return `No live entry for key ${JSON.stringify(this.key)}`
  }
}

/**
 * Everything that can go wrong besides a missing key: `InvalidArgument` is the
 * caller's mistake (bad key, TTL or option; nothing was changed), `Backend` is
 * the store's trouble (connection lost, SQL error, ...).
 *
 * @since 0.1.0
 * @category errors
 */
export class KvError extends Data.TaggedError("KvError")<{
  readonly reason: "InvalidArgument" | "Backend"
  readonly op: string
  readonly key?: string
  readonly cause?: unknown
  readonly message: string
}> {}

/**
 * @since 0.1.0
 * @category accessors
 */
export const get = (key: string): Effect.Effect<Uint8Array, NotFound | KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.get(key))

/**
 * @since 0.1.0
 * @category accessors
 */
export const set = (
  key: string,
  value: Uint8Array,
  ttl?: Duration.DurationInput
): Effect.Effect<void, KvError, KvStore> => Effect.flatMap(KvStore, (store) => store.set(key, value, ttl))

const delete_ = (key: string): Effect.Effect<boolean, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.delete(key))

export {
  /**
   * @since 0.1.0
   * @category accessors
   */
  delete_ as delete
}

/**
 * @since 0.1.0
 * @category accessors
 */
export const update = <E = never, R = never>(
  key: string,
  f: (current: Option.Option<Uint8Array>) => Effect.Effect<Uint8Array, E, R>,
  ttl?: Duration.DurationInput
): Effect.Effect<Uint8Array, E | KvError, R | KvStore> => Effect.flatMap(KvStore, (store) => store.update(key, f, ttl))

/**
 * @since 0.1.0
 * @category accessors
 */
export const keys = (prefix: string): Effect.Effect<ReadonlyArray<string>, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.keys(prefix))

/**
 * @since 0.1.0
 * @category accessors
 */
export const cleanup: Effect.Effect<number, KvError, KvStore> = Effect.flatMap(KvStore, (store) => store.cleanup)
