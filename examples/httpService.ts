/**
 * A complete HTTP service on effect-kv: sessions with "log out everywhere",
 * a per-IP rate limit, a persisted cache of an expensive lookup, per-user
 * notes, and the store's errors as HTTP answers. `@effect/platform`'s
 * `HttpRouter` served by `@effect/platform-node` (the Effect 3 line,
 * `@effect/platform-node@^0.108`).
 *
 *   npx tsx examples/httpService.ts                               # MemoryStore on port 3000
 *   DATABASE_URL=postgres://user:pw@localhost/app npx tsx examples/httpService.ts
 *   DATABASE_URL=… PORT=3001 npx tsx examples/httpService.ts      # a second instance, same data
 *
 * Routes (the session is the `session` cookie that `/login` sets):
 *
 *   POST /login             {"user":"alice"}  → 200 {"user":"alice"}, Set-Cookie: session=…
 *   GET  /me                → 200 {"user","since"} | 401 without a live session
 *   GET  /me/report         → 200 the user's report: an expensive lookup, cached 10 minutes
 *   PUT  /me/notes/:name    body: text        → 204
 *   GET  /me/notes/:name    → 200 text | 404
 *   POST /logout            → 204: ends this session
 *   POST /logout/all        → 200 {"ended":n}: ends every session of the user, on every instance
 *
 * Every request first passes the per-IP rate limit: over it, 429 with `Retry-After`.
 * The store's errors become answers: `NotFound` 404, `KvError` `InvalidArgument` 400
 * (a note name that is not a valid key), `KvError` `Backend` 503 with `Retry-After`.
 *
 * Configuration (`Config`, from the environment by default):
 *
 *   KV_BACKEND          memory | postgres; default: postgres when DATABASE_URL is set, else memory
 *   DATABASE_URL        the PostgreSQL server, for KV_BACKEND=postgres
 *   KV_TABLE            the store's table, default kv_store (created when missing)
 *   PORT, HOST          where to listen, default 3000 on every interface
 *   RATE_LIMIT          requests per client IP and window, default 100
 *   RATE_LIMIT_WINDOW   default "1 minute"
 *   SESSION_TTL         default "7 days"
 *
 * Behind a proxy the client's IP is in `X-Forwarded-For`: add
 * `HttpMiddleware.xForwardedHeaders` in front only when the proxy sets it.
 */
import * as PersistedCache from "@effect/experimental/PersistedCache"
import type * as Persistence from "@effect/experimental/Persistence"
import * as RateLimiter from "@effect/experimental/RateLimiter"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import type { SqlError } from "@effect/sql/SqlError"
import { PgClient } from "@effect/sql-pg"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PrimaryKey from "effect/PrimaryKey"
import * as Schema from "effect/Schema"
import { KvStore, MemoryStore, PostgresStore } from "effect-kv"
import * as KvPersistence from "effect-kv/KvPersistence"
import * as KvRateLimiter from "effect-kv/KvRateLimiter"
import { randomBytes, randomUUID } from "node:crypto"
import { createServer } from "node:http"
import { pathToFileURL } from "node:url"

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/** What the service needs to know besides the store and the server. */
export interface ServiceOptions {
  readonly sessionTtl: Duration.DurationInput
  readonly rateLimit: { readonly limit: number; readonly window: Duration.DurationInput }
}

export const ServiceOptions: Config.Config<ServiceOptions> = Config.all({
  sessionTtl: Config.duration("SESSION_TTL").pipe(Config.withDefault(Duration.days(7))),
  rateLimit: Config.all({
    limit: Config.integer("RATE_LIMIT").pipe(Config.withDefault(100)),
    window: Config.duration("RATE_LIMIT_WINDOW").pipe(Config.withDefault(Duration.minutes(1)))
  })
})

/**
 * The store, chosen from `Config`: PostgreSQL when `KV_BACKEND=postgres` or
 * `DATABASE_URL` is set (one pool for the store and anything else that needs
 * SQL), otherwise memory. Session ids are secrets: `redactKeys` keeps keys out
 * of errors and logs.
 */
export const KvStoreFromConfig: Layer.Layer<KvStore.KvStore, KvStore.KvError | ConfigError.ConfigError | SqlError> = Layer
  .unwrapEffect(
    Effect.gen(function*() {
      const url = yield* Config.option(Config.redacted("DATABASE_URL"))
      const backend = yield* Config.literal("memory", "postgres")("KV_BACKEND").pipe(
        Config.withDefault(Option.isSome(url) ? "postgres" : "memory")
      )
      if (backend === "memory") return MemoryStore.layer({ redactKeys: true })
      const table = yield* Config.string("KV_TABLE").pipe(Config.withDefault("kv_store"))
      return PostgresStore.layer({ table, cleanupInterval: "5 minutes", redactKeys: true }).pipe(
        Layer.provide(PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") }))
      )
    })
  )

// ---------------------------------------------------------------------------
// Errors and their HTTP answers
// ---------------------------------------------------------------------------

/** The request carries no live session. */
export class Unauthorized extends Data.TaggedError("Unauthorized") {}

const problem = (status: number, error: string, headers?: Record<string, string>) =>
  HttpServerResponse.unsafeJson({ error }, { status, ...(headers === undefined ? {} : { headers }) })

/** The caller's mistake is a 400 with the store's own words; the store's trouble a 503, logged. */
const kvErrorAnswer = (error: KvStore.KvError) =>
  error.reason === "InvalidArgument"
    ? Effect.succeed(problem(400, error.message))
    : Effect.as(
      Effect.logError("store unavailable", error),
      problem(503, "storage is unavailable, try again shortly", { "Retry-After": "1" })
    )

// ---------------------------------------------------------------------------
// Sessions: key `sessions/<user>/<secret>`, one namespace per user
// ---------------------------------------------------------------------------

const UserName = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9_.-]{1,64}$/))

