/**
 * A client's tour of the HTTP service in `httpService.ts`: starts it on a free
 * loopback port over the `KvStore` it is given, makes the requests a browser
 * would make, and stops it.
 *
 * Shows: a login and `GET /me`, "log out everywhere" ending both of a user's
 * sessions, the expensive report computed once and then served from the
 * persisted cache, and the per-IP limit answering 429 with `Retry-After`.
 *
 * The program needs only `KvStore`; the backend is chosen by whoever runs it.
 */
import * as HttpServer from "@effect/platform/HttpServer"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import type * as Scope from "effect/Scope"
import { KvStore } from "effect-kv"
import { createServer } from "node:http"
import { HttpServiceLive } from "./httpService.js"

/** A running instance of the service. */
export interface Instance {
  readonly url: string
}

/**
 * Starts the service on a free port of 127.0.0.1, with `config` as its whole
 * configuration (nothing read from the environment) and the store from
 * `store`; it stops when the scope closes. Request logs are left out.
 */
export const startOnLoopback = <E, R>(
  config: Record<string, string>,
  store: Layer.Layer<KvStore.KvStore, E, R>
): Effect.Effect<Instance, unknown, Scope.Scope | R> =>
  HttpServiceLive.pipe(
    Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" })),
    Layer.provide(store),
    Layer.build,
    // the server keeps what it was built with; the caller's own settings stay as they were
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(config)))),
    Logger.withMinimumLogLevel(LogLevel.Warning),
    Effect.flatMap((context) => {
      const address = Context.get(context, HttpServer.HttpServer).address
      return address._tag === "TcpAddress"
        ? Effect.succeed({ url: `http://127.0.0.1:${address.port}` })
        : Effect.dieMessage("the server did not listen on TCP")
    })
  )

/** An HTTP answer, read to the end. */
export interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly body: string
}

/** One request with `fetch`; `session` is the session cookie's value, `body` is sent as JSON. */
export const call = (
  instance: Instance,
  method: string,
  path: string,
  options: { readonly session?: string; readonly body?: string } = {}
): Effect.Effect<Answer> =>
  Effect.promise(async () => {
    const headers: Record<string, string> = {}
    if (options.session !== undefined) headers["cookie"] = `session=${options.session}`
    if (options.body !== undefined) headers["content-type"] = "application/json"
    const response = await fetch(`${instance.url}${path}`, {
      method,
      headers,
      ...(options.body === undefined ? {} : { body: options.body })
    })
    return { status: response.status, headers: response.headers, body: await response.text() }
  })

/** The session cookie's value in a `/login` answer. */
export const sessionCookie = (answer: Answer): string | undefined =>
  /^session=([^;]+);/.exec(answer.headers.get("set-cookie") ?? "")?.[1]

/** What the tour observed. */
export interface TourReport {
  readonly me: string
  readonly loggedOutEverywhere: number
  readonly afterLogout: ReadonlyArray<number>
  readonly sameReport: boolean
  readonly statuses: ReadonlyArray<number>
  readonly retryAfter: string | null
}

export const program = (prefix: string): Effect.Effect<TourReport, never, KvStore.KvStore> =>
  Effect.gen(function*() {
    // the service's keys under the run's prefix, so a run leaves nothing behind
    const store = Layer.effect(KvStore.KvStore, Effect.map(KvStore.KvStore, KvStore.prefixed(prefix)))
    const server = yield* startOnLoopback({ RATE_LIMIT: "12", RATE_LIMIT_WINDOW: "1 hour" }, store)
    yield* Effect.log(`listening on ${server.url} (limit: 12 requests per IP and hour)`)

    const login = (user: string) =>
      Effect.map(call(server, "POST", "/login", { body: JSON.stringify({ user }) }), (answer) => sessionCookie(answer)!)
    const onPhone = yield* login("alice")
    const onLaptop = yield* login("alice")
    const me = (yield* call(server, "GET", "/me", { session: onPhone })).body
    yield* Effect.log(`POST /login twice as alice, GET /me -> ${me}`)

    const first = (yield* call(server, "GET", "/me/report", { session: onLaptop })).body
    const second = (yield* call(server, "GET", "/me/report", { session: onLaptop })).body
    yield* Effect.log(`GET /me/report twice -> ${first === second ? "the same report: computed once, then cached" : "two reports"}`)

    const ended = JSON.parse((yield* call(server, "POST", "/logout/all", { session: onPhone })).body).ended as number
    const afterLogout = [
      (yield* call(server, "GET", "/me", { session: onPhone })).status,
      (yield* call(server, "GET", "/me", { session: onLaptop })).status
    ]
    yield* Effect.log(`POST /logout/all -> ${ended} sessions ended; GET /me with either cookie -> ${afterLogout.join(", ")}`)

    const statuses: Array<number> = []
    let retryAfter: string | null = null
    for (let i = 0; i < 6; i++) {
      const answer = yield* call(server, "GET", "/me")
      statuses.push(answer.status)
      retryAfter ??= answer.headers.get("retry-after")
    }
    yield* Effect.log(`6 more requests -> ${statuses.join(" ")} (Retry-After: ${retryAfter} s)`)

    return { me, loggedOutEverywhere: ended, afterLogout, sameReport: first === second, statuses, retryAfter }
  }).pipe(Effect.scoped, Effect.orDie)
