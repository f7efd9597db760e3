/**
 * The front's operations on many keys: `getMany`, `setMany`, `deleteMany`,
 * `deletePrefix`, `count` and the streams, over any driver. Every key and value
 * of a batch is checked before any I/O; a batch that touches a locked key waits
 * for all its keys' locks, taken in code-point order (or is refused when the
 * caller is inside the update of one of them); streams page by keyset, one page
 * in memory at a time, a page of entries bounded in bytes too. Shares the single-key front's lock and errors.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type { Driver, KeyedLock, StreamOptions } from "../KvStore.js"
import { DriverError, KvError } from "../KvStore.js"
import { describeKind } from "../core/describe.js"
import type { Errors } from "./errors.js"
import { readEntry } from "../core/iterable.js"
import { compareCodePoints, keyProblem } from "../core/key.js"
import { copyBytes, valueProblem } from "../core/value.js"
import { isFinal } from "./finalPage.js"
import { readBatch } from "./readBatch.js"

/** Keys per page when the front pages on its own (count, deletePrefix) and the default `batchSize`. */
export const PAGE_SIZE = 1000

/** Bytes of values per page of `streamEntries` at most (a larger entry comes alone). */
export const MAX_PAGE_BYTES = 16 * 1024 * 1024

export const makeBatchOperations = (context: {
  readonly driver: Driver
  readonly lock: KeyedLock
  /** Whether the front (not the driver) makes writes of a locked key wait. */
  readonly frontWaits: boolean
  readonly redactKeys: boolean
  readonly errors: Errors
}) => {
  const { driver, frontWaits, lock, redactKeys } = context
  const { backend, checkPrefix, checkTtl, invalid, lockFailure, ownUpdate } = context.errors

  /** The caller's iterable read once (bounded, see readBatch.ts), or the refusal. */
  const readAll = (op: string, what: string, iterable: unknown): Effect.Effect<Array<unknown>, KvError> =>
    Effect.flatMap(readBatch(iterable, what), (read) =>
      Array.isArray(read) ? Effect.succeed(read) : Effect.fail(
        new KvError({
          reason: "InvalidArgument",
          op,
          message: `Invalid ${what} for ${op}: ${read.problem}`,
          ...(read.cause === undefined ? {} : { cause: read.cause })
        })
      ))

  /** Every key checked, in input order; the first bad one refuses the call. */
  const checkKeys = (op: string, iterable: unknown): Effect.Effect<Array<string>, KvError> =>
    Effect.flatMap(readAll(op, "keys", iterable), (keys) => {
      for (let i = 0; i < keys.length; i++) {
        const problem = keyProblem(keys[i])
        if (problem !== undefined) return Effect.fail(invalid(op, keys[i], `Invalid key for ${op} (item ${i}): ${problem}`))
      }
      return Effect.succeed(keys as Array<string>)
    })

  /** Every entry checked (key, then value), in input order; the last value of a key wins, copied. */
  const checkEntries = (op: string, iterable: unknown): Effect.Effect<Map<string, Uint8Array>, KvError> =>
    Effect.flatMap(readAll(op, "entries", iterable), (entries) => {
      const latest = new Map<string, Uint8Array>()
      for (let i = 0; i < entries.length; i++) {
        const entry = readEntry(entries[i])
        if ("problem" in entry) {
          return Effect.fail(
            new KvError({
              reason: "InvalidArgument",
              op,
              message: `Invalid entry for ${op} (item ${i}): ${entry.problem}`,
              ...(entry.cause === undefined ? {} : { cause: entry.cause })
            })
          )
        }
        const { key, value } = entry
        const keyBad = keyProblem(key)
        if (keyBad !== undefined) return Effect.fail(invalid(op, key, `Invalid key for ${op} (item ${i}): ${keyBad}`))
        const valueBad = valueProblem(value)
        if (valueBad !== undefined) return Effect.fail(invalid(op, key, `Invalid value for ${op} (item ${i}): ${valueBad}`))
        latest.delete(key as string) // keeps the map in order of last appearance
        latest.set(key as string, value as Uint8Array)
      }
      return Effect.succeed(latest)
    })

  const withLocks = <A, E>(sortedKeys: ReadonlyArray<string>, effect: Effect.Effect<A, E>): Effect.Effect<A, E | DriverError> =>
    sortedKeys.reduceRight((inner: Effect.Effect<A, E | DriverError>, key) => lock.withLock(key, inner), effect)

  /**
   * A write of several keys (distinct, sorted by code point): refused when the
   * caller runs inside the update of one of them, else run — holding all their
   * locks, taken in that order, when the front does the waiting and one of
   * them is locked. Nothing is paid unless a key is locked.
   */
  const writeBatch = <A, E>(
    op: string,
    sortedKeys: ReadonlyArray<string>,
    effect: Effect.Effect<A, E>
  ): Effect.Effect<A, E | KvError> => {
    if (!sortedKeys.some(lock.isLocked)) return effect
    return Effect.flatMap(lock.keysHeldByCurrentFiber, (held): Effect.Effect<A, E | KvError> => {
      const own = held.find((key) => sortedKeys.includes(key))
      if (own !== undefined) return Effect.fail(ownUpdate(op, own))
      return frontWaits ? lockFailure(op, undefined, withLocks(sortedKeys, effect)) : effect
    })
  }

  const span = (name: string, attributes: Record<string, unknown>) =>
    Effect.withSpan(`kv.${name}`, { attributes }, { captureStackTrace: false })

  const prefixAttributes = (prefix: string): Record<string, unknown> => (redactKeys ? {} : { "kv.prefix": prefix })

  const driverGetMany = (distinct: ReadonlyArray<string>): Effect.Effect<ReadonlyArray<Option.Option<Uint8Array>>, DriverError> =>
    driver.getMany !== undefined
      ? driver.getMany(distinct)
      // a few at a time: a remote backend answers them in parallel
      : Effect.forEach(distinct, driver.get, { concurrency: 8 })

  const getMany = (keys: Iterable<string>): Effect.Effect<ReadonlyArray<Option.Option<Uint8Array>>, KvError> =>
    Effect.flatMap(checkKeys("getMany", keys), (checked): Effect.Effect<ReadonlyArray<Option.Option<Uint8Array>>, KvError> => {
      if (checked.length === 0) return Effect.succeed([])
      const distinct = Array.from(new Set(checked))
      const copy = (found: Option.Option<Uint8Array>) => (Option.isSome(found) ? Option.some(copyBytes(found.value)) : found)
      return backend("getMany", undefined, driverGetMany(distinct)).pipe(
        Effect.map((found) => {
          if (distinct.length === checked.length) return found.map(copy)
          const byKey = new Map<string, Option.Option<Uint8Array>>()
          for (let i = 0; i < distinct.length; i++) byKey.set(distinct[i]!, found[i]!)
          return checked.map((key) => copy(byKey.get(key)!))
        }),
        span("getMany", { "kv.keys": checked.length })
      )
    })

  const setMany = (
    entries: Iterable<readonly [string, Uint8Array]>,
    ttl?: Duration.Input
  ): Effect.Effect<void, KvError> =>
    Effect.flatMap(checkEntries("setMany", entries), (checked) => {
      const millis = checkTtl("setMany", undefined, ttl)
      if (millis instanceof KvError) return Effect.fail(millis)
      if (checked.size === 0) return Effect.void
      const sorted = Array.from(checked, ([key, value]) => [key, copyBytes(value)] as const)
        .sort((a, b) => compareCodePoints(a[0], b[0]))
      const write = driver.setMany !== undefined
        ? driver.setMany(sorted, millis)
        : Effect.forEach(sorted, ([key, value]) => driver.set(key, value, millis), { discard: true })
      return writeBatch("setMany", sorted.map(([key]) => key), backend("setMany", undefined, write)).pipe(
        span("setMany", { "kv.keys": sorted.length })
      )
    })

  /** Deletes distinct keys sorted by code point: the live entries removed. */
  const deleteSorted = (op: string, sorted: ReadonlyArray<string>): Effect.Effect<number, KvError> => {
    const remove = driver.deleteMany !== undefined
      ? driver.deleteMany(sorted)
      : Effect.reduce(sorted, () => 0, (n: number, key) => Effect.map(driver.delete(key), (removed) => (removed ? n + 1 : n)))
    return writeBatch(op, sorted, backend(op, undefined, remove))
  }

  const deleteMany = (keys: Iterable<string>): Effect.Effect<number, KvError> =>
    Effect.flatMap(checkKeys("deleteMany", keys), (checked) => {
      if (checked.length === 0) return Effect.succeed(0)
      const sorted = Array.from(new Set(checked)).sort(compareCodePoints)
      return deleteSorted("deleteMany", sorted).pipe(span("deleteMany", { "kv.keys": sorted.length }))
    })

  /** Runs `step` on page after page of the live keys under `prefix`, each starting after the previous one's last key. */
  const eachPage = <S>(prefix: string, initial: S, step: (state: S, page: ReadonlyArray<string>) => Effect.Effect<S, KvError>, op: string) => {
    const loop = (state: S, after: string | undefined): Effect.Effect<S, KvError> =>
      Effect.flatMap(backend(op, prefix, driver.keysPage(prefix, after, PAGE_SIZE)), (page) =>
        page.length === 0
          ? Effect.succeed(state)
          : Effect.flatMap(step(state, page), (next) =>
            page.length < PAGE_SIZE ? Effect.succeed(next) : loop(next, page[page.length - 1])))
    return loop(initial, undefined)
  }

  const deletePrefix = (prefix: string): Effect.Effect<number, KvError> =>
    Effect.suspend(() => {
      const bad = checkPrefix("deletePrefix", prefix)
      if (bad !== undefined) return Effect.fail(bad)
      const run = driver.deletePrefix !== undefined
        ? backend("deletePrefix", prefix, driver.deletePrefix(prefix))
        : eachPage(prefix, 0, (n, page) => Effect.map(deleteSorted("deletePrefix", page), (removed) => n + removed), "deletePrefix")
      // a key under the prefix whose update the caller is inside could never be deleted: refuse, as for one key
      return Effect.flatMap(lock.keysHeldByCurrentFiber, (held): Effect.Effect<number, KvError> => {
        const own = held.find((key) => key.startsWith(prefix))
        return own !== undefined ? Effect.fail(ownUpdate("deletePrefix", own)) : run
      }).pipe(span("deletePrefix", prefixAttributes(prefix)))
    })

  const count = (prefix: string): Effect.Effect<number, KvError> =>
    Effect.suspend(() => {
      const bad = checkPrefix("count", prefix)
      if (bad !== undefined) return Effect.fail(bad)
      return (driver.count !== undefined
        ? backend("count", prefix, driver.count(prefix))
        : eachPage(prefix, 0, (n, page) => Effect.succeed(n + page.length), "count")).pipe(span("count", prefixAttributes(prefix)))
    })

  const checkBatchSize = (op: string, options: unknown): number | KvError => {
    let raw: unknown
    try {
      raw = (options as StreamOptions | undefined)?.batchSize
    } catch (thrown) {
      return new KvError({ reason: "InvalidArgument", op, cause: thrown, message: `Invalid options for ${op}: they could not be read` })
    }
    if (raw === undefined) return PAGE_SIZE
    if (typeof raw === "number" && Number.isSafeInteger(raw) && raw > 0) return raw
    return invalid(op, undefined, `Invalid batchSize for ${op}: expected a positive integer, got ${typeof raw === "number" ? raw : describeKind(raw)}`)
  }

  /** A page and where the next one starts (`undefined`: this was the last). */
  type Page<A> = readonly [ReadonlyArray<A>, string | undefined]

  const lastIfFull = (keys: ReadonlyArray<string>, limit: number): string | undefined =>
    keys.length < limit ? undefined : keys[keys.length - 1]

  /** Keyset pagination: each page starts after the last key of the one before; one page in memory at a time. */
  const pages = <A>(
    op: string,
    prefix: string,
    options: StreamOptions | undefined,
    page: (after: string | undefined, limit: number) => Effect.Effect<Page<A>, DriverError>
  ): Stream.Stream<A, KvError> =>
    Stream.suspend(() => {
      const bad = checkPrefix(op, prefix)
      if (bad !== undefined) return Stream.fail(bad)
      const size = checkBatchSize(op, options)
      if (size instanceof KvError) return Stream.fail(size)
      return Stream.paginate(undefined as string | undefined, (after) =>
        Effect.map(backend(op, prefix, page(after, size)), ([items, next]) =>
          [items, Option.fromNullishOr(next)] as const)).pipe(
          Stream.withSpan(`kv.${op}`, { attributes: prefixAttributes(prefix) })
        )
    })

  /**
   * How many of `entries` (from the first) fit a page of `MAX_PAGE_BYTES` of
   * values: the first one however large.
   */
  const fitting = (entries: ReadonlyArray<readonly [string, Uint8Array]>): number => {
    let bytes = 0
    for (let n = 0; n < entries.length; n++) {
      bytes += entries[n]![1].length
      if (n > 0 && bytes > MAX_PAGE_BYTES) return n
    }
    return entries.length
  }

  /**
   * A page of entries, bounded in count and bytes. A page that passes the
   * bytes (a driver that ignores `maxBytes`, or the default path) is cut, and
   * the next page starts after its last entry kept: the rest is read again.
   */
  const entriesPage = (prefix: string, after: string | undefined, limit: number): Effect.Effect<Page<readonly [string, Uint8Array]>, DriverError> =>
    driver.entriesPage !== undefined
      ? Effect.map(driver.entriesPage(prefix, after, limit, MAX_PAGE_BYTES), (entries): Page<readonly [string, Uint8Array]> => {
        const kept = fitting(entries)
        if (kept < entries.length) return [entries.slice(0, kept), entries[kept - 1]![0]]
        // short of `limit` may mean cut by bytes: only the driver's mark (or an empty page) says it is the last
        return [entries, entries.length === 0 || isFinal(entries) ? undefined : entries[entries.length - 1]![0]]
      })
      // keys gone between the two reads are left out; the next page still starts after the last key listed
      : Effect.flatMap(driver.keysPage(prefix, after, limit), (keys) =>
        keys.length === 0 ? Effect.succeed<Page<readonly [string, Uint8Array]>>([[], undefined]) : Effect.map(driverGetMany(keys), (values): Page<readonly [string, Uint8Array]> => {
          const entries: Array<readonly [string, Uint8Array]> = []
          for (let i = 0; i < keys.length; i++) {
            const found = values[i]!
            if (Option.isSome(found)) entries.push([keys[i]!, found.value])
          }
          const kept = fitting(entries)
          return kept < entries.length ? [entries.slice(0, kept), entries[kept - 1]![0]] : [entries, lastIfFull(keys, limit)]
        }))

  const streamKeys = (prefix: string, options?: StreamOptions): Stream.Stream<string, KvError> =>
    pages("streamKeys", prefix, options, (after, limit) =>
      Effect.map(driver.keysPage(prefix, after, limit), (keys) => [keys, lastIfFull(keys, limit)] as const))

  const streamEntries = (prefix: string, options?: StreamOptions): Stream.Stream<readonly [string, Uint8Array], KvError> =>
    pages("streamEntries", prefix, options, (after, limit) =>
      Effect.map(entriesPage(prefix, after, limit), ([entries, next]) =>
        [entries.map(([key, value]) => [key, copyBytes(value)] as const), next] as const))

  return { getMany, setMany, deleteMany, deletePrefix, count, streamKeys, streamEntries }
}
