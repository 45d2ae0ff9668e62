/**
 * The SMMUv3 model (src/drivers/arm-smmu-v3.ts) on its own: 6.12's arm_smmu_domain_alloc_user
 * takes no flag but DIRTY_TRACKING (NEST_PARENT is EOPNOTSUPP: SMMUv3 nest parents are 6.13), then
 * refuses a parent or driver data; no hw_info; domains are stage 1 and finalised at allocation.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ArmSmmuV3Driver, SmmuV3Domain } from '../../src/drivers/arm-smmu-v3.js';
import type { IommuDomain } from '../../src/iommu/domain.js';
import { ALLOC_DIRTY_TRACKING, ALLOC_NEST_PARENT, type IommuDriver } from '../../src/iommu/driver.js';
import { UserData } from '../../src/iommu/user-data.js';
import { fail } from '../../src/lib/error.js';
import { throwsErrno } from '../iommufd/helpers.js';

const NO_MEMORY = {
  copyFromUser(): Uint8Array {
    fail('EFAULT', 'the driver must not read the data');
  },
  copyToUser(): void {
    fail('EFAULT', 'the driver must not write user memory');
  },
};

describe('SMMUv3 model (6.12)', () => {
  test('domain_alloc_user: flags other than DIRTY_TRACKING first, then parent / driver data, all EOPNOTSUPP', () => {
    const drv = new ArmSmmuV3Driver();
    const dev = drv.addDevice('v0');
    const parent = drv.domainAllocUser(dev, 0, null, null);
    const data = new UserData(1, 0x1000n, 4, NO_MEMORY);
    const flagsCheck = /arm_smmu_domain_alloc_user accepts only IOMMU_HWPT_ALLOC_DIRTY_TRACKING \(0x2\)/;
    throwsErrno(() => drv.domainAllocUser(dev, ALLOC_NEST_PARENT, null, null), 'EOPNOTSUPP', /flags 0x1 include 0x1 \(IOMMU_HWPT_ALLOC_NEST_PARENT/);
    // The flag check comes before the dirty-tracking one and before the parent/data check.
    throwsErrno(() => drv.domainAllocUser(dev, ALLOC_NEST_PARENT | ALLOC_DIRTY_TRACKING, null, null), 'EOPNOTSUPP', /flags 0x3 include 0x1 /);
    throwsErrno(() => drv.domainAllocUser(dev, ALLOC_NEST_PARENT, parent, data), 'EOPNOTSUPP', flagsCheck);
    const unknown = throwsErrno(() => drv.domainAllocUser(dev, 0x8, null, null), 'EOPNOTSUPP', /flags 0x8 include 0x8$/);
    assert.doesNotMatch(unknown.explanation, /NEST_PARENT/);
    throwsErrno(() => drv.domainAllocUser(dev, 0, parent, null), 'EOPNOTSUPP', /refuses a parent domain/);
    throwsErrno(() => drv.domainAllocUser(dev, 0, null, data), 'EOPNOTSUPP', /refuses driver data \(data_type 0x1\)/);
    // DIRTY_TRACKING passes the driver's flag mask; this SMMU has no HTTU, which iommufd checks first.
    assert.equal(drv.capable(dev, 'DIRTY_TRACKING'), false);
    throwsErrno(() => drv.domainAllocUser(dev, ALLOC_DIRTY_TRACKING, null, null), 'EOPNOTSUPP', /ARM_SMMU_FEAT_HD/);
  });

  test('user and paging domains are stage 1, finalised at allocation: 48-bit aperture, 4K/2M/1G', () => {
    const drv = new ArmSmmuV3Driver();
    const dev = drv.addDevice('v0');
    for (const dom of [drv.domainAllocUser(dev, 0, null, null), drv.domainAllocPaging(dev)]) {
      assert.ok(dom instanceof SmmuV3Domain);
      assert.equal(dom.stage, 's1');
      assert.deepEqual(dom.geometry, { apertureStart: 0n, apertureEnd: (1n << 48n) - 1n, forceAperture: true });
      assert.equal(dom.pgsizeBitmap, 0x1000n | 0x20_0000n | 0x4000_0000n);
      assert.equal((dom as IommuDomain).dirtyOps, undefined);
    }
  });

  test('no hw_info: IOMMU_GET_HW_INFO type for SMMUv3 is 6.13', () => {
    const drv: IommuDriver = new ArmSmmuV3Driver();
    assert.equal(drv.hwInfo, undefined, '6.12 arm-smmu-v3 has no hw_info (IOMMU_HW_INFO_TYPE_ARM_SMMUV3 is 6.13)');
  });
});
