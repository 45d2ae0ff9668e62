/**
 * What an IOMMU driver provides (struct iommu_ops, reduced to what iommufd reaches). A new
 * simulated IOMMU implements this interface and needs no change in src/iommufd.
 */
import type { IommuDevice } from './device.js';
import type { IommuDomain } from './domain.js';
import type { IopfFault } from './fault.js';
import type { ResvRegion } from './resv.js';
import type { UserData } from './user-data.js';

/** Device capabilities iommufd asks about (enum iommu_cap). */
export type IommuCap =
  | 'CACHE_COHERENCY'
  | 'NOEXEC'
  | 'PRE_BOOT_PROTECTION'
  | 'ENFORCE_CACHE_COHERENCY'
  | 'DEFERRED_FLUSH'
  | 'DIRTY_TRACKING';

/** Hardware information for IOMMU_GET_HW_INFO. */
export interface HwInfo {
  /** enum iommu_hw_info_type (NONE = 0 is refused by iommufd with ENODEV). */
  type: number;
  data: Uint8Array;
}

/** Flags a driver sees in domain_alloc_user (the IOMMU_HWPT_ALLOC_* bits, FAULT_ID_VALID stripped). */
export const ALLOC_NEST_PARENT = 1;
export const ALLOC_DIRTY_TRACKING = 2;

export interface IommuDriver {
  readonly name: string;
  capable(dev: IommuDevice, cap: IommuCap): boolean;
  /** Reserved regions of a device (iommu_get_resv_regions). */
  getResvRegions(dev: IommuDevice): ResvRegion[];
  /** The domain a group returns to when user space lets go of it. */
  defaultDomain(dev: IommuDevice): IommuDomain;
  /** The domain that blocks all DMA, used while a group is owned but not attached. */
  blockedDomain(dev: IommuDevice): IommuDomain;
  /** iommu_paging_domain_alloc() for drivers without domainAllocUser. */
  domainAllocPaging?(dev: IommuDevice): IommuDomain;
  /** domain_alloc_user: paging (parent null) or nested (parent set) domains, with driver data. */
  domainAllocUser?(dev: IommuDevice, flags: number, parent: IommuDomain | null, data: UserData | null): IommuDomain;
  hwInfo?(dev: IommuDevice): HwInfo;
  /** IOMMU_DEV_FEAT_IOPF enable / disable. */
  enableIopf?(dev: IommuDevice): void;
  disableIopf?(dev: IommuDevice): void;
  /** The driver's end of a page response. */
  pageResponse?(dev: IommuDevice, fault: IopfFault, code: number): void;
  /** The driver manages PASID tables itself (faults without a PASID attachment fall back to the RID's nested domain). */
  readonly userPasidTable?: boolean;
}
