/**
 * Feature flags: 40 flags per environment, loaded with one `getMany`.
 *
 * Each environment is a namespace, `<prefix>flags:<environment>:` seen through
 * `KvStore.prefixed`, so the code below names flags only ("new-checkout") and
 * staging and production never see each other's values. A flag is stored as
 * JSON (`KvStore.forSchema`): whether it is on and for what percentage of
 * users. A flag that was never stored takes its default from the catalogue in
 * code, so a new flag can ship before anyone sets it. A user falls in the
 * rollout when a hash of the flag name and user id, as a bucket 0–99, is below
 * the percentage: the same user gets the same answer on every load.
 *
 * Shows: one `getMany` for all 40 flags; defaults for the 10 never stored; a
 * 25% rollout reaching about a quarter of 1,000 users, stable across loads;
 * the same flag at 100% in staging; `count("")` of a namespace staying in it.
 *
 * The program needs only `KvStore`; the backend is chosen by whoever runs it.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { KvStore } from "effect-kv"

export const Flag = Schema.Struct({
  enabled: Schema.Boolean,
  /** Percentage of users who get the feature when it is enabled. */
  rollout: Schema.Number.pipe(Schema.between(0, 100))
})
export type Flag = typeof Flag.Type

/** Every flag the application knows, with the value it has until someone stores one. */
export const catalogue: ReadonlyArray<readonly [name: string, defaultValue: Flag]> = [
  ["new-checkout", { enabled: false, rollout: 0 }],
  ["dark-mode", { enabled: true, rollout: 100 }],
  ["beta-search", { enabled: false, rollout: 0 }],
  ...Array.from({ length: 37 }, (_, i) => [`experiment-${String(i + 1).padStart(2, "0")}`, { enabled: false, rollout: 0 }] as const)
]

export type Environment = "production" | "staging"

/** The flags of one environment, as loaded: one value per catalogue name. */
export interface Flags {
  readonly values: ReadonlyMap<string, Flag>
  /** The names that had no stored value and took the catalogue's default. */
  readonly defaulted: ReadonlyArray<string>
  readonly isEnabledFor: (name: string, userId: string) => boolean
}

/** FNV-1a (32 bit) of the text, as a bucket 0–99: cheap, stable, spread evenly enough for rollouts. */
const bucketOf = (text: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
  return (h >>> 0) % 100
}

/** The store seen from inside `environment`'s namespace: its keys are flag names. */
const namespace = (prefix: string, environment: Environment) =>
  Effect.map(KvStore.KvStore, KvStore.prefixed(`${prefix}flags:${environment}:`))

const flagStore = (prefix: string, environment: Environment) =>
  Effect.map(namespace(prefix, environment), KvStore.forSchema(Flag))

export const setFlags = (
  prefix: string,
  environment: Environment,
  flags: Iterable<readonly [name: string, flag: Flag]>
): Effect.Effect<void, KvStore.KvError | ParseResult.ParseError, KvStore.KvStore> =>
  Effect.flatMap(flagStore(prefix, environment), (store) => store.setMany(flags))

/** All catalogue flags of `environment` in one `getMany`, defaults filled in. */
export const loadFlags = (
  prefix: string,
  environment: Environment
): Effect.Effect<Flags, KvStore.KvError | ParseResult.ParseError, KvStore.KvStore> =>
  Effect.gen(function*() {
    const store = yield* flagStore(prefix, environment)
    const stored = yield* store.getMany(catalogue.map(([name]) => name))
    const values = new Map<string, Flag>()
    const defaulted: Array<string> = []
    catalogue.forEach(([name, defaultValue], i) => {
      const flag = stored[i]!
      if (Option.isNone(flag)) defaulted.push(name)
      values.set(name, Option.getOrElse(flag, () => defaultValue))
    })
    return {
      values,
      defaulted,
      isEnabledFor: (name, userId) => {
        const flag = values.get(name)
        return flag !== undefined && flag.enabled && bucketOf(`${name}:${userId}`) < flag.rollout
      }
    }
  })

/** What the feature-flag program observed. */
export interface FeatureFlagsReport {
  readonly flagsLoaded: number
  readonly defaulted: ReadonlyArray<string>
  /** dark-mode was never stored: its default (on for everyone) applies. */
  readonly darkModeForAnyone: boolean
  /** Of 1,000 users, how many get new-checkout in production (rollout 25%). */
  readonly checkoutUsersProduction: number
  /** Whether every one of those users got the same answer on a second load. */
  readonly checkoutStable: boolean
  /** Of the same 1,000 users, how many get new-checkout in staging (rollout 100%). */
  readonly checkoutUsersStaging: number
  readonly storedInProduction: number
  readonly storedInStaging: number
}

export const program = (
  prefix: string
): Effect.Effect<FeatureFlagsReport, KvStore.KvError | ParseResult.ParseError, KvStore.KvStore> =>
  Effect.gen(function*() {
    // Production has stored values for 30 of the 40 flags; dark-mode and 9 experiments are not among them.
    const storedNames = catalogue.map(([name]) => name).filter((name) => name !== "dark-mode").slice(0, 30)
    yield* setFlags(
      prefix,
      "production",
      storedNames.map((name) => [name, name === "new-checkout" ? { enabled: true, rollout: 25 } : { enabled: true, rollout: 100 }])
    )
    yield* setFlags(prefix, "staging", [["new-checkout", { enabled: true, rollout: 100 }]])

    const production = yield* loadFlags(prefix, "production")
    yield* Effect.log(
      `production: ${production.values.size} flags in one getMany, ${production.defaulted.length} from defaults (dark-mode on by default)`
    )

    const users = Array.from({ length: 1000 }, (_, i) => `user-${i}`)
    const checkoutUsers = users.filter((user) => production.isEnabledFor("new-checkout", user))
    const reloaded = yield* loadFlags(prefix, "production")
    const checkoutStable = users.every((user) =>
      reloaded.isEnabledFor("new-checkout", user) === production.isEnabledFor("new-checkout", user)
    )
    const staging = yield* loadFlags(prefix, "staging")
    const checkoutUsersStaging = users.filter((user) => staging.isEnabledFor("new-checkout", user)).length
    yield* Effect.log(
      `new-checkout: ${checkoutUsers.length} of 1000 users at a 25% rollout (the same on reload: ${checkoutStable}); ${checkoutUsersStaging} in staging`
    )

    // count("") of a namespace view counts inside it only
    const storedInProduction = yield* Effect.flatMap(namespace(prefix, "production"), (flags) => flags.count(""))
    const storedInStaging = yield* Effect.flatMap(namespace(prefix, "staging"), (flags) => flags.count(""))
    yield* Effect.log(`stored flags per namespace: production ${storedInProduction}, staging ${storedInStaging}`)

    return {
      flagsLoaded: production.values.size,
      defaulted: production.defaulted,
      darkModeForAnyone: production.isEnabledFor("dark-mode", "anyone"),
      checkoutUsersProduction: checkoutUsers.length,
      checkoutStable,
      checkoutUsersStaging,
      storedInProduction,
      storedInStaging
    }
  })
