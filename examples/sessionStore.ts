/**
 * A session store with sliding expiry, on the typed adapter of `typedStore.ts`.
 *
 * Each session is one key, `<prefix><user>:<random id>` (say
 * `session:alice:9f2c…`), written with a TTL. Reading a missing or expired
 * session gives `Option.none()` (the store's `NotFound`, handled with
 * `Effect.catchTag`); `touch` extends a live session atomically and never
 * brings an expired one back. A user's sessions share the key prefix
 * `<user>:`, so on the store's namespace view (`KvStore.prefixed`) listing
 * them is one `streamKeys` and "log out everywhere" one `deletePrefix`.
 *
 * Shows: create, read, touch (extend), destroy; an untouched session expiring
 * while a touched one lives on; expired sessions disappearing from the listing;
 * log out everywhere ending all of one user's sessions and no one else's.
 *
 * The program needs only `KvStore`; the backend is chosen by whoever runs it.
 */
import { randomUUID } from "node:crypto"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { KvStore } from "effect-kv"
import { type CorruptValue, type InvalidValue, makeTypedStore } from "./typedStore.js"

export const Session = Schema.Struct({
  userId: Schema.String,
  createdAt: Schema.Number,
  lastSeenAt: Schema.Number
})
export type Session = typeof Session.Type

export interface SessionStore {
  /** Starts a session for `userId` and succeeds with its id (the cookie value). */
  readonly create: (userId: string) => Effect.Effect<string, InvalidValue | KvStore.KvError, KvStore.KvStore>
  /** The live session, or `Option.none()` when it is missing or expired. */
  readonly read: (
    sessionId: string
  ) => Effect.Effect<Option.Option<Session>, CorruptValue | KvStore.KvError, KvStore.KvStore>
  /** Restarts the session's TTL; `false` when it had already ended. */
  readonly touch: (
    sessionId: string
  ) => Effect.Effect<boolean, CorruptValue | InvalidValue | KvStore.KvError, KvStore.KvStore>
  /** Ends the session; `false` when it had already ended. */
  readonly destroy: (sessionId: string) => Effect.Effect<boolean, KvStore.KvError, KvStore.KvStore>
  /** The ids of the user's live sessions, in key order. */
  readonly listForUser: (userId: string) => Effect.Effect<ReadonlyArray<string>, KvStore.KvError, KvStore.KvStore>
  /** Ends every session of the user ("log out everywhere"); succeeds with how many were live. */
  readonly destroyAllForUser: (userId: string) => Effect.Effect<number, KvStore.KvError, KvStore.KvStore>
}

export const makeSessionStore = (options: {
  readonly prefix: string
  readonly ttl: Duration.DurationInput
}): SessionStore => {
  const sessions = makeTypedStore(Session, options.prefix)
  // Escaping the user id keeps one user's prefix from matching another's ("ann" vs "ann:x").
  const userPrefix = (userId: string) => `${encodeURIComponent(userId)}:`

  // The store seen from inside the sessions' namespace: its keys are the session ids.
  const sessionKeys = Effect.map(KvStore.KvStore, KvStore.prefixed(options.prefix))

  const listForUser = (userId: string) =>
    Effect.flatMap(sessionKeys, (view) => Stream.runCollect(view.streamKeys(userPrefix(userId)))).pipe(
      Effect.map(Chunk.toReadonlyArray)
    )

  const destroy = (sessionId: string) => sessions.delete(sessionId)

  return {
    create: (userId) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const sessionId = `${userPrefix(userId)}${randomUUID()}`
        yield* sessions.set(sessionId, { userId, createdAt: now, lastSeenAt: now }, options.ttl)
        return sessionId
      }),
    read: (sessionId) =>
      sessions.get(sessionId).pipe(
        Effect.map(Option.some),
        Effect.catchTag("NotFound", () => Effect.succeedNone)
      ),
    touch: (sessionId) =>
      sessions.update(
        sessionId,
        (current) =>
          Option.match(current, {
            // Failing the update function writes nothing: an ended session stays ended.
            onNone: () => Effect.fail(new KvStore.NotFound({ key: sessions.key(sessionId) })),
            onSome: (session) => Effect.map(Clock.currentTimeMillis, (now) => ({ ...session, lastSeenAt: now }))
          }),
        options.ttl
      ).pipe(
        Effect.as(true),
        Effect.catchTag("NotFound", () => Effect.succeed(false))
      ),
    destroy,
    listForUser,
    destroyAllForUser: (userId) => Effect.flatMap(sessionKeys, (view) => view.deletePrefix(userPrefix(userId)))
  }
}

