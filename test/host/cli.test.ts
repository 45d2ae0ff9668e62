/** `iommufd-ts run` as a user runs it: exit status like a shell, the trace file, stdio. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { compile, cleanupBuilds, haveCompiler, REPO } from './helpers.js';
import { nativeHelper } from '../../src/host/native.js';

const skip = haveCompiler() ? false : 'no C compiler';

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/cli/main.ts'), ...args], {
    encoding: 'utf8',
    timeout: 60_000,
    cwd: REPO,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('iommufd-ts run', { skip }, () => {
  let exe: string;
  let tmp: string;
  before(() => {
    exe = compile('hosttest');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'iommufd-ts-cli-'));
  });
  after(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
    cleanupBuilds();
  });

  test('runs the program with /dev/iommu emulated, forwards its output, writes the trace', () => {
    const trace = path.join(tmp, 'trace.txt');
    const r = cli('run', '--trace', trace, '--', exe, 'basic');
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /ok basic/);
    const lines = fs.readFileSync(trace, 'utf8').trim().split('\n');
    assert.match(lines[0]!, /^\[\d+\] open\("\/dev\/iommu"\) = 3$/);
    assert.ok(lines.some((l) => /^\[\d+\] IOMMU_IOAS_ALLOC \{flags=0x0, out_ioas_id=0\} = 0 \{out_ioas_id=1\}$/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /IOMMU_IOAS_IOVA_RANGES \{ioas_id=1, num_iovas=4, allowed_iovas=0x[0-9a-f]+, out_iova_alignment=0x0\} = 0 \{num_iovas=1, out_iova_alignment=0x1\}/.test(l)), lines.join('\n'));
    assert.ok(lines.some((l) => /IOMMU_DESTROY \{id=99\} = -1 ENOENT \(.+99.*\)/.test(l)));
    assert.ok(lines.some((l) => /VFIO_GET_API_VERSION 0x[0-9a-f]+ = 0/.test(l)));
    assert.ok(lines.some((l) => /read\(\/dev\/iommu, 0x[0-9a-f]+, 1\) = -1 EINVAL/.test(l)));
  });

  test('exit status: the program\'s code, 128 + signal, 127 for a missing program', () => {
    assert.equal(cli('run', '--', exe, 'exit', '7').status, 7);
    assert.equal(cli('run', '--', exe, 'abort').status, 134);
    assert.equal(cli('run', '--', path.join(tmp, 'no-such-program')).status, 127);
  });

  test('--cap NAME grants the capability in the emulated kernel; an unknown name is a usage error', () => {
    const ok = cli('run', '--cap', 'sys_resource', '--', exe, 'rlimit-mode', 'granted');
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    assert.match(ok.stdout, /ok RLIMIT_MODE set with the capability/);
    assert.match(ok.stderr, /holds CAP_SYS_RESOURCE in the emulated kernel \(--cap\)/);
    const bad = cli('run', '--cap', 'CAP_NET_ADMIN', '--', exe, 'basic');
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /choose one of CAP_IPC_LOCK, CAP_SYS_RAWIO, CAP_SYS_RESOURCE/);
  });

  test('IOMMUFD_TS_STATS=1: the daemon\'s counters at exit, showing the calls came through the fast channel', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(REPO, 'src/cli/main.ts'), 'run', '--', exe, 'basic'], {
      encoding: 'utf8',
      timeout: 60_000,
      cwd: REPO,
      env: { ...process.env, IOMMUFD_TS_STATS: '1' },
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const m = /iommufd-ts: daemon stats (\{.*\})/.exec(r.stderr);
    assert.ok(m, r.stderr);
    const stats = JSON.parse(m[1]!) as { ioctls: number; channelRequests: number; channels: number };
    assert.equal(stats.channels, 1);
    assert.ok(stats.ioctls >= 5 && stats.channelRequests === stats.ioctls, m[1]);
  });

  test('the shim is preloaded into the program only, and the socket directory is gone afterwards', () => {
    const r = cli('run', '--', '/bin/sh', '-c', 'echo "$LD_PRELOAD|$IOMMUFD_TS_SOCKET"; ls -ld "$(dirname "$IOMMUFD_TS_SOCKET")"');
    assert.equal(r.status, 0, r.stderr);
    const [preload, socket] = r.stdout.split('\n')[0]!.split('|');
    assert.match(preload!, /libiommufd-shim\.so$/);
    assert.match(r.stdout, /^drwx------ /m);
    assert.equal(fs.existsSync(path.dirname(socket!)), false);
    assert.equal(process.env.LD_PRELOAD?.includes('iommufd') ?? false, false);
  });

  test('on one CPU the daemon yields while it polls: the program gets the CPU and its calls are answered through the channel, not by doorbells', (t) => {
    // A doorbell wakes the daemon on the caller's CPU. Without yielding, the daemon's polling kept
    // a program waiting for its answer off that CPU until the daemon went idle, and every call
    // then rang (about 0.7 ms each on a VM).
    const taskset = spawnSync('taskset', ['-c', '0', 'true']);
    if (taskset.status !== 0 || !nativeHelper()?.yield) {
      t.skip(taskset.status !== 0 ? 'no taskset' : 'no native helper');
      return;
    }
    const runOnCpu0 = (env: Record<string, string>) => {
      const r = spawnSync('taskset', ['-c', '0', process.execPath, '--import', 'tsx', path.join(REPO, 'src/cli/main.ts'), 'run', '--', exe, 'load', '2000'], {
        encoding: 'utf8',
        timeout: 120_000,
        cwd: REPO,
        env: { ...process.env, IOMMUFD_TS_STATS: '1', ...env },
      });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      const m = /iommufd-ts: daemon stats (\{.*\})/.exec(r.stderr);
      assert.ok(m, r.stderr);
      return JSON.parse(m[1]!) as { ioctls: number; doorbells: number; yields: number };
    };
    const on = runOnCpu0({});
    assert.ok(on.ioctls > 2000, JSON.stringify(on));
    assert.ok(on.yields > 0, JSON.stringify(on));
    assert.ok(on.doorbells < on.ioctls / 4, `yielding: ${JSON.stringify(on)}`);
    const off = runOnCpu0({ IOMMUFD_TS_YIELD: '0' });
    assert.equal(off.yields, 0);
    assert.ok(off.doorbells > off.ioctls / 2, `not yielding: ${JSON.stringify(off)}`);
  });
});
