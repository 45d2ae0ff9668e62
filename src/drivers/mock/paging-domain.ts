import { fail, hex } from '../../lib/error.js';
import { U64_MAX } from '../../lib/u64.js';
import type { IommuDevice } from '../../iommu/device.js';
import {
  IOMMU_DIRTY_NO_CLEAR,
  type DirtyOps,
  type DirtySink,
  type DomainGeometry,
  type DomainOps,
  type IommuDomain,
} from '../../iommu/domain.js';
import { MOCK_APERTURE_LAST, MOCK_APERTURE_START } from '../../uapi/iommufd-test.js';
import { mockAttach } from './attach.js';
import {
  MOCK_DIRTY_TRACK,
  MOCK_HUGE_PAGE_SIZE,
  MOCK_IO_PAGE_SIZE,
  MOCK_PFN_DIRTY_IOVA,
  MOCK_PFN_HUGE_IOVA,
  MOCK_PFN_LAST_IOVA,
  MOCK_PFN_START_IOVA,
} from './constants.js';

/** What a mock domain needs from its driver: a place for WARN_ONs and the fault-injection point. */
export interface MockDomainHost {
  readonly name: string;
  /** Record a kernel WARN (the emulator keeps going, as the kernel does). */
  warn(message: string): void;
  /** The `iommufd_should_fail()` point of map_pages: true makes the map fail with ENOENT. */
  shouldFailMap(): boolean;
}

/** One entry of the mock page table: a 2048-byte I/O page. */
export interface MockPte {
  /** Physical address / 2048. */
  pfn: number;
  /** MOCK_PFN_* bits. */
  flags: number;
}

const IO_PAGE = Number(MOCK_IO_PAGE_SIZE);

/** The page-table index of an IOVA (iova / 2048). */
function slot(iova: bigint): number {
  return Number(iova / MOCK_IO_PAGE_SIZE);
}

/**
 * A mock paging domain (struct mock_iommu_domain, type UNMANAGED): a page table keyed by
 * iova / 2048 whose entries hold the physical 2048-byte frame and the START/LAST/DIRTY/HUGE bits.
 * It has dirty ops only when allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING.
 */
export class MockPagingDomain implements IommuDomain, DomainOps {
  readonly kind = 'paging' as const;
  readonly owner: string;
  /** The mock sets the aperture but leaves force_aperture clear (iommufd reserves outside it regardless). */
  geometry: DomainGeometry = {
    apertureStart: BigInt(MOCK_APERTURE_START),
    apertureEnd: BigInt(MOCK_APERTURE_LAST),
    forceAperture: false,
  };
  pgsizeBitmap: bigint;
  readonly ops: DomainOps = this;
  readonly dirtyOps?: DirtyOps;
  iopfHandler?: IommuDomain['iopfHandler'];
  msiCookie?: bigint;
  /** MOCK_DIRTY_TRACK when tracking is on. */
  mockFlags = 0;
  /** The page table (the kernel's `pfns` xarray). */
  readonly pfns = new Map<number, MockPte>();
  freed = false;

  constructor(
    private readonly host: MockDomainHost,
    /** A serial number for descriptions. */
    readonly serial: number,
    opts: { huge: boolean; dirty: boolean },
  ) {
    this.owner = host.name;
    this.pgsizeBitmap = MOCK_IO_PAGE_SIZE | (opts.huge ? MOCK_HUGE_PAGE_SIZE : 0n);
    if (opts.dirty) {
      this.dirtyOps = {
        setDirtyTracking: (enable) => this.setDirtyTracking(enable),
        readAndClearDirty: (iova, size, flags, sink) => this.readAndClearDirty(iova, size, flags, sink),
      };
    }
  }

  describe(): string {
    return `mock domain ${this.serial}`;
  }

  attachDev(dev: IommuDevice): void {
    mockAttach(this, dev);
  }

