import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as TestServices from "effect/TestServices"
import * as KvStore from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import { makeMemoryDriver } from "../src/internal/memoryDriver.js"
import { conformance } from "effect-kv/conformance"

conformance("MemoryStore", MemoryStore.layer())

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text)

/** Lets fibers woken by the TestClock finish their work (the sweeper yields to the event loop). */
const settle = Effect.async<void>((resume) => {
  const timer = setTimeout(() => resume(Effect.void), 20)
  return Effect.sync(() => clearTimeout(timer))
})

/** One turn of the event loop, observed from outside Effect. */
const nextImmediate = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

const buildStore = (options?: Parameters<typeof MemoryStore.layer>[0]) =>
  Effect.map(Layer.build(MemoryStore.layer(options)), Context.get(KvStore.KvStore))

const isMissing = (store: KvStore.KvStore.Service, key: string) =>
  store.get(key).pipe(
    Effect.as(false),
    Effect.catchTag("NotFound", () => Effect.succeed(true))
  )

describe("MemoryStore options", () => {
  const invalid: ReadonlyArray<readonly [string, Parameters<typeof MemoryStore.layer>[0]]> = [
    ["maxEntries 0", { maxEntries: 0 }],
    ["maxEntries -1", { maxEntries: -1 }],
    ["maxEntries 1.5", { maxEntries: 1.5 }],
    ["maxEntries NaN", { maxEntries: NaN }],
    ["maxEntries Infinity", { maxEntries: Infinity }],
    ["maxEntries beyond safe integers", { maxEntries: 2 ** 60 }],
    ["maxEntries as a string", { maxEntries: "10" as unknown as number }],
    ["cleanupInterval 0", { cleanupInterval: 0 }],
    ["cleanupInterval -5", { cleanupInterval: -5 }],
    ["cleanupInterval -1n", { cleanupInterval: -1n }],
    ["cleanupInterval \"-1 millis\"", { cleanupInterval: "-1 millis" }],
    ["cleanupInterval NaN", { cleanupInterval: NaN }],
    ["cleanupInterval [-1, 0]", { cleanupInterval: [-1, 0] }],
    ["cleanupInterval Duration.zero", { cleanupInterval: Duration.zero }],
    ["cleanupInterval Duration.infinity", { cleanupInterval: Duration.infinity }],
    ["cleanupInterval Infinity", { cleanupInterval: Infinity }],
    ["cleanupInterval \"garbage\"", { cleanupInterval: "garbage" as Duration.DurationInput }]
  ]
  for (const [label, options] of invalid) {
    it.scoped(`refuses ${label} when the layer is built`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(buildStore(options))
        assert.instanceOf(error, KvStore.KvError)
        assert.strictEqual(error.reason, "InvalidArgument")
        assert.strictEqual(error.op, "layer")
        assert.match(error.message, label.startsWith("maxEntries") ? /maxEntries/ : /cleanupInterval/)
      }))
  }

  it.scoped("accepts valid options", () =>
    Effect.gen(function*() {
      for (
        const options of [
          undefined,
          {},
          { maxEntries: 1 },
          { maxEntries: 1_000_000, cleanupInterval: "5 seconds" as const },
          { cleanupInterval: Duration.millis(10) },
          { cleanupInterval: 250 },
          { cleanupInterval: [1, 0] as const }
        ]
      ) {
        const store = yield* buildStore(options)
        yield* store.set("k", bytes("v"))
      }
    }))
})

