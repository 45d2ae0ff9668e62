/** `iommufd-ts serve`: the daemon on its own, until SIGINT/SIGTERM. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Capability } from '../mm/types.js';
import { setErrorStacks } from '../lib/error.js';
import { IommufdServer } from './server.js';
import { ensureShim, SOCKET_ENV } from './shim.js';

export async function serve(socketPath: string, opts: { traceFile?: string; grantCaps?: Capability[] } = {}): Promise<void> {
  // Clients get an errno and an explanation, never a JavaScript stack: capturing one costs more
  // than most ioctls.
  setErrorStacks(false);
  const socket = path.resolve(socketPath);
  const dir = path.dirname(socket);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.statSync(dir);
  if (st.mode & 0o077)
    process.stderr.write(
      `iommufd-ts: warning: ${dir} is accessible to other users (mode ${(st.mode & 0o777).toString(8)}); the daemon still checks every client's uid, but use a 0700 directory\n`,
    );
  let traceFd: number | undefined;
  if (opts.traceFile) traceFd = opts.traceFile === '-' ? 1 : fs.openSync(opts.traceFile, 'w');
  const server = new IommufdServer({
    socketPath: socket,
    trace: traceFd !== undefined ? (line) => fs.writeSync(traceFd!, line + '\n') : undefined,
    log: (line) => process.stderr.write(`iommufd-ts: ${line}\n`),
    grantCaps: opts.grantCaps,
  });
  await server.listen();
  if (opts.grantCaps?.length) process.stderr.write(`iommufd-ts: every client holds ${opts.grantCaps.join(', ')} in the emulated kernel (--cap)\n`);
  const shim = ensureShim();
  process.stderr.write(
    `iommufd-ts: serving /dev/iommu on ${socket}\n` +
      `run programs with:\n  LD_PRELOAD=${shim} ${SOCKET_ENV}=${socket} PROGRAM [ARGS...]\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await server.close();
  if (traceFd !== undefined && traceFd !== 1) fs.closeSync(traceFd);
}
