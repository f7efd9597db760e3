/**
 * For authors of a backend: the `Driver` interface a store implements, its
 * error and records, and the per-key lock for drivers without transactions.
 * `KvStore.make(driver)` turns a driver into a `KvStore.Service`, and the
 * exported conformance suite (`effect-kv/conformance`) proves it.
 *
 * Applications do not need this module: they use `KvStore` and a store's layer.
 *
 * @since 0.1.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import * as Data from "effect/Data"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import type * as rateLimit from "./core/rateLimit.js"
import * as keyedLock from "./internal/keyedLock.js"

/**
 * A driver's failure: `Backend` for its own trouble, `InvalidArgument` when the
 * stored data does not allow the operation (e.g. `increment` of text that is
 * not an integer). The front turns it into a `KvError` naming the operation
 * and the key.
 *
 * @since 0.1.0
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
 * @since 0.1.0
 * @category drivers
 */
export interface Entry {
  /** The stored bytes. */
  readonly value: Uint8Array
  /** Milliseconds left before the entry expires; `undefined`: never expires. */
  readonly expiresIn: number | undefined
}

/**
 * What `Driver.modify` writes: nothing (`Keep`), or `value` with a TTL in
 * milliseconds (`undefined`: never expires; `"unchanged"`: the entry's current
 * expiry, or none when the entry is new).
 *
 * @since 0.1.0
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
 * @since 0.1.0
 * @category drivers
 */
export interface Driver {
  /** The backend's name in error messages, e.g. `"PostgreSQL"`. */
  readonly name: string
  /** The per-key lock the driver's own writes wait for (see above); by default the front makes its own. */
  readonly lock?: KeyedLock | undefined
  /** The live value of `key`, `Option.none()` when missing or expired. */
  readonly get: (key: string) => Effect.Effect<Option.Option<Uint8Array>, DriverError>
  /** Writes `value` with a TTL in milliseconds (`undefined`: never expires), replacing the entry. */
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

  /** `true` when `key` is live. Without it: `get`. */
  readonly has?: ((key: string) => Effect.Effect<boolean, DriverError>) | undefined
  /** `Option.none()`: missing; `Option.some(undefined)`: never expires; else milliseconds left. */
  readonly timeToLive?: ((key: string) => Effect.Effect<Option.Option<number | undefined>, DriverError>) | undefined
  /** Writes only when `key` is missing or expired; `true` when it wrote. Without it: `modify`. */
  readonly setIfAbsent?:
    | ((key: string, value: Uint8Array, ttl: number | undefined) => Effect.Effect<boolean, DriverError>)
    | undefined
  /** Fails with `InvalidArgument` when the stored value is not canonical decimal text or the result is unsafe. */
  readonly increment?:
    | ((key: string, by: number, ttl: number | undefined) => Effect.Effect<number, DriverError>)
    | undefined
  /** Replaces a live entry's expiry (milliseconds, `undefined`: never); `true` when the key was live. Without it: `modify`. */
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
  /**
   * Like `keysPage`, with the values; by default `keysPage` then `getMany`
   * (keys gone meanwhile are left out). With `maxBytes` (the front passes
   * 16 MiB) the page also holds at most that many bytes of values, except
   * that its first entry comes however large: fewer than `limit` entries then
   * also when the next entry would pass the bound, and the front asks for the
   * page after it. A driver that ignores `maxBytes` still works (the front
   * splits its pages, at the cost of holding them whole).
   */
  readonly entriesPage?:
    | ((
      prefix: string,
      after: string | undefined,
      limit: number,
      maxBytes?: number
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
  /**
   * Subscribes to the changes of every key of the backend. When the effect
   * succeeds the subscription is live: every write acknowledged after that
   * point (by this or any other process sharing the backend) is reported as
   * `Changed(key)`, and an entry that expires is reported within about a
   * second of its expiry. Several changes of one key may be reported once
   * (never none after the last one). The stream ends only when the scope
   * closes. One subscription per store is enough: the front fans it out to
   * every watcher. Without it, `watch` and `watchPrefix` fail with `KvError`
   * (`InvalidArgument`).
   */
  readonly changes?: Effect.Effect<Stream.Stream<DriverChange>, DriverError, Scope.Scope> | undefined
  /**
   * For a feed that reports changes after the write returns (over a network):
   * makes every open subscription report `Synced(token)` once it has reported
   * every change acknowledged before this call. A watcher joining a feed that
   * is already open waits for its token, so a notification of an earlier
   * write never reaches it as a change made after it started. Without it the
   * front takes the feed as reporting each change before the write returns
   * (an in-process feed).
   */
  readonly syncChanges?: ((token: string) => Effect.Effect<void, DriverError>) | undefined
}

/**
 * What a driver's change feed reports: `Changed` — `key` was written, deleted
 * or expired (by any process sharing the backend), read it for the value;
 * `Lost` — the feed may miss changes from now on (e.g. its connection died);
 * `Resumed` — the feed is live again, and any key may have changed between
 * `Lost` and now; `Synced` — every change acknowledged before the
 * `syncChanges(token)` call has been reported.
 *
 * @since 0.1.0
 * @category drivers
 */
export type DriverChange =
  | { readonly _tag: "Changed"; readonly key: string }
  | { readonly _tag: "Lost" }
  | { readonly _tag: "Resumed" }
  | { readonly _tag: "Synced"; readonly token: string }

/**
 * One call of a rate limiter (`KvRateLimiter`) as a driver's `rateLimit` receives it.
 *
 * @since 0.1.0
 * @category drivers
 */
export type RateLimitRequest = rateLimit.RateLimitRequest

/**
 * What a driver's `rateLimit` answers.
 *
 * @since 0.1.0
 * @category drivers
 */
export type RateLimitAnswer = rateLimit.RateLimitAnswer

/**
 * A FIFO lock per key that also knows whether the current fiber runs inside
 * a hold of it (to refuse, instead of deadlock on, a write of a key from
 * inside its own update).
 *
 * @since 0.1.0
 * @category drivers
 */
export type KeyedLock = keyedLock.KeyedLock

/**
 * A fresh per-key lock, for drivers without transactions.
 *
 * @since 0.1.0
 * @category drivers
 */
export const makeKeyedLock = (): KeyedLock => keyedLock.makeKeyedLock()
