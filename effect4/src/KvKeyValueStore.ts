/**
 * Effect 4's `KeyValueStore` (`effect/persistence`) served by the `KvStore` in
 * context, so a program written against `KeyValueStore` (and its `toSchemaStore`)
 * runs on any effect-kv backend by changing one layer — with TTL-free entries
 * that are atomic to modify and listed from an index, where `KeyValueStore.layerSql`
 * reads then writes and lists by reading the whole table.
 *
 * The Effect 3 line's module of the same name serves `@effect/platform`'s
 * `KeyValueStore`; this one differs where Effect 4's interface does: `get` answers
 * `string | undefined`, errors are `KeyValueStoreError` (method, key, cause), and
 * `keys`, `clearPrefix` and `isEmpty` are part of the service.
 *
 * @since 2.0.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import * as Effect from "effect/Effect"
import * as Base64 from "effect/encoding/Base64"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as KeyValueStore from "effect/persistence/KeyValueStore"
import { bridgeOptions } from "./internal/options.js"
import * as KvStore from "./KvStore.js"
import { describeKind } from "./core/describe.js"

/**
 * Options of `make` and `layer`. An unknown name or a value of the wrong type
 * makes every operation fail with `KeyValueStoreError` whose `cause`
 * is a `KvError` (`InvalidArgument`, op `"layer"`) naming the option.
 *
 * @since 2.0.0
 * @category models
 */
export interface Options {
  /**
   * Every key of the `KeyValueStore` is stored as `prefix + key`; `clear`, `size`
   * and `keys` see only the keys under it. Default `""`: the whole store.
   */
  readonly prefix?: string | undefined
}

const encoder = new TextEncoder()
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/**
 * Bytes as the string `get` returns: their UTF-8 text, or — for bytes that are not
 * UTF-8, e.g. written with `set(key, Uint8Array)` — their base64, as
 * `KeyValueStore.makeStringOnly` stores binary values.
 */
const bytesToString = (bytes: Uint8Array): string => {
  try {
    return strictDecoder.decode(bytes)
  } catch {
    return Base64.encode(bytes)
  }
}

const toBytes = (value: string | Uint8Array): Uint8Array => (typeof value === "string" ? encoder.encode(value) : value)

const keyValueStoreError = (method: string, message: string, key: unknown, cause?: unknown) =>
  new KeyValueStore.KeyValueStoreError({
    method,
    message,
    ...(typeof key === "string" ? { key } : {}),
    ...(cause === undefined ? {} : { cause })
  })

/** Raised inside `update` when the key is missing: `modify` writes nothing then. */
class Missing {
  readonly _tag = "Missing"
}

/**
 * A `KeyValueStore` over a `KvStore` service. Strings are stored as UTF-8 bytes.
 * `modify` and `modifyUint8Array` are atomic (`KvStore.update`) and, as
 * `KeyValueStore` specifies, do nothing on a missing key; entries have no expiry
 * (`KeyValueStore` has no notion of one). Every `KvError` becomes a
 * `KeyValueStoreError` whose `cause` is the `KvError`; a key that is not a string
 * is refused the same way, never converted.
 *
 * @since 2.0.0
 * @category constructors
 */
export const make = (store: KvStore.Service, options?: Options): KeyValueStore.KeyValueStore =>
  makeFor("KvKeyValueStore.make", store, options)

const makeFor = (where: string, kvStore: KvStore.Service, options: Options | undefined): KeyValueStore.KeyValueStore => {
  const { prefix, store } = bridgeOptions(where, kvStore, options, "")
  const toError = (method: string, key?: unknown) => (error: KvStore.KvError) =>
    keyValueStoreError(method, error.message, key, error)

  /** Runs `f` on the store's key for `key`, refusing a key that is not a string. */
  const withKey = <A>(
    method: string,
    key: unknown,
    f: (full: string) => Effect.Effect<A, KvStore.KvError>
  ): Effect.Effect<A, KeyValueStore.KeyValueStoreError> =>
    typeof key === "string"
      ? Effect.mapError(Effect.suspend(() => f(`${prefix}${key}`)), toError(method, key))
      : Effect.fail(keyValueStoreError(method, `Invalid key for ${method}: expected a string, got ${describeKind(key)}`, undefined))

  const modifyBytes = <A>(method: string, key: string, f: (current: Uint8Array) => readonly [Uint8Array, A]) =>
    withKey(method, key, (full) =>
      Effect.suspend(() => {
        let result: A | undefined
        return store.update(full, (current) => {
          if (Option.isNone(current)) return Effect.fail(new Missing())
          return Effect.sync(() => {
            const [bytes, value] = f(current.value)
            result = value
            return bytes
          })
        }).pipe(
          Effect.map(() => result),
          Effect.catchIf((error): error is Missing => error instanceof Missing, () => Effect.undefined)
        )
      }))

  const keys = Effect.map(store.keys(prefix), (keys) => keys.map((key) => key.slice(prefix.length)))

  return KeyValueStore.make({
    get: (key) => withKey("get", key, (full) => Effect.map(store.getOption(full), Option.match({ onNone: () => undefined, onSome: bytesToString }))),
    getUint8Array: (key) => withKey("getUint8Array", key, (full) => Effect.map(store.getOption(full), Option.getOrUndefined)),
    set: (key, value) => withKey("set", key, (full) => store.set(full, toBytes(value))),
    remove: (key) => withKey("remove", key, (full) => Effect.asVoid(store.delete(full))),
    has: (key) => withKey("has", key, (full) => store.has(full)),
    clear: Effect.mapError(Effect.asVoid(store.deletePrefix(prefix)), toError("clear")),
    clearPrefix: (inner) => withKey("clearPrefix", inner, (full) => Effect.asVoid(store.deletePrefix(full))),
    size: Effect.mapError(store.count(prefix), toError("size")),
    isEmpty: Effect.mapError(Effect.map(store.count(prefix), (n) => n === 0), toError("isEmpty")),
    keys: Effect.mapError(keys, toError("keys")),
    modify: (key, f) =>
      modifyBytes("modify", key, (current) => {
        const next = f(bytesToString(current))
        return [encoder.encode(next), next] as const
      }),
    modifyUint8Array: (key, f) =>
      modifyBytes("modifyUint8Array", key, (current) => {
        const next = f(current)
        return [next, next] as const
      })
  })
}

/**
 * Provides Effect 4's `KeyValueStore` from the `KvStore` in context, e.g.
 * `KvKeyValueStore.layer({ prefix: "app/" }).pipe(Layer.provide(MemoryStore.layer()))`
 * in place of `KeyValueStore.layerMemory`.
 *
 * @since 2.0.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<KeyValueStore.KeyValueStore, never, KvStore.KvStore> =>
  Layer.effect(
    KeyValueStore.KeyValueStore,
    Effect.map(KvStore.KvStore, (store) => makeFor("KvKeyValueStore.layer", store, options))
  )
