import { fail, hex } from '../../lib/error.js';
import type { IommuDevice } from '../../iommu/device.js';
import type { DomainGeometry, IommuDomain } from '../../iommu/domain.js';
import type { UserDataArray } from '../../iommu/user-data.js';
import {
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  MOCK_NESTED_DOMAIN_IOTLB_ID_MAX,
  MOCK_NESTED_DOMAIN_IOTLB_NUM,
} from '../../uapi/iommufd-test.js';
import { mockAttach } from './attach.js';
import type { MockPagingDomain } from './paging-domain.js';

/** sizeof(struct iommu_hwpt_invalidate_selftest): u32 flags @0, u32 iotlb_id @4. */
export const MOCK_INVALIDATE_ENTRY_SIZE = 8;

/**
 * A mock nested domain (struct mock_iommu_domain_nested, type NESTED) on a mock paging parent.
 * Its "IOTLB" is four u32 slots that start at the user's `iotlb` value and that invalidation
 * zeroes, so the selftest can see which entries were processed.
 */
export class MockNestedDomain implements IommuDomain {
  readonly kind = 'nested' as const;
  readonly owner: string;
  geometry: DomainGeometry = { apertureStart: 0n, apertureEnd: 0n, forceAperture: false };
  pgsizeBitmap = 0n;
  iopfHandler?: IommuDomain['iopfHandler'];
  readonly iotlbs = new Uint32Array(MOCK_NESTED_DOMAIN_IOTLB_NUM);
  freed = false;

  constructor(
    readonly parent: MockPagingDomain,
    iotlb: number,
    readonly serial: number,
  ) {
    this.owner = parent.owner;
    this.iotlbs.fill(iotlb);
  }

  describe(): string {
    return `mock nested domain ${this.serial} (on ${this.parent.describe()})`;
  }

  attachDev(dev: IommuDevice): void {
    mockAttach(this, dev);
  }

  free(): void {
    this.freed = true;
  }

  /** MD_CHECK_IOTLB: the value of slot `id`, or undefined above MOCK_NESTED_DOMAIN_IOTLB_ID_MAX. */
  iotlb(id: number): number | undefined {
    return id >= 0 && id <= MOCK_NESTED_DOMAIN_IOTLB_ID_MAX ? this.iotlbs[id] : undefined;
  }

  /**
   * cache_invalidate_user: entries of struct iommu_hwpt_invalidate_selftest, in order, stopping at
   * the first bad one; `array.handled` is the number completed, also when it throws.
   */
  cacheInvalidateUser(array: UserDataArray): void {
    let processed = 0;
    try {
      if (array.type !== IOMMU_HWPT_INVALIDATE_DATA_SELFTEST)
        fail('EINVAL', `invalidation data_type ${hex(array.type)} is not IOMMU_HWPT_INVALIDATE_DATA_SELFTEST (${hex(IOMMU_HWPT_INVALIDATE_DATA_SELFTEST)})`);
      for (let i = 0; i < array.entryNum; i++) {
        const raw = array.entry(i, IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, MOCK_INVALIDATE_ENTRY_SIZE);
        const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
        const flags = view.getUint32(0, true);
        const iotlbId = view.getUint32(4, true);
        if (flags & ~IOMMU_TEST_INVALIDATE_FLAG_ALL)
          fail('EOPNOTSUPP', `invalidation entry ${i} has unknown flags ${hex(flags & ~IOMMU_TEST_INVALIDATE_FLAG_ALL)}`);
        if (iotlbId > MOCK_NESTED_DOMAIN_IOTLB_ID_MAX)
          fail('EINVAL', `invalidation entry ${i} names IOTLB ${iotlbId}, above the last one (${MOCK_NESTED_DOMAIN_IOTLB_ID_MAX})`);
        if (flags & IOMMU_TEST_INVALIDATE_FLAG_ALL) this.iotlbs.fill(0);
        else this.iotlbs[iotlbId] = 0;
        processed++;
      }
    } finally {
      array.handled = processed;
    }
  }
}
