/**
 * A cache must not change any answer of the contract: the whole exported
 * conformance suite through `NearCache` over `MemoryStore` and over
 * `PostgresStore` (its expiry on the database's clock).
 */
import { PgClient } from "@effect/sql-pg"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import * as MemoryStore from "../src/MemoryStore.js"
import * as NearCache from "../src/NearCache.js"
import * as PostgresStore from "../src/PostgresStore.js"
import { conformance } from "./conformance.js"

conformance("NearCache over MemoryStore", NearCache.layer().pipe(Layer.provide(MemoryStore.layer())))

conformance(
  "NearCache over PostgresStore",
  NearCache.layer().pipe(
    Layer.provide(PostgresStore.layer({ table: `kv_nearcache_conformance_${randomUUID().slice(0, 8)}`, notifyChanges: true })),
    Layer.provide(PgClient.layer({ url: Redacted.make(inject("databaseUrl")), applicationName: "effect-kv-nearcache" }))
  ),
  { databaseClock: true }
)
