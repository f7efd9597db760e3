/**
 * `NearCache`: a `Service` that answers reads from process memory and keeps
 * them true by the store's change feed.
 *
 * Three things bound what a cached entry may answer:
 * - the feed: `Changed(key)` drops the key, `Lost` drops everything and turns
 *   caching off (reads go to the store) until `Resumed`;
 * - its age: no entry is used past `maxStaleness` after its read started, so
 *   a notification lost without a `Lost` costs at most that much staleness;
 * - its expiry: the entry's TTL is read with its value, and an entry past it
 *   is a miss.
 *
 * A read that fills the cache races with invalidations: its answer may have
 * been read before a write that another fiber, or the feed, has already
 * reported. Every read-through therefore holds a ticket on its key (the key's
 * version and the cache's epoch when it started); every invalidation bumps
 * the version of the keys it touches (and `Lost` the epoch), and an answer is
 * kept only when its ticket is still current. Versions live only while a read
 * of their key is in flight, so memory follows the reads in flight and the
 * entries, never the writes.
 *
 * A hit is one `Clock` read, a `Map` lookup and a copy of the bytes (the
 * caller may mutate what it gets); everything else goes to the store, whose
 * answers and errors come out unchanged.
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type * as Scope from "effect/Scope"
import type { DriverChange } from "../KvDriver.js"
import type { Service } from "../KvStore.js"
import { KvError, NotFound } from "../KvStore.js"
import { keyProblem } from "../core/key.js"
import { NEAR_CACHE_OPTIONS, optionsProblem } from "../core/options.js"
import { readEntry } from "../core/iterable.js"
import type { IterableProblem } from "../core/iterable.js"
import { copyBytes } from "../core/value.js"
import type { RateLimit4Request } from "../core/rateLimit4.js"
import { REDACTED } from "./errors.js"
import { serviceChanges, serviceRateLimits, serviceRateLimits4, serviceRedactsKeys } from "./front.js"
import { readBatch } from "./readBatch.js"
import { decodeDuration, formatDuration } from "./ttl.js"
import { sleepReal } from "./eventLoop.js"

/** Options of `NearCache.layer` and `make`. */
export interface NearCacheOptions {
  readonly maxEntries?: number | undefined
  readonly maxStaleness?: Duration.Input | undefined
}

export const DEFAULT_MAX_ENTRIES = 10_000
export const DEFAULT_MAX_STALENESS = Duration.seconds(1)

/** TTL reads run at once for one `getMany`: enough to overlap round trips, few enough to leave the pool to others. */
const TTL_READS_AT_ONCE = 8

/**
 * What the cache knows of a key. `value` is `undefined` when the key is known
 * to be live (a `has` or `timeToLive` filled it) but its bytes were not read.
 * Times are milliseconds on the Effect `Clock`.
 */
interface Cached {
  readonly present: boolean
  readonly value: Uint8Array | undefined
  /** When a live entry expires (`Infinity`: never; always `Infinity` for an absent key). */
  readonly expiresAt: number
  /** When this knowledge becomes too old to use, whatever the feed says. */
  readonly staleAt: number
}

/** The version of a key while reads of it are in flight. */
interface Slot {
  version: number
  readers: number
}

/** A read-through in flight: what must not have changed for its answer to be kept. */
interface Ticket {
  readonly key: string
  readonly slot: Slot
  readonly version: number
  readonly epoch: number
  readonly startedAt: number
}

const checkOptions = (
  where: string,
  options: NearCacheOptions | undefined
): { readonly maxEntries: number; readonly maxStaleness: number } | KvError => {
  const problem = optionsProblem(where, options, NEAR_CACHE_OPTIONS)
  if (problem !== undefined) return KvError.invalidArgument("layer", problem)
  const maxEntries = options?.maxEntries ?? DEFAULT_MAX_ENTRIES
  if (!(Number.isSafeInteger(maxEntries) && maxEntries > 0)) {
    return KvError.invalidArgument("layer", `Invalid NearCache option: maxEntries must be a positive integer, got ${maxEntries}`)
  }
  const raw = options?.maxStaleness
  if (raw === undefined) return { maxEntries, maxStaleness: Duration.toMillis(DEFAULT_MAX_STALENESS) }
  const decoded = decodeDuration(raw, "maxStaleness")
  if ("millis" in decoded && decoded.millis !== undefined) return { maxEntries, maxStaleness: decoded.millis }
  const why = "problem" in decoded ? decoded.problem : `maxStaleness must be a positive, finite duration, got ${formatDuration(raw)}`
  return KvError.invalidArgument("layer", `Invalid NearCache option: ${why}`)
}

