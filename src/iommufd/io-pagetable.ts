import { fail, hex, IommuError } from '../lib/error.js';
import { Lock } from '../lib/lockdep.js';
import { HPAGE_SIZE, PAGE_SIZE, U64_MAX, alignUp, lowestSetBit, roundUpPow2 } from '../lib/u64.js';
import { IOMMU_WRITE, type IommuDomain } from '../iommu/domain.js';
import { AreaTree } from './area-tree.js';
import { IoptArea } from './area.js';
import type { IoptPages } from './pages.js';
import { holes, lowerBoundByLast, mergeRanges, anyIntersects, type Range } from './ranges.js';
import { ReservedSet, type ReservedOwner } from './reserved.js';

/** A run of bytes of one page container, on its way into an IOAS (struct iopt_pages_list). */
export interface PagesSlice {
  pages: IoptPages;
  startByte: bigint;
  length: bigint;
  /** Where the slice came from, for COPY (its IOVA in the source IOAS), for explanations. */
  srcIova?: bigint;
}

/** An in-kernel user of the IOAS (ACCESS object) as the io_pagetable sees it. */
export interface IoptAccess {
  readonly iovaAlignment: bigint;
  /** The driver's unmap callback: it must drop its pins inside [iova, iova + length). */
  notifyUnmap(iova: bigint, length: bigint): void;
}

/** Result of a range unmap: bytes removed, and the error that stopped it, if any. */
export interface UnmapResult {
  unmapped: bigint;
  error?: IommuError;
}

const AUTO_WINDOW_FIRST = PAGE_SIZE;
const AUTO_WINDOW_LAST = U64_MAX - PAGE_SIZE;
const ULONG_HALF = U64_MAX / 2n;
const UNMAP_RETRY_LIMIT = 100;

/**
 * The inside of an IOAS (struct io_pagetable): areas, reserved and allowed ranges, the domains
 * that mirror every area, in-kernel accesses and the IOVA alignment they impose.
 */
export class IoPagetable {
  readonly areas = new AreaTree();
  readonly reserved = new ReservedSet();
  /** User-allowed ranges as given (disjoint, sorted); merged view for allocation. */
  private allowed: Range[] = [];
  private allowedMerged: Range[] = [];
  /** Dense list; index 0 is where areas get their storage domain. */
  readonly domains: IommuDomain[] = [];
  /** Access list, indexed by a 16-bit id (lowest free). */
  readonly accesses = new Map<number, IoptAccess>();
  iovaAlignment = 1n;
  disableLargePages = false;
  readonly domainsRwsem: Lock;
  readonly iovaRwsem: Lock;

  constructor(readonly name: string) {
    this.domainsRwsem = new Lock('iopt->domains_rwsem', name);
    this.iovaRwsem = new Lock('iopt->iova_rwsem', name);
  }

  allowedRanges(): readonly Range[] {
    return this.allowed;
  }

  // ---------------------------------------------------------------- IOVA space queries

  /** The holes of the reserved ranges over all of u64: what IOAS_IOVA_RANGES reports. */
  iovaRanges(): Range[] {
    return [...holes(this.reserved.merged(), 0n, U64_MAX)];
  }