const Session = Schema.Struct({ user: UserName, since: Schema.Number })
type Session = typeof Session.Type

/**
 * The session token is `<user>.<secret>`: the user names the namespace, the
 * 32 random bytes are the secret. Ending every session of a user is then one
 * `deletePrefix` on that user's namespace — seen at once by every instance.
 */
const makeSessions = (store: KvStore.Service, ttl: Duration.DurationInput) => {
  const sessions = KvStore.prefixed(store, "sessions/")
  const ofUser = (user: string) => KvStore.forSchema(KvStore.prefixed(sessions, `${user}/`), Session)
  const parse = (token: string | undefined) => {
    const dot = token?.lastIndexOf(".") ?? -1
    if (token === undefined || dot < 1) return Option.none()
    const user = token.slice(0, dot)
    const secret = token.slice(dot + 1)
    return Schema.is(UserName)(user) && /^[A-Za-z0-9_-]{43}$/.test(secret) ? Option.some({ user, secret }) : Option.none()
  }
  const current = Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const token = yield* parse(request.cookies["session"])
    const session = yield* ofUser(token.user).get(token.secret)
    return { token, session }
  }).pipe(
    // no cookie, a malformed one, or a session that ended or expired
    Effect.catchTags({
      NoSuchElementException: () => Effect.fail(new Unauthorized()),
      NotFound: () => Effect.fail(new Unauthorized())
    })
  )
  return {
    /** Starts a session; succeeds with its token. */
    create: (user: string) =>
      Effect.gen(function*() {
        const secret = randomBytes(32).toString("base64url")
        yield* ofUser(user).set(secret, { user, since: yield* Clock.currentTimeMillis }, ttl)
        return `${user}.${secret}`
      }),
    /** The request's live session, or `Unauthorized`. */
    current,
    /** Ends the request's session. */
    end: Effect.flatMap(current, ({ token }) => ofUser(token.user).delete(token.secret)),
    /** Ends every session of the request's user; succeeds with how many were live. */
    endAll: Effect.flatMap(current, ({ session }) => KvStore.prefixed(sessions, `${session.user}/`).deletePrefix(""))
  }
}

// ---------------------------------------------------------------------------
// The expensive lookup, behind a PersistedCache stored in effect-kv
// ---------------------------------------------------------------------------

export class Report extends Schema.Class<Report>("Report")({
  user: Schema.String,
  /** A new id for every computation: a cached answer repeats it. */
  id: Schema.String,
  generatedAt: Schema.Number
}) {}

/** The upstream could not produce the report (cached too, briefly, so a failing upstream is not hammered). */
export class ReportUnavailable extends Schema.TaggedError<ReportUnavailable>()("ReportUnavailable", {
  user: Schema.String
}) {}

/** The cache key: one report per user. */
class GetReport extends Schema.TaggedRequest<GetReport>()("GetReport", {
  failure: ReportUnavailable,
  success: Report,
  payload: { user: Schema.String }
}) {
  [PrimaryKey.symbol]() {
    return this.user
  }
}

/** Stands for a slow aggregation query or a call to another service. */
const computeReport = (request: GetReport) =>
  Effect.gen(function*() {
    yield* Effect.logInfo(`computing the report of ${request.user}`)
    yield* Effect.sleep("300 millis")
    return new Report({ user: request.user, id: randomUUID(), generatedAt: yield* Clock.currentTimeMillis })
  })

// ---------------------------------------------------------------------------
// The per-IP rate limit, as a middleware
// ---------------------------------------------------------------------------

/** Lets a client IP make `limit` requests per `window`, on every instance together; 429 beyond. */
const rateLimitPerIp = (limiter: RateLimiter.RateLimiter, options: ServiceOptions["rateLimit"]) =>
  HttpMiddleware.make((app) =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const ip = Option.getOrElse(request.remoteAddress, () => "unknown")
      const verdict = yield* Effect.either(limiter.consume({ key: `ip:${ip}`, ...options }))
      if (Either.isLeft(verdict)) {
        const error = verdict.left
        return error.reason === "Exceeded"
          ? problem(429, "too many requests", {
            "Retry-After": String(Math.max(1, Math.ceil(Duration.toSeconds(error.retryAfter))))
          })
          // the store failed: refuse rather than serve without a limit
          : yield* Effect.as(
            Effect.logError("rate limiter unavailable", error),
            problem(503, "try again shortly", { "Retry-After": "1" })
          )
      }
      const response = yield* app
      return HttpServerResponse.setHeader(response, "RateLimit-Remaining", String(verdict.right.remaining))
    })
  )

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

