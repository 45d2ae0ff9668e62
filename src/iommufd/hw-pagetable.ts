import { fail, hex } from '../lib/error.js';
import { kernelWarn } from '../lib/warn.js';
import type { IommuDomain } from '../iommu/domain.js';
import { UserData, UserDataArray } from '../iommu/user-data.js';
import {
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_FAULT_ID_VALID,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  type IommuHwptAlloc,
  type IommuHwptGetDirtyBitmap,
  type IommuHwptInvalidate,
  type IommuHwptSetDirtyTracking,
} from '../uapi/iommufd.js';
import type { IommufdCtx } from './context.js';
import { getDevice, hwptAttach, hwptDetach, type IommufdDevice } from './device.js';
import { readAndClearDirtyBitmap, setDirtyTracking } from './dirty.js';
import type { Ioas } from './ioas.js';
import { IommufdObject, ObjType, objTypeName } from './object.js';
import type { Ucmd } from './ucmd.js';

/** What a HWPT needs of a fault queue object (fault.ts). */
export interface HwptFaultQueue extends IommufdObject {
  /** Answer INVALID to every group of this attachment still queued or awaiting a response. */
  autoRespond(hwpt: Hwpt, handle: object | null): void;
  /** Deliver a fault group to user space (the domain's iopf handler). */
  deliver(hwpt: Hwpt, group: unknown): void;
}

/** Common part of paging and nested HWPTs (struct iommufd_hw_pagetable). */
export abstract class Hwpt extends IommufdObject {
  domain: IommuDomain | null = null;
  fault: HwptFaultQueue | null = null;

  constructor(protected readonly ctx: IommufdCtx) {
    super();
  }

  /** Free the domain and drop the fault reference. */
  protected release(): void {
    this.domain?.free();
    this.domain = null;
    if (this.fault) this.fault.users--;
  }

  /** The paging HWPT whose IOAS this HWPT translates through (find_hwpt_paging). */
  abstract get paging(): HwptPaging;
}

/** A paging HWPT: a domain linked to one IOAS for its whole life. */
export class HwptPaging extends Hwpt {
  readonly type = ObjType.HWPT_PAGING;
  autoDomain = false;
  nestParent = false;
  enforceCacheCoherency = false;
  /** The software MSI cookie is installed in the domain. */
  msiCookie = false;
  /** On ioas.hwptList and linked into the io_pagetable. */
  linked = false;

  constructor(
    ctx: IommufdCtx,
    readonly ioas: Ioas,
  ) {
    super(ctx);
    ioas.users++;
  }

  get paging(): HwptPaging {
    return this;
  }

  private unlink(): void {
    if (!this.linked) return;
    const i = this.ioas.hwptList.indexOf(this);
    if (i >= 0) this.ioas.hwptList.splice(i, 1);
    this.linked = false;
    this.ioas.iopt.removeDomain(this.domain!);
  }

  destroy(): void {
    if (this.linked) {
      this.ioas.mutex.lock();
      try {
        this.unlink();
      } finally {
        this.ioas.mutex.unlock();
      }
    }
    this.release();
    this.ioas.users--;
  }

  /** Abort runs with ioas->mutex held (creation holds it throughout). */
  override abort(): void {
    this.unlink();
    this.destroy();
  }

  override describe(): string {
    return `${this.autoDomain ? 'auto ' : ''}paging HWPT ${this.id}`;
  }
}

/** A nested (stage-1) HWPT on top of a NEST_PARENT paging HWPT. */
export class HwptNested extends Hwpt {
  readonly type = ObjType.HWPT_NESTED;

  constructor(
    ctx: IommufdCtx,
    readonly parent: HwptPaging,
  ) {
    super(ctx);
    parent.users++;
  }

  get paging(): HwptPaging {
    return this.parent;
  }

  destroy(): void {
    this.release();
    this.parent.users--;
  }
}

/** The driver's user data for an allocation, or null when data_len is 0. */
export function userDataOf(ucmd: Ucmd<{ dataType: number; dataUptr: bigint; dataLen: number }>): UserData | null {
  const c = ucmd.cmd;
  return c.dataLen ? new UserData(c.dataType, c.dataUptr, c.dataLen, ucmd.user) : null;
}

/**
 * Allocate a paging HWPT on an IOAS (iommufd_hwpt_paging_alloc), ioas->mutex held. Links and
 * populates at once; with `immediateAttach` (auto domains on attach only) the device is attached
 * to the still-empty domain first, so a driver that finalises domains on attach sees it before
 * the IOAS reads its aperture.
 */
