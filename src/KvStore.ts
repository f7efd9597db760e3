/**
 * The key-value store: the `KvStore` service tag and its `Service`, the errors
 * `NotFound` and `KvError`, module-level accessors (`KvStore.get(key)` with
 * `KvStore` in the context), the `prefixed` and `forSchema` views, and `make`,
 * the one front every backend shares (drivers are in `KvDriver`).
 *
 * Keys are strings of 1 to 2048 UTF-8 bytes; values are bytes. A TTL is a
 * `Duration.DurationInput`: a plain number is milliseconds (Effect's rule,
 * not Redis's seconds), and `undefined`, `0`, `Duration.zero` and
 * `Duration.infinity` mean "never expires".
 *
 * @since 0.1.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import type * as Option from "effect/Option"
import type * as ParseResult from "effect/ParseResult"
import type * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { MAKE_OPTIONS, optionsProblem } from "./core/options.js"
import * as front from "./internal/front.js"
import * as prefixedView from "./internal/prefixed.js"
import * as schemaStore from "./internal/schemaStore.js"
import * as KvDriver from "./KvDriver.js"

/**
 * What every backend offers. Values are bytes; keys are strings of 1 to 2048
 * UTF-8 bytes without NUL or lone surrogates. A TTL is a `Duration.DurationInput`
 * (a plain number is milliseconds); `undefined`, `0`, `Duration.zero` or
 * `Duration.infinity` means the entry never expires, and a negative or NaN
 * TTL is refused. Missing and expired are the same thing. Bad arguments fail
 * with `KvError` (`InvalidArgument`) and change nothing; no method throws.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** The live value of `key`, or `NotFound` when it is missing or expired. */
  get(key: string): Effect.Effect<Uint8Array, NotFound | KvError>
  /** Writes `value`, replacing the entry and its expiry (`ttl`: a number is milliseconds; none: never expires). */
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

  /** The live value of `key`, or `Option.none()` when it is missing or expired. */
  getOption(key: string): Effect.Effect<Option.Option<Uint8Array>, KvError>
  /** `true` when `key` has a live entry. */
  has(key: string): Effect.Effect<boolean, KvError>
  /** Writes `value` only when `key` is missing or expired; `true` when it wrote. */
  setIfAbsent(key: string, value: Uint8Array, ttl?: Duration.DurationInput): Effect.Effect<boolean, KvError>
  /**
   * Adds `by` (default 1, a safe integer) to the integer stored as decimal
   * text under `key` (missing or expired counts as 0) and returns the new value.
   * `ttl` applies only when the increment creates the entry.
   */
  increment(key: string, options?: IncrementOptions): Effect.Effect<number, KvError>
  /** The time `key` has left (`Option.none()`: never expires), or `NotFound`. */
  timeToLive(key: string): Effect.Effect<Option.Option<Duration.Duration>, NotFound | KvError>
  /** Replaces a live entry's expiry, keeping its value; `true` when the key was live. */
  expire(key: string, ttl?: Duration.DurationInput): Effect.Effect<boolean, KvError>

  /**
   * The live values of `keys`, one `Option` per key in input order (duplicates
   * allowed). Every key is checked first; an empty input is `[]` without I/O.
   */
  getMany(keys: Iterable<string>): Effect.Effect<ReadonlyArray<Option.Option<Uint8Array>>, KvError>
  /**
   * Writes every entry with `ttl`, all or nothing; when a key appears twice
   * the last value wins. Every key and value is checked before anything is written.
   */
  setMany(entries: Iterable<readonly [key: string, value: Uint8Array]>, ttl?: Duration.DurationInput): Effect.Effect<void, KvError>
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
  /**
   * Like `streamKeys`, with each key's value. A page (a chunk of the stream)
   * holds at most `batchSize` entries and at most 16 MiB of values; an entry
   * larger than that comes in a page of its own.
   */
  streamEntries(prefix: string, options?: StreamOptions): Stream.Stream<readonly [key: string, value: Uint8Array], KvError>

  /**
   * The value of `key` now (`Option.none()`: missing or expired), then the
   * new value after every change, by this or any process sharing the store.
   * Under a burst it may skip intermediate values, never the last: once
   * writes stop, the last value emitted is the stored one. An entry that
   * expires is reported as `none` within about a second. Fails with
   * `KvError` (`InvalidArgument`) on a store without a change feed.
   */
  watch(key: string): Stream.Stream<Option.Option<Uint8Array>, KvError>
  /**
   * A `Change` for every key under `prefix` (`""`: all) written, deleted or
   * expired after the stream started; no snapshot of the keys already there
   * (combine with `streamEntries`). Per key, the last value is never skipped.
   */
  watchPrefix(prefix: string): Stream.Stream<Change, KvError>
}

