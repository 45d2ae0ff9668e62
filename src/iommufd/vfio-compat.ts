/**
 * The VFIO type1 container ioctls that iommufd answers on its own file (vfio_compat.c), so a
 * VFIO program can use /dev/iommu, or a /dev/vfio/vfio linked to it, as its container. They act
 * on the "compat IOAS" (ctx.vfioIoas, chosen with IOMMU_VFIO_IOAS or created when VFIO attaches
 * a group). Their structs carry their own argsz; the ioctl numbers carry no size, so there are
 * none of iommufd's extensible-struct rules: each handler reads its fixed minimum and checks
 * argsz itself.
 */
import { fail, hex } from '../lib/error.js';
import { PAGE_SIZE, U32_MAX, U64_MAX, u64 } from '../lib/u64.js';
import { AccountMode } from '../mm/accounting.js';
import type { Task } from '../mm/types.js';
import { IOMMU_CACHE, IOMMU_READ, IOMMU_WRITE } from '../iommu/domain.js';
import { ioctlName } from '../uapi/ioctl.js';
import {
  VFIO_API_VERSION,
  VFIO_CAP_IOVA_RANGE_ENTRIES_OFFSET,
  VFIO_CHECK_EXTENSION,
  VFIO_DMA_CC_IOMMU,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_NOIOMMU_IOMMU,
  VFIO_SET_IOMMU,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1_NESTING_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  VFIO_UNMAP_ALL,
  VFIO_UPDATE_VADDR,
  VfioInfoCapHeader,
  VfioIommuType1DmaMap,
  VfioIommuType1DmaUnmap,
  VfioIommuType1Info,
  VfioIommuType1InfoCapIovaRange,
  VfioIommuType1InfoDmaAvail,
  VfioIovaRange,
} from '../uapi/vfio.js';
import type { IommufdCtx } from './context.js';
import type { Ioas } from './ioas.js';
import { putPages } from './io-pagetable.js';
import { IoptPages } from './pages.js';
import type { UserAccess } from './ucmd.js';

/** The kernel is built with CONFIG_VFIO_NOIOMMU (Debian's is): CHECK_EXTENSION(NOIOMMU) says 1. */
export const CONFIG_VFIO_NOIOMMU = true;

/** Bytes each handler copies in before looking at argsz (offsetofend of the last input field). */
const INFO_MINSZ = 16; // argsz, flags, iova_pgsizes
const MAP_MINSZ = VfioIommuType1DmaMap.size; // 32
const UNMAP_MINSZ = VfioIommuType1DmaUnmap.size; // 24

/** get_compat_ioas(): the compat IOAS, or ENODEV. */
function compatIoas(ctx: IommufdCtx): Ioas {
  const ioas = ctx.vfioIoas;
  if (!ioas || !ioas.finalized)
    fail('ENODEV', 'no compat IOAS: set one with IOMMU_VFIO_IOAS or attach a VFIO group to this container first');
  return ioas;
}

/**
 * Serve a VFIO container ioctl on an iommufd file. Returns the ioctl's result (>= 0) or throws
 * the kernel's errno; anything not served is ENOTTY. `arg` is the pointer (or, for
 * CHECK_EXTENSION and SET_IOMMU, the integer) passed to ioctl(2).
 */
export function vfioCompatIoctl(ctx: IommufdCtx, task: Task, cmd: number, arg: bigint, user: UserAccess): number {
  switch (cmd >>> 0) {
    case VFIO_GET_API_VERSION:
      return VFIO_API_VERSION;
    case VFIO_SET_IOMMU:
      return setIommu(ctx, task, arg);
    case VFIO_CHECK_EXTENSION:
      return checkExtension(ctx, arg);
    case VFIO_IOMMU_GET_INFO:
      return getInfo(ctx, arg, user);
    case VFIO_IOMMU_MAP_DMA:
      return mapDma(ctx, task, arg, user);
    case VFIO_IOMMU_UNMAP_DMA:
      return unmapDma(ctx, arg, user);
    default:
      fail('ENOTTY', `${ioctlName(cmd)} is neither an iommufd ioctl nor a VFIO container ioctl iommufd serves`);
  }
}

