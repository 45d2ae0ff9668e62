/**
 * The lock order the emulator learns while devices attach, replace and detach and HWPTs come and go
 * (reference §5) contains the documented nestings and never one against KERNEL_LOCK_ORDER.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createArmSmmu } from '../../src/drivers/arm-smmu.js';
import { ArmSmmuV3Driver } from '../../src/drivers/arm-smmu-v3.js';
import { KERNEL_LOCK_ORDER, lockdep } from '../../src/lib/lockdep.js';
import { checkInvariants, world } from '../iommufd/helpers.js';

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
