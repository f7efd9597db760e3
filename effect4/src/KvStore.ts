/**
 * The key-value store contract: the `KvStore` service tag, its errors, the
 * `Driver` interface a backend implements, `make` (the one front every
 * backend shares) and module-level accessors.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import type * as Option from "effect/Option"
import type * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as rateLimit from "./core/rateLimit.js"
import * as front from "./internal/front.js"
import * as keyedLock from "./internal/keyedLock.js"
import * as prefixedView from "./internal/prefixed.js"
import * as schemaStore from "./internal/schemaStore.js"

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
  set(key: string, value: Uint8Array, ttl?: Duration.Input): Effect.Effect<void, KvError>
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
    ttl?: Duration.Input
  ): Effect.Effect<Uint8Array, E | KvError, R>
  /** The live keys starting with `prefix`, sorted by Unicode code point. */
  keys(prefix: string): Effect.Effect<ReadonlyArray<string>, KvError>
  /** Removes expired entries now; succeeds with how many were removed. */
  readonly cleanup: Effect.Effect<number, KvError>

  /** The live value of `key`, or `Option.none()` when it is missing or expired. */
  getOption(key: string): Effect.Effect<Option.Option<Uint8Array>, KvError>
  /** `true` when `key` has a live entry. */
  has(key: string): Effect.Effect<boolean, KvError>
  /** Writes `value` only when `key` is missing or expired; `true` when it wrote. */
  setIfAbsent(key: string, value: Uint8Array, ttl?: Duration.Input): Effect.Effect<boolean, KvError>
  /**
   * Adds `by` (default 1, a safe integer) to the integer stored as decimal
   * text under `key` (missing or expired counts as 0) and returns the new value.
   * `ttl` applies only when the increment creates the entry.
   */
  increment(key: string, options?: IncrementOptions): Effect.Effect<number, KvError>
  /** The time `key` has left (`Option.none()`: never expires), or `NotFound`. */
  timeToLive(key: string): Effect.Effect<Option.Option<Duration.Duration>, NotFound | KvError>
  /** Replaces a live entry's expiry, keeping its value; `true` when the key was live. */
  expire(key: string, ttl?: Duration.Input): Effect.Effect<boolean, KvError>

  /**
   * The live values of `keys`, one `Option` per key in input order (duplicates
   * allowed). Every key is checked first; an empty input is `[]` without I/O.
   */
  getMany(keys: Iterable<string>): Effect.Effect<ReadonlyArray<Option.Option<Uint8Array>>, KvError>
  /**
   * Writes every entry with `ttl`, all or nothing; when a key appears twice
   * the last value wins. Every key and value is checked before anything is written.
   */
  setMany(entries: Iterable<readonly [key: string, value: Uint8Array]>, ttl?: Duration.Input): Effect.Effect<void, KvError>
  /** Removes `keys`; how many live entries were removed. */
  deleteMany(keys: Iterable<string>): Effect.Effect<number, KvError>
  /**
   * Removes the live keys starting with `prefix` (`""`: all), in bounded
   * batches; how many were removed. Keys written meanwhile may survive.
   */
  deletePrefix(prefix: string): Effect.Effect<number, KvError>
  /** How many live keys start with `prefix` (`""`: all). */
  count(prefix: string): Effect.Effect<number, KvError>
  /**
   * The live keys starting with `prefix`, in code point order, read lazily one
   * page (`batchSize`, default 1000) at a time. A key live and unchanged for
   * the whole stream appears exactly once; never a duplicate, never a step back.
   */
  streamKeys(prefix: string, options?: StreamOptions): Stream.Stream<string, KvError>
  /** Like `streamKeys`, with each key's value. */
  streamEntries(prefix: string, options?: StreamOptions): Stream.Stream<readonly [key: string, value: Uint8Array], KvError>
}

/**
 * @since 0.2.0
 * @category models
 */