/** The routes, over the `KvStore` in context; the cache and limiter live as long as the scope. */
export const makeApp = (options: ServiceOptions) =>
  Effect.gen(function*() {
    const store = yield* KvStore.KvStore
    const sessions = makeSessions(store, options.sessionTtl)
    const notes = (user: string) => KvStore.prefixed(store, `notes/${user}/`)
    const reports = yield* PersistedCache.make({
      storeId: "reports",
      lookup: computeReport,
      timeToLive: (_request, exit) => exit._tag === "Success" ? "10 minutes" : "5 seconds"
    }).pipe(Effect.provide(KvPersistence.layerResult()))
    const limiter = yield* RateLimiter.make.pipe(Effect.provide(KvRateLimiter.layerStore()))

    const noteName = Effect.map(HttpRouter.params, (params) => params["name"] ?? "")

    const router = HttpRouter.empty.pipe(
      HttpRouter.post(
        "/login",
        Effect.gen(function*() {
          // Authentication is yours to add: this example trusts the name it is given.
          const { user } = yield* HttpServerRequest.schemaBodyJson(Schema.Struct({ user: UserName }))
          const token = yield* sessions.create(user)
          return HttpServerResponse.unsafeJson({ user }).pipe(
            HttpServerResponse.unsafeSetCookie("session", token, {
              httpOnly: true,
              sameSite: "lax",
              path: "/",
              maxAge: options.sessionTtl
            })
          )
        })
      ),
      HttpRouter.get("/me", Effect.map(sessions.current, ({ session }) => HttpServerResponse.unsafeJson(session))),
      HttpRouter.get(
        "/me/report",
        Effect.gen(function*() {
          const { session } = yield* sessions.current
          const report = yield* reports.get(new GetReport({ user: session.user }))
          return HttpServerResponse.unsafeJson(report)
        })
      ),
      HttpRouter.put(
        "/me/notes/:name",
        Effect.gen(function*() {
          const { session } = yield* sessions.current
          const text = yield* Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => request.text)
          yield* notes(session.user).set(yield* noteName, new TextEncoder().encode(text))
          return HttpServerResponse.empty({ status: 204 })
        })
      ),
      HttpRouter.get(
        "/me/notes/:name",
        Effect.gen(function*() {
          const { session } = yield* sessions.current
          const bytes = yield* notes(session.user).get(yield* noteName)
          return HttpServerResponse.text(new TextDecoder().decode(bytes))
        })
      ),
      HttpRouter.post("/logout", Effect.as(sessions.end, HttpServerResponse.empty({ status: 204 }))),
      HttpRouter.post("/logout/all", Effect.map(sessions.endAll, (ended) => HttpServerResponse.unsafeJson({ ended }))),
      HttpRouter.catchTags({
        Unauthorized: () => Effect.succeed(problem(401, "no live session: POST /login first")),
        NotFound: () => Effect.succeed(problem(404, "not found")),
        KvError: kvErrorAnswer,
        ParseError: (error) => Effect.succeed(problem(400, error.message)),
        RequestError: (error) => Effect.succeed(problem(400, error.message)),
        ReportUnavailable: () => Effect.succeed(problem(503, "the report is unavailable", { "Retry-After": "5" })),
        PersistenceError: (error: Persistence.PersistenceError) =>
          Effect.as(Effect.logError("cache unavailable", error), problem(503, "try again shortly", { "Retry-After": "1" }))
      })
    )
    return rateLimitPerIp(limiter, options.rateLimit)(router)
  })

/** Serves the app on the `HttpServer` in context, with the options from `Config`. */
export const HttpServiceLive = Layer.unwrapScoped(
  Effect.gen(function*() {
    const app = yield* makeApp(yield* ServiceOptions)
    return HttpServer.serve(app, HttpMiddleware.logger)
  })
)

/** Node's HTTP server on `PORT` (default 3000) and `HOST` (default: every interface). */
export const NodeServerFromConfig = NodeHttpServer.layerConfig(createServer, {
  port: Config.integer("PORT").pipe(Config.withDefault(3000)),
  host: Config.string("HOST").pipe(Config.withDefault("0.0.0.0"))
})

// Run as a program (`npx tsx examples/httpService.ts`), not when imported.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  HttpServiceLive.pipe(
    HttpServer.withLogAddress,
    Layer.provide(NodeServerFromConfig),
    Layer.provide(KvStoreFromConfig),
    Layer.launch,
    NodeRuntime.runMain
  )
}
