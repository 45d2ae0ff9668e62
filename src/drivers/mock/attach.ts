import { fail } from '../../lib/error.js';
import type { IommuDevice } from '../../iommu/device.js';
import type { IommuDomain } from '../../iommu/domain.js';
import { MockDevice } from './device.js';

/**
 * The attach op every mock domain shares (mock_domain_nop_attach): nothing to program, but a
 * domain that can track dirty pages refuses a device created without dirty tracking.
 */
export function mockAttach(domain: IommuDomain, dev: IommuDevice): void {
  if (domain.dirtyOps && dev instanceof MockDevice && dev.noDirty)
    fail('EINVAL', `${domain.describe()} tracks dirty pages, but ${dev.describe()} was created with MOCK_FLAGS_DEVICE_NO_DIRTY`);
}
