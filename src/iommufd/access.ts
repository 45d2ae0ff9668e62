/**
 * In-kernel accesses (struct iommufd_access, the access half of device.c and pages.c): a driver
 * without a DMA-capable IOMMU path (VFIO mdev, the selftest) reads, writes and pins an IOAS's
 * memory through IOVAs. The object is created by the kAPI, never by an ioctl; user space only
 * sees its id taken and released, and DESTROY on it is always EBUSY (the driver holds a reference).
 */
import { fail, hex, IommuError } from '../lib/error.js';
import { Lock } from '../lib/lockdep.js';
import { PAGE_SIZE, PAGE_SIZE_NUM, U64_MAX } from '../lib/u64.js';
import { IOMMU_READ, IOMMU_WRITE } from '../iommu/domain.js';
import type { AddressSpace, PageFrame } from '../mm/types.js';
import type { IoptArea } from './area.js';
import type { IommufdCtx } from './context.js';
import type { IoPagetable, IoptAccess } from './io-pagetable.js';
import { getIoas, type Ioas } from './ioas.js';
import { IommufdObject, ObjType } from './object.js';
import type { IoptPages } from './pages.js';
import { selftestKnobs } from './selftest.js';

/** iommufd_access_rw / pin flags (IOMMUFD_ACCESS_RW_*). */
export const IOMMUFD_ACCESS_RW_READ = 0;
export const IOMMUFD_ACCESS_RW_WRITE = 1 << 0;
/** The caller is a kernel thread: the fast path borrows the mapping process's mm. */
export const IOMMUFD_ACCESS_RW_KTHREAD = 1 << 1;
/** Test kernels only: force the path that goes through page frames instead of the user VA. */
export const IOMMUFD_ACCESS_RW_SLOW_PATH = 1 << 2;

/** What the driver provides (struct iommufd_access_ops). */
export interface AccessOps {
  /** The driver will call pinPages: the IOAS must then be PAGE_SIZE aligned. */
  readonly needsPinPages: boolean;
  /** Drop every pin inside [iova, iova + length) before returning (called with no iommufd lock held). */
  unmap?(iova: bigint, length: bigint): void;
}

/**
 * One pinned interval of a page container, keyed by its exact [first, last] page indexes (struct
 * iopt_pages_access). Shared by every access that pins exactly that interval of that container.
 */
interface PagesAccessInterval {
  users: number;
}

/** Per-container interval records; a WeakMap so page containers carry no extra field. */
const intervalsOf = new WeakMap<IoptPages, Map<string, PagesAccessInterval>>();

function intervalKey(first: number, last: number): string {
  return `${first}:${last}`;
}

/** A pinned slice made by one pinPages call, for undoing it. */
interface AreaPin {
  area: IoptArea;
  first: number;
  last: number;
}

/** One step of a walk over contiguous, fully created areas (iopt_area_contig_iter). */
interface ContigStep {
  area: IoptArea;
  /** First IOVA of the range inside this area. */
  cur: bigint;
  /** Last IOVA of the range inside this area. */
  last: bigint;
}

/**
 * The areas covering [iova, lastIova] back to back, from the one holding `iova`, stopping at a
 * hole or an area still being created. `done` says whether they reach `lastIova`. The iova lock
 * must be held.
 */
function contigAreas(iopt: IoPagetable, iova: bigint, lastIova: bigint): { steps: ContigStep[]; done: boolean } {
  const steps: ContigStep[] = [];
  let area = iopt.areas.firstIntersecting(iova, iova);
  let cur = iova;
  while (area && area.populated && (steps.length === 0 || area.iova === cur)) {
    const last = lastIova < area.last ? lastIova : area.last;
    steps.push({ area, cur, last });
    if (lastIova <= area.last) return { steps, done: true };
    cur = area.last + 1n;
    area = iopt.areas.nextAfter(area, lastIova);
  }
  return { steps, done: false };
}

function pageIndexOf(area: IoptArea, iova: bigint): number {
  return Number(area.startByteOf(iova) / PAGE_SIZE);
}

function protAllows(area: IoptArea, flags: number): boolean {
  return (area.prot & (flags & IOMMUFD_ACCESS_RW_WRITE ? IOMMU_WRITE : IOMMU_READ)) !== 0;
}

function protName(flags: number): string {
  return flags & IOMMUFD_ACCESS_RW_WRITE ? 'write' : 'read';
}

/**
 * An ACCESS object. The creating driver holds a reference until accessDestroy(); an attached
 * access holds one on its IOAS; the object holds one on the context file.
 */
