import { fail, hex, IommuError } from '../lib/error.js';
import { U64_MAX } from '../lib/u64.js';
import type { DirtySink, IommuDomain } from '../iommu/domain.js';
import type { IommuHwptGetDirtyBitmap } from '../uapi/iommufd.js';
import type { IoPagetable } from './io-pagetable.js';
import type { UserAccess } from './ucmd.js';

/** IOMMU_HWPT_SET_DIRTY_TRACKING's work (iopt_set_dirty_tracking). */
export function setDirtyTracking(iopt: IoPagetable, domain: IommuDomain, enable: boolean): void {
  const ops = domain.dirtyOps;
  if (!ops) fail('EOPNOTSUPP', `${domain.describe()} was not allocated with dirty tracking`);
  iopt.iovaRwsem.read();
  try {
    if (enable) {
      // Start from a clean slate: forget whatever was dirtied before tracking was (re)enabled.
      for (const area of iopt.areas.all()) {
        if (area.populated) ops.readAndClearDirty(area.iova, area.length, 0, null);
      }
    }
    ops.setDirtyTracking(enable);
  } finally {
    iopt.iovaRwsem.unlock();
  }
}

/** The range checks of GET_DIRTY_BITMAP (iommufd_check_iova_range). */
function checkRange(iopt: IoPagetable, c: IommuHwptGetDirtyBitmap): void {
  if (c.length === 0n) fail('EINVAL', 'length is 0');
  const last = c.iova + c.length - 1n;
  if (last > U64_MAX) fail('EOVERFLOW', `iova ${hex(c.iova)} + length ${hex(c.length)} overflows 64 bits`);
  const align = iopt.iovaAlignment;
  if (c.iova & (align - 1n) || (last + 1n) & (align - 1n))
    fail('EINVAL', `[${hex(c.iova)}, ${hex(last)}] is not aligned to the IOAS's iova_alignment ${hex(align)}`);
  if (c.pageSize === 0n) fail('EINVAL', 'page_size is 0');
  if (c.iova & (c.pageSize - 1n) || (last + 1n) & (c.pageSize - 1n))
    fail('EINVAL', `[${hex(c.iova)}, ${hex(last)}] is not aligned to page_size ${hex(c.pageSize)}`);
}

/** Below this, IOVAs and lengths (and sums of two of them) are exact as numbers. */
const SAFE_LIMIT = 1n << 52n;

/**
 * Sets bits of the user bitmap. Like the kernel, which writes through pinned pages of the bitmap,
 * it only ever sets bits, and bits in a page of the bitmap it cannot reach are lost. Bits are
 * collected per 4 KiB page of the bitmap and written with one read-modify-write per page at the
 * end (nothing else can observe the bitmap during the call).
 */
class UserBitmap implements DirtySink {
  private readonly shift: bigint;
  /** base and 1 << shift as numbers for record's fast path; baseNum -1 when they are too big. */
  private readonly baseNum: number;
  private readonly pageSizeNum: number;
  /** One past the last bit that lies in a page the bitmap touches. */
  private readonly bitLimit: number;
  /** OR masks per page of the bitmap, indexed from the page holding `data`. */
  private readonly pages = new Map<number, Uint8Array>();
  private readonly firstPage: bigint;
  /** Offset of `data` inside its page. */
  private readonly lead: number;

  constructor(
    private readonly user: UserAccess,
    private readonly data: bigint,
    private readonly base: bigint,
    length: bigint,
    pageSize: bigint,
  ) {
    this.shift = BigInt((pageSize & -pageSize).toString(2).length - 1);
    const unit = 1n << this.shift;
    this.baseNum = base < SAFE_LIMIT && unit < SAFE_LIMIT ? Number(base) : -1;
    this.pageSizeNum = Number(unit);
    const nbits = (length + pageSize - 1n) >> this.shift;
    const endByte = data + ((nbits + 63n) / 64n) * 8n;
    const pageEnd = (endByte + 4095n) & ~4095n;
    this.bitLimit = Number((pageEnd - data) * 8n);
    this.firstPage = data & ~4095n;
    this.lead = Number(data - this.firstPage);
  }

  record(iova: bigint, length: bigint): void {
    let first: number;
    let last: number;
    if (this.baseNum >= 0 && iova < SAFE_LIMIT && length < SAFE_LIMIT) {
      // All below 2^52: exact as numbers, and dividing by a power of two floors like >>.
      const from = Number(iova) - this.baseNum;
      first = Math.floor(from / this.pageSizeNum);
      last = Math.floor((from + Number(length) - 1) / this.pageSizeNum);
    } else {
      first = Number((iova - this.base) >> this.shift);
      last = Number((iova + length - 1n - this.base) >> this.shift);
    }
    if (first < 0) first = 0;
    if (last >= this.bitLimit) last = this.bitLimit - 1;
    for (let bit = first; bit <= last; ) {
      const byte = this.lead + (bit >>> 3);
      const page = byte >>> 12;
      let mask = this.pages.get(page);
      if (!mask) this.pages.set(page, (mask = new Uint8Array(4096)));
      const inPage = byte & 4095;
      if ((bit & 7) === 0 && last - bit >= 7) {
        // Whole bytes at a time.
        const bytes = Math.min((last - bit + 1) >>> 3, 4096 - inPage);
        mask.fill(0xff, inPage, inPage + bytes);
        bit += bytes * 8;
      } else {
        mask[inPage]! |= 1 << (bit & 7);
        bit++;
      }
    }
  }

  /** Write the collected bits; a page of the bitmap that faults loses its bits. */
  flush(): void {
    for (const [page, mask] of this.pages) {
      let lo = 0;
      while (lo < 4096 && mask[lo] === 0) lo++;
      let hi = 4096;
      while (hi > lo && mask[hi - 1] === 0) hi--;
      if (lo >= hi) continue;
      const addr = this.firstPage + BigInt(page) * 4096n + BigInt(lo);
      try {
        const cur = this.user.copyFromUser(addr, hi - lo);
        for (let i = 0; i < cur.length; i++) cur[i]! |= mask[lo + i]!;
        this.user.copyToUser(addr, cur);
      } catch (e) {
        if (!(e instanceof IommuError)) throw e;
      }
    }
  }
}

/**
 * IOMMU_HWPT_GET_DIRTY_BITMAP's work (iopt_read_and_clear_dirty_data): validate, then read and
 * clear the contiguous run of areas starting at iova. Errors of the walk are not reported.
 */
export function readAndClearDirtyBitmap(
  iopt: IoPagetable,
  domain: IommuDomain,
  flags: number,
  c: IommuHwptGetDirtyBitmap,
  user: UserAccess,
): void {
  checkRange(iopt, c);
  const ops = domain.dirtyOps;
  if (!ops) fail('EOPNOTSUPP', `${domain.describe()} was not allocated with dirty tracking`);
  const sink = new UserBitmap(user, c.data, c.iova, c.length, c.pageSize);
  const last = c.iova + c.length - 1n;
  iopt.iovaRwsem.read();
  try {
    let cur = c.iova;
    let area = iopt.areas.firstIntersecting(cur, cur);
    while (area && area.populated && area.iova <= cur) {
      const end = last < area.last ? last : area.last;
      ops.readAndClearDirty(cur, end - cur + 1n, flags, sink);
      if (end === last) break;
      cur = end + 1n;
      area = iopt.areas.firstIntersecting(cur, cur);
    }
  } catch (e) {
    if (!(e instanceof IommuError)) throw e;
  } finally {
    iopt.iovaRwsem.unlock();
  }
  sink.flush();
}
