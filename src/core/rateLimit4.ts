/**
 * The arithmetic of the Effect 4 line's `KvRateLimiter`: Effect 4's
 * `RateLimiter.layerStoreMemory` (`effect/persistence`) as pure functions of
 * (stored state, now), answering exactly what it answers for the same calls and
 * clock. Effect 4 changed the arithmetic of Effect 3's (`rateLimit.ts`, whose
 * answers stay as they are):
 *
 * - fixed window with a limit: the window opens once, at `refill × limit`, on the
 *   first admitted call with positive tokens, and later calls do not extend it;
 *   a limit of 0 is a real limit (Effect 3 read 0 as "none");
 * - token bucket: a full bucket restarts its refill interval (`lastRefill = now`),
 *   and the answer is `[remaining, elapsedMillis]`;
 * - adaptive limiting (`adaptiveConsume`/`adaptiveFeedback`): a state machine
 *   inactive → cooldown → learning → learned driven by 429 answers.
 *
 * Every state carries its own `expiresAt` (milliseconds of the clock that
 * decided): a state whose moment has passed is the same as none, as in
 * `layerStoreMemory`, so a store may keep it longer than needed. The state is
 * JSON text; `keepUntil` says when forgetting it can no longer change an answer.
 */

/** A fixed-window counter. */
export interface FixedWindowState {
  readonly count: number
  readonly expiresAt: number
}

/** A token bucket. */
export interface TokenBucketState {
  readonly tokens: number
  readonly lastRefill: number
  readonly expiresAt: number
}

export type AdaptivePhase = "inactive" | "cooldown" | "learning" | "learned"

/** The adaptive state of a key (never "inactive": an inactive key has no state). */
export interface AdaptiveState {
  readonly phase: "cooldown" | "learning" | "learned"
  readonly epoch: number
  readonly cooldownUntil: number
  readonly learningStartedAt: number
  readonly observedTokens: number
  readonly learnedLimit: number
  readonly learnedWindowMillis: number
  readonly expiresAt: number
}

/** A step's outcome: the answer, and the state after it (`undefined`: none, as a key never seen). */
export interface Step<S, A> {
  readonly answer: A
  readonly next: S | undefined
}

const isFiniteNumber = (u: unknown): u is number => typeof u === "number" && Number.isFinite(u)

/** `undefined`: the text is not such a state. */
const parseFields = <K extends string>(text: string, fields: ReadonlyArray<K>): Record<K, number> | undefined => {
  try {
    const value: unknown = JSON.parse(text)
    if (typeof value !== "object" || value === null) return undefined
    const out = {} as Record<K, number>
    for (const field of fields) {
      const n = (value as Record<string, unknown>)[field]
      if (!isFiniteNumber(n)) return undefined
      out[field] = n
    }
    return out
  } catch {
    return undefined
  }
}

export const parseFixedWindow = (text: string): FixedWindowState | undefined => parseFields(text, ["count", "expiresAt"])

export const parseTokenBucket = (text: string): TokenBucketState | undefined =>
  parseFields(text, ["tokens", "lastRefill", "expiresAt"])

const PHASES: ReadonlyArray<AdaptiveState["phase"]> = ["cooldown", "learning", "learned"]

export const parseAdaptive = (text: string): AdaptiveState | undefined => {
  const numbers = parseFields(text, [
    "epoch",
    "cooldownUntil",
    "learningStartedAt",
    "observedTokens",
    "learnedLimit",
    "learnedWindowMillis",
    "expiresAt"
  ])
  if (numbers === undefined) return undefined
  const phase = (JSON.parse(text) as { readonly phase?: unknown }).phase
  return PHASES.includes(phase as AdaptiveState["phase"]) ? { ...numbers, phase: phase as AdaptiveState["phase"] } : undefined
}

/** A state as stored; every state is a plain record of its fields. */
export const encodeState = (state: FixedWindowState | TokenBucketState | AdaptiveState): string => JSON.stringify(state)

/** The moment forgetting `state` can no longer change an answer. */
export const keepUntil = (state: { readonly expiresAt: number }): number => state.expiresAt

/** A stored state that is still live at `now`, as `layerStoreMemory` reads its maps. */
const live = <S extends { readonly expiresAt: number }>(state: S | undefined, now: number): S | undefined =>
  state !== undefined && state.expiresAt > now ? state : undefined

