/**
 * Options are checked at run time (API.md, Version 3, "Options are checked"):
 * every entry point that takes options refuses an unknown name or a value of
 * the wrong type with `KvError` (`InvalidArgument`, op `"layer"`) naming the
 * option — the stores when built, `KvStore.make`, and the bridges at each call
 * (their layers cannot fail: the contract types them `never`), where the
 * bridge's own error carries the `KvError` as its cause.
 */
import * as KeyValueStore from "@effect/platform/KeyValueStore"
import * as Persistence from "@effect/experimental/Persistence"
import * as RateLimiter from "@effect/experimental/RateLimiter"
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PrimaryKey from "effect/PrimaryKey"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { randomUUID } from "node:crypto"
import { inject } from "vitest"
import { closestName, optionsProblem, POSTGRES_STORE_OPTIONS } from "../src/core/options.js"
import { makeMemoryDriver } from "../src/internal/memoryDriver.js"
import * as KvKeyValueStore from "../src/KvKeyValueStore.js"
import * as KvPersistence from "../src/KvPersistence.js"
import * as KvRateLimiter from "../src/KvRateLimiter.js"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import * as PostgresStore from "../src/PostgresStore.js"

const loose = <A>(value: unknown): A => value as A

/** The failure of `exit`, which must be a `KvError` (`InvalidArgument`, op `"layer"`) whose message matches. */
const refusedOption = <A, E>(exit: Exit.Exit<A, E>, message: RegExp): KvStore.KvError => {
  if (Exit.isSuccess(exit)) assert.fail(`succeeded; expected a KvError matching ${message}`)
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) assert.fail(`not a typed failure: ${Cause.pretty(exit.cause)}`)
  const error = failure.value
  assert.instanceOf(error, KvStore.KvError, String(error))
  const kvError = error as KvStore.KvError
  assert.strictEqual(kvError.reason, "InvalidArgument")
  assert.strictEqual(kvError.op, "layer")
  assert.match(kvError.message, message)
  return kvError
}

describe("the options checker (core/options)", () => {
  it("names an unknown option and suggests the known one", () => {
    assert.strictEqual(
      optionsProblem("PostgresStore.layer", { tableName: "my_kv" }, POSTGRES_STORE_OPTIONS),
      "Unknown option tableName for PostgresStore.layer (did you mean table?)"
    )
    assert.strictEqual(closestName("cleanupIntervall", ["cleanupInterval", "table"]), "cleanupInterval")
    assert.strictEqual(closestName("Unlogged", ["unlogged"]), "unlogged")
    assert.strictEqual(closestName("zzz", ["table", "schema"]), undefined)
    assert.match(optionsProblem("X", { zzz: 1 }, { table: "string" })!, /Unknown option zzz for X \(known options: table\)/)
  })

  it("names an option of the wrong type, with what was expected and what came", () => {
    assert.strictEqual(
      optionsProblem("PostgresStore.layer", { unlogged: "yes" }, POSTGRES_STORE_OPTIONS),
      "Invalid option unlogged: expected a boolean, got a string (PostgresStore.layer)"
    )
    assert.match(optionsProblem("X", { table: 42 }, POSTGRES_STORE_OPTIONS)!, /Invalid option table: expected a string, got a number/)
    assert.match(optionsProblem("X", { table: null }, POSTGRES_STORE_OPTIONS)!, /got null/)
    assert.match(optionsProblem("X", { cleanupInterval: true }, POSTGRES_STORE_OPTIONS)!, /cleanupInterval: expected a Duration/)
  })

  it("takes undefined and null as no options and undefined values as defaults; refuses anything else that is not an object", () => {
    assert.isUndefined(optionsProblem("X", undefined, POSTGRES_STORE_OPTIONS))
    assert.isUndefined(optionsProblem("X", null, POSTGRES_STORE_OPTIONS))
    assert.isUndefined(optionsProblem("X", { table: undefined, unlogged: false, cleanupInterval: "5 seconds" }, POSTGRES_STORE_OPTIONS))
    for (const [options, kind] of [[42, "a number"], ["table", "a string"], [[], "an array"], [() => 1, "a function"]] as const) {
      assert.strictEqual(optionsProblem("X", options, POSTGRES_STORE_OPTIONS), `Invalid options for X: expected an object, got ${kind}`)
    }
  })

  it("never throws on options that cannot be read", () => {
    const hostile = new Proxy({}, {
      ownKeys: () => {
        throw new Error("boom")
      }
    })
    assert.strictEqual(optionsProblem("X", hostile, POSTGRES_STORE_OPTIONS), "Invalid options for X: they could not be read")
  })
})