export class IommufdAccess extends IommufdObject implements IoptAccess {
  readonly type = ObjType.ACCESS;
  readonly iovaAlignment: bigint;
  /** The IOAS pins and rw go to; null while detached or while moving between IOASes. */
  ioas: Ioas | null = null;
  /** The IOAS unpins go to: stays set while a replace/detach waits for the driver's unmap. */
  ioasUnpin: Ioas | null = null;
  /** Our slot in the IOAS's access list. */
  private listId = -1;
  readonly ioasLock = new Lock('access->ioas_lock');

  constructor(
    readonly ctx: IommufdCtx,
    readonly ops: AccessOps,
  ) {
    super();
    this.iovaAlignment = ops.needsPinPages ? PAGE_SIZE : 1n;
  }

  destroy(): void {
    this.ioasLock.lock();
    try {
      if (this.ioas) this.changeIoas(null);
    } finally {
      this.ioasLock.unlock();
    }
    this.ctx.put();
  }

  override describe(): string {
    return `access ${this.id}`;
  }

  /** The IOAS tells its accesses to let go of [iova, iova + length) (iommufd_access_notify_unmap). */
  notifyUnmap(iova: bigint, length: bigint): void {
    if (this.users === 0 || !this.ops.unmap) return;
    this.shortterm++;
    try {
      this.ops.unmap(iova, length);
    } finally {
      this.shortterm--;
    }
  }

  /**
   * Move to `next` (or leave, for null), ioas_lock held: join the new IOAS first, then have the
   * driver drop everything it pinned in the old one (ioas_lock released meanwhile), then leave it.
   */
  private changeIoas(next: Ioas | null): void {
    this.ioasLock.assertHeld();
    const cur = this.ioas;
    if (cur !== this.ioasUnpin) fail('EBUSY', `${this.describe()} is being detached concurrently`);
    if (cur === next) return;
    const oldListId = this.listId;
    this.ioas = null; // no new pins while we move
    if (next) {
      try {
        this.listId = next.iopt.addAccess(this);
      } catch (e) {
        this.ioas = cur;
        throw e;
      }
      next.users++;
    }
    if (cur) {
      if (this.ops.unmap) {
        this.ioasLock.unlock();
        try {
          this.ops.unmap(0n, U64_MAX);
        } finally {
          this.ioasLock.lock();
        }
      }
      cur.iopt.removeAccess(oldListId);
      cur.users--;
    }
    this.ioas = next;
    this.ioasUnpin = next;
  }

  private changeIoasId(id: number): void {
    this.changeIoas(getIoas(this.ctx, id));
  }

  /** iommufd_access_attach: EINVAL if already attached; ENOENT, EBUSY, EADDRINUSE from the IOAS. */
  attach(ioasId: number): void {
    this.ioasLock.lock();
    try {
      if (this.ioas) fail('EINVAL', `${this.describe()} is already attached to IOAS ${this.ioas.id}`);
      this.changeIoasId(ioasId);
    } finally {
      this.ioasLock.unlock();
    }
  }

  /** iommufd_access_replace: ENOENT if not attached; the same IOAS is a no-op. */
  replace(ioasId: number): void {
    this.ioasLock.lock();
    try {
      if (!this.ioas) fail('ENOENT', `${this.describe()} is not attached to an IOAS, so there is nothing to replace`);
      this.changeIoasId(ioasId);
    } finally {
      this.ioasLock.unlock();
    }
  }

  /** iommufd_access_detach (a WARN, here an EINVAL, when not attached). */
  detach(): void {
    this.ioasLock.lock();
    try {
      if (!this.ioas) fail('EINVAL', `${this.describe()} is not attached`);
      this.changeIoas(null);
    } finally {
      this.ioasLock.unlock();
    }
  }