  /** Automatic IOVA allocation: lowest-address first fit (iopt_alloc_iova). */
  private allocIova(hint: bigint, length: bigint): bigint {
    if (length === 0n || length >= ULONG_HALF)
      fail('EOVERFLOW', `length ${hex(length)} is 0 or too large for automatic IOVA allocation`);
    const pageOffset = hint % PAGE_SIZE;
    // roundup_pow_of_two without a string conversion when the length fits in 32 bits.
    const m = length - 1n;
    let align = m <= 0xffff_ffffn ? (m === 0n ? 1n : 1n << BigInt(32 - Math.clz32(Number(m)))) : roundUpPow2(length);
    if (hint !== 0n) {
      const low = lowestSetBit(hint);
      if (low < align) align = low;
    }
    if (align >= HPAGE_SIZE) align = HPAGE_SIZE;
    if (align < this.iovaAlignment)
      fail(
        'EINVAL',
        `the alignment available from user VA ${hex(hint)} and length ${hex(length)} is ${hex(align)}, ` +
          `below the IOAS's iova_alignment ${hex(this.iovaAlignment)}`,
      );

    // Windows: the allowed ranges clipped to the automatic window, or that whole window. Plain
    // loops and methods, no closures or generators: this runs on every automatic MAP.
    const allowed = this.allowedMerged;
    if (!allowed.length) {
      const t = this.allocInWindow(AUTO_WINDOW_FIRST, AUTO_WINDOW_LAST, align, pageOffset, length);
      if (t !== undefined) return t;
    } else {
      for (const r of allowed) {
        if (r.last < AUTO_WINDOW_FIRST || r.start > AUTO_WINDOW_LAST) continue;
        const t = this.allocInWindow(
          r.start < AUTO_WINDOW_FIRST ? AUTO_WINDOW_FIRST : r.start,
          r.last > AUTO_WINDOW_LAST ? AUTO_WINDOW_LAST : r.last,
          align,
          pageOffset,
          length,
        );
        if (t !== undefined) return t;
      }
    }
    fail(
      'ENOSPC',
      `no free IOVA range of length ${hex(length)} aligned to ${hex(align)}` +
        (pageOffset ? ` (with page offset ${hex(pageOffset)})` : '') +
        (this.allowed.length ? ' inside the allowed ranges' : ''),
    );
  }

  /** The lowest fit in window [wStart, wLast]: its area gaps, minus reserved ranges, ascending. */
  private allocInWindow(wStart: bigint, wLast: bigint, align: bigint, pageOffset: bigint, length: bigint): bigint | undefined {
    const ws = fitIova(wStart, wLast, align, pageOffset, length);
    if (ws === undefined) return undefined;
    const reserved = this.reserved.merged();
    for (let g = this.areas.gapAtOrAfter(ws); g && g[0] <= wLast; g = this.areas.gapAfter(g[0])) {
      const from = g[0] < ws ? ws : g[0];
      const to = g[1] > wLast ? wLast : g[1];
      // The holes of the reserved ranges inside [from, to] (ranges.ts holes(), inlined).
      let cur = from;
      let covered = false;
      for (let i = lowerBoundByLast(reserved, from); i < reserved.length; i++) {
        const r = reserved[i]!;
        if (r.start > to) break;
        if (r.start > cur) {
          const t = fitIova(cur, r.start - 1n, align, pageOffset, length);
          if (t !== undefined) return t;
        }
        if (r.last >= to) {
          covered = true;
          break;
        }
        cur = r.last + 1n;
      }
      if (!covered && cur <= to) {
        const t = fitIova(cur, to, align, pageOffset, length);
        if (t !== undefined) return t;
      }
    }
    return undefined;
  }

  /** Checks of a fixed IOVA (iopt_check_iova): alignment, overflow, reserved, existing areas. */
  private checkIova(iova: bigint, length: bigint): void {
    if (iova & (this.iovaAlignment - 1n))
      fail('EINVAL', `IOVA ${hex(iova)} is not aligned to the IOAS's iova_alignment ${hex(this.iovaAlignment)}`);
    const last = iova + length - 1n;
    if (last > U64_MAX) fail('EOVERFLOW', `IOVA ${hex(iova)} + length ${hex(length)} overflows 64 bits`);
    const r = this.reserved.firstIntersecting(iova, last);
    if (r)
      fail(
        'EINVAL',
        `[${hex(iova)}, ${hex(last)}] intersects the reserved range [${hex(r.start)}, ${hex(r.last)}]` +
          ownerSuffix(r.owner),
      );
    const a = this.areas.isFree(iova, last) ? undefined : this.areas.firstIntersecting(iova, last);
    if (a) fail('EEXIST', `[${hex(iova)}, ${hex(last)}] overlaps the existing mapping ${a.describe()}`);
  }

  // ---------------------------------------------------------------- map / copy