describe("MemoryStore options", () => {
  const build = (layer: Layer.Layer<KvStore.KvStore, unknown>) => Effect.exit(Layer.build(layer))

  it.scoped("layer, make and layerConfig refuse an unknown option, naming it and the entry point", () =>
    Effect.gen(function*() {
      refusedOption(yield* build(MemoryStore.layer(loose({ maxEntrys: 10 }))), /Unknown option maxEntrys for MemoryStore\.layer \(did you mean maxEntries\?\)/)
      refusedOption(yield* Effect.exit(MemoryStore.make(loose({ ttl: 10 }))), /Unknown option ttl for MemoryStore\.make/)
      refusedOption(
        yield* build(MemoryStore.layerConfig(loose({ maxEntires: Config.succeed(10) }))),
        /Unknown option maxEntires for MemoryStore\.layerConfig \(did you mean maxEntries\?\)/
      )
    }))

  it.scoped("a value of the wrong type is refused, also when it comes from Config", () =>
    Effect.gen(function*() {
      refusedOption(yield* build(MemoryStore.layer(loose({ maxEntries: "10" }))), /Invalid option maxEntries: expected a number, got a string/)
      refusedOption(yield* build(MemoryStore.layer(loose({ redactKeys: "yes" }))), /Invalid option redactKeys: expected a boolean/)
      refusedOption(
        yield* build(MemoryStore.layerConfig(loose({ maxEntries: 10 }))),
        /Invalid option maxEntries: expected a Config/
      )
      refusedOption(yield* build(MemoryStore.layer(loose("big"))), /Invalid options for MemoryStore\.layer: expected an object, got a string/)
    }))

  it.scoped("valid options from Config build the store", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(MemoryStore.layerConfig({ maxEntries: Config.integer("MAX") })).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["MAX", "2"]])))
      )
      const store = Context.get(context, KvStore.KvStore)
      for (const key of ["a", "b", "c"]) yield* store.set(key, new Uint8Array([1]))
      assert.strictEqual(yield* store.count(""), 2)
      // null options (plain JavaScript) are the defaults
      yield* Layer.build(MemoryStore.layer(loose(null)))
    }))
})

describe("KvStore.make options", () => {
  it.scoped("refuses an unknown option or a value of the wrong type", () =>
    Effect.gen(function*() {
      refusedOption(
        yield* Effect.exit(KvStore.make(makeMemoryDriver(undefined), loose({ cleanupIntervall: "1 minute" }))),
        /Unknown option cleanupIntervall for KvStore\.make \(did you mean cleanupInterval\?\)/
      )
      refusedOption(
        yield* Effect.exit(KvStore.make(makeMemoryDriver(undefined), loose({ redactKeys: 1 }))),
        /Invalid option redactKeys: expected a boolean, got a number/
      )
      const store = yield* KvStore.make(makeMemoryDriver(undefined), { cleanupInterval: Duration.minutes(1) })
      yield* store.set("k", new Uint8Array([1]))
    }))
})

describe("PostgresStore options", () => {
  const pg = PgClient.layer({ url: Redacted.make(inject("databaseUrl")), applicationName: "effect-kv-options" })
  const build = (layer: Layer.Layer<KvStore.KvStore, unknown, import("@effect/sql/SqlClient").SqlClient>) =>
    Effect.exit(Layer.build(layer.pipe(Layer.provide(pg))))

  it.scoped("{ tableName } is refused, naming table, before any table is created", () =>
    Effect.gen(function*() {
      refusedOption(
        yield* build(PostgresStore.layer(loose({ tableName: "my_kv" }))),
        /^Unknown option tableName for PostgresStore\.layer \(did you mean table\?\)$/
      )
      refusedOption(
        yield* Effect.exit(PostgresStore.make(loose({ tableName: "my_kv" })).pipe(Effect.provide(pg))),
        /Unknown option tableName for PostgresStore\.make/
      )
      refusedOption(
        yield* build(PostgresStore.layerConfig(loose({ tableName: Config.succeed("my_kv") }))),
        /Unknown option tableName for PostgresStore\.layerConfig \(did you mean table\?\)/
      )
    }))

  it.scoped("{ unlogged: \"yes\" } and other values of the wrong type are refused", () =>
    Effect.gen(function*() {
      refusedOption(yield* build(PostgresStore.layer(loose({ unlogged: "yes" }))), /Invalid option unlogged: expected a boolean, got a string/)
      refusedOption(yield* build(PostgresStore.layer(loose({ createTable: 0 }))), /Invalid option createTable: expected a boolean, got a number/)
      refusedOption(yield* build(PostgresStore.layer(loose({ table: 7 }))), /Invalid option table: expected a string, got a number/)
      refusedOption(yield* build(PostgresStore.layer(loose(["kv"]))), /expected an object, got an array/)
      refusedOption(
        yield* build(PostgresStore.layerConfig(loose({ unlogged: Config.string("U") }))).pipe(
          Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["U", "yes"]])))
        ),
        /Invalid option unlogged: expected a boolean, got a string \(PostgresStore\.layerConfig\)/
      )
    }))

  it.scoped("valid options from Config build the store", () =>
    Effect.gen(function*() {
      const table = `kv_options_${randomUUID().slice(0, 8)}`
      const exit = yield* build(PostgresStore.layerConfig({ table: Config.string("T"), unlogged: Config.boolean("U") })).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["T", table], ["U", "true"]])))
      )
      assert.isTrue(Exit.isSuccess(exit), Exit.isFailure(exit) ? Cause.pretty(exit.cause) : "")
    }))
})

