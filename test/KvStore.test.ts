import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import { mulberry32 } from "../dev/random.js"
import { addToCounter, encodeCounter, parseCounter } from "../src/core/counter.js"
import { keyHash } from "../src/core/hash.js"
import { compareCodePoints, keyProblem, prefixProblem, utf8Length } from "../src/core/key.js"
import { makeKeyedLock } from "../src/internal/keyedLock.js"
import { decodeDuration } from "../src/internal/ttl.js"
import { MAX_VALUE_BYTES, valueProblem } from "../src/core/value.js"
import type { DriverError } from "../src/KvStore.js"

/** A test label for any input, without converting it (some inputs throw when converted). */
const label = (input: unknown): string => {
  try {
    return typeof input === "string" && input.length > 40
      ? `${input.slice(0, 12)}…`
      : typeof input === "bigint"
      ? `${input}n`
      : Duration.isDuration(input)
      ? String(input)
      : JSON.stringify(input) ?? String(input)
  } catch {
    return typeof input
  }
}

/** Inputs from plain JavaScript that throw when touched: none of the pure checks may throw on them. */
const hostileInputs = (): ReadonlyArray<readonly [string, unknown]> => {
  const thrower = () => {
    throw new Error("touched")
  }
  const traps: ProxyHandler<object> = {
    get: thrower,
    has: thrower,
    ownKeys: thrower,
    getOwnPropertyDescriptor: thrower,
    getPrototypeOf: thrower,
    apply: thrower,
    construct: thrower
  }
  const revoked = Proxy.revocable({}, {})
  revoked.revoke()
  return [
    ["a Proxy whose traps throw", new Proxy({}, traps)],
    ["a Proxy of an array whose traps throw", new Proxy([1, 2], traps)],
    ["a Proxy of a function whose traps throw", new Proxy(() => 1, traps)],
    ["a revoked Proxy", revoked.proxy],
    ["an object with a throwing toString and valueOf", { toString: thrower, valueOf: thrower }],
    ["an object with a throwing Symbol.toPrimitive", { [Symbol.toPrimitive]: thrower }],
    ["Object.create(null)", Object.create(null)],
    ["a Symbol", Symbol("k")],
    ["a function", thrower]
  ]
}

/** A pseudo-random well-formed string mixing ASCII, 2- and 3-byte, private-use and astral characters. */
const randomString = (next: () => number): string => {
  const pools = [[0x20, 0x7f], [0x80, 0x7ff], [0x800, 0xd7ff], [0xe000, 0xffff], [0x10000, 0x10ffff]] as const
  let s = ""
  const length = Math.floor(next() * 8)
  for (let i = 0; i < length; i++) {
    const [lo, hi] = pools[Math.floor(next() * pools.length)]!
    s += String.fromCodePoint(lo + Math.floor(next() * (hi - lo)))
  }
  return s
}

