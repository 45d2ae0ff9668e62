/**
 * A simulated ARM SMMU v1/v2 ("arm-smmu", drivers/iommu/arm/arm-smmu in Linux 6.12).
 *
 * Its interest for iommufd is that its paging domains are created empty and only *finalised* on
 * the first attach: until a device is attached the driver does not know which SMMU instance, and
 * so which context bank, page-table format, page sizes and input address size, the domain will
 * use. An unfinalised domain has all-zero geometry and the page sizes every probed SMMU together
 * offers; map requests into it fail with ENODEV. This is the driver the seed discussion
 * (reference §0, §4.11) was about: iommufd's auto-domain attach finalises it before linking it to
 * the IOAS, every other path links it unfinalised and poisons the IOAS with a [1, U64_MAX]
 * reservation.
 *
 * Model:
 * - `ArmSmmuDriver` is the driver's global state (the kernel's single `arm_smmu_ops`): the union
 *   of the page sizes of every probed SMMU, the static identity and blocked domains, the default
 *   domain policy. `probe()` adds an SMMU instance.
 * - `ArmSmmu` is one SMMU (struct arm_smmu_device): supported stages and page-table formats,
 *   address sizes, context banks, coherent table walk. `addDevice()` puts a master behind it.
 * - `ArmSmmuMaster` is a device behind an SMMU (its arm_smmu_master_cfg), `ArmSmmuDomain` a
 *   domain, `LpaePageTable` an io-pgtable-arm style multi-level page table.
 */
import { fail, hex } from '../lib/error.js';
import { U64_MAX } from '../lib/u64.js';
import { IommuDevice } from '../iommu/device.js';
import {
  IOMMU_READ,
  IOMMU_WRITE,
  type DomainGeometry,
  type DomainKind,
  type DomainOps,
  type IommuDomain,
} from '../iommu/domain.js';
import type { IommuCap, IommuDriver } from '../iommu/driver.js';
import { IommuGroup } from '../iommu/group.js';
import { ResvType, type ResvRegion } from '../iommu/resv.js';

/** The software MSI window arm-smmu reports for every device (MSI_IOVA_BASE / MSI_IOVA_LENGTH). */
export const ARM_SMMU_MSI_IOVA_BASE = 0x800_0000n;
export const ARM_SMMU_MSI_IOVA_LENGTH = 0x10_0000n;

const SZ_4K = 1n << 12n;
const SZ_16K = 1n << 14n;
const SZ_64K = 1n << 16n;
const SZ_1M = 1n << 20n;
const SZ_2M = 1n << 21n;
const SZ_16M = 1n << 24n;
const SZ_32M = 1n << 25n;
const SZ_512M = 1n << 29n;
const SZ_1G = 1n << 30n;
const SZ_4T = 1n << 42n;

/** The kernel's PAGE_SIZE: io-pgtable prefers the granule that matches it. */
const CPU_PAGE_SIZE = SZ_4K;

/** Address sizes the ID registers can encode (arm_smmu_id_size_to_bits). */
const ADDRESS_SIZES: readonly number[] = [32, 36, 40, 42, 44, 48];

/**
 * Translation table formats an SMMU may support (ARM_SMMU_FEAT_FMT_*). `aarch32-s` (the ARMv7
 * short descriptor) is never chosen by a 64-bit kernel but still adds its page sizes to the
 * SMMU's bitmap, as in the kernel.
 */
export type ArmSmmuFormat = 'aarch64-4k' | 'aarch64-16k' | 'aarch64-64k' | 'aarch32-l' | 'aarch32-s';

export type ArmSmmuStage = 's1' | 's2';