/** How long the cache waits before subscribing again after its feed failed (reading through meanwhile). */
const RESUBSCRIBE_AFTER_MILLIS = 1000

const noFeed = (why: string): KvError =>
  KvError.invalidArgument("layer", `A NearCache needs a change feed to know when its copies are stale: ${why}`)

export const make = (
  store: Service,
  options?: NearCacheOptions,
  where = "NearCache.make"
): Effect.Effect<Service, KvError, Scope.Scope> =>
  Effect.suspend(() => {
    const checked = checkOptions(where, options ?? undefined)
    if (checked instanceof KvError) return Effect.fail(checked)
    const changes = serviceChanges.get(store)
    if (changes === undefined) {
      return Effect.fail(noFeed("this store was not built by KvStore.make (or a store's layer), so it offers none"))
    }
    const cache = makeCache(store, checked.maxEntries, checked.maxStaleness)
    return Effect.gen(function*() {
      const opened = yield* Deferred.make<void, KvError>()
      /** One subscription, followed until it fails; caching is on while it is live. */
      const subscription = Effect.scoped(Effect.flatMap(changes, (feed) =>
        Effect.andThen(
          Effect.sync(() => cache.onChange({ _tag: "Resumed" })),
          Effect.andThen(
            Deferred.succeed(opened, undefined),
            Effect.andThen(
              Stream.runForEach(feed, (change) => Effect.sync(() => cache.onChange(change))),
              // a feed ends only with its store's scope: past that, nothing vouches for the copies
              Effect.fail(KvError.invalidArgument("layer", "the store's change feed ended"))
            )
          )
        )))
      const follow: Effect.Effect<void> = Effect.catchCause(subscription, (cause) =>
        Effect.flatMap(Deferred.isDone(opened), (wasOpen) => {
          if (!wasOpen) return Deferred.failCause(opened, Cause.map(cause, (error) => noFeed(error.message)))
          // the feed can no longer vouch for anything: read through until a new subscription is live
          cache.onChange({ _tag: "Lost" })
          return Effect.logWarning("effect-kv: NearCache's change feed failed; reading through the store until it is back", cause).pipe(
            Effect.andThen(sleepReal(RESUBSCRIBE_AFTER_MILLIS)),
            Effect.andThen(Effect.suspend(() => follow))
          )
        }))
      yield* Effect.forkScoped(follow)
      yield* Deferred.await(opened)
      return cache.service
    })
  })

