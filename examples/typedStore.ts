/**
 * A typed adapter: an Effect `Schema` (as JSON) on top of the byte API.
 *
 * `makeTypedStore(schema, prefix)` gives get/set/update/delete of decoded
 * values under `prefix`, through `Schema.parseJson(schema)` and UTF-8. Values
 * that do not satisfy the schema are refused before anything is written
 * (`InvalidValue`); stored bytes that do not decode are a typed error
 * (`CorruptValue`), never a defect or an unchecked cast.
 *
 * Shows: a `UserCache` round-trips a user, updates it atomically, refuses an
 * invalid user without touching the stored one, and reports corrupted bytes
 * (written through the raw byte API) as `CorruptValue`.
 *
 * The program needs only `KvStore`; the backend is chosen by whoever runs it.
 */
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { KvStore } from "effect-kv"

/** The bytes stored at `key` are not a valid encoding of the schema. */
export class CorruptValue extends Data.TaggedError("CorruptValue")<{
  readonly key: string
  readonly cause: ParseResult.ParseError
}> {
  override get message(): string {
    return `The value stored at ${JSON.stringify(this.key)} does not decode: ${this.cause.message}`
  }
}

/** The value given for `key` does not satisfy the schema; nothing was written. */
export class InvalidValue extends Data.TaggedError("InvalidValue")<{
  readonly key: string
  readonly cause: ParseResult.ParseError
}> {
  override get message(): string {
    return `Refused to store an invalid value at ${JSON.stringify(this.key)}: ${this.cause.message}`
  }
}

/** Values of type `A`, stored as JSON under one key prefix. */
export interface TypedStore<A> {
  /** The full store key of `id`. */
  readonly key: (id: string) => string
  readonly get: (id: string) => Effect.Effect<A, KvStore.NotFound | CorruptValue | KvStore.KvError, KvStore.KvStore>
  readonly set: (
    id: string,
    value: A,
    ttl?: Duration.DurationInput
  ) => Effect.Effect<void, InvalidValue | KvStore.KvError, KvStore.KvStore>
  /** Atomic read-modify-write of the decoded value; nothing is written if `f`, decoding or encoding fails. */
  readonly update: <E = never, R = never>(
    id: string,
    f: (current: Option.Option<A>) => Effect.Effect<A, E, R>,
    ttl?: Duration.DurationInput
  ) => Effect.Effect<A, E | CorruptValue | InvalidValue | KvStore.KvError, R | KvStore.KvStore>
  readonly delete: (id: string) => Effect.Effect<boolean, KvStore.KvError, KvStore.KvStore>
  /** The ids with a live value that start with `idPrefix`, in code-point order. */
  readonly ids: (idPrefix?: string) => Effect.Effect<ReadonlyArray<string>, KvStore.KvError, KvStore.KvStore>
}

const encoder = new TextEncoder()
// Not `fatal`: invalid UTF-8 becomes U+FFFD, which JSON parsing then rejects as a ParseError.
const decoder = new TextDecoder()

export const makeTypedStore = <A, I>(schema: Schema.Schema<A, I>, prefix: string): TypedStore<A> => {
  const json = Schema.parseJson(schema)
  const decodeJson = Schema.decodeUnknown(json)
  const encodeJson = Schema.encode(json)

  const key = (id: string) => `${prefix}${id}`
  const decode = (key: string, bytes: Uint8Array) =>
    decodeJson(decoder.decode(bytes)).pipe(Effect.mapError((cause) => new CorruptValue({ key, cause })))
  const encode = (key: string, value: A) =>
    encodeJson(value).pipe(
      Effect.map((text) => encoder.encode(text)),
      Effect.mapError((cause) => new InvalidValue({ key, cause }))
    )

  return {
    key,
    get: (id) => Effect.flatMap(KvStore.get(key(id)), (bytes) => decode(key(id), bytes)),
    set: (id, value, ttl) => Effect.flatMap(encode(key(id), value), (bytes) => KvStore.set(key(id), bytes, ttl)),
    update: <E, R>(
      id: string,
      f: (current: Option.Option<A>) => Effect.Effect<A, E, R>,
      ttl?: Duration.DurationInput
    ) =>
      KvStore.update(
        key(id),
        (current) =>
          Effect.gen(function*() {
            const decoded: Option.Option<A> = Option.isSome(current)
              ? Option.some(yield* decode(key(id), current.value))
              : Option.none()
            return yield* encode(key(id), yield* f(decoded))
          }),
        ttl
      ).pipe(Effect.flatMap((bytes) => decode(key(id), bytes))),
    delete: (id) => KvStore.delete(key(id)),
    ids: (idPrefix = "") =>
      Effect.map(KvStore.keys(`${prefix}${idPrefix}`), (keys) => keys.map((k) => k.slice(prefix.length)))
  }
}

// ---------------------------------------------------------------------------
// The program: a cache of users

export const User = Schema.Struct({
  id: Schema.String,
  name: Schema.NonEmptyTrimmedString,
  email: Schema.String.pipe(Schema.pattern(/^[^@\s]+@[^@\s]+$/)),
  logins: Schema.NonNegativeInt
})
export type User = typeof User.Type

export const makeUserCache = (prefix: string): TypedStore<User> => makeTypedStore(User, `${prefix}user:`)

/** What the typed-store program observed. */
export interface TypedStoreReport {
  readonly stored: User
  readonly afterLogin: User
  readonly invalid: InvalidValue | undefined
  readonly afterInvalid: User
  readonly corrupt: CorruptValue | undefined
}

export const program = (
  prefix: string
): Effect.Effect<TypedStoreReport, KvStore.NotFound | CorruptValue | InvalidValue | KvStore.KvError, KvStore.KvStore> =>
  Effect.gen(function*() {
    const users = makeUserCache(prefix)
    const ada: User = { id: "u1", name: "Ada Lovelace", email: "ada@example.org", logins: 0 }

    yield* users.set(ada.id, ada)
    const stored = yield* users.get(ada.id)
    yield* Effect.log(`set + get -> ${JSON.stringify(stored)}`)

    const afterLogin = yield* users.update(ada.id, (current) =>
      Option.match(current, {
        onNone: () => Effect.fail(new KvStore.NotFound({ key: users.key(ada.id) })),
        onSome: (user) => Effect.succeed({ ...user, logins: user.logins + 1 })
      }))
    yield* Effect.log(`update (one more login) -> logins = ${afterLogin.logins}`)

    // The type checker accepts -1 for a number; the schema does not.
    const invalid = yield* users.set(ada.id, { ...afterLogin, logins: -1 }).pipe(
      Effect.as(undefined),
      Effect.catchTag("InvalidValue", (error) => Effect.succeed(error))
    )
    const afterInvalid = yield* users.get(ada.id)
    yield* Effect.log(
      `set with logins = -1 -> ${invalid?._tag ?? "written"}; stored logins still ${afterInvalid.logins}`
    )

    // Another program writes bytes that are not a User through the raw byte API.
    yield* KvStore.set(users.key("u2"), new TextEncoder().encode(`{"id":"u2","name":`))
    const corrupt = yield* users.get("u2").pipe(
      Effect.as(undefined),
      Effect.catchTag("CorruptValue", (error) => Effect.succeed(error))
    )
    yield* Effect.log(
      `get of corrupted bytes -> ${corrupt?._tag ?? "decoded"} (${corrupt?.cause._tag ?? "no ParseError"})`
    )

    return { stored, afterLogin, invalid, afterInvalid, corrupt }
  })