  free(): void {
    if (this.pfns.size) this.host.warn(`${this.describe()} freed with ${this.pfns.size} entries still mapped`);
    this.freed = true;
  }

  // ---- page table --------------------------------------------------------------------------

  mapPages(iova: bigint, paddr: bigint, pgsize: bigint, pgcount: bigint, _prot: number, mapped: { bytes: bigint }): void {
    if (this.host.shouldFailMap()) fail('ENOENT', `injected failure mapping ${hex(iova)} in ${this.describe()}`);
    if (iova % MOCK_IO_PAGE_SIZE) this.host.warn(`map at ${hex(iova)}: not a multiple of 2048`);
    if (pgsize % MOCK_IO_PAGE_SIZE) this.host.warn(`map with page size ${hex(pgsize)}: not a multiple of 2048`);
    const perPage = Number(pgsize / MOCK_IO_PAGE_SIZE);
    const total = perPage * Number(pgcount);
    const huge = pgsize !== MOCK_IO_PAGE_SIZE ? MOCK_PFN_HUGE_IOVA : 0;
    let index = slot(iova);
    let pfn = Number(paddr / MOCK_IO_PAGE_SIZE);
    for (let n = 0; n < total; n++, index++, pfn++) {
      let flags = n === 0 ? MOCK_PFN_START_IOVA : 0;
      if (n === total - 1) flags = MOCK_PFN_LAST_IOVA;
      flags |= huge;
      if (this.pfns.has(index))
        this.host.warn(`map over the existing entry at ${hex(BigInt(index) * MOCK_IO_PAGE_SIZE)} in ${this.describe()}`);
      this.pfns.set(index, { pfn, flags });
    }
    mapped.bytes += BigInt(total) * MOCK_IO_PAGE_SIZE;
  }

  unmapPages(iova: bigint, pgsize: bigint, pgcount: bigint): bigint {
    if (iova % MOCK_IO_PAGE_SIZE) this.host.warn(`unmap at ${hex(iova)}: not a multiple of 2048`);
    if (pgsize % MOCK_IO_PAGE_SIZE) this.host.warn(`unmap with page size ${hex(pgsize)}: not a multiple of 2048`);
    const total = Number(pgsize / MOCK_IO_PAGE_SIZE) * Number(pgcount);
    // Without huge pages every unmap must start and end where some map did; with them the core
    // may switch page sizes in the middle of a mapping, so the check is off.
    const checkEnds = (this.pgsizeBitmap & MOCK_HUGE_PAGE_SIZE) === 0n;
    let index = slot(iova);
    for (let n = 0; n < total; n++, index++) {
      const ent = this.pfns.get(index);
      this.pfns.delete(index);
      if (!checkEnds || !ent) continue;
      if (n === 0 && !(ent.flags & MOCK_PFN_START_IOVA))
        this.host.warn(`unmap starts at ${hex(BigInt(index) * MOCK_IO_PAGE_SIZE)}, which is not the start of a map in ${this.describe()}`);
      if (n === total - 1 && !(ent.flags & MOCK_PFN_LAST_IOVA))
        this.host.warn(`unmap ends at ${hex(BigInt(index) * MOCK_IO_PAGE_SIZE)}, which is not the end of a map in ${this.describe()}`);
    }
    return pgsize * pgcount;
  }

  iovaToPhys(iova: bigint): bigint | undefined {
    if (iova % MOCK_IO_PAGE_SIZE) this.host.warn(`iova_to_phys(${hex(iova)}): not a multiple of 2048`);
    const ent = this.pfns.get(slot(iova));
    if (!ent) {
      this.host.warn(`iova_to_phys(${hex(iova)}): nothing mapped in ${this.describe()}`);
      return undefined;
    }
    return BigInt(ent.pfn) * MOCK_IO_PAGE_SIZE;
  }

  // ---- dirty tracking ----------------------------------------------------------------------

