/**
 * Helpers for the host tests: compile the C scenarios with the system compiler, run a daemon in
 * this process on a private socket, run clients with the shim preloaded and collect their output.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { IommufdServer, type ServerOptions } from '../../src/host/server.js';
import { privateSocketDir } from '../../src/host/run.js';
import { preloadEnv } from '../../src/host/shim.js';

export const C_DIR = fileURLToPath(new URL('./c/', import.meta.url));
export const REPO = fileURLToPath(new URL('../../', import.meta.url));

export function haveCompiler(): boolean {
  try {
    execFileSync('cc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

let buildDir: string | undefined;

/** Compile test/host/c/<name>.c into a temporary directory (once per test process). */
export function compile(name: string): string {
  buildDir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'iommufd-ts-hosttest-'));
  const exe = path.join(buildDir, name);
  if (!fs.existsSync(exe)) execFileSync('cc', ['-O2', '-Wall', '-o', exe, path.join(C_DIR, `${name}.c`), '-lpthread']);
  return exe;
}

export function cleanupBuilds(): void {
  if (buildDir) fs.rmSync(buildDir, { recursive: true, force: true });
  buildDir = undefined;
}

export interface Daemon {
  server: IommufdServer;
  socket: string;
  dir: string;
  traces: string[];
  logs: string[];
  close(): Promise<void>;
}

export async function startDaemon(opts: Partial<ServerOptions> = {}): Promise<Daemon> {
  const { dir, socket } = privateSocketDir();
  const traces: string[] = [];
  const logs: string[] = [];
  const server = new IommufdServer({ socketPath: socket, trace: (l) => traces.push(l), log: (l) => logs.push(l), ...opts });
  await server.listen();
  return {
    server,
    socket,
    dir,
    traces,
    logs,
    async close() {
      await server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface ClientResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Client {
  child: ChildProcess;
  /** Resolves when the program has printed a line containing `text`. */
  waitForOutput(text: string, timeoutMs?: number): Promise<void>;
  done: Promise<ClientResult>;
}

/** Start `exe args` with the shim preloaded, talking to daemon `d`. */
export function startClient(d: Daemon, exe: string, args: string[], env: NodeJS.ProcessEnv = {}): Client {
  const child = spawn(exe, args, { env: { ...preloadEnv(d.socket), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const waiters: { text: string; resolve: () => void }[] = [];
  child.stdout!.on('data', (b: Buffer) => {
    stdout += b.toString();
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (stdout.includes(waiters[i]!.text)) {
        waiters[i]!.resolve();
        waiters.splice(i, 1);
      }
    }
  });
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const done = new Promise<ClientResult>((resolve) => {
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
  return {
    child,
    done,
    waitForOutput(text, timeoutMs = 10_000) {
      if (stdout.includes(text)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no "${text}" within ${timeoutMs} ms; output so far:\n${stdout}${stderr}`)), timeoutMs);
        waiters.push({
          text,
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        });
      });
    },
  };
}

export function runClient(d: Daemon, exe: string, args: string[], env?: NodeJS.ProcessEnv): Promise<ClientResult> {
  return startClient(d, exe, args, env).done;
}

/** Poll `cond` on the event loop (the daemon runs in this process) until it holds. */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const isRoot = (): boolean => process.geteuid?.() === 0;
