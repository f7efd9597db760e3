/**
 * Where MemoryStore's per-operation time goes: the floor loop with one piece
 * of effect-kv's work added at a time. Not part of `npm run bench`; run with
 * `npx tsx bench/breakdown-memory.ts` when a memory target is missed.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as Ref from "effect/Ref"
import { KvStore } from "../src/KvStore.js"
import * as MemoryStore from "../src/MemoryStore.js"
import { keyHash } from "../src/core/hash.js"
import { keyProblem } from "../src/core/key.js"
import { makeKeyedLock } from "../src/internal/keyedLock.js"
import { decodeDuration } from "../src/internal/ttl.js"
import { valueProblem } from "../src/core/value.js"
import { buildService } from "./lib/effect.js"
import { compare, type Subject } from "./lib/measure.js"

const SIZE = 10_000
const BATCH = 10_000
const keys = Array.from({ length: BATCH }, (_, i) => `user:${((i * 7919) % SIZE).toString().padStart(7, "0")}`)
const value = new Uint8Array(100).fill(3)
const map = new Map<string, { value: Uint8Array; expiresAt: number | undefined }>()
for (const k of keys) map.set(k, { value, expiresAt: undefined })
const ref = Ref.unsafeMake(map)
const lock = makeKeyedLock()
const kv = (await buildService(MemoryStore.layer(), KvStore)).service
for (const k of keys) await Effect.runPromise(kv.set(k, value))

const loop = (name: string, op: (key: string) => Effect.Effect<unknown, unknown>): Subject => ({
  name,
  opsPerBatch: BATCH,
  batch: () =>
    Effect.runPromise(Effect.gen(function*() {
      for (let i = 0; i < BATCH; i++) yield* op(keys[i]!)
    }))
})
const floorGet = (k: string) => Effect.map(Ref.get(ref), (m) => m.get(k)!.value)

const sections: Array<[string, Array<Subject>]> = [
  ["get", [
    loop("floor", floorGet),
    loop("+ keyProblem", (k) => (keyProblem(k) !== undefined ? Effect.die("bad") : floorGet(k))),
    loop("+ clockWith", (k) => Effect.clockWith((c) => Effect.map(Ref.get(ref), (m) => (c.unsafeCurrentTimeMillis(), m.get(k)!.value)))),
    loop("+ slice() copy", (k) => Effect.map(floorGet(k), (v) => v.slice())),
    loop("+ Buffer.from copy (pooled)", (k) => Effect.map(floorGet(k), (v) => Buffer.from(v))),
    loop("effect-kv get", (k) => kv.get(k))
  ]],
  ["set", [
    loop("floor", (k) => Effect.map(Ref.get(ref), (m) => m.set(k, { value, expiresAt: undefined }))),
    loop("+ new Uint8Array copy", (k) => Effect.map(Ref.get(ref), (m) => m.set(k, { value: new Uint8Array(value), expiresAt: undefined }))),
    loop("+ keyProblem + valueProblem + decodeDuration", (k) =>
      keyProblem(k) !== undefined || valueProblem(value) !== undefined || "problem" in decodeDuration(1000, "a TTL")
        ? Effect.die("bad")
        : Effect.map(Ref.get(ref), (m) => m.set(k, { value, expiresAt: undefined }))),
    loop("effect-kv set", (k) => kv.set(k, value))
  ]],
  ["update", [
    loop("floor", (k) => Effect.map(Ref.get(ref), (m) => m.set(k, { value: m.get(k)!.value, expiresAt: undefined }))),
    loop("+ keyedLock.withLock", (k) =>
      lock.withLock(k, Effect.map(Ref.get(ref), (m) => m.set(k, { value, expiresAt: undefined })))),
    loop("+ keyedLock.withLockedStep (decided at once)", (k) =>
      lock.withLockedStep(k, () => {
        map.set(k, { value, expiresAt: undefined })
        return Exit.void
      })),
    loop("+ uninterruptibleMask + ensuring", (k) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.ensuring(restore(Effect.map(Ref.get(ref), (m) => m.set(k, { value, expiresAt: undefined }))), Effect.void))),
    loop("+ semaphore(1).withPermits", (k) => {
      const s = Effect.unsafeMakeSemaphore(1)
      return s.withPermits(1)(Effect.map(Ref.get(ref), (m) => m.set(k, { value, expiresAt: undefined })))
    }),
    loop("+ withSpan", (k) =>
      Effect.map(Ref.get(ref), (m) => m.set(k, { value, expiresAt: undefined })).pipe(Effect.withSpan("kv.update", { attributes: { "kv.key": k } }))),
    loop("effect-kv update", (k) => kv.update(k, () => Effect.succeed(value))),
    loop("effect-kv increment", (k) => kv.increment(`ctr:${k}`))
  ]],
  ["misc", [
    loop("FiberRef.get", () => FiberRef.get(FiberRef.currentContext)),
    loop("keyHash (BigInt FNV-1a)", (k) => Effect.sync(() => keyHash(k)))
  ]]
]

for (const [section, subjects] of sections) {
  const result = await compare(subjects, { rounds: 3, time: 200 })
  const base = result[subjects[0]!.name]!.usPerOp
  console.log(`\n${section}`)
  for (const s of subjects) {
    const r = result[s.name]!
    console.log(`  ${s.name.padEnd(32)} ${(r.usPerOp * 1000).toFixed(0).padStart(7)} ns/op  ${(r.usPerOp / base).toFixed(2)}×`)
  }
}
process.exit(0)
