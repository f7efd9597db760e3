import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import { globalValue } from "effect/GlobalValue"
import { KvError } from "../KvStore.js"

/**
 * The keys whose `update` function the current fiber is running. A write to
 * such a key from inside its own update function could never proceed (the key
 * is locked until the function returns), so it is refused with a clear error
 * instead of hanging, and refused the same way on every backend.
 */
const updatingKeys = globalValue(
  "effect-kv/internal/updatingKeys",
  () => FiberRef.unsafeMake<ReadonlySet<string>>(new Set())
)

/** Runs `effect` (an update function) marked as holding `key`. */
export const markUpdating = (key: string) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.locallyWith(effect, updatingKeys, (keys) => new Set(keys).add(key))

/** Fails with `InvalidArgument` when the calling fiber is inside the update function of `key`. */
export const refuseWriteInsideOwnUpdate = (op: string, key: string): Effect.Effect<void, KvError> =>
  Effect.flatMap(FiberRef.get(updatingKeys), (keys) =>
    keys.has(key)
      ? Effect.fail(
        new KvError({
          reason: "InvalidArgument",
          op,
          key,
          message: `Cannot ${op} key ${JSON.stringify(key)} from inside its own update function: ` +
            "return the new value from the function instead"
        })
      )
      : Effect.void)
