import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_HUGETLB,
  MAP_PRIVATE,
  MAP_SHARED,
  MMAP_BASE,
  MemoryFault,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  RLIM_INFINITY,
  SimMachine,
} from '../../src/mm/index.js';
import { HUGE, PAGE, bytes, fill, throwsErrno } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;

test('machine: deterministic pids, mm ids, addresses; defaults', () => {
  const run = () => {
    const m = new SimMachine();
    const p = m.spawn();
    const q = m.spawn({ uid: 0, capabilities: ['CAP_IPC_LOCK'], rlimitMemlock: RLIM_INFINITY });
    return { pids: [p.pid, q.pid], mms: [p.mm.id, q.mm.id], addrs: [p.mapAnonymous(PAGE), p.mapAnonymous(3n * PAGE)], p, q };
  };
  const a = run();
  const b = run();
  assert.deepEqual(a.pids, b.pids);
  assert.deepEqual(a.mms, b.mms);
  assert.deepEqual(a.addrs, b.addrs);
  assert.notEqual(a.mms[0], a.mms[1]);
  // Top-down from MMAP_BASE.
  assert.equal(a.addrs[0], BigInt(MMAP_BASE) - PAGE);
  assert.equal(a.addrs[1], BigInt(MMAP_BASE) - 4n * PAGE);
  assert.equal(a.p.uid, 1000);
  assert.equal(a.p.capable('CAP_IPC_LOCK'), false);
  assert.equal(a.p.rlimitMemlock(), 8n * 1024n * 1024n);
  assert.equal(a.q.capable('CAP_IPC_LOCK'), true);
  assert.equal(a.q.rlimitMemlock(), RLIM_INFINITY);
  a.p.grant('CAP_SYS_RESOURCE');
  assert.equal(a.p.capable('CAP_SYS_RESOURCE'), true);
  a.p.revoke('CAP_SYS_RESOURCE');
  assert.equal(a.p.capable('CAP_SYS_RESOURCE'), false);
  a.p.setRlimitMemlock(4096n);
  assert.equal(a.p.rlimitMemlock(), 4096n);
});

test('machine: processes of one uid share the user record', () => {
  const m = new SimMachine();
  const p = m.spawn({ uid: 1000 });
  const q = m.spawn({ uid: 1000 });
  const r = m.spawn({ uid: 1001 });
  assert.equal(p.user, q.user);
  assert.notEqual(p.user, r.user);
  assert.equal(p.fork().user, p.user);
  assert.equal(m.process(q.pid), q);
});

test('anonymous private: untouched reads as zeros without allocating; writes persist', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(4n * PAGE);
  assert.deepEqual(p.readMem(a, 10), new Uint8Array(10));
  assert.equal(m.memory.liveFrames, 0);
  // A write across a page boundary.
  p.writeMem(a + PAGE - 2n, bytes(1, 2, 3, 4));
  assert.deepEqual(p.readMem(a + PAGE - 3n, 6), bytes(0, 1, 2, 3, 4, 0));
  assert.equal(m.memory.liveFrames, 2);
  assert.deepEqual(p.mm.copyFromUser(a + PAGE - 2n, 4), bytes(1, 2, 3, 4));
});

test('anonymous shared: shared with the child after fork, both ways', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(2n * PAGE, { shared: true });
  p.writeMem(a, bytes(1));
  const c = p.fork();
  c.writeMem(a, bytes(2));
  assert.deepEqual(p.readMem(a, 1), bytes(2));
  p.writeMem(a + PAGE, bytes(3)); // never touched before fork
  assert.deepEqual(c.readMem(a + PAGE, 1), bytes(3));
  assert.equal(p.mm.lookupPage(a, false), c.mm.lookupPage(a, true));
});

