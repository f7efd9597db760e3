/**
 * Effect 4's `Persistence` (`effect/persistence`) on effect-kv:
 * `BackingPersistence`, and the `Persistence` over it that `PersistedCache`
 * needs, served by the `KvStore` in context, so persisted results are shared by
 * every instance using one database and expire with the store's own TTL.
 *
 * The Effect 3 line's module of the same name serves `@effect/experimental`'s
 * `BackingPersistence` and `ResultPersistence`; this one differs where Effect 4's
 * interfaces do: a value is an `object` and a missing one `undefined` (no
 * `Option`), a TTL is a `Duration` or `undefined` (never expires), errors are
 * `PersistenceError` (message, cause), and `ResultPersistence` became
 * `Persistence` (`layerResult` here keeps the Effect 3 line's name).
 *
 * @since 2.0.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Persistence from "effect/persistence/Persistence"
import { bridgeOptions } from "./internal/options.js"
import * as KvStore from "./KvStore.js"

/**
 * Options of `layer` and `layerResult`. An unknown name or a value of the
 * wrong type makes every operation fail with `PersistenceError` whose `cause`
 * is a `KvError` (`InvalidArgument`, op `"layer"`) naming the option.
 *
 * @since 2.0.0
 * @category models
 */
export interface Options {
  /**
   * The key prefix of all persistence stores: the entries of store `storeId`
   * live under `${prefix}${storeId}/`. Default `"persistence/"`.
   */
  readonly prefix?: string | undefined
}

const DEFAULT_PREFIX = "persistence/"

const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

