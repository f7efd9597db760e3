/** The environment npm runs in for the Effect 4 line: this Node's directory first on PATH. */
export declare const nodeFirstOnPath: () => NodeJS.ProcessEnv
/** Packs effect-kv 2.x into `destination` without touching the checkout; resolves to the tarball's absolute path. */
export declare const pack: (destination: string) => Promise<string>