  /**
   * Map slices back to back at a fixed or automatic IOVA (iopt_map_pages). The slices' page
   * references move into the new areas on success; on failure they stay with the caller.
   */
  mapPages(slices: readonly PagesSlice[], length: bigint, iova: bigint | undefined, prot: number): bigint {
    const areas: IoptArea[] = [];
    let dst: bigint;
    const refusal = this.lengthRefusal(length);
    if (refusal) fail('EINVAL', refusal);
    this.iovaRwsem.lock();
    try {
      if (iova === undefined) {
        const first = slices[0]!;
        dst = this.allocIova(first.pages.uptr + first.startByte, length);
      } else {
        dst = iova;
        this.checkIova(dst, length);
      }
      let cur = dst;
      for (const s of slices) {
        areas.push(this.insertArea(s, cur, prot));
        cur += s.length;
      }
    } catch (e) {
      for (const a of areas) this.areas.remove(a);
      throw e;
    } finally {
      this.iovaRwsem.unlock();
    }

    this.domainsRwsem.read();
    try {
      let filled = 0;
      try {
        for (; filled < areas.length; filled++) this.fillDomains(areas[filled]!);
      } catch (e) {
        for (let i = 0; i < filled; i++) this.unfillDomains(areas[i]!);
        this.iovaRwsem.lock();
        for (const a of areas) this.areas.remove(a);
        this.iovaRwsem.unlock();
        throw e;
      }
      this.iovaRwsem.lock();
      for (const a of areas) a.populated = true;
      this.iovaRwsem.unlock();
    } finally {
      this.domainsRwsem.unlock();
    }
    return dst;
  }

  /** Why a mapping of `length` bytes is refused here (the first check of iopt_alloc_area_pages), or undefined. */
  lengthRefusal(length: bigint): string | undefined {
    if (length === 0n || length & (this.iovaAlignment - 1n))
      return `length ${hex(length)} is 0 or not a multiple of the IOAS's iova_alignment ${hex(this.iovaAlignment)}`;
    return undefined;
  }

  private insertArea(s: PagesSlice, iova: bigint, prot: number): IoptArea {
    if (prot & IOMMU_WRITE && !s.pages.writable) {
      const first = s.startByte / PAGE_SIZE;
      const lastPage = (s.startByte + s.length - 1n) / PAGE_SIZE;
      const va = s.pages.uptr + s.startByte;
      const from = s.srcIova === undefined ? '' : ` (source IOVA [${hex(s.srcIova)}, ${hex(s.srcIova + s.length - 1n)}])`;
      fail(
        'EPERM',
        `a writeable mapping of [${hex(iova)}, ${hex(iova + s.length - 1n)}] was requested, but its ${lastPage - first + 1n} page(s)${from}, ` +
          `user VA [${hex(va)}, ${hex(va + s.length - 1n)}], pages ${first}-${lastPage} of the container at ${hex(s.pages.uptr)}, were mapped read-only`,
      );
    }
    const pageOffset = s.startByte % PAGE_SIZE;
    if (pageOffset & (this.iovaAlignment - 1n))
      fail(
        'EINVAL',
        `the user address's offset in its page, ${hex(pageOffset)}, is not a multiple of the IOAS's iova_alignment ${hex(this.iovaAlignment)}`,
      );
    const last = iova + s.length - 1n;
    if (last > U64_MAX) fail('EOVERFLOW', `IOVA ${hex(iova)} + length ${hex(s.length)} overflows 64 bits`);
    const area = new IoptArea(iova, last, s.pages, s.startByte, prot);
    this.areas.insert(area);
    return area;
  }

  /** Pin the area's pages (once per container) and map them into every domain. */
  private fillDomains(area: IoptArea): void {
    if (!this.domains.length) return;
    area.pages.pinRange(area.firstIndex, area.lastIndex);
    let done = 0;
    try {
      for (; done < this.domains.length; done++) area.mapInto(this.domains[done]!, this.disableLargePages);
    } catch (e) {
      for (let i = 0; i < done; i++) area.unmapFrom(this.domains[i]!);
      area.pages.unpinRange(area.firstIndex, area.lastIndex);
      throw e;
    }
    area.storageDomain = this.domains[0]!;
  }