describe("MemoryStore sweeper", () => {
  it.scoped("removes expired entries every cleanupInterval, on the TestClock", () =>
    Effect.gen(function*() {
      const store = yield* buildStore({ cleanupInterval: "1 second" })
      for (const k of ["a", "b", "c"]) yield* store.set(k, bytes("v"), Duration.millis(100))
      yield* store.set("permanent", bytes("v"))

      // expired but not yet swept: the sweeper first runs one interval after the layer is built
      yield* TestClock.adjust("500 millis")
      yield* settle
      assert.strictEqual(yield* store.cleanup, 3, "the sweeper ran before its interval")

      for (const k of ["d", "e", "f"]) yield* store.set(k, bytes("v"), Duration.millis(100))
      yield* TestClock.adjust("600 millis") // t = 1.1 s: one sweep at 1 s
      yield* settle
      assert.strictEqual(yield* store.cleanup, 0, "the sweeper did not remove the expired entries")

      for (const k of ["g", "h"]) yield* store.set(k, bytes("v"), Duration.millis(100))
      yield* TestClock.adjust("1 second") // t = 2.1 s: a second sweep at 2 s
      yield* settle
      assert.strictEqual(yield* store.cleanup, 0, "the sweeper ran only once")
      assert.deepStrictEqual(yield* store.keys(""), ["permanent"])
    }))

  it.scoped("sweeps exactly the expired keys after rewrites that compact the expiry index, on the TestClock", () =>
    Effect.gen(function*() {
      const store = yield* buildStore({ cleanupInterval: "1 minute" })
      const n = 5000
      // every rewrite of a key's expiry leaves a stale node: two rounds make them outnumber the
      // current ones, so the index compacts (a few nodes per write, the rest in the sweeper's slices)
      for (let i = 0; i < n; i++) yield* store.set(`k${i}`, bytes("v"), "10 minutes")
      for (let i = 0; i < n; i++) yield* store.set(`k${i}`, bytes("v"), "20 minutes")
      for (let i = 0; i < n; i += 2) yield* store.set(`k${i}`, bytes("v"), "30 minutes")
      for (let i = 0; i < n; i += 5) yield* store.delete(`k${i}`)
      yield* store.set("permanent", bytes("v"))
      const deleted = Math.ceil(n / 5)
      const live = n - deleted

      // past the first expiry: only stale nodes are due, nothing is removed
      yield* TestClock.adjust("15 minutes")
      yield* settle
      assert.strictEqual(yield* store.count(""), live + 1, "a key was swept at an expiry it no longer had")
      // past the second: the odd keys go, the even ones rewritten to 30 minutes stay
      yield* TestClock.adjust("10 minutes")
      yield* settle
      const even = (yield* store.keys("k")).length
      assert.strictEqual(even, Array.from({ length: n }, (_, i) => i).filter((i) => i % 2 === 0 && i % 5 !== 0).length)
      assert.strictEqual(yield* store.cleanup, 0, "the sweeper left expired entries")
      // past the last: everything with a TTL is gone
      yield* TestClock.adjust("10 minutes")
      yield* settle
      assert.strictEqual(yield* store.cleanup, 0, "the sweeper left expired entries")
      assert.deepStrictEqual(yield* store.keys(""), ["permanent"])
    }), 60_000)

  it.effect("stops when the layer's scope closes", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const store = yield* Effect.map(
        Layer.buildWithScope(MemoryStore.layer({ cleanupInterval: "1 second" }), scope),
        Context.get(KvStore.KvStore)
      )
      for (const k of ["a", "b", "c"]) yield* store.set(k, bytes("v"), Duration.millis(100))
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust("5 seconds")
      yield* settle
      assert.strictEqual(yield* store.cleanup, 3, "a sweeper ran after its scope closed")
    }))

  it.scopedLive("a large sweep yields to the event loop and keeps entries written meanwhile", () =>
    Effect.gen(function*() {
      const store = yield* buildStore()
      const expired = 200_000
      for (let i = 0; i < expired; i++) yield* store.set(`expired/${i}`, bytes("v"), Duration.millis(1))
      yield* Effect.sleep("5 millis")

      // a plain event-loop callback chain: it advances only when the sweep lets the loop turn
      let turns = 0
      let ticking = true
      const tick = () => {
        turns++
        if (ticking) setImmediate(tick)
      }
      setImmediate(tick)

      const sweeping = yield* Effect.fork(store.cleanup)
      let writes = 0
      // a fiber writing new keys, one per event-loop turn, while the sweep runs
      const writer = yield* Effect.fork(Effect.forever(
        Effect.suspend(() => store.set(`written/${writes}`, bytes("v"))).pipe(
          Effect.tap(() => {
            writes++
          }),
          Effect.zipRight(nextImmediate)
        )
      ))
      const removed = yield* Fiber.join(sweeping)
      ticking = false
      yield* Fiber.interrupt(writer)

      assert.strictEqual(removed, expired)
      assert.isAtLeast(turns, 10, "the event loop did not turn while the sweep ran")
      assert.isAtLeast(writes, 10, "the writer made no progress during the sweep")
      const listed = yield* store.keys("written/")
      assert.strictEqual(listed.length, writes, "an entry written during the sweep was lost")
      assert.deepStrictEqual(yield* store.keys("expired/"), [])
    }), 60_000)
})

