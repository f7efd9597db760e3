/**
 * The one front over every driver: what `KvStore.Service` promises beyond the
 * driver's primitives lives here, once — argument checks in one fixed order
 * (key, then value or function, then TTL and options), TTL decoding, copies of
 * values in and out, the per-key lock and the guard against writing a key
 * from inside its own update, typed errors (with keys redacted on request),
 * spans, and the sweep schedule.
 *
 * Every method checks its arguments when its effect runs (inside
 * `Effect.suspend`), so a method never throws, and running one `set` effect
 * twice writes the array as it is each time.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type { Driver, Entry, KeyedLock, RateLimitAnswer, RateLimitRequest, Write } from "../KvDriver.js"
import type { IncrementOptions, MakeOptions, Service } from "../KvStore.js"
import { KvError, NotFound } from "../KvStore.js"
import { addToCounter, encodeCounter, NOT_A_COUNTER, parseCounter } from "../core/counter.js"
import { describeKind } from "../core/describe.js"
import { INVALID_STATE, rateLimitRequestProblem, rateLimitStep } from "../core/rateLimit.js"
import type { RateLimit4Answer, RateLimit4Request } from "../core/rateLimit4.js"
import { makeErrors } from "./errors.js"
import { makeBatchOperations } from "./frontBatches.js"
import { driversLockingModify, makeKeyedLock } from "./keyedLock.js"
import { matchCause } from "./matchCause.js"
import type { ChangeFeed } from "./watch.js"
import { makeChangeFeeds } from "./watch.js"
import { rateLimit4Of } from "./rateLimit4Driver.js"
import { decodeDuration, formatDuration } from "./ttl.js"
import { copyBytes, valueProblem } from "../core/value.js"

/** The update function's own failure, defect or interruption, carried through the driver untouched. */
class FunctionFailure {
  constructor(readonly cause: Cause.Cause<unknown>) {}
}

/** A refusal raised by the front inside `modify` (e.g. the function returned no bytes). */
class Refusal {
  constructor(readonly error: KvError) {}
}

const KEEP: Write = { _tag: "Keep" }

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder()

const functionFailed = (cause: Cause.Cause<unknown>): Effect.Effect<never, FunctionFailure> =>
  Effect.fail(new FunctionFailure(cause))

/**
 * Stores built by `make`, with how they report keys: a `prefixed` view of one
 * keeps keys out of its own errors when the store does.
 */
export const serviceRedactsKeys = new WeakMap<Service, boolean>()

/** One `KvRateLimiter` step on a key (see `Driver.rateLimit`). */
export type RateLimit = (key: string, request: RateLimitRequest) => Effect.Effect<RateLimitAnswer, KvError>

/**
 * The rate-limit step of stores built by `make` and of their prefixed views,
 * kept out of the public `Service`: `KvRateLimiter` looks its store up here,
 * and runs its steps through `update` on the Effect `Clock` for any other.
 */
export const serviceRateLimits = new WeakMap<Service, RateLimit>()

/**
 * The shared change subscription of stores built by `make` and of their
 * prefixed views (see `ChangeFeed`), kept out of the public `Service`:
 * `NearCache` looks its store up here.
 */
export const serviceChanges = new WeakMap<Service, ChangeFeed>()

/** One step of the Effect 4 limiter decided by the driver (see `rateLimit4Driver.ts`). */
export type RateLimit4 = <R extends RateLimit4Request>(key: string, request: R) => Effect.Effect<RateLimit4Answer<R>, KvError>

/**
 * The Effect 4 limiter's steps of stores whose driver decides them (PostgreSQL,
 * on the database's clock) and of their prefixed views; `KvRateLimiter` runs
 * its steps through `update` on the Effect `Clock` for any other.
 */
export const serviceRateLimits4 = new WeakMap<Service, RateLimit4>()

/** `Effect.isEffect` that never throws (it probes the value with `in`, which a Proxy can make throw). */
const isEffect = (value: unknown): boolean => {
  try {
    return Effect.isEffect(value)
  } catch {
    return false
  }
}

/**
 * An effect that is complete already (`Effect.succeed`, `Effect.fail`: in
 * Effect 4 these are `Exit` values themselves), so it can be decided without
 * running it; never throws.
 */
const isDone = (effect: Effect.Effect<unknown, unknown, unknown>): effect is Exit.Exit<unknown, unknown> => {
  try {
    return Exit.isExit(effect)
  } catch {
    return false
  }
}

