import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_NONE, PROT_READ, PROT_WRITE, SimMachine } from '../../src/mm/index.js';
import { PAGE, bytes, fill, throwsErrno } from './helpers.js';

const RW = PROT_READ | PROT_WRITE;

test('pin: faults pages in, raises pinCount, all-or-nothing', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(4n * PAGE);
  const frames = p.mm.pinPages(a, 4, true);
  assert.equal(frames.length, 4);
  assert.ok(frames.every((f) => f.pinCount === 1 && !f.compound));
  assert.equal(new Set(frames.map((f) => f.pfn)).size, 4);
  // Pinning again returns the same frames and stacks the count.
  const again = p.mm.pinPages(a, 4, false);
  assert.deepEqual(again, frames);
  assert.equal(frames[0]!.pinCount, 2);
  p.mm.unpinPages(again);
  p.mm.unpinPages(frames);
  assert.ok(frames.every((f) => f.pinCount === 0));
  assert.throws(() => p.mm.unpinPages([frames[0]!]), /not pinned/);
  assert.deepEqual(p.mm.pinPages(a, 0, true), []);
  assert.throws(() => p.mm.pinPages(a + 1n, 1, true), RangeError);
});

test('pin: EFAULT on a hole, nothing pinned', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(4n * PAGE);
  p.munmap(a + 2n * PAGE, PAGE);
  const before = m.memory.liveFrames;
  const e = throwsErrno(() => p.mm.pinPages(a, 4, true), 'EFAULT');
  assert.match(e.explanation, new RegExp(`address 0x${(a + 2n * PAGE).toString(16)} is not mapped`));
  assert.equal(m.memory.liveFrames, before, 'no page was faulted in or pinned');
  throwsErrno(() => p.mm.pinPages(1n << 31n, 1, false), 'EFAULT', /not mapped/);
  throwsErrno(() => p.mm.pinPages(0xffff_ffff_ffff_f000n, 1, false), 'EFAULT', /not a user address/);
});

test('pin: EFAULT for PROT_NONE and for a write pin of read-only memory', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(2n * PAGE, { prot: PROT_READ });
  const e = throwsErrno(() => p.mm.pinPages(a, 2, true), 'EFAULT');
  assert.match(e.explanation, new RegExp(`page at 0x${a.toString(16)} is read-only and a write pin was requested`));
  const ro = p.mm.pinPages(a, 2, false);
  assert.equal(ro.length, 2);
  p.mm.unpinPages(ro);
  p.mprotect(a + PAGE, PAGE, PROT_NONE);
  throwsErrno(() => p.mm.pinPages(a, 2, false), 'EFAULT', /PROT_NONE/);
});

test('copy_from_user / copy_to_user', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(2n * PAGE);
  assert.deepEqual(p.mm.copyFromUser(a + 100n, 3), bytes(0, 0, 0), 'never-touched memory reads zeros');
  p.mm.copyToUser(a + PAGE - 1n, bytes(1, 2));
  assert.deepEqual(p.readMem(a + PAGE - 1n, 2), bytes(1, 2));
  assert.deepEqual(p.mm.copyFromUser(a, 0), new Uint8Array(0));
  throwsErrno(() => p.mm.copyFromUser(a + 2n * PAGE - 1n, 2), 'EFAULT', /is not mapped/);
  throwsErrno(() => p.mm.copyFromUser(0n, 8), 'EFAULT', /address 0x0 is not mapped/);
  p.mprotect(a, PAGE, PROT_READ);
  const e = throwsErrno(() => p.mm.copyToUser(a + PAGE - 1n, bytes(3, 4)), 'EFAULT', /read-only/);
  assert.match(e.explanation, /copy_to_user/);
  assert.deepEqual(p.readMem(a + PAGE - 1n, 2), bytes(1, 2), 'nothing written on EFAULT');
  p.mprotect(a, PAGE, PROT_NONE);
  throwsErrno(() => p.mm.copyFromUser(a, 1), 'EFAULT', /PROT_NONE/);
});

test('munmap of a pinned page: the frame, its content and its pin survive', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(2n * PAGE);
  p.writeMem(a, fill(4096, 0xab));
  const [f] = p.mm.pinPages(a, 1, true);
  p.munmap(a, 2n * PAGE);
  assert.equal(f!.pinCount, 1);
  assert.deepEqual(f!.read(0, 2), bytes(0xab, 0xab));
  f!.write(0, bytes(1)); // the "device" can still DMA into it
  assert.deepEqual(f!.read(0, 1), bytes(1));
  // A new mapping at the same address is new memory.
  p.mmap(a, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED);
  assert.deepEqual(p.readMem(a, 1), bytes(0));
  assert.notEqual(p.mm.lookupPage(a, false), f);
  p.mm.unpinPages([f!]);
  assert.equal(f!.live, false);
});