const persistenceError = (method: string) => (cause: unknown) =>
  new Persistence.PersistenceError({
    message: `KvPersistence ${method}: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })

/** The value as JSON bytes; what `BackingPersistence` is given is JSON-serialisable by contract. */
const encode = (method: string, value: object) =>
  Effect.try({
    try: () => {
      const json = JSON.stringify(value)
      if (json === undefined) throw new TypeError(`Cannot persist a value of type ${typeof value} as JSON`)
      return encoder.encode(json)
    },
    catch: persistenceError(method)
  })

const decode = (method: string, bytes: Uint8Array) =>
  Effect.try({
    try: (): object => {
      const value: unknown = JSON.parse(decoder.decode(bytes))
      if (typeof value !== "object" || value === null) {
        throw new TypeError(`The stored value is not a JSON object or array`)
      }
      return value
    },
    catch: persistenceError(method)
  })

const decodeOption = (method: string) => (option: Option.Option<Uint8Array>) =>
  Option.isNone(option) ? Effect.undefined : decode(method, option.value)

/** How long an entry lives: `undefined` (or an infinite duration) never expires; zero or less is already expired. */
type Lifetime = { readonly _tag: "Permanent" } | { readonly _tag: "Expired" } | { readonly _tag: "For"; readonly millis: number }

const lifetimeOf = (ttl: Duration.Duration | undefined): Lifetime => {
  if (ttl === undefined || !Duration.isFinite(ttl)) return { _tag: "Permanent" }
  const millis = Duration.toMillis(ttl)
  // To the store, a zero TTL means "never expires"; here it means "already expired".
  return millis <= 0 ? { _tag: "Expired" } : { _tag: "For", millis }
}

/**
 * A `BackingPersistenceStore` over a `KvStore` service, keyed under
 * `namespace` (e.g. `"persistence/users/"`).
 *
 * @since 2.0.0
 * @category constructors
 */
export const makeStore = (store: KvStore.Service, namespace: string): Persistence.BackingPersistenceStore => {
  const full = (key: string) => `${namespace}${key}`

  const set = (key: string, value: object, ttl: Duration.Duration | undefined) =>
    Effect.flatMap(encode("set", value), (bytes) => {
      const lifetime = lifetimeOf(ttl)
      const write = lifetime._tag === "Permanent"
        ? store.set(full(key), bytes)
        : lifetime._tag === "Expired"
        ? Effect.asVoid(store.delete(full(key)))
        : store.set(full(key), bytes, Duration.millis(lifetime.millis))
      return Effect.mapError(write, persistenceError("set"))
    })

  /**
   * `setMany` takes one TTL for all its entries: one call per distinct TTL
   * (permanent, each finite one), and one `deleteMany` for entries already
   * expired (a zero TTL). Every value is encoded before anything is written.
   */
  const setMany = (entries: ReadonlyArray<readonly [key: string, value: object, ttl: Duration.Duration | undefined]>) =>
    Effect.forEach(entries, ([key, value, ttl]) => Effect.map(encode("setMany", value), (bytes) => [key, bytes, ttl] as const)).pipe(
      Effect.flatMap((encoded) => {
        const permanent: Array<readonly [string, Uint8Array]> = []
        const expired: Array<string> = []
        const byTtl = new Map<number, Array<readonly [string, Uint8Array]>>()
        for (const [key, bytes, ttl] of encoded) {
          const lifetime = lifetimeOf(ttl)
          if (lifetime._tag === "Permanent") permanent.push([full(key), bytes])
          else if (lifetime._tag === "Expired") expired.push(full(key))
          else byTtl.set(lifetime.millis, [...(byTtl.get(lifetime.millis) ?? []), [full(key), bytes]])
        }
        return Effect.all([
          permanent.length > 0 ? store.setMany(permanent) : Effect.void,
          expired.length > 0 ? store.deleteMany(expired) : Effect.void,
          Effect.forEach(byTtl, ([millis, group]) => store.setMany(group, Duration.millis(millis)), { discard: true })
        ], { discard: true }).pipe(Effect.mapError(persistenceError("setMany")))
      })
    )

  return {
    get: (key) =>
      store.getOption(full(key)).pipe(Effect.mapError(persistenceError("get")), Effect.flatMap(decodeOption("get"))),
    getMany: (keys) =>
      store.getMany(keys.map(full)).pipe(
        Effect.mapError(persistenceError("getMany")),
        Effect.flatMap((values) => Effect.forEach(values, decodeOption("getMany")))
      ) as Effect.Effect<[object | undefined, ...Array<object | undefined>], Persistence.PersistenceError>,
    set,
    setMany,
    remove: (key) => store.delete(full(key)).pipe(Effect.asVoid, Effect.mapError(persistenceError("remove"))),
    clear: store.deletePrefix(namespace).pipe(Effect.asVoid, Effect.mapError(persistenceError("clear")))
  }
}

const layerFor = (
  where: string,
  options: Options | undefined
): Layer.Layer<Persistence.BackingPersistence, never, KvStore.KvStore> =>
  Layer.effect(
    Persistence.BackingPersistence,
    Effect.map(KvStore.KvStore, (kvStore) => {
      const { prefix, store } = bridgeOptions(where, kvStore, options, DEFAULT_PREFIX)
      return Persistence.BackingPersistence.of({
        make: (storeId) => Effect.succeed(makeStore(store, `${prefix}${storeId}/`))
      })
    })
  )

/**
 * `BackingPersistence` on the `KvStore` in context: store `storeId` keeps its
 * entries under `${prefix}${storeId}/` (so `clear` removes only its own), as
 * JSON in UTF-8, with the store's own TTL (on PostgreSQL the database's clock,
 * swept by `cleanup`); an entry whose TTL is `undefined` never expires, one
 * whose TTL is zero or negative is removed. Every failure is a
 * `PersistenceError` whose `cause` is the `KvError` (or the JSON error).
 *
 * Store ids should not contain `/`: `clear` of store `"a"` would also remove
 * the entries of store `"a/b"`.
 *
 * @since 2.0.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<Persistence.BackingPersistence, never, KvStore.KvStore> =>
  layerFor("KvPersistence.layer", options)

/**
 * Effect 4's `Persistence` (what `PersistedCache.make` needs, `ResultPersistence`
 * in Effect 3) on the `KvStore` in context: `Persistence.layer` over
 * `layer(options)`.
 *
 * @since 2.0.0
 * @category layers
 */
export const layerResult = (options?: Options): Layer.Layer<Persistence.Persistence, never, KvStore.KvStore> =>
  Persistence.layer.pipe(Layer.provide(layerFor("KvPersistence.layerResult", options)))