describe("MemoryStore update lock", () => {
  // Interrupting a waiter in the same instant the lock is handed to it: whichever
  // wins, the lock must end up released. Vary the gap to hit both orders.
  for (const gap of [0, 1, 2, 3, 5, 8]) {
    it.scoped(`a waiter interrupted ${gap} yields after the lock is released to it leaves no lock`, () =>
      Effect.gen(function*() {
        const store = yield* buildStore()
        const started = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(store.update("k", () =>
          Deferred.succeed(started, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.as(bytes("holder")))
        ))
        yield* Deferred.await(started)
        const waiter = yield* Effect.fork(store.update("k", () => Effect.succeed(bytes("waiter"))))
        for (let i = 0; i < 5; i++) yield* Effect.yieldNow()
        yield* Deferred.succeed(release, undefined)
        for (let i = 0; i < gap; i++) yield* Effect.yieldNow()
        yield* Fiber.interrupt(waiter)
        yield* Fiber.join(holder)
        const last = yield* store.update("k", () => Effect.succeed(bytes("last"))).pipe(
          Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => new Error("the key was left locked") }),
          TestServices.provideLive
        )
        assert.strictEqual(new TextDecoder().decode(last), "last")
      }))
  }
})

describe("MemoryStore update without a lock (a function that returns a complete Effect)", () => {
  for (const decided of ["Effect.succeed", "an Effect that yields"] as const) {
    it.effect(`a set of the key started from inside the function (${decided}) lands after the update, not under it`, () =>
      Effect.gen(function*() {
        const store = yield* buildStore()
        yield* store.set("k", bytes("old"))
        let inner: Fiber.RuntimeFiber<void, KvStore.KvError> | undefined
        const written = yield* store.update("k", () => {
          // runFork starts the set at once, while the update's read-decide-write step runs
          inner = Effect.runFork(store.set("k", bytes("inner")))
          return decided === "Effect.succeed" ? Effect.succeed(bytes("outer")) : Effect.as(Effect.yieldNow(), bytes("outer"))
        })
        assert.strictEqual(new TextDecoder().decode(written), "outer")
        yield* Fiber.join(inner!)
        assert.strictEqual(new TextDecoder().decode(yield* store.get("k")), "inner", "the set was lost under the update")
      }).pipe(Effect.scoped))
  }

  it.effect("a copy of the memory driver ({ ...driver }: the front takes the lock) updates and serialises as the original", () =>
    Effect.gen(function*() {
      const store = yield* KvStore.make({ ...makeMemoryDriver(undefined) })
      const add = (n: number) => (current: Option.Option<Uint8Array>) => {
        const next = bytes(String(Number(Option.match(current, { onNone: () => "0", onSome: (v) => new TextDecoder().decode(v) })) + n))
        return n % 2 === 0 ? Effect.succeed(next) : Effect.as(Effect.yieldNow(), next)
      }
      yield* Effect.forEach(Array.from({ length: 100 }, (_, i) => i), (i) => store.update("n", add(i % 2 === 0 ? 2 : 1)), { concurrency: "unbounded", discard: true })
      assert.strictEqual(new TextDecoder().decode(yield* store.get("n")), "150")
    }).pipe(Effect.scoped))
})

