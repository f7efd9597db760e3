/**
 * The near cache's hit path: `NearCache` over a `MemoryStore`, every key
 * already read once, against a `MemoryStore` get and a plain `Map` get (with
 * the copy a store owes its caller) in the same run. The contract's bound is
 * a hit at most about 3× a `MemoryStore` get. With a PostgreSQL URL, also a
 * hit over `PostgresStore` (the same path: no round trip) and a miss for scale.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { KvStore } from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as NearCache from "../src/NearCache.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { buildService } from "./lib/effect.js"
import { compare, type Subject } from "./lib/measure.js"
import { ratioRow, type Row } from "./lib/report.js"
import { mulberry32 } from "../dev/random.js"

/** Keys in the working set: a feature-flag table, far below the cache's bound. */
const KEYS = 1_000
const BATCH = 10_000
const VALUE_BYTES = 100
const TIMING = { rounds: 5, time: 200 } as const

const keyOf = (i: number): string => `flag:${i.toString().padStart(5, "0")}`
const log = (msg: string) => console.error(`[nearcache] ${msg}`)

const sequence = (): Array<string> => {
  const random = mulberry32(KEYS)
  return Array.from({ length: BATCH }, () => keyOf(Math.floor(random() * KEYS)))
}

/** A subject whose batch is one Effect running `op` over the key sequence. */
const loop = (name: string, keys: ReadonlyArray<string>, op: (key: string) => Effect.Effect<unknown, unknown>): Subject => ({
  name,
  opsPerBatch: keys.length,
  batch: () =>
    Effect.runPromise(Effect.gen(function*() {
      for (let i = 0; i < keys.length; i++) yield* op(keys[i]!)
    }))
})

const fill = (store: KvStore.Service, value: Uint8Array) =>
  Effect.runPromise(Effect.gen(function*() {
    for (let i = 0; i < KEYS; i++) yield* store.set(keyOf(i), value)
    // one read each: from now on every get of the working set is a hit
    for (let i = 0; i < KEYS; i++) yield* store.get(keyOf(i))
  }))

export const runNearCache = async (postgresUrl?: string): Promise<Array<Row>> => {
  const rows: Array<Row> = []
  const value = new Uint8Array(VALUE_BYTES).fill(7)
  const keys = sequence()

  const memory = await buildService(MemoryStore.layer(), KvStore)
  const cached = await buildService(NearCache.layer().pipe(Layer.provide(MemoryStore.layer())), KvStore)
  try {
    await fill(memory.service, value)
    await fill(cached.service, value)
    const map = new Map<string, Uint8Array>(Array.from({ length: KEYS }, (_, i) => [keyOf(i), value]))
    log("get hit over MemoryStore")
    const get = await compare([
      loop("Map", keys, (k) =>
        Effect.sync(() => {
          const v = map.get(k)
          if (v === undefined) throw new Error(`missing ${k}`)
          return new Uint8Array(v)
        })),
      loop("MemoryStore", keys, (k) => memory.service.get(k)),
      loop("NearCache", keys, (k) => cached.service.get(k))
    ], TIMING)
    const hit = get.NearCache!.usPerOp
    rows.push(ratioRow("memory", "NearCache hit get", hit, "MemoryStore get", get.MemoryStore!.usPerOp, { target: 3 }))
    rows.push(ratioRow("memory", "NearCache hit get vs Map", hit, "Map.get + copy in Effect.sync", get.Map!.usPerOp))
  } finally {
    await cached.close()
    await memory.close()
  }

  if (postgresUrl !== undefined) {
    const table = `bench_nearcache_${process.pid}`
    const client = PgClient.layer({ url: Redacted.make(postgresUrl) })
    const postgres = await buildService(PostgresStore.layer({ table, notifyChanges: true }).pipe(Layer.provide(client)), KvStore)
    const near = await buildService(NearCache.layer().pipe(Layer.provide(PostgresStore.layer({ table, notifyChanges: true })), Layer.provide(client)), KvStore)
    try {
      await fill(near.service, value)
      const few = keys.slice(0, 200)
      log("get over PostgresStore: miss (plain store) and NearCache hit")
      const pg = await compare([
        loop("PostgresStore", few, (k) => postgres.service.get(k)),
        loop("NearCache", keys, (k) => near.service.get(k))
      ], { rounds: 3, time: 300, iterations: 3 })
      rows.push(ratioRow("postgres", "NearCache hit get over PostgresStore", pg.NearCache!.usPerOp, "PostgresStore get (a round trip)", pg.PostgresStore!.usPerOp))
    } finally {
      await near.close()
      await postgres.close()
      await Effect.runPromise(
        Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(`DROP TABLE IF EXISTS ${table}`)).pipe(Effect.provide(client), Effect.ignore)
      )
    }
  }
  return rows
}