describe("bridge options", () => {
  const memory = MemoryStore.layer()

  /** The cause of a bridge's failure must be the KvError naming the option. */
  const causedByOption = <A, E>(exit: Exit.Exit<A, E>, message: RegExp) => {
    if (Exit.isSuccess(exit)) assert.fail("succeeded; expected a failure caused by the options")
    const failure = Cause.failureOption(exit.cause)
    if (Option.isNone(failure)) assert.fail(`not a typed failure: ${Cause.pretty(exit.cause)}`)
    const cause = (failure.value as { readonly cause?: unknown }).cause
    return refusedOption(Exit.fail(cause), message)
  }

  it.effect("KvKeyValueStore.layer and make: every call fails with BadArgument caused by the KvError; nothing is written", () =>
    Effect.gen(function*() {
      const store = yield* KvStore.KvStore
      const kv = yield* KeyValueStore.KeyValueStore.pipe(
        Effect.provide(KvKeyValueStore.layer(loose({ prefx: "app/" })))
      )
      const exit = yield* Effect.exit(kv.set("k", "v"))
      causedByOption(exit, /Unknown option prefx for KvKeyValueStore\.layer \(did you mean prefix\?\)/)
      assert.strictEqual(Exit.isFailure(exit) && Cause.failureOption(exit.cause).pipe(Option.map((e) => e._tag), Option.getOrUndefined), "BadArgument")
      causedByOption(yield* Effect.exit(kv.get("k")), /prefx/)
      assert.strictEqual(yield* store.count(""), 0)
      const made = KvKeyValueStore.make(store, loose({ prefix: 1 }))
      causedByOption(yield* Effect.exit(made.size), /Invalid option prefix: expected a string, got a number \(KvKeyValueStore\.make\)/)
    }).pipe(Effect.provide(memory)))

  it.scoped("KvPersistence.layer and layerResult: every call fails with a PersistenceError caused by the KvError", () =>
    Effect.gen(function*() {
      const backing = yield* Persistence.BackingPersistence.pipe(
        Effect.provide(KvPersistence.layer(loose({ namespace: "x/" })))
      )
      const users = yield* backing.make("users")
      causedByOption(yield* Effect.exit(users.get("1")), /Unknown option namespace for KvPersistence\.layer/)
      causedByOption(yield* Effect.exit(users.set("1", { a: 1 }, Option.none())), /namespace/)
      assert.strictEqual(yield* KvStore.count(""), 0)
      const exit = yield* Effect.exit(
        Effect.scoped(Effect.flatMap(Persistence.ResultPersistence, (result) => result.make({ storeId: "s" }))).pipe(
          Effect.flatMap((store) => store.get(new TestRequest({ id: "1" }))),
          Effect.provide(KvPersistence.layerResult(loose({ prefix: false })))
        )
      )
      causedByOption(exit, /Invalid option prefix: expected a string, got a boolean \(KvPersistence\.layerResult\)/)
    }).pipe(Effect.provide(memory)))

  it.effect("KvRateLimiter.layerStore and makeStore: every call fails with RateLimitStoreError caused by the KvError", () =>
    Effect.gen(function*() {
      const limiterStore = yield* RateLimiter.RateLimiterStore.pipe(
        Effect.provide(KvRateLimiter.layerStore(loose({ prefixx: "rl/" })))
      )
      const exit = yield* Effect.exit(
        limiterStore.fixedWindow({ key: "ip", tokens: 1, refillRate: Duration.seconds(1), limit: 10 })
      )
      causedByOption(exit, /Unknown option prefixx for KvRateLimiter\.layerStore \(did you mean prefix\?\)/)
      assert.strictEqual(yield* KvStore.count(""), 0)
      const made = KvRateLimiter.makeStore(yield* KvStore.KvStore, loose("rl/"))
      causedByOption(
        yield* Effect.exit(made.fixedWindow({ key: "ip", tokens: 1, refillRate: Duration.seconds(1), limit: 10 })),
        /Invalid options for KvRateLimiter\.makeStore: expected an object, got a string/
      )
    }).pipe(Effect.provide(memory)))
})

class TestRequest extends Schema.TaggedRequest<TestRequest>()("TestRequest", {
  failure: Schema.String,
  success: Schema.Number,
  payload: { id: Schema.String }
}) {
  [PrimaryKey.symbol]() {
    return this.id
  }
}
