/**
 * `KvStore.prefixed`: a namespace view over any `Service`. The view checks its
 * own keys (the view's key must be a valid key, and so must the full key),
 * hands the full keys to the store, and turns the store's answers back into
 * the view's terms: keys listed without the prefix, `NotFound.key` and
 * `KvError.key` (and the key quoted in the message) naming the view's key.
 *
 * A view of a view is one view with the two prefixes joined, so nesting costs
 * nothing per level.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Stream from "effect/Stream"
import type { DriverChange } from "../KvDriver.js"
import type { Service, StreamOptions } from "../KvStore.js"
import { KvError, NotFound } from "../KvStore.js"
import { REDACTED } from "./errors.js"
import { serviceChanges, serviceRateLimits, serviceRateLimits4, serviceRedactsKeys } from "./front.js"
import { readEntry } from "../core/iterable.js"
import type { IterableProblem } from "../core/iterable.js"
import { readBatch } from "./readBatch.js"
import { keyProblem, MAX_KEY_BYTES, prefixProblem, utf8Length } from "../core/key.js"
import { valueProblem } from "../core/value.js"


/** The views made here: their store and full prefix, to join nested prefixes. */
const views = new WeakMap<Service, { readonly base: Service; readonly prefix: string }>()

/** A failure of the update function, kept apart from the store's errors (which the view rewrites). */
class Passthrough {
  constructor(readonly error: unknown) {}
}

export const prefixed = (self: Service, prefix: string): Service => {
  if (prefix === "") return self
  const problem = keyProblem(prefix)
  if (problem !== undefined) return refusing(self, problem.replace("a key", "a prefix"))
  const outer = views.get(self)
  if (outer !== undefined) return prefixed(outer.base, outer.prefix + prefix)
  const view = makeView(self, prefix)
  views.set(view, { base: self, prefix })
  return view
}

/** The view of an invalid prefix: every operation but the store-wide `cleanup` fails with `InvalidArgument`. */
const refusing = (self: Service, problem: string): Service => {
  const refuse = (op: string) => Effect.fail(KvError.invalidArgument(op, `Invalid prefix for a prefixed view (${op}): ${problem}`))
  return {
    get: () => refuse("get"),
    set: () => refuse("set"),
    delete: () => refuse("delete"),
    update: () => refuse("update"),
    keys: () => refuse("keys"),
    cleanup: self.cleanup,
    getOption: () => refuse("getOption"),
    has: () => refuse("has"),
    setIfAbsent: () => refuse("setIfAbsent"),
    increment: () => refuse("increment"),
    timeToLive: () => refuse("timeToLive"),
    expire: () => refuse("expire"),
    getMany: () => refuse("getMany"),
    setMany: () => refuse("setMany"),
    deleteMany: () => refuse("deleteMany"),
    deletePrefix: () => refuse("deletePrefix"),
    count: () => refuse("count"),
    streamKeys: () => Stream.fromEffect(refuse("streamKeys")),
    streamEntries: () => Stream.fromEffect(refuse("streamEntries")),
    watch: () => Stream.fromEffect(refuse("watch")),
    watchPrefix: () => Stream.fromEffect(refuse("watchPrefix"))
  }
}

