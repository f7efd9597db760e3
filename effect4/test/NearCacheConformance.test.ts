/**
 * A cache must not change any answer of the contract: the whole exported
 * conformance suite (`effect-kv/conformance`) through `NearCache` over
 * `MemoryStore` and over `PostgresStore` (its expiry on the database's clock),
 * as the Effect 3 line's test/NearCacheConformance.test.ts.
 */
import { PgClient } from "@effect/sql-pg"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { conformance } from "effect-kv/conformance"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as MemoryStore from "../src/MemoryStore.js"
import * as NearCache from "../src/NearCache.js"
import * as PostgresStore from "../src/PostgresStore.js"

conformance("NearCache over MemoryStore on Effect 4", NearCache.layer().pipe(Layer.provide(MemoryStore.layer())))

conformance(
  "NearCache over PostgresStore on Effect 4",
  NearCache.layer().pipe(
    Layer.provide(PostgresStore.layer({ table: `kv4_nearcache_conformance_${randomUUID().slice(0, 8)}`, notifyChanges: true })),
    Layer.provide(
      PgClient.layer({
        url: Redacted.make(inject("databaseUrl")),
        applicationName: "effect-kv4-nearcache",
        // the suite reads back values of up to 64 MiB: one DataRow holds the whole value
        maxMessageSize: 80 * 1024 * 1024
      })
    )
  ),
  { databaseClock: true }
)
