/**
 * Unmodified C programs on the emulator: the preload shim and the daemon, end to end. Each C
 * scenario (test/host/c/hosttest.c) checks the kernel's results itself and prints "ok ..." lines;
 * these tests also look at the daemon's side (releases, traces, pins, rejected clients).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { nativeHelper } from '../../src/host/native.js';
import { compile, cleanupBuilds, haveCompiler, isRoot, runClient, startClient, startDaemon, waitFor, type Daemon } from './helpers.js';

const skip = haveCompiler() ? false : 'no C compiler';

describe('preload shim + daemon', { skip }, () => {
  let d: Daemon;
  let exe: string;

  before(async () => {
    exe = compile('hosttest');
    d = await startDaemon();
  });
  after(async () => {
    await d.close();
    cleanupBuilds();
  });

  async function scenario(name: string, ...args: string[]): Promise<string> {
    const r = await runClient(d, exe, [name, ...args]);
    assert.equal(r.status, 0, `scenario ${name} failed:\n${r.stdout}${r.stderr}`);
    assert.doesNotMatch(r.stdout, /FAIL/);
    await waitFor(() => d.server.stats.open === 0, 'every file of the scenario to be released');
    assert.deepEqual(d.server.internalErrors, []);
    return r.stdout;
  }

  test('open, ioctl, read/write/poll on /dev/iommu, close, reopen, /dev/vfio/vfio', async () => {
    const out = await scenario('basic');
    assert.match(out, /ok basic/);
    assert.ok(d.traces.some((l) => /IOMMU_IOAS_MAP \{flags=0x6, ioas_id=1, user_va=0x[0-9a-f]+, length=0x10000, iova=0x0\} = 0 \{iova=0x[0-9a-f]+\}/.test(l)));
    assert.ok(d.traces.some((l) => /IOMMU_DESTROY \{id=99\} = -1 ENOENT \(.+\)/.test(l)));
  });

  test('EFAULT for NULL, unmapped, PROT_NONE, kernel and read-only (write-back) structs, inner pointers and pins; page identity', async () => {
    const out = await scenario('efault');
    assert.equal(out.match(/^ok /gm)?.length, 6, out);
    assert.equal(d.server.procs.memory.pinnedFrameCount(), 0, 'the release unpinned everything');
    assert.equal(d.server.procs.memory.backingCount, 0);
  });

  test('fault fd: FAULT_QUEUE_ALLOC, poll/ppoll/select, read, write, close', async () => {
    await scenario('fault');
    const out = await scenario('fault-rw');
    assert.match(out, /blocking poll on the fault fd wakes/);
    assert.match(out, /the release always comes first/);
  });

  test('access fd: CREATE_ACCESS, ACCESS_RW (fast and slow path), ACCESS_PAGES, the fd as an object id, close', async () => {
    const mapsBefore = d.server.procs.memory.sharedObjects.mapsMade;
    const out = await scenario('access');
    assert.match(out, /ok access fd/);
    // The slow path pins and unpins the shared buffer per call; the object stays open only while
    // the daemon is busy (an open file keeps the program's freed memory, huge pages above all).
    await waitFor(() => d.server.procs.memory.idleBackingCount === 0, 'idle backings to be closed');
    assert.equal(d.server.procs.memory.backingCount, 0);
    // Objects mapped for copies (SharedObjects) go soon after the daemon is idle, for the same reason.
    if (isRoot() && nativeHelper()?.objMap) assert.ok(d.server.procs.memory.sharedObjects.mapsMade > mapsBefore, 'the shared buffer was mapped for the copies');
    await waitFor(() => d.server.procs.memory.sharedObjects.count === 0, 'mapped client objects to be unmapped');
  });

  test('fork with the inherited fd: fork_gone (EFAULT) and fork_present (the child\'s pins are our shared pages)', async () => {
    const out = await scenario('fork');
    assert.match(out, /ok fork_gone/);
    assert.match(out, /ok fork_present/);
  });

  test('dup: the context is released at the last close only', async () => {
    d.traces.length = 0;
    await scenario('dup');
    const lastAlloc = d.traces.map((l) => l.includes('IOMMU_IOAS_ALLOC')).lastIndexOf(true);
    const release = d.traces.findIndex((l) => l.includes('release(/dev/iommu)'));
    assert.ok(release > lastAlloc, d.traces.join('\n'));
    assert.equal(d.traces.filter((l) => l.includes('release(/dev/iommu)')).length, 1);
  });

  test('close-on-exec: the O_CLOEXEC context is released at exec, the other one survives into the new image', async () => {
    d.traces.length = 0;
    const channels = d.server.stats.channels;
    const out = await scenario('exec');
    assert.match(out, /ok exec/);
    const releases = d.traces.filter((l) => l.includes('release(/dev/iommu)'));
    assert.equal(releases.length, 2);
    // The new image (same pid, new mm) gets a fast channel of its own over the inherited fd.
    assert.equal(d.server.stats.channels - channels, 2);
  });

  test('exit without close releases the context, its fault queue and its pins', async () => {
    d.traces.length = 0;
    await scenario('noclose');
    assert.ok(d.traces.some((l) => /release\(\/dev\/iommu\) \[EOF\]/.test(l)));
    assert.ok(d.traces.some((l) => /release\(\[iommufd-pgfault\]\)/.test(l)));
    assert.equal(d.server.procs.memory.pinnedFrameCount(), 0);
  });

  test('processes calling at once on one inherited fd each get their own connection; the file lives until the last copy closes', async () => {
    d.traces.length = 0;
    const out = await scenario('shared');
    assert.match(out, /ok 5 processes calling at once/);
    assert.match(out, /ok the context lives on in the child/);
    assert.equal(d.traces.filter((l) => l.includes('attach(/dev/iommu')).length, 5, 'four children, then the late child');
    const releases = d.traces.filter((l) => l.includes('release(/dev/iommu)'));
    assert.equal(releases.length, 1);
    assert.ok(d.traces.indexOf(releases[0]!) > d.traces.map((l) => l.includes('IOMMU_IOAS_IOVA_RANGES')).lastIndexOf(true));
  });

  test('threads sharing one fd', async () => {
    await scenario('threads');
  });

  test('a client killed mid-session (mid-call) leaves the daemon and the other clients unaffected', async () => {
    const spin = startClient(d, exe, ['spin']);
    await spin.waitForOutput('ok spinning');
    const others = [runClient(d, exe, ['load', '4000']), runClient(d, exe, ['basic']), runClient(d, exe, ['fork'])];
    await new Promise((r) => setTimeout(r, 100));
    spin.child.kill('SIGKILL');
    const killed = await spin.done;
    assert.equal(killed.signal, 'SIGKILL');
    for (const r of await Promise.all(others)) assert.equal(r.status, 0, r.stdout + r.stderr);
    await waitFor(() => d.server.stats.open === 0, 'all released');
    assert.deepEqual(d.server.internalErrors, []);
    assert.equal(d.server.procs.memory.pinnedFrameCount(), 0);
    // And the daemon still serves.
    await scenario('basic');
  });

  test('garbage on a socket drops only that connection', async () => {
    const errs = d.server.stats.protocolErrors;
    const out = await scenario('garbage');
    assert.match(out, /ok garbage/);
    assert.equal(d.server.stats.protocolErrors, errs + 20, 'one per round');
    // Raw peers: random bytes, a truncated frame and a disconnect mid-frame, an oversized length.
    const net = await import('node:net');
    const payloads = [
      Buffer.from('GET / HTTP/1.0\r\n\r\n'),
      Buffer.from([8, 0, 0, 0, 1, 0, 0]),
      Buffer.from([0xff, 0xff, 0xff, 0x7f, 2, 0, 0, 0]),
      Buffer.concat([Buffer.from([64, 0, 0, 0, 1, 0, 0, 0]), Buffer.alloc(64, 0xab)]),
    ];
    for (const p of payloads) {
      await new Promise<void>((resolve) => {
        const s = net.createConnection(d.socket, () => {
          s.write(p);
          setTimeout(() => s.destroy(), 50);
        });
        s.on('error', () => {});
        s.on('close', () => resolve());
      });
    }
    await waitFor(() => d.server.stats.open === 0, 'raw peers dropped');
    assert.deepEqual(d.server.internalErrors, []);
    await scenario('basic');
  });

  test('spoofed HELLOs: another uid, another pid, a socket the client does not hold', async () => {
    const rejected = d.server.stats.rejected;
    const out = await scenario('spoof');
    assert.match(out, /ok spoofed HELLOs are refused/);
    assert.equal(d.server.stats.rejected, rejected + 3);
  });

  test('fast channel: ioctls travel through it; a client idle longer than the daemon polls rings the doorbell', async () => {
    const before = { ...d.server.stats };
    await scenario('basic');
    assert.ok(d.server.stats.channels > before.channels, 'the client opened a channel');
    assert.ok(d.server.stats.channelRequests > before.channelRequests, 'its ioctls came through the channel');
    const mid = { ...d.server.stats };
    const out = await scenario('idle');
    assert.match(out, /ok idle calls through the doorbell/);
    assert.ok(d.server.stats.doorbells - mid.doorbells >= 20, `each call after a pause rang: ${d.server.stats.doorbells - mid.doorbells}`);
    assert.equal(d.server.stats.channelRequests - mid.channelRequests, 60);
  });

  test('fast channel: a request naming another process\'s file is EBADF; garbage drops only that channel', async () => {
    // The scenario writes raw requests into its channel and waits for the daemon to poll them:
    // a daemon that keeps polling for a second, a client that never stops expecting it to.
    const d2 = await startDaemon({ channelPollMicros: 1_000_000 });
    try {
      const r = await runClient(d2, exe, ['chanspoof'], { IOMMUFD_TS_CHANNEL_PICK_US: '1000000' });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /ok a channel request naming another process's file is refused/);
      assert.match(r.stdout, /ok garbage in a channel drops only that channel/);
      assert.ok(d2.logs.some((l) => /fast channel dropped: channel request of \d+ bytes exceeds/.test(l)), d2.logs.join('\n'));
      await waitFor(() => d2.server.stats.open === 0, 'every file to be released');
      assert.deepEqual(d2.server.internalErrors, []);
    } finally {
      await d2.close();
    }
  });

  test('channel requests are answered in the round that finds them while the sockets are quiet; a close() before a call still comes first', async () => {
    // "load" calls in a tight loop: with the native helper calls are answered at once. The
    // "fault-rw" scenario closes a fault fd and DESTROYs its object right after, 300 times: the
    // EOF of the closed socket must be released before the DESTROY however the call is served.
    const native = nativeHelper();
    const d2 = await startDaemon({ serveAtOnce: false });
    try {
      // On a loaded machine the client rings instead of spinning, and those calls are not answered
      // at once: a few tries.
      const before = { ...d.server.stats };
      for (let i = 0; i < 5 && d.server.stats.servedAtOnce === before.servedAtOnce; i++) {
        const r0 = await runClient(d, exe, ['load', '2000']);
        assert.equal(r0.status, 0, r0.stdout + r0.stderr);
      }
      const served = d.server.stats.channelRequests - before.channelRequests;
      const atOnce = d.server.stats.servedAtOnce - before.servedAtOnce;
      if (native?.ready) assert.ok(atOnce > 0 && atOnce <= served, `${atOnce} of ${served} channel requests answered at once`);
      else assert.equal(atOnce, 0);
      await scenario('fault-rw');
      for (const name of ['fault-rw', 'load']) {
        const r = await runClient(d2, exe, [name]);
        assert.equal(r.status, 0, `scenario ${name} failed:\n${r.stdout}${r.stderr}`);
        if (name === 'fault-rw') assert.match(r.stdout, /ok close\(\) then DESTROY: the release always comes first/);
      }
      assert.ok(d2.server.stats.channelRequests > 1000);
      assert.equal(d2.server.stats.servedAtOnce, 0, 'serveAtOnce: false waits for the next round');
      await waitFor(() => d2.server.stats.open === 0 && d.server.stats.open === 0, 'every file to be released');
      assert.deepEqual([...d.server.internalErrors, ...d2.server.internalErrors], []);
    } finally {
      await d2.close();
    }
  });

  test('a new process\'s first call goes through its fresh channel without a doorbell', async () => {
    // The daemon polls a channel from its CHANNEL frame on, and the shim waits for that frame's
    // ACK awake; before, every process rang for its first call. (The previous processes'
    // channels, still polled for a moment, do not count as busy either.)
    const d2 = await startDaemon();
    try {
      // A warm daemon (its first calls are slow while V8 compiles them, and those ring).
      const warm = await runClient(d2, exe, ['load', '3000']);
      assert.equal(warm.status, 0, warm.stdout + warm.stderr);
      const before = { ...d2.server.stats };
      // One call each, the one that creates the process's channel.
      for (let i = 0; i < 10; i++) {
        const r = await runClient(d2, exe, ['one']);
        assert.equal(r.status, 0, r.stdout + r.stderr);
        assert.match(r.stdout, /ok one call/);
      }
      const st = d2.server.stats;
      assert.equal(st.channels - before.channels, 10);
      assert.equal(st.channelRequests - before.channelRequests, 10, JSON.stringify(st));
      assert.ok(st.doorbells - before.doorbells <= 5, `doorbells for the first calls of 10 processes: ${st.doorbells - before.doorbells}`);
      await waitFor(() => st.open === 0, 'every file to be released');
      assert.deepEqual(d2.server.internalErrors, []);
    } finally {
      await d2.close();
    }
  });

  test('structs on a coroutine\'s stack and on an alternate signal stack; the stack shortcut off (IOMMUFD_TS_STACK=0) gives the same results', async () => {
    const out = await scenario('stacks');
    assert.match(out, /ok structs on a coroutine stack and an alternate signal stack/);
    for (const name of ['stacks', 'basic', 'efault', 'access', 'threads']) {
      const r = await runClient(d, exe, [name], { IOMMUFD_TS_STACK: '0' });
      assert.equal(r.status, 0, `scenario ${name} without the stack shortcut failed:\n${r.stdout}${r.stderr}`);
    }
    await waitFor(() => d.server.stats.open === 0, 'every file to be released');
    assert.deepEqual(d.server.internalErrors, []);
  });

  test('without the fast channel (IOMMUFD_TS_CHANNEL=0) every call takes the socket, with the same results', async () => {
    const before = { ...d.server.stats };
    for (const name of ['basic', 'efault', 'access', 'fault', 'fork', 'dup']) {
      const r = await runClient(d, exe, [name], { IOMMUFD_TS_CHANNEL: '0' });
      assert.equal(r.status, 0, `scenario ${name} failed:\n${r.stdout}${r.stderr}`);
    }
    await waitFor(() => d.server.stats.open === 0, 'every file to be released');
    assert.equal(d.server.stats.channels, before.channels);
    assert.equal(d.server.stats.channelRequests, before.channelRequests);
    assert.deepEqual(d.server.internalErrors, []);
  });

  test('a daemon that does not map its channels (pread/pwrite on the memfd) gives the same results', async () => {
    const d2 = await startDaemon({ mapChannels: false });
    const d3 = await startDaemon({ mapChannels: false, channelPollMicros: 1_000_000 });
    try {
      for (const name of ['basic', 'efault', 'access', 'fault', 'fork', 'idle']) {
        const r = await runClient(d2, exe, [name]);
        assert.equal(r.status, 0, `scenario ${name} failed:\n${r.stdout}${r.stderr}`);
      }
      const r = await runClient(d3, exe, ['chanspoof'], { IOMMUFD_TS_CHANNEL_PICK_US: '1000000' });
      assert.equal(r.status, 0, `scenario chanspoof failed:\n${r.stdout}${r.stderr}`);
      assert.ok(d3.logs.some((l) => /fast channel dropped/.test(l)), d3.logs.join('\n'));
      assert.ok(d2.server.stats.channelRequests > 100);
      await waitFor(() => d2.server.stats.open === 0 && d3.server.stats.open === 0, 'every file to be released');
      assert.deepEqual([...d2.server.internalErrors, ...d3.server.internalErrors], []);
    } finally {
      await d2.close();
      await d3.close();
    }
  });

  test('capabilities: CapEff decides, unless the daemon grants one to every client (--cap)', async () => {
    // This host may or may not give us CAP_SYS_RESOURCE; the daemon without --cap follows CapEff.
    const capEff = BigInt('0x' + /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]);
    const has = ((capEff >> 24n) & 1n) === 1n;
    const plain = await runClient(d, exe, ['rlimit-mode', has ? 'granted' : 'refused']);
    assert.equal(plain.status, 0, plain.stdout + plain.stderr);
    const d2 = await startDaemon({ grantCaps: ['CAP_SYS_RESOURCE'] });
    try {
      const r = await runClient(d2, exe, ['rlimit-mode', 'granted']);
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /ok RLIMIT_MODE set with the capability/);
    } finally {
      await d2.close();
    }
  });

  test('another uid cannot connect (0700 socket directory)', { skip: isRoot() ? false : 'needs root to switch uid' }, async () => {
    const out = await scenario('otheruid');
    assert.match(out, /ok other uid refused/);
  });
});