const makeView = (base: Service, prefix: string): Service => {
  const redact = serviceRedactsKeys.get(base) === true
  const prefixBytes = utf8Length(prefix)

  const invalid = (op: string, key: unknown, message: string, cause?: unknown): KvError =>
    new KvError({
      reason: "InvalidArgument",
      op,
      ...(typeof key === "string" ? { key: redact ? REDACTED : key } : {}),
      ...(cause === undefined ? {} : { cause }),
      message
    })

  /** `problem` for the view's key (or prefix), else the full one's length. */
  const tooLong = (key: string): string | undefined => {
    const bytes = prefixBytes + utf8Length(key)
    return bytes > MAX_KEY_BYTES
      ? `with the view's prefix a key must be at most ${MAX_KEY_BYTES} UTF-8 bytes, got ${bytes}`
      : undefined
  }

  const checkKey = (op: string, key: unknown, where = ""): KvError | undefined => {
    const problem = keyProblem(key) ?? tooLong(key as string)
    return problem === undefined ? undefined : invalid(op, key, `Invalid key for ${op}${where}: ${problem}`)
  }

  const checkPrefix = (op: string, p: unknown): KvError | undefined => {
    const problem = prefixProblem(p) ?? tooLong(p as string)
    return problem === undefined ? undefined : invalid(op, p, `Invalid prefix for ${op}: ${problem}`)
  }

  const strip = (key: string): string => (key.startsWith(prefix) ? key.slice(prefix.length) : key)

  /** The store's error in the view's terms: keys without the prefix. */
  const fromStore = <E>(error: E): E => {
    if (error instanceof NotFound) {
      return (error.key === REDACTED ? error : new NotFound({ key: strip(error.key) })) as E
    }
    if (error instanceof KvError && error.key !== undefined && error.key !== REDACTED && error.key.startsWith(prefix)) {
      const key = strip(error.key)
      return new KvError({
        reason: error.reason,
        op: error.op,
        key,
        ...(error.cause === undefined ? {} : { cause: error.cause }),
        message: error.message.replaceAll(JSON.stringify(error.key), JSON.stringify(key))
      }) as E
    }
    return error
  }

  /** Runs `f` on the full key once the view's key is checked; the store's errors in the view's terms. */
  const keyed = <A, E>(op: string, key: string, f: (full: string) => Effect.Effect<A, E>): Effect.Effect<A, E | KvError> =>
    Effect.suspend((): Effect.Effect<A, E | KvError> => {
      const bad = checkKey(op, key)
      return bad !== undefined ? Effect.fail(bad) : Effect.mapError(f(prefix + key), fromStore)
    })

  const prefixedBy = <A, E>(op: string, p: string, f: (full: string) => Effect.Effect<A, E>): Effect.Effect<A, E | KvError> =>
    Effect.suspend((): Effect.Effect<A, E | KvError> => {
      const bad = checkPrefix(op, p)
      return bad !== undefined ? Effect.fail(bad) : Effect.mapError(f(prefix + p), fromStore)
    })

  /** The caller's keys (read bounded, see readBatch.ts), checked, under the view's prefix. */
  const fullKeys = (op: string, keys: unknown): Effect.Effect<Array<string>, KvError> =>
    Effect.flatMap(readBatch(keys, "keys"), (read) => {
      const full = fullKeysOf(op, read)
      return full instanceof KvError ? Effect.fail(full) : Effect.succeed(full)
    })

  const fullKeysOf = (op: string, read: Array<unknown> | IterableProblem): Array<string> | KvError => {
    if (!Array.isArray(read)) return invalid(op, undefined, `Invalid keys for ${op}: ${read.problem}`, read.cause)
    const full: Array<string> = new Array(read.length)
    for (let i = 0; i < read.length; i++) {
      const bad = checkKey(op, read[i], ` (item ${i})`)
      if (bad !== undefined) return bad
      full[i] = prefix + (read[i] as string)
    }
    return full
  }

  const fullEntries = (op: string, entries: unknown): Effect.Effect<Array<readonly [string, Uint8Array]>, KvError> =>
    Effect.flatMap(readBatch(entries, "entries"), (read) => {
      const full = fullEntriesOf(op, read)
      return full instanceof KvError ? Effect.fail(full) : Effect.succeed(full)
    })

  const fullEntriesOf = (op: string, read: Array<unknown> | IterableProblem): Array<readonly [string, Uint8Array]> | KvError => {
    if (!Array.isArray(read)) return invalid(op, undefined, `Invalid entries for ${op}: ${read.problem}`, read.cause)
    const full: Array<readonly [string, Uint8Array]> = new Array(read.length)
    for (let i = 0; i < read.length; i++) {
      const entry = readEntry(read[i])
      if ("problem" in entry) return invalid(op, undefined, `Invalid entry for ${op} (item ${i}): ${entry.problem}`, entry.cause)
      const bad = checkKey(op, entry.key, ` (item ${i})`)
      if (bad !== undefined) return bad
      // checked here too, so the view refuses in the store's order: key, then value, entry by entry
      const valueBad = valueProblem(entry.value)
      if (valueBad !== undefined) return invalid(op, entry.key, `Invalid value for ${op} (item ${i}): ${valueBad}`)
      full[i] = [prefix + (entry.key as string), entry.value as Uint8Array]
    }
    return full
  }

  const stream = <A>(op: string, p: string, f: (full: string) => Stream.Stream<A, KvError>): Stream.Stream<A, KvError> =>
    Stream.suspend(() => {
      const bad = checkPrefix(op, p)
      return bad !== undefined ? Stream.fail(bad) : Stream.mapError(f(prefix + p), fromStore)
    })

  const view: Service = {
    get: (key) => keyed("get", key, (full) => base.get(full)),
    set: (key, value, ttl) => keyed("set", key, (full) => base.set(full, value, ttl)),
    delete: (key) => keyed("delete", key, (full) => base.delete(full)),
    update: <E, R>(
      key: string,
      f: (current: Option.Option<Uint8Array>) => Effect.Effect<Uint8Array, E, R>,
      ttl?: Parameters<Service["update"]>[2]
    ): Effect.Effect<Uint8Array, E | KvError, R> =>
      Effect.suspend(() => {
        const bad = checkKey("update", key)
        if (bad !== undefined) return Effect.fail(bad)
        // the function's own failures come out untouched, whatever they are
        const wrapped = typeof f !== "function" ? f : (current: Option.Option<Uint8Array>) => {
          const result = f(current)
          return Effect.isEffect(result)
            ? Effect.mapError(result, (error) => new Passthrough(error))
            : result
        }
        return Effect.catch(
          base.update(prefix + key, wrapped as (current: Option.Option<Uint8Array>) => Effect.Effect<Uint8Array, unknown, R>, ttl),
          (error) => Effect.fail(error instanceof Passthrough ? error.error as E : fromStore(error as KvError))
        )
      }),
    keys: (p) => prefixedBy("keys", p, (full) => Effect.map(base.keys(full), (keys) => keys.map(strip))),
    cleanup: base.cleanup,
    getOption: (key) => keyed("getOption", key, (full) => base.getOption(full)),
    has: (key) => keyed("has", key, (full) => base.has(full)),
    setIfAbsent: (key, value, ttl) => keyed("setIfAbsent", key, (full) => base.setIfAbsent(full, value, ttl)),
    increment: (key, options) => keyed("increment", key, (full) => base.increment(full, options)),
    timeToLive: (key) => keyed("timeToLive", key, (full) => base.timeToLive(full)),
    expire: (key, ttl) => keyed("expire", key, (full) => base.expire(full, ttl)),
    getMany: (keys) => Effect.flatMap(fullKeys("getMany", keys), (full) => Effect.mapError(base.getMany(full), fromStore)),
    setMany: (entries, ttl) =>
      Effect.flatMap(fullEntries("setMany", entries), (full) => Effect.mapError(base.setMany(full, ttl), fromStore)),
    deleteMany: (keys) => Effect.flatMap(fullKeys("deleteMany", keys), (full) => Effect.mapError(base.deleteMany(full), fromStore)),
    deletePrefix: (p) => prefixedBy("deletePrefix", p, (full) => base.deletePrefix(full)),
    count: (p) => prefixedBy("count", p, (full) => base.count(full)),
    streamKeys: (p, options?: StreamOptions) =>
      stream("streamKeys", p, (full) => Stream.map(base.streamKeys(full, options), strip)),
    streamEntries: (p, options?: StreamOptions) =>
      stream("streamEntries", p, (full) =>
        Stream.map(base.streamEntries(full, options), ([key, value]) => [strip(key), value] as const)),
    watch: (key) =>
      Stream.suspend(() => {
        const bad = checkKey("watch", key)
        return bad !== undefined ? Stream.fail(bad) : Stream.mapError(base.watch(prefix + key), fromStore)
      }),
    watchPrefix: (p) =>
      stream("watchPrefix", p, (full) =>
        Stream.filterMap(base.watchPrefix(full), (change) =>
          // the view's prefix itself is not one of the view's keys
          change.key.length > prefix.length
            ? Result.succeed({ key: change.key.slice(prefix.length), value: change.value })
            : Result.fail(change)))
  }
  // the store's own rate-limit step (on its clock), for KvRateLimiter over the view
  const rateLimit = serviceRateLimits.get(base)
  if (rateLimit !== undefined) {
    serviceRateLimits.set(view, (key, request) => keyed("rateLimit", key, (full) => rateLimit(full, request)))
  }
  const rateLimit4 = serviceRateLimits4.get(base)
  if (rateLimit4 !== undefined) {
    serviceRateLimits4.set(view, (key, request) => keyed("rateLimit", key, (full) => rateLimit4(full, request)))
  }
  // the store's shared change feed, with the view's keys only, for NearCache over the view
  const changes = serviceChanges.get(base)
  if (changes !== undefined) {
    serviceChanges.set(
      view,
      Effect.map(changes, (feed) =>
        Stream.filterMap(feed, (change): Result.Result<DriverChange, DriverChange> =>
          change._tag !== "Changed"
            ? Result.succeed(change)
            : change.key.length > prefix.length && change.key.startsWith(prefix)
            ? Result.succeed({ _tag: "Changed", key: change.key.slice(prefix.length) } as const)
            : Result.fail(change)))
    )
  }
  return view
}
