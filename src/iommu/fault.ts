/** An I/O page fault as the IOMMU core hands it around (struct iommu_fault_page_request). */
export const IOMMU_FAULT_PAGE_REQUEST_PASID_VALID = 1 << 0;
export const IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE = 1 << 1;
export const IOMMU_FAULT_PAGE_REQUEST_PRIV_DATA = 1 << 2;
export const IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID = 1 << 3;

export interface IopfFault {
  flags: number;
  pasid: number;
  grpid: number;
  perm: number;
  addr: bigint;
}

/** Page response codes (enum iommu_page_response_code). */
export const IOMMU_PAGE_RESP_SUCCESS = 0;
export const IOMMU_PAGE_RESP_INVALID = 1;
export const IOMMU_PAGE_RESP_FAILURE = 2;
