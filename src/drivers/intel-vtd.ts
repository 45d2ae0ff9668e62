/**
 * A small Intel VT-d model ("intel_iommu", drivers/iommu/intel in Linux 6.12), for what iommufd
 * sees of it: cache-coherency enforcement (snoop control), firmware RMRRs and the IOAPIC MSI range
 * as reserved regions, second-stage user domains with a gaw-sized aperture, and IOMMU_GET_HW_INFO.
 *
 * - `IntelIommuDriver` is `intel_iommu_ops`; `addUnit()` adds a DMAR unit (`struct intel_iommu`)
 *   with its capabilities: snoop control (ECAP.SC, which is IOMMU_CAP_ENFORCE_CACHE_COHERENCY),
 *   the address width (min of AGAW and CAP.MGAW) and second-stage superpages (CAP.SLLPS).
 * - `unit.addDevice()` puts a device behind a unit, alone in its group unless it joins one.
 * - User domains are second-stage (`paging_domain_alloc(dev, false)`): 4K plus 2M/1G per the
 *   unit's superpages, aperture [0, 2^gaw - 1] with force_aperture. `enforceCacheCoherency()` is
 *   `intel_iommu_enforce_cache_coherency`: once set it stays; it fails when an attached device's
 *   unit has no snoop control or (second stage) when the domain has ever been mapped. Afterwards
 *   every PTE carries the SNP bit.
 * - Attach (`intel_iommu_attach_device`) first blocks the device's translation, then checks the
 *   domain against the unit (`prepare_domain_attach_device`): EINVAL for a force-snooping domain
 *   on a unit without snoop control, or a domain wider than the unit. A failed attach therefore
 *   leaves the device blocked until the core puts it back on its old domain.
 * - Not modelled: nesting (NEST_PARENT and nested allocations are EOPNOTSUPP, as on hardware
 *   without ECAP.NEST), dirty tracking (no SSADS), first-stage tables, PASIDs, IOPF.
 */
import { fail, hex } from '../lib/error.js';
import { IommuDevice } from '../iommu/device.js';
import type { DomainGeometry, DomainOps, IommuDomain } from '../iommu/domain.js';
import type { HwInfo, IommuCap, IommuDriver } from '../iommu/driver.js';
import { IommuGroup } from '../iommu/group.js';
import { ResvType, type ResvRegion } from '../iommu/resv.js';
import type { UserData } from '../iommu/user-data.js';
import { IOMMU_HW_INFO_TYPE_INTEL_VTD, IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 } from '../uapi/iommufd.js';

/** The interrupt address range every device reports as a hardware MSI region. */
export const IOAPIC_RANGE_START = 0xfee0_0000n;
export const IOAPIC_RANGE_END = 0xfeef_ffffn;

const SZ_4K = 1n << 12n;
const SZ_2M = 1n << 21n;
const SZ_1G = 1n << 30n;

/** DMA_PTE_* bits kept in a leaf. */
export const DMA_PTE_READ = 1;
export const DMA_PTE_WRITE = 2;
export const DMA_PTE_SNP = 1 << 11;

/** Register bits the model reports (intel/iommu.h). */
const ECAP_SC = 1n << 7n;
const CAP_MGAW_SHIFT = 16n;
const CAP_SLLPS_SHIFT = 34n;

export interface IntelIommuUnitOptions {
  /** ECAP.SC: the unit can force snooping (IOMMU_CAP_ENFORCE_CACHE_COHERENCY). Default true. */
  snoopControl?: boolean;
  /** Guest address width of its domains (agaw capped by MGAW): 39, 48 or 57. Default 48. */
  addressWidth?: 39 | 48 | 57;
  /** Second-stage superpage levels (CAP.SLLPS): 0 = 4K only, 1 = +2M, 2 = +2M and 1G. Default 2. */
  superpages?: 0 | 1 | 2;
}

export interface IntelDeviceOptions {
  /** Join this group (of a device behind the same unit). */
  group?: IommuGroup;
  /** RMRRs that name this device: DIRECT, or DIRECT_RELAXABLE for USB/graphics devices. */
  rmrrs?: readonly { start: bigint; length: bigint; relaxable?: boolean }[];
}