describe("key helpers", () => {
  it("utf8Length agrees with Buffer.byteLength", () => {
    const next = mulberry32(1)
    for (let i = 0; i < 2000; i++) {
      const s = randomString(next)
      assert.strictEqual(utf8Length(s), Buffer.byteLength(s, "utf8"), JSON.stringify(s))
    }
    assert.strictEqual(utf8Length(""), 0)
    assert.strictEqual(utf8Length("€😀a"), 3 + 4 + 1)
  })

  it("compareCodePoints orders like the UTF-8 bytes (Buffer.compare)", () => {
    const next = mulberry32(2)
    for (let i = 0; i < 5000; i++) {
      const a = randomString(next)
      const b = next() < 0.2 ? a + randomString(next) : randomString(next)
      const expected = Math.sign(Buffer.compare(Buffer.from(a), Buffer.from(b)))
      assert.strictEqual(Math.sign(compareCodePoints(a, b)), expected, `${JSON.stringify(a)} vs ${JSON.stringify(b)}`)
      assert.strictEqual(Math.sign(compareCodePoints(b, a)), -expected)
    }
    // where UTF-16 order differs: U+E000 and U+FFFD come before astral characters
    assert.isBelow(compareCodePoints("\uE000", "😀"), 0)
    assert.isBelow(compareCodePoints("\uFFFD", "😀"), 0)
  })

  it("keyProblem accepts exactly the valid keys", () => {
    for (const key of ["a", "x".repeat(2048), "€".repeat(682) + "xx", "😀", "a\uD83D\uDE00b", "%_\\"]) {
      assert.isUndefined(keyProblem(key), JSON.stringify(key.slice(0, 20)))
    }
    for (const key of ["", "x".repeat(2049), "€".repeat(683), "a\u0000", "\uD800", "a\uDC00", "\uDE00\uD83D"]) {
      assert.isString(keyProblem(key), JSON.stringify(key.slice(0, 20)))
    }
    assert.isString(keyProblem(42))
    assert.isUndefined(prefixProblem(""))
    assert.isString(prefixProblem("\u0000"))
    assert.isString(prefixProblem(42))
    assert.match(prefixProblem("\u0000")!, /prefix/)
  })

  it("keyProblem never throws, whatever the key", () => {
    for (const [label, key] of hostileInputs()) {
      let problem: string | undefined
      assert.doesNotThrow(() => {
        problem = keyProblem(key)
      }, undefined, undefined, label)
      assert.isString(problem, label)
      assert.doesNotThrow(() => prefixProblem(key), undefined, undefined, label)
    }
  })
})

describe("decodeDuration", () => {
  const cases: ReadonlyArray<readonly [unknown, number | undefined | "invalid"]> = [
    [0, undefined],
    [0n, undefined],
    [Duration.zero, undefined],
    [Duration.infinity, undefined],
    [Infinity, undefined],
    [[0, 0], undefined],
    ["0 millis", undefined],
    [1500, 1500],
    [1_500_000_000n, 1500],
    [[1, 500_000_000], 1500],
    ["1.5 seconds", 1500],
    ["2 minutes", 120_000],
    [Duration.seconds(3), 3000],
    // a positive TTL below the resolution counts as 1 ms, never as "no expiry"
    [1e-9, 1],
    [Number.MIN_VALUE, 1],
    ["0.4 nanos", 1],
    ["1 nano", 1],
    [1n, 1],
    [[0, 1], 1],
    [[0, Number.MIN_VALUE], 1],
    [`0.${"0".repeat(400)}1 millis`, 1],
    [Duration.nanos(1n), 1],
    [-5, "invalid"],
    [-Infinity, "invalid"],
    [NaN, "invalid"],
    [-1n, "invalid"],
    [[-1, 0], "invalid"],
    [[0, -1], "invalid"],
    [[NaN, 0], "invalid"],
    [[1, 2, 3], "invalid"],
    ["-1 millis", "invalid"],
    ["garbage", "invalid"],
    ["", "invalid"],
    [null, "invalid"],
    [undefined, "invalid"],
    [{}, "invalid"],
    [20_000 * 365.25 * 24 * 3600 * 1000, "invalid"],
    // too large to turn into nanoseconds: must be refused, not thrown from Duration.decode
    [[1e300, 0], "invalid"],
    [`1${"0".repeat(400)} millis`, "invalid"],
    // finite inputs whose milliseconds overflow: too large, never "no expiry"
    [10n ** 400n, "invalid"],
    [[1.7e308, 0], "invalid"],
    [[0, 1.7e308], "invalid"],
    [Duration.nanos(10n ** 400n), "invalid"]
  ]
  for (const [input, expected] of cases) {
    it(`${label(input)} -> ${String(expected)}`, () => {
      const result = decodeDuration(input, "a TTL")
      if (expected === "invalid") {
        assert.isTrue("problem" in result, JSON.stringify(result))
        const problem = (result as { readonly problem: string }).problem
        assert.isString(problem)
        assert.match(problem, /a TTL/, "the message names what was decoded")
      } else {
        assert.deepStrictEqual(result, { millis: expected })
      }
    })
  }

  it("never throws, whatever the input", () => {
    for (const [name, input] of hostileInputs()) {
      let result: unknown
      assert.doesNotThrow(() => {
        result = decodeDuration(input, "a TTL")
      }, undefined, undefined, name)
      assert.isTrue(typeof result === "object" && result !== null && "problem" in result, name)
    }
  })
})

