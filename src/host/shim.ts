/**
 * Where the preload library is, building it with the system C compiler when it is missing (a
 * fresh clone whose install step was skipped).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export const SHIM_DIR = fileURLToPath(new URL('../../shim/', import.meta.url));
export const SHIM_PATH = SHIM_DIR + 'libiommufd-shim.so';
export const SHIM_SOURCE = SHIM_DIR + 'iommufd-shim.c';

/** The environment variable through which the shim finds the daemon's socket. */
export const SOCKET_ENV = 'IOMMUFD_TS_SOCKET';

/** The shim's path, (re)building it if it is missing or older than its source. */
export function ensureShim(): string {
  let stale = true;
  try {
    stale = fs.statSync(SHIM_PATH).mtimeMs < fs.statSync(SHIM_SOURCE).mtimeMs;
  } catch {
    stale = true;
  }
  if (stale) execFileSync('sh', [SHIM_DIR + 'build.sh'], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (!fs.existsSync(SHIM_PATH)) throw new Error(`the preload shim ${SHIM_PATH} could not be built (is a C compiler installed?)`);
  return SHIM_PATH;
}

/** The environment for a program that should talk to the daemon at `socketPath`. */
export function preloadEnv(socketPath: string, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const shim = ensureShim();
  const prev = base.LD_PRELOAD;
  return { ...base, LD_PRELOAD: prev ? `${shim}:${prev}` : shim, [SOCKET_ENV]: socketPath };
}
