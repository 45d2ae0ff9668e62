/**
 * The selftest's mock IOMMU driver (drivers/iommu/iommufd/selftest.c, Linux 6.12): mock devices
 * on their own bus, 2048-byte-page paging domains with dirty tracking, nested domains with a
 * four-slot IOTLB, and I/O page fault plumbing. One concept per file under ./mock/.
 */
import { MockIommuDriver } from './mock/driver.js';

export * from './mock/constants.js';
export { MockDevice, mockDeviceFlags } from './mock/device.js';
export { MockBlockedDomain } from './mock/blocked-domain.js';
export { MockPagingDomain, type MockPte, type MockDomainHost } from './mock/paging-domain.js';
export { MockNestedDomain, MOCK_INVALIDATE_ENTRY_SIZE } from './mock/nested-domain.js';
export { MockIommuDriver, type MockIommuExtensions, type MockPageResponse } from './mock/driver.js';
export { triggerIopf } from './mock/iopf.js';

/** The shared mock IOMMU, as the kernel has one (its device and group numbers are global). */
export const MockIommu = new MockIommuDriver();
