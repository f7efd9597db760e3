/**
 * The options check of `core/options.ts` as effects failing with `KvError`
 * (`InvalidArgument`, op `"layer"`), for the stores' `layer`, `make` and
 * `layerConfig`, and a stand-in store for the bridges, whose layers cannot
 * fail (their contract type says `never`).
 */
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { describeKind } from "../core/describe.js"
import type { OptionSpec } from "../core/options.js"
import { BRIDGE_OPTIONS, objectProblem, optionsProblem, unknownOption } from "../core/options.js"
import { KvError } from "../KvStore.js"
import type { Service } from "../KvStore.js"

/** The `KvError` for options that cannot be taken, or `undefined`. */
export const optionsError = (where: string, options: unknown, spec: OptionSpec): KvError | undefined => {
  const problem = optionsProblem(where, options, spec)
  return problem === undefined ? undefined : KvError.invalidArgument("layer", problem)
}

/**
 * `Config.unwrap` of a `layerConfig` argument, after checking its shape: an
 * object whose every name is known and whose every value is a `Config` (a
 * plain value there would be taken apart by `Config.unwrap` into `{}`). The
 * values read are checked by the store like `layer`'s options.
 */
export const unwrapConfig = <A>(
  where: string,
  config: Config.Config.Wrap<A>,
  spec: OptionSpec
): Effect.Effect<A, KvError | ConfigError.ConfigError> =>
  Effect.suspend((): Effect.Effect<A, KvError | ConfigError.ConfigError> => {
    const invalid = (problem: string) => Effect.fail(KvError.invalidArgument("layer", problem))
    const notAnObject = objectProblem(where, config)
    if (notAnObject !== undefined) return invalid(notAnObject)
    if (config === undefined || config === null) return Effect.succeed({} as A)
    if (Config.isConfig(config)) return config as Config.Config<A> // a Config of the whole record
    try {
      for (const [name, value] of Object.entries(config)) {
        if (!Object.hasOwn(spec, name)) return invalid(unknownOption(where, name, Object.keys(spec)))
        if (value !== undefined && !Config.isConfig(value)) {
          return invalid(
            `Invalid option ${name}: expected a Config (e.g. Config.string("KV_TABLE"), or Config.succeed(value) for a constant), got ${
              describeKind(value)
            } (${where})`
          )
        }
      }
    } catch {
      return invalid(`Invalid options for ${where}: they could not be read`)
    }
    return Config.unwrap(config) as Config.Config<A>
  })

/**
 * A store whose every operation fails with `error`: what a bridge serves when
 * its options are refused, so each call fails in the bridge's own typed error
 * (with this `KvError` as its cause) instead of the layer dying.
 */
export const failingService = (error: KvError): Service => {
  const fail = () => Effect.fail(error)
  return {
    get: fail,
    set: fail,
    delete: fail,
    update: fail,
    keys: fail,
    cleanup: Effect.fail(error),
    getOption: fail,
    has: fail,
    setIfAbsent: fail,
    increment: fail,
    timeToLive: fail,
    expire: fail,
    getMany: fail,
    setMany: fail,
    deleteMany: fail,
    deletePrefix: fail,
    count: fail,
    streamKeys: () => Stream.fail(error),
    streamEntries: () => Stream.fail(error),
    watch: () => Stream.fail(error),
    watchPrefix: () => Stream.fail(error)
  }
}

/**
 * A bridge's store and key prefix: the store and `options.prefix` (or
 * `defaultPrefix`) when the options are valid, else a failing store (see
 * `failingService`) and the default prefix.
 */
export const bridgeOptions = (
  where: string,
  store: Service,
  options: unknown,
  defaultPrefix: string
): { readonly store: Service; readonly prefix: string } => {
  const error = optionsError(where, options, BRIDGE_OPTIONS)
  if (error !== undefined) return { store: failingService(error), prefix: defaultPrefix }
  return { store, prefix: (options as { readonly prefix?: string } | null | undefined)?.prefix ?? defaultPrefix }
}