export interface IntelIommuDriverOptions {
  /** Default domain of a group: a DMA paging domain or identity (iommu=pt). Default 'dma'. */
  defaultDomainType?: 'dma' | 'identity';
}

/** A DMAR unit (struct intel_iommu). */
export class IntelIommuUnit {
  readonly snoopControl: boolean;
  readonly addressWidth: number;
  readonly superpages: number;
  readonly devices: IntelDevice[] = [];

  constructor(
    readonly driver: IntelIommuDriver,
    readonly index: number,
    opts: IntelIommuUnitOptions = {},
  ) {
    this.snoopControl = opts.snoopControl ?? true;
    this.addressWidth = opts.addressWidth ?? 48;
    this.superpages = opts.superpages ?? 2;
    if (![39, 48, 57].includes(this.addressWidth)) fail('EINVAL', `address width ${this.addressWidth} is not 39, 48 or 57`);
  }

  get name(): string {
    return `dmar${this.index}`;
  }

  get capReg(): bigint {
    const sllps = this.superpages === 2 ? 3n : this.superpages === 1 ? 1n : 0n;
    return (BigInt(this.addressWidth - 1) << CAP_MGAW_SHIFT) | (sllps << CAP_SLLPS_SHIFT);
  }

  get ecapReg(): bigint {
    return this.snoopControl ? ECAP_SC : 0n;
  }

  /** A device behind this unit (PCI device probe): its own group unless `opts.group`. */
  addDevice(name: string, opts: IntelDeviceOptions = {}): IntelDevice {
    const dev = new IntelDevice(name, this, opts.rmrrs ?? []);
    if (opts.group) {
      const other = opts.group.devices[0];
      if (other instanceof IntelDevice && other.unit !== this)
        fail('EINVAL', `${opts.group.describe()} is behind ${other.unit.name}; ${dev.describe()} is behind ${this.name}`);
    }
    (opts.group ?? new IommuGroup()).addDevice(dev);
    this.devices.push(dev);
    return dev;
  }
}

/** A device behind a unit (its device_domain_info). */
export class IntelDevice extends IommuDevice {
  /** The domain the device translates through now (info->domain); null while blocked. */
  domain: IntelPagingDomain | null = null;
  identity = false;

  constructor(
    name: string,
    readonly unit: IntelIommuUnit,
    readonly rmrrs: readonly { start: bigint; length: bigint; relaxable?: boolean }[],
  ) {
    super(name, unit.driver);
  }

  override describe(): string {
    return `device ${this.name} (${this.unit.name})`;
  }
}

function infoOf(dev: IommuDevice): IntelDevice {
  if (!(dev instanceof IntelDevice)) fail('ENODEV', `${dev.describe()} is not behind an Intel IOMMU`);
  return dev;
}

/** device_block_translation: the device leaves whatever domain it was on. */
function blockTranslation(dev: IntelDevice): void {
  dev.domain?.devices.delete(dev);
  dev.domain = null;
  dev.identity = false;
}

/** The static blocked and identity domains. */
class IntelStaticDomain implements IommuDomain {
  readonly owner = 'intel-iommu';
  geometry: DomainGeometry = { apertureStart: 0n, apertureEnd: 0n, forceAperture: false };
  pgsizeBitmap = 0n;
  constructor(readonly kind: 'blocked' | 'identity') {}
  attachDev(dev: IommuDevice): void {
    const info = infoOf(dev);
    blockTranslation(info);
    info.identity = this.kind === 'identity';
  }
  free(): void {}
  describe(): string {
    return `intel-iommu ${this.kind} domain`;
  }
}

interface Leaf {
  paddr: bigint;
  size: bigint;
  prot: number;
}

/** A second-stage paging domain (struct dmar_domain, use_first_level = false). */
export class IntelPagingDomain implements IommuDomain {
  readonly kind = 'paging' as const;
  readonly owner = 'intel-iommu';
  geometry: DomainGeometry;
  pgsizeBitmap: bigint;
  readonly ops: DomainOps;
  readonly gaw: number;
  forceSnooping = false;
  /** Set by the first map and never cleared (dmar_domain->has_mappings). */
  hasMappings = false;
  readonly devices = new Set<IntelDevice>();
  msiCookie?: bigint;
  iopfHandler?: IommuDomain['iopfHandler'];
  /** Leaves by IOVA. */
  readonly leaves = new Map<bigint, Leaf>();

