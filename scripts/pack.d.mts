/** Packs effect-kv into `destination` without touching the checkout; resolves to the tarball's absolute path. */
export declare const pack: (destination: string) => Promise<string>
