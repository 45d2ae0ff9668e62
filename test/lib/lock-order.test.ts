/**
 * The lock order the emulator learns while devices attach, replace and detach, HWPTs come and go
 * and faults are delivered (reference §5) contains the documented nestings and never one against
 * KERNEL_LOCK_ORDER (which the checker is seeded with, so such an acquisition would also throw).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createArmSmmu } from '../../src/drivers/arm-smmu.js';
import { ArmSmmuV3Driver } from '../../src/drivers/arm-smmu-v3.js';
import { iommufdTest } from '../../src/iommufd/test-cmd.js';
import { KERNEL_LOCK_ORDER, lockdep } from '../../src/lib/lockdep.js';
import { IOMMU_HWPT_ALLOC_NEST_PARENT } from '../../src/uapi/iommufd.js';
import { IOMMU_TEST_OP_TRIGGER_IOPF, IommuTestCmdTriggerIopf } from '../../src/uapi/iommufd-test.js';
import { checkInvariants, nestedFaultHwpt, world } from '../iommufd/helpers.js';

checkInvariants();

test('attach, replace, HWPT_ALLOC, detach and destroy learn the documented order and nothing against it', () => {
  const w = world();
  const { fd, p } = w;
  const ioas1 = fd.ioasAlloc();
  const ioas2 = fd.ioasAlloc();
  const va = p.mapAnonymous(8n * 4096n);
  fd.ioasMap({ ioasId: ioas1, userVa: va, length: 4n * 4096n, iova: 0x1000000n });
  fd.ioasMap({ ioasId: ioas2, userVa: va, length: 4n * 4096n, iova: 0x1000000n });
  const smmu = createArmSmmu();
  const a0 = smmu.addDevice('a0');
  const ids = [a0, smmu.addDevice('a1', { group: a0.group })].map((d) => fd.bindDevice(d));
  for (const id of ids) fd.attach(id, ioas1);
  const v3 = new ArmSmmuV3Driver().addDevice('v');
  const vid = fd.bindDevice(v3);
  const ioas3 = fd.ioasAlloc();
  const h1 = fd.attach(vid, ioas3);
  const h2 = fd.hwptAlloc({ devId: vid, ptId: ioas2 });
  fd.replace(vid, h2);
  assert.equal(fd.replace(vid, ioas3), h1, 'the first auto HWPT died; the new one takes its id, the lowest free');
  const m = fd.testMockDomain(ioas2);
  fd.testMockDomainReplace(m.stdevId, fd.ioasAlloc());
  fd.ioasUnmapAll(ioas1);
  fd.destroy(m.stdevId);
  for (const id of ids) fd.detach(id);
  fd.unbindDevice(vid);
  fd.destroy(h2);
  for (const id of ids) fd.unbindDevice(id);
  fd.close();

  const edges = new Set(lockdep.edges());
  for (const e of [
    'ioas->mutex -> igroup->lock',
    'ioas->mutex -> iopt->domains_rwsem',
    'igroup->lock -> iopt->iova_rwsem',
    'iopt->domains_rwsem -> iopt->iova_rwsem',
    'iopt->iova_rwsem -> pages->mutex',
    'igroup->lock -> group->mutex',
  ])
    assert.ok(edges.has(e), `expected the learned edge ${e}; learned: ${[...edges].join('; ')}`);
  for (const [a, b] of KERNEL_LOCK_ORDER) assert.ok(!edges.has(`${b} -> ${a}`), `learned ${b} -> ${a}, against the documented order`);
  // Replace takes no ioas->mutex inside the group lock (seed thread point 4).
  assert.ok(!edges.has('igroup->lock -> ioas->mutex'));
});

test('mock devices and fault queues: iopf_rwsem outermost, IOPF and fault locks inside the group lock', () => {
  const { fd, p } = world();
  const ioas = fd.ioasAlloc();
  const va = p.mapAnonymous(4n * 4096n);
  fd.ioasMap({ ioasId: ioas, userVa: va, length: 4n * 4096n, iova: 0x1000000n });
  const m = fd.testMockDomain(ioas);
  const parent = fd.hwptAlloc({ devId: m.idevId, ptId: ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
  const q = fd.faultQueueAlloc();
  const nested = nestedFaultHwpt(fd, m.idevId, parent, q.faultId);
  fd.testMockDomainReplace(m.stdevId, nested);
  fd.call(iommufdTest, IommuTestCmdTriggerIopf.make({ size: 72, op: IOMMU_TEST_OP_TRIGGER_IOPF, devId: m.idevId, grpid: 1, perm: 1 }));
  assert.equal(fd.faultRead(q.fd).length, 1);
  fd.testMockDomainReplace(m.stdevId, ioas);
  fd.destroy(m.stdevId);
  fd.closeFd(q.fd);
  fd.close();

  const edges = new Set(lockdep.edges());
  for (const e of [
    'mock_dev->iopf_rwsem -> ioas->mutex',
    'mock_dev->iopf_rwsem -> igroup->lock',
    'mock_dev->iopf_rwsem -> fault->lock',
    'igroup->lock -> idev->iopf_lock',
    'igroup->lock -> fault->mutex',
    'fault->mutex -> fault->lock',
  ])
    assert.ok(edges.has(e), `expected the learned edge ${e}; learned: ${[...edges].join('; ')}`);
  for (const [a, b] of KERNEL_LOCK_ORDER) assert.ok(!edges.has(`${b} -> ${a}`), `learned ${b} -> ${a}, against the documented order`);
});
