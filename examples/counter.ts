/**
 * Atomic counters: `KvStore.increment` for plain counting, `KvStore.update`
 * where a counter needs a rule of its own.
 *
 * Shows: many concurrent increments of one (initially missing) key end with the
 * exact total (`increment` is one atomic step on every backend: one statement
 * on PostgreSQL); and an update function that fails with its own typed error
 * (`CounterLimitExceeded`) writes nothing: the error comes out of `update`
 * unchanged and the stored value stays as it was.
 *
 * The program needs only `KvStore`; the backend is chosen by whoever runs it.
 */
import type * as Duration from "effect/Duration"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { KvStore } from "effect-kv"

/** The counter's increment would take it above its maximum; nothing was written. */
export class CounterLimitExceeded extends Data.TaggedError("CounterLimitExceeded")<{
  readonly key: string
  readonly current: number
  readonly max: number
}> {
  override get message(): string {
    return `Counter ${JSON.stringify(this.key)} is at ${this.current}; incrementing it would exceed ${this.max}`
  }
}

/** The stored bytes are not a counter (some other program wrote the key). */
export class CounterCorrupted extends Data.TaggedError("CounterCorrupted")<{ readonly key: string }> {
  override get message(): string {
    return `Key ${JSON.stringify(this.key)} does not hold a counter`
  }
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

// The text `increment` itself stores: decimal ASCII, readable in `psql` and in a debugger.
/** The bytes stored for `count`. */
export const encodeCount = (count: number): Uint8Array => encoder.encode(String(count))

/** The count stored in `bytes`, or `CounterCorrupted`. */
export const decodeCount = (key: string, bytes: Uint8Array): Effect.Effect<number, CounterCorrupted> => {
  const text = decoder.decode(bytes)
  return /^(0|-?[1-9]\d{0,15})$/.test(text) && Number.isSafeInteger(Number(text))
    ? Effect.succeed(Number(text))
    : Effect.fail(new CounterCorrupted({ key }))
}

/** The current count of `key`; a missing or expired counter is 0. */
export const read = (key: string): Effect.Effect<number, CounterCorrupted | KvStore.KvError, KvStore.KvStore> =>
  KvStore.get(key).pipe(
    Effect.flatMap((bytes) => decodeCount(key, bytes)),
    Effect.catchTag("NotFound", () => Effect.succeed(0))
  )

/**
 * Adds `by` (default 1) to the counter at `key` atomically and succeeds with
 * the new count; bytes that are not a counter are refused by the store, and
 * reported here as `CounterCorrupted`.
 */
export const increment = (
  key: string,
  options: { readonly by?: number; readonly ttl?: Duration.DurationInput } = {}
): Effect.Effect<number, CounterCorrupted | KvStore.KvError, KvStore.KvStore> =>
  KvStore.increment(key, options).pipe(
    Effect.catchIf(
      (error) => error.reason === "InvalidArgument" && error.message.includes("not an integer"),
      () => Effect.fail(new CounterCorrupted({ key }))
    )
  )

/**
 * Like `increment`, but an increment that would take the counter above `max`
 * fails with `CounterLimitExceeded` from inside the update function, so
 * nothing is written and the counter keeps its value.
 */
export const incrementUpTo = (
  key: string,
  max: number,
  options: { readonly by?: number; readonly ttl?: Duration.DurationInput } = {}
): Effect.Effect<number, CounterLimitExceeded | CounterCorrupted | KvStore.KvError, KvStore.KvStore> => {
  const by = options.by ?? 1
  return KvStore.update(
    key,
    (current) =>
      Effect.gen(function*() {
        const count = Option.isSome(current) ? yield* decodeCount(key, current.value) : 0
        if (count + by > max) return yield* new CounterLimitExceeded({ key, current: count, max })
        return encodeCount(count + by)
      }),
    options.ttl
  ).pipe(Effect.flatMap((written) => decodeCount(key, written)))
}

/** What the counter program observed. */
export interface CounterReport {
  readonly concurrentIncrements: number
  readonly total: number
  readonly rejected: CounterLimitExceeded | undefined
  readonly afterRejection: number
}

/**
 * Increments one missing key from `concurrency` fibers at once, then tries an
 * increment past a maximum and reads the value again.
 */
export const program = (
  prefix: string,
  concurrency = 100
): Effect.Effect<CounterReport, CounterCorrupted | KvStore.KvError, KvStore.KvStore> =>
  Effect.gen(function*() {
    const key = `${prefix}page-views`

    yield* Effect.all(Array.from({ length: concurrency }, () => increment(key)), { concurrency: "unbounded" })
    const total = yield* read(key)
    yield* Effect.log(`${concurrency} concurrent increments of a missing key -> ${total}`)

    const rejected = yield* incrementUpTo(key, total + 1, { by: 5 }).pipe(
      Effect.as(undefined),
      Effect.catchTag("CounterLimitExceeded", (error) => Effect.succeed(error))
    )
    const afterRejection = yield* read(key)
    yield* Effect.log(
      `increment by 5 with max ${total + 1} -> ${rejected?._tag ?? "written"}; value still ${afterRejection}`
    )

    return { concurrentIncrements: concurrency, total, rejected, afterRejection }
  })