const makeCache = (store: Service, maxEntries: number, maxStaleness: number) => {
  const redact = serviceRedactsKeys.get(store) === true
  /** Insertion order is recency: a hit moves its key to the end, the first key is the least recently used. */
  const entries = new Map<string, Cached>()
  const inFlight = new Map<string, Slot>()
  /** Bumped by `Lost`: every read in flight then was started before a gap in the feed. */
  let epoch = 0
  /** Off between `Lost` and `Resumed`: nothing read then may be kept. */
  let caching = true

  // --- invalidation -----------------------------------------------------------

  const invalidate = (key: unknown): void => {
    if (typeof key !== "string") return
    entries.delete(key)
    const slot = inFlight.get(key)
    if (slot !== undefined) slot.version++
  }

  const invalidatePrefix = (prefix: unknown): void => {
    if (typeof prefix !== "string") return
    for (const key of entries.keys()) if (key.startsWith(prefix)) entries.delete(key)
    for (const [key, slot] of inFlight) if (key.startsWith(prefix)) slot.version++
  }

  const invalidateAll = (): void => {
    entries.clear()
    epoch++
  }

  const onChange = (change: DriverChange): void => {
    switch (change._tag) {
      case "Changed":
        return invalidate(change.key)
      case "Lost":
        caching = false
        return invalidateAll()
      case "Resumed":
        caching = true
        return
    }
  }

  // --- lookups and fills --------------------------------------------------------

  /** The live knowledge of `key` at `now`, counted as use; `undefined` when there is none. */
  const lookup = (key: unknown, now: number): Cached | undefined => {
    if (typeof key !== "string") return undefined
    const cached = entries.get(key)
    if (cached === undefined) return undefined
    if (now >= cached.staleAt || now >= cached.expiresAt) {
      entries.delete(key)
      return undefined
    }
    entries.delete(key)
    entries.set(key, cached)
    return cached
  }

  const begin = (key: string, now: number): Ticket => {
    let slot = inFlight.get(key)
    if (slot === undefined) {
      slot = { version: 0, readers: 0 }
      inFlight.set(key, slot)
    }
    slot.readers++
    return { key, slot, version: slot.version, epoch, startedAt: now }
  }

  const end = (ticket: Ticket): void => {
    if (--ticket.slot.readers === 0 && inFlight.get(ticket.key) === ticket.slot) inFlight.delete(ticket.key)
  }

  /** Whether nothing that could make the ticket's answer stale happened since it started. */
  const current = (ticket: Ticket): boolean => caching && ticket.epoch === epoch && ticket.slot.version === ticket.version

  const keep = (ticket: Ticket, cached: Cached): void => {
    if (!current(ticket)) return
    entries.delete(ticket.key)
    entries.set(ticket.key, cached)
    if (entries.size > maxEntries) entries.delete(entries.keys().next().value!)
  }

  const keepAbsent = (ticket: Ticket): void =>
    keep(ticket, { present: false, value: undefined, expiresAt: Infinity, staleAt: ticket.startedAt + maxStaleness })

  /** Keeps a live entry whose expiry is `ttl` as read by the ticket's read (`Option.none()`: never). */
  const keepLive = (ticket: Ticket, value: Uint8Array | undefined, ttl: Option.Option<Duration.Duration>): void =>
    keep(ticket, {
      present: true,
      value,
      // from the start of the read: never later than the store's own expiry
      expiresAt: Option.isSome(ttl) ? ticket.startedAt + Duration.toMillis(ttl.value) : Infinity,
      staleAt: ticket.startedAt + maxStaleness
    })

  /**
   * Keeps `value` (the caller's copy is theirs: the cache copies it) with its
   * expiry: the one already known when the key's liveness is cached and still
   * current, else read now. A failed or missed expiry read keeps nothing.
   */
  const keepValue = (ticket: Ticket, value: Uint8Array): Effect.Effect<void> => {
    if (!current(ticket)) return Effect.void
    const known = entries.get(ticket.key)
    if (known !== undefined && known.present) {
      keep(ticket, { ...known, value: copyBytes(value) })
      return Effect.void
    }
    return Effect.match(store.timeToLive(ticket.key), {
      onFailure: () => undefined,
      onSuccess: (ttl) => keepLive(ticket, copyBytes(value), ttl)
    })
  }

  /** Runs `read` of `key` under a ticket (when caching) and lets `learn` keep what it tells. */
  const readThrough = <A, E>(
    key: unknown,
    now: number,
    read: Effect.Effect<A, E>,
    learn: (ticket: Ticket, exit: { readonly ok: true; readonly answer: A } | { readonly ok: false; readonly error: E }) => Effect.Effect<void>
  ): Effect.Effect<A, E> => {
    if (!caching || typeof key !== "string") return read
    const ticket = begin(key, now)
    return read.pipe(
      Effect.matchEffect({
        onFailure: (error) => Effect.andThen(learn(ticket, { ok: false, error }), Effect.fail(error)),
        onSuccess: (answer) => Effect.as(learn(ticket, { ok: true, answer }), answer)
      }),
      Effect.ensuring(Effect.sync(() => end(ticket)))
    )
  }

  const isNotFound = (error: unknown): boolean => error instanceof NotFound

  const notFound = (key: string): NotFound => new NotFound({ key: redact ? REDACTED : key })

  // --- reads ------------------------------------------------------------------

  const get: Service["get"] = (key) =>
    Effect.clockWith((clock) => {
      const now = clock.currentTimeMillisUnsafe()
      const cached = lookup(key, now)
      if (cached !== undefined) {
        if (!cached.present) return Effect.fail(notFound(key))
        if (cached.value !== undefined) return Effect.succeed(copyBytes(cached.value))
      }
      return readThrough(key, now, store.get(key), (ticket, exit) =>
        exit.ok ? keepValue(ticket, exit.answer) : Effect.sync(() => isNotFound(exit.error) && keepAbsent(ticket)))
    })

  const getOption: Service["getOption"] = (key) =>
    Effect.clockWith((clock) => {
      const now = clock.currentTimeMillisUnsafe()
      const cached = lookup(key, now)
      if (cached !== undefined) {
        if (!cached.present) return Effect.succeed(Option.none())
        if (cached.value !== undefined) return Effect.succeed(Option.some(copyBytes(cached.value)))
      }
      return readThrough(key, now, store.getOption(key), (ticket, exit) =>
        !exit.ok
          ? Effect.void
          : Option.isSome(exit.answer)
          ? keepValue(ticket, exit.answer.value)
          : Effect.sync(() => keepAbsent(ticket)))
    })

  const has: Service["has"] = (key) =>
    Effect.clockWith((clock) => {
      const now = clock.currentTimeMillisUnsafe()
      const cached = lookup(key, now)
      if (cached !== undefined) return Effect.succeed(cached.present)
      return readThrough(key, now, store.has(key), (ticket, exit) => {
        if (!exit.ok) return Effect.void
        if (!exit.answer) return Effect.sync(() => keepAbsent(ticket))
        return Effect.match(store.timeToLive(ticket.key), {
          onFailure: () => undefined,
          onSuccess: (ttl) => keepLive(ticket, undefined, ttl)
        })
      })
    })

  const timeToLive: Service["timeToLive"] = (key) =>
    Effect.clockWith((clock) => {
      const now = clock.currentTimeMillisUnsafe()
      const cached = lookup(key, now)
      if (cached !== undefined) {
        if (!cached.present) return Effect.fail(notFound(key))
        return Effect.succeed(cached.expiresAt === Infinity ? Option.none() : Option.some(Duration.millis(cached.expiresAt - now)))
      }
      return readThrough(key, now, store.timeToLive(key), (ticket, exit) =>
        Effect.sync(() => {
          if (exit.ok) keepLive(ticket, entries.get(ticket.key)?.value, exit.answer)
          else if (isNotFound(exit.error)) keepAbsent(ticket)
        }))
    })

  /**
   * From the cache when every key is a hit; else the misses (distinct) in one
   * `getMany` of the store, whose answers are kept like `getOption`'s. Keys the
   * store would refuse go to it as they came, so its refusal is the answer.
   */
  const getMany: Service["getMany"] = (keys) =>
    Effect.flatMap(readKeys("getMany", keys), (items) =>
      Effect.clockWith((clock) => {
        const now = clock.currentTimeMillisUnsafe()
        const answers: Array<Option.Option<Uint8Array> | undefined> = new Array(items.length)
        const misses = new Map<string, Array<number>>()
        for (let i = 0; i < items.length; i++) {
          const key = items[i]
          const cached = lookup(key, now)
          if (cached !== undefined && (!cached.present || cached.value !== undefined)) {
            answers[i] = cached.present ? Option.some(copyBytes(cached.value!)) : Option.none()
          } else if (typeof key !== "string" || keyProblem(key) !== undefined) {
            return store.getMany(items as Array<string>)
          } else {
            const at = misses.get(key)
            if (at === undefined) misses.set(key, [i])
            else at.push(i)
          }
        }
        if (misses.size === 0) return Effect.succeed(answers as Array<Option.Option<Uint8Array>>)
        const missed = Array.from(misses.keys())
        const tickets = caching ? missed.map((key) => begin(key, now)) : []
        const read = Effect.flatMap(store.getMany(missed), (found) => {
          for (let m = 0; m < missed.length; m++) {
            const value = found[m]!
            const at = misses.get(missed[m]!)!
            answers[at[0]!] = value
            // each duplicate gets its own array: the caller may change one without the others
            for (let d = 1; d < at.length; d++) answers[at[d]!] = Option.map(value, copyBytes)
          }
          if (tickets.length === 0) return Effect.succeed(answers as Array<Option.Option<Uint8Array>>)
          return Effect.as(
            Effect.forEach(tickets, (ticket, m) => {
              const value = found[m]!
              return Option.isSome(value) ? keepValue(ticket, value.value) : Effect.sync(() => keepAbsent(ticket))
            }, { concurrency: TTL_READS_AT_ONCE, discard: true }),
            answers as Array<Option.Option<Uint8Array>>
          )
        })
        return tickets.length === 0 ? read : Effect.ensuring(read, Effect.sync(() => tickets.forEach(end)))
      }))

  // --- writes -----------------------------------------------------------------

  /** A write of `key`: whatever its outcome (an interrupted write may have happened), the local copy goes. */
  const writing = <A, E, R>(key: unknown, write: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.ensuring(write, Effect.sync(() => invalidate(key)))

  /**
   * The caller's iterable read once, as the store reads it (see readBatch.ts),
   * so the cache learns the keys and the store gets the same items; refused
   * with the store's own words when it cannot be read.
   */
  const readKeys = (op: string, iterable: unknown): Effect.Effect<Array<unknown>, KvError> =>
    Effect.flatMap(readBatch(iterable, "keys"), (read) => Array.isArray(read) ? Effect.succeed(read) : Effect.fail(unreadable(op, "keys", read)))

  const unreadable = (op: string, what: string, read: IterableProblem): KvError =>
    new KvError({
      reason: "InvalidArgument",
      op,
      message: `Invalid ${what} for ${op}: ${read.problem}`,
      ...(read.cause === undefined ? {} : { cause: read.cause })
    })

  const setMany: Service["setMany"] = (iterable, ttl) =>
    Effect.flatMap(readBatch(iterable, "entries"), (read) => {
      if (!Array.isArray(read)) return Effect.fail(unreadable("setMany", "entries", read))
      return Effect.ensuring(
        store.setMany(read as Array<readonly [string, Uint8Array]>, ttl),
        Effect.sync(() => {
          for (const item of read) {
            const entry = readEntry(item)
            if (!("problem" in entry)) invalidate(entry.key)
          }
        })
      )
    })

  const deleteMany: Service["deleteMany"] = (iterable) =>
    Effect.flatMap(readKeys("deleteMany", iterable), (keys) =>
      Effect.ensuring(store.deleteMany(keys as Array<string>), Effect.sync(() => keys.forEach(invalidate))))

  /** Drops the entries whose expiry has passed, as the store's `cleanup` does with its own. */
  const sweep = Effect.clockWith((clock) =>
    Effect.sync(() => {
      const now = clock.currentTimeMillisUnsafe()
      for (const [key, cached] of entries) if (now >= cached.expiresAt || now >= cached.staleAt) entries.delete(key)
    })
  )

  const service: Service = {
    ...store,
    get,
    getOption,
    has,
    timeToLive,
    getMany,
    set: (key, value, ttl) => writing(key, store.set(key, value, ttl)),
    setIfAbsent: (key, value, ttl) => writing(key, store.setIfAbsent(key, value, ttl)),
    delete: (key) => writing(key, store.delete(key)),
    update: (key, f, ttl) => writing(key, store.update(key, f, ttl)),
    increment: (key, options) => writing(key, store.increment(key, options)),
    expire: (key, ttl) => writing(key, store.expire(key, ttl)),
    setMany,
    deleteMany,
    deletePrefix: (prefix) => Effect.ensuring(store.deletePrefix(prefix), Effect.sync(() => invalidatePrefix(prefix))),
    cleanup: Effect.tap(store.cleanup, () => sweep)
  }
  serviceRedactsKeys.set(service, redact)
  const rateLimit = serviceRateLimits.get(store)
  if (rateLimit !== undefined) serviceRateLimits.set(service, (key, request) => writing(key, rateLimit(key, request)))
  // Effect 4: the limiter's steps the driver decides (PostgreSQL, on the database's clock) stay the store's
  const rateLimit4 = serviceRateLimits4.get(store)
  if (rateLimit4 !== undefined) {
    serviceRateLimits4.set(service, <R extends RateLimit4Request>(key: string, request: R) => writing(key, rateLimit4(key, request)))
  }
  const changes = serviceChanges.get(store)
  if (changes !== undefined) serviceChanges.set(service, changes)

  return { service, onChange, size: () => entries.size }
}