export interface ArmSmmuOptions {
  /** Architecture version: v1 has no separate stage-1 input size (va = ipa) and always AArch32 LPAE. Default 2. */
  version?: 1 | 2;
  /** Stage-1 input address size in bits (ID2.UBS, v2 only): the domain's ias. Default 48. */
  vaBits?: number;
  /** Intermediate physical address size (ID2.IAS): stage-1 output, stage-2 input. Default 48. */
  ipaBits?: number;
  /** Physical address size (ID2.OAS): stage-2 output. Default 48. */
  paBits?: number;
  /** Supported translation stages. Default both; paging domains then use stage 1. */
  stages?: readonly ArmSmmuStage[];
  /** Supported page-table formats; they decide the SMMU's page sizes. Default ['aarch64-4k'] (4K|2M|1G), ['aarch32-l'] on v1. */
  formats?: readonly ArmSmmuFormat[];
  /** Number of context banks (ID1.NUMCB); each finalised domain takes one. Default 64. */
  contextBanks?: number;
  /** Of which stage-2-only (ID1.NUMS2CB); stage-1 domains allocate above them. Default 0. */
  s2OnlyContextBanks?: number;
  /** The table walker is cache coherent (ARM_SMMU_FEAT_COHERENT_WALK). Default true. */
  coherentWalk?: boolean;
}

export interface ArmSmmuDeviceOptions {
  /** Join this group (another master's `group`) instead of getting a group of its own. */
  group?: IommuGroup;
  /** The device itself is DMA coherent (DEV_DMA_COHERENT): CACHE_COHERENCY even without a coherent walk. */
  dmaCoherent?: boolean;
  /** MSIs go through an isolating controller (GICv3 ITS). Default true; false models e.g. GICv2m. */
  isolatedMsi?: boolean;
  /**
   * Firmware-described regions reported after the MSI window (IORT RMRs, device-tree
   * iommu-addresses: the part iommu_dma_get_resv_regions adds).
   */
  firmwareResvRegions?: readonly ResvRegion[];
}

export interface ArmSmmuDriverOptions {
  /** Default domain of a group: a DMA-API paging domain (arm64's default) or identity (iommu.passthrough=1). */
  defaultDomainType?: 'dma' | 'identity';
}

// ------------------------------------------------------------------------------------------------
// io-pgtable-arm

/** Page-table formats io-pgtable-arm builds for arm-smmu. */
export type LpaeFormat = 'ARM_64_LPAE_S1' | 'ARM_64_LPAE_S2' | 'ARM_32_LPAE_S1' | 'ARM_32_LPAE_S2';

export interface LpaeConfig {
  /** Page sizes offered; restricted to one granule's sizes by `LpaePageTable.create`. */
  pgsizeBitmap: bigint;
  ias: number;
  oas: number;
}

type Pte = LpaeTable | LpaeLeaf;
interface LpaeTable {
  readonly table: Map<number, Pte>;
}
interface LpaeLeaf {
  readonly paddr: bigint;
  readonly prot: number;
}

const MAX_LEVELS = 4;
/** Stage-2 may concatenate up to this many tables at the top level instead of adding a level. */
const S2_MAX_CONCAT_PAGES = 16;

function log2(v: bigint): number {
  return v.toString(2).length - 1;
}

/**
 * A translation table as io-pgtable-arm keeps it: levels of 2^bitsPerLevel entries, each an
 * empty slot, a pointer to a next-level table, or a leaf (page or block). Behaviour follows the
 * kernel's: a leaf is never overwritten (EEXIST), a block may replace a table (which is freed with
 * whatever it held), unmapping part of a block splits it, unmapping a size that matches a table
 * frees the table, intermediate tables are never freed otherwise, and an IOVA beyond ias is
 * refused (ERANGE on map, nothing on unmap).
 */
export class LpaePageTable {
  readonly pgsizeBitmap: bigint;
  readonly ias: number;
  readonly oas: number;
  private readonly bitsPerLevel: number;
  private readonly startLevel: number;
  private readonly pgdBits: number;
  private readonly ptesPerTable: number;
  private readonly root = new Map<number, Pte>();