/** VFIO_CHECK_EXTENSION */
export function checkExtension(ctx: IommufdCtx, type: bigint): number {
  switch (type) {
    case BigInt(VFIO_TYPE1_IOMMU):
    case BigInt(VFIO_TYPE1v2_IOMMU):
    case BigInt(VFIO_UNMAP_ALL):
      return ctx.noIommuMode ? 0 : 1;
    case BigInt(VFIO_NOIOMMU_IOMMU):
      return CONFIG_VFIO_NOIOMMU ? 1 : 0;
    case BigInt(VFIO_DMA_CC_IOMMU):
      return dmaCcIommu(ctx);
    case BigInt(VFIO_TYPE1_NESTING_IOMMU): // obsolete, never offered
    case BigInt(VFIO_UPDATE_VADDR): // VFIO_DMA_MAP_FLAG_VADDR is not emulated
    default:
      return 0;
  }
}

/** DMA_CC_IOMMU: 1 iff every HWPT of the compat IOAS enforces cache coherency (vacuously 1). */
function dmaCcIommu(ctx: IommufdCtx): number {
  const ioas = compatIoas(ctx);
  ioas.mutex.lock();
  try {
    for (const h of ioas.hwptList) if ((h as { enforceCacheCoherency?: boolean }).enforceCacheCoherency !== true) return 0;
    return 1;
  } finally {
    ioas.mutex.unlock();
  }
}

/** VFIO_SET_IOMMU: TYPE1 turns large pages off on the compat IOAS so any page can be unmapped. */
export function setIommu(ctx: IommufdCtx, task: Task, type: bigint): number {
  const noIommu = ctx.noIommuMode;
  if (CONFIG_VFIO_NOIOMMU && type === BigInt(VFIO_NOIOMMU_IOMMU) && noIommu) {
    if (!task.capable('CAP_SYS_RAWIO'))
      fail('EPERM', `VFIO_NOIOMMU_IOMMU needs CAP_SYS_RAWIO, which pid ${task.pid} lacks`);
    return 0;
  }
  if (type !== BigInt(VFIO_TYPE1_IOMMU) && type !== BigInt(VFIO_TYPE1v2_IOMMU))
    fail('EINVAL', `iommu type ${type} is not VFIO_TYPE1_IOMMU (1) or VFIO_TYPE1v2_IOMMU (3)`);
  if (noIommu) fail('EINVAL', `the container is in no-iommu mode, so iommu type ${type} cannot be set`);
  const ioas = compatIoas(ctx);
  if (type === BigInt(VFIO_TYPE1_IOMMU)) ioas.iopt.disableLarge();
  return 0;
}

