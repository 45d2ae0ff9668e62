import { PAGE_SIZE } from '../lib/u64.js';
import type { IommuDomain } from '../iommu/domain.js';
import { iommuMap, iommuUnmap } from '../iommu/map.js';
import type { IoptPages } from './pages.js';

/**
 * A mapping in an IOAS (struct iopt_area): IOVA [iova, last] backed by bytes
 * [startByte, startByte + length) of a page container.
 */
export class IoptArea {
  /** False while the area only reserves its IOVA during MAP/COPY (the kernel's NULL area->pages). */
  populated = false;
  /** The domain the area's PFNs are read back from (the first domain of the IOAS). */
  storageDomain: IommuDomain | null = null;
  /** In-kernel accesses currently pinning part of this area. */
  numAccesses = 0;
  /** Set while UNMAP waits for accesses to let go: new pins of the area fail. */
  preventAccess = false;

  constructor(
    readonly iova: bigint,
    readonly last: bigint,
    readonly pages: IoptPages,
    readonly startByte: bigint,
    readonly prot: number,
  ) {}

  get length(): bigint {
    return this.last - this.iova + 1n;
  }

  /** Offset of the area's first byte inside its first page. */
  get pageOffset(): bigint {
    return this.startByte % PAGE_SIZE;
  }

  /** Container byte behind an IOVA of this area. */
  startByteOf(iova: bigint): bigint {
    return this.startByte + (iova - this.iova);
  }

  /** First and last container page indexes this area covers. */
  get firstIndex(): number {
    return Number(this.startByte / PAGE_SIZE);
  }
  get lastIndex(): number {
    return Number((this.startByte + this.length - 1n) / PAGE_SIZE);
  }

  /** Map the (pinned) pages of this area into a domain; on failure nothing stays mapped there. */
  mapInto(domain: IommuDomain, pageSized: boolean): void {
    let done = 0n;
    try {
      this.pages.forEachPhysRun(this.startByte, this.length, pageSized, (offset, paddr, length) => {
        iommuMap(domain, this.iova + (offset - this.startByte), paddr, length, this.prot);
        done += length;
      });
    } catch (e) {
      if (done) iommuUnmap(domain, this.iova, done);
      throw e;
    }
  }

  unmapFrom(domain: IommuDomain): void {
    iommuUnmap(domain, this.iova, this.length);
  }

  describe(): string {
    return `area [0x${this.iova.toString(16)}, 0x${this.last.toString(16)}]`;
  }
}