const decodeOptions = (
  options: MakeOptions | undefined
): Effect.Effect<{ readonly redactKeys: boolean; readonly interval: Duration.Duration | undefined }, KvError> => {
  const redactKeys = options?.redactKeys === true
  const raw = options?.cleanupInterval
  if (raw === undefined) return Effect.succeed({ redactKeys, interval: undefined })
  const decoded = decodeDuration(raw, "cleanupInterval")
  if ("millis" in decoded && decoded.millis !== undefined) {
    return Effect.succeed({ redactKeys, interval: Duration.millis(decoded.millis) })
  }
  const problem = "problem" in decoded
    ? decoded.problem
    : `cleanupInterval must be a positive, finite duration, got ${formatDuration(raw)}`
  return Effect.fail(KvError.invalidArgument("layer", `Invalid option: ${problem}`))
}

export const make = (
  driver: Driver,
  options?: MakeOptions
): Effect.Effect<Service, KvError, Scope.Scope> =>
  Effect.flatMap(decodeOptions(options ?? undefined), ({ interval, redactKeys }) => {
    const service = makeService(driver, redactKeys)
    if (interval === undefined) return Effect.succeed(service)
    return (driver.sweep ?? driver.cleanup).pipe(
      Effect.tapCause((cause) => Effect.logWarning(`effect-kv: scheduled ${driver.name} cleanup failed`, cause)),
      // logged above; a failed sweep must not end the schedule
      Effect.catchCause(() => Effect.void),
      Effect.schedule(Schedule.spaced(interval)),
      Effect.forkScoped,
      Effect.as(service)
    )
  })

