/**
 * A simplified ARM SMMUv3 ("arm-smmu-v3" in Linux 6.12) for the seed story: what matters here is
 * the contrast with arm-smmu v1/v2. An SMMUv3 domain is finalised when it is allocated, because
 * 6.12 hands the driver the device at allocation time (domain_alloc_user / domain_alloc_paging(dev)),
 * so its aperture is known before iommufd links it to an IOAS. Devices report the same software
 * MSI window as arm-smmu. Stage-1 domains translate a 48-bit input space with 4K/2M/1G pages.
 *
 * domain_alloc_user is 6.12's arm_smmu_domain_alloc_user, in its order: any flag other than
 * IOMMU_HWPT_ALLOC_DIRTY_TRACKING (so IOMMU_HWPT_ALLOC_NEST_PARENT too) is EOPNOTSUPP, then a parent
 * or driver data is EOPNOTSUPP. 6.12's SMMUv3 has no nest parents, no IOMMU_HWPT_DATA_ARM_SMMUV3,
 * no vIOMMU and no IOMMU_GET_HW_INFO type (all 6.13); its user domains are always stage 1.
 * The modelled SMMU has no HTTU dirty-bit management (ARM_SMMU_FEAT_HD), so it is not
 * IOMMU_CAP_DIRTY_TRACKING capable and iommufd refuses DIRTY_TRACKING before the driver is asked.
 */
import { fail, hex } from '../lib/error.js';
import { IommuDevice } from '../iommu/device.js';
import { ALLOC_DIRTY_TRACKING, ALLOC_NEST_PARENT, type IommuCap, type IommuDriver } from '../iommu/driver.js';
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

  /** arm_smmu_domain_alloc_user (6.12): PAGING_FLAGS = DIRTY_TRACKING only, then parent/user_data, then finalise. */
  domainAllocUser(_dev: IommuDevice, flags: number, parent: IommuDomain | null, data: UserData | null): IommuDomain {
    const unsupported = flags & ~ALLOC_DIRTY_TRACKING;
    if (unsupported) {
      const named = unsupported & ALLOC_NEST_PARENT ? ' (IOMMU_HWPT_ALLOC_NEST_PARENT; SMMUv3 nest parents came in 6.13)' : '';
      fail(
        'EOPNOTSUPP',
        `arm_smmu_domain_alloc_user accepts only IOMMU_HWPT_ALLOC_DIRTY_TRACKING (${hex(ALLOC_DIRTY_TRACKING)}): ` +
          `flags ${hex(flags >>> 0)} include ${hex(unsupported >>> 0)}${named}`,
      );
    }
    if (parent || data)
      fail(
        'EOPNOTSUPP',
        `arm_smmu_domain_alloc_user refuses ${parent ? 'a parent domain' : `driver data (data_type ${hex(data!.type)})`}: ` +
          'SMMUv3 has no nested domains in 6.12',
      );
    // arm_smmu_domain_finalise would set IO_PGTABLE_QUIRK_ARM_HD and dirty ops for a stage-1
    // domain; only a caller that skips iommufd's IOMMU_CAP_DIRTY_TRACKING check gets here.
    if (flags & ALLOC_DIRTY_TRACKING)
      fail(
        'EOPNOTSUPP',
        `flags ${hex(flags >>> 0)} ask for IOMMU_HWPT_ALLOC_DIRTY_TRACKING (${hex(ALLOC_DIRTY_TRACKING)}), ` +
          'but this SMMU has no HTTU dirty-bit management (ARM_SMMU_FEAT_HD), so it is not IOMMU_CAP_DIRTY_TRACKING capable',
      );
    return new SmmuV3Domain(this.nextDomain++, 's1', this.ias);
  }
}
