/**
 * `KvStore.forSchema`: a view of a `Service` whose values are `A`, stored as
 * the JSON of the schema's encoded form in UTF-8. One schema does the whole
 * trip, bytes ⇄ text ⇄ JSON ⇄ `A`, so every way a stored value can be wrong
 * (not UTF-8, not JSON, not the schema's shape) is a `ParseError` and never a
 * defect, and a value that does not encode fails before anything is written.
 *
 * Operations that never touch a value (`delete`, `has`, `keys`, `count`, ...)
 * are the byte store's own. The change feeds (`watch`, `watchPrefix`) map
 * their values through `decodeOption` like `getOption` does.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import * as Stream from "effect/Stream"
import type { KvError, SchemaStore, Service } from "../KvStore.js"

const encoder = new TextEncoder()
// `fatal`: bytes that are not UTF-8 are a SchemaError, not text with U+FFFD in it.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

const notUtf8 = (bytes: Uint8Array): Schema.SchemaError =>
  new Schema.SchemaError(new SchemaIssue.InvalidValue({ message: "The stored bytes are not UTF-8 text" }, bytes))

const make = <A, I, RD, RE>(store: Service, schema: Schema.Codec<A, I, RD, RE>): SchemaStore<A, RD | RE> => {
  const json = Schema.fromJsonString(schema)
  const decodeText = Schema.decodeEffect(json)
  const encodeText = Schema.encodeEffect(json)
  const decode = (bytes: Uint8Array): Effect.Effect<A, Schema.SchemaError, RD> => {
    let text: string
    try {
      text = decoder.decode(bytes)
    } catch {
      return Effect.fail(notUtf8(bytes))
    }
    return decodeText(text)
  }
  // JSON.stringify escapes lone surrogates, so the text is always well-formed UTF-16.
  const encode = (value: A): Effect.Effect<Uint8Array, Schema.SchemaError, RE> =>
    Effect.map(encodeText(value), (text) => encoder.encode(text))
  const decodeOption = (option: Option.Option<Uint8Array>) =>
    Option.isNone(option) ? Effect.succeedNone : Effect.asSome(decode(option.value))

  return {
    store,
    get: (key) => Effect.flatMap(store.get(key), decode),
    getOption: (key) => Effect.flatMap(store.getOption(key), decodeOption),
    set: (key, value, ttl) => Effect.flatMap(encode(value), (bytes) => store.set(key, bytes, ttl)),
    setIfAbsent: (key, value, ttl) => Effect.flatMap(encode(value), (bytes) => store.setIfAbsent(key, bytes, ttl)),
    getMany: (keys) => Effect.flatMap(store.getMany(keys), Effect.forEach(decodeOption)),
    // every value is encoded before anything is written: one that does not encode writes nothing
    setMany: (entries, ttl) =>
      Effect.suspend(() =>
        Effect.forEach(Array.from(entries), ([key, value]) => Effect.map(encode(value), (bytes) => [key, bytes] as const))
      ).pipe(Effect.flatMap((encoded) => store.setMany(encoded, ttl))),
    update: <E = never, R2 = never>(
      key: string,
      f: (current: Option.Option<A>) => Effect.Effect<A, E, R2>,
      ttl?: Duration.Input
    ): Effect.Effect<A, E | KvError | Schema.SchemaError, RD | RE | R2> =>
      Effect.suspend(() => {
        // What was written, as `A`: kept from inside the update (one per run) so it is not decoded again.
        let written: Option.Option<A> = Option.none()
        return store.update(
          key,
          (current) =>
            decodeOption(current).pipe(
              Effect.flatMap(f),
              Effect.map((next) => {
                written = Option.some(next)
                return next
              }),
              Effect.flatMap(encode)
            ),
          ttl
        ).pipe(Effect.flatMap((bytes) => Option.isSome(written) ? Effect.succeed(written.value) : decode(bytes)))
      }),
    delete: (key) => store.delete(key),
    has: (key) => store.has(key),
    keys: (prefix) => store.keys(prefix),
    timeToLive: (key) => store.timeToLive(key),
    expire: (key, ttl) => store.expire(key, ttl),
    deleteMany: (keys) => store.deleteMany(keys),
    deletePrefix: (prefix) => store.deletePrefix(prefix),
    count: (prefix) => store.count(prefix),
    streamKeys: (prefix, options) => store.streamKeys(prefix, options),
    streamEntries: (prefix, options) =>
      Stream.mapEffect(
        store.streamEntries(prefix, options),
        ([key, bytes]) => Effect.map(decode(bytes), (value) => [key, value] as const)
      ),
    watch: (key) => Stream.mapEffect(store.watch(key), decodeOption),
    watchPrefix: (prefix) =>
      Stream.mapEffect(store.watchPrefix(prefix), (change) =>
        Effect.map(decodeOption(change.value), (value) => ({ key: change.key, value })))
  }
}

export const forSchema: {
  <A, I, RD, RE>(schema: Schema.Codec<A, I, RD, RE>): (self: Service) => SchemaStore<A, RD | RE>
  <A, I, RD, RE>(self: Service, schema: Schema.Codec<A, I, RD, RE>): SchemaStore<A, RD | RE>
} = dual(2, make)
