import type { IommuDevice } from '../../iommu/device.js';
import type { DomainGeometry, IommuDomain } from '../../iommu/domain.js';
import { mockAttach } from './attach.js';

/** The mock's one static BLOCKED domain: its devices' default domain and their blocking domain. */
export class MockBlockedDomain implements IommuDomain {
  readonly kind = 'blocked' as const;
  geometry: DomainGeometry = { apertureStart: 0n, apertureEnd: 0n, forceAperture: false };
  pgsizeBitmap = 0n;

  constructor(readonly owner: string) {}

  attachDev(dev: IommuDevice): void {
    mockAttach(this, dev);
  }

  /** Static: never freed. */
  free(): void {}

  describe(): string {
    return `the ${this.owner} blocking domain`;
  }
}