describe("valueProblem", () => {
  it("accepts a Uint8Array, an empty one, a Buffer, a subarray and exactly 64 MiB", () => {
    assert.isUndefined(valueProblem(new Uint8Array([1, 2, 3])))
    assert.isUndefined(valueProblem(new Uint8Array(0)))
    assert.isUndefined(valueProblem(Buffer.from("a buffer")))
    assert.isUndefined(valueProblem(new Uint8Array(16).subarray(4, 8)))
    assert.isUndefined(valueProblem(new Uint8Array(MAX_VALUE_BYTES)))
    assert.strictEqual(MAX_VALUE_BYTES, 64 * 1024 * 1024)
  })

  it("refuses what is not a genuine, attached Uint8Array of at most 64 MiB", () => {
    const detached = new Uint8Array([1, 2, 3])
    structuredClone(detached.buffer, { transfer: [detached.buffer] })
    assert.strictEqual(detached.byteLength, 0, "the fixture is detached")
    // a resizable buffer (ES2024, in Node 20) shrunk below its view
    const resizable = new (ArrayBuffer as unknown as new(n: number, o: { maxByteLength: number }) => ArrayBuffer)(8, {
      maxByteLength: 16
    })
    const outOfBounds = new Uint8Array(resizable, 4, 4)
    ;(resizable as unknown as { resize(n: number): void }).resize(2)
    assert.throws(() => new Uint8Array(outOfBounds), undefined, undefined, "the fixture cannot be copied")
    const refused: ReadonlyArray<readonly [string, unknown]> = [
      ["a detached Uint8Array", detached],
      ["a view past the end of its shrunk resizable buffer", outOfBounds],
      ["a Proxy of a Uint8Array", new Proxy(new Uint8Array([1]), {})],
      ["Object.create(Uint8Array.prototype)", Object.create(Uint8Array.prototype)],
      ["an Int8Array", new Int8Array([1])],
      ["a Uint8ClampedArray", new Uint8ClampedArray([1])],
      ["a DataView", new DataView(new ArrayBuffer(1))],
      ["an ArrayBuffer", new ArrayBuffer(1)],
      ["an array", [1, 2, 3]],
      ["a string", "abc"],
      ["an object faking byteLength", { byteLength: 3, length: 3, 0: 1, 1: 2, 2: 3 }],
      ["64 MiB + 1", new Uint8Array(MAX_VALUE_BYTES + 1)],
      ...hostileInputs()
    ]
    for (const [name, value] of refused) {
      let problem: string | undefined
      assert.doesNotThrow(() => {
        problem = valueProblem(value)
      }, undefined, undefined, name)
      assert.isString(problem, name)
    }
    assert.match(valueProblem(new Uint8Array(MAX_VALUE_BYTES + 1))!, /64 MiB/)
    assert.match(valueProblem(detached)!, /detached/)
  })
})