  get dirtyTracking(): boolean {
    return (this.mockFlags & MOCK_DIRTY_TRACK) !== 0;
  }

  private setDirtyTracking(enable: boolean): void {
    if (enable && !this.dirtyOps) fail('EINVAL', `${this.describe()} was not allocated with dirty tracking`);
    this.mockFlags = enable ? this.mockFlags | MOCK_DIRTY_TRACK : this.mockFlags & ~MOCK_DIRTY_TRACK;
  }

  /** Whether any entry of [head, head + pgsize) is dirty; clears their DIRTY bits unless NO_CLEAR. */
  private testAndClearDirty(head: bigint, pgsize: bigint, flags: number): boolean {
    const first = slot(head);
    const count = Number(pgsize) / IO_PAGE;
    let dirty = false;
    for (let i = first; i < first + count; i++) {
      const ent = this.pfns.get(i);
      if (!ent || !(ent.flags & MOCK_PFN_DIRTY_IOVA)) continue;
      dirty = true;
      if (!(flags & IOMMU_DIRTY_NO_CLEAR)) ent.flags &= ~MOCK_PFN_DIRTY_IOVA;
    }
    return dirty;
  }

  /**
   * Walk [iova, iova + size) in 2048-byte steps (always at least one). A present entry stands for
   * a 1 MiB page if it is HUGE, else for 2048 bytes; if any entry of that page (aligned down) is
   * dirty, report [iova, iova + page) — from the walk's position, not the page's start — and
   * step a whole page.
   */
  private readAndClearDirty(iova: bigint, size: bigint, flags: number, sink: DirtySink | null): void {
    if (!this.dirtyTracking && sink)
      fail('EINVAL', `dirty tracking is off in ${this.describe()}, so there is nothing to read`);
    const end = (iova + size) & U64_MAX;
    let cur = iova;
    do {
      let pgsize = MOCK_IO_PAGE_SIZE;
      const ent = this.pfns.get(slot(cur));
      if (!ent) {
        cur = (cur + pgsize) & U64_MAX;
        continue;
      }
      if (ent.flags & MOCK_PFN_HUGE_IOVA) pgsize = MOCK_HUGE_PAGE_SIZE;
      const head = cur & ~(pgsize - 1n);
      if (this.testAndClearDirty(head, pgsize, flags)) sink?.record(cur, pgsize);
      cur = (cur + pgsize) & U64_MAX;
    } while (cur < end);
  }

  // ---- selftest hooks ----------------------------------------------------------------------

  /** The entry at an IOVA's 2048-byte slot: physical address and MOCK_PFN_* bits. */
  entryAt(iova: bigint): { phys: bigint; flags: number } | undefined {
    const ent = this.pfns.get(slot(iova));
    return ent && { phys: BigInt(ent.pfn) * MOCK_IO_PAGE_SIZE, flags: ent.flags };
  }

  /** MD_CHECK_MAP: the physical address the slot of `iova` maps, or undefined if none. */
  physAt(iova: bigint): bigint | undefined {
    const ent = this.pfns.get(slot(iova));
    return ent && BigInt(ent.pfn) * MOCK_IO_PAGE_SIZE;
  }

  /**
   * IOMMU_TEST_OP_DIRTY: set DIRTY on the entry at table index `index` (the selftest computes it
   * as iova / page_size). Returns whether an entry was there to mark.
   */
  markDirtyIndex(index: bigint): boolean {
    if (index < 0n || index > BigInt(Number.MAX_SAFE_INTEGER)) return false;
    const ent = this.pfns.get(Number(index));
    if (!ent) return false;
    ent.flags |= MOCK_PFN_DIRTY_IOVA;
    return true;
  }

  /** Set DIRTY on the entry covering `iova`; returns whether one was there. */
  markDirty(iova: bigint): boolean {
    return this.markDirtyIndex(iova / MOCK_IO_PAGE_SIZE);
  }
}
