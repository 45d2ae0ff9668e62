import { IommuDevice } from '../../iommu/device.js';
import type { IommuDriver } from '../../iommu/driver.js';
import { Lock } from '../../lib/lockdep.js';
import { MOCK_FLAGS_DEVICE_HUGE_IOVA, MOCK_FLAGS_DEVICE_NO_DIRTY } from '../../uapi/iommufd-test.js';

/**
 * A device on the selftest's mock bus (struct mock_dev): named `iommufd_mock<id>`, alone in its own
 * iommu group, with the creation flags that shape what the mock IOMMU offers it.
 */
export class MockDevice extends IommuDevice {
  /** False once deleted (mock_dev_destroy). */
  alive = true;
  /**
   * mock_dev->iopf_rwsem: the selftest takes it for write around device_add and around every
   * attach, replace and detach of the device, and for read around TRIGGER_IOPF's fault report.
   */
  readonly iopfRwsem: Lock;

  constructor(
    driver: IommuDriver,
    /** The bus's device number (lowest free, reused after deletion). */
    readonly id: number,
    /** MOCK_FLAGS_DEVICE_* bits. */
    readonly flags: number,
  ) {
    super(`iommufd_mock${id}`, driver, { isMock: true });
    this.iopfRwsem = new Lock('mock_dev->iopf_rwsem', this.name);
  }

  get noDirty(): boolean {
    return (this.flags & MOCK_FLAGS_DEVICE_NO_DIRTY) !== 0;
  }

  get hugeIova(): boolean {
    return (this.flags & MOCK_FLAGS_DEVICE_HUGE_IOVA) !== 0;
  }
}

/** The flags of a device as the mock driver sees it (0 for a device that is not on the mock bus). */
export function mockDeviceFlags(dev: IommuDevice): number {
  return dev instanceof MockDevice ? dev.flags : 0;
}
