#!/usr/bin/env -S node --min-semi-space-size=16
// Runs the CLI: the bundle the install step made (dist/cli/main.mjs) while it is newer than every
// source file, else the TypeScript sources directly through tsx (no build step needed).
// IOMMUFD_TS_BUNDLE=0 always takes the sources.
//
// The node flags above are the daemon's: its young generation starts at 16 MiB instead of 1, so a
// busy daemon collects garbage about 5x less often (each collection stalls every client that
// waits for an answer). `npm run conformance` starts this file with the same flags.

import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const bundle = join(root, 'dist', 'cli', 'main.mjs');

/** The newest modification time of the files under `dir`. */
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

let fresh = false;
if (process.env.IOMMUFD_TS_BUNDLE !== '0') {
  try {
    fresh = statSync(bundle).mtimeMs >= newest(join(root, 'src'));
  } catch {
    fresh = false;
  }
}
if (fresh) await import(bundle);
else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