  private constructor(
    readonly format: LpaeFormat,
    cfg: LpaeConfig,
  ) {
    this.pgsizeBitmap = cfg.pgsizeBitmap;
    this.ias = cfg.ias;
    this.oas = cfg.oas;
    const pgShift = log2(cfg.pgsizeBitmap & -cfg.pgsizeBitmap);
    this.bitsPerLevel = pgShift - 3;
    this.ptesPerTable = 1 << this.bitsPerLevel;
    const vaBits = cfg.ias - pgShift;
    const levels = Math.ceil(vaBits / this.bitsPerLevel);
    let startLevel = MAX_LEVELS - levels;
    let pgdBits = vaBits - this.bitsPerLevel * (levels - 1);
    if ((format === 'ARM_64_LPAE_S2' || format === 'ARM_32_LPAE_S2') && startLevel === 0 && 1 << pgdBits <= S2_MAX_CONCAT_PAGES) {
      pgdBits += this.bitsPerLevel;
      startLevel++;
    }
    this.startLevel = startLevel;
    this.pgdBits = pgdBits;
  }

  /**
   * alloc_io_pgtable_ops(): restrict the page sizes to one granule (the CPU page size if offered,
   * else the largest smaller one, else the smallest larger one) and cap the address sizes to what
   * that granule can translate. Returns null where the kernel's allocation fails.
   */
  static create(format: LpaeFormat, input: LpaeConfig): LpaePageTable | null {
    const cfg = { ...input };
    if (format === 'ARM_32_LPAE_S1' || format === 'ARM_32_LPAE_S2') {
      const maxIas = format === 'ARM_32_LPAE_S1' ? 32 : 40;
      if (cfg.ias > maxIas || cfg.oas > 40) return null;
      cfg.pgsizeBitmap &= SZ_4K | SZ_2M | SZ_1G;
    }
    const below = cfg.pgsizeBitmap & (CPU_PAGE_SIZE - 1n);
    const above = cfg.pgsizeBitmap & ~(CPU_PAGE_SIZE - 1n);
    let granule = 0n;
    if (cfg.pgsizeBitmap & CPU_PAGE_SIZE) granule = CPU_PAGE_SIZE;
    else if (below) granule = 1n << BigInt(log2(below));
    else if (above) granule = above & -above;
    let sizes = 0n;
    let maxAddrBits = 48;
    if (granule === SZ_4K) sizes = SZ_4K | SZ_2M | SZ_1G;
    else if (granule === SZ_16K) sizes = SZ_16K | SZ_32M;
    else if (granule === SZ_64K) {
      maxAddrBits = 52;
      sizes = SZ_64K | SZ_512M;
      if (cfg.oas > 48) sizes |= SZ_4T;
    }
    cfg.pgsizeBitmap &= sizes;
    cfg.ias = Math.min(cfg.ias, maxAddrBits);
    cfg.oas = Math.min(cfg.oas, maxAddrBits);
    if (!(cfg.pgsizeBitmap & (SZ_4K | SZ_16K | SZ_64K))) return null;
    if (cfg.ias > 52 || cfg.oas > 52) return null;
    return new LpaePageTable(format, cfg);
  }

  private shift(level: number): number {
    return (MAX_LEVELS - level) * this.bitsPerLevel + 3;
  }

  private blockSize(level: number): bigint {
    return 1n << BigInt(this.shift(level));
  }

  private index(iova: bigint, level: number): number {
    const bits = level === this.startLevel ? this.pgdBits : this.bitsPerLevel;
    return Number((iova >> BigInt(this.shift(level))) & ((1n << BigInt(bits)) - 1n));
  }

  private maxEntries(index: number): number {
    return this.ptesPerTable - (index & (this.ptesPerTable - 1));
  }

  private levelOf(pgsize: bigint): number {
    for (let l = this.startLevel; l < MAX_LEVELS; l++) if (this.blockSize(l) === pgsize) return l;
    return -1;
  }

  private outOfRange(iova: bigint): boolean {
    // The kernel shifts the IOVA as a signed value: bits above ias, or the sign, must be clear.
    return iova >> BigInt(this.ias) !== 0n;
  }

  private validSize(pgsize: bigint): boolean {
    return pgsize !== 0n && (pgsize & this.pgsizeBitmap) === pgsize && (pgsize & (pgsize - 1n)) === 0n;
  }

