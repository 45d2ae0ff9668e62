/**
 * The IOMMU core's view of a translation domain, as iommufd uses it. Drivers (src/drivers)
 * implement domains; iommufd reaches their page tables only through the core helpers in map.ts.
 */
import type { IommuDevice } from './device.js';
import type { IopfGroup } from './fault.js';
import type { UserDataArray } from './user-data.js';

/** Protection bits of a mapping (IOMMU_READ, IOMMU_WRITE, IOMMU_CACHE, ...). */
export const IOMMU_READ = 1;
export const IOMMU_WRITE = 2;
export const IOMMU_CACHE = 4;
export const IOMMU_NOEXEC = 8;
export const IOMMU_MMIO = 16;
export const IOMMU_PRIV = 32;

export type DomainKind = 'blocked' | 'identity' | 'paging' | 'nested';

export interface DomainGeometry {
  apertureStart: bigint;
  apertureEnd: bigint;
  forceAperture: boolean;
}

/** The page-table operations of a paging domain (iommu_domain_ops map_pages/unmap_pages/iova_to_phys). */
export interface DomainOps {
  /**
   * Map `pgcount` pages of `pgsize` bytes at iova -> paddr. Records in `mapped.bytes` how much
   * was mapped, also when it throws part way.
   */
  mapPages(iova: bigint, paddr: bigint, pgsize: bigint, pgcount: bigint, prot: number, mapped: { bytes: bigint }): void;
  /** Unmap up to `pgcount` pages of `pgsize` at iova; returns bytes unmapped (0 stops the core). */
  unmapPages(iova: bigint, pgsize: bigint, pgcount: bigint): bigint;
  /** Translate one IOVA, or undefined when nothing is mapped there. */
  iovaToPhys(iova: bigint): bigint | undefined;
}

/** Where a dirty read-out reports dirty IOVA ranges (struct iommu_dirty_bitmap). */
export interface DirtySink {
  record(iova: bigint, length: bigint): void;
}

/** Flag of readAndClearDirty: report without clearing (IOMMU_DIRTY_NO_CLEAR). */
export const IOMMU_DIRTY_NO_CLEAR = 1;

export interface DirtyOps {
  setDirtyTracking(enable: boolean): void;
  /** Report dirty ranges in [iova, iova + size) to `sink` (may be null: clear only). */
  readAndClearDirty(iova: bigint, size: bigint, flags: number, sink: DirtySink | null): void;
}

export interface IommuDomain {
  readonly kind: DomainKind;
  /** The driver that made it: the core refuses to attach it to another driver's devices. */
  readonly owner: string;
  geometry: DomainGeometry;
  /** Supported page sizes, one bit per size. */
  pgsizeBitmap: bigint;
  /** Page-table ops (paging domains). */
  readonly ops?: DomainOps;
  /** Present when the domain was allocated with dirty tracking. */
  readonly dirtyOps?: DirtyOps;
  /** The parent of a nested domain. */
  readonly parent?: IommuDomain;
  /** Driver attach (domain->ops->attach_dev); throws the driver's errno. */
  attachDev(dev: IommuDevice): void;
  /** Switch the domain to enforced cache coherency (e.g. Intel snoop control); false if impossible. */
  enforceCacheCoherency?(): boolean;
  /** Nested domains: process user invalidation entries (cache_invalidate_user). */
  cacheInvalidateUser?(array: UserDataArray): void;
  /**
   * Set by iommufd on domains of fault-capable HWPTs: where I/O page faults go. It takes over the
   * group (and answers it later with `group.respond`); throwing makes the core answer FAILURE.
   */
  iopfHandler?: ((group: IopfGroup) => void) | undefined;
  /** Base of the software MSI window mapped in this domain (iommu_get_msi_cookie), once set. */
  msiCookie?: bigint;
  free(): void;
  /** Short description for explanations and traces. */
  describe(): string;
}
