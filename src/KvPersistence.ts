/**
 * `@effect/experimental`'s `Persistence` on effect-kv: `BackingPersistence`
 * and `ResultPersistence` (what `PersistedCache` needs) served by the
 * `KvStore` in context, so persisted results are shared by every instance
 * using one database and expire with the store's own TTL.
 *
 * A subpath entry (`effect-kv/KvPersistence`): `@effect/experimental` is an
 * optional peer dependency, loaded only by those who import this module.
 *
 * @since 0.1.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import * as Persistence from "@effect/experimental/Persistence"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { bridgeOptions } from "./internal/options.js"
import * as KvStore from "./KvStore.js"

/**
 * Options of `layer` and `layerResult`. An unknown name or a value of the
 * wrong type makes every operation fail with `PersistenceBackingError` whose
 * `cause` is a `KvError` (`InvalidArgument`, op `"layer"`) naming the option.
 *
 * @since 0.1.0
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

const backingError = (method: string) => (cause: unknown) => Persistence.PersistenceBackingError.make(method, cause)

/** The value as JSON bytes; what `BackingPersistence` is given is JSON-serialisable by contract. */
const encode = (method: string, value: unknown) =>
  Effect.try({
    try: () => {
      const json = JSON.stringify(value)
      if (json === undefined) throw new TypeError(`Cannot persist a value of type ${typeof value} as JSON`)
      return encoder.encode(json)
    },
    catch: backingError(method)
  })

const decode = (method: string, bytes: Uint8Array) =>
  Effect.try({ try: (): unknown => JSON.parse(decoder.decode(bytes)), catch: backingError(method) })

/**
 * A `BackingPersistenceStore` over a `KvStore` service, keyed under
 * `namespace` (e.g. `"persistence/users/"`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeStore = (store: KvStore.Service, namespace: string): Persistence.BackingPersistenceStore => {
  const full = (key: string) => `${namespace}${key}`

  const get = (method: string, key: string) =>
    store.getOption(full(key)).pipe(
      Effect.mapError(backingError(method)),
      Effect.flatMap(Option.match({
        onNone: () => Effect.succeedNone,
        onSome: (bytes) => Effect.asSome(decode(method, bytes))
      }))
    )

  const set = (method: string, key: string, value: unknown, ttl: Option.Option<Duration.Duration>) =>
    Effect.flatMap(encode(method, value), (bytes) => {
      if (Option.isNone(ttl) || !Duration.isFinite(ttl.value)) {
        return store.set(full(key), bytes).pipe(Effect.mapError(backingError(method)))
      }
      // To the store, a zero TTL means "never expires"; here it means "already expired".
      if (Duration.toMillis(ttl.value) <= 0) {
        return store.delete(full(key)).pipe(Effect.asVoid, Effect.mapError(backingError(method)))
      }
      return store.set(full(key), bytes, ttl.value).pipe(Effect.mapError(backingError(method)))
    })

  /**
   * `setMany` takes one TTL for all its entries: one call per distinct TTL
   * (permanent, each finite one), and one `deleteMany` for entries already
   * expired (a zero TTL). Every value is encoded before anything is written.
   */
  const setMany = (entries: ReadonlyArray<readonly [key: string, value: unknown, ttl: Option.Option<Duration.Duration>]>) =>
    Effect.forEach(entries, ([key, value, ttl]) => Effect.map(encode("setMany", value), (bytes) => [key, bytes, ttl] as const)).pipe(
      Effect.flatMap((encoded) => {
        const permanent: Array<readonly [string, Uint8Array]> = []
        const expired: Array<string> = []
        const byTtl = new Map<number, Array<readonly [string, Uint8Array]>>()
        for (const [key, bytes, ttl] of encoded) {
          if (Option.isNone(ttl) || !Duration.isFinite(ttl.value)) {
            permanent.push([full(key), bytes])
          } else {
            const millis = Duration.toMillis(ttl.value)
            if (millis <= 0) expired.push(full(key))
            else byTtl.set(millis, [...(byTtl.get(millis) ?? []), [full(key), bytes]])
          }
        }
        return Effect.all([
          permanent.length > 0 ? store.setMany(permanent) : Effect.void,
          expired.length > 0 ? store.deleteMany(expired) : Effect.void,
          Effect.forEach(byTtl, ([millis, group]) => store.setMany(group, Duration.millis(millis)), { discard: true })
        ], { discard: true }).pipe(Effect.mapError(backingError("setMany")))
      })
    )

  return {
    get: (key) => get("get", key),
    getMany: (keys) =>
      store.getMany(keys.map(full)).pipe(
        Effect.mapError(backingError("getMany")),
        Effect.flatMap(Effect.forEach(Option.match({
          onNone: () => Effect.succeedNone,
          onSome: (bytes: Uint8Array) => Effect.asSome(decode("getMany", bytes))
        })))
      ),
    set: (key, value, ttl) => set("set", key, value, ttl),
    setMany: (entries) => setMany(entries),
    remove: (key) => store.delete(full(key)).pipe(Effect.asVoid, Effect.mapError(backingError("remove"))),
    clear: store.deletePrefix(namespace).pipe(Effect.asVoid, Effect.mapError(backingError("clear")))
  }
}

/**
 * `BackingPersistence` on the `KvStore` in context: store `storeId` keeps its
 * entries under `${prefix}${storeId}/` (so `clear` removes only its own), as
 * JSON in UTF-8, with the store's own TTL (on PostgreSQL the database's clock,
 * swept by `cleanup`); an entry without a TTL never expires. Every failure is
 * a `PersistenceBackingError` whose `cause` is the `KvError` (or the JSON
 * error).
 *
 * Store ids should not contain `/`: `clear` of store `"a"` would also remove
 * the entries of store `"a/b"`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<Persistence.BackingPersistence, never, KvStore.KvStore> =>
  layerFor("KvPersistence.layer", options)

const layerFor = (
  where: string,
  options: Options | undefined
): Layer.Layer<Persistence.BackingPersistence, never, KvStore.KvStore> =>
  Layer.effect(
    Persistence.BackingPersistence,
    Effect.map(KvStore.KvStore, (kvStore) => {
      const { prefix, store } = bridgeOptions(where, kvStore, options, DEFAULT_PREFIX)
      return Persistence.BackingPersistence.of({
        [Persistence.BackingPersistenceTypeId]: Persistence.BackingPersistenceTypeId,
        make: (storeId) => Effect.succeed(makeStore(store, `${prefix}${storeId}/`))
      })
    })
  )

/**
 * `ResultPersistence` (what `PersistedCache.make` needs) on the `KvStore` in
 * context: `Persistence.layerResult` over `layer(options)`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerResult = (options?: Options): Layer.Layer<Persistence.ResultPersistence, never, KvStore.KvStore> =>
  Persistence.layerResult.pipe(Layer.provide(layerFor("KvPersistence.layerResult", options)))
