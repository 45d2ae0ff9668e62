/**
 * `iommufd-ts run`: start the daemon in this process on a socket in a fresh 0700 directory, run
 * one program with the shim preloaded (only into it and its descendants), and hand back its exit
 * status the way a shell does (128 + signal number when it was killed).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { constants as osConstants } from 'node:os';
import { setErrorStacks } from '../lib/error.js';
import { IommufdServer, type ServerOptions } from './server.js';
import { preloadEnv } from './shim.js';

export interface RunOptions {
  /** Trace lines go here (a file path), one per ioctl. */
  traceFile?: string;
  /** Extra daemon options (tests). */
  server?: Partial<ServerOptions>;
  stdio?: 'inherit' | 'pipe';
  env?: NodeJS.ProcessEnv;
}

/** A private directory (0700) for a daemon socket. */
export function privateSocketDir(): { dir: string; socket: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iommufd-ts-'));
  fs.chmodSync(dir, 0o700);
  return { dir, socket: path.join(dir, 'iommu.sock') };
}

export async function runProgram(program: string, args: string[], opts: RunOptions = {}): Promise<number> {
  // Clients get an errno and an explanation, never a JavaScript stack: capturing one costs more
  // than most ioctls.
  setErrorStacks(false);
  const { dir, socket } = privateSocketDir();
  let traceFd: number | undefined;
  if (opts.traceFile) traceFd = fs.openSync(opts.traceFile, 'w');
  const server = new IommufdServer({
    socketPath: socket,
    trace: traceFd !== undefined ? (line) => fs.writeSync(traceFd!, line + '\n') : undefined,
    log: (line) => process.stderr.write(`iommufd-ts: ${line}\n`),
    ...opts.server,
  });
  await server.listen();
  try {
    const child = spawn(program, args, { stdio: opts.stdio ?? 'inherit', env: preloadEnv(socket, opts.env) });
    const forward = (sig: NodeJS.Signals): void => {
      child.kill(sig);
    };
    const sigs: NodeJS.Signals[] = ['SIGTERM', 'SIGHUP', 'SIGINT'];
    for (const s of sigs) process.on(s, forward);
    const status = await new Promise<number>((resolve) => {
      child.on('error', (e: NodeJS.ErrnoException) => {
        process.stderr.write(`iommufd-ts: cannot run ${program}: ${e.message}\n`);
        resolve(e.code === 'ENOENT' ? 127 : 126);
      });
      child.on('exit', (code, signal) => {
        if (code !== null) resolve(code);
        else resolve(128 + (signal ? (osConstants.signals[signal] ?? 0) : 0));
      });
    });
    for (const s of sigs) process.off(s, forward);
    return status;
  } finally {
    if (process.env.IOMMUFD_TS_STATS === '1') process.stderr.write(`iommufd-ts: daemon stats ${JSON.stringify(server.stats)}\n`);
    await server.close();
    if (traceFd !== undefined) fs.closeSync(traceFd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
