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

/**
 * Sets bits of the user bitmap, read-modify-write through user memory. Like the kernel, which
 * writes through pinned pages of the bitmap, it only ever sets bits, and a bitmap it cannot
 * reach just loses them.
 */
class UserBitmap implements DirtySink {
  private readonly shift: bigint;
  /** One past the last bit that lies in a page the bitmap touches. */
  private readonly bitLimit: bigint;

  constructor(
    private readonly user: UserAccess,
    private readonly data: bigint,
    private readonly base: bigint,
    length: bigint,
    pageSize: bigint,
  ) {
    this.shift = BigInt((pageSize & -pageSize).toString(2).length - 1);
    const nbits = (length + pageSize - 1n) >> this.shift;
    const endByte = data + ((nbits + 63n) / 64n) * 8n;
    const pageEnd = (endByte + 4095n) & ~4095n;
    this.bitLimit = (pageEnd - data) * 8n;
  }

  record(iova: bigint, length: bigint): void {
    let first = (iova - this.base) >> this.shift;
    let last = (iova + length - 1n - this.base) >> this.shift;
    if (first < 0n) first = 0n;
    if (last >= this.bitLimit) last = this.bitLimit - 1n;
    for (let bit = first; bit <= last; ) {
      const byteAddr = this.data + bit / 8n;
      try {
        const b = this.user.copyFromUser(byteAddr, 1);
        let v = b[0]!;
        while (bit <= last && this.data + bit / 8n === byteAddr) {
          v |= 1 << Number(bit % 8n);
          bit++;
        }
        this.user.copyToUser(byteAddr, Uint8Array.of(v));
      } catch (e) {
        if (!(e instanceof IommuError)) throw e;
        bit = (bit / 8n + 1n) * 8n;
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
}
