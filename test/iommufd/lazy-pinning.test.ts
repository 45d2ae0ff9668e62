/**
 * Lazy pinning and accounting (reference §2.6 step 7, §3.7, §3.12, §7.18, §7.38): with no domain
 * and no access, MAP and COPY pin nothing, charge nothing and do not look at user memory.
 * Oracle: map-args.txt "user_va NULL", "user_va unmapped"; map-auto.txt "1 TiB from b0 (memory not touched)".
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PROT_READ } from '../../src/mm/mman.js';
import { PAGE, checkInvariants, ioasOf, world } from './helpers.js';

checkInvariants();

test('MAP and COPY without domains: no pin, no charge, pages not even faulted in', () => {
  const { fd, p } = world({ rlimitMemlock: 0n });
  const id = fd.ioasAlloc();
  const b0 = p.mapAnonymous(0x100000n);
  fd.ioasMap({ ioasId: id, userVa: b0, length: 0x100000n, iova: 0x100000n });
  fd.ioasCopy({ dstIoasId: id, srcIoasId: id, srcIova: 0x100000n, length: 0x100000n, dstIova: 0x400000n });
  assert.equal(p.mm.pinnedVm, 0);
  assert.equal(p.mm.lockedVm, 0);
  assert.equal(p.user.lockedVm, 0);
  assert.equal(p.mm.residentFrame(b0), undefined);
  for (const a of ioasOf(fd, id).iopt.areas.all()) {
    assert.equal(a.pages.pinnedCount, 0);
    assert.equal(a.pages.npinned, 0);
  }
});

test('RLIMIT_MEMLOCK 0 does not stop a 1 TiB MAP without domains (map-auto.txt "1 TiB from b0 (memory not touched)")', () => {
  const { fd, p } = world({ rlimitMemlock: 0n });
  const id = fd.ioasAlloc();
  const b0 = p.mapAnonymous(PAGE);
  assert.equal(fd.ioasMap({ ioasId: id, userVa: b0, length: 1n << 40n }), 0x1000n);
  assert.equal(p.user.lockedVm, 0);
});

test('unmapped, NULL and read-only memory map fine, even WRITEABLE (map-args.txt "user_va NULL", "user_va unmapped")', () => {
  const { fd, p } = world();
  const id = fd.ioasAlloc();
  const gone = p.mapAnonymous(PAGE);
  p.munmap(gone, PAGE);
  const ro = p.mapAnonymous(PAGE, { prot: PROT_READ });
  assert.equal(fd.ioasMap({ ioasId: id, userVa: gone, length: PAGE, iova: 0x10000n }), 0x10000n);
  assert.equal(fd.ioasMap({ ioasId: id, userVa: 0n, length: PAGE, iova: 0x20000n }), 0x20000n);
  assert.equal(fd.ioasMap({ ioasId: id, userVa: ro, length: PAGE, iova: 0x30000n, writeable: true }), 0x30000n);
  assert.equal(fd.ioasUnmapAll(id), 3n * PAGE);
});

test('MAP after the mapping process exited (a forked child maps the parent\'s buffer, then exits)', () => {
  const { fd, p } = world();
  const id = fd.ioasAlloc();
  const b0 = p.mapAnonymous(PAGE);
  const child = p.fork();
  child.exit();
  assert.equal(fd.ioasMap({ ioasId: id, userVa: b0, length: PAGE, iova: 0x10000n }), 0x10000n);
  assert.equal(p.mm.pinnedVm, 0);
});

test('the page container covers the page-aligned user range, with the first byte\'s offset', () => {
  const { fd, p } = world();
  const id = fd.ioasAlloc();
  const b0 = p.mapAnonymous(4n * PAGE);
  fd.ioasMap({ ioasId: id, userVa: b0 + 0xfffn, length: 0x1002n, iova: 0x10000n });
  const area = [...ioasOf(fd, id).iopt.areas.all()][0]!;
  assert.equal(area.pages.uptr, b0);
  // Bytes [0xfff, 0x2000] of the range span pages 0, 1 and 2.
  assert.equal(area.pages.npages, 3n);
  assert.equal(area.startByte, 0xfffn);
  assert.equal(area.pageOffset, 0xfffn);
  assert.equal(area.pages.writable, true);
  fd.ioasMap({ ioasId: id, userVa: b0, length: PAGE, iova: 0x20000n, writeable: false });
  assert.equal([...ioasOf(fd, id).iopt.areas.all()][1]!.pages.writable, false);
});
