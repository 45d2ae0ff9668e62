import { fail, hex } from '../../lib/error.js';
import type { IommuDevice } from '../../iommu/device.js';
import { ALLOC_DIRTY_TRACKING, ALLOC_NEST_PARENT, type HwInfo, type IommuCap, type IommuDriver } from '../../iommu/driver.js';
import type { IommuDomain } from '../../iommu/domain.js';
import { iopfQueueAddDevice, iopfQueueRemoveDevice, type IopfFault } from '../../iommu/fault.js';
import { IommuGroup } from '../../iommu/group.js';
import type { ResvRegion } from '../../iommu/resv.js';
import type { UserData } from '../../iommu/user-data.js';
import {
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_HWPT_DATA_SELFTEST,
  MOCK_FLAGS_DEVICE_HUGE_IOVA,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
} from '../../uapi/iommufd-test.js';
import { MockBlockedDomain } from './blocked-domain.js';
import { MockDevice, mockDeviceFlags } from './device.js';
import { Ida } from './ida.js';
import { MockNestedDomain } from './nested-domain.js';
import { MockPagingDomain, type MockDomainHost } from './paging-domain.js';

/** sizeof(struct iommu_hwpt_selftest) and its mandatory part (offsetofend of `iotlb`). */
const HWPT_SELFTEST_SIZE = 4;

/** A page response the mock received (its page_response op does nothing else). */
export interface MockPageResponse {
  dev: IommuDevice;
  fault: IopfFault;
  code: number;
}

/**
 * Extensions that 6.12's mock does not have, for tests of paths no 6.12 driver reaches with the
 * selftest's devices (nesting together with reserved regions and an MSI cookie; fault queues over
 * groups of several devices). Only a driver constructed with them has them: the selftest's
 * instance (`mockIommu` in src/iommufd/selftest.ts) and `MockIommu` use none, so IOMMU_TEST_CMD
 * can never reach them.
 */
export interface MockIommuExtensions {
  /** Reserved regions every device reports (e.g. a SW_MSI window, as SMMUv3 would). 6.12's mock: none. */
  resvRegions?: readonly ResvRegion[];
  /** createMockDevice may put a device into an existing group of this driver. 6.12's mock: always a new group. */
  groupsOfSeveral?: boolean;
}

/**
 * The selftest's mock IOMMU (mock_ops in drivers/iommu/iommufd/selftest.c) together with its
 * platform bus: creates and deletes mock devices, each alone in a new iommu group.
 */
export class MockIommuDriver implements IommuDriver, MockDomainHost {
  readonly userPasidTable = true;
  /** The one static domain that is both default and blocking domain of every mock device. */
  readonly blocking: MockBlockedDomain;
  /** Kernel WARN_ONs the mock hit (the selftest should leave this empty). */
  readonly warnings: string[] = [];
  /** Every page response, in order. */
  readonly pageResponses: MockPageResponse[] = [];
  /** Devices with IOPF enabled (the mock's iopf queue). */
  readonly iopfDevices = new Set<IommuDevice>();
  /** Fault injection for map_pages (iommufd_should_fail); null = never fail. */
  failMap: (() => boolean) | null = null;
  private readonly deviceIds = new Ida();
  private nextDomainSerial = 1;

  constructor(
    readonly name = 'mock',
    readonly extensions: MockIommuExtensions = {},
  ) {
    this.blocking = new MockBlockedDomain(name);
  }

  warn(message: string): void {
    this.warnings.push(message);
  }

  shouldFailMap(): boolean {
    return this.failMap?.() ?? false;
  }

  // ---- the mock bus ------------------------------------------------------------------------

  /**
   * mock_dev_create: a new device, alone in a new iommu group (EINVAL for unknown flags). With the
   * `groupsOfSeveral` extension `opts.group` (a group of this driver's devices) may be joined.
   */
  createMockDevice(flags: number, opts: { group?: IommuGroup } = {}): MockDevice {
    const known = MOCK_FLAGS_DEVICE_NO_DIRTY | MOCK_FLAGS_DEVICE_HUGE_IOVA;
    if (flags & ~known) fail('EINVAL', `mock device flags ${hex(flags >>> 0)} include unknown bits ${hex((flags & ~known) >>> 0)}`);
    if (opts.group) {
      if (!this.extensions.groupsOfSeveral)
        fail('EINVAL', `the ${this.name} driver puts every device in a group of its own (no groupsOfSeveral extension)`);
      if (opts.group.devices.some((d) => d.driver !== this)) fail('EINVAL', `${opts.group.describe()} holds devices of another driver`);
    }
    const dev = new MockDevice(this, this.deviceIds.alloc(), flags);
    dev.iopfRwsem.lock();
    try {
      (opts.group ?? new IommuGroup()).addDevice(dev);
    } catch (e) {
      this.deviceIds.free(dev.id);
      throw e;
    } finally {
      dev.iopfRwsem.unlock();
    }
    return dev;
  }

  /** mock_dev_destroy: the device leaves its group (which goes with it) and frees its number. */
  destroyMockDevice(dev: MockDevice): void {
    if (!dev.alive) fail('EINVAL', `${dev.describe()} was already deleted`);
    const group = dev.group;
    if (group.devices.length === 1 && (group.ownerCount || group.handle))
      this.warn(`${dev.describe()} deleted while ${group.describe()} is still owned or attached`);
    if (dev.iopfParam) this.warn(`${dev.describe()} deleted with I/O page faults still enabled`);
    group.removeDevice(dev);
    this.deviceIds.free(dev.id);
    dev.alive = false;
  }

