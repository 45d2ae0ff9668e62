/**
 * Pinning in batches (pages.c pfn_reader_user_pin: one temp_kmalloc'd page array of at most 64 KiB
 * of pointers per pin_user_pages call): a huge MAP that runs into unmapped memory fails at the
 * first batch that cannot be pinned, without walking the rest of the range; results are those of
 * pinning everything first and charging after (EFAULT before ENOMEM, nothing left pinned).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ArmSmmuV3Driver } from '../../src/drivers/arm-smmu-v3.js';
import { PIN_BATCH_PAGES } from '../../src/iommufd/pages.js';
import { RLIM_INFINITY } from '../../src/mm/types.js';
import { PAGE, areasOf, checkInvariants, ioasOf, throwsErrno, world } from './helpers.js';

checkInvariants();

const BUF = 0x1000_0000n;

/** An IOAS behind an SMMUv3 domain (48-bit input addresses) and `pages` mapped pages at BUF. */
function setup(pages: number, rlimitMemlock?: bigint) {
  const w = world(rlimitMemlock === undefined ? {} : { rlimitMemlock });
  const ioas = w.fd.ioasAlloc();
  const dev = new ArmSmmuV3Driver(48).addDevice('v0');
  w.fd.attach(w.fd.bindDevice(dev), ioas);
  const domain = ioasOf(w.fd, ioas).iopt.domains[0]!;
  assert.equal(domain.geometry.apertureEnd, (1n << 48n) - 1n);
  w.p.mapAnonymous(BigInt(pages) * PAGE, { addr: BUF, fixed: true });
  const frames = () => Array.from({ length: pages }, (_, i) => w.p.mm.lookupPage(BUF + BigInt(i) * PAGE, false));
  return { ...w, ioas, domain, frames };
}

/** Record the page counts the container asks the mm to pin. */
function spyPins(p: { mm: { pinPages: (addr: bigint, n: number, w: boolean) => unknown } }): number[] {
  const calls: number[] = [];
  const orig = p.mm.pinPages.bind(p.mm);
  p.mm.pinPages = (addr, n, w) => {
    calls.push(n);
    return orig(addr, n, w);
  };
  return calls;
}

test('MAP of 2^42 bytes over 16 mapped pages on a 48-bit domain: EFAULT at the first batch, nothing left', { timeout: 20000 }, () => {
  const { fd, p, ioas, frames } = setup(16);
  const calls = spyPins(p);
  throwsErrno(() => fd.ioasMap({ ioasId: ioas, userVa: BUF, length: 1n << 42n, iova: 1n << 32n }), 'EFAULT', /0x10010000 is not mapped/);
  // One GUP-sized request, not 2^30 pages (which took seconds to even prepare).
  assert.deepEqual(calls, [PIN_BATCH_PAGES]);
  assert.deepEqual(areasOf(fd, ioas), []);
  assert.equal(p.mm.pinnedVm, 0);
  assert.equal(p.user.lockedVm, 0);
  for (const f of frames()) assert.equal(f.pinCount, 0);
  // Automatic IOVA too.
  throwsErrno(() => fd.ioasMap({ ioasId: ioas, userVa: BUF, length: 1n << 42n }), 'EFAULT');
  assert.equal(calls.length, 2);
});

test('EFAULT comes before the RLIMIT_MEMLOCK charge, as the kernel charges after pinning everything', { timeout: 20000 }, () => {
  const { fd, ioas, p } = setup(16, PAGE);
  throwsErrno(() => fd.ioasMap({ ioasId: ioas, userVa: BUF, length: 1n << 42n, iova: 1n << 32n }), 'EFAULT');
  throwsErrno(() => fd.ioasMap({ ioasId: ioas, userVa: BUF, length: 16n * PAGE, iova: 1n << 32n }), 'ENOMEM');
  assert.equal(p.user.lockedVm, 0);
  assert.equal(p.mm.pinnedVm, 0);
});

test('batches that pinned before the failing one are unpinned; a range that fits is pinned across batches and charged once', () => {
  const pages = 2 * PIN_BATCH_PAGES + 100;
  const { fd, ioas, p, domain, frames } = setup(pages, RLIM_INFINITY);
  const calls = spyPins(p);
  const iova = 1n << 32n;
  throwsErrno(() => fd.ioasMap({ ioasId: ioas, userVa: BUF, length: BigInt(pages + 100) * PAGE, iova }), 'EFAULT', /is not mapped/);
  assert.deepEqual(areasOf(fd, ioas), []);
  assert.equal(p.mm.pinnedVm, 0);
  assert.equal(p.user.lockedVm, 0);
  assert.deepEqual(calls, [PIN_BATCH_PAGES, PIN_BATCH_PAGES, 200]);
  assert.ok(frames().every((f) => f.pinCount === 0), 'every page of the first two batches was unpinned');
  assert.equal(domain.ops!.iovaToPhys(iova), undefined);
  assert.equal(fd.ioasMap({ ioasId: ioas, userVa: BUF, length: BigInt(pages) * PAGE, iova }), iova);
  assert.equal(p.mm.pinnedVm, pages);
  assert.equal(p.user.lockedVm, pages);
  const fs = frames();
  assert.ok(fs.every((f) => f.pinCount === 1));
  for (const i of [0, PIN_BATCH_PAGES - 1, PIN_BATCH_PAGES, 2 * PIN_BATCH_PAGES, pages - 1])
    assert.equal(domain.ops!.iovaToPhys(iova + BigInt(i) * PAGE), BigInt(fs[i]!.pfn) * PAGE, `page ${i}`);
  assert.equal(fd.ioasUnmapAll(ioas), BigInt(pages) * PAGE);
  assert.equal(p.mm.pinnedVm, 0);
});
