import { Errno } from '../lib/errno.js';
import { fail, hex, IommuError } from '../lib/error.js';
import { Lock } from '../lib/lockdep.js';
import { U64_MAX } from '../lib/u64.js';
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE } from '../iommu/domain.js';
import {
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IommuIovaRange,
  type IommuIoasAlloc,
  type IommuIoasAllowIovas,
  type IommuIoasCopy,
  type IommuIoasIovaRanges,
  type IommuIoasMap,
  type IommuIoasUnmap,
  type IommuOption,
} from '../uapi/iommufd.js';
import type { IommufdCtx } from './context.js';
import { IoPagetable, putPages } from './io-pagetable.js';
import { IommufdObject, ObjType } from './object.js';
import { IoptPages } from './pages.js';
import type { Range } from './ranges.js';
import type { Ucmd } from './ucmd.js';

/** Test kernels let IOAS_COPY carry this flag: src_iova then names "area n + offset". */
export const MOCK_FLAGS_ACCESS_SYZ = 1 << 16;

const MAP_FLAGS = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;

/** An I/O address space (struct iommufd_ioas). */
export class Ioas extends IommufdObject {
  readonly type = ObjType.IOAS;
  readonly iopt: IoPagetable;
  /** HWPT_PAGING objects linked to this IOAS, in creation order. */
  readonly hwptList: IommufdObject[] = [];
  readonly mutex = new Lock('ioas->mutex');

  constructor(private readonly ctx: IommufdCtx) {
    super();
    this.iopt = new IoPagetable('ioas');
  }

  destroy(): void {
    const r = this.iopt.unmapAll();
    if (r.error && r.error.errnoName !== 'ENOENT') throw new Error(`IOAS destroy could not unmap: ${r.error.message}`);
    // Test-kernel reservations (owner none) and the allowed list die with the table.
    this.iopt.removeReserved(null);
    this.iopt.setAllowIovas([]);
    if (this.ctx.vfioIoas === this) this.ctx.vfioIoas = null;
  }
}

export function getIoas(ctx: IommufdCtx, id: number): Ioas {
  return ctx.objects.get(id, ObjType.IOAS) as Ioas;
}

function iommuProt(flags: number): number {
  let prot = IOMMU_CACHE;
  if (flags & IOMMU_IOAS_MAP_WRITEABLE) prot |= IOMMU_WRITE;
  if (flags & IOMMU_IOAS_MAP_READABLE) prot |= IOMMU_READ;
  return prot;
}

/** IOMMU_IOAS_ALLOC */
export function ioasAlloc(ctx: IommufdCtx, ucmd: Ucmd<IommuIoasAlloc>): number {
  const cmd = ucmd.cmd;
  if (cmd.flags) fail('EOPNOTSUPP', `flags ${hex(cmd.flags)} are not supported (must be 0)`);
  const ioas = ctx.objects.reserve(new Ioas(ctx));
  cmd.outIoasId = ioas.id;
  try {
    ucmd.respond();
  } catch (e) {
    ctx.objects.abortAndDestroy(ioas);
    throw e;
  }
  ctx.objects.finalize(ioas);
  return 0;
}

/** IOMMU_IOAS_IOVA_RANGES */
export function ioasIovaRanges(ctx: IommufdCtx, ucmd: Ucmd<IommuIoasIovaRanges>): number {
  const cmd = ucmd.cmd;
  if (cmd.reserved) fail('EOPNOTSUPP', `__reserved is ${hex(cmd.reserved)}, must be 0`);
  const ioas = getIoas(ctx, cmd.ioasId);
  const iopt = ioas.iopt;
  iopt.iovaRwsem.read();
  try {
    const capacity = cmd.numIovas;
    const ranges = iopt.iovaRanges();
    cmd.numIovas = 0;
    cmd.outIovaAlignment = iopt.iovaAlignment;
    for (const r of ranges) {
      if (cmd.numIovas < capacity) {
        const elm = IommuIovaRange.encode({ start: r.start, last: r.last });
        ucmd.user.copyToUser(cmd.allowedIovas + BigInt(cmd.numIovas) * BigInt(IommuIovaRange.size), elm);
      }
      cmd.numIovas++;
    }
    ucmd.respond();
    if (cmd.numIovas > capacity)
      fail('EMSGSIZE', `the IOAS has ${cmd.numIovas} usable IOVA ranges but the array holds only ${capacity}`);
  } finally {
    iopt.iovaRwsem.unlock();
  }
  return 0;
}