  /** iommufd_selftest_is_mock_dev */
  isMockDevice(dev: IommuDevice): dev is MockDevice {
    return dev instanceof MockDevice && dev.driver === this;
  }

  // ---- iommu_ops ---------------------------------------------------------------------------

  capable(dev: IommuDevice, cap: IommuCap): boolean {
    switch (cap) {
      case 'CACHE_COHERENCY':
        return true;
      case 'DIRTY_TRACKING':
        return !(mockDeviceFlags(dev) & MOCK_FLAGS_DEVICE_NO_DIRTY);
      default:
        return false;
    }
  }

  /** 6.12's mock reports no reserved regions (the resvRegions extension aside). */
  getResvRegions(_dev: IommuDevice): ResvRegion[] {
    return [...(this.extensions.resvRegions ?? [])];
  }

  defaultDomain(_dev: IommuDevice): IommuDomain {
    return this.blocking;
  }

  blockedDomain(_dev: IommuDevice): IommuDomain {
    return this.blocking;
  }

  hwInfo(_dev: IommuDevice): HwInfo {
    const data = new Uint8Array(8); // struct iommu_test_hw_info { u32 flags; u32 test_reg; }
    new DataView(data.buffer).setUint32(4, IOMMU_HW_INFO_SELFTEST_REGVAL, true);
    return { type: IOMMU_HW_INFO_TYPE_SELFTEST, data };
  }

  /** mock_domain_alloc_paging: 2048-byte pages, plus 1 MiB ones for HUGE_IOVA devices; no dirty ops. */
  domainAllocPaging(dev: IommuDevice): MockPagingDomain {
    return this.newPaging(dev, false);
  }

  private newPaging(dev: IommuDevice, dirty: boolean): MockPagingDomain {
    const huge = (mockDeviceFlags(dev) & MOCK_FLAGS_DEVICE_HUGE_IOVA) !== 0;
    return new MockPagingDomain(this, this.nextDomainSerial++, { huge, dirty });
  }

  /** mock_domain_alloc_user: a paging domain (parent null) or a nested one on a mock paging parent. */
  domainAllocUser(dev: IommuDevice, flags: number, parent: IommuDomain | null, data: UserData | null): IommuDomain {
    if (!parent) {
      const known = ALLOC_NEST_PARENT | ALLOC_DIRTY_TRACKING;
      if (flags & ~known) fail('EOPNOTSUPP', `the mock cannot allocate a paging domain with flags ${hex(flags >>> 0)}`);
      if (data) fail('EOPNOTSUPP', `the mock takes no driver data (data_type ${hex(data.type)}) for a paging domain`);
      const dirty = (flags & ALLOC_DIRTY_TRACKING) !== 0;
      if (dirty && mockDeviceFlags(dev) & MOCK_FLAGS_DEVICE_NO_DIRTY)
        fail('EOPNOTSUPP', `${dev.describe()} was created with MOCK_FLAGS_DEVICE_NO_DIRTY, so it cannot have a dirty-tracking domain`);
      return this.newPaging(dev, dirty);
    }
    if (!data) fail('EOPNOTSUPP', 'a mock nested domain needs IOMMU_HWPT_DATA_SELFTEST data');
    if (data.type !== IOMMU_HWPT_DATA_SELFTEST)
      fail('EOPNOTSUPP', `data_type ${hex(data.type)} is not IOMMU_HWPT_DATA_SELFTEST (${hex(IOMMU_HWPT_DATA_SELFTEST)})`);
    if (flags) fail('EOPNOTSUPP', `the mock cannot allocate a nested domain with flags ${hex(flags >>> 0)}`);
    if (!(parent instanceof MockPagingDomain))
      fail('EINVAL', `the parent ${parent.describe()} is not a mock paging domain`);
    const cfg = data.copyStruct(IOMMU_HWPT_DATA_SELFTEST, HWPT_SELFTEST_SIZE, HWPT_SELFTEST_SIZE);
    const iotlb = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength).getUint32(0, true);
    return new MockNestedDomain(parent, iotlb, this.nextDomainSerial++);
  }

  /** mock_dev_enable_feat(IOMMU_DEV_FEAT_IOPF): join the mock's iopf queue (EBUSY if already in). */
  enableIopf(dev: IommuDevice): void {
    iopfQueueAddDevice(dev);
    this.iopfDevices.add(dev);
  }

  /** mock_dev_disable_feat(IOMMU_DEV_FEAT_IOPF): leave the queue; unanswered groups get INVALID. */
  disableIopf(dev: IommuDevice): void {
    if (!iopfQueueRemoveDevice(dev)) this.warn(`${dev.describe()} disabled I/O page faults it never enabled`);
    this.iopfDevices.delete(dev);
  }

  /** mock_domain_page_response: nothing to tell hardware; recorded for tests and traces. */
  pageResponse(dev: IommuDevice, fault: IopfFault, code: number): void {
    this.pageResponses.push({ dev, fault: { ...fault }, code });
  }
}
