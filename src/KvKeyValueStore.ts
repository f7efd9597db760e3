/**
 * `@effect/platform`'s `KeyValueStore` served by the `KvStore` in context, so
 * a program written against `KeyValueStore` (and its `forSchema`) runs on any
 * effect-kv backend by changing one layer.
 *
 * @since 0.1.0
 */
import "./internal/effectLine.js" // first: refuses to load next to another Effect major, saying so
import * as PlatformError from "@effect/platform/Error"
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import * as Effect from "effect/Effect"
import * as Encoding from "effect/Encoding"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { bridgeOptions } from "./internal/options.js"
import * as KvStore from "./KvStore.js"

/**
 * Options of `make` and `layer`. An unknown name or a value of the wrong type
 * makes every operation fail with `PlatformError` `BadArgument` whose `cause`
 * is a `KvError` (`InvalidArgument`, op `"layer"`) naming the option.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Every key of the `KeyValueStore` is stored as `prefix + key`, and `clear`
   * and `size` see only the keys under it. Default `""`: the whole store.
   */
  readonly prefix?: string | undefined
}

const encoder = new TextEncoder()
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/**
 * Bytes as the string `get` returns: their UTF-8 text, or — for bytes that
 * are not UTF-8, e.g. written with `set(key, Uint8Array)` — their base64, as
 * `KeyValueStore.layerMemory` does for binary values.
 */
const bytesToString = (bytes: Uint8Array): string => {
  try {
    return strictDecoder.decode(bytes)
  } catch {
    return Encoding.encodeBase64(bytes)
  }
}

const toBytes = (value: string | Uint8Array): Uint8Array => typeof value === "string" ? encoder.encode(value) : value

/** `InvalidArgument` is the caller's mistake (`BadArgument`), anything else the store's (`SystemError`). */
const toPlatformError = (method: string, key?: string) => (error: KvStore.KvError): PlatformError.PlatformError =>
  error.reason === "InvalidArgument"
    ? new PlatformError.BadArgument({ module: "KeyValueStore", method, description: error.message, cause: error })
    : new PlatformError.SystemError({
      reason: "Unknown",
      module: "KeyValueStore",
      method,
      description: error.message,
      cause: error,
      ...(key === undefined ? {} : { pathOrDescriptor: key })
    })

/** Raised inside `update` when the key is missing: `modify` writes nothing then. */
class Missing {
  readonly _tag = "Missing"
}

/**
 * A `KeyValueStore` over a `KvStore` service. Strings are stored as UTF-8
 * bytes. `modify` and `modifyUint8Array` are atomic (`KvStore.update`) and,
 * as `KeyValueStore` specifies, do nothing on a missing key; the entry they
 * write has no expiry (`KeyValueStore` has no notion of one). Every `KvError`
 * becomes a `PlatformError` (`BadArgument` for an invalid key, `SystemError`
 * otherwise) whose `cause` is the `KvError`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (store: KvStore.Service, options?: Options): KeyValueStore.KeyValueStore =>
  makeFor("KvKeyValueStore.make", store, options)

const makeFor = (where: string, kvStore: KvStore.Service, options: Options | undefined): KeyValueStore.KeyValueStore => {
  const { prefix, store } = bridgeOptions(where, kvStore, options, "")
  const full = (key: string) => `${prefix}${key}`
  const fail = (method: string, key?: string) => Effect.mapError(toPlatformError(method, key))

  const getBytes = (method: string, key: string) =>
    store.getOption(full(key)).pipe(fail(method, key))

  const modifyBytes = <A>(method: string, key: string, f: (current: Uint8Array) => readonly [Uint8Array, A]) =>
    Effect.suspend(() => {
      let result: Option.Option<A> = Option.none()
      return store.update(full(key), (current) => {
        if (Option.isNone(current)) return Effect.fail(new Missing())
        return Effect.sync(() => {
          const [bytes, value] = f(current.value)
          result = Option.some(value)
          return bytes
        })
      }).pipe(
        Effect.map(() => result),
        Effect.catchIf((error): error is Missing => error instanceof Missing, () => Effect.succeedNone),
        fail(method, key)
      )
    })

  return KeyValueStore.make({
    get: (key) => Effect.map(getBytes("get", key), Option.map(bytesToString)),
    getUint8Array: (key) => getBytes("getUint8Array", key),
    set: (key, value) => Effect.suspend(() => store.set(full(key), toBytes(value))).pipe(fail("set", key)),
    remove: (key) => store.delete(full(key)).pipe(Effect.asVoid, fail("remove", key)),
    has: (key) => store.has(full(key)).pipe(fail("has", key)),
    clear: store.deletePrefix(prefix).pipe(Effect.asVoid, fail("clear")),
    size: store.count(prefix).pipe(fail("size")),
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
 * Provides `KeyValueStore` from the `KvStore` in context, e.g.
 * `KvKeyValueStore.layer({ prefix: "app/" }).pipe(Layer.provide(MemoryStore.layer()))`
 * in place of `KeyValueStore.layerMemory`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: Options): Layer.Layer<KeyValueStore.KeyValueStore, never, KvStore.KvStore> =>
  Layer.effect(
    KeyValueStore.KeyValueStore,
    Effect.map(KvStore.KvStore, (store) => makeFor("KvKeyValueStore.layer", store, options))
  )
