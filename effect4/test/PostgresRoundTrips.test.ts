/**
 * Round trips of PostgresStore's operations, counted on the wire: a proxy between the
 * pool and the server counts the client's `Sync` and `Query` messages (each one is a
 * round trip: the client waits for `ReadyForQuery` after it; the calls here run one after
 * another, so nothing is pipelined). Counts, not timings.
 */
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { randomUUID } from "node:crypto"
import * as net from "node:net"
import { inject } from "vitest"
import * as KvStore from "../src/KvStore.js"
import * as PostgresStore from "../src/PostgresStore.js"

interface Proxy {
  /** Where to connect instead of the server. */
  readonly url: string
  /** The round trips clients have started through the proxy so far. */
  readonly count: () => number
  readonly close: () => void
}

/** A TCP proxy to the test server that counts round trips. */
const roundTripProxy = Effect.acquireRelease(
  Effect.callback<Proxy>((resume) => {
    const target = new URL(inject("databaseUrl"))
    let roundTrips = 0
    const sockets = new Set<net.Socket>()
    const server = net.createServer((client) => {
      const upstream = net.connect(Number(target.port || 5432), target.hostname)
      sockets.add(client).add(upstream)
      let buffer = Buffer.alloc(0)
      let started = false
      client.on("data", (chunk) => {
        upstream.write(chunk)
        buffer = Buffer.concat([buffer, chunk])
        for (;;) {
          if (!started) {
            // the startup (or SSL request) message has no type byte
            if (buffer.length < 8) return
            const length = buffer.readInt32BE(0)
            if (buffer.length < length) return
            const code = buffer.readInt32BE(4)
            buffer = buffer.subarray(length)
            if (code !== 80877103) started = true // an SSL request is followed by the real startup
            continue
          }
          if (buffer.length < 5) return
          const length = buffer.readInt32BE(1)
          if (buffer.length < 1 + length) return
          const type = String.fromCharCode(buffer[0]!)
          if (type === "S" || type === "Q") roundTrips++
          buffer = buffer.subarray(1 + length)
        }
      })
      upstream.on("data", (chunk) => client.write(chunk))
      const end = () => {
        client.destroy()
        upstream.destroy()
      }
      client.on("close", end).on("error", end)
      upstream.on("close", end).on("error", end)
    })
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      const url = new URL(target.href)
      url.hostname = "127.0.0.1"
      url.port = String(port)
      resume(Effect.succeed({
        url: url.href,
        count: () => roundTrips,
        close: () => {
          for (const socket of sockets) socket.destroy()
          server.close()
        }
      }))
    })
  }),
  (proxy) => Effect.sync(() => proxy.close())
)

describe("PostgresStore round trips (counted on the wire)", () => {
  it.live("an update of an existing key takes 4 (BEGIN, lock and read, write, COMMIT), of a missing key 5; set, get, increment 1", () =>
    Effect.scoped(Effect.gen(function*() {
      const proxy = yield* roundTripProxy
      const table = `kv4_rt_${randomUUID().slice(0, 8)}`
      const context = yield* Layer.build(
        PostgresStore.layer({ table, cleanupInterval: "1 hour" }).pipe(
          Layer.provide(PgClient.layer({ url: Redacted.make(proxy.url), maxConnections: 2 })),
          Layer.fresh
        )
      )
      const store = Context.get(context, KvStore.KvStore)
      const value = new TextEncoder().encode("v")
      const counted = <A, E>(effect: Effect.Effect<A, E>) =>
        Effect.gen(function*() {
          const before = proxy.count()
          yield* effect
          return proxy.count() - before
        })
      yield* store.set("warm", value) // connections open before counting
      const counts = {
        set: yield* counted(store.set("k", value)),
        get: yield* counted(store.get("k")),
        updateExisting: yield* counted(store.update("k", () => Effect.succeed(value))),
        updateMissing: yield* counted(store.update(`missing-${randomUUID()}`, () => Effect.succeed(value))),
        increment: yield* counted(store.increment("n"))
      }
      assert.deepStrictEqual(counts, { set: 1, get: 1, updateExisting: 4, updateMissing: 5, increment: 1 })
    })), 60_000)
})
