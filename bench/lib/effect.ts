/** Building layers once and keeping their services around for the whole run. */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"

export interface Built<I, S> {
  readonly service: S
  readonly context: Context.Context<I>
  readonly close: () => Promise<void>
}

/** Builds `layer` in a fresh scope and returns its context and the service `tag` from it. */
export const buildService = async <I, S, E>(
  layer: Layer.Layer<I, E>,
  tag: Context.Tag<any, S>
): Promise<Built<I, S>> => {
  const scope = Effect.runSync(Scope.make())
  const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
  return {
    service: Context.unsafeGet(context as Context.Context<any>, tag),
    context,
    close: () => Effect.runPromise(Scope.close(scope, Exit.void))
  }
}

/** Imports a module of the project that another engineer may not have committed yet. */
export const importOptional = async <M>(path: string): Promise<M | undefined> => {
  try {
    return (await import(path)) as M
  } catch (error) {
    const code = (error as { code?: string }).code
    if (code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND") return undefined
    throw error
  }
}