/**
 * What `watchPrefix` emits: a key that changed and its value read after the
 * change (`Option.none()`: deleted or expired).
 *
 * @since 0.1.0
 * @category models
 */
export interface Change {
  /** The key that changed. */
  readonly key: string
  /** Its value read after the change; `Option.none()`: deleted or expired. */
  readonly value: Option.Option<Uint8Array>
}

/**
 * Options of `streamKeys` and `streamEntries`.
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamOptions {
  /** Keys read per page (one round trip on PostgreSQL): a positive safe integer, default 1000. */
  readonly batchSize?: number | undefined
}

/**
 * Options of `increment`.
 *
 * @since 0.1.0
 * @category models
 */
export interface IncrementOptions {
  /** The amount to add, a safe integer (0 and negatives allowed). Default 1. */
  readonly by?: number | undefined
  /** The expiry of an entry this increment creates; a live entry keeps its own. */
  readonly ttl?: Duration.DurationInput | undefined
}

/**
 * The key-value store service: `yield* KvStore.KvStore` gives the `Service`
 * that a layer (`MemoryStore.layer`, `PostgresStore.layer`) provides.
 *
 * @since 0.1.0
 * @category tags
 */
export class KvStore extends Context.Tag("effect-kv/KvStore")<KvStore, Service>() {}

type Service_ = Service

/**
 * Types that belong to the `KvStore` tag.
 *
 * @since 0.1.0
 */
export declare namespace KvStore {
  /**
   * The store's operations: the `Service` of this module.
   *
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
  /** Says which key has no live entry. */
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
   * A `KvError` for the caller's mistake: `reason` `InvalidArgument`.
   *
   * @since 0.1.0
   */
  static invalidArgument(op: string, message: string, key?: string): KvError {
    return new KvError({ reason: "InvalidArgument", op, message, ...(key === undefined ? {} : { key }) })
  }
  /**
   * A `KvError` for the store's trouble: `reason` `Backend`, with its `cause`.
   *
   * @since 0.1.0
   */
  static backend(op: string, message: string, cause: unknown, key?: string): KvError {
    return new KvError({ reason: "Backend", op, message, cause, ...(key === undefined ? {} : { key }) })
  }
}

// ---------------------------------------------------------------------------
// Drivers (their home is `KvDriver`)
// ---------------------------------------------------------------------------

/**
 * The primitive operations a backend implements, for `make`. Defined, with
 * the rest of what a driver author needs, in the `KvDriver` module.
 *
 * @since 0.1.0
 * @category drivers
 */
export type Driver = KvDriver.Driver

/**
 * A driver's failure.
 *
 * @deprecated Use `KvDriver.DriverError`; this alias will be removed.
 * @since 0.1.0
 * @category drivers
 */
export const DriverError = KvDriver.DriverError

/**
 * A driver's failure.
 *
 * @deprecated Use `KvDriver.DriverError`; this alias will be removed.
 * @since 0.1.0
 * @category drivers
 */
export type DriverError = KvDriver.DriverError

/**
 * A live entry as a driver reads it.
 *
 * @deprecated Use `KvDriver.Entry`; this alias will be removed.
 * @since 0.1.0
 * @category drivers
 */
export type Entry = KvDriver.Entry

/**
 * What `Driver.modify` writes.
 *
 * @deprecated Use `KvDriver.Write`; this alias will be removed.
 * @since 0.1.0
 * @category drivers
 */
export type Write = KvDriver.Write

/**
 * The per-key lock a driver without transactions shares with the front.
 *
 * @deprecated Use `KvDriver.KeyedLock`; this alias will be removed.
 * @since 0.1.0
 * @category drivers
 */