export function hwptPagingAlloc(
  ctx: IommufdCtx,
  ioas: Ioas,
  idev: IommufdDevice,
  flags: number,
  immediateAttach: boolean,
  data: UserData | null,
): HwptPaging {
  ioas.mutex.assertHeld();
  const dev = idev.dev;
  const driver = dev.driver;
  if ((flags || data) && !driver.domainAllocUser)
    fail('EOPNOTSUPP', `the ${driver.name} driver has no domain_alloc_user, so flags ${hex(flags)} and driver data are not supported`);
  const valid = IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
  if (flags & ~valid) fail('EOPNOTSUPP', `flags ${hex(flags & ~valid)} are not valid for a paging HWPT`);
  if (flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING && !driver.capable(dev, 'DIRTY_TRACKING'))
    fail('EOPNOTSUPP', `${dev.describe()} cannot track dirty pages`);

  const hwpt = ctx.objects.reserve(new HwptPaging(ctx, ioas));
  hwpt.nestParent = (flags & IOMMU_HWPT_ALLOC_NEST_PARENT) !== 0;
  let attached = false;
  try {
    if (driver.domainAllocUser) hwpt.domain = driver.domainAllocUser(dev, flags, null, data);
    else if (driver.domainAllocPaging) hwpt.domain = driver.domainAllocPaging(dev);
    else fail('EOPNOTSUPP', `the ${driver.name} driver cannot allocate paging domains`);
    // Decided once, before anything is mapped (iommufd_hwpt_paging_enforce_cc). A driver that
    // reports ENFORCE_CACHE_COHERENCY but cannot enforce on a fresh domain is a kernel WARN.
    if (idev.enforceCacheCoherency) {
      if (!hwpt.domain.enforceCacheCoherency?.()) {
        const why = `${hwpt.domain.describe()} cannot enforce cache coherency, though ${dev.describe()} reports IOMMU_CAP_ENFORCE_CACHE_COHERENCY`;
        kernelWarn(why);
        fail('EINVAL', why);
      }
      hwpt.enforceCacheCoherency = true;
    }
    if (immediateAttach) {
      hwptAttach(hwpt, idev);
      attached = true;
    }
    ioas.iopt.addDomain(hwpt.domain);
    ioas.hwptList.push(hwpt);
    hwpt.linked = true;
    return hwpt;
  } catch (e) {
    if (attached) hwptDetach(idev);
    ctx.objects.abortAndDestroy(hwpt);
    throw e;
  }
}

/** Allocate a nested HWPT on a paging parent (iommufd_hwpt_nested_alloc). */
function hwptNestedAlloc(ctx: IommufdCtx, parent: HwptPaging, idev: IommufdDevice, flags: number, data: UserData): HwptNested {
  const driver = idev.dev.driver;
  if (flags & ~IOMMU_HWPT_FAULT_ID_VALID || !data.len || !driver.domainAllocUser)
    fail(
      'EOPNOTSUPP',
      flags & ~IOMMU_HWPT_FAULT_ID_VALID
        ? `flags ${hex(flags & ~IOMMU_HWPT_FAULT_ID_VALID)} are not valid for a nested HWPT`
        : !data.len
          ? 'a nested HWPT needs driver data (data_len is 0)'
          : `the ${driver.name} driver cannot allocate nested domains`,
    );
  if (parent.autoDomain) fail('EINVAL', `${parent.describe()} is an automatic domain and cannot be a nesting parent`);
  if (!parent.nestParent) fail('EINVAL', `${parent.describe()} was not allocated with IOMMU_HWPT_ALLOC_NEST_PARENT`);
  if (parent.domain!.owner !== driver.name)
    fail('EINVAL', `${parent.describe()} belongs to the ${parent.domain!.owner} driver, not ${driver.name}`);
  const hwpt = ctx.objects.reserve(new HwptNested(ctx, parent));
  try {
    hwpt.domain = driver.domainAllocUser(idev.dev, flags & ~IOMMU_HWPT_FAULT_ID_VALID, parent.domain, data);
    if (hwpt.domain.kind !== 'nested' || !hwpt.domain.cacheInvalidateUser)
      fail('EINVAL', `the ${driver.name} driver returned a domain that is not a nested domain with cache invalidation`);
    return hwpt;
  } catch (e) {
    ctx.objects.abortAndDestroy(hwpt);
    throw e;
  }
}