test('shared file mapped twice (two processes, two addresses) gives the same frame', () => {
  const m = new SimMachine();
  const f = m.createShmemFile(4n * PAGE, { name: '/dev/shm/buf' });
  const p = m.spawn();
  const q = m.spawn();
  const a1 = p.mapFile(f, 4n * PAGE, { shared: true });
  const a2 = p.mapFile(f, 2n * PAGE, { shared: true, offset: 2n * PAGE });
  const b = q.mapFile(f, 4n * PAGE, { shared: true });
  p.writeMem(a1 + 2n * PAGE + 5n, bytes(42));
  assert.deepEqual(p.readMem(a2 + 5n, 1), bytes(42));
  assert.deepEqual(q.readMem(b + 2n * PAGE + 5n, 1), bytes(42));
  const fr = p.mm.lookupPage(a2, false);
  assert.equal(fr, q.mm.lookupPage(b + 2n * PAGE, true));
  assert.equal(fr, p.mm.lookupPage(a1 + 2n * PAGE, false));
  assert.deepEqual(f.pread(2 * 4096 + 5, 1), bytes(42));
  f.pwrite(0, bytes(9));
  assert.deepEqual(q.readMem(b, 1), bytes(9));
});

test('file private: reads see the file until written; a write copies', () => {
  const m = new SimMachine();
  const f = m.createShmemFile(2n * PAGE);
  f.pwrite(0, bytes(1, 1));
  const p = m.spawn();
  const a = p.mapFile(f, 2n * PAGE);
  assert.deepEqual(p.readMem(a, 2), bytes(1, 1));
  f.pwrite(0, bytes(2)); // a later change of the file is visible while the page is not copied
  assert.deepEqual(p.readMem(a, 2), bytes(2, 1));
  const before = p.mm.lookupPage(a, false);
  assert.equal(before, f.peek(0));
  p.writeMem(a + 1n, bytes(7));
  const after = p.mm.residentFrame(a)!;
  assert.notEqual(after, before);
  assert.deepEqual(p.readMem(a, 2), bytes(2, 7));
  assert.deepEqual(f.pread(0, 2), bytes(2, 1), 'the file is unchanged');
  f.pwrite(0, bytes(5));
  assert.deepEqual(p.readMem(a, 1), bytes(2), 'the copy no longer follows the file');
});

test('private mapping of a read-only file may be written; shared writable is EACCES', () => {
  const m = new SimMachine();
  const exe = m.createShmemFile(PAGE, { name: '/proc/self/exe', readOnly: true });
  const p = m.spawn();
  throwsErrno(() => p.mapFile(exe, PAGE, { shared: true }), 'EACCES', /read-only/);
  const ro = p.mapFile(exe, PAGE, { shared: true, prot: PROT_READ });
  throwsErrno(() => p.mprotect(ro, PAGE, RW), 'EACCES');
  const a = p.mapFile(exe, PAGE);
  p.writeMem(a, bytes(1));
  assert.deepEqual(exe.pread(0, 1), bytes(0));
});

test('prot: read-only and PROT_NONE fault for the program; mprotect changes it', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(3n * PAGE, { prot: PROT_READ });
  assert.deepEqual(p.readMem(a, 1), bytes(0));
  assert.throws(() => p.writeMem(a, bytes(1)), (e: unknown) => e instanceof MemoryFault && e.signal === 'SIGSEGV' && /read-only/.test(e.message));
  p.mprotect(a + PAGE, PAGE, RW);
  p.writeMem(a + PAGE, bytes(1));
  p.mprotect(a + 2n * PAGE, PAGE, PROT_NONE);
  assert.throws(() => p.readMem(a + 2n * PAGE, 1), /PROT_NONE/);
  assert.equal(p.maps().length, 3, 'mprotect split the area in three');
  throwsErrno(() => p.mprotect(a, 4n * PAGE, RW), 'ENOMEM', /not mapped/);
  assert.throws(() => p.readMem(0x1000n, 1), (e: unknown) => e instanceof MemoryFault && /not mapped/.test(e.message));
});

test('MAP_FIXED replaces, MAP_FIXED_NOREPLACE refuses, hint is honoured when free', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(4n * PAGE);
  p.writeMem(a + PAGE, bytes(5));
  const b = p.mmap(a + PAGE, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED);
  assert.equal(b, a + PAGE);
  assert.deepEqual(p.readMem(b, 1), bytes(0), 'the new mapping replaced the old page');
  assert.equal(p.maps().length, 3);
  throwsErrno(() => p.mmap(a, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE), 'EEXIST');
  throwsErrno(() => p.mmap(a + 1n, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED), 'EINVAL');
  const hint = 0x10000000n;
  assert.equal(p.mmap(hint, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS), hint);
  assert.notEqual(p.mmap(hint, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS), hint, 'occupied hint: placed elsewhere');
});