  /**
   * iommufd_access_pin_pages: pin the pages behind [iova, iova + length) and return their frames,
   * one per page index of each area. Undo with unpinPages(iova, length), same arguments.
   */
  pinPages(iova: bigint, length: bigint, flags: number): PageFrame[] {
    if (this.iovaAlignment !== PAGE_SIZE || !this.ops.unmap)
      fail('EINVAL', `${this.describe()} was not created for pinning (needs_pin_pages and an unmap callback)`);
    if (length === 0n) fail('EINVAL', 'length is 0');
    const lastIova = iova + length - 1n;
    if (lastIova > U64_MAX) fail('EOVERFLOW', `IOVA ${hex(iova)} + length ${hex(length)} overflows 64 bits`);

    this.ioasLock.lock();
    try {
      const ioas = this.ioas;
      if (!ioas) fail('ENOENT', `${this.describe()} is not attached to an IOAS`);
      const iopt = ioas.iopt;
      const out: PageFrame[] = [];
      const done: AreaPin[] = [];
      iopt.iovaRwsem.read();
      try {
        const { steps, done: covered } = contigAreas(iopt, iova, lastIova);
        for (let i = 0; i < steps.length; i++) {
          const { area, cur, last } = steps[i]!;
          const isLastStep = i === steps.length - 1 && covered;
          if (area.preventAccess) fail('EINVAL', `${area.describe()} is being unmapped; no new pins are allowed`);
          if (area.startByteOf(cur) % PAGE_SIZE)
            fail('EINVAL', `IOVA ${hex(cur)} is not at a page boundary of the memory behind ${area.describe()}`);
          if (!isLastStep && area.startByteOf(area.last) % PAGE_SIZE !== PAGE_SIZE - 1n)
            fail('EINVAL', `the range continues past ${area.describe()}, which does not end at a page boundary`);
          if (!protAllows(area, flags)) fail('EPERM', `${area.describe()} is not mapped for ${protName(flags)}`);
          const first = pageIndexOf(area, cur);
          const lastIdx = pageIndexOf(area, last);
          addAccessPin(area, first, lastIdx, flags);
          done.push({ area, first, last: lastIdx });
          for (let k = first; k <= lastIdx; k++) out.push(area.pages.frameAt(k)!);
        }
        if (!covered)
          fail('ENOENT', `[${hex(iova)}, ${hex(lastIova)}] is not fully covered by contiguous mappings`);
      } catch (e) {
        for (const p of done) removeAccessPin(p.area, p.first, p.last);
        throw e;
      } finally {
        iopt.iovaRwsem.unlock();
      }
      return out;
    } finally {
      this.ioasLock.unlock();
    }
  }

  /** iommufd_access_unpin_pages: undo one pinPages of exactly (iova, length). */
  unpinPages(iova: bigint, length: bigint): void {
    if (length === 0n) return;
    const lastIova = iova + length - 1n;
    if (lastIova > U64_MAX) return;
    this.ioasLock.lock();
    try {
      const ioas = this.ioasUnpin;
      if (!ioas) return;
      const iopt = ioas.iopt;
      iopt.iovaRwsem.read();
      try {
        for (const { area, cur, last } of contigAreas(iopt, iova, lastIova).steps)
          removeAccessPin(area, pageIndexOf(area, cur), pageIndexOf(area, last));
      } finally {
        iopt.iovaRwsem.unlock();
      }
    } finally {
      this.ioasLock.unlock();
    }
  }

  /**
   * iommufd_access_rw: copy `data.length` bytes between `data` and the memory behind `iova` (any
   * alignment). For reads `data` is filled. `current` is the calling task's address space: when
   * it is the mapping process's own and the slow path is not forced, the copy goes through the
   * user VA, as the kernel's copy_{to,from}_user fast path does.
   */
  rw(iova: bigint, data: Uint8Array, flags: number, current: AddressSpace | null): void {
    const length = BigInt(data.length);
    if (length === 0n) fail('EINVAL', 'length is 0');
    const lastIova = iova + length - 1n;
    if (lastIova > U64_MAX) fail('EOVERFLOW', `IOVA ${hex(iova)} + length ${hex(length)} overflows 64 bits`);

    this.ioasLock.lock();
    try {
      const ioas = this.ioas;
      if (!ioas) fail('ENOENT', `${this.describe()} is not attached to an IOAS`);
      const iopt = ioas.iopt;
      iopt.iovaRwsem.read();
      try {
        const { steps, done } = contigAreas(iopt, iova, lastIova);
        let off = 0;
        for (const { area, cur, last } of steps) {
          if (area.preventAccess) fail('EINVAL', `${area.describe()} is being unmapped; no access is allowed`);
          if (!protAllows(area, flags)) fail('EPERM', `${area.describe()} is not mapped for ${protName(flags)}`);
          const n = Number(last - cur + 1n);
          // One area usually covers it all: no view to make (a typed-array view costs more than a small copy).
          const part = off === 0 && n === data.length ? data : data.subarray(off, off + n);
          pagesRw(area.pages, area.startByteOf(cur), part, flags, current);
          off += n;
        }
        if (!done) fail('ENOENT', `[${hex(iova)}, ${hex(lastIova)}] is not fully covered by contiguous mappings`);
      } finally {
        iopt.iovaRwsem.unlock();
      }
    } finally {
      this.ioasLock.unlock();
    }
  }
}

