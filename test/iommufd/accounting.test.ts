/**
 * Pinning and locked-memory accounting once a domain exists (reference §3.7, §3.10, §3.12, §7 items
 * 18, 22, 38, 39): pins happen when a domain needs the pages, once per page container, charged to
 * the mapping task in the context's mode; RLIMIT_MEMLOCK overruns are ENOMEM with nothing changed.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Iommufd } from '../../src/api/iommufd.js';
import { IommuError } from '../../src/lib/error.js';
import { getIoas } from '../../src/iommufd/ioas.js';
import { IOMMU_TEST_OP_MD_CHECK_MAP, IOMMU_TEST_OP_MD_CHECK_REFS, IommuTestCmdCheckMap, IommuTestCmdCheckRefs } from '../../src/uapi/iommufd-test.js';
import { iommufdTest } from '../../src/iommufd/test-cmd.js';
import { SimMachine } from '../../src/mm/machine.js';
import type { SimProcess } from '../../src/mm/process.js';
import { checkInvariants } from './helpers.js';
import { errnoOf } from '../assert-errno.js';

checkInvariants();

const KiB = 1024n;

function checkRefs(fd: Iommufd, uptr: bigint, length: bigint, refs: number): string {
  return errnoOf(() =>
    fd.call(iommufdTest, IommuTestCmdCheckRefs.make({ size: 72, op: IOMMU_TEST_OP_MD_CHECK_REFS, uptr, length, refs })),
  );
}

function checkMap(fd: Iommufd, hwptId: number, iova: bigint, uptr: bigint, length: bigint): string {
  return errnoOf(() =>
    fd.call(iommufdTest, IommuTestCmdCheckMap.make({ size: 72, op: IOMMU_TEST_OP_MD_CHECK_MAP, id: hwptId, iova, uptr, length })),
  );
}

function setup(opts: { rlimit?: bigint; caps?: ('CAP_IPC_LOCK' | 'CAP_SYS_RESOURCE')[] } = {}) {
  const m = new SimMachine();
  const p = m.spawn({ rlimitMemlock: opts.rlimit ?? 64n * KiB, capabilities: opts.caps ?? [] });
  const buf = p.mapAnonymous(256n * KiB, { shared: true });
  const fd = new Iommufd(p);
  return { m, p, buf, fd };
}

function charged(p: SimProcess) {
  return { user: p.user.lockedVm, mm: p.mm.lockedVm, pinned: p.mm.pinnedVm };
}

describe('USER accounting (the default)', () => {
  test('MAP into an IOAS with a domain pins and charges the pages to the uid', () => {
    const { p, buf, fd } = setup();
    const ioas = fd.ioasAlloc();
    const { hwptId } = fd.testMockDomain(ioas);
    const iova = fd.ioasMap({ ioasId: ioas, userVa: buf, length: 32n * KiB });
    assert.deepEqual(charged(p), { user: 8, mm: 0, pinned: 8 });
    assert.equal(checkRefs(fd, buf, 32n * KiB, 1), 'OK');
    assert.equal(checkRefs(fd, buf + 32n * KiB, 4n * KiB, 0), 'OK');
    assert.equal(checkMap(fd, hwptId, iova, buf, 32n * KiB), 'OK');
    fd.ioasUnmap(ioas, iova, 32n * KiB);
    assert.deepEqual(charged(p), { user: 0, mm: 0, pinned: 0 });
    assert.equal(checkRefs(fd, buf, 32n * KiB, 0), 'OK');
  });

  test('a MAP that would exceed RLIMIT_MEMLOCK is ENOMEM and leaves nothing behind', () => {
    const { p, buf, fd } = setup({ rlimit: 64n * KiB });
    const ioas = fd.ioasAlloc();
    fd.testMockDomain(ioas);
    fd.ioasMap({ ioasId: ioas, userVa: buf, length: 32n * KiB });
    let err: unknown;
    try {
      fd.ioasMap({ ioasId: ioas, userVa: buf + 64n * KiB, length: 64n * KiB });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof IommuError);
    assert.equal(err.errnoName, 'ENOMEM');
    assert.match(err.explanation, /16 pages/);
    assert.deepEqual(charged(p), { user: 8, mm: 0, pinned: 8 });
    assert.equal(getIoas(fd.ctx, ioas).iopt.areas.size, 1);
    assert.equal(checkRefs(fd, buf + 64n * KiB, 64n * KiB, 0), 'OK');
    // Exactly up to the limit is fine.
    fd.ioasMap({ ioasId: ioas, userVa: buf + 64n * KiB, length: 32n * KiB });
    assert.deepEqual(charged(p), { user: 16, mm: 0, pinned: 16 });
  });

  test('lazy pinning: a MAP without domains is charged when a domain attaches, and the attach fails over the limit', () => {
    const { p, buf, fd } = setup({ rlimit: 16n * KiB });
    const ioas = fd.ioasAlloc();
    fd.ioasMap({ ioasId: ioas, userVa: buf, length: 32n * KiB, iova: 0x100_0000n });
    assert.deepEqual(charged(p), { user: 0, mm: 0, pinned: 0 });
    assert.equal(errnoOf(() => fd.testMockDomain(ioas)), 'ENOMEM');
    assert.deepEqual(charged(p), { user: 0, mm: 0, pinned: 0 });
    // The failed attach left no device, HWPT or reservation behind.
    assert.equal(getIoas(fd.ctx, ioas).iopt.domains.length, 0);
    assert.equal(getIoas(fd.ctx, ioas).iopt.reserved.size, 0);
    p.setRlimitMemlock(32n * KiB);
    fd.testMockDomain(ioas);
    assert.deepEqual(charged(p), { user: 8, mm: 0, pinned: 8 });
  });

  test('two MAPs of one buffer pin twice; COPY shares the container and pins once', () => {
    const { p, buf, fd } = setup({ rlimit: 1024n * KiB });
    const a = fd.ioasAlloc();
    const b = fd.ioasAlloc();
    fd.testMockDomain(a);
    fd.testMockDomain(b);
    const iova = fd.ioasMap({ ioasId: a, userVa: buf, length: 16n * KiB });
    fd.ioasCopy({ dstIoasId: b, srcIoasId: a, srcIova: iova, length: 16n * KiB });
    assert.equal(checkRefs(fd, buf, 16n * KiB, 1), 'OK');
    assert.deepEqual(charged(p), { user: 4, mm: 0, pinned: 4 });
    fd.ioasMap({ ioasId: a, userVa: buf, length: 16n * KiB });
    assert.equal(checkRefs(fd, buf, 16n * KiB, 2), 'OK');
    assert.equal(checkRefs(fd, buf, 16n * KiB, 1), 'EIO');
    assert.deepEqual(charged(p), { user: 8, mm: 0, pinned: 8 });
  });

  test('the uid pays: a second process of the same uid shares locked_vm', () => {
    const { m, p, buf, fd } = setup({ rlimit: 32n * KiB });
    const ioas = fd.ioasAlloc();
    fd.testMockDomain(ioas);
    fd.ioasMap({ ioasId: ioas, userVa: buf, length: 24n * KiB });
    const q = m.spawn({ rlimitMemlock: 32n * KiB });
    const qbuf = q.mapAnonymous(64n * KiB, { shared: true });
    const fq = new Iommufd(q);
    const qioas = fq.ioasAlloc();
    fq.testMockDomain(qioas);
    assert.equal(errnoOf(() => fq.ioasMap({ ioasId: qioas, userVa: qbuf, length: 16n * KiB })), 'ENOMEM');
    fq.ioasMap({ ioasId: qioas, userVa: qbuf, length: 8n * KiB });
    assert.equal(p.user, q.user);
    assert.equal(p.user.lockedVm, 8);
    fq.close();
    fd.close();
    assert.equal(p.user.lockedVm, 0);
  });

  test('closing the context unpins and uncharges everything', () => {
    const { p, buf, fd } = setup({ rlimit: 1024n * KiB });
    const ioas = fd.ioasAlloc();
    fd.testMockDomain(ioas);
    fd.testMockDomain(ioas);
    fd.ioasMap({ ioasId: ioas, userVa: buf, length: 128n * KiB });
    assert.deepEqual(charged(p), { user: 32, mm: 0, pinned: 32 });
    fd.close();
    assert.deepEqual(charged(p), { user: 0, mm: 0, pinned: 0 });
    assert.equal(fd.ctx.objects.count, 0);
  });
});

describe('MM accounting and CAP_IPC_LOCK', () => {
  test('IOMMU_OPTION_RLIMIT_MODE 1 charges the mapping mm instead of the uid', () => {
    const { p, buf, fd } = setup({ rlimit: 64n * KiB, caps: ['CAP_SYS_RESOURCE'] });
    fd.setRlimitModeMm(true);
    assert.equal(fd.getRlimitModeMm(), true);
    const ioas = fd.ioasAlloc();
    fd.testMockDomain(ioas);
    fd.ioasMap({ ioasId: ioas, userVa: buf, length: 32n * KiB });
    assert.deepEqual(charged(p), { user: 0, mm: 8, pinned: 8 });
    assert.equal(errnoOf(() => fd.ioasMap({ ioasId: ioas, userVa: buf, length: 64n * KiB })), 'ENOMEM');
    // The mode is fixed per container: a later change of the context mode is refused anyway (EBUSY).
    assert.equal(errnoOf(() => fd.setRlimitModeMm(false)), 'EBUSY');
    fd.close();
    assert.deepEqual(charged(p), { user: 0, mm: 0, pinned: 0 });
  });

  test('a /dev/vfio/vfio context starts in mm mode', () => {
    const m = new SimMachine();
    const p = m.spawn();
    const fd = new Iommufd(p, { vfioContainer: true });
    assert.equal(fd.getRlimitModeMm(), true);
  });

  test('CAP_IPC_LOCK at MAP time exempts the container from RLIMIT_MEMLOCK, but pinned_vm still counts', () => {
    const { p, buf, fd } = setup({ rlimit: 4n * KiB, caps: ['CAP_IPC_LOCK'] });
    const ioas = fd.ioasAlloc();
    fd.testMockDomain(ioas);
    fd.ioasMap({ ioasId: ioas, userVa: buf, length: 64n * KiB });
    assert.deepEqual(charged(p), { user: 0, mm: 0, pinned: 16 });
    // Dropping the capability later does not change the existing container's mode.
    p.revoke('CAP_IPC_LOCK');
    fd.testMockDomain(ioas);
    assert.deepEqual(charged(p), { user: 0, mm: 0, pinned: 16 });
    assert.equal(errnoOf(() => fd.ioasMap({ ioasId: ioas, userVa: buf, length: 64n * KiB })), 'ENOMEM');
  });
});

describe('pinned pages outlive the mapping that produced them', () => {
  test('munmap of a pinned buffer: the domain keeps the old frames, a later MD_CHECK_MAP sees the new ones differ', () => {
    const { p, fd } = setup({ rlimit: 1024n * KiB });
    const priv = p.mapAnonymous(16n * KiB, { shared: false });
    p.writeMem(priv, Uint8Array.of(0xab));
    const ioas = fd.ioasAlloc();
    const { hwptId } = fd.testMockDomain(ioas);
    const iova = fd.ioasMap({ ioasId: ioas, userVa: priv, length: 16n * KiB });
    assert.equal(checkMap(fd, hwptId, iova, priv, 16n * KiB), 'OK');
    p.munmap(priv, 16n * KiB);
    // The address is gone: GUP of the user side faults.
    assert.equal(checkMap(fd, hwptId, iova, priv, 16n * KiB), 'EFAULT');
    // Map something new at the same address: a different frame, so the domain no longer matches.
    const again = p.mapAnonymous(16n * KiB, { shared: false, addr: priv, fixed: true });
    assert.equal(again, priv);
    assert.equal(checkMap(fd, hwptId, iova, priv, 16n * KiB), 'EINVAL');
    assert.equal(p.mm.pinnedVm, 4);
    fd.ioasUnmap(ioas, iova, 16n * KiB);
    assert.equal(p.mm.pinnedVm, 0);
  });

  test('mapping memory that is not there succeeds without a domain and fails (EFAULT) once a domain needs it', () => {
    const { buf, fd, p } = setup({ rlimit: 1024n * KiB });
    const ioas = fd.ioasAlloc();
    p.munmap(buf + 8n * KiB, 4n * KiB);
    fd.ioasMap({ ioasId: ioas, userVa: buf, length: 16n * KiB, iova: 0x100_0000n });
    assert.equal(errnoOf(() => fd.testMockDomain(ioas)), 'EFAULT');
    assert.deepEqual(charged(p), { user: 0, mm: 0, pinned: 0 });
    const ioas2 = fd.ioasAlloc();
    fd.testMockDomain(ioas2);
    assert.equal(errnoOf(() => fd.ioasMap({ ioasId: ioas2, userVa: buf, length: 16n * KiB })), 'EFAULT');
    assert.equal(getIoas(fd.ctx, ioas2).iopt.areas.size, 0);
    assert.deepEqual(charged(p), { user: 0, mm: 0, pinned: 0 });
  });
});