export type KeyedLock = KvDriver.KeyedLock

/**
 * A fresh per-key lock, for drivers without transactions.
 *
 * @deprecated Use `KvDriver.makeKeyedLock`; this alias will be removed.
 * @since 0.1.0
 * @category drivers
 */
export const makeKeyedLock: () => KvDriver.KeyedLock = KvDriver.makeKeyedLock

/**
 * Options of `make`.
 *
 * @since 0.1.0
 * @category models
 */
export interface MakeOptions {
  /** Run the driver's sweep (or `cleanup`) on this period in the current scope. Default: never. */
  readonly cleanupInterval?: Duration.DurationInput | undefined
  /**
   * Keep keys out of errors and spans: `KvError.key`, `NotFound.key` and
   * messages say `"[redacted]"` instead, for stores whose keys are secrets
   * (session ids, tokens). Default `false`.
   */
  readonly redactKeys?: boolean | undefined
}

/**
 * Builds the `Service` over a driver (see `KvDriver`): argument checks in one
 * order, TTL decoding, copies of values in and out, the per-key lock and the
 * guard against writing a key from inside its own update, errors and spans,
 * and the sweep schedule (forked into the scope). Fails with `KvError`
 * (`InvalidArgument`, op `"layer"`) for an unknown option, an option of the
 * wrong type or an invalid interval.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (driver: Driver, options?: MakeOptions): Effect.Effect<Service, KvError, Scope.Scope> =>
  Effect.suspend(() => {
    const problem = optionsProblem("KvStore.make", options, MAKE_OPTIONS)
    return problem === undefined
      ? front.make(driver, options ?? undefined) // called late: front.ts imports this module's classes
      : Effect.fail(KvError.invalidArgument("layer", problem))
  })

// ---------------------------------------------------------------------------
// Accessors: the `Service` operations on the `KvStore` in the context
// ---------------------------------------------------------------------------

/**
 * The live value of `key` in the `KvStore` in context; fails with `NotFound`
 * when it is missing or expired.
 *
 * @since 0.1.0
 * @category accessors
 */
export const get = (key: string): Effect.Effect<Uint8Array, NotFound | KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.get(key))

/**
 * Writes `value` under `key` in the `KvStore` in context, replacing the entry
 * and its expiry. `ttl`: a number is milliseconds; none, `0` or
 * `Duration.infinity`: never expires.
 *
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
   * Removes `key` from the `KvStore` in context; `true` when a live entry was
   * removed (`false` for a missing or expired key).
   *
   * @since 0.1.0
   * @category accessors
   */
  delete_ as delete
}

/**
 * Atomic read-modify-write of `key` in the `KvStore` in context: `f` sees the
 * current value (`Option.none()` when missing or expired) while no other
 * writer can change the key, and its result is written with `ttl` (none: the
 * entry becomes permanent) and returned. If `f` fails, its error comes out
 * unchanged and nothing is written.
 *
 * @since 0.1.0
 * @category accessors
 */
export const update = <E = never, R = never>(
  key: string,
  f: (current: Option.Option<Uint8Array>) => Effect.Effect<Uint8Array, E, R>,
  ttl?: Duration.DurationInput
): Effect.Effect<Uint8Array, E | KvError, R | KvStore> => Effect.flatMap(KvStore, (store) => store.update(key, f, ttl))

/**
 * The live keys starting with `prefix` (`""`: all) in the `KvStore` in
 * context, sorted by Unicode code point; `%`, `_` and `\` match literally.
 *
 * @since 0.1.0
 * @category accessors
 */
export const keys = (prefix: string): Effect.Effect<ReadonlyArray<string>, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.keys(prefix))

/**
 * Removes the expired entries of the `KvStore` in context now; succeeds with
 * how many were removed.
 *
 * @since 0.1.0
 * @category accessors
 */
export const cleanup: Effect.Effect<number, KvError, KvStore> = Effect.flatMap(KvStore, (store) => store.cleanup)

/**
 * The live value of `key` in the `KvStore` in context, or `Option.none()`
 * when it is missing or expired.
 *
 * @since 0.1.0
 * @category accessors
 */