/**
 * `fixedWindow`: `[count, ttl]` after taking `tokens` (`refillMillis` per token).
 * Without a limit each admission extends the window by `refillMillis × tokens`;
 * with one, the first admission of positive tokens into an empty or expired key
 * opens a window of `refillMillis × limit` that later admissions do not extend,
 * and a call past the limit answers the count it would reach, changing nothing.
 */
export const fixedWindowStep = (
  stored: FixedWindowState | undefined,
  now: number,
  request: { readonly tokens: number; readonly refillMillis: number; readonly limit: number | undefined }
): Step<FixedWindowState, readonly [count: number, ttl: number]> => {
  const { limit, refillMillis, tokens } = request
  const current = live(stored, now) ?? { count: 0, expiresAt: now }
  if (limit !== undefined && current.count + tokens > limit) {
    return { answer: [current.count + tokens, current.expiresAt - now], next: live(current, now) }
  }
  let expiresAt = current.expiresAt
  if (limit === undefined) expiresAt += refillMillis * tokens
  else if (expiresAt === now && tokens > 0) expiresAt = now + refillMillis * limit
  const next = { count: current.count + tokens, expiresAt }
  return { answer: [next.count, next.expiresAt - now], next: live(next, now) }
}

/**
 * `tokenBucket`: `[remaining, elapsedMillis]`. A new (or expired) bucket is full;
 * whole refill intervals since `lastRefill` add a token each, up to `limit`; a
 * full bucket restarts its interval now. The tokens are taken when enough are
 * left (or always with `allowOverflow`). The bucket expires once it would be
 * full again.
 */
export const tokenBucketStep = (
  stored: TokenBucketState | undefined,
  now: number,
  request: {
    readonly tokens: number
    readonly refillMillis: number
    readonly limit: number
    readonly allowOverflow: boolean
  }
): Step<TokenBucketState, readonly [remaining: number, elapsedMillis: number]> => {
  const { allowOverflow, limit, refillMillis, tokens } = request
  const current = live(stored, now)
  let bucketTokens = current === undefined ? limit : current.tokens
  let lastRefill = current === undefined ? now : current.lastRefill
  const tokensToAdd = Math.floor((now - lastRefill) / refillMillis)
  if (tokensToAdd > 0) {
    bucketTokens = Math.min(limit, bucketTokens + tokensToAdd)
    lastRefill += tokensToAdd * refillMillis
  }
  if (bucketTokens >= limit) lastRefill = now
  const remaining = bucketTokens - tokens
  if (allowOverflow || remaining >= 0) bucketTokens = remaining
  const next = { tokens: bucketTokens, lastRefill, expiresAt: lastRefill + Math.ceil(limit - bucketTokens) * refillMillis }
  return { answer: [remaining, Math.max(0, now - lastRefill)], next: live(next, now) }
}

/** How long adaptive states outlive their last moment, and the longest learned window or cooldown. */
export const GRACE_MILLIS = 60_000
export const MAX_WINDOW_MILLIS = 60 * 60 * 1_000

/** A `Retry-After` or learned window as `layerStoreMemory` bounds it: at least 1 ms, at most an hour. */
export const clampWindow = (millis: number): number =>
  Number.isNaN(millis) || millis <= 0 ? 1 : Math.min(millis, MAX_WINDOW_MILLIS)

/** `adaptiveConsume`'s answer; `delayMillis` becomes the `Duration` `delay`. */
export interface AdaptiveConsumeAnswer {
  readonly delayMillis: number
  readonly epoch: number
  readonly phase: AdaptivePhase
}

