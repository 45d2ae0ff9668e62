import type { IommuDriver } from './driver.js';
import type { IopfFault, IopfParam } from './fault.js';
import type { IommuGroup } from './group.js';

/**
 * A device behind an IOMMU (struct device with its dev_iommu). Created by a driver model (the
 * selftest's mock bus, a simulated PCI device); iommufd binds to it.
 */
export class IommuDevice {
  group!: IommuGroup;
  /** IOMMU_DEV_FEAT_IOPF enable count (iommufd's per-device iopf_enabled). */
  iopfEnabled = 0;
  /** Fault state while the driver has IOPF enabled (dev->iommu->fault_param); see fault.ts. */
  iopfParam: IopfParam | null = null;
  /** All devices of the group sit behind an interrupt-remapping IOMMU. */
  isolatedMsi = true;
  /**
   * Firmware asked for a 1:1 mapping (an IOMMU_RESV_DIRECT region, dev->iommu->require_direct):
   * learned when the device joins its group; the core then never puts it on a blocking domain.
   */
  requireDirect: { start: bigint; last: bigint } | null = null;
  /** Bypass the MSI isolation check at bind (the selftest's mock devices). */
  readonly isMock: boolean;

  constructor(
    readonly name: string,
    readonly driver: IommuDriver,
    opts: { isMock?: boolean; isolatedMsi?: boolean } = {},
  ) {
    this.isMock = opts.isMock ?? false;
    this.isolatedMsi = opts.isolatedMsi ?? true;
  }

  /** Faults without LAST_PAGE waiting for the rest of their group. */
  get partialFaults(): readonly IopfFault[] {
    return this.iopfParam?.partial ?? [];
  }

  describe(): string {
    return `device ${this.name}`;
  }
}
