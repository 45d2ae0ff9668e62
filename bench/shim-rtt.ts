/**
 * Round trip of a trivial ioctl through the preload shim and the daemon (target: median under
 * 20 µs), of a 16-byte ACCESS_RW, and the mean call of the selftest's check_access_rw loop (its
 * commonest calls). Compiles test/host/c/rtt.c, runs it under `iommufd-ts run` (daemon in this
 * process), prints its figures.
 *
 *   npm run bench:shim [-- N]
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runProgram } from '../src/host/run.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, '../test/host/c/rtt.c');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iommufd-ts-bench-'));
const exe = path.join(dir, 'rtt');
execFileSync('cc', ['-O2', '-Wall', '-o', exe, src]);
const n = process.argv[2] ?? '20000';
console.log(`shim round trip, ${n} calls per kind, node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}`);
const status = await runProgram(exe, [n], { stdio: 'inherit' });
fs.rmSync(dir, { recursive: true, force: true });
process.exitCode = status;