/** Entries of the user array read per copy (one page's worth); a faulting chunk is re-read entry by entry. */
const ALLOW_CHUNK_ENTRIES = 4096 / IommuIovaRange.size;

/**
 * IOMMU_IOAS_ALLOW_IOVAS. The kernel (iommufd_ioas_load_iovas) takes the entries in array order and
 * stops at the first one that cannot be read (EFAULT), is empty or a single address (EINVAL) or
 * overlaps an entry before it (EINVAL). Checking each entry against all earlier ones is quadratic,
 * so: read up to the first unreadable or degenerate entry, sort those by start and look at
 * neighbours (a set of ranges has an overlap iff two neighbours in start order overlap). Without
 * an overlap the first bad entry, if any, decides. With one, the entry the kernel stops at is the
 * smallest j whose prefix [0, j] has an overlap, found by bisection over that neighbour check.
 */
export function ioasAllowIovas(ctx: IommufdCtx, ucmd: Ucmd<IommuIoasAllowIovas>): number {
  const cmd = ucmd.cmd;
  if (cmd.reserved) fail('EOPNOTSUPP', `__reserved is ${hex(cmd.reserved)}, must be 0`);
  const ioas = getIoas(ctx, cmd.ioasId);
  const { starts, lasts, stop } = loadAllowedIovas(ucmd, cmd);
  const n = starts.length;
  // Entries in start order (ties by index): numbers compare much faster than bigints.
  const hi = new Float64Array(n);
  const lo = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    hi[i] = Number(starts[i]! >> 32n);
    lo[i] = Number(starts[i]! & 0xffff_ffffn);
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => hi[a]! - hi[b]! || lo[a]! - lo[b]! || a - b);
  /** Whether two of entries [0, upTo] overlap: some entry starts at or below the furthest last before it in start order. */
  const overlapUpTo = (upTo: number): boolean => {
    let prev = -1;
    for (const i of order) {
      if (i > upTo) continue;
      if (prev >= 0 && starts[i]! <= lasts[prev]!) return true;
      if (prev < 0 || lasts[i]! > lasts[prev]!) prev = i;
    }
    return false;
  };
  if (n && overlapUpTo(n - 1)) {
    let lowJ = 1;
    let highJ = n - 1;
    while (lowJ < highJ) {
      const mid = (lowJ + highJ) >> 1;
      if (overlapUpTo(mid)) highJ = mid;
      else lowJ = mid + 1;
    }
    const j = highJ;
    // The lowest-addressed earlier entry it overlaps.
    const k = order.find((i) => i < j && starts[i]! <= lasts[j]! && starts[j]! <= lasts[i]!)!;
    fail(
      'EINVAL',
      `allowed range ${j} [${hex(starts[j]!)}, ${hex(lasts[j]!)}] overlaps range ${k} [${hex(starts[k]!)}, ${hex(lasts[k]!)}] given earlier`,
    );
  }
  if (stop) throw stop;
  ioas.iopt.setAllowIovas(order.map((i) => ({ start: starts[i]!, last: lasts[i]! })));
  return 0;
}

/**
 * Read ALLOW_IOVAS entries up to the first one that cannot be read or is empty or a single
 * address; `stop` is that entry's refusal. Reads a page's worth at a time.
 */