  /** map_pages: map up to `pgcount` pages, stopping at the end of the current table. */
  mapPages(iova: bigint, paddr: bigint, pgsize: bigint, pgcount: bigint, prot: number, mapped: { bytes: bigint }): void {
    if (!this.validSize(pgsize))
      fail('EINVAL', `page size ${hex(pgsize)} is not one of the page table's sizes ${hex(this.pgsizeBitmap)}`);
    if (this.outOfRange(iova) || paddr >> BigInt(this.oas) !== 0n)
      fail(
        'ERANGE',
        `iova ${hex(iova)} is beyond the ${this.ias}-bit input size or paddr ${hex(paddr)} beyond the ${this.oas}-bit output size`,
      );
    if (!(prot & (IOMMU_READ | IOMMU_WRITE)))
      fail('EINVAL', `prot ${hex(prot)} has neither IOMMU_READ nor IOMMU_WRITE: io-pgtable-arm refuses such a mapping`);
    const level = this.levelOf(pgsize);
    let table = this.root;
    for (let l = this.startLevel; l < level; l++) {
      const idx = this.index(iova, l);
      let pte = table.get(idx);
      if (!pte) {
        pte = { table: new Map() };
        table.set(idx, pte);
      } else if (!('table' in pte)) {
        fail('EEXIST', `iova ${hex(iova)} is already mapped by a ${hex(this.blockSize(l))} block; unmap it first`);
      }
      table = pte.table;
    }
    const idx = this.index(iova, level);
    const n = Math.min(Number(pgcount < 1n << 30n ? pgcount : 1n << 30n), this.maxEntries(idx));
    for (let i = 0; i < n; i++) {
      const pte = table.get(idx + i);
      if (pte && !('table' in pte))
        fail('EEXIST', `iova ${hex(iova + BigInt(i) * pgsize)} is already mapped; unmap it first`);
    }
    // A table where a leaf goes is freed together with anything it still maps.
    for (let i = 0; i < n; i++) table.set(idx + i, { paddr: paddr + BigInt(i) * pgsize, prot });
    mapped.bytes += BigInt(n) * pgsize;
  }

  /** unmap_pages: bytes unmapped, 0 when nothing is mapped at `iova`. */
  unmapPages(iova: bigint, pgsize: bigint, pgcount: bigint): bigint {
    if (!this.validSize(pgsize) || pgcount === 0n || this.outOfRange(iova)) return 0n;
    return this.unmapAt(this.root, this.startLevel, iova, pgsize, pgcount);
  }

  private unmapAt(start: Map<number, Pte>, startLevel: number, iova: bigint, size: bigint, pgcount: bigint): bigint {
    let table = start;
    for (let l = startLevel; l < MAX_LEVELS; l++) {
      const idx = this.index(iova, l);
      const pte = table.get(idx);
      if (!pte) return 0n;
      if (this.blockSize(l) === size) {
        const n = Math.min(Number(pgcount < 1n << 30n ? pgcount : 1n << 30n), this.maxEntries(idx));
        let i = 0;
        for (; i < n && table.has(idx + i); i++) table.delete(idx + i);
        return BigInt(i) * size;
      }
      if (!('table' in pte)) return this.splitBlock(table, idx, pte, l + 1, iova, size, pgcount);
      table = pte.table;
    }
    return 0n;
  }

  /** Replace a block by a table of the next level's blocks minus the part being unmapped. */
  private splitBlock(parent: Map<number, Pte>, parentIdx: number, blk: LpaeLeaf, level: number, iova: bigint, size: bigint, pgcount: bigint): bigint {
    if (level === MAX_LEVELS) return 0n;
    const splitSize = this.blockSize(level);
    let first = -1;
    let count = 0;
    if (size === splitSize) {
      first = this.index(iova, level);
      count = Math.min(Number(pgcount < 1n << 30n ? pgcount : 1n << 30n), this.maxEntries(first));
    }
    const table = new Map<number, Pte>();
    for (let i = 0; i < this.ptesPerTable; i++) {
      if (i >= first && i < first + count) continue;
      table.set(i, { paddr: blk.paddr + BigInt(i) * splitSize, prot: blk.prot });
    }
    parent.set(parentIdx, { table });
    if (first >= 0) return BigInt(count) * size;
    return this.unmapAt(table, level, iova, size, pgcount);
  }