describe("MemoryStore maxEntries", () => {
  it.scoped("evicts the least recently used key; get, set and update count as use, keys does not", () =>
    Effect.gen(function*() {
      const store = yield* buildStore({ maxEntries: 3 })
      const live = (expected: ReadonlyArray<string>) =>
        Effect.gen(function*() {
          assert.deepStrictEqual(yield* store.keys(""), [...expected].sort())
        })
      for (const k of ["a", "b", "c"]) yield* store.set(k, bytes(k))
      yield* store.get("a") // order: b c a
      yield* store.set("d", bytes("d")) // evicts b
      yield* live(["a", "c", "d"])
      assert.isTrue(yield* isMissing(store, "b"))

      yield* store.keys("") // not a use: order stays c a d
      yield* store.update("c", () => Effect.succeed(bytes("c2"))) // order: a d c
      yield* store.set("e", bytes("e")) // evicts a
      yield* live(["c", "d", "e"])

      yield* store.set("d", bytes("d2")) // an existing key: no eviction; order: c e d
      yield* live(["c", "d", "e"])
      assert.isTrue(yield* isMissing(store, "missing")) // a miss changes nothing
      yield* store.set("f", bytes("f")) // evicts c
      yield* live(["d", "e", "f"])
      assert.strictEqual(new TextDecoder().decode(yield* store.get("d")), "d2")

      // update creating a new key evicts too
      yield* store.update("g", () => Effect.succeed(bytes("g"))) // order after get d: e f d -> evicts e
      yield* live(["d", "f", "g"])
    }))

  it.scoped("a bound of one keeps only the last key written", () =>
    Effect.gen(function*() {
      const store = yield* buildStore({ maxEntries: 1 })
      yield* store.set("a", bytes("a"))
      yield* store.set("b", bytes("b"))
      assert.deepStrictEqual(yield* store.keys(""), ["b"])
      yield* store.update("b", () => Effect.succeed(bytes("b2")))
      assert.deepStrictEqual(yield* store.keys(""), ["b"])
    }))
})

describe("MemoryStore redactKeys", () => {
  const secret = "session/s3cr3t-t0ken"

  /** The errors a caller can meet for `secret`: NotFound, a bad TTL, an own-update refusal, a non-counter. */
  const errorsFor = (store: KvStore.KvStore.Service) =>
    Effect.gen(function*() {
      const errors: Array<readonly [string, unknown]> = []
      errors.push(["get of a missing key", yield* Effect.flip(store.get(secret))])
      errors.push(["timeToLive of a missing key", yield* Effect.flip(store.timeToLive(secret))])
      errors.push(["set with an invalid TTL", yield* Effect.flip(store.set(secret, bytes("v"), -1))])
      errors.push(["set of an invalid value", yield* Effect.flip(store.set(secret, "v" as unknown as Uint8Array))])
      errors.push([
        "a write from inside its own update",
        yield* Effect.flip(store.update(secret, () => Effect.as(store.set(secret, bytes("inner")), bytes("outer"))))
      ])
      yield* store.set(secret, bytes("not a number"))
      errors.push(["increment of a non-counter", yield* Effect.flip(store.increment(secret))])
      return errors
    })

  /** Every place a key could leak: the field, the message, the printed error and the printed cause. */
  const texts = (error: unknown): ReadonlyArray<string> => {
    const e = error as { readonly key?: unknown; readonly message?: unknown }
    return [String(e.key), String(e.message), String(error), Cause.pretty(Cause.fail(error))]
  }

  it.scoped("NotFound.key, KvError.key and every message never contain the key", () =>
    Effect.gen(function*() {
      const errors = yield* errorsFor(yield* buildStore({ redactKeys: true }))
      assert.instanceOf(errors[0]![1], KvStore.NotFound)
      for (const [what, error] of errors) {
        assert.isTrue(error instanceof KvStore.NotFound || error instanceof KvStore.KvError, what)
        for (const printed of texts(error)) assert.notInclude(printed, "s3cr3t", `${what} leaks the key`)
      }
    }))

  it.scoped("without redactKeys the same errors name the key (the check above can fail)", () =>
    Effect.gen(function*() {
      const errors = yield* errorsFor(yield* buildStore())
      for (const [what, error] of errors) {
        assert.strictEqual((error as { readonly key?: unknown }).key, secret, what)
      }
    }))
})

