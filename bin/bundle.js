#!/usr/bin/env node
// Bundles the CLI into dist/cli/main.mjs (run by the install step): `iommufd-ts` then starts in a
// quarter of the time it takes through tsx. bin/iommufd-ts.js uses the bundle only while it is
// newer than every file under src/, so an edited checkout runs its sources. Without esbuild, or if
// bundling fails, everything still runs through tsx.
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
try {
  const { build } = await import('esbuild');
  await build({
    entryPoints: [`${root}src/cli/main.ts`],
    // Same depth as src/cli/main.ts: paths the code finds relative to itself (../../shim) hold.
    outfile: `${root}dist/cli/main.mjs`,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // The dependencies go in too (commander, sorted-btree: MIT): one ESM file to compile, no CommonJS
    // loader or export scan at start-up (about 25 ms of the CLI's 0.13 s before it runs anything).
    // CommonJS dependencies require Node's built-in modules: give the ESM bundle a require().
    banner: { js: "import { createRequire as __bundleRequire } from 'node:module'; const require = __bundleRequire(import.meta.url);" },
    logLevel: 'warning',
  });
} catch (e) {
  process.stderr.write(`iommufd-ts: the CLI was not bundled (${e instanceof Error ? e.message : String(e)}); it runs through tsx\n`);
}