export const getOption = (key: string): Effect.Effect<Option.Option<Uint8Array>, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.getOption(key))

/**
 * `true` when `key` has a live entry in the `KvStore` in context.
 *
 * @since 0.1.0
 * @category accessors
 */
export const has = (key: string): Effect.Effect<boolean, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.has(key))

/**
 * Writes `value` only when `key` is missing or expired in the `KvStore` in
 * context; `true` when it wrote. Of two concurrent calls on a missing key,
 * exactly one writes.
 *
 * @since 0.1.0
 * @category accessors
 */
export const setIfAbsent = (
  key: string,
  value: Uint8Array,
  ttl?: Duration.DurationInput
): Effect.Effect<boolean, KvError, KvStore> => Effect.flatMap(KvStore, (store) => store.setIfAbsent(key, value, ttl))

/**
 * Adds `by` (default 1) to the counter under `key` in the `KvStore` in
 * context and returns the new value. The counter is stored as decimal text
 * (`"42"`); a missing or expired key counts as 0; `ttl` applies only when the
 * increment creates the entry (the fixed-window rate-limit pattern). Stored
 * text that is not an integer, or an unsafe result, is `InvalidArgument`.
 *
 * @since 0.1.0
 * @category accessors
 */
export const increment = (key: string, options?: IncrementOptions): Effect.Effect<number, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.increment(key, options))

/**
 * The time `key` has left in the `KvStore` in context (`Option.none()`: it
 * never expires), as the backend's clock sees it; `NotFound` when missing or
 * expired.
 *
 * @since 0.1.0
 * @category accessors
 */
export const timeToLive = (
  key: string
): Effect.Effect<Option.Option<Duration.Duration>, NotFound | KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.timeToLive(key))

/**
 * Replaces the expiry of a live `key` in the `KvStore` in context, keeping its
 * value (`ttl`: a number is milliseconds; none: never expires); `true` when
 * the key was live, `false` (and nothing written) otherwise.
 *
 * @since 0.1.0
 * @category accessors
 */
export const expire = (key: string, ttl?: Duration.DurationInput): Effect.Effect<boolean, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.expire(key, ttl))

/**
 * The live values of `keys` in the `KvStore` in context, one `Option` per key
 * in input order (duplicates allowed). Every key is checked before any I/O.
 *
 * @since 0.1.0
 * @category accessors
 */
export const getMany = (keys: Iterable<string>): Effect.Effect<ReadonlyArray<Option.Option<Uint8Array>>, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.getMany(keys))

/**
 * Writes every entry with `ttl` in the `KvStore` in context, all or nothing;
 * when a key appears twice the last value wins.
 *
 * @since 0.1.0
 * @category accessors
 */
export const setMany = (
  entries: Iterable<readonly [key: string, value: Uint8Array]>,
  ttl?: Duration.DurationInput
): Effect.Effect<void, KvError, KvStore> => Effect.flatMap(KvStore, (store) => store.setMany(entries, ttl))

/**
 * Removes `keys` from the `KvStore` in context; how many live entries were removed.
 *
 * @since 0.1.0
 * @category accessors
 */
export const deleteMany = (keys: Iterable<string>): Effect.Effect<number, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.deleteMany(keys))

/**
 * Removes the live keys starting with `prefix` (`""`: all) from the `KvStore`
 * in context, in bounded batches; how many were removed.
 *
 * @since 0.1.0
 * @category accessors
 */
export const deletePrefix = (prefix: string): Effect.Effect<number, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.deletePrefix(prefix))

/**
 * How many live keys start with `prefix` (`""`: all) in the `KvStore` in context.
 *
 * @since 0.1.0
 * @category accessors
 */
export const count = (prefix: string): Effect.Effect<number, KvError, KvStore> =>
  Effect.flatMap(KvStore, (store) => store.count(prefix))

/**
 * The live keys starting with `prefix` in the `KvStore` in context, in code
 * point order, read lazily one page (`batchSize`, default 1000) at a time.
 *
 * @since 0.1.0
 * @category accessors
 */
export const streamKeys = (prefix: string, options?: StreamOptions): Stream.Stream<string, KvError, KvStore> =>
  Stream.unwrap(Effect.map(KvStore, (store) => store.streamKeys(prefix, options)))