export interface StreamOptions {
  /** Keys read per round trip: a positive integer, default 1000. */
  readonly batchSize?: number | undefined
}

/**
 * @since 0.2.0
 * @category models
 */
export interface IncrementOptions {
  /** The amount to add, a safe integer (0 and negatives allowed). Default 1. */
  readonly by?: number | undefined
  /** The expiry of an entry this increment creates; a live entry keeps its own. */
  readonly ttl?: Duration.Input | undefined
}

/**
 * @since 0.1.0
 * @category tags
 */
export class KvStore extends Context.Service<KvStore, Service>()("effect-kv/KvStore") {}

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
 * caller's mistake (bad key, TTL, value or option; nothing was changed),
 * `Backend` is the store's trouble (connection lost, SQL error, ...).
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
}> {
  /**
   * @since 0.2.0
   */
  static invalidArgument(op: string, message: string, key?: string): KvError {
    return new KvError({ reason: "InvalidArgument", op, message, ...(key === undefined ? {} : { key }) })
  }
  /**
   * @since 0.2.0
   */
  static backend(op: string, message: string, cause: unknown, key?: string): KvError {
    return new KvError({ reason: "Backend", op, message, cause, ...(key === undefined ? {} : { key }) })
  }
}

// ---------------------------------------------------------------------------
// Drivers
// ---------------------------------------------------------------------------

/**
 * A driver's failure: `Backend` for its own trouble, `InvalidArgument` when the
 * stored data does not allow the operation (e.g. `increment` of text that is
 * not an integer). The front turns it into a `KvError` naming the operation
 * and the key.
 *
 * @since 0.2.0
 * @category errors
 */
export class DriverError extends Data.TaggedError("DriverError")<{
  readonly reason: "InvalidArgument" | "Backend"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * A live entry as a driver reads it: its bytes and the milliseconds it has
 * left (`undefined`: never expires).
 *
 * @since 0.2.0
 * @category drivers
 */
export interface Entry {
  readonly value: Uint8Array
  readonly expiresIn: number | undefined
}

/**
 * What `Driver.modify` writes: nothing (`Keep`), or `value` with a TTL in
 * milliseconds (`undefined`: never expires; `"unchanged"`: the entry's current
 * expiry, or none when the entry is new).
 *
 * @since 0.2.0
 * @category drivers
 */
export type Write =
  | { readonly _tag: "Keep" }
  | { readonly _tag: "Put"; readonly value: Uint8Array; readonly ttl: number | "unchanged" | undefined }

/**
 * The primitive operations a backend implements. Every argument has been
 * checked by the front: keys and prefixes are valid, values are private
 * copies the driver may keep, TTLs are positive milliseconds or `undefined`
 * (never expires). Bytes a driver returns are copied by the front before a
 * caller sees them. Missing and expired are the same thing everywhere.
 *
 * Atomicity: within one process the front runs every `modify` of a key under
 * a per-key lock, and makes writes of a locked key wait for it. A driver
 * shared by several processes must also make `modify` atomic across them (a
 * transaction, a lock) and its writes wait for a `modify` of the same key in
 * flight elsewhere. A driver that keeps its state in this process passes the
 * lock it checks in the same synchronous step as each write (`lock`): a check
 * by the front and a write by the driver in two steps could let an update slip
 * in between; the front then leaves the waiting to the driver.
 *
 * The optional operations are native fast paths; without them the front
 * derives the operation from `modify` or `get`.
 *
 * @since 0.2.0
 * @category drivers
 */
export interface Driver {
  /** The backend's name in error messages, e.g. `"PostgreSQL"`. */
  readonly name: string
  /** The per-key lock the driver's own writes wait for (see above); by default the front makes its own. */
  readonly lock?: KeyedLock | undefined
  readonly get: (key: string) => Effect.Effect<Option.Option<Uint8Array>, DriverError>
  readonly set: (key: string, value: Uint8Array, ttl: number | undefined) => Effect.Effect<void, DriverError>
  /** `true` when a live entry was removed. */
  readonly delete: (key: string) => Effect.Effect<boolean, DriverError>
  /**
   * Atomic read-modify-write: `f` sees the live entry and decides what to
   * write. If `f` fails (its error must come out unchanged) or the fiber is
   * interrupted, nothing is written.
   */
  readonly modify: <A, E, R>(
    key: string,
    f: (current: Option.Option<Entry>) => Effect.Effect<readonly [A, Write], E, R>
  ) => Effect.Effect<A, E | DriverError, R>
  /** The live keys starting with `prefix` (`""`: all), sorted by code point. */
  readonly keys: (prefix: string) => Effect.Effect<ReadonlyArray<string>, DriverError>
  /** Removes expired entries; how many. */
  readonly cleanup: Effect.Effect<number, DriverError>
  /** The scheduled sweep, when it differs from `cleanup` (e.g. gated between instances). */
  readonly sweep?: Effect.Effect<number, DriverError> | undefined

