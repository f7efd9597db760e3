/**
 * The front's errors and argument checks, made once per store: every refusal
 * names the operation and (unless keys are redacted) the key, and every
 * driver failure or defect becomes a `KvError` naming the backend. The pure
 * checks themselves live in `key.ts`, `value.ts` and `ttl.ts`.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { DriverError, KvError, NotFound } from "../KvStore.js"
import { describeKind } from "../core/describe.js"
import { keyProblem, prefixProblem } from "../core/key.js"
import { Deadlock, describeCycle } from "./keyedLock.js"
import { decodeDuration } from "./ttl.js"
import { valueProblem } from "../core/value.js"

/** What a redacting store says in place of a key. */
export const REDACTED = "[redacted]"

export type Errors = ReturnType<typeof makeErrors>

export const makeErrors = (backendName: string, redactKeys: boolean) => {
  const keyField = (key: unknown): { readonly key?: string } =>
    typeof key === "string" ? { key: redactKeys ? REDACTED : key } : {}

  const invalid = (op: string, key: unknown, message: string): KvError =>
    new KvError({ reason: "InvalidArgument", op, ...keyField(key), message })

  const notFound = (key: string): NotFound => new NotFound({ key: redactKeys ? REDACTED : key })

  const quoted = (key: string): string => (redactKeys ? REDACTED : JSON.stringify(key))

  /**
   * A wait refused by the key lock because it would close a cycle: named by
   * the key waited for (a batch has no key of its own), nothing written.
   */
  const deadlock = (op: string, cycle: Deadlock): KvError =>
    new KvError({
      reason: "Backend",
      op,
      ...keyField(cycle.key),
      // the cause names every key of the cycle
      ...(redactKeys ? {} : { cause: cycle }),
      message: `${op} of key ${quoted(cycle.key)} would deadlock: ${describeCycle(cycle.chain, quoted)}; ` +
        "it wrote nothing (take keys in one order, or retry)"
    })

  const fromDriver = (op: string, key: string | undefined, cause: Cause.Cause<unknown>): KvError => {
    const failure = Cause.findErrorOption(cause)
    if (Option.isSome(failure) && failure.value instanceof DriverError) {
      const error = failure.value
      if (error.cause instanceof Deadlock) return deadlock(op, error.cause)
      return new KvError({
        reason: error.reason,
        op,
        ...keyField(key),
        cause: error.cause ?? error,
        message: error.reason === "Backend"
          ? `${backendName} ${op} failed: ${error.message}`
          : `Cannot ${op}${key === undefined ? "" : ` key ${quoted(key)}`}: ${error.message}`
      })
    }
    const defect = Cause.squash(cause)
    return new KvError({
      reason: "Backend",
      op,
      ...keyField(key),
      cause: defect,
      message: `${backendName} ${op} failed: ${defect instanceof Error ? defect.message : describeKind(defect)}`
    })
  }

  /** Driver failures and defects become `KvError`; interruption stays interruption. */
  const fromDriverCause = (op: string, key: string | undefined) => (cause: Cause.Cause<unknown>) =>
    Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause as Cause.Cause<never>) : Effect.fail(fromDriver(op, key, cause))

  const backend = <A>(op: string, key: string | undefined, effect: Effect.Effect<A, DriverError>) =>
    Effect.catchCause(effect, fromDriverCause(op, key))

  /** A wait for keys' locks (`withLock`) whose own failure, a `DriverError`, becomes a `KvError` too. */
  const lockFailure = <A, E>(op: string, key: string | undefined, effect: Effect.Effect<A, E | DriverError>) =>
    Effect.catchIf(
      effect,
      (error): error is DriverError => error instanceof DriverError,
      (error) => Effect.fail(fromDriver(op, key, Cause.fail(error)))
    )

  const checkKey = (op: string, key: unknown): KvError | undefined => {
    const problem = keyProblem(key)
    return problem === undefined ? undefined : invalid(op, key, `Invalid key for ${op}: ${problem}`)
  }

  const checkPrefix = (op: string, prefix: unknown): KvError | undefined => {
    const problem = prefixProblem(prefix)
    return problem === undefined ? undefined : invalid(op, prefix, `Invalid prefix for ${op}: ${problem}`)
  }

  const checkValue = (op: string, key: string, value: unknown): KvError | undefined => {
    const problem = valueProblem(value)
    return problem === undefined ? undefined : invalid(op, key, `Invalid value for ${op}: ${problem}`)
  }

  /** Milliseconds (`undefined`: never expires) or the refusal. */
  const checkTtl = (op: string, key: string | undefined, ttl: unknown): number | undefined | KvError => {
    if (ttl === undefined) return undefined
    const decoded = decodeDuration(ttl, "a TTL")
    return "problem" in decoded ? invalid(op, key, `Invalid TTL for ${op}: ${decoded.problem}`) : decoded.millis
  }

  const ownUpdate = (op: string, key: string): KvError =>
    invalid(
      op,
      key,
      `Cannot ${op} key ${quoted(key)} from inside its own update function: return the new value from the function instead`
    )

  return {
    keyField,
    invalid,
    notFound,
    quoted,
    fromDriver,
    fromDriverCause,
    backend,
    lockFailure,
    checkKey,
    checkPrefix,
    checkValue,
    checkTtl,
    ownUpdate
  }
}