/** What the session program observed. */
export interface SessionReport {
  readonly readAfterCreate: Option.Option<Session>
  readonly sessionsOfAlice: number
  readonly touched: boolean
  readonly touchedAfterTtl: Option.Option<Session>
  readonly untouchedAfterTtl: Option.Option<Session>
  readonly sessionsOfAliceAfterTtl: number
  readonly touchOfExpired: boolean
  readonly destroyed: boolean
  readonly destroyedAgain: boolean
  readonly readAfterDestroy: Option.Option<Session>
  readonly sessionsOfBobBefore: number
  readonly loggedOutEverywhere: number
  readonly sessionsOfBob: number
  /** Sessions of "bobby", whose ids also start with "bob", after bob logged out everywhere. */
  readonly sessionsOfBobby: number
}

/**
 * Sessions with a 500 ms TTL: one touched after 300 ms, one not; at 600 ms
 * only the touched one is still there.
 */
export const program = (
  prefix: string
): Effect.Effect<SessionReport, CorruptValue | InvalidValue | KvStore.KvError, KvStore.KvStore> =>
  Effect.gen(function*() {
    const ttl = Duration.millis(500)
    const store = makeSessionStore({ prefix, ttl })
    const show = Option.match({ onNone: () => "missing", onSome: (s: Session) => `session of ${s.userId}` })

    const first = yield* store.create("alice")
    const second = yield* store.create("alice")
    const readAfterCreate = yield* store.read(first)
    const sessionsOfAlice = (yield* store.listForUser("alice")).length
    yield* Effect.log(`create + read -> ${show(readAfterCreate)}; alice has ${sessionsOfAlice} sessions (ttl 500 ms)`)

    yield* Effect.sleep("300 millis")
    const touched = yield* store.touch(first)
    yield* Effect.sleep("300 millis")
    const touchedAfterTtl = yield* store.read(first)
    const untouchedAfterTtl = yield* store.read(second)
    const sessionsOfAliceAfterTtl = (yield* store.listForUser("alice")).length
    yield* Effect.log(
      `after 600 ms: touched at 300 ms -> ${show(touchedAfterTtl)}; untouched -> ${
        show(untouchedAfterTtl)
      }; alice has ${sessionsOfAliceAfterTtl} session`
    )

    const touchOfExpired = yield* store.touch(second)
    yield* Effect.log(`touch of the expired session -> ${touchOfExpired} (not brought back)`)

    const destroyed = yield* store.destroy(first)
    const destroyedAgain = yield* store.destroy(first)
    const readAfterDestroy = yield* store.read(first)
    yield* Effect.log(`destroy -> ${destroyed}, again -> ${destroyedAgain}; read -> ${show(readAfterDestroy)}`)

    yield* store.create("bob")
    yield* store.create("bob")
    yield* store.create("bobby")
    const sessionsOfBobBefore = (yield* store.listForUser("bob")).length
    const loggedOutEverywhere = yield* store.destroyAllForUser("bob")
    const sessionsOfBob = (yield* store.listForUser("bob")).length
    const sessionsOfBobby = (yield* store.listForUser("bobby")).length
    yield* Effect.log(
      `bob (${sessionsOfBobBefore} sessions) logs out everywhere -> ${loggedOutEverywhere} ended, ${sessionsOfBob} left; bobby keeps ${sessionsOfBobby}`
    )

    return {
      readAfterCreate,
      sessionsOfAlice,
      touched,
      touchedAfterTtl,
      untouchedAfterTtl,
      sessionsOfAliceAfterTtl,
      touchOfExpired,
      destroyed,
      destroyedAgain,
      readAfterDestroy,
      sessionsOfBobBefore,
      loggedOutEverywhere,
      sessionsOfBob,
      sessionsOfBobby
    }
  })