  constructor(
    unit: IntelIommuUnit,
    readonly id: number,
  ) {
    this.gaw = unit.addressWidth;
    this.pgsizeBitmap = SZ_4K | (unit.superpages >= 1 ? SZ_2M : 0n) | (unit.superpages >= 2 ? SZ_1G : 0n);
    this.geometry = { apertureStart: 0n, apertureEnd: (1n << BigInt(this.gaw)) - 1n, forceAperture: true };
    this.ops = {
      mapPages: (iova, paddr, pgsize, pgcount, prot, mapped) => this.mapPages(iova, paddr, pgsize, pgcount, prot, mapped),
      unmapPages: (iova, pgsize, pgcount) => this.unmapPages(iova, pgsize, pgcount),
      iovaToPhys: (iova) => {
        const leaf = this.leafAt(iova);
        return leaf ? leaf.leaf.paddr + (iova - leaf.iova) : undefined;
      },
    };
  }

  /** prepare_domain_attach_device after device_block_translation, then dmar_domain_attach_device. */
  attachDev(dev: IommuDevice): void {
    const info = infoOf(dev);
    blockTranslation(info);
    if (this.forceSnooping && !info.unit.snoopControl)
      fail('EINVAL', `${this.describe()} forces snooping, but ${info.unit.name} of ${info.describe()} has no snoop control (ECAP.SC)`);
    if (this.gaw > info.unit.addressWidth)
      fail('EINVAL', `${this.describe()} is ${this.gaw}-bit wide, ${info.unit.name} of ${info.describe()} only translates ${info.unit.addressWidth} bits`);
    info.domain = this;
    this.devices.add(info);
  }

  enforceCacheCoherency(): boolean {
    if (this.forceSnooping) return true;
    if ([...this.devices].some((d) => !d.unit.snoopControl) || this.hasMappings) return false;
    this.forceSnooping = true;
    return true;
  }

  private leafAt(iova: bigint): { iova: bigint; leaf: Leaf } | undefined {
    for (const size of [SZ_4K, SZ_2M, SZ_1G]) {
      const base = iova & ~(size - 1n);
      const leaf = this.leaves.get(base);
      if (leaf && leaf.size === size) return { iova: base, leaf };
    }
    return undefined;
  }

  private mapPages(iova: bigint, paddr: bigint, pgsize: bigint, pgcount: bigint, prot: number, mapped: { bytes: bigint }): void {
    if ((pgsize & this.pgsizeBitmap) !== pgsize || pgsize & (pgsize - 1n))
      fail('EINVAL', `page size ${hex(pgsize)} is not one of ${hex(this.pgsizeBitmap)}`);
    const end = iova + pgsize * pgcount;
    if (end > 1n << BigInt(this.gaw))
      fail('EFAULT', `${this.describe()}: the ${this.gaw}-bit width is not sufficient for the mapped address ${hex(end)}`);
    this.hasMappings = true;
    let pteProt = 0;
    if (prot & 1) pteProt |= DMA_PTE_READ;
    if (prot & 2) pteProt |= DMA_PTE_WRITE;
    if (this.forceSnooping) pteProt |= DMA_PTE_SNP;
    for (let i = 0n; i < pgcount; i++) {
      const at = iova + i * pgsize;
      for (let off = 0n; off < pgsize; off += SZ_4K)
        if (this.leafAt(at + off)) fail('EBUSY', `${this.describe()}: the PTE for IOVA ${hex(at + off)} is already set`);
      this.leaves.set(at, { paddr: paddr + i * pgsize, size: pgsize, prot: pteProt });
      mapped.bytes += pgsize;
    }
  }