  /** iova_to_phys: the translation of one IOVA, or undefined (the kernel's 0). */
  iovaToPhys(iova: bigint): bigint | undefined {
    let table = this.root;
    for (let l = this.startLevel; l < MAX_LEVELS; l++) {
      const pte = table.get(this.index(iova, l));
      if (!pte) return undefined;
      if (!('table' in pte)) return pte.paddr | (iova & (this.blockSize(l) - 1n));
      table = pte.table;
    }
    return undefined;
  }

  /** Every leaf, by IOVA (inside the ias-bit space): for tests, traces and pictures. */
  *leaves(): Generator<{ iova: bigint; size: bigint; paddr: bigint; prot: number }> {
    const walk = function* (
      self: LpaePageTable,
      table: Map<number, Pte>,
      level: number,
      base: bigint,
    ): Generator<{ iova: bigint; size: bigint; paddr: bigint; prot: number }> {
      const keys = [...table.keys()].sort((a, b) => a - b);
      for (const k of keys) {
        const pte = table.get(k)!;
        const iova = base + (BigInt(k) << BigInt(self.shift(level)));
        if ('table' in pte) yield* walk(self, pte.table, level + 1, iova);
        else yield { iova, size: self.blockSize(level), paddr: pte.paddr, prot: pte.prot };
      }
    };
    yield* walk(this, this.root, this.startLevel, 0n);
  }
}

// ------------------------------------------------------------------------------------------------
// The driver, SMMU instances, masters

type ContextFormat = 'AArch64' | 'AArch32-L';

/** Which stream-to-context entry a master's streams use (the S2CR type and its context bank). */
export interface StreamRoute {
  type: 'bypass' | 'fault' | 'translate';
  contextBank: number;
}

/** One SMMU (struct arm_smmu_device). */
export class ArmSmmu {
  readonly version: 1 | 2;
  readonly vaBits: number;
  readonly ipaBits: number;
  readonly paBits: number;
  readonly stages: ReadonlySet<ArmSmmuStage>;
  readonly formats: ReadonlySet<ArmSmmuFormat>;
  readonly coherentWalk: boolean;
  readonly contextBankCount: number;
  readonly s2OnlyContextBanks: number;
  /** Page sizes of all supported formats (smmu->pgsize_bitmap). */
  readonly pgsizeBitmap: bigint;
  /** Context banks in use, by index: the domain that holds it. */
  readonly contextBanks = new Map<number, ArmSmmuDomain>();
  readonly masters: ArmSmmuMaster[] = [];

  constructor(
    readonly driver: ArmSmmuDriver,
    readonly index: number,
    opts: ArmSmmuOptions = {},
  ) {
    this.version = opts.version ?? 2;
    this.ipaBits = checkBits('ipaBits', opts.ipaBits ?? 48);
    this.paBits = checkBits('paBits', opts.paBits ?? 48);
    this.vaBits = this.version === 1 ? this.ipaBits : checkBits('vaBits', opts.vaBits ?? 48);
    this.stages = new Set<ArmSmmuStage>(opts.stages ?? ['s1', 's2']);
    if (!this.stages.size) fail('ENODEV', `SMMU ${index} offers no translation stage`);
    const formats = new Set<ArmSmmuFormat>(opts.formats ?? (this.version === 1 ? ['aarch32-l'] : ['aarch64-4k']));
    if (this.version === 1) {
      if (formats.has('aarch64-4k') || formats.has('aarch64-16k'))
        fail('EINVAL', `an SMMUv1 cannot use the AArch64 4K or 16K granule formats`);
      formats.add('aarch32-l');
    }
    if (formats.has('aarch32-s') && !formats.has('aarch32-l'))
      fail('EINVAL', 'the AArch32 short-descriptor format is only offered together with AArch32 LPAE');
    this.formats = formats;
    this.coherentWalk = opts.coherentWalk ?? true;
    this.contextBankCount = opts.contextBanks ?? 64;
    this.s2OnlyContextBanks = opts.s2OnlyContextBanks ?? 0;
    if (this.contextBankCount < 1 || this.contextBankCount > 128 || this.s2OnlyContextBanks > this.contextBankCount)
      fail('EINVAL', `impossible context bank counts ${this.contextBankCount} (${this.s2OnlyContextBanks} stage-2 only)`);
    let sizes = 0n;
    if (formats.has('aarch32-s')) sizes |= SZ_4K | SZ_64K | SZ_1M | SZ_16M;
    if (formats.has('aarch32-l') || formats.has('aarch64-4k')) sizes |= SZ_4K | SZ_2M | SZ_1G;
    if (formats.has('aarch64-16k')) sizes |= SZ_16K | SZ_32M;
    if (formats.has('aarch64-64k')) sizes |= SZ_64K | SZ_512M;
    this.pgsizeBitmap = sizes;
  }