  readonly has?: ((key: string) => Effect.Effect<boolean, DriverError>) | undefined
  /** `Option.none()`: missing; `Option.some(undefined)`: never expires; else milliseconds left. */
  readonly timeToLive?: ((key: string) => Effect.Effect<Option.Option<number | undefined>, DriverError>) | undefined
  readonly setIfAbsent?:
    | ((key: string, value: Uint8Array, ttl: number | undefined) => Effect.Effect<boolean, DriverError>)
    | undefined
  /** Fails with `InvalidArgument` when the stored value is not canonical decimal text or the result is unsafe. */
  readonly increment?:
    | ((key: string, by: number, ttl: number | undefined) => Effect.Effect<number, DriverError>)
    | undefined
  readonly expire?: ((key: string, ttl: number | undefined) => Effect.Effect<boolean, DriverError>) | undefined

  /**
   * Up to `limit` live keys starting with `prefix` (`""`: all) and greater than
   * `after` (when given), ascending by code point: the page primitive of
   * `streamKeys`, `count` and `deletePrefix`. Fewer than `limit` only when no
   * more keys follow. Cost should follow the page, not the store's size.
   */
  readonly keysPage: (
    prefix: string,
    after: string | undefined,
    limit: number
  ) => Effect.Effect<ReadonlyArray<string>, DriverError>
  /** Like `keysPage`, with the values; by default `keysPage` then `getMany` (keys gone meanwhile are left out). */
  readonly entriesPage?:
    | ((
      prefix: string,
      after: string | undefined,
      limit: number
    ) => Effect.Effect<ReadonlyArray<readonly [string, Uint8Array]>, DriverError>)
    | undefined
  /** Distinct keys (at least one) → one answer per key, in the same order. */
  readonly getMany?: ((keys: ReadonlyArray<string>) => Effect.Effect<ReadonlyArray<Option.Option<Uint8Array>>, DriverError>) | undefined
  /**
   * Distinct keys (at least one), sorted by code point; all or nothing. Without
   * it the front writes the entries one by one with `set`, which is all or
   * nothing only as far as the checks go: a backend failure half-way leaves the
   * entries before it written.
   */
  readonly setMany?:
    | ((entries: ReadonlyArray<readonly [string, Uint8Array]>, ttl: number | undefined) => Effect.Effect<void, DriverError>)
    | undefined
  /** Distinct keys (at least one), sorted by code point → live entries removed. */
  readonly deleteMany?: ((keys: ReadonlyArray<string>) => Effect.Effect<number, DriverError>) | undefined
  /** Live entries removed, in bounded batches. Without it: `keysPage` then `deleteMany`, page by page. */
  readonly deletePrefix?: ((prefix: string) => Effect.Effect<number, DriverError>) | undefined
  /** Live keys under `prefix`. Without it: `keysPage`, page by page. */
  readonly count?: ((prefix: string) => Effect.Effect<number, DriverError>) | undefined
  /**
   * One step of `KvRateLimiter` on `key`, decided atomically on the backend's
   * own clock, so that app instances whose clocks disagree never over-admit
   * between them. It must compute what `RateLimitRequest`'s doc says (the
   * arithmetic of `@effect/experimental`'s `layerStoreMemory`), keep the state
   * as JSON text under `key` with a TTL, and fail with `InvalidArgument` when
   * `key` holds a live value that is not such a state. Without it the front
   * runs the same step inside `modify` on the Effect `Clock`.
   */
  readonly rateLimit?:
    | ((key: string, request: RateLimitRequest) => Effect.Effect<RateLimitAnswer, DriverError>)
    | undefined
}

/**
 * One call of a rate limiter (`KvRateLimiter`) as a driver's `rateLimit` receives it.
 *
 * @since 0.3.0
 * @category drivers
 */
export type RateLimitRequest = rateLimit.RateLimitRequest

/**
 * What a driver's `rateLimit` answers.
 *
 * @since 0.3.0
 * @category drivers
 */
export type RateLimitAnswer = rateLimit.RateLimitAnswer

/**
 * A FIFO lock per key that also knows whether the current fiber runs inside
 * a hold of it (to refuse, instead of deadlock on, a write of a key from
 * inside its own update).
 *
 * @since 0.2.0
 * @category drivers
 */
export type KeyedLock = keyedLock.KeyedLock

/**
 * A fresh per-key lock, for drivers without transactions.
 *
 * @since 0.2.0
 * @category drivers
 */
export const makeKeyedLock = (): KeyedLock => keyedLock.makeKeyedLock()

/**
 * @since 0.2.0
 * @category models
 */
export interface MakeOptions {
  /** Run the driver's sweep (or `cleanup`) on this period in the current scope. Default: never. */
  readonly cleanupInterval?: Duration.Input | undefined
  /**
   * Keep keys out of errors and spans: `KvError.key`, `NotFound.key` and
   * messages say `"[redacted]"` instead, for stores whose keys are secrets
   * (session ids, tokens). Default `false`.
   */
  readonly redactKeys?: boolean | undefined
}

/**
 * Builds the `Service` over a driver: argument checks in one order, TTL
 * decoding, copies of values in and out, the per-key lock and the guard
 * against writing a key from inside its own update, errors and spans, and
 * the sweep schedule (forked into the scope). Fails with `KvError`
 * (`InvalidArgument`, op `"layer"`) for invalid options.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = (driver: Driver, options?: MakeOptions): Effect.Effect<Service, KvError, Scope.Scope> =>
  front.make(driver, options) // called late: front.ts imports this module's classes

// ---------------------------------------------------------------------------
// Accessors
// ---------------------------------------------------------------------------

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
  ttl?: Duration.Input
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
  ttl?: Duration.Input
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

/**
 * @since 0.2.0
 * @category accessors
 */
export const getOption = (key: string): Effect.Effect<Option.Option<Uint8Array>, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.getOption(key))