function loadAllowedIovas(ucmd: Ucmd<IommuIoasAllowIovas>, cmd: IommuIoasAllowIovas): { starts: bigint[]; lasts: bigint[]; stop?: IommuError } {
  const n = cmd.numIovas;
  const size = IommuIovaRange.size;
  const starts: bigint[] = [];
  const lasts: bigint[] = [];
  let chunk: Uint8Array = new Uint8Array(0);
  let view = new DataView(chunk.buffer);
  let chunkFirst = 0;
  let chunkCount = 0;
  for (let i = 0; i < n; i++) {
    if (i >= chunkFirst + chunkCount) {
      const at = cmd.allowedIovas + BigInt(i) * BigInt(size);
      const count = Math.min(n - i, ALLOW_CHUNK_ENTRIES);
      try {
        chunk = ucmd.user.copyFromUser(at, count * size);
        chunkCount = count;
      } catch (e) {
        if (!(e instanceof IommuError) || e.errnoName !== 'EFAULT') throw e;
        try {
          chunk = ucmd.user.copyFromUser(at, size);
          chunkCount = 1;
        } catch (e2) {
          if (!(e2 instanceof IommuError) || e2.errnoName !== 'EFAULT') throw e2;
          return { starts, lasts, stop: new IommuError(e2.errno, `reading allowed range ${i} of ${n} at ${hex(at)} faulted: ${e2.explanation}`) };
        }
      }
      chunkFirst = i;
      view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    }
    const off = (i - chunkFirst) * size;
    const start = view.getBigUint64(off, true);
    const last = view.getBigUint64(off + 8, true);
    if (start >= last)
      return {
        starts,
        lasts,
        stop: new IommuError(Errno.EINVAL, `allowed range ${i} [${hex(start)}, ${hex(last)}] is empty or a single address (start must be below last)`),
      };
    starts.push(start);
    lasts.push(last);
  }
  return { starts, lasts };
}

/** IOMMU_IOAS_MAP */
export function ioasMap(ctx: IommufdCtx, ucmd: Ucmd<IommuIoasMap>): number {
  const cmd = ucmd.cmd;
  if (cmd.flags & ~MAP_FLAGS) fail('EOPNOTSUPP', `unknown flags ${hex((cmd.flags & ~MAP_FLAGS) >>> 0)}`);
  if (cmd.reserved) fail('EOPNOTSUPP', `__reserved is ${hex(cmd.reserved)}, must be 0`);
  if (cmd.iova === U64_MAX || cmd.length === U64_MAX)
    fail('EOVERFLOW', `iova ${hex(cmd.iova)} or length ${hex(cmd.length)} is U64_MAX`);
  if (!(cmd.flags & (IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE)))
    fail('EINVAL', 'neither IOMMU_IOAS_MAP_READABLE nor IOMMU_IOAS_MAP_WRITEABLE is set');
  const ioas = getIoas(ctx, cmd.ioasId);
  const pages = IoptPages.create(cmd.userVa, cmd.length, (cmd.flags & IOMMU_IOAS_MAP_WRITEABLE) !== 0, ucmd.task);
  if (ctx.accountMode === 2 && pages.accountMode === 1) pages.accountMode = 2;
  // mapPages' first refusal, made here: a refusal thrown out of the try below is unwound twice
  // more, and V8 does not re-optimize functions that mostly exit by throwing (the selftest sends
  // 24k misaligned lengths in a row).
  const refusal = ioas.iopt.lengthRefusal(cmd.length);
  if (refusal) {
    putPages(pages);
    fail('EINVAL', refusal);
  }
  const fixed = (cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA) !== 0;
  // The literal 0n is one shared constant; a computed zero would be a new heap object per area.
  const startByte = pages.uptr === cmd.userVa ? 0n : cmd.userVa - pages.uptr;
  try {
    cmd.iova = ioas.iopt.mapPages(
      [{ pages, startByte, length: cmd.length }],
      cmd.length,
      fixed ? cmd.iova : undefined,
      iommuProt(cmd.flags),
    );
  } catch (e) {
    putPages(pages);
    throw e;
  }
  // The mapping stays even if this write-back faults.
  ucmd.respond();
  return 0;
}

/**
 * In test kernels, translate {u32 nth area, u32 offset} in src_iova into an IOVA. The sum is an
 * unsigned long in the kernel, so an offset past the top of the last area wraps around to low
 * IOVAs. Only src_iova is converted; dst_iova is used as given.
 */
function syzConvertIova(ctx: IommufdCtx, cmd: IommuIoasCopy): void {
  if (!(cmd.flags & MOCK_FLAGS_ACCESS_SYZ)) return;
  cmd.flags &= ~MOCK_FLAGS_ACCESS_SYZ;
  const obj = ctx.objects.peek(cmd.srcIoasId);
  if (!obj || obj.type !== ObjType.IOAS) return;
  const nth = Number(cmd.srcIova & 0xffff_ffffn);
  const offset = cmd.srcIova >> 32n;
  let i = 0;
  for (const area of (obj as Ioas).iopt.areas.all()) {
    if (i++ === nth) {
      cmd.srcIova = BigInt.asUintN(64, area.iova + offset);
      return;
    }
  }
  cmd.srcIova = 0n;
}

