/**
 * The Effect 4 limiter's steps decided by a driver itself, on its backend's
 * clock: the PostgreSQL driver runs each as one statement under the key's
 * advisory lock (`core/rateLimit4Sql.ts`), so instances whose clocks disagree
 * share one window. A driver without it (memory) leaves the steps to
 * `KvRateLimiter`, inside the key's update on the Effect `Clock`.
 *
 * An optional member beside `KvStore.Driver` rather than in it: `KvDriver.ts`
 * is one file for both lines, and Effect 3's limiter has its own step there
 * (`Driver.rateLimit`).
 */
import type * as Effect from "effect/Effect"
import type { RateLimit4Answer, RateLimit4Request } from "../core/rateLimit4.js"
import type { Driver } from "../KvDriver.js"
import type { DriverError } from "../KvStore.js"

/** One limiter step on `key`, atomic across every instance sharing the backend. */
export type RateLimit4Step = <R extends RateLimit4Request>(
  key: string,
  request: R
) => Effect.Effect<RateLimit4Answer<R>, DriverError>

/** A driver with its own Effect 4 limiter steps. */
export interface RateLimit4Driver {
  readonly rateLimit4: RateLimit4Step
}

/** The driver's own step, when it has one. */
export const rateLimit4Of = (driver: Driver): RateLimit4Step | undefined => {
  const step = (driver as Driver & Partial<RateLimit4Driver>).rateLimit4
  return typeof step === "function" ? step : undefined
}