/**
 * @since 0.2.0
 * @category accessors
 */
export const has = (key: string): Effect.Effect<boolean, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.has(key))

/**
 * @since 0.2.0
 * @category accessors
 */
export const setIfAbsent = (
  key: string,
  value: Uint8Array,
  ttl?: Duration.Input
): Effect.Effect<boolean, KvError, KvStore> => Effect.flatMap(KvStore, (store) => store.setIfAbsent(key, value, ttl))

/**
 * @since 0.2.0
 * @category accessors
 */
export const increment = (key: string, options?: IncrementOptions): Effect.Effect<number, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.increment(key, options))

/**
 * @since 0.2.0
 * @category accessors
 */
export const timeToLive = (
  key: string
): Effect.Effect<Option.Option<Duration.Duration>, NotFound | KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.timeToLive(key))

/**
 * @since 0.2.0
 * @category accessors
 */
export const expire = (key: string, ttl?: Duration.Input): Effect.Effect<boolean, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.expire(key, ttl))

/**
 * @since 0.2.0
 * @category accessors
 */
export const getMany = (keys: Iterable<string>): Effect.Effect<ReadonlyArray<Option.Option<Uint8Array>>, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.getMany(keys))

/**
 * @since 0.2.0
 * @category accessors
 */
export const setMany = (
  entries: Iterable<readonly [key: string, value: Uint8Array]>,
  ttl?: Duration.Input
): Effect.Effect<void, KvError, KvStore> => Effect.flatMap(KvStore, (store) => store.setMany(entries, ttl))