  /** A superpage is removed whole even when less of it is asked for (intel_iommu_unmap). */
  private unmapPages(iova: bigint, pgsize: bigint, pgcount: bigint): bigint {
    let done = 0n;
    const want = pgsize * pgcount;
    while (done < want) {
      const hit = this.leafAt(iova + done);
      if (!hit) break;
      this.leaves.delete(hit.iova);
      done += hit.leaf.size - (iova + done - hit.iova);
    }
    return done;
  }

  /** The DMA_PTE_* bits of the leaf translating `iova` (for tests). */
  pteProt(iova: bigint): number | undefined {
    return this.leafAt(iova)?.leaf.prot;
  }

  free(): void {
    for (const d of this.devices) d.domain = null;
    this.devices.clear();
    this.leaves.clear();
  }

  describe(): string {
    return `intel-iommu domain ${this.id}${this.forceSnooping ? ' (force snooping)' : ''}`;
  }
}

/** intel_iommu_ops */
export class IntelIommuDriver implements IommuDriver {
  readonly name = 'intel-iommu';
  readonly units: IntelIommuUnit[] = [];
  readonly blocked = new IntelStaticDomain('blocked');
  readonly identity = new IntelStaticDomain('identity');
  readonly defaultDomainType: 'dma' | 'identity';
  private nextDomain = 1;

  constructor(opts: IntelIommuDriverOptions = {}) {
    this.defaultDomainType = opts.defaultDomainType ?? 'dma';
  }

  addUnit(opts: IntelIommuUnitOptions = {}): IntelIommuUnit {
    const unit = new IntelIommuUnit(this, this.units.length, opts);
    this.units.push(unit);
    return unit;
  }

  capable(dev: IommuDevice, cap: IommuCap): boolean {
    switch (cap) {
      case 'CACHE_COHERENCY':
      case 'DEFERRED_FLUSH':
        return true;
      case 'ENFORCE_CACHE_COHERENCY':
        return infoOf(dev).unit.snoopControl;
      default:
        return false;
    }
  }

  /** RMRRs of the device, then the IOAPIC range as a hardware MSI region. */
  getResvRegions(dev: IommuDevice): ResvRegion[] {
    const info = infoOf(dev);
    return [
      ...info.rmrrs.map((r) => ({ start: r.start, length: r.length, type: r.relaxable ? ResvType.DIRECT_RELAXABLE : ResvType.DIRECT })),
      { start: IOAPIC_RANGE_START, length: IOAPIC_RANGE_END - IOAPIC_RANGE_START + 1n, type: ResvType.MSI },
    ];
  }

  defaultDomain(dev: IommuDevice): IommuDomain {
    return this.defaultDomainType === 'identity' ? this.identity : this.domainAllocPaging(dev);
  }

  blockedDomain(): IommuDomain {
    return this.blocked;
  }

  domainAllocPaging(dev: IommuDevice): IntelPagingDomain {
    return new IntelPagingDomain(infoOf(dev).unit, this.nextDomain++);
  }

  /** intel_iommu_domain_alloc_user on a unit without ECAP.NEST and SSADS: plain paging domains only. */
  domainAllocUser(dev: IommuDevice, flags: number, parent: IommuDomain | null, data: UserData | null): IommuDomain {
    const info = infoOf(dev);
    if (parent) fail('EOPNOTSUPP', `${info.unit.name} does not support nested translation (no ECAP.NEST)`);
    if (flags) fail('EOPNOTSUPP', `${info.unit.name} supports neither nest parents (no ECAP.NEST) nor dirty tracking (no SSADS): flags ${hex(flags)}`);
    if (data) fail('EOPNOTSUPP', `a VT-d paging domain takes no driver data (data_type ${hex(data.type)})`);
    return this.domainAllocPaging(dev);
  }

  /** struct iommu_hw_info_vtd { u32 flags; u32 __reserved; u64 cap_reg; u64 ecap_reg; } */
  hwInfo(dev: IommuDevice): HwInfo {
    const unit = infoOf(dev).unit;
    const data = new Uint8Array(24);
    const v = new DataView(data.buffer);
    v.setUint32(0, IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17, true);
    v.setBigUint64(8, unit.capReg, true);
    v.setBigUint64(16, unit.ecapReg, true);
    return { type: IOMMU_HW_INFO_TYPE_INTEL_VTD, data };
  }
}