  private unfillDomains(area: IoptArea): void {
    if (!area.storageDomain) return;
    for (const d of this.domains) area.unmapFrom(d);
    area.storageDomain = null;
    area.pages.unpinRange(area.firstIndex, area.lastIndex);
  }

  /**
   * Collect slices covering [iova, iova + length - 1] from contiguous, fully created areas
   * (iopt_get_pages, the source side of COPY). Each slice holds a page reference.
   */
  getPages(iova: bigint, length: bigint): PagesSlice[] {
    if (length === 0n) fail('EINVAL', 'length is 0');
    const lastIova = iova + length - 1n;
    if (lastIova > U64_MAX) fail('EOVERFLOW', `IOVA ${hex(iova)} + length ${hex(length)} overflows 64 bits`);
    const out: PagesSlice[] = [];
    this.iovaRwsem.read();
    try {
      let cur = iova;
      let area = this.areas.firstIntersecting(iova, iova);
      for (;;) {
        if (!area || !area.populated || area.iova > cur)
          fail('ENOENT', `[${hex(iova)}, ${hex(lastIova)}] is not fully covered by mappings: nothing mapped at ${hex(cur)}`);
        const end = lastIova < area.last ? lastIova : area.last;
        out.push({ pages: area.pages, startByte: area.startByteOf(cur), length: end - cur + 1n, srcIova: cur });
        if (end === lastIova) break;
        cur = end + 1n;
        area = this.areas.firstIntersecting(cur, cur);
      }
    } finally {
      this.iovaRwsem.unlock();
    }
    for (const s of out) s.pages.refs++;
    return out;
  }

  // ---------------------------------------------------------------- unmap

  /**
   * Remove every area inside [start, last] (iopt_unmap_iova_range). Never splits: an area that
   * sticks out stops the walk with ENOENT, keeping what was already removed.
   */
  unmapRange(start: bigint, last: bigint): UnmapResult {
    let unmapped = 0n;
    let tries = 0;
    let cur = start;
    try {
      for (;;) {
        this.domainsRwsem.read();
        this.iovaRwsem.lock();
        let notify: IoptArea | undefined;
        try {
          let area: IoptArea | undefined;
          while ((area = this.areas.firstIntersecting(cur, last))) {
            if (!area.populated) fail('EBUSY', `${area.describe()} is still being created`);
            if (area.iova < cur || area.last > last)
              fail('ENOENT', `${area.describe()} is not fully inside [${hex(start)}, ${hex(last)}]; unmap never splits a mapping`);
            if (area.iova !== cur) tries = 0;
            if (area.numAccesses) {
              cur = area.iova;
              area.preventAccess = true;
              notify = area;
              break;
            }
            // Drop the iova lock around the domain unmap only when there is one to do: the
            // held-lock state after is the same either way, and this is on every UNMAP.
            if (area.storageDomain) {
              this.iovaRwsem.unlock();
              try {
                this.unfillDomains(area);
              } finally {
                this.iovaRwsem.lock();
              }
            }
            this.areas.remove(area);
            putPages(area.pages);
            unmapped += area.length;
            if (area.last >= last) return { unmapped };
            cur = area.last + 1n;
          }
        } finally {
          this.iovaRwsem.unlock();
          this.domainsRwsem.unlock();
        }
        if (!notify) return { unmapped };
        for (const acc of [...this.accesses.values()]) acc.notifyUnmap(notify.iova, notify.length);
        if (++tries > UNMAP_RETRY_LIMIT)
          fail('EDEADLK', `an in-kernel access still pins ${notify.describe()} after ${UNMAP_RETRY_LIMIT} unmap requests`);
      }
    } catch (e) {
      if (e instanceof IommuError) return { unmapped, error: e };
      throw e;
    }
  }

  unmapAll(): UnmapResult {
    return this.unmapRange(0n, U64_MAX);
  }