const makeService = (driver: Driver, redactKeys: boolean): Service => {
  // the driver's store (shared by processes) sees the waits of fibers that hold keys: see KeyedLockOptions
  const lock: KeyedLock = driver.lock ?? makeKeyedLock({ holdersWaitInDriver: true })
  /** With its own lock the driver makes its writes wait; otherwise the front does. */
  const frontWaits = driver.lock === undefined
  /** The driver takes its lock in `modify` itself, deciding in one step without it when it can (see `withLockedStep`). */
  const driverLocksModify = driver.lock !== undefined && driversLockingModify.has(driver)

  const errors = makeErrors(driver.name, redactKeys)
  const {
    backend,
    checkKey,
    checkPrefix,
    checkTtl,
    checkValue,
    fromDriver,
    fromDriverCause,
    invalid,
    lockFailure,
    notFound,
    ownUpdate,
    quoted
  } = errors

  // --- the guard and the lock ----------------------------------------------

  /**
   * A write of `key`: refused when the caller runs inside the update of `key`
   * that holds its lock (it could never proceed), else run — after that update
   * when the front does the waiting. Nothing is paid unless the key is locked.
   */
  const write = <A, E>(op: string, key: string, effect: Effect.Effect<A, E>): Effect.Effect<A, E | KvError> =>
    guard<A, E | KvError, never>(op, key, frontWaits ? lockFailure(op, key, lock.withLock(key, effect)) : effect, effect)

  /** `whenLocked` unless the caller is inside the update holding `key`; `effect` when nobody holds it. */
  const guard = <A, E, R>(
    op: string,
    key: string,
    whenLocked: Effect.Effect<A, E, R>,
    effect: Effect.Effect<A, E, R> = whenLocked
  ): Effect.Effect<A, E | KvError, R> =>
    !lock.isLocked(key) ? effect : Effect.flatMap(
      lock.heldByCurrentFiber(key),
      (held): Effect.Effect<A, E | KvError, R> => held ? Effect.fail(ownUpdate(op, key)) : whenLocked
    )

  /**
   * Runs `f` atomically through `driver.modify` under the key's lock. `f` comes
   * from the front: its failures are `Refusal`s or the user's `FunctionFailure`.
   */
  const modify = <A, R>(
    op: string,
    key: string,
    f: (current: Option.Option<Entry>) => Effect.Effect<readonly [A, Write], FunctionFailure | Refusal, R>
  ): Effect.Effect<A, KvError, R> =>
    guard(
      op,
      key,
      Effect.catchCause(driverLocksModify ? driver.modify(key, f) : lock.withLock(key, driver.modify(key, f)), (cause) => {
        if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
        const failure = Cause.findErrorOption(cause)
        if (Option.isSome(failure)) {
          const error = failure.value
          if (error instanceof FunctionFailure) return Effect.failCause(error.cause as Cause.Cause<never>)
          if (error instanceof Refusal) return Effect.fail(error.error)
        }
        return Effect.fail(fromDriver(op, key, cause))
      })
    )

  /** A modification decided by the front alone (no user function). */
  const modifyWith = <A>(
    op: string,
    key: string,
    decide: (current: Option.Option<Entry>) => readonly [A, Write] | KvError
  ) =>
    modify(op, key, (current) => {
      const decided = decide(current)
      return decided instanceof KvError ? Effect.fail(new Refusal(decided)) : Effect.succeed(decided)
    })

  // --- operations -----------------------------------------------------------

  const getOption = (op: string, key: string): Effect.Effect<Option.Option<Uint8Array>, KvError> => {
    const bad = checkKey(op, key)
    if (bad !== undefined) return Effect.fail(bad)
    return matchCause(
      driver.get(key),
      fromDriverCause(op, key),
      (found) => Effect.succeed(Option.isSome(found) ? Option.some(copyBytes(found.value)) : found)
    )
  }

  const get = (key: string): Effect.Effect<Uint8Array, NotFound | KvError> =>
    Effect.suspend(() => {
      const bad = checkKey("get", key)
      if (bad !== undefined) return Effect.fail(bad)
      return matchCause(
        driver.get(key),
        fromDriverCause("get", key),
        (found) => Option.isSome(found) ? Effect.succeed(copyBytes(found.value)) : Effect.fail(notFound(key))
      )
    })

  const set = (key: string, value: Uint8Array, ttl?: Duration.Input): Effect.Effect<void, KvError> =>
    Effect.suspend(() => {
      const bad = checkKey("set", key) ?? checkValue("set", key, value)
      if (bad !== undefined) return Effect.fail(bad)
      const millis = checkTtl("set", key, ttl)
      if (millis instanceof KvError) return Effect.fail(millis)
      return write("set", key, backend("set", key, driver.set(key, copyBytes(value), millis)))
    })

  const delete_ = (key: string): Effect.Effect<boolean, KvError> =>
    Effect.suspend(() => {
      const bad = checkKey("delete", key)
      if (bad !== undefined) return Effect.fail(bad)
      return write("delete", key, backend("delete", key, driver.delete(key)))
    })

  /** What an update writes of the function's result `next`: a copy of it, or a refusal when it is not a value. */
  const written = (
    key: string,
    next: unknown,
    millis: number | undefined
  ): Exit.Exit<readonly [Uint8Array, Write], Refusal> => {
    const problem = valueProblem(next)
    if (problem !== undefined) {
      return Exit.fail(
        new Refusal(invalid("update", key, `Invalid value for update: the update function must return ${problem.replace(/^a value must be /, "")}`))
      )
    }
    // the store keeps a copy; the caller gets the function's own array back (one copy, not two)
    return Exit.succeed([next as Uint8Array, { _tag: "Put", value: copyBytes(next as Uint8Array), ttl: millis }] as const)
  }

  const update = <E = never, R = never>(
    key: string,
    f: (current: Option.Option<Uint8Array>) => Effect.Effect<Uint8Array, E, R>,
    ttl?: Duration.Input
  ): Effect.Effect<Uint8Array, E | KvError, R> =>
    Effect.suspend(() => {
      const bad = checkKey("update", key) ??
        (typeof f === "function"
          ? undefined
          : invalid("update", key, `Invalid function for update: expected a function, got ${describeKind(f)}`))
      if (bad !== undefined) return Effect.fail(bad)
      const millis = checkTtl("update", key, ttl)
      if (millis instanceof KvError) return Effect.fail(millis)
      // the function is passed inline, not named: see matchCause.ts
      return modify("update", key, (current): Effect.Effect<readonly [Uint8Array, Write], FunctionFailure | Refusal, R> => {
        let result: unknown
        try {
          result = f(Option.isSome(current) ? Option.some(copyBytes(current.value.value)) : Option.none())
        } catch (thrown) {
          return Effect.fail(new FunctionFailure(Cause.die(thrown)))
        }
        // apart from the call: a returned Proxy whose `has` trap throws is a non-Effect, not the function's defect
        if (!isEffect(result)) {
          return Effect.fail(
            new Refusal(invalid(
              "update",
              key,
              `Invalid function for update: it must return an Effect, got ${describeKind(result)}`
            ))
          )
        }
        // complete already (Effect.succeed): decided here, in the driver's step, which then needs no lock
        if (isDone(result as Effect.Effect<unknown, E, R>)) {
          const done = result as Exit.Exit<unknown, E>
          return Exit.isSuccess(done) ? written(key, done.value, millis) : Exit.fail(new FunctionFailure(done.cause))
        }
        return matchCause(result as Effect.Effect<unknown, E, R>, functionFailed, (next) => written(key, next, millis))
      }) as Effect.Effect<Uint8Array, E | KvError, R>
    })

  const keys = (prefix: string): Effect.Effect<ReadonlyArray<string>, KvError> =>
    Effect.suspend(() => {
      const bad = checkPrefix("keys", prefix)
      if (bad !== undefined) return Effect.fail(bad)
      return backend("keys", prefix, driver.keys(prefix)).pipe(
        Effect.withSpan("kv.keys", {
          attributes: redactKeys ? {} : { "kv.prefix": prefix }
        }, { captureStackTrace: false })
      )
    })

  const has = (key: string): Effect.Effect<boolean, KvError> =>
    Effect.suspend(() => {
      if (driver.has === undefined) return Effect.map(getOption("has", key), Option.isSome)
      const bad = checkKey("has", key)
      return bad !== undefined ? Effect.fail(bad) : backend("has", key, driver.has(key))
    })

  const setIfAbsent = (key: string, value: Uint8Array, ttl?: Duration.Input): Effect.Effect<boolean, KvError> =>
    Effect.suspend(() => {
      const bad = checkKey("setIfAbsent", key) ?? checkValue("setIfAbsent", key, value)
      if (bad !== undefined) return Effect.fail(bad)
      const millis = checkTtl("setIfAbsent", key, ttl)
      if (millis instanceof KvError) return Effect.fail(millis)
      const stored = copyBytes(value)
      if (driver.setIfAbsent !== undefined) {
        return write("setIfAbsent", key, backend("setIfAbsent", key, driver.setIfAbsent(key, stored, millis)))
      }
      return modifyWith("setIfAbsent", key, (current) =>
        Option.isSome(current) ? [false, KEEP] : [true, { _tag: "Put", value: stored, ttl: millis }])
    })

  const increment = (key: string, options?: IncrementOptions): Effect.Effect<number, KvError> =>
    Effect.suspend(() => {
      const bad = checkKey("increment", key)
      if (bad !== undefined) return Effect.fail(bad)
      // increment(key, 42) is not increment(key, { by: 42 }): anything but an options object is refused, not defaulted
      if (options !== undefined && (typeof options !== "object" || options === null)) {
        return Effect.fail(invalid(
          "increment",
          key,
          `Invalid options for increment: expected an object such as { by: ${typeof options === "number" ? options : 1} }, got ${describeKind(options)}`
        ))
      }
      let by: unknown
      let ttl: unknown
      try {
        by = options?.by
        // only a missing `by` defaults: null is as wrong as any other non-number, like a null TTL
        if (by === undefined) by = 1
        ttl = options?.ttl
      } catch {
        return Effect.fail(invalid("increment", key, "Invalid options for increment: they could not be read"))
      }
      if (typeof by !== "number" || !Number.isSafeInteger(by)) {
        return Effect.fail(invalid(
          "increment",
          key,
          `Invalid amount for increment: by must be a safe integer, got ${typeof by === "number" ? by : describeKind(by)}`
        ))
      }
      const millis = checkTtl("increment", key, ttl)
      if (millis instanceof KvError) return Effect.fail(millis)
      const amount = by
      if (driver.increment !== undefined) {
        return write("increment", key, backend("increment", key, driver.increment(key, amount, millis)))
      }
      return modifyWith("increment", key, (current) => {
        const stored = Option.isSome(current) ? parseCounter(current.value.value) : 0
        if (stored === undefined) return invalid("increment", key, `Cannot increment key ${quoted(key)}: ${NOT_A_COUNTER}`)
        const next = addToCounter(stored, amount)
        if (typeof next === "string") return invalid("increment", key, `Cannot increment key ${quoted(key)}: ${next}`)
        return [next, { _tag: "Put", value: encodeCounter(next), ttl: Option.isSome(current) ? "unchanged" : millis }]
      })
    })

  const timeToLive = (key: string): Effect.Effect<Option.Option<Duration.Duration>, NotFound | KvError> =>
    Effect.suspend(() => {
      const bad = checkKey("timeToLive", key)
      if (bad !== undefined) return Effect.fail(bad)
      const left = driver.timeToLive !== undefined
        ? backend("timeToLive", key, driver.timeToLive(key))
        : modifyWith("timeToLive", key, (current) => [Option.map(current, (entry) => entry.expiresIn), KEEP])
      return Effect.flatMap(left, (found): Effect.Effect<Option.Option<Duration.Duration>, NotFound> =>
        Option.isNone(found)
          ? Effect.fail(notFound(key))
          : Effect.succeed(
            found.value === undefined ? Option.none() : Option.some(Duration.millis(Math.max(0, found.value)))
          ))
    })

  const expire = (key: string, ttl?: Duration.Input): Effect.Effect<boolean, KvError> =>
    Effect.suspend(() => {
      const bad = checkKey("expire", key)
      if (bad !== undefined) return Effect.fail(bad)
      const millis = checkTtl("expire", key, ttl)
      if (millis instanceof KvError) return Effect.fail(millis)
      if (driver.expire !== undefined) {
        return write("expire", key, backend("expire", key, driver.expire(key, millis)))
      }
      return modifyWith("expire", key, (current) =>
        Option.isNone(current)
          ? [false, KEEP]
          : [true, { _tag: "Put", value: current.value.value, ttl: millis }])
    })

  /**
   * The driver's own step (on the backend's clock) when it has one, else
   * `rateLimitStep` inside `modify` on the Effect `Clock`, read while the key
   * is held, so the steps of one key apply in clock order.
   */
  const rateLimit: RateLimit = (key, request) =>
    Effect.suspend(() => {
      const problem = rateLimitRequestProblem(request)
      const bad = checkKey("rateLimit", key) ??
        (problem === undefined ? undefined : invalid("rateLimit", key, `Invalid rate limit: ${problem}`))
      if (bad !== undefined) return Effect.fail(bad)
      if (driver.rateLimit !== undefined) {
        return write("rateLimit", key, backend("rateLimit", key, driver.rateLimit(key, request)))
      }
      return modify("rateLimit", key, (current) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const stored = Option.isSome(current) ? textDecoder.decode(current.value.value) : undefined
          const step = rateLimitStep(request, stored, now)
          if (step === undefined) {
            return Effect.fail(new Refusal(invalid("rateLimit", key, `Cannot rateLimit key ${quoted(key)}: ${INVALID_STATE}`)))
          }
          const kept: Write = step.keep === undefined
            ? KEEP
            : { _tag: "Put", value: textEncoder.encode(step.keep.state), ttl: step.keep.until - now }
          return Effect.succeed([step.answer, kept] as const)
        }))
    })

  const { count, deleteMany, deletePrefix, getMany, setMany, streamEntries, streamKeys } = makeBatchOperations({
    driver,
    lock,
    frontWaits,
    redactKeys,
    errors
  })

  const feeds = makeChangeFeeds(driver, errors)

  const service: Service = {
    get,
    set,
    delete: delete_,
    update,
    keys,
    cleanup: backend("cleanup", undefined, driver.cleanup).pipe(
      Effect.withSpan("kv.cleanup", undefined, { captureStackTrace: false })
    ),
    getOption: (key) => Effect.suspend(() => getOption("getOption", key)),
    has,
    setIfAbsent,
    increment,
    timeToLive,
    expire,
    getMany,
    setMany,
    deleteMany,
    deletePrefix,
    count,
    streamKeys,
    streamEntries,
    watch: feeds.watch,
    watchPrefix: feeds.watchPrefix
  }
  serviceRedactsKeys.set(service, redactKeys)
  serviceChanges.set(service, feeds.changes)
  serviceRateLimits.set(service, rateLimit)
  const driverRateLimit4 = rateLimit4Of(driver)
  if (driverRateLimit4 !== undefined) {
    serviceRateLimits4.set(service, (key, request) =>
      Effect.suspend(() => {
        const bad = checkKey("rateLimit", key)
        return bad !== undefined
          ? Effect.fail(bad)
          : write("rateLimit", key, backend("rateLimit", key, driverRateLimit4(key, request)))
      }))
  }
  return service
}