/**
 * The live entries under `prefix` in the `KvStore` in context, as
 * `[key, value]` in code point order, read lazily one page at a time.
 *
 * @since 0.1.0
 * @category accessors
 */
export const streamEntries = (
  prefix: string,
  options?: StreamOptions
): Stream.Stream<readonly [key: string, value: Uint8Array], KvError, KvStore> =>
  Stream.unwrap(Effect.map(KvStore, (store) => store.streamEntries(prefix, options)))

/**
 * The value of `key` in the `KvStore` in context now, then after every change
 * (see `Service.watch`).
 *
 * @since 0.1.0
 * @category accessors
 */
export const watch = (key: string): Stream.Stream<Option.Option<Uint8Array>, KvError, KvStore> =>
  Stream.unwrap(Effect.map(KvStore, (store) => store.watch(key)))

/**
 * The changes of the keys under `prefix` in the `KvStore` in context, from
 * now on (see `Service.watchPrefix`).
 *
 * @since 0.1.0
 * @category accessors
 */
export const watchPrefix = (prefix: string): Stream.Stream<Change, KvError, KvStore> =>
  Stream.unwrap(Effect.map(KvStore, (store) => store.watchPrefix(prefix)))

// ---------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------

/**
 * A namespace view of a store: every operation works under `prefix`; `keys`,
 * `streamKeys` and `streamEntries` return keys without it; `count("")` and
 * `deletePrefix("")` stay inside it; errors name the view's keys; `cleanup`
 * stays store-wide. Views nest. Both the view's key and the full key
 * (`prefix` + key) must be valid keys. `prefixed(store, "")` is `store`
 * itself; an invalid prefix gives a view whose every operation fails with
 * `KvError` (`InvalidArgument`).
 *
 * @example
 * const sessions = KvStore.prefixed(store, "session/") // or pipe(store, KvStore.prefixed("session/"))
 * yield* sessions.set("abc", bytes, "30 minutes")      // stored as "session/abc"
 *
 * @since 0.1.0
 * @category combinators
 */
export const prefixed: {
  (prefix: string): (self: Service) => Service
  (self: Service, prefix: string): Service
} = dual(2, (self: Service, prefix: string): Service => prefixedView.prefixed(self, prefix))

/**
 * A view of a store whose values are `A`, made by `forSchema`: every
 * operation of `Service` except `increment` (counters are decimal text, not
 * JSON), with `A` in place of bytes. Values are stored as the JSON of the
 * schema's encoded form, in UTF-8. Where a value is encoded or decoded,
 * `ParseError` joins the error channel: a value that does not encode is
 * refused with nothing written, and stored bytes that are not UTF-8, not JSON
 * or not of the schema's shape are a `ParseError`, never a defect. `store` is
 * the byte-level `Service` underneath.
 *
 * @since 0.1.0
 * @category models
 */