/**
 * @since 0.2.0
 * @category accessors
 */
export const deleteMany = (keys: Iterable<string>): Effect.Effect<number, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.deleteMany(keys))

/**
 * @since 0.2.0
 * @category accessors
 */
export const deletePrefix = (prefix: string): Effect.Effect<number, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.deletePrefix(prefix))

/**
 * @since 0.2.0
 * @category accessors
 */
export const count = (prefix: string): Effect.Effect<number, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.count(prefix))

/**
 * @since 0.2.0
 * @category accessors
 */
export const streamKeys = (prefix: string, options?: StreamOptions): Stream.Stream<string, KvError, KvStore> =>
  Stream.unwrap(Effect.map(KvStore, (store) => store.streamKeys(prefix, options)))

/**
 * @since 0.2.0
 * @category accessors
 */
export const streamEntries = (
  prefix: string,
  options?: StreamOptions
): Stream.Stream<readonly [key: string, value: Uint8Array], KvError, KvStore> =>
  Stream.unwrap(Effect.map(KvStore, (store) => store.streamEntries(prefix, options)))

/**
 * A namespace view of a store: every operation works under `prefix`; `keys`,
 * `streamKeys` and `streamEntries` return keys without it; `count("")` and
 * `deletePrefix("")` stay inside it; errors name the view's keys; `cleanup`
 * stays store-wide. Views nest. Both the view's key and the full key
 * (`prefix` + key) must be valid keys. `prefixed(store, "")` is `store`
 * itself; an invalid prefix gives a view whose every operation fails with
 * `KvError` (`InvalidArgument`).
// ---------------------------------------------------------------------------
// Typed values
// ---------------------------------------------------------------------------

/**
 * A view of a store whose values are `A`: `get`, `getOption`, `set`,
 * `update`, `delete`, `has` and `keys` as on `Service`, with `ParseError`
 * added where a value is encoded or decoded.
 *
 * @since 0.2.0
 * @category models
 */
export type SchemaStore<A, R = never> = schemaStore.SchemaStore<A, R>

/**
 * Typed values over a store: each value is stored as the JSON of the schema's
 * encoded form, in UTF-8. A value that does not encode is refused with a
 * `ParseError` and nothing is written; stored bytes that are not UTF-8, not
 * JSON or not of the schema's shape are a `ParseError`, never a defect.
 * `update` is atomic (`Service.update`): nothing is written if decoding, the
 * function or encoding fails.
 *
 * @example
 * const users = KvStore.forSchema(store, User)   // or pipe(store, KvStore.forSchema(User))
 * yield* users.set("user/1", { id: "1", name: "Ada" })
 *
 * @since 0.2.0
 * @category combinators
 */
export const prefixed: {
  (prefix: string): (self: Service) => Service
  (self: Service, prefix: string): Service
} = dual(2, (self: Service, prefix: string): Service => prefixedView.prefixed(self, prefix))
export const forSchema: {
  <A, I, RD, RE>(schema: Schema.Codec<A, I, RD, RE>): (self: Service) => SchemaStore<A, RD | RE>
  <A, I, RD, RE>(self: Service, schema: Schema.Codec<A, I, RD, RE>): SchemaStore<A, RD | RE>
} = schemaStore.forSchema