test('mmap argument errors', () => {
  const m = new SimMachine();
  const p = m.spawn();
  throwsErrno(() => p.mmap(0n, 0n, RW, MAP_PRIVATE | MAP_ANONYMOUS), 'EINVAL');
  throwsErrno(() => p.mmap(0n, PAGE, RW, MAP_ANONYMOUS), 'EINVAL', /MAP_SHARED/);
  throwsErrno(() => p.mmap(0n, PAGE, RW, MAP_SHARED | MAP_PRIVATE | MAP_ANONYMOUS), 'EINVAL');
  throwsErrno(() => p.mmap(0n, PAGE, RW, MAP_SHARED), 'EBADF');
  const f = m.createShmemFile(PAGE);
  throwsErrno(() => p.mmap(0n, PAGE, RW, MAP_SHARED | MAP_HUGETLB, f), 'EINVAL', /hugetlbfs/);
  throwsErrno(() => p.mmap(0n, PAGE, RW, MAP_SHARED, f, 100n), 'EINVAL', /offset/);
  throwsErrno(() => p.munmap(1n, PAGE), 'EINVAL');
  throwsErrno(() => p.munmap(PAGE, 0n), 'EINVAL');
});

test('munmap: partial ranges split areas; unmapped pages fault; address reuse is top-down', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(8n * PAGE);
  p.writeMem(a, fill(8 * 4096, 3));
  assert.equal(m.memory.liveFrames, 8);
  p.munmap(a + 2n * PAGE, 2n * PAGE);
  assert.equal(m.memory.liveFrames, 6, 'unpinned frames are freed');
  assert.equal(p.maps().length, 2);
  assert.deepEqual(p.readMem(a + PAGE, 1), bytes(3));
  assert.deepEqual(p.readMem(a + 4n * PAGE, 1), bytes(3));
  assert.throws(() => p.readMem(a + 2n * PAGE, 1), MemoryFault);
  throwsErrno(() => p.mm.copyFromUser(a + 2n * PAGE, 1), 'EFAULT', /not mapped/);
  // The hole is the highest free range that fits two pages.
  assert.equal(p.mapAnonymous(2n * PAGE), a + 2n * PAGE);
  p.munmap(a, 8n * PAGE);
  assert.equal(m.memory.liveFrames, 0);
  assert.equal(p.maps().length, 0);
  p.munmap(a, 8n * PAGE); // unmapping nothing is fine
});

test('private anonymous COW across fork', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(2n * PAGE);
  p.writeMem(a, bytes(1));
  const c = p.fork();
  const shared = p.mm.residentFrame(a)!;
  assert.equal(c.mm.residentFrame(a), shared, 'after fork both map the same frame');
  assert.equal(shared.mapCount, 2);
  c.writeMem(a, bytes(2));
  assert.deepEqual(p.readMem(a, 1), bytes(1));
  assert.deepEqual(c.readMem(a, 1), bytes(2));
  assert.notEqual(c.mm.residentFrame(a), shared);
  assert.equal(p.mm.residentFrame(a), shared, 'the parent keeps its frame');
  // The parent's frame is now exclusive: writing reuses it.
  p.writeMem(a, bytes(9));
  assert.equal(p.mm.residentFrame(a), shared);
  // A page untouched before fork stays independent.
  p.writeMem(a + PAGE, bytes(4));
  assert.deepEqual(c.readMem(a + PAGE, 1), bytes(0));
});

test('fork copies the pinned anonymous pages eagerly; the parent keeps the pinned frame', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(2n * PAGE);
  p.writeMem(a, bytes(1));
  p.writeMem(a + PAGE, bytes(2));
  const [pinned] = p.mm.pinPages(a, 1, true);
  const c = p.fork();
  assert.notEqual(c.mm.residentFrame(a), pinned, 'child got a copy of the pinned page');
  assert.deepEqual(c.readMem(a, 1), bytes(1));
  assert.equal(c.mm.residentFrame(a + PAGE), p.mm.residentFrame(a + PAGE), 'unpinned page is COW-shared');
  // The parent writes: no COW, the device still sees the parent's data.
  p.writeMem(a, bytes(7));
  assert.equal(p.mm.residentFrame(a), pinned);
  assert.deepEqual(pinned!.read(0, 1), bytes(7));
  c.writeMem(a, bytes(8));
  assert.deepEqual(pinned!.read(0, 1), bytes(7));
  p.mm.unpinPages([pinned!]);
});