describe("counter", () => {
  const encode = (text: string) => new TextEncoder().encode(text)

  it("parses canonical decimal text of safe integers", () => {
    const ok: ReadonlyArray<readonly [string, number]> = [
      ["0", 0],
      ["7", 7],
      ["-12", -12],
      ["42", 42],
      ["9007199254740991", Number.MAX_SAFE_INTEGER],
      ["-9007199254740991", -Number.MAX_SAFE_INTEGER]
    ]
    for (const [text, n] of ok) assert.strictEqual(parseCounter(encode(text)), n, JSON.stringify(text))
  })

  it("refuses anything else", () => {
    for (
      const text of [
        "+1",
        "01",
        "00",
        "-0",
        "-01",
        "1.0",
        "1e3",
        " 1",
        "1 ",
        "1\n",
        "0x10",
        "9007199254740992",
        "-9007199254740992",
        "9999999999999999",
        "12345678901234567890",
        "",
        "-",
        "abc",
        "Infinity",
        "NaN",
        "١"
      ]
    ) {
      assert.isUndefined(parseCounter(encode(text)), JSON.stringify(text))
    }
    assert.isUndefined(parseCounter(new Uint8Array([0x31, 0])), "a NUL after the digits")
  })

  it("encodes what String(n) prints and round-trips", () => {
    for (const n of [0, 1, -1, -12, 42, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER]) {
      assert.deepStrictEqual(encodeCounter(n), encode(String(n)))
      assert.strictEqual(parseCounter(encodeCounter(n)), n)
    }
  })

  it("addToCounter refuses results outside ±(2^53 − 1)", () => {
    assert.strictEqual(addToCounter(41, 1), 42)
    assert.strictEqual(addToCounter(5, -7), -2)
    assert.strictEqual(addToCounter(Number.MAX_SAFE_INTEGER - 1, 1), Number.MAX_SAFE_INTEGER)
    assert.strictEqual(addToCounter(-Number.MAX_SAFE_INTEGER, 0), -Number.MAX_SAFE_INTEGER)
    assert.isString(addToCounter(Number.MAX_SAFE_INTEGER, 1))
    assert.isString(addToCounter(-Number.MAX_SAFE_INTEGER, -1))
    assert.isString(addToCounter(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER))
  })
})

