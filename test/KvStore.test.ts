import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import { keyHash } from "../src/internal/hash.js"
import { compareCodePoints, invalidKey, invalidPrefix, utf8Length } from "../src/internal/key.js"
import { decodeTtl } from "../src/internal/ttl.js"
import * as KvStore from "../src/KvStore.js"
import { mulberry32 } from "../dev/random.js"

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

  it("invalidKey accepts exactly the valid keys", () => {
    for (const key of ["a", "x".repeat(2048), "€".repeat(682) + "xx", "😀", "a\uD83D\uDE00b", "%_\\"]) {
      assert.isUndefined(invalidKey("get", key), JSON.stringify(key.slice(0, 20)))
    }
    for (const key of ["", "x".repeat(2049), "€".repeat(683), "a\u0000", "\uD800", "a\uDC00", "\uDE00\uD83D"]) {
      const error = invalidKey("set", key)
      assert.instanceOf(error, KvStore.KvError)
      assert.strictEqual(error!.reason, "InvalidArgument")
      assert.strictEqual(error!.op, "set")
    }
    assert.instanceOf(invalidKey("get", 42 as unknown as string), KvStore.KvError)
    assert.isUndefined(invalidPrefix("keys", ""))
    assert.instanceOf(invalidPrefix("keys", "\u0000"), KvStore.KvError)
  })
})

describe("decodeTtl", () => {
  const cases: ReadonlyArray<readonly [unknown, number | undefined | "invalid"]> = [
    [undefined, undefined],
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
    [{}, "invalid"],
    [20_000 * 365.25 * 24 * 3600 * 1000, "invalid"],
    // too large to turn into nanoseconds: must be refused, not thrown from Duration.decode
    [[1e300, 0], "invalid"],
    [`1${"0".repeat(400)} millis`, "invalid"]
  ]
  for (const [input, expected] of cases) {
    const label = typeof input === "string" && input.length > 40 ? `${input.slice(0, 12)}…` : typeof input === "bigint" ? `${input}n` : Duration.isDuration(input) ? String(input) : JSON.stringify(input) ?? String(input)
    it(`${label} -> ${String(expected)}`, () => {
      const result = decodeTtl("set", "k", input as Duration.DurationInput)
      if (expected === "invalid") {
        assert.isTrue(Either.isLeft(result))
        const error = (result as Either.Left<KvStore.KvError, number | undefined>).left
        assert.strictEqual(error.reason, "InvalidArgument")
        assert.strictEqual(error.op, "set")
      } else {
        assert.deepStrictEqual(result, Either.right(expected))
      }
    })
  }
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