test('exit: the mm dies, its mappings go, pinned frames survive with their content', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(4n * PAGE);
  p.writeMem(a, fill(4 * 4096, 6));
  const frames = p.mm.pinPages(a, 2, true);
  p.exit();
  assert.equal(p.alive(), false);
  assert.equal(p.mm.alive(), false);
  assert.equal(m.process(p.pid), undefined);
  assert.equal(p.mm.mapCount, 0);
  assert.equal(m.memory.liveFrames, 2, 'only the pinned frames remain');
  for (const f of frames) {
    assert.equal(f.pinCount, 1);
    assert.deepEqual(f.read(4000, 2), bytes(6, 6));
    f.write(0, bytes(1));
  }
  throwsErrno(() => p.mm.pinPages(a, 1, false), 'EFAULT', /mm \d+ is gone/);
  throwsErrno(() => p.mm.copyFromUser(a, 1), 'EFAULT', /gone/);
  throwsErrno(() => p.mm.lookupPage(a, false), 'EFAULT', /gone/);
  assert.throws(() => p.readMem(a, 1), /exited/);
  p.mm.unpinPages(frames);
  assert.equal(m.memory.liveFrames, 0);
  p.exit(); // idempotent
});

test('exit of a child does not disturb the parent; shared memory lives on', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const s = p.mapAnonymous(PAGE, { shared: true });
  const a = p.mapAnonymous(PAGE);
  p.writeMem(a, bytes(1));
  const c = p.fork();
  c.writeMem(s, bytes(5));
  c.exit();
  assert.deepEqual(p.readMem(s, 1), bytes(5));
  // The COW frame is exclusive again: the parent's write does not copy.
  const f = p.mm.residentFrame(a);
  p.writeMem(a, bytes(2));
  assert.equal(p.mm.residentFrame(a), f);
});

test('anonymous shared memory is freed with its last mapping', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const s = p.mapAnonymous(2n * PAGE, { shared: true, populate: true });
  assert.equal(m.memory.liveFrames, 2);
  const c = p.fork();
  p.munmap(s, 2n * PAGE);
  assert.equal(m.memory.liveFrames, 2, 'the child still maps it');
  c.exit();
  assert.equal(m.memory.liveFrames, 0);
});

test('a named shmem file keeps its pages until unlinked', () => {
  const m = new SimMachine();
  const f = m.createShmemFile(PAGE);
  const p = m.spawn();
  const a = p.mapFile(f, PAGE, { shared: true });
  p.writeMem(a, bytes(3));
  p.munmap(a, PAGE);
  assert.deepEqual(f.pread(0, 1), bytes(3));
  assert.equal(m.memory.liveFrames, 1);
  f.unlink();
  assert.equal(m.memory.liveFrames, 0);
});

test('MAP_POPULATE faults everything in; writable private populate breaks COW', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(4n * PAGE, { populate: true });
  assert.equal(p.maps()[0]!.residentPages, 4);
  const ro = p.mapAnonymous(2n * PAGE, { populate: true, prot: PROT_READ });
  assert.equal(p.maps().find((x) => x.start === ro)!.residentPages, 2);
  const none = p.mapAnonymous(2n * PAGE, { populate: true, prot: PROT_NONE });
  assert.equal(p.maps().find((x) => x.start === none)!.residentPages, 0);
  assert.ok(a > ro);
});

test('file mapping beyond the end of the file: SIGBUS / EFAULT', () => {
  const m = new SimMachine();
  const f = m.createShmemFile(PAGE);
  const p = m.spawn();
  const a = p.mapFile(f, 2n * PAGE, { shared: true });
  p.writeMem(a, bytes(1));
  assert.throws(() => p.readMem(a + PAGE, 1), (e: unknown) => e instanceof MemoryFault && e.signal === 'SIGBUS');
  throwsErrno(() => p.mm.pinPages(a, 2, false), 'EFAULT', /beyond the end/);
});