describe("keyedLock", () => {
  /** Lets every runnable fiber take its next steps. */
  const settle = Effect.forEach(Array.from({ length: 20 }), () => Effect.yieldNow(), { discard: true })

  it.effect("hands the lock to waiters in the order they came", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const release = yield* Deferred.make<void>()
      const order: Array<number> = []
      const holder = yield* Effect.fork(lock.withLock("k", Deferred.await(release)))
      yield* settle
      const waiters: Array<Fiber.RuntimeFiber<void, DriverError>> = []
      for (const i of [1, 2, 3, 4, 5]) {
        waiters.push(yield* Effect.fork(lock.withLock("k", Effect.zipRight(Effect.yieldNow(), Effect.sync(() => {
          order.push(i)
        })))))
        yield* settle // queued before the next one arrives
      }
      assert.deepStrictEqual(order, [], "a waiter ran while the lock was held")
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      for (const waiter of waiters) yield* Fiber.join(waiter)
      assert.deepStrictEqual(order, [1, 2, 3, 4, 5])
      assert.isFalse(lock.isLocked("k"), "a lock was left behind")
    }))

  it.effect("an interrupted waiter leaves no lock and does not run", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const release = yield* Deferred.make<void>()
      let ran = false
      const holder = yield* Effect.fork(lock.withLock("k", Deferred.await(release)))
      yield* settle
      const waiter = yield* Effect.fork(lock.withLock("k", Effect.sync(() => {
        ran = true
      })))
      const next = yield* Effect.fork(lock.withLock("k", Effect.void))
      yield* settle
      yield* Fiber.interrupt(waiter)
      assert.isTrue(lock.isLocked("k"))
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      yield* Fiber.join(next)
      assert.isFalse(ran, "the interrupted waiter ran")
      assert.isFalse(lock.isLocked("k"), "a lock was left behind")
      // and the key can be taken again
      yield* lock.withLock("k", Effect.void)
      assert.isFalse(lock.isLocked("k"))
    }))

  it.effect("an interrupted holder leaves no lock; a failing one neither", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const holder = yield* Effect.fork(lock.withLock("k", Effect.never))
      yield* settle
      assert.isTrue(lock.isLocked("k"))
      yield* Fiber.interrupt(holder)
      assert.isFalse(lock.isLocked("k"))
      const exit = yield* Effect.exit(lock.withLock("k", Effect.fail("no")))
      assert.isTrue(Exit.isFailure(exit))
      assert.isFalse(lock.isLocked("k"))
    }))

  it.effect("does not serialize different keys", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const result = yield* lock.withLock("a", lock.withLock("b", Effect.succeed("both")))
      assert.strictEqual(result, "both")
      assert.isFalse(lock.isLocked("a") || lock.isLocked("b"))
    }))

  it.effect("heldByCurrentFiber: inside the hold and its forks while it lasts, nowhere else", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const holdEnded = yield* Deferred.make<void>()
      const inHold = yield* Deferred.make<void>()
      // an unrelated fiber, forked before (outside) the hold, asking while it lasts
      const outsider = yield* Effect.fork(Effect.zipRight(Deferred.await(inHold), lock.heldByCurrentFiber("k")))
      const seen = yield* lock.withLock("k", Effect.gen(function*() {
        const inside = yield* lock.heldByCurrentFiber("k")
        const otherKey = yield* lock.heldByCurrentFiber("other")
        const child = yield* Effect.fork(lock.heldByCurrentFiber("k"))
        const childDuring = yield* Fiber.join(child)
        // a fork that outlives the hold asks again once it has ended
        const late = yield* Effect.fork(Effect.zipRight(Deferred.await(holdEnded), lock.heldByCurrentFiber("k")))
        const daemon = yield* Effect.forkDaemon(Effect.zipRight(Deferred.await(holdEnded), lock.heldByCurrentFiber("k")))
        yield* Deferred.succeed(inHold, undefined)
        const outsiderDuring = yield* Fiber.join(outsider)
        return { inside, otherKey, childDuring, outsiderDuring, late, daemon }
      }))
      yield* Deferred.succeed(holdEnded, undefined)
      assert.isTrue(seen.inside, "inside the hold")
      assert.isFalse(seen.otherKey, "a key not held")
      assert.isTrue(seen.childDuring, "a fiber forked inside the hold, while it lasts")
      assert.isFalse(seen.outsiderDuring, "an unrelated fiber")
      assert.isFalse(yield* Fiber.join(seen.late), "a fiber forked inside the hold, after it ended")
      assert.isFalse(yield* Fiber.join(seen.daemon), "a daemon forked inside the hold, after it ended")
      assert.isFalse(yield* lock.heldByCurrentFiber("k"), "the holder after its hold ended")
    }))

  it.effect("heldByCurrentFiber: a fork of an ended hold is not the holder of a later hold", () =>
    Effect.gen(function*() {
      const lock = makeKeyedLock()
      const firstEnded = yield* Deferred.make<void>()
      const secondHeld = yield* Deferred.make<void>()
      const finish = yield* Deferred.make<void>()
      const late = yield* lock.withLock(
        "k",
        Effect.forkDaemon(Effect.zipRight(
          Effect.zipRight(Deferred.await(firstEnded), Deferred.await(secondHeld)),
          lock.heldByCurrentFiber("k")
        ))
      )
      yield* Deferred.succeed(firstEnded, undefined)
      const second = yield* Effect.fork(
        lock.withLock("k", Effect.zipRight(Deferred.succeed(secondHeld, undefined), Deferred.await(finish)))
      )
      assert.isFalse(yield* Fiber.join(late), "a fork of the first hold counted as inside the second")
      yield* Deferred.succeed(finish, undefined)
      yield* Fiber.join(second)
      // nested holds: the inner one ends, the outer one still counts
      const nested = yield* lock.withLock(
        "k",
        Effect.zipRight(lock.withLock("other", Effect.void), lock.heldByCurrentFiber("k"))
      )
      assert.isTrue(nested)
    }))
})

describe("keyHash", () => {
  it("is the seed's signed 64-bit FNV-1a", () => {
    assert.strictEqual(keyHash("a"), -5808556873153909620n)
    assert.strictEqual(keyHash("foobar"), -8821353812377114648n)
    assert.strictEqual(keyHash(""), BigInt.asIntN(64, 0xcbf29ce484222325n))
  })

  it("agrees with a plain BigInt FNV-1a on random and long keys", () => {
    const reference = (key: string): bigint => {
      let h = 0xcbf29ce484222325n
      for (const byte of Buffer.from(key, "utf8")) h = ((h ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn
      return BigInt.asIntN(64, h)
    }
    const next = mulberry32(7)
    const keys = Array.from({ length: 2000 }, () => randomString(next))
    keys.push("\u{10FFFF}".repeat(512), "\xff".repeat(1024), "z".repeat(2048))
    for (const key of keys) assert.strictEqual(keyHash(key), reference(key), JSON.stringify(key))
  })
})