/** IOMMU_IOAS_COPY */
export function ioasCopy(ctx: IommufdCtx, ucmd: Ucmd<IommuIoasCopy>, testKernel = true): number {
  const cmd = ucmd.cmd;
  if (testKernel) syzConvertIova(ctx, cmd);
  if (cmd.flags & ~MAP_FLAGS) fail('EOPNOTSUPP', `unknown flags ${hex((cmd.flags & ~MAP_FLAGS) >>> 0)}`);
  if (cmd.length === U64_MAX || cmd.srcIova === U64_MAX || cmd.dstIova === U64_MAX)
    fail('EOVERFLOW', `length ${hex(cmd.length)}, src_iova ${hex(cmd.srcIova)} or dst_iova ${hex(cmd.dstIova)} is U64_MAX`);
  if (!(cmd.flags & (IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE)))
    fail('EINVAL', 'neither IOMMU_IOAS_MAP_READABLE nor IOMMU_IOAS_MAP_WRITEABLE is set');
  const src = getIoas(ctx, cmd.srcIoasId);
  const slices = src.iopt.getPages(cmd.srcIova, cmd.length);
  try {
    const dst = getIoas(ctx, cmd.dstIoasId);
    const fixed = (cmd.flags & IOMMU_IOAS_MAP_FIXED_IOVA) !== 0;
    cmd.dstIova = dst.iopt.mapPages(slices, cmd.length, fixed ? cmd.dstIova : undefined, iommuProt(cmd.flags));
    // The new areas now own the slices' references.
    slices.length = 0;
  } finally {
    for (const s of slices) putPages(s.pages);
  }
  ucmd.respond();
  return 0;
}

/** IOMMU_IOAS_UNMAP */
export function ioasUnmap(ctx: IommufdCtx, ucmd: Ucmd<IommuIoasUnmap>): number {
  const cmd = ucmd.cmd;
  const ioas = getIoas(ctx, cmd.ioasId);
  let unmapped: bigint;
  if (cmd.iova === 0n && cmd.length === U64_MAX) {
    const r = ioas.iopt.unmapAll();
    if (r.error) throw r.error;
    unmapped = r.unmapped;
  } else {
    if (cmd.iova === U64_MAX || cmd.length === U64_MAX)
      fail('EOVERFLOW', `iova ${hex(cmd.iova)} or length ${hex(cmd.length)} is U64_MAX`);
    if (cmd.length === 0n) fail('EINVAL', 'length is 0');
    const last = cmd.iova + cmd.length - 1n;
    if (last > U64_MAX) fail('EOVERFLOW', `iova ${hex(cmd.iova)} + length ${hex(cmd.length)} overflows 64 bits`);
    const r = ioas.iopt.unmapRange(cmd.iova, last);
    if (r.error) throw r.error;
    if (r.unmapped === 0n) fail('ENOENT', `nothing is mapped in [${hex(cmd.iova)}, ${hex(last)}]`);
    unmapped = r.unmapped;
  }
  cmd.length = unmapped;
  ucmd.respond();
  return 0;
}

/** IOMMU_OPTION for per-IOAS options (IOMMU_OPTION_HUGE_PAGES). */
export function ioasOption(ctx: IommufdCtx, cmd: IommuOption): void {
  if (cmd.reserved) fail('EOPNOTSUPP', `__reserved is ${hex(cmd.reserved)}, must be 0`);
  const ioas = getIoas(ctx, cmd.objectId);
  if (cmd.optionId !== IOMMU_OPTION_HUGE_PAGES) fail('EOPNOTSUPP', `unknown option_id ${cmd.optionId}`);
  if (cmd.op === IOMMU_OPTION_OP_GET) {
    cmd.val64 = ioas.iopt.disableLargePages ? 0n : 1n;
    return;
  }
  if (cmd.op !== IOMMU_OPTION_OP_SET) fail('EOPNOTSUPP', `unknown op ${cmd.op}`);
  if (cmd.val64 === 0n) ioas.iopt.disableLarge();
  else if (cmd.val64 === 1n) ioas.iopt.enableLarge();
  else fail('EINVAL', `IOMMU_OPTION_HUGE_PAGES takes 0 or 1, not ${cmd.val64}`);
}