/** `adaptiveConsume`: the delay before the request, and the epoch and phase to report feedback with. */
export const adaptiveConsumeStep = (
  stored: AdaptiveState | undefined,
  now: number,
  request: { readonly tokens: number; readonly fallbackWindowMillis: number }
): Step<AdaptiveState, AdaptiveConsumeAnswer> => {
  const state = live(stored, now)
  if (state === undefined) return { answer: { delayMillis: 0, epoch: 0, phase: "inactive" }, next: undefined }
  if (state.phase === "cooldown") {
    if (state.cooldownUntil > now) {
      return { answer: { delayMillis: state.cooldownUntil - now, epoch: state.epoch, phase: "cooldown" }, next: state }
    }
    const next: AdaptiveState = {
      ...state,
      phase: "learning",
      epoch: state.epoch + 1,
      learningStartedAt: now,
      observedTokens: request.tokens,
      expiresAt: now + request.fallbackWindowMillis + GRACE_MILLIS
    }
    return { answer: { delayMillis: 0, epoch: next.epoch, phase: "learning" }, next: live(next, now) }
  }
  if (state.phase === "learning") {
    const next = { ...state, observedTokens: state.observedTokens + request.tokens }
    return { answer: { delayMillis: 0, epoch: next.epoch, phase: "learning" }, next }
  }
  // learned
  const refillMillis = state.learnedWindowMillis / state.learnedLimit
  let observedTokens = state.observedTokens
  let cooldownUntil = state.cooldownUntil
  if (cooldownUntil <= now) {
    observedTokens = 0
    cooldownUntil = now
  }
  observedTokens += request.tokens
  cooldownUntil += refillMillis * request.tokens
  const ttl = cooldownUntil - now
  const elapsed = observedTokens * refillMillis - ttl
  const windowNumber = Math.floor((observedTokens - 1) / state.learnedLimit)
  const remaining = windowNumber * state.learnedWindowMillis - elapsed
  return {
    answer: { delayMillis: remaining <= 0 ? 0 : remaining, epoch: state.epoch, phase: "learned" },
    next: { ...state, observedTokens, cooldownUntil }
  }
}

const cooldown = (epoch: number, cooldownUntil: number): AdaptiveState => ({
  phase: "cooldown",
  epoch,
  cooldownUntil,
  learningStartedAt: 0,
  observedTokens: 0,
  learnedLimit: 0,
  learnedWindowMillis: 0,
  expiresAt: cooldownUntil + GRACE_MILLIS
})

/**
 * `adaptiveFeedback`: only a 429 with a `Retry-After` changes anything. No
 * state (epoch 0): a cooldown starts. A stale epoch is ignored. Cooldown: it
 * lasts at least until the new `Retry-After`. Learning: the tokens admitted
 * before this 429 become the learned limit over the window learned (or, with
 * none admitted, a new cooldown). Learned: a new cooldown.
 */
export const adaptiveFeedbackStep = (
  stored: AdaptiveState | undefined,
  now: number,
  request: { readonly epoch: number; readonly tokens: number; readonly status: number; readonly retryAfterMillis: number | undefined }
): Step<AdaptiveState, void> => {
  const state = live(stored, now)
  const unchanged = { answer: undefined, next: state }
  if (request.status !== 429 || request.retryAfterMillis === undefined) return unchanged
  const retryAfterMillis = clampWindow(request.retryAfterMillis)
  const cooldownUntil = now + retryAfterMillis
  if (state === undefined) {
    return request.epoch !== 0 ? unchanged : { answer: undefined, next: cooldown(0, cooldownUntil) }
  }
  if (state.epoch !== request.epoch) return unchanged
  if (state.phase === "cooldown") {
    const until = Math.max(state.cooldownUntil, cooldownUntil)
    return { answer: undefined, next: { ...state, cooldownUntil: until, expiresAt: until + GRACE_MILLIS } }
  }
  if (state.phase === "learning") {
    const acceptedTokens = state.observedTokens - request.tokens
    if (acceptedTokens <= 0) return { answer: undefined, next: cooldown(state.epoch, cooldownUntil) }
    const learnedWindowMillis = clampWindow(now - state.learningStartedAt + retryAfterMillis)
    return {
      answer: undefined,
      next: {
        ...state,
        phase: "learned",
        epoch: state.epoch + 1,
        cooldownUntil: state.learningStartedAt + learnedWindowMillis,
        observedTokens: acceptedTokens,
        learnedLimit: acceptedTokens,
        learnedWindowMillis,
        expiresAt: now + learnedWindowMillis + GRACE_MILLIS
      }
    }
  }
  return { answer: undefined, next: cooldown(state.epoch, cooldownUntil) }
}

/**
 * One call of the Effect 4 limiter as a store that decides elsewhere (one SQL
 * statement on the database's clock, `rateLimit4Sql.ts`) receives it.
 * `adaptiveFeedback` is sent only for a 429 with a `Retry-After`: every other
 * feedback changes nothing.
 */
export type RateLimit4Request =
  | { readonly kind: "fixedWindow"; readonly tokens: number; readonly refillMillis: number; readonly limit: number | undefined }
  | {
    readonly kind: "tokenBucket"
    readonly tokens: number
    readonly refillMillis: number
    readonly limit: number
    readonly allowOverflow: boolean
  }
  | { readonly kind: "adaptiveConsume"; readonly tokens: number; readonly fallbackWindowMillis: number }
  | { readonly kind: "adaptiveFeedback"; readonly epoch: number; readonly tokens: number; readonly retryAfterMillis: number }

