/**
 * A simplified ARM SMMUv3 ("arm-smmu-v3" in Linux 6.12) for the seed story: what matters here is
 * the contrast with arm-smmu v1/v2. An SMMUv3 domain is finalised when it is allocated, because
 * 6.12 hands the driver the device at allocation time (domain_alloc_user / domain_alloc_paging(dev)),
 * so its aperture is known before iommufd links it to an IOAS. Devices report the same software
 * MSI window as arm-smmu. Stage-1 domains translate a 48-bit input space with 4K/2M/1G pages;
 * NEST_PARENT asks for a stage-2 domain. No dirty tracking and no nesting data are modelled.
 */
import { fail, hex } from '../lib/error.js';
import { IommuDevice } from '../iommu/device.js';
import { ALLOC_NEST_PARENT, type IommuCap, type IommuDriver } from '../iommu/driver.js';
import type { DomainGeometry, DomainOps, IommuDomain } from '../iommu/domain.js';
import { IommuGroup } from '../iommu/group.js';
import { ResvType, type ResvRegion } from '../iommu/resv.js';
import type { UserData } from '../iommu/user-data.js';
import { ARM_SMMU_MSI_IOVA_BASE, ARM_SMMU_MSI_IOVA_LENGTH, LpaePageTable } from './arm-smmu.js';

const SZ_4K = 0x1000n;
const SZ_2M = 0x20_0000n;
const SZ_1G = 0x4000_0000n;

export class SmmuV3Master extends IommuDevice {
  constructor(name: string, driver: ArmSmmuV3Driver) {
    super(name, driver);
  }
}

class StaticDomain implements IommuDomain {
  readonly kind = 'blocked' as const;
  readonly owner = 'arm-smmu-v3';
  geometry: DomainGeometry = { apertureStart: 0n, apertureEnd: 0n, forceAperture: false };
  pgsizeBitmap = 0n;
  attachDev(): void {}
  free(): void {}
  describe(): string {
    return 'arm-smmu-v3 blocked domain';
  }
}

/** A paging domain, finalised at allocation. */
export class SmmuV3Domain implements IommuDomain {
  readonly kind = 'paging' as const;
  readonly owner = 'arm-smmu-v3';
  geometry: DomainGeometry;
  pgsizeBitmap: bigint;
  readonly ops: DomainOps;
  private readonly table: LpaePageTable;

  constructor(
    readonly id: number,
    readonly stage: 's1' | 's2',
    readonly ias: number,
  ) {
    const t = LpaePageTable.create(stage === 's1' ? 'ARM_64_LPAE_S1' : 'ARM_64_LPAE_S2', {
      pgsizeBitmap: SZ_4K | SZ_2M | SZ_1G,
      ias,
      oas: 48,
    });
    if (!t) fail('ENOMEM', `could not build a page table with ias ${ias}`);
    this.table = t;
    this.pgsizeBitmap = t.pgsizeBitmap;
    this.geometry = { apertureStart: 0n, apertureEnd: (1n << BigInt(ias)) - 1n, forceAperture: true };
    this.ops = {
      mapPages: (iova, paddr, pgsize, pgcount, prot, mapped) => this.table.mapPages(iova, paddr, pgsize, pgcount, prot, mapped),
      unmapPages: (iova, pgsize, pgcount) => this.table.unmapPages(iova, pgsize, pgcount),
      iovaToPhys: (iova) => this.table.iovaToPhys(iova),
    };
  }

  attachDev(dev: IommuDevice): void {
    if (!(dev instanceof SmmuV3Master)) fail('EINVAL', `${dev.describe()} is not behind an SMMUv3`);
  }

  free(): void {}

  describe(): string {
    return `arm-smmu-v3 ${this.stage} domain ${this.id} (aperture [0x0, ${hex(this.geometry.apertureEnd)}])`;
  }
}

export class ArmSmmuV3Driver implements IommuDriver {
  readonly name = 'arm-smmu-v3';
  private readonly blocked = new StaticDomain();
  private nextDomain = 1;

  constructor(readonly ias = 48) {}

  addDevice(name: string, group?: IommuGroup): SmmuV3Master {
    const dev = new SmmuV3Master(name, this);
    (group ?? new IommuGroup()).addDevice(dev);
    return dev;
  }

  capable(_dev: IommuDevice, cap: IommuCap): boolean {
    return cap === 'CACHE_COHERENCY' || cap === 'NOEXEC';
  }

  getResvRegions(_dev: IommuDevice): ResvRegion[] {
    return [{ start: ARM_SMMU_MSI_IOVA_BASE, length: ARM_SMMU_MSI_IOVA_LENGTH, type: ResvType.SW_MSI }];
  }

  defaultDomain(): IommuDomain {
    return this.blocked;
  }

  blockedDomain(): IommuDomain {
    return this.blocked;
  }

  domainAllocPaging(_dev: IommuDevice): IommuDomain {
    return new SmmuV3Domain(this.nextDomain++, 's1', this.ias);
  }

  domainAllocUser(_dev: IommuDevice, flags: number, parent: IommuDomain | null, data: UserData | null): IommuDomain {
    if (parent || data) fail('EOPNOTSUPP', 'this SMMUv3 model has no nested (stage-1 over stage-2) support');
    if (flags & ~ALLOC_NEST_PARENT) fail('EOPNOTSUPP', `flags ${hex(flags)} are not supported by this SMMUv3 model`);
    return new SmmuV3Domain(this.nextDomain++, flags & ALLOC_NEST_PARENT ? 's2' : 's1', this.ias);
  }
}