/** IOMMU_HWPT_ALLOC */
export function hwptAlloc(ctx: IommufdCtx, ucmd: Ucmd<IommuHwptAlloc>): number {
  const cmd = ucmd.cmd;
  if (cmd.reserved) fail('EOPNOTSUPP', `__reserved is ${hex(cmd.reserved)}, must be 0`);
  if ((cmd.dataType === IOMMU_HWPT_DATA_NONE) !== (cmd.dataLen === 0))
    fail('EINVAL', `data_type ${hex(cmd.dataType)} and data_len ${cmd.dataLen} disagree (data needs a type and a length, no data neither)`);
  const idev = getDevice(ctx, cmd.devId);
  const ptObj = ctx.objects.peek(cmd.ptId);
  if (!ptObj) fail('EINVAL', `pt_id ${cmd.ptId} is not an object`);
  const data = userDataOf(ucmd);

  let hwpt: Hwpt;
  let ioas: Ioas | null = null;
  if (ptObj.type === ObjType.IOAS) {
    ioas = ptObj as Ioas;
    ioas.mutex.lock();
  }
  try {
    if (ioas) {
      hwpt = hwptPagingAlloc(ctx, ioas, idev, cmd.flags, false, data);
    } else if (ptObj.type === ObjType.HWPT_PAGING) {
      hwpt = hwptNestedAlloc(ctx, ptObj as HwptPaging, idev, cmd.flags, data ?? new UserData(cmd.dataType, cmd.dataUptr, 0, ucmd.user));
    } else {
      fail('EINVAL', `pt_id ${cmd.ptId} is a ${objTypeName(ptObj.type)}, not an IOAS or a paging HWPT`);
    }
    try {
      if (cmd.flags & IOMMU_HWPT_FAULT_ID_VALID) {
        const fault = ctx.objects.get(cmd.faultId, ObjType.FAULT) as HwptFaultQueue;
        hwpt.fault = fault;
        fault.users++;
        const target = hwpt;
        hwpt.domain!.iopfHandler = (group: unknown) => fault.deliver(target, group);
      }
      cmd.outHwptId = hwpt.id;
      ucmd.respond();
    } catch (e) {
      ctx.objects.abortAndDestroy(hwpt);
      throw e;
    }
    ctx.objects.finalize(hwpt);
    return 0;
  } finally {
    ioas?.mutex.unlock();
  }
}

export function getHwptPaging(ctx: IommufdCtx, id: number): HwptPaging {
  return ctx.objects.get(id, ObjType.HWPT_PAGING) as HwptPaging;
}

/** IOMMU_HWPT_SET_DIRTY_TRACKING */
export function hwptSetDirtyTracking(ctx: IommufdCtx, ucmd: Ucmd<IommuHwptSetDirtyTracking>): number {
  const cmd = ucmd.cmd;
  if (cmd.flags & ~IOMMU_HWPT_DIRTY_TRACKING_ENABLE) fail('EOPNOTSUPP', `unknown flags ${hex(cmd.flags & ~IOMMU_HWPT_DIRTY_TRACKING_ENABLE)}`);
  const hwpt = getHwptPaging(ctx, cmd.hwptId);
  setDirtyTracking(hwpt.ioas.iopt, hwpt.domain!, (cmd.flags & IOMMU_HWPT_DIRTY_TRACKING_ENABLE) !== 0);
  return 0;
}

/** IOMMU_HWPT_GET_DIRTY_BITMAP */
export function hwptGetDirtyBitmap(ctx: IommufdCtx, ucmd: Ucmd<IommuHwptGetDirtyBitmap>): number {
  const cmd = ucmd.cmd;
  if (cmd.flags & ~IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) fail('EOPNOTSUPP', `unknown flags ${hex(cmd.flags & ~IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR)}`);
  if (cmd.reserved) fail('EOPNOTSUPP', `__reserved is ${hex(cmd.reserved)}, must be 0`);
  const hwpt = getHwptPaging(ctx, cmd.hwptId);
  readAndClearDirtyBitmap(hwpt.ioas.iopt, hwpt.domain!, cmd.flags, cmd, ucmd.user);
  return 0;
}

/** More entries than this in one HWPT_INVALIDATE are refused (a 6.12-stable addition). */
export const INVALIDATE_ENTRY_NUM_MAX = 1 << 19;

/** IOMMU_HWPT_INVALIDATE: always writes back entry_num (entries handled). */
export function hwptInvalidate(ctx: IommufdCtx, ucmd: Ucmd<IommuHwptInvalidate>): number {
  const cmd = ucmd.cmd;
  let done = 0;
  try {
    if (cmd.reserved) fail('EOPNOTSUPP', `__reserved is ${hex(cmd.reserved)}, must be 0`);
    if (cmd.entryNum && (!cmd.dataUptr || !cmd.entryLen || cmd.entryLen > 4096 || cmd.entryNum > INVALIDATE_ENTRY_NUM_MAX))
      fail(
        'EINVAL',
        `entry_num ${cmd.entryNum} needs data_uptr != 0, 0 < entry_len <= 4096 (got ${cmd.entryLen}) and entry_num <= ${INVALIDATE_ENTRY_NUM_MAX}`,
      );
    const hwpt = ctx.objects.get(cmd.hwptId, ObjType.HWPT_NESTED) as HwptNested;
    const array = new UserDataArray(cmd.dataType, cmd.dataUptr, cmd.entryLen, cmd.entryNum, ucmd.user);
    try {
      hwpt.domain!.cacheInvalidateUser!(array);
    } finally {
      done = array.handled;
    }
  } finally {
    cmd.entryNum = done;
    ucmd.respond();
  }
  return 0;
}