  get name(): string {
    return `smmu${this.index}`;
  }

  /**
   * A device behind this SMMU, added to the IOMMU core: it gets its own group (the kernel's
   * generic/PCI device group) unless `opts.group` names a group of this SMMU to share.
   */
  addDevice(name: string, opts: ArmSmmuDeviceOptions = {}): ArmSmmuMaster {
    const dev = new ArmSmmuMaster(name, this, opts);
    let group = opts.group;
    if (group) {
      const other = group.devices[0];
      if (other instanceof ArmSmmuMaster && other.smmu !== this)
        fail('EINVAL', `${group.describe()} is behind ${other.smmu.name}; ${dev.describe()} is behind ${this.name}`);
    } else {
      group = new IommuGroup();
    }
    group.addDevice(dev);
    this.masters.push(dev);
    return dev;
  }

  allocContextBank(domain: ArmSmmuDomain, start: number): number {
    for (let i = start; i < this.contextBankCount; i++) {
      if (!this.contextBanks.has(i)) {
        this.contextBanks.set(i, domain);
        return i;
      }
    }
    fail('ENOSPC', `${this.name} has no free context bank: all ${this.contextBankCount - start} from bank ${start} are in use`);
  }

  freeContextBank(index: number): void {
    this.contextBanks.delete(index);
  }

  describe(): string {
    return `ARM SMMUv${this.version} ${this.name}`;
  }
}

function checkBits(what: string, bits: number): number {
  if (!ADDRESS_SIZES.includes(bits))
    fail('EINVAL', `${what} ${bits} is not an address size an SMMU can report (${ADDRESS_SIZES.join(', ')})`);
  return bits;
}

/** A device behind an SMMU: the core's device plus the driver's per-master state. */
export class ArmSmmuMaster extends IommuDevice {
  readonly dmaCoherent: boolean;
  readonly firmwareResvRegions: readonly ResvRegion[];
  /** Where the master's streams currently go. */
  route: StreamRoute = { type: 'fault', contextBank: 0 };

  constructor(
    name: string,
    readonly smmu: ArmSmmu,
    opts: ArmSmmuDeviceOptions = {},
  ) {
    super(name, smmu.driver, { isolatedMsi: opts.isolatedMsi ?? true });
    this.dmaCoherent = opts.dmaCoherent ?? false;
    this.firmwareResvRegions = opts.firmwareResvRegions ?? [];
  }

  override describe(): string {
    return `device ${this.name} (${this.smmu.name})`;
  }
}

function masterOf(dev: IommuDevice, domain: string): ArmSmmuMaster {
  if (!(dev instanceof ArmSmmuMaster))
    fail('ENODEV', `${dev.describe()} has no arm-smmu master configuration, so ${domain} cannot be attached to it`);
  return dev;
}

/** The static identity and blocked domains: they only steer a master's streams. */
class ArmSmmuStaticDomain implements IommuDomain {
  readonly owner = 'arm-smmu';
  geometry: DomainGeometry = { apertureStart: 0n, apertureEnd: 0n, forceAperture: false };
  pgsizeBitmap = 0n;

  constructor(readonly kind: Extract<DomainKind, 'identity' | 'blocked'>) {}

