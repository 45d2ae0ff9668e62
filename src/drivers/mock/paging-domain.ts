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
import { CHUNK_SLOTS, MockPageTable, PTE_PRESENT, chunkKey } from './page-table.js';

export type { MockPte } from './page-table.js';

/** What a mock domain needs from its driver: a place for WARN_ONs and the fault-injection point. */
export interface MockDomainHost {
  readonly name: string;
  /** Record a kernel WARN (the emulator keeps going, as the kernel does). */
  warn(message: string): void;
  /** The `iommufd_should_fail()` point of map_pages: true makes the map fail with ENOENT. */
  shouldFailMap(): boolean;
}

/** Slots in the u64 IOVA space (2^64 / 2048): walks wrap at this index as IOVAs wrap at 2^64. */
const SLOTS = 2 ** 53;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const IO_PAGE = Number(MOCK_IO_PAGE_SIZE);
/** Slots whose IOVA (plus an in-page offset) is below 2^53, exact as a number. */
const EXACT_SLOTS = 2 ** 53 / IO_PAGE - 1;

/** The page-table index of an IOVA (iova / 2048; exact as a number, being below 2^53). */
function slot(iova: bigint): number {
  return Number(iova / MOCK_IO_PAGE_SIZE);
}

/** IOVA of a slot index, for messages. */
function slotIova(index: number): bigint {
  return BigInt(index) * MOCK_IO_PAGE_SIZE;
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
  readonly pfns = new MockPageTable();
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
    for (let n = 0; n < total; ) {
      const key = chunkKey(index);
      const c = this.pfns.chunk(key, true);
      let i = index - key * CHUNK_SLOTS;
      const stop = Math.min(total, n + CHUNK_SLOTS - i);
      for (; n < stop; n++, i++, index++, pfn++) {
        const flags = (n === 0 ? MOCK_PFN_START_IOVA : 0) | (n === total - 1 ? MOCK_PFN_LAST_IOVA : 0) | huge;
        if (c.flags[i]! & PTE_PRESENT) {
          this.host.warn(`map over the existing entry at ${hex(slotIova(index))} in ${this.describe()}`);
        } else {
          c.used++;
          this.pfns.size++;
        }
        c.pfn[i] = pfn;
        c.flags[i] = flags | PTE_PRESENT;
      }
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
    for (let n = 0; n < total; ) {
      const key = chunkKey(index);
      const i0 = index - key * CHUNK_SLOTS;
      const span = Math.min(total - n, CHUNK_SLOTS - i0);
      const c = this.pfns.chunk(key);
      // An absent chunk is a run of empty slots: nothing to clear and nothing to check.
      if (c) {
        let removed = 0;
        for (let k = 0; k < span; k++) {
          const flags = c.flags[i0 + k]!;
          if (!(flags & PTE_PRESENT)) continue;
          c.flags[i0 + k] = 0;
          removed++;
          if (!checkEnds) continue;
          if (n + k === 0 && !(flags & MOCK_PFN_START_IOVA))
            this.host.warn(`unmap starts at ${hex(slotIova(index + k))}, which is not the start of a map in ${this.describe()}`);
          if (n + k === total - 1 && !(flags & MOCK_PFN_LAST_IOVA))
            this.host.warn(`unmap ends at ${hex(slotIova(index + k))}, which is not the end of a map in ${this.describe()}`);
        }
        if (removed) this.pfns.adjust(key, c, -removed);
      }
      n += span;
      index += span;
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

  /** Whether any entry of slots [head, head + count) is dirty; clears their DIRTY bits unless NO_CLEAR. */
  private testAndClearDirty(head: number, count: number, flags: number): boolean {
    const clear = !(flags & IOMMU_DIRTY_NO_CLEAR);
    let dirty = false;
    for (let index = head, left = count; left > 0; ) {
      const key = chunkKey(index);
      const i0 = index - key * CHUNK_SLOTS;
      const span = Math.min(left, CHUNK_SLOTS - i0);
      const c = this.pfns.chunk(key);
      if (c) {
        const f = c.flags;
        for (let i = i0; i < i0 + span; i++) {
          if (!(f[i]! & MOCK_PFN_DIRTY_IOVA)) continue;
          dirty = true;
          if (clear) f[i]! &= ~MOCK_PFN_DIRTY_IOVA;
        }
      }
      index += span;
      left -= span;
    }
    return dirty;
  }

  /**
   * Walk [iova, iova + size) in 2048-byte steps (always at least one). A present entry stands for
   * a 1 MiB page if it is HUGE, else for 2048 bytes; if any entry of that page (aligned down) is
   * dirty, report [iova, iova + page) — from the walk's position, not the page's start — and
   * step a whole page.
   *
   * The walk runs on slot numbers: the position is slot * 2048 + off, where off (iova's offset in
   * its 2048-byte page) never changes as every step is a multiple of 2048; slots wrap at 2^53 as
   * the u64 IOVA wraps at 2^64.
   */
  private readAndClearDirty(iova: bigint, size: bigint, flags: number, sink: DirtySink | null): void {
    if (!this.dirtyTracking && sink)
      fail('EINVAL', `dirty tracking is off in ${this.describe()}, so there is nothing to read`);
    const end = (iova + size) & U64_MAX;
    const endSlot = slot(end);
    const endOff = Number(end % MOCK_IO_PAGE_SIZE);
    const offBig = iova % MOCK_IO_PAGE_SIZE;
    const off = Number(offBig);
    const clear = !(flags & IOMMU_DIRTY_NO_CLEAR);
    let s = slot(iova);
    let key = -1;
    let c: ReturnType<MockPageTable['chunk']>;
    do {
      const k = chunkKey(s);
      if (k !== key) {
        key = k;
        c = this.pfns.chunk(k);
      }
      const i = s - k * CHUNK_SLOTS;
      const ent = c ? c.flags[i]! : 0;
      let step = 1;
      if (ent & PTE_PRESENT) {
        let dirty: boolean;
        if (ent & MOCK_PFN_HUGE_IOVA) {
          step = CHUNK_SLOTS;
          dirty = this.testAndClearDirty(s - (s % CHUNK_SLOTS), CHUNK_SLOTS, flags);
        } else {
          dirty = (ent & MOCK_PFN_DIRTY_IOVA) !== 0;
          if (dirty && clear) c!.flags[i] = ent & ~MOCK_PFN_DIRTY_IOVA;
        }
        if (dirty && sink) {
          // s * 2048 is exact as a double; adding off stays exact below 2^53.
          const at = s < EXACT_SLOTS ? BigInt(s * IO_PAGE + off) : slotIova(s) + offBig;
          sink.record(at, step === 1 ? MOCK_IO_PAGE_SIZE : MOCK_HUGE_PAGE_SIZE);
        }
      }
      // s + step, modulo 2^53, without leaving the exact range of a double.
      s = s >= SLOTS - step ? s - (SLOTS - step) : s + step;
    } while (s < endSlot || (s === endSlot && off < endOff));
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
    if (index < 0n || index > MAX_SAFE) return false;
    return this.markDirtySlot(Number(index));
  }

  /** markDirtyIndex for an index already a number (0 <= index <= MAX_SAFE_INTEGER). */
  markDirtySlot(index: number): boolean {
    const key = chunkKey(index);
    const c = this.pfns.chunk(key);
    const i = index - key * CHUNK_SLOTS;
    if (!c || !(c.flags[i]! & PTE_PRESENT)) return false;
    c.flags[i]! |= MOCK_PFN_DIRTY_IOVA;
    return true;
  }

  /** Set DIRTY on the entry covering `iova`; returns whether one was there. */
  markDirty(iova: bigint): boolean {
    return this.markDirtyIndex(iova / MOCK_IO_PAGE_SIZE);
  }
}