  /**
   * Split the area holding each IOVA so that the IOVA becomes the last byte of an area
   * (iopt_cut_iova, used only by VFIO type1 v1 unmap). A cut at an area's first or last byte, or
   * where no area is, does nothing. Both halves keep the container, protection and storage
   * domain: nothing is remapped. Stops at the first refusal, keeping earlier cuts.
   */
  cutIova(iovas: readonly bigint[]): void {
    this.iovaRwsem.lock();
    try {
      for (const iova of iovas) {
        const area = this.areas.firstIntersecting(iova, iova);
        if (!area || iova === area.iova || iova === area.last) continue;
        if (!area.populated || area.preventAccess)
          fail('EBUSY', `${area.describe()} is being created or unmapped, so it cannot be split at ${hex(iova)}`);
        const rhsStart = iova + 1n;
        const rhsByte = area.startByteOf(rhsStart);
        const mask = this.iovaAlignment - 1n;
        if (rhsStart & mask || rhsByte & mask)
          fail(
            'EINVAL',
            `splitting ${area.describe()} after ${hex(iova)}: IOVA ${hex(rhsStart)} or its page-container offset ${hex(rhsByte)} ` +
              `is not aligned to the IOAS's iova_alignment ${hex(this.iovaAlignment)}`,
          );
        area.pages.mutex.lock();
        try {
          if (area.numAccesses)
            fail('EINVAL', `${area.describe()} has ${area.numAccesses} in-kernel access pin(s) and cannot be split`);
          if (area.storageDomain && !this.disableLargePages)
            fail('EINVAL', `${area.describe()} may be mapped with large pages in ${area.storageDomain.describe()}, so it cannot be split`);
          // With a storage domain large pages are off, so the alignment is at least PAGE_SIZE and
          // the halves share no page: every page keeps exactly one pin user from this mapping.
          const lhs = new IoptArea(area.iova, iova, area.pages, area.startByte, area.prot);
          const rhs = new IoptArea(rhsStart, area.last, area.pages, rhsByte, area.prot);
          for (const half of [lhs, rhs]) {
            half.populated = true;
            half.storageDomain = area.storageDomain;
          }
          this.areas.remove(area);
          this.areas.insert(lhs);
          this.areas.insert(rhs);
          area.pages.refs++;
        } finally {
          area.pages.mutex.unlock();
        }
      }
    } finally {
      this.iovaRwsem.unlock();
    }
  }

  // ---------------------------------------------------------------- allowed and reserved ranges

  /** Replace the allowed ranges; EADDRINUSE (old set kept) if one intersects a reservation. */
  setAllowIovas(ranges: Range[]): void {
    this.iovaRwsem.lock();
    try {
      const sorted = [...ranges].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
      const reserved = this.reserved.merged();
      for (const r of sorted) {
        const hit = anyIntersects(reserved, r.start, r.last);
        if (hit) {
          const res = this.reserved.firstIntersecting(r.start, r.last)!;
          fail(
            'EADDRINUSE',
            `allowed range [${hex(r.start)}, ${hex(r.last)}] intersects the reserved range [${hex(res.start)}, ${hex(res.last)}]` +
              ownerSuffix(res.owner),
          );
        }
      }
      this.allowed = sorted;
      this.allowedMerged = mergeRanges(sorted);
    } finally {
      this.iovaRwsem.unlock();
    }
  }

  /** Reserve [start, last] for `owner` (iopt_reserve_iova); the iova lock must be held. */
  reserveIova(start: bigint, last: bigint, owner: ReservedOwner): void {
    this.iovaRwsem.assertHeld();
    const a = this.areas.firstIntersecting(start, last);
    if (a)
      fail('EADDRINUSE', `reserving [${hex(start)}, ${hex(last)}]${requesterSuffix(owner)} hits the existing mapping ${a.describe()}`);
    const al = anyIntersects(this.allowedMerged, start, last);
    if (al)
      fail(
        'EADDRINUSE',
        `reserving [${hex(start)}, ${hex(last)}]${requesterSuffix(owner)} hits the allowed range [${hex(al.start)}, ${hex(al.last)}]`,
      );
    this.reserved.add(start, last, owner);
  }

