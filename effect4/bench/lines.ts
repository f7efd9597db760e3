/**
 * The Effect 4 half of `npm run bench -- lines`: the top-level `bench/lines.ts` runs it
 * under the Node 22 binary, from this folder, after building `dist`, and drives it round
 * by round over stdin/stdout so the two processes take turns. It times effect-kv 2.x
 * against Effect 4's own `KeyValueStore.layerMemory` and `KeyValueStore.layerSql`:
 * sequential get, set and update (`modifyUint8Array`) on memory and PostgreSQL.
 *
 * Commands, one JSON line each on stdin, each answered by one JSON line on stdout:
 *   {"setup": url | null}        builds the stores (PostgreSQL only with a url) → {"node": version}
 *   {"backend", "op", "warm"?}   one round (or a warm-up) of both subjects → µs per operation by subject
 */
import { PgClient } from "@effect/sql-pg"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as KeyValueStore from "effect/persistence/KeyValueStore"
import * as Redacted from "effect/Redacted"
import * as Scope from "effect/Scope"
import { KvStore, MemoryStore, PostgresStore } from "effect-kv"
import { createInterface } from "node:readline"
import { LINES, timeRound } from "../../bench/lib/sequential.mjs"
import type { SequentialSubject } from "../../bench/lib/sequential.mjs"

const POOL_SIZE = 10
const value = new Uint8Array(100).fill(7)

type Backend = "memory" | "postgres"
type Op = "get" | "set" | "update"

/** Both subjects of each operation on one backend, over a populated working set. */
const subjectsOn = async (backend: Backend, kv: KvStore.Service, kvs: KeyValueStore.KeyValueStore, kvsName: string) => {
  const { keys, ops } = LINES[backend]
  const working = Array.from({ length: keys }, (_, i) => `bench:${i}`)
  await Effect.runPromise(Effect.forEach(working, (k) => Effect.andThen(kv.set(k, value), kvs.set(k, value)), { discard: true }))
  let cursor = 0
  const next = () => working[cursor++ % keys]!
  const run = (op: () => Effect.Effect<unknown, unknown>) => () =>
    Effect.runPromise(Effect.gen(function*() {
      for (let i = 0; i < ops; i++) yield* op()
    }))
  const pair = (ours: () => Effect.Effect<unknown, unknown>, theirs: () => Effect.Effect<unknown, unknown>) => [
    { name: "effect-kv 2", batch: run(ours) },
    { name: kvsName, batch: run(theirs) }
  ]
  return {
    get: pair(() => kv.get(next()), () => kvs.getUint8Array(next())),
    set: pair(() => kv.set(next(), value), () => kvs.set(next(), value)),
    update: pair(() => kv.update(next(), () => Effect.succeed(value)), () => kvs.modifyUint8Array(next(), () => value))
  } satisfies Record<Op, ReadonlyArray<SequentialSubject>>
}

const scope = Effect.runSync(Scope.make())
const build = <I, E>(layer: Layer.Layer<I, E>) => Effect.runPromise(Layer.buildWithScope(layer, scope))
const subjects: Partial<Record<Backend, Record<Op, ReadonlyArray<SequentialSubject>>>> = {}

const setup = async (url: string | null) => {
  const memory = await build(Layer.merge(MemoryStore.layer(), KeyValueStore.layerMemory))
  subjects.memory = await subjectsOn(
    "memory",
    Context.get(memory, KvStore.KvStore),
    Context.get(memory, KeyValueStore.KeyValueStore),
    "KeyValueStore.layerMemory"
  )
  if (url !== null) {
    const postgres = await build(
      Layer.merge(PostgresStore.layer({ table: "bench_kv_effect4" }), KeyValueStore.layerSql({ table: "bench_kvs_effect4" })).pipe(
        Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: POOL_SIZE }))
      )
    )
    subjects.postgres = await subjectsOn(
      "postgres",
      Context.get(postgres, KvStore.KvStore),
      Context.get(postgres, KeyValueStore.KeyValueStore),
      "KeyValueStore.layerSql"
    )
  }
  return { node: process.version }
}

const round = (command: { readonly backend: Backend; readonly op: Op; readonly warm?: boolean }) => {
  const these = subjects[command.backend]?.[command.op]
  if (these === undefined) throw new Error(`no subjects for ${command.backend} ${command.op}`)
  const { ops } = LINES[command.backend]
  return timeRound(these, { ops, budgetMs: command.warm === true ? LINES.warmupMs : LINES.budgetMs })
}

try {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === "") continue
    const command = JSON.parse(line)
    const answer = "setup" in command ? await setup(command.setup) : await round(command)
    process.stdout.write(`${JSON.stringify(answer)}\n`)
  }
} finally {
  await Effect.runPromise(Scope.close(scope, Exit.void))
}