describe("MemoryStore.make", () => {
  it.scoped("builds a store in the current scope, without a layer", () =>
    Effect.gen(function*() {
      const store = yield* MemoryStore.make({ maxEntries: 2 })
      for (const k of ["a", "b", "c"]) yield* store.set(k, bytes(k))
      assert.deepStrictEqual(yield* store.keys(""), ["b", "c"], "maxEntries did not apply")
      assert.strictEqual(yield* store.increment("n", { by: 3 }), 3)
    }))

  it.effect("stops its sweeper when its scope closes, and refuses invalid options", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const store = yield* Scope.extend(MemoryStore.make({ cleanupInterval: "1 second" }), scope)
      for (const k of ["a", "b"]) yield* store.set(k, bytes("v"), Duration.millis(100))
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust("5 seconds")
      yield* settle
      assert.strictEqual(yield* store.cleanup, 2, "a sweeper ran after its scope closed")

      const error = yield* Effect.flip(Effect.scoped(MemoryStore.make({ maxEntries: 0 })))
      assert.instanceOf(error, KvStore.KvError)
      assert.strictEqual(error.op, "layer")
    }))
})

describe("MemoryStore.layerConfig", () => {
  const configured = MemoryStore.layerConfig({
    maxEntries: Config.integer("KV_MAX_ENTRIES"),
    cleanupInterval: Config.duration("KV_CLEANUP_INTERVAL"),
    redactKeys: Config.boolean("KV_REDACT_KEYS")
  })
  const provider = (entries: Record<string, string>) => ConfigProvider.fromMap(new Map(Object.entries(entries)))
  const valid = { KV_MAX_ENTRIES: "2", KV_CLEANUP_INTERVAL: "1 second", KV_REDACT_KEYS: "true" }

  it.scoped("reads every option from Config", () =>
    Effect.gen(function*() {
      const store = yield* Effect.map(Layer.build(configured), Context.get(KvStore.KvStore)).pipe(
        Effect.withConfigProvider(provider(valid))
      )
      for (const k of ["a", "b", "c"]) yield* store.set(k, bytes(k))
      assert.deepStrictEqual(yield* store.keys(""), ["b", "c"], "maxEntries was not read")
      const missing = yield* Effect.flip(store.get("missing-key"))
      assert.instanceOf(missing, KvStore.NotFound)
      assert.notStrictEqual((missing as KvStore.NotFound).key, "missing-key", "redactKeys was not read")
      yield* store.set("b", bytes("v"), Duration.millis(100))
      yield* TestClock.adjust("1100 millis") // past one cleanupInterval of 1 s (the default is a minute)
      yield* settle
      assert.strictEqual(yield* store.cleanup, 0, "the sweeper did not run after the configured interval")
      assert.deepStrictEqual(yield* store.keys(""), ["c"])
    }))

  it.scoped("works with Layer.setConfigProvider", () =>
    Effect.gen(function*() {
      const layer = Layer.provide(configured, Layer.setConfigProvider(provider(valid)))
      const store = yield* Effect.map(Layer.build(layer), Context.get(KvStore.KvStore))
      for (const k of ["a", "b", "c"]) yield* store.set(k, bytes(k))
      assert.deepStrictEqual(yield* store.keys(""), ["b", "c"])
    }))

  const invalid: ReadonlyArray<readonly [string, Record<string, string>, "ConfigError" | "KvError"]> = [
    ["maxEntries that is not a number", { ...valid, KV_MAX_ENTRIES: "many" }, "ConfigError"],
    ["a missing maxEntries", { KV_CLEANUP_INTERVAL: "1 second", KV_REDACT_KEYS: "true" }, "ConfigError"],
    ["maxEntries 0", { ...valid, KV_MAX_ENTRIES: "0" }, "KvError"],
    ["a cleanupInterval of 0", { ...valid, KV_CLEANUP_INTERVAL: "0 millis" }, "KvError"],
    ["a cleanupInterval that is not a duration", { ...valid, KV_CLEANUP_INTERVAL: "soon" }, "ConfigError"]
  ]
  for (const [label, entries, expected] of invalid) {
    it.scoped(`fails the layer for ${label}`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(
          Layer.build(configured).pipe(Effect.withConfigProvider(provider(entries)))
        )
        if (expected === "ConfigError") {
          assert.isTrue(ConfigError.isConfigError(error), `expected a ConfigError, got ${String(error)}`)
        } else {
          assert.instanceOf(error, KvStore.KvError)
          assert.strictEqual((error as KvStore.KvError).op, "layer")
          assert.strictEqual((error as KvStore.KvError).reason, "InvalidArgument")
        }
      }))
  }
})