  /** Take the iova lock and reserve. */
  reserve(start: bigint, last: bigint, owner: ReservedOwner): void {
    this.iovaRwsem.lock();
    try {
      this.reserveIova(start, last, owner);
    } finally {
      this.iovaRwsem.unlock();
    }
  }

  removeReserved(owner: ReservedOwner): void {
    this.iovaRwsem.lock();
    this.reserved.removeOwner(owner);
    this.iovaRwsem.unlock();
  }

  // ---------------------------------------------------------------- alignment and large pages

  private checkAlignment(align: bigint): void {
    const mask = align - 1n;
    for (const a of this.areas.all()) {
      if (a.iova & mask || a.length & mask || a.pageOffset & mask)
        fail(
          'EADDRINUSE',
          `${a.describe()} (page offset ${hex(a.pageOffset)}) is not aligned to the new iova_alignment ${hex(align)}`,
        );
    }
  }

  /** Recompute iova_alignment from large-page mode, domains and accesses; it may shrink. */
  private calculateAlignment(): void {
    let align = this.disableLargePages ? PAGE_SIZE : 1n;
    for (const d of this.domains) {
      const min = lowestSetBit(d.pgsizeBitmap);
      if (min > align) align = min;
    }
    for (const acc of this.accesses.values()) if (acc.iovaAlignment > align) align = acc.iovaAlignment;
    if (align > this.iovaAlignment) this.checkAlignment(align);
    this.iovaAlignment = align;
  }

  /** IOMMU_OPTION_HUGE_PAGES = 0 (iopt_disable_large_pages). */
  disableLarge(): void {
    this.domainsRwsem.lock();
    this.iovaRwsem.lock();
    try {
      if (this.disableLargePages) return;
      if (this.domains.length && this.areas.size)
        fail(
          'EINVAL',
          `large pages cannot be disabled while the IOAS has ${this.domains.length} domain(s) and ${this.areas.size} mapping(s)`,
        );
      this.disableLargePages = true;
      try {
        this.calculateAlignment();
      } catch (e) {
        this.disableLargePages = false;
        throw e;
      }
    } finally {
      this.iovaRwsem.unlock();
      this.domainsRwsem.unlock();
    }
  }

  /** IOMMU_OPTION_HUGE_PAGES = 1. */
  enableLarge(): void {
    this.domainsRwsem.lock();
    this.iovaRwsem.lock();
    try {
      this.disableLargePages = false;
      this.calculateAlignment();
    } finally {
      this.iovaRwsem.unlock();
      this.domainsRwsem.unlock();
    }
  }

  // ---------------------------------------------------------------- domains

  /**
   * Link a domain (iopt_table_add_domain): raise the alignment, reserve what lies outside the
   * aperture, pin and map every area into it.
   */
  addDomain(domain: IommuDomain): void {
    this.domainsRwsem.lock();
    this.iovaRwsem.lock();
    try {
      if (this.domains.includes(domain)) fail('EEXIST', `${domain.describe()} is already in this IOAS`);
      const min = lowestSetBit(domain.pgsizeBitmap);
      const align = min > this.iovaAlignment ? min : this.iovaAlignment;
      if (align > PAGE_SIZE)
        fail('EINVAL', `${domain.describe()}'s smallest page ${hex(min)} is larger than PAGE_SIZE`);
      if (align !== this.iovaAlignment) this.checkAlignment(align);
      const g = domain.geometry;
      try {
        if (g.apertureStart !== 0n) this.reserveIova(0n, g.apertureStart - 1n, domain);
        if (g.apertureEnd !== U64_MAX) this.reserveIova(g.apertureEnd + 1n, U64_MAX, domain);
        this.fillDomain(domain);
      } catch (e) {
        this.reserved.removeOwner(domain);
        throw e;
      }
      this.iovaAlignment = align;
      this.domains.push(domain);
    } finally {
      this.iovaRwsem.unlock();
      this.domainsRwsem.unlock();
    }
  }

