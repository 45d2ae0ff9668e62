/**
 * The mock IOMMU's hardware constants (enum in drivers/iommu/iommufd/selftest.c). The uAPI side
 * of the selftest (aperture, device flags, data types) lives in src/uapi/iommufd-test.ts.
 */

/** The mock's I/O page: half a CPU page, so iommufd must cope with sub-page IOMMU pages. */
export const MOCK_IO_PAGE_SIZE = 2048n;
/** The mock's huge page (512 I/O pages = 1 MiB), offered only to MOCK_FLAGS_DEVICE_HUGE_IOVA devices. */
export const MOCK_HUGE_PAGE_SIZE = 512n * MOCK_IO_PAGE_SIZE;

/**
 * Flag bits of a mock page-table entry. The kernel keeps them above the PFN in an xarray value
 * (bits 53, 54, 55); here they sit next to the PFN. START and LAST are the same bit: the first and
 * the last entry of each map call carry it, so an unmap can check that it starts and ends where a
 * map did.
 */
export const MOCK_PFN_START_IOVA = 1;
export const MOCK_PFN_LAST_IOVA = 1;
export const MOCK_PFN_DIRTY_IOVA = 2;
export const MOCK_PFN_HUGE_IOVA = 4;

/** The bit in a mock domain's flags that says dirty tracking is on. */
export const MOCK_DIRTY_TRACK = 1;