  attachDev(dev: IommuDevice): void {
    masterOf(dev, this.describe()).route = { type: this.kind === 'identity' ? 'bypass' : 'fault', contextBank: 0 };
  }

  free(): void {}

  describe(): string {
    return `arm-smmu ${this.kind} domain`;
  }
}

/** arm_smmu_ops: the driver's global state, shared by every SMMU it probes. */
export class ArmSmmuDriver implements IommuDriver {
  readonly name = 'arm-smmu';
  readonly smmus: ArmSmmu[] = [];
  /**
   * Page sizes a new domain starts with (ops->pgsize_bitmap): all ones before the first probe,
   * then the first SMMU's sizes, then the union with every later SMMU's.
   */
  pgsizeBitmap = U64_MAX;
  readonly identityDomain = new ArmSmmuStaticDomain('identity');
  readonly blockingDomain = new ArmSmmuStaticDomain('blocked');
  readonly defaultDomainType: 'dma' | 'identity';
  private nextDomainId = 1;

  constructor(opts: ArmSmmuDriverOptions = {}) {
    this.defaultDomainType = opts.defaultDomainType ?? 'dma';
  }

  /** Probe another SMMU instance. */
  probe(opts: ArmSmmuOptions = {}): ArmSmmu {
    const smmu = new ArmSmmu(this, this.smmus.length, opts);
    this.pgsizeBitmap = this.smmus.length === 0 ? smmu.pgsizeBitmap : this.pgsizeBitmap | smmu.pgsizeBitmap;
    this.smmus.push(smmu);
    return smmu;
  }

  capable(dev: IommuDevice, cap: IommuCap): boolean {
    const master = masterOf(dev, 'a capability query');
    switch (cap) {
      case 'CACHE_COHERENCY':
        return master.smmu.coherentWalk || master.dmaCoherent;
      case 'NOEXEC':
      case 'DEFERRED_FLUSH':
        return true;
      default:
        return false;
    }
  }

  getResvRegions(dev: IommuDevice): ResvRegion[] {
    const master = masterOf(dev, 'reserved regions');
    return [
      { start: ARM_SMMU_MSI_IOVA_BASE, length: ARM_SMMU_MSI_IOVA_LENGTH, type: ResvType.SW_MSI },
      ...master.firmwareResvRegions,
    ];
  }

  defaultDomain(dev: IommuDevice): IommuDomain {
    if (this.defaultDomainType === 'identity') return this.identityDomain;
    return this.domainAllocPaging(dev);
  }

  blockedDomain(_dev: IommuDevice): IommuDomain {
    return this.blockingDomain;
  }

  /** The device is not looked at: the domain stays unfinalised until its first attach. */
  domainAllocPaging(_dev: IommuDevice): ArmSmmuDomain {
    return new ArmSmmuDomain(this, this.nextDomainId++);
  }
}

/** A paging domain (struct arm_smmu_domain). */
export class ArmSmmuDomain implements IommuDomain {
  readonly kind = 'paging' as const;
  readonly owner = 'arm-smmu';
  geometry: DomainGeometry = { apertureStart: 0n, apertureEnd: 0n, forceAperture: false };
  pgsizeBitmap: bigint;
  /** Set by the first attach: the SMMU the domain is bound to. */
  smmu: ArmSmmu | null = null;
  stage: ArmSmmuStage | null = null;
  contextFormat: ContextFormat | null = null;
  contextBank = -1;
  pgtable: LpaePageTable | null = null;
  readonly ops: DomainOps;

  constructor(
    readonly driver: ArmSmmuDriver,
    readonly id: number,
  ) {
    this.pgsizeBitmap = driver.pgsizeBitmap;
    this.ops = {
      mapPages: (iova, paddr, pgsize, pgcount, prot, mapped) => {
        if (!this.pgtable) fail('ENODEV', `${this.describe()} has no page table until a device is attached`);
        this.pgtable.mapPages(iova, paddr, pgsize, pgcount, prot, mapped);
      },
      unmapPages: (iova, pgsize, pgcount) => (this.pgtable ? this.pgtable.unmapPages(iova, pgsize, pgcount) : 0n),
      iovaToPhys: (iova) => this.pgtable?.iovaToPhys(iova),
    };
  }