  private fillDomain(domain: IommuDomain): void {
    const first = this.domains.length === 0;
    const done: IoptArea[] = [];
    try {
      for (const area of this.areas.all()) {
        if (!area.populated) continue;
        if (first) area.pages.pinRange(area.firstIndex, area.lastIndex);
        try {
          area.mapInto(domain, this.disableLargePages);
        } catch (e) {
          if (first) area.pages.unpinRange(area.firstIndex, area.lastIndex);
          throw e;
        }
        if (first) area.storageDomain = domain;
        done.push(area);
      }
    } catch (e) {
      for (const area of done) {
        area.unmapFrom(domain);
        if (first) {
          area.storageDomain = null;
          area.pages.unpinRange(area.firstIndex, area.lastIndex);
        }
      }
      throw e;
    }
  }

  /** Unlink a domain (iopt_table_remove_domain): unmap, unpin if it was the last, drop its reservations. */
  removeDomain(domain: IommuDomain): void {
    this.domainsRwsem.lock();
    this.iovaRwsem.lock();
    try {
      const idx = this.domains.indexOf(domain);
      if (idx < 0) return;
      const tail = this.domains.pop()!;
      if (tail !== domain) this.domains[idx] = tail;
      const storage = this.domains[0];
      for (const area of this.areas.all()) {
        if (!area.populated) continue;
        area.unmapFrom(domain);
        if (storage) {
          if (area.storageDomain === domain) area.storageDomain = storage;
        } else {
          area.storageDomain = null;
          area.pages.unpinRange(area.firstIndex, area.lastIndex);
        }
      }
      this.reserved.removeOwner(domain);
      this.calculateAlignment();
    } finally {
      this.iovaRwsem.unlock();
      this.domainsRwsem.unlock();
    }
  }

  // ---------------------------------------------------------------- accesses

  /** Join an access (iopt_add_access): 16-bit id space, alignment may rise (EADDRINUSE). */
  addAccess(access: IoptAccess): number {
    this.domainsRwsem.lock();
    this.iovaRwsem.lock();
    try {
      let id = 0;
      while (this.accesses.has(id)) id++;
      if (id > 0xffff) fail('EBUSY', 'all 65536 access slots of this IOAS are in use');
      this.accesses.set(id, access);
      try {
        this.calculateAlignment();
      } catch (e) {
        this.accesses.delete(id);
        throw e;
      }
      return id;
    } finally {
      this.iovaRwsem.unlock();
      this.domainsRwsem.unlock();
    }
  }

  removeAccess(id: number): void {
    this.domainsRwsem.lock();
    this.iovaRwsem.lock();
    try {
      this.accesses.delete(id);
      this.calculateAlignment();
    } finally {
      this.iovaRwsem.unlock();
      this.domainsRwsem.unlock();
    }
  }
}

/** Where a range [start, last] can hold `length` bytes at `align` plus `pageOffset`, if it can. */
function fitIova(start: bigint, last: bigint, align: bigint, pageOffset: bigint, length: bigint): bigint | undefined {
  const up = alignUp(start, align);
  if (up === undefined) return undefined;
  const s = up | pageOffset;
  if (s >= last || last - s < length - 1n) return undefined;
  return s;
}

/** Drop a page container reference; the last one must find nothing pinned. */
export function putPages(pages: IoptPages): void {
  if (--pages.refs === 0 && pages.pinnedCount !== 0)
    throw new Error(`page container at ${hex(pages.uptr)} released with ${pages.pinnedCount} pages still pinned`);
}

/** " for device X" / " for the selftest": who is asking for a reservation. */
function requesterSuffix(owner: ReservedOwner): string {
  if (owner === null) return ' for IOMMU_TEST_OP_ADD_RESERVED';
  const d = (owner as { describe?: () => string }).describe;
  return typeof d === 'function' ? ` for ${d.call(owner)}` : '';
}

function ownerSuffix(owner: ReservedOwner): string {
  if (owner === null) return ' (reserved by IOMMU_TEST_OP_ADD_RESERVED)';
  const d = (owner as { describe?: () => string }).describe;
  return typeof d === 'function' ? ` (reserved by ${d.call(owner)})` : '';
}