test('long-term read pin of a private file page unshares it (ro_unshare)', () => {
  const m = new SimMachine();
  const exe = m.createShmemFile(PAGE, { name: '/proc/self/exe', readOnly: true });
  exe.pwrite(0, bytes(0x7f, 0x45, 0x4c, 0x46));
  const p = m.spawn();
  const a = p.mapFile(exe, PAGE, { prot: PROT_READ });
  assert.equal(p.mm.lookupPage(a, false), exe.peek(0), 'a plain lookup maps the page cache page');
  const [pinned] = p.mm.pinPages(a, 1, false);
  assert.notEqual(pinned, exe.peek(0), 'the pin got a private copy');
  assert.deepEqual(pinned!.read(0, 4), bytes(0x7f, 0x45, 0x4c, 0x46));
  p.mprotect(a, PAGE, RW);
  p.writeMem(a, bytes(0));
  assert.equal(p.mm.lookupPage(a, false), pinned, 'the PFN does not change on the later write');
  assert.deepEqual(pinned!.read(0, 1), bytes(0));
  assert.deepEqual(exe.pread(0, 1), bytes(0x7f));
  p.mm.unpinPages([pinned!]);
});

test('long-term read pin of a COW-shared anonymous page after fork copies it', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(PAGE);
  p.writeMem(a, bytes(5));
  const c = p.fork();
  const sharedFrame = p.mm.lookupPage(a, false);
  assert.equal(c.mm.lookupPage(a, false), sharedFrame);
  const [pinned] = p.mm.pinPages(a, 1, false);
  assert.notEqual(pinned, sharedFrame);
  assert.deepEqual(pinned!.read(0, 1), bytes(5));
  // Writes by the child never reach the parent's pinned page, and vice versa.
  c.writeMem(a, bytes(6));
  assert.deepEqual(pinned!.read(0, 1), bytes(5));
  p.writeMem(a, bytes(7));
  assert.equal(p.mm.lookupPage(a, false), pinned);
  p.mm.unpinPages([pinned!]);
});

test('shared mappings pin the shared frame', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const s = p.mapAnonymous(2n * PAGE, { shared: true });
  const c = p.fork();
  const [f] = p.mm.pinPages(s, 1, false);
  c.writeMem(s, bytes(9));
  assert.deepEqual(f!.read(0, 1), bytes(9), 'the device sees what the child writes');
  assert.equal(c.mm.lookupPage(s, false), f);
  p.mm.unpinPages([f!]);
});

test('lookupPage: no pin, same EFAULT rules, write breaks COW', () => {
  const m = new SimMachine();
  const p = m.spawn();
  const a = p.mapAnonymous(PAGE, { prot: PROT_READ });
  const f = p.mm.lookupPage(a + 123n, false);
  assert.equal(f.pinCount, 0);
  throwsErrno(() => p.mm.lookupPage(a, true), 'EFAULT', /read-only/);
  throwsErrno(() => p.mm.lookupPage(a + PAGE, false), 'EFAULT', /not mapped/);
  const b = p.mapAnonymous(PAGE);
  p.writeMem(b, bytes(1));
  const c = p.fork();
  const before = c.mm.lookupPage(b, false);
  const after = c.mm.lookupPage(b, true);
  assert.notEqual(before, after);
});

test('a pinned frame outlives the address space; fork_gone style', () => {
  const m = new SimMachine();
  const parent = m.spawn();
  const buf = parent.mapAnonymous(4n * PAGE, { shared: true });
  const child = parent.fork();
  child.writeMem(buf, bytes(1, 2, 3));
  const frames = child.mm.pinPages(buf, 4, true);
  child.exit();
  // The shared buffer is still mapped by the parent and is the same frame.
  assert.equal(parent.mm.lookupPage(buf, false), frames[0]);
  parent.munmap(buf, 4n * PAGE);
  assert.deepEqual(frames[0]!.read(0, 3), bytes(1, 2, 3));
  child.mm.unpinPages(frames);
  assert.equal(m.memory.liveFrames, 0);
});
