/**
 * The HTTP service example (examples/httpService.ts) as a client sees it:
 * started on a free loopback port, driven over real HTTP with `fetch`, and
 * stopped — on MemoryStore, and on PostgreSQL with two instances sharing one
 * table, each with its own pool, as two processes behind a load balancer.
 * The backend is chosen the way the example chooses it, from `Config`.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { randomUUID } from "node:crypto"
import Pg from "pg"
import { inject } from "vitest"
import { KvStoreFromConfig } from "../examples/httpService.js"
import { call, type Instance, sessionCookie, startOnLoopback } from "../examples/httpServiceTour.js"

/** Starts the service with `config` as its whole configuration, the store chosen from it as the example does. */
const start = (config: Record<string, string>) => startOnLoopback(config, KvStoreFromConfig)

/** Logs `user` in and returns the session cookie's value. */
const login = (instance: Instance, user: string) =>
  Effect.gen(function*() {
    const answer = yield* call(instance, "POST", "/login", { body: JSON.stringify({ user }) })
    assert.strictEqual(answer.status, 200, answer.body)
    assert.include(answer.headers.get("set-cookie"), "HttpOnly")
    const session = sessionCookie(answer)
    assert.isString(session)
    return session!
  })

/** The user `GET /me` sees for a session, or the status when there is none. */
const me = (instance: Instance, session: string) =>
  Effect.map(call(instance, "GET", "/me", { session }), (answer) =>
    answer.status === 200 ? (JSON.parse(answer.body) as { user: string }).user : answer.status)

const report = (instance: Instance, session: string) =>
  Effect.map(call(instance, "GET", "/me/report", { session }), (answer) => {
    assert.strictEqual(answer.status, 200, answer.body)
    return JSON.parse(answer.body) as { user: string; id: string }
  })

/** Sessions: log in, read, log out one, log out every session of a user on `a`, seen on `b`. */
const sessionsScenario = (a: Instance, b: Instance) =>
  Effect.gen(function*() {
    const alice1 = yield* login(a, "alice")
    const alice2 = yield* login(b, "alice")
    const bob = yield* login(a, "bob")
    assert.notStrictEqual(alice1, alice2)
    assert.strictEqual(yield* me(b, alice1), "alice")
    assert.strictEqual(yield* me(a, alice2), "alice")
    assert.strictEqual(yield* me(a, bob), "bob")
    assert.strictEqual((yield* call(a, "GET", "/me")).status, 401)
    assert.strictEqual(yield* me(a, `alice.${"A".repeat(43)}`), 401) // a forged token
    assert.strictEqual(yield* me(a, `bob.${alice1.slice("alice.".length)}`), 401) // alice's secret under bob's name

    const alice3 = yield* login(a, "alice")
    assert.strictEqual((yield* call(b, "POST", "/logout", { session: alice3 })).status, 204)
    assert.strictEqual(yield* me(a, alice3), 401)
    assert.strictEqual(yield* me(a, alice1), "alice")

    const all = yield* call(b, "POST", "/logout/all", { session: alice1 })
    assert.strictEqual(all.status, 200, all.body)
    assert.deepStrictEqual(JSON.parse(all.body), { ended: 2 })
    assert.strictEqual(yield* me(a, alice1), 401)
    assert.strictEqual(yield* me(a, alice2), 401)
    assert.strictEqual(yield* me(b, alice2), 401)
    assert.strictEqual(yield* me(b, bob), "bob") // another user keeps his session
  })

/** Notes: the store's answers as HTTP statuses (404 missing, 400 for a key the store refuses). */
const notesScenario = (a: Instance, b: Instance) =>
  Effect.gen(function*() {
    const carol = yield* login(a, "carol")
    assert.strictEqual((yield* call(a, "PUT", "/me/notes/todo", { session: carol, body: "buy milk" })).status, 204)
    const read = yield* call(b, "GET", "/me/notes/todo", { session: carol })
    assert.deepStrictEqual([read.status, read.body], [200, "buy milk"])
    assert.strictEqual((yield* call(b, "GET", "/me/notes/other", { session: carol })).status, 404)
    const invalid = yield* call(a, "GET", "/me/notes/a%00b", { session: carol })
    assert.strictEqual(invalid.status, 400)
    assert.include(JSON.parse(invalid.body).error, "NUL")
    const dave = yield* login(a, "dave")
    assert.strictEqual((yield* call(a, "GET", "/me/notes/todo", { session: dave })).status, 404) // carol's stays hers
  })

/** The report: computed once, then served from the PersistedCache — on `b` too when the store is shared. */
const reportScenario = (a: Instance, b: Instance) =>
  Effect.gen(function*() {
    const erin = yield* login(a, "erin")
    const first = yield* report(a, erin)
    assert.strictEqual(first.user, "erin")
    assert.deepStrictEqual(yield* report(a, erin), first)
    assert.deepStrictEqual(yield* report(b, erin), first)
    const frank = yield* login(b, "frank")
    assert.notStrictEqual((yield* report(b, frank)).id, first.id)
  })

