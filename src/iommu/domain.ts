/**
 * The IOMMU core's view of a translation domain, as iommufd uses it. Drivers (src/drivers)
 * implement DomainOps; iommufd only goes through the core helpers in map.ts.
 */

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

/** The page-table operations a driver provides for a paging domain. */
export interface DomainOps {
  /**
   * Map `pgcount` pages of `pgsize` bytes at iova -> paddr. Returns the bytes actually mapped
   * (may be fewer on error, then it throws after recording them in `mapped.bytes`).
   */
  mapPages(iova: bigint, paddr: bigint, pgsize: bigint, pgcount: bigint, prot: number, mapped: { bytes: bigint }): void;
  /** Unmap up to `pgcount` pages of `pgsize` at iova; returns bytes unmapped (0 stops the core). */
  unmapPages(iova: bigint, pgsize: bigint, pgcount: bigint): bigint;
  /** Translate one IOVA, or undefined when nothing is mapped there. */
  iovaToPhys(iova: bigint): bigint | undefined;
}

export interface IommuDomain {
  readonly kind: DomainKind;
  /** Which driver made it: attach across drivers is refused. */
  readonly owner: string;
  geometry: DomainGeometry;
  /** Supported page sizes, one bit per size. */
  pgsizeBitmap: bigint;
  readonly ops: DomainOps;
  /** Short description for explanations and traces. */
  describe(): string;
}