/** What each kind of call answers. */
export type RateLimit4Answer<R extends RateLimit4Request> = R extends { readonly kind: "fixedWindow" | "tokenBucket" }
  ? readonly [number, number]
  : R extends { readonly kind: "adaptiveConsume" } ? AdaptiveConsumeAnswer
  : void

type AnyState = FixedWindowState | TokenBucketState | AdaptiveState

const parserOf = (kind: RateLimit4Request["kind"]): (text: string) => AnyState | undefined =>
  kind === "fixedWindow" ? parseFixedWindow : kind === "tokenBucket" ? parseTokenBucket : parseAdaptive

/**
 * The step of `request` on a stored text (`undefined`: no entry) at `now`, or
 * `"invalid"` when the text is not the state `request` reads.
 */
export const rateLimit4Step = (
  request: RateLimit4Request,
  stored: string | undefined,
  now: number
): Step<AnyState, unknown> | "invalid" => {
  const state = stored === undefined ? undefined : parserOf(request.kind)(stored)
  if (stored !== undefined && state === undefined) return "invalid"
  switch (request.kind) {
    case "fixedWindow":
      return fixedWindowStep(state as FixedWindowState | undefined, now, request)
    case "tokenBucket":
      return tokenBucketStep(state as TokenBucketState | undefined, now, request)
    case "adaptiveConsume":
      return adaptiveConsumeStep(state as AdaptiveState | undefined, now, request)
    case "adaptiveFeedback":
      return adaptiveFeedbackStep(state as AdaptiveState | undefined, now, { ...request, status: 429 })
  }
}

/**
 * The answer of a step that a store ran elsewhere, from the state it kept
 * (live or already ended: the SQL always writes one), whether the call's
 * tokens were taken, and its `now`: the numbers the JavaScript step answers.
 *
 * - fixed window: the kept window is the one the call saw (refused) or made;
 *   a refused call answers the count it would reach;
 * - token bucket: the kept bucket is the refilled one, with the tokens taken
 *   when admitted;
 * - adaptive consume: an ended state is "inactive"; a cooldown is waited out;
 *   learning admits at once; a learned limit delays by the window arithmetic
 *   of the tokens observed, which the kept state holds.
 */
export const rateLimit4AnswerOf = <R extends RateLimit4Request>(
  request: R,
  kept: string,
  admitted: boolean,
  now: number
): RateLimit4Answer<R> | undefined => {
  switch (request.kind) {
    case "fixedWindow": {
      const state = parseFixedWindow(kept)
      if (state === undefined) return undefined
      return [admitted ? state.count : state.count + request.tokens, state.expiresAt - now] as const as RateLimit4Answer<R>
    }
    case "tokenBucket": {
      const state = parseTokenBucket(kept)
      if (state === undefined) return undefined
      return [admitted ? state.tokens : state.tokens - request.tokens, Math.max(0, now - state.lastRefill)] as const as RateLimit4Answer<R>
    }
    case "adaptiveConsume": {
      const state = parseAdaptive(kept)
      if (state === undefined) return undefined
      return adaptiveAnswerOf(state, now) as RateLimit4Answer<R>
    }
    case "adaptiveFeedback":
      return parseAdaptive(kept) === undefined ? undefined : (undefined as RateLimit4Answer<R>)
  }
  return undefined
}

const adaptiveAnswerOf = (state: AdaptiveState, now: number): AdaptiveConsumeAnswer => {
  if (state.expiresAt <= now) return { delayMillis: 0, epoch: 0, phase: "inactive" }
  if (state.phase === "cooldown") return { delayMillis: state.cooldownUntil - now, epoch: state.epoch, phase: "cooldown" }
  if (state.phase === "learning") return { delayMillis: 0, epoch: state.epoch, phase: "learning" }
  // the same arithmetic as adaptiveConsumeStep's, on the state it kept
  const refillMillis = state.learnedWindowMillis / state.learnedLimit
  const ttl = state.cooldownUntil - now
  const elapsed = state.observedTokens * refillMillis - ttl
  const windowNumber = Math.floor((state.observedTokens - 1) / state.learnedLimit)
  const remaining = windowNumber * state.learnedWindowMillis - elapsed
  return { delayMillis: remaining <= 0 ? 0 : remaining, epoch: state.epoch, phase: "learned" }
}