export interface SchemaStore<A, R = never> {
  /** The byte-level store underneath (e.g. for `increment`). */
  readonly store: Service
  /** The live value of `key`, decoded; `NotFound` when missing or expired. */
  get(key: string): Effect.Effect<A, NotFound | KvError | ParseResult.ParseError, R>
  /** The live value of `key`, decoded, or `Option.none()` when missing or expired. */
  getOption(key: string): Effect.Effect<Option.Option<A>, KvError | ParseResult.ParseError, R>
  /** `true` when `key` has a live entry (its value is not decoded). */
  has(key: string): Effect.Effect<boolean, KvError>
  /** Encodes and writes `value`, replacing the entry and its expiry (`ttl`: a number is milliseconds). */
  set(key: string, value: A, ttl?: Duration.DurationInput): Effect.Effect<void, KvError | ParseResult.ParseError, R>
  /** Encodes `value` and writes it only when `key` is missing or expired; `true` when it wrote. */
  setIfAbsent(
    key: string,
    value: A,
    ttl?: Duration.DurationInput
  ): Effect.Effect<boolean, KvError | ParseResult.ParseError, R>
  /**
   * Atomic read-modify-write as `Service.update`, on decoded values: nothing is
   * written if the stored value does not decode, `f` fails, or its result does
   * not encode. Returns the value written.
   */
  update<E = never, R2 = never>(
    key: string,
    f: (current: Option.Option<A>) => Effect.Effect<A, E, R2>,
    ttl?: Duration.DurationInput
  ): Effect.Effect<A, E | KvError | ParseResult.ParseError, R | R2>
  /** Removes `key`; `true` when a live entry was removed. */
  delete(key: string): Effect.Effect<boolean, KvError>
  /** The time `key` has left (`Option.none()`: never expires); `NotFound` when missing or expired. */
  timeToLive(key: string): Effect.Effect<Option.Option<Duration.Duration>, NotFound | KvError>
  /** Replaces a live entry's expiry, keeping its value; `true` when the key was live. */
  expire(key: string, ttl?: Duration.DurationInput): Effect.Effect<boolean, KvError>
  /** The live keys starting with `prefix`, sorted by code point. */
  keys(prefix: string): Effect.Effect<ReadonlyArray<string>, KvError>
  /** The live values of `keys`, decoded, one `Option` per key in input order. */
  getMany(keys: Iterable<string>): Effect.Effect<ReadonlyArray<Option.Option<A>>, KvError | ParseResult.ParseError, R>
  /** Encodes every value first (one that does not encode writes none), then writes all or nothing. */
  setMany(
    entries: Iterable<readonly [key: string, value: A]>,
    ttl?: Duration.DurationInput
  ): Effect.Effect<void, KvError | ParseResult.ParseError, R>
  /** Removes `keys`; how many live entries were removed. */
  deleteMany(keys: Iterable<string>): Effect.Effect<number, KvError>
  /** Removes the live keys starting with `prefix` (`""`: all); how many were removed. */
  deletePrefix(prefix: string): Effect.Effect<number, KvError>
  /** How many live keys start with `prefix` (`""`: all). */
  count(prefix: string): Effect.Effect<number, KvError>
  /** The live keys starting with `prefix`, in code point order, read lazily one page at a time. */
  streamKeys(prefix: string, options?: StreamOptions): Stream.Stream<string, KvError>
  /** The live entries under `prefix` with their values decoded; a value that does not decode ends the stream with its `ParseError`. */
  streamEntries(
    prefix: string,
    options?: StreamOptions
  ): Stream.Stream<readonly [key: string, value: A], KvError | ParseResult.ParseError, R>
  /** `Service.watch` with the values decoded; a value that does not decode ends the stream with its `ParseError`. */
  watch(key: string): Stream.Stream<Option.Option<A>, KvError | ParseResult.ParseError, R>
  /** `Service.watchPrefix` with the values decoded; a value that does not decode ends the stream with its `ParseError`. */
  watchPrefix(prefix: string): Stream.Stream<SchemaChange<A>, KvError | ParseResult.ParseError, R>
}

/**
 * What a `SchemaStore`'s `watchPrefix` emits: a `Change` with its value decoded.
 *
 * @since 0.1.0
 * @category models
 */
export interface SchemaChange<A> {
  /** The key that changed. */
  readonly key: string
  /** Its value read after the change, decoded; `Option.none()`: deleted or expired. */
  readonly value: Option.Option<A>
}

/**
 * Typed values over a store: each value is stored as the JSON of the schema's
 * encoded form, in UTF-8, and read back through the schema. A value that does
 * not encode is refused with a `ParseError` and nothing is written; stored
 * bytes that are not UTF-8, not JSON or not of the schema's shape are a
 * `ParseError`, never a defect. `update` is atomic (`Service.update`):
 * nothing is written if decoding, the function or encoding fails.
 *
 * @example
 * const users = KvStore.forSchema(store, User)   // or pipe(store, KvStore.forSchema(User))
 * yield* users.set("user/1", { id: "1", name: "Ada" })
 *
 * @since 0.1.0
 * @category combinators
 */
export const forSchema: {
  <A, I, R>(schema: Schema.Schema<A, I, R>): (self: Service) => SchemaStore<A, R>
  <A, I, R>(self: Service, schema: Schema.Schema<A, I, R>): SchemaStore<A, R>
} = schemaStore.forSchema