// ------------------------------------------------------------------ page-container side (pages.c)

/**
 * iopt_area_add_access: an identical interval of the container just gains a user; a new one pins
 * its pages (reusing what domains or other accesses already pinned, else from the mapping process).
 */
function addAccessPin(area: IoptArea, first: number, last: number, flags: number): void {
  const pages = area.pages;
  if (flags & IOMMUFD_ACCESS_RW_WRITE && !pages.writable)
    fail('EPERM', `a write access was requested of memory that was mapped read-only`);
  pages.mutex.lock();
  let intervals: Map<string, PagesAccessInterval> | undefined;
  let existing: PagesAccessInterval | undefined;
  try {
    intervals = intervalsOf.get(pages);
    existing = intervals?.get(intervalKey(first, last));
    if (existing) {
      existing.users++;
      area.numAccesses++;
      return;
    }
  } finally {
    pages.mutex.unlock();
  }
  // pinRange takes pages->mutex itself; nothing else runs in between in this emulator.
  pages.pinRange(first, last);
  if (!intervals) intervalsOf.set(pages, (intervals = new Map()));
  intervals.set(intervalKey(first, last), { users: 1 });
  area.numAccesses++;
}

/** iopt_area_remove_access: the last user of an interval unpins what nobody else needs. */
function removeAccessPin(area: IoptArea, first: number, last: number): void {
  const pages = area.pages;
  const intervals = intervalsOf.get(pages);
  const key = intervalKey(first, last);
  const interval = intervals?.get(key);
  if (!interval) return; // a driver bug (the kernel WARNs): nothing pinned with these bounds
  area.numAccesses--;
  if (--interval.users) return;
  intervals!.delete(key);
  if (!intervals!.size) intervalsOf.delete(pages);
  pages.unpinRange(first, last);
}

/** Number of access pin intervals of a container and their users (tests, inspection). */
export function accessIntervals(pages: IoptPages): { first: number; last: number; users: number }[] {
  const out: { first: number; last: number; users: number }[] = [];
  for (const [k, v] of intervalsOf.get(pages) ?? []) {
    const [a, b] = k.split(':').map(Number) as [number, number];
    out.push({ first: a, last: b, users: v.users });
  }
  return out;
}

/**
 * iopt_pages_rw_access: copy between `data` and container bytes [startByte, startByte + n).
 * Fast path: the caller runs in the mapping mm (or is a kernel thread borrowing it) and copies
 * through the user VA. Otherwise each page comes from an existing pin (domain or access) or is
 * pinned from the mapping mm just for the copy; a gone mm then means EFAULT.
 */
function pagesRw(pages: IoptPages, startByte: bigint, data: Uint8Array, flags: number, current: AddressSpace | null): void {
  const sourceMm = pages.source.mm;
  let changeMm = current !== sourceMm;
  if (flags & IOMMUFD_ACCESS_RW_SLOW_PATH) changeMm = true;
  const write = (flags & IOMMUFD_ACCESS_RW_WRITE) !== 0;
  if (write && !pages.writable) fail('EPERM', `a write access was requested of memory that was mapped read-only`);

  // Byte offsets inside one container are far below 2^53: index arithmetic on numbers.
  const start = Number(startByte);
  const firstIdx = Math.floor(start / PAGE_SIZE_NUM);
  const lastIdx = Math.floor((start + data.length - 1) / PAGE_SIZE_NUM);
  const pageOff = start % PAGE_SIZE_NUM;

  if (!(flags & IOMMUFD_ACCESS_RW_KTHREAD) && changeMm) {
    if (firstIdx === lastIdx && sourceMm.alive()) {
      // One page: a short-term reference to whatever the mapping process has there now.
      const frame = sourceMm.lookupPage(pages.uptr + BigInt(firstIdx) * PAGE_SIZE, write);
      copyFrame(frame, pageOff, data, write);
      return;
    }
    pagesRwSlow(pages, firstIdx, lastIdx, pageOff, data, write);
    return;
  }
  if (changeMm && !sourceMm.alive()) {
    pagesRwSlow(pages, firstIdx, lastIdx, pageOff, data, write);
    return;
  }
  const va = pages.uptr + startByte;
  if (write) sourceMm.copyToUser(va, data);
  else data.set(sourceMm.copyFromUser(va, data.length));
}

