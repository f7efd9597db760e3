import { assert, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { inject } from "vitest"
it.effect("effect 4", () => Effect.sync(() => { assert.isString(inject("databaseUrl")) }))
