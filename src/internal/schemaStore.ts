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
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import type { KvError, SchemaStore, Service } from "../KvStore.js"

const encoder = new TextEncoder()
// `fatal`: bytes that are not UTF-8 are a ParseError, not text with U+FFFD in it.
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

/** UTF-8 bytes ⇄ text, refusing bytes that are not UTF-8. */
const Utf8Text = Schema.transformOrFail(Schema.Uint8ArrayFromSelf, Schema.String, {
  strict: true,
  decode: (bytes, _, ast) => {
    try {
      return ParseResult.succeed(decoder.decode(bytes))
    } catch {
      return ParseResult.fail(new ParseResult.Type(ast, bytes, "The stored bytes are not UTF-8 text"))
    }
  },
  // JSON.stringify escapes lone surrogates, so the text is always well-formed UTF-16.
  encode: (text) => ParseResult.succeed(encoder.encode(text))
})

const make = <A, I, R>(store: Service, schema: Schema.Schema<A, I, R>): SchemaStore<A, R> => {
  const bytesSchema = Schema.compose(Utf8Text, Schema.parseJson(schema))
  const decode = Schema.decode(bytesSchema)
  const encode = Schema.encode(bytesSchema)
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
      ttl?: Duration.DurationInput
    ): Effect.Effect<A, E | KvError | ParseResult.ParseError, R | R2> =>
      Effect.suspend(() => {
        // What was written, as `A`: kept from inside the update (one per run) so it is not decoded again.
        let written: Option.Option<A> = Option.none()
        return store.update(
          key,
          (current) =>
            decodeOption(current).pipe(
              Effect.flatMap(f),
              Effect.tap((next) => {
                written = Option.some(next)
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
  <A, I, R>(schema: Schema.Schema<A, I, R>): (self: Service) => SchemaStore<A, R>
  <A, I, R>(self: Service, schema: Schema.Schema<A, I, R>): SchemaStore<A, R>
} = dual(2, make)