/** iommufd_get_pagesizes(): what GET_INFO reports as iova_pgsizes. */
function pageSizes(ioas: Ioas): bigint {
  const iopt = ioas.iopt;
  iopt.domainsRwsem.read();
  try {
    let bitmap = U64_MAX;
    for (const d of iopt.domains) bitmap &= d.pgsizeBitmap;
    // As VFIO type1 does: sizes below the CPU page collapse into PAGE_SIZE.
    if (bitmap & (PAGE_SIZE - 1n)) bitmap = (bitmap & ~(PAGE_SIZE - 1n)) | PAGE_SIZE;
    return bitmap > iopt.iovaAlignment ? bitmap : iopt.iovaAlignment;
  } finally {
    iopt.domainsRwsem.unlock();
  }
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Fill the DMA_AVAIL capability at `at` if `avail` bytes hold it; returns its size. */
function fillCapDmaAvail(user: UserAccess, at: bigint, avail: number): number {
  const size = VfioIommuType1InfoDmaAvail.size;
  if (avail >= size)
    user.copyToUser(
      at,
      VfioIommuType1InfoDmaAvail.encode({
        header: { id: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, version: 1, next: 0 },
        // iommufd's limit is the memory cgroup's; it reports U32_MAX (s390 QEMU needs > U16_MAX).
        avail: U32_MAX,
      }),
    );
  return size;
}

/**
 * Fill the IOVA_RANGE capability at `at`: each range that fits is written, the header only if
 * all of them fit. Returns the size the whole capability needs.
 */
function fillCapIovaRange(ioas: Ioas, user: UserAccess, at: bigint, avail: number): number {
  const entry = VfioIovaRange.size;
  const base = VFIO_CAP_IOVA_RANGE_ENTRIES_OFFSET;
  let nr = 0;
  for (const r of ioas.iopt.iovaRanges()) {
    if (avail >= base + entry * (nr + 1))
      user.copyToUser(at + BigInt(base + entry * nr), VfioIovaRange.encode({ start: r.start, end: r.last }));
    nr++;
  }
  if (avail >= base + entry * nr)
    user.copyToUser(
      at,
      VfioIommuType1InfoCapIovaRange.encode({
        header: { id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, version: 1, next: 0 },
        nrIovas: nr,
        reserved: 0,
      }),
    );
  return base + entry * nr;
}

/** VFIO_IOMMU_GET_INFO */
export function getInfo(ctx: IommufdCtx, arg: bigint, user: UserAccess): number {
  const raw = new Uint8Array(VfioIommuType1Info.size);
  raw.set(user.copyFromUser(arg, INFO_MINSZ));
  const info = VfioIommuType1Info.decode(raw);
  if (info.argsz < INFO_MINSZ)
    fail('EINVAL', `argsz ${info.argsz} is below the ${INFO_MINSZ} bytes of argsz, flags and iova_pgsizes`);
  const argsz = info.argsz;
  const writeBack = Math.min(argsz, VfioIommuType1Info.size);
  const ioas = compatIoas(ctx);

  info.flags = VFIO_IOMMU_INFO_PGSIZES;
  info.iovaPgsizes = pageSizes(ioas);
  info.capOffset = 0;

  const iopt = ioas.iopt;
  iopt.iovaRwsem.read();
  try {
    let total = VfioIommuType1Info.size;
    let lastCap: number | undefined;
    const fills = [
      (at: bigint, avail: number) => fillCapDmaAvail(user, at, avail),
      (at: bigint, avail: number) => fillCapIovaRange(ioas, user, at, avail),
    ];
    for (const fill of fills) {
      const size = argsz > total ? fill(arg + BigInt(total), argsz - total) : fill(0n, 0);
      // Link the previous capability to this one only when this one's offset is inside argsz.
      if (lastCap !== undefined && argsz >= total) {
        const next = new Uint8Array(4);
        new DataView(next.buffer).setUint32(0, total, true);
        user.copyToUser(arg + BigInt(lastCap + VfioInfoCapHeader.fields.next.offset), next);
      }
      lastCap = total;
      total += align8(size);
    }
    // With too small an argsz only some capabilities are there; argsz says how much is needed.
    if (argsz >= total) info.capOffset = VfioIommuType1Info.size;
    info.argsz = total;
    info.flags |= VFIO_IOMMU_INFO_CAPS;
    user.copyToUser(arg, VfioIommuType1Info.encode(info).subarray(0, writeBack));
  } finally {
    iopt.iovaRwsem.unlock();
  }
  return 0;
}

/** VFIO_IOMMU_MAP_DMA: a fixed-IOVA map of user memory into the compat IOAS; nothing is written back. */
export function mapDma(ctx: IommufdCtx, task: Task, arg: bigint, user: UserAccess): number {
  const map = VfioIommuType1DmaMap.decode(user.copyFromUser(arg, MAP_MINSZ));
  const supported = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
  if (map.argsz < MAP_MINSZ) fail('EINVAL', `argsz ${map.argsz} is below sizeof(struct vfio_iommu_type1_dma_map) ${MAP_MINSZ}`);
  if (map.flags & ~supported)
    fail('EINVAL', `flags ${hex(map.flags & ~supported)} are not supported (only READ and WRITE; VADDR is not emulated)`);
  // Neither READ nor WRITE is allowed here, unlike IOAS_MAP; a domain's page table may refuse it.
  let prot = IOMMU_CACHE;
  if (map.flags & VFIO_DMA_MAP_FLAG_READ) prot |= IOMMU_READ;
  if (map.flags & VFIO_DMA_MAP_FLAG_WRITE) prot |= IOMMU_WRITE;
  const ioas = compatIoas(ctx);

  // The same io_pagetable path as IOAS_MAP with FIXED_IOVA, and the context's accounting mode.
  const pages = IoptPages.create(map.vaddr, map.size, (prot & IOMMU_WRITE) !== 0, task);
  if (ctx.accountMode === AccountMode.MM && pages.accountMode === AccountMode.USER) pages.accountMode = AccountMode.MM;
  try {
    ioas.iopt.mapPages([{ pages, startByte: map.vaddr - pages.uptr, length: map.size }], map.size, map.iova, prot);
  } catch (e) {
    putPages(pages);
    throw e;
  }
  return 0;
}

/**
 * VFIO_IOMMU_UNMAP_DMA. An empty range succeeds with size 0. With TYPE1 (large pages off) the
 * areas at both ends of the range are split first, so any page-granular sub-range can go; with
 * TYPE1v2 a range that cuts a mapping is ENOENT. `size` is written back with the bytes unmapped,
 * also when the unmap stopped part way.
 */
export function unmapDma(ctx: IommufdCtx, arg: bigint, user: UserAccess): number {
  const bytes = user.copyFromUser(arg, UNMAP_MINSZ);
  const unmap = VfioIommuType1DmaUnmap.decode(bytes);
  if (unmap.argsz < UNMAP_MINSZ)
    fail('EINVAL', `argsz ${unmap.argsz} is below sizeof(struct vfio_iommu_type1_dma_unmap) ${UNMAP_MINSZ}`);
  if (unmap.flags & ~VFIO_DMA_UNMAP_FLAG_ALL)
    fail(
      'EINVAL',
      `flags ${hex(unmap.flags & ~VFIO_DMA_UNMAP_FLAG_ALL)} are not supported (only VFIO_DMA_UNMAP_FLAG_ALL; dirty bitmaps and VADDR are not emulated)`,
    );
  const ioas = compatIoas(ctx);
  const iopt = ioas.iopt;

  let unmapped = 0n;
  let error: unknown;
  if (unmap.flags & VFIO_DMA_UNMAP_FLAG_ALL) {
    if (unmap.iova !== 0n || unmap.size !== 0n)
      fail('EINVAL', `VFIO_DMA_UNMAP_FLAG_ALL needs iova and size 0, not ${hex(unmap.iova)} and ${hex(unmap.size)}`);
    const r = iopt.unmapAll();
    unmapped = r.unmapped;
    error = r.error;
  } else {
    if (iopt.disableLargePages) {
      // Type1 v1: cut at the last byte of the range and just before its first (unless that is 0).
      const cuts = [u64(unmap.iova + unmap.size - 1n)];
      if (unmap.iova !== 0n) cuts.push(unmap.iova - 1n);
      iopt.cutIova(cuts);
    }
    try {
      if (unmap.size === 0n) fail('EINVAL', 'size is 0');
      const last = unmap.iova + unmap.size - 1n;
      if (last > U64_MAX) fail('EOVERFLOW', `iova ${hex(unmap.iova)} + size ${hex(unmap.size)} overflows 64 bits`);
      const r = iopt.unmapRange(unmap.iova, last);
      unmapped = r.unmapped;
      error = r.error;
    } catch (e) {
      error = e;
    }
  }
  unmap.size = unmapped;
  user.copyToUser(arg, VfioIommuType1DmaUnmap.encode(unmap));
  if (error) throw error;
  return 0;
}