/** The rate limit: `limit` requests from this IP, spread over the instances, then 429 with Retry-After. */
const rateLimitScenario = (instances: ReadonlyArray<Instance>, limit: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < limit; i++) {
      const answer = yield* call(instances[i % instances.length]!, "GET", "/me")
      assert.strictEqual(answer.status, 401) // served: no session, but not limited
      assert.strictEqual(answer.headers.get("ratelimit-remaining"), String(limit - i - 1))
    }
    for (const instance of instances) {
      const limited = yield* call(instance, "POST", "/login", { body: JSON.stringify({ user: "mallory" }) })
      assert.strictEqual(limited.status, 429)
      assert.isNull(limited.headers.get("set-cookie")) // the handler did not run
      const retryAfter = Number(limited.headers.get("retry-after"))
      assert.isTrue(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 3600, `Retry-After ${retryAfter}`)
    }
  })

const generous = { RATE_LIMIT: "10000", RATE_LIMIT_WINDOW: "1 hour" }
const strict = (limit: number) => ({ RATE_LIMIT: String(limit), RATE_LIMIT_WINDOW: "1 hour" })

describe("HTTP service example on MemoryStore (the default without DATABASE_URL)", () => {
  it.scopedLive("login, GET /me, logout, logout of every session of a user", () =>
    Effect.flatMap(start(generous), (a) => sessionsScenario(a, a)), 60_000)

  it.scopedLive("notes: 204, 200, 404 for a missing note, 400 for a name the store refuses", () =>
    Effect.flatMap(start(generous), (a) => notesScenario(a, a)), 60_000)

  it.scopedLive("the report's expensive lookup runs once; the next answer comes from the cache", () =>
    Effect.flatMap(start(generous), (a) => reportScenario(a, a)), 60_000)

  it.scopedLive("429 with Retry-After after the limit", () =>
    Effect.flatMap(start(strict(5)), (a) => rateLimitScenario([a], 5)), 60_000)

  it.scopedLive("KV_BACKEND=memory wins over DATABASE_URL", () =>
    Effect.gen(function*() {
      // two instances on memory share nothing: a session of one is unknown to the other
      const config = { ...generous, KV_BACKEND: "memory", DATABASE_URL: inject("databaseUrl") }
      const [a, b] = [yield* start(config), yield* start(config)]
      assert.strictEqual(yield* me(b, yield* login(a, "alice")), 401)
    }), 60_000)

  it.live("KV_BACKEND=postgres without DATABASE_URL fails at start with a ConfigError", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(start({ KV_BACKEND: "postgres" })))
      assert.isTrue(Exit.isFailure(exit))
      assert.include(String(Exit.isFailure(exit) && exit.cause), "DATABASE_URL")
    }))
})

describe("HTTP service example on PostgreSQL: two instances, one table", () => {
  const run = randomUUID().slice(0, 8)
  /** Each test on a table of its own (created by the first instance), as a fresh deployment. */
  const onPostgres = (extra: Record<string, string>) => {
    const config = { DATABASE_URL: inject("databaseUrl"), KV_TABLE: `http_${run}_${randomUUID().slice(0, 8)}`, ...extra }
    return Effect.gen(function*() {
      const a = yield* start(config)
      const b = yield* start(config)
      return [a, b] as const
    })
  }

  it.scopedLive("a session made on A is seen on B; logout of all sessions on B ends them on A", () =>
    Effect.flatMap(onPostgres(generous), ([a, b]) => sessionsScenario(a, b)), 60_000)

  it.scopedLive("notes written on A read on B; 404 and 400 as on memory", () =>
    Effect.flatMap(onPostgres(generous), ([a, b]) => notesScenario(a, b)), 60_000)

  it.scopedLive("a report computed on A is served by B from the shared cache", () =>
    Effect.flatMap(onPostgres(generous), ([a, b]) => reportScenario(a, b)), 60_000)

  it.scopedLive("the store failing (its table dropped under it) is a 503 with Retry-After, never a 500", () =>
    Effect.gen(function*() {
      const table = `http_${run}_gone`
      const [a] = yield* onPostgres({ ...generous, KV_TABLE: table })
      const session = yield* login(a, "grace")
      yield* Effect.promise(async () => {
        const client = new Pg.Client({ connectionString: inject("databaseUrl") })
        await client.connect()
        try {
          await client.query(`DROP TABLE "public"."${table}"`)
        } finally {
          await client.end()
        }
      })
      for (const path of ["/me", "/me/report"]) {
        const answer = yield* call(a, "GET", path, { session })
        assert.strictEqual(answer.status, 503, `${path}: ${answer.body}`)
        assert.strictEqual(answer.headers.get("retry-after"), "1")
      }
    }), 60_000)

  it.scopedLive("the per-IP limit holds across both instances: 6 requests in all, then 429 on each", () =>
    Effect.flatMap(onPostgres(strict(6)), ([a, b]) => rateLimitScenario([a, b], 6)), 60_000)
})