function copyFrame(frame: PageFrame, offset: number, data: Uint8Array, write: boolean): void {
  if (write) frame.write(offset, data);
  else data.set(frame.read(offset, data.length));
}

/** A batch element of the pfn reader: 8 bytes of PFN and 4 of run length. */
const BATCH_ELEMENT_BYTES = 12;

/**
 * Pin up to `n` pages from index `idx` for the duration of a copy. Like pin_user_pages, it stops
 * at the first page that cannot be pinned and returns what it got; it fails only if that is none.
 */
function pinForCopy(pages: IoptPages, idx: number, n: number): PageFrame[] {
  const mm = pages.source.mm;
  const out: PageFrame[] = [];
  for (let k = 0; k < n; k++) {
    try {
      out.push(mm.pinPages(pages.uptr + BigInt(idx + k) * PAGE_SIZE, 1, pages.writable)[0]!);
    } catch (e) {
      if (!out.length || !(e instanceof IommuError)) throw e;
      break;
    }
  }
  return out;
}

/**
 * iopt_pages_rw_slow: the pfn reader gathers a batch of pages (those a domain or an access already
 * holds, the rest pinned from the mapping mm just for the copy) and only then copies it. A page
 * that cannot be pinned fails the call before anything of its batch is copied; with the default
 * temporary-memory limit every range an op allows is one batch, so nothing at all is copied.
 * The batch holds limit / 12 runs of consecutive PFNs, and pins are taken limit / 8 pages at a time.
 */
function pagesRwSlow(pages: IoptPages, firstIdx: number, lastIdx: number, pageOff: number, data: Uint8Array, write: boolean): void {
  const npages = lastIdx - firstIdx + 1;
  const limit = selftestKnobs.memoryLimit;
  const maxRuns = Math.floor(Math.min(npages * BATCH_ELEMENT_BYTES, limit) / BATCH_ELEMENT_BYTES);
  const pinChunk = Math.floor(Math.min(npages * 8, limit) / 8);
  const mm = pages.source.mm;
  // Pinned for the copy and not yet in a batch: indexes [upStart, upStart + up.length).
  let up: PageFrame[] = [];
  let upStart = firstIdx;
  // The batch: its frames, and those of them pinned for this copy only (unpinned with the batch).
  const batch: PageFrame[] = [];
  const temps: PageFrame[] = [];
  const unpinBatch = (): void => {
    if (temps.length) mm.unpinPages(temps);
    batch.length = 0;
    temps.length = 0;
  };
  pages.mutex.lock();
  let idx = firstIdx;
  try {
    let done = 0;
    let offset = pageOff;
    while (idx <= lastIdx) {
      let runs = 0;
      let prevPfn = -2;
      while (idx <= lastIdx) {
        let frame = pages.frameAt(idx);
        const temp = !frame;
        if (!frame) {
          if (idx >= upStart + up.length) {
            let holeLast = idx;
            while (holeLast < lastIdx && !pages.frameAt(holeLast + 1)) holeLast++;
            up = pinForCopy(pages, idx, Math.min(holeLast - idx + 1, pinChunk));
            upStart = idx;
          }
          frame = up[idx - upStart]!;
        }
        if (frame.pfn !== prevPfn + 1) {
          if (runs === maxRuns) break;
          runs++;
        }
        prevPfn = frame.pfn;
        batch.push(frame);
        if (temp) temps.push(frame);
        idx++;
      }
      for (const frame of batch) {
        const n = Math.min(PAGE_SIZE_NUM - offset, data.length - done);
        copyFrame(frame, offset, n === data.length ? data : data.subarray(done, done + n), write);
        done += n;
        offset = 0;
      }
      unpinBatch();
    }
  } finally {
    unpinBatch();
    if (idx < upStart + up.length) mm.unpinPages(up.slice(idx - upStart));
    pages.mutex.unlock();
  }
}

// ------------------------------------------------------------------ the kAPI entry points

/**
 * iommufd_access_create: a published ACCESS object (its id is consumed at once) holding a
 * reference for the driver and one on the context file.
 */
export function accessCreate(ctx: IommufdCtx, ops: AccessOps): IommufdAccess {
  const access = ctx.objects.reserve(new IommufdAccess(ctx, ops));
  access.users++; // the calling driver's, until accessDestroy()
  ctx.fileRefs++;
  ctx.objects.finalize(access);
  return access;
}

/** iommufd_access_destroy: drop the driver's reference; the object detaches and goes. */
export function accessDestroy(access: IommufdAccess): void {
  access.ctx.objects.destroyKernel(access);
}