  get finalised(): boolean {
    return this.smmu !== null;
  }

  attachDev(dev: IommuDevice): void {
    const master = masterOf(dev, this.describe());
    this.finalise(master.smmu);
    if (this.smmu !== master.smmu)
      fail('EINVAL', `${this.describe()} was finalised for ${this.smmu!.name}; ${master.describe()} is behind ${master.smmu.name}`);
    master.route = { type: 'translate', contextBank: this.contextBank };
  }

  /** arm_smmu_init_domain_context: pick stage, format, context bank and page table; once. */
  private finalise(smmu: ArmSmmu): void {
    if (this.smmu) return;
    let stage: ArmSmmuStage = 's1';
    if (!smmu.stages.has('s1')) stage = 's2';
    if (!smmu.stages.has('s2')) stage = 's1';

    let fmt: ContextFormat | null = null;
    if (smmu.formats.has('aarch32-l')) fmt = 'AArch32-L';
    // A 64-bit kernel prefers AArch64 whenever any of its granules is supported.
    if (smmu.formats.has('aarch64-4k') || smmu.formats.has('aarch64-16k') || smmu.formats.has('aarch64-64k'))
      fmt = 'AArch64';
    if (!fmt) fail('EINVAL', `${smmu.describe()} supports no context format a 64-bit kernel can use`);

    let ias: number;
    let oas: number;
    let start: number;
    let pgfmt: LpaeFormat;
    if (stage === 's1') {
      start = smmu.s2OnlyContextBanks;
      ias = smmu.vaBits;
      oas = smmu.ipaBits;
      if (fmt === 'AArch64') pgfmt = 'ARM_64_LPAE_S1';
      else {
        pgfmt = 'ARM_32_LPAE_S1';
        ias = Math.min(ias, 32);
        oas = Math.min(oas, 40);
      }
    } else {
      start = 0;
      ias = smmu.ipaBits;
      oas = smmu.paBits;
      if (fmt === 'AArch64') pgfmt = 'ARM_64_LPAE_S2';
      else {
        pgfmt = 'ARM_32_LPAE_S2';
        ias = Math.min(ias, 40);
        oas = Math.min(oas, 40);
      }
    }

    const cb = smmu.allocContextBank(this, start);
    const pgtable = LpaePageTable.create(pgfmt, { pgsizeBitmap: smmu.pgsizeBitmap, ias, oas });
    if (!pgtable) {
      smmu.freeContextBank(cb);
      fail('ENOMEM', `io-pgtable could not build a ${pgfmt} table for ${smmu.name} (sizes ${hex(smmu.pgsizeBitmap)}, ias ${ias}, oas ${oas})`);
    }
    this.smmu = smmu;
    this.stage = stage;
    this.contextFormat = fmt;
    this.contextBank = cb;
    this.pgtable = pgtable;
    this.pgsizeBitmap = pgtable.pgsizeBitmap;
    // The aperture uses the ias chosen here, before io-pgtable capped it to the granule's reach.
    this.geometry = { apertureStart: 0n, apertureEnd: (1n << BigInt(ias)) - 1n, forceAperture: true };
  }

  free(): void {
    if (this.smmu) this.smmu.freeContextBank(this.contextBank);
    this.pgtable = null;
  }

  describe(): string {
    if (!this.smmu) return `arm-smmu domain ${this.id} (unfinalised)`;
    return `arm-smmu domain ${this.id} (${this.smmu.name} context bank ${this.contextBank}, ${this.contextFormat} ${this.stage})`;
  }
}

/** A fresh driver with one SMMU: the common case. */
export function createArmSmmu(opts: ArmSmmuOptions & ArmSmmuDriverOptions = {}): ArmSmmu {
  const { defaultDomainType, ...smmuOpts } = opts;
  return new ArmSmmuDriver(defaultDomainType ? { defaultDomainType } : {}).probe(smmuOpts);
}