test('hugetlb: 2 MiB aligned address and length, 512 contiguous compound frames', () => {
  const m = new SimMachine();
  const p = m.spawn();
  p.mapAnonymous(PAGE); // push the next address off 2 MiB alignment
  const h = p.mapAnonymous(HUGE + 1n, { hugetlb: true, shared: true });
  assert.equal(h % HUGE, 0n);
  const info = p.maps().find((x) => x.start === h)!;
  assert.equal(info.end - info.start, 2n * HUGE, 'length rounded up to 2 MiB');
  assert.equal(info.hugetlb, true);
  p.writeMem(h + 5000n, bytes(9));
  const frames = p.mm.pinPages(h, 1024, true);
  assert.equal(frames[0]!.pfn % 512, 0);
  for (let i = 0; i < 512; i++) {
    assert.equal(frames[i]!.pfn, frames[0]!.pfn + i);
    assert.equal(frames[i]!.compound, true);
  }
  assert.equal(frames[512]!.pfn % 512, 0);
  assert.deepEqual(frames[1]!.read(5000 - 4096, 1), bytes(9));
  p.mm.unpinPages(frames);
  throwsErrno(() => p.mmap(h + PAGE, HUGE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_FIXED), 'EINVAL', /aligned/);
  throwsErrno(() => p.munmap(h + PAGE, PAGE), 'EINVAL', /2 MiB/);
  p.munmap(h + HUGE, HUGE);
  assert.equal(p.maps().find((x) => x.start === h)!.end, h + HUGE);
});

test('hugetlb private: COW after fork copies the whole huge page', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const h = p.mapAnonymous(HUGE, { hugetlb: true });
  p.writeMem(h + 10n, bytes(1));
  const c = p.fork();
  const before = p.mm.lookupPage(h + HUGE - PAGE, false);
  c.writeMem(h + 10n, bytes(2));
  const after = c.mm.lookupPage(h + HUGE - PAGE, false);
  assert.notEqual(after, before, 'the last 4 KiB of the child huge page changed frame too');
  assert.equal(after.pfn % 512, 511);
  assert.deepEqual(p.readMem(h + 10n, 1), bytes(1));
  assert.deepEqual(c.readMem(h + 10n, 1), bytes(2));
});

test('hugetlbfs file shared between processes', () => {
  const m = new SimMachine();
  const f = m.createHugetlbFile(HUGE);
  const p = m.spawn();
  const q = m.spawn();
  const a = p.mapFile(f, HUGE, { shared: true, populate: true });
  const b = q.mapFile(f, HUGE, { shared: true });
  assert.equal(p.mm.lookupPage(a + 3n * PAGE, false), q.mm.lookupPage(b + 3n * PAGE, true));
  throwsErrno(() => p.mapFile(f, HUGE, { shared: true, offset: PAGE }), 'EINVAL', /offset/);
});

test('many small mappings place top-down without overlap', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const addrs: bigint[] = [];
  for (let i = 0; i < 2000; i++) addrs.push(p.mapAnonymous(PAGE * BigInt(1 + (i % 3))));
  for (let i = 1; i < addrs.length; i++) assert.ok(addrs[i]! < addrs[i - 1]!);
  // Free a few in the middle, the next fits into the highest hole.
  p.munmap(addrs[10]!, PAGE * 2n); // i=10 -> 2 pages
  p.munmap(addrs[1000]!, PAGE * 2n); // i=1000 -> 2 pages
  assert.equal(p.mapAnonymous(PAGE * 2n), addrs[10]);
  assert.equal(p.mapAnonymous(PAGE * 2n), addrs[1000]);
  assert.equal(p.mapAnonymous(PAGE), addrs[1999]! - PAGE);
});

test('perf: 100k mmaps stay fast', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const t0 = performance.now();
  for (let i = 0; i < 100_000; i++) p.mapAnonymous(PAGE);
  const ms = performance.now() - t0;
  assert.equal(p.mm.mapCount, 100_000);
  assert.ok(ms < 5000, `100k mmaps took ${ms} ms`);
});
