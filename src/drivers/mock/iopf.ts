import {
  IOMMU_NO_PASID,
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  reportDeviceFault,
  type FaultOutcome,
} from '../../iommu/fault.js';
import type { MockDevice } from './device.js';

/**
 * IOMMU_TEST_OP_TRIGGER_IOPF's driver half: the mock device raises one page request that is the
 * last of its group, PASID-tagged unless `pasid` is 0, and the core routes it.
 */
export function triggerIopf(
  dev: MockDevice,
  req: { pasid: number; grpid: number; perm: number; addr: bigint },
): FaultOutcome {
  let flags = IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE;
  if (req.pasid !== IOMMU_NO_PASID) flags |= IOMMU_FAULT_PAGE_REQUEST_PASID_VALID;
  return reportDeviceFault(dev, { flags, pasid: req.pasid, grpid: req.grpid, perm: req.perm, addr: req.addr });
}
