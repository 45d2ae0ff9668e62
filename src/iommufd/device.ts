import { fail, hex, IommuError } from '../lib/error.js';
import { Lock } from '../lib/lockdep.js';
import { kernelWarn } from '../lib/warn.js';
import type { IommuDevice } from '../iommu/device.js';
import type { AttachHandle } from '../iommu/group.js';
import { ResvType } from '../iommu/resv.js';
import { IOMMU_HW_CAP_DIRTY_TRACKING, IOMMU_HW_INFO_TYPE_NONE, type IommuHwInfo } from '../uapi/iommufd.js';
import type { IommufdCtx } from './context.js';
import { Hwpt, HwptPaging, hwptPagingAlloc } from './hw-pagetable.js';
import { IommufdGroup, NO_SW_MSI } from './igroup.js';
import type { Ioas } from './ioas.js';
import { IommufdObject, ObjType, objTypeName } from './object.js';
import type { Ucmd } from './ucmd.js';

/** iommufd's attach handle: which device made the attachment (reported in faults). */
export interface IommufdAttachHandle extends AttachHandle {
  idev: IommufdDevice;
}

/**
 * A device bound to a context (struct iommufd_device). The binding driver holds a reference, so
 * IOMMU_DESTROY on it is always EBUSY; attachments hold one more.
 */
export class IommufdDevice extends IommufdObject {
  readonly type = ObjType.DEVICE;
  readonly enforceCacheCoherency: boolean;
  /** idev->iopf_lock: serialises the IOPF enable count. */
  readonly iopfLock: Lock;

  constructor(
    readonly ctx: IommufdCtx,
    readonly dev: IommuDevice,
    readonly igroup: IommufdGroup,
  ) {
    super();
    this.enforceCacheCoherency = dev.driver.capable(dev, 'ENFORCE_CACHE_COHERENCY');
    this.iopfLock = new Lock('idev->iopf_lock', dev.name);
  }

  destroy(): void {
    this.dev.group.releaseDmaOwner();
    this.igroup.put();
    if (!this.dev.isMock) this.ctx.put();
  }

  get attached(): boolean {
    return this.igroup.deviceList.includes(this);
  }

  override describe(): string {
    return `device ${this.id} (${this.dev.name})`;
  }
}

export function getDevice(ctx: IommufdCtx, id: number): IommufdDevice {
  return ctx.objects.get(id, ObjType.DEVICE) as IommufdDevice;
}

/** Whether bind may proceed without interrupt isolation (iommufd's allow_unsafe_interrupts). */
export const moduleParams = { allowUnsafeInterrupts: false };

/** iommufd_device_bind: the kAPI VFIO and the selftest use; returns the published DEVICE object. */
export function deviceBind(ctx: IommufdCtx, dev: IommuDevice): IommufdDevice {
  if (!dev.driver.capable(dev, 'CACHE_COHERENCY'))
    fail('EINVAL', `${dev.describe()} does not support cache-coherent DMA, which iommufd always maps with`);
  const group = dev.group;
  if (!group) fail('ENODEV', `${dev.describe()} is not in an iommu group`);
  const igroup = IommufdGroup.get(ctx, group);
  try {
    if (!dev.isMock && !group.devices.every((d) => d.isolatedMsi) && !moduleParams.allowUnsafeInterrupts)
      fail('EPERM', `MSI interrupts of ${group.describe()} cannot be isolated and allow_unsafe_interrupts is off`);
    group.claimDmaOwner(ctx);
  } catch (e) {
    igroup.put();
    throw e;
  }
  let idev: IommufdDevice;
  try {
    idev = ctx.objects.reserve(new IommufdDevice(ctx, dev, igroup));
  } catch (e) {
    group.releaseDmaOwner();
    igroup.put();
    throw e;
  }
  if (!dev.isMock) ctx.fileRefs++;
  idev.users++; // the binding driver's reference
  ctx.objects.finalize(idev);
  return idev;
}

/** iommufd_device_unbind */
export function deviceUnbind(idev: IommufdDevice): void {
  idev.ctx.objects.destroyKernel(idev);
}

// ------------------------------------------------------------------ IOPF enable (per device)

export function iopfEnable(idev: IommufdDevice): void {
  const dev = idev.dev;
  idev.iopfLock.lock();
  try {
    if (dev.iopfEnabled === 0) {
      if (!dev.driver.enableIopf) fail('EOPNOTSUPP', `the ${dev.driver.name} driver does not support I/O page faults`);
      dev.driver.enableIopf(dev);
    }
    dev.iopfEnabled++;
  } finally {
    idev.iopfLock.unlock();
  }
}

/**
 * iommufd_fault_iopf_disable. A disable without a matching enable is a kernel WARN (and changes
 * nothing): it happens when the group's last device to detach is not the one that enabled IOPF
 * at attach.
 */
export function iopfDisable(idev: IommufdDevice): void {
  const dev = idev.dev;
  idev.iopfLock.lock();
  try {
    if (dev.iopfEnabled === 0) {
      kernelWarn(`I/O page faults disabled on ${idev.describe()}, which never enabled them (iopf_enabled is 0)`);
      return;
    }
    if (--dev.iopfEnabled === 0) dev.driver.disableIopf?.(dev);
  } finally {
    idev.iopfLock.unlock();
  }
}

// ------------------------------------------------------------------ reserved regions, MSI

/**
 * Reserve a device's regions in an IOAS (iopt_table_enforce_dev_resv_regions). With `learnMsi`
 * the igroup learns the software MSI window; a driver reporting both kinds of MSI regions, or two
 * software windows, is refused.
 */
function enforceResvRegions(ioas: Ioas, idev: IommufdDevice, learnMsi: boolean): void {
  const iopt = ioas.iopt;
  const dev = idev.dev;
  iopt.iovaRwsem.lock();
  try {
    let hw = 0;
    let sw = 0;
    try {
      for (const r of dev.driver.getResvRegions(dev)) {
        if (r.type === ResvType.DIRECT_RELAXABLE) continue;
        if (learnMsi && r.type === ResvType.MSI) hw++;
        if (learnMsi && r.type === ResvType.SW_MSI) {
          idev.igroup.swMsiStart = r.start;
          sw++;
        }
        iopt.reserveIova(r.start, r.start + r.length - 1n, dev);
      }
      if ((sw && hw) || sw > 1)
        fail('EINVAL', `${dev.describe()} reports ${sw} software and ${hw} hardware MSI regions; at most one software window and no mix is allowed`);
    } catch (e) {
      iopt.reserved.removeOwner(dev);
      throw e;
    }
  } finally {
    iopt.iovaRwsem.unlock();
  }
}

/** Install the software MSI cookie in a paging domain, once per HWPT (iommufd_group_setup_msi). */
function setupMsi(igroup: IommufdGroup, hwpt: HwptPaging): void {
  if (igroup.swMsiStart === NO_SW_MSI || hwpt.msiCookie) return;
  const domain = hwpt.domain!;
  if (domain.kind !== 'paging') fail('EINVAL', `${domain.describe()} cannot hold an MSI cookie`);
  if (domain.msiCookie !== undefined) fail('EEXIST', `${domain.describe()} already has an MSI cookie`);
  domain.msiCookie = igroup.swMsiStart;
  hwpt.msiCookie = true;
}

// ------------------------------------------------------------------ attach / detach / replace

/** iommufd_hw_pagetable_attach: join the group's attachment (the first device does the real attach). */
export function hwptAttach(hwpt: Hwpt, idev: IommufdDevice): void {
  const igroup = idev.igroup;
  const paging = hwpt.paging;
  igroup.lock.lock();
  try {
    if (igroup.hwpt && igroup.hwpt !== hwpt)
      fail('EINVAL', `${igroup.group.describe()} is attached to ${igroup.hwpt.describe()}; all its devices must use the same HWPT`);
    enforceResvRegions(paging.ioas, idev, true);
    try {
      if (!igroup.deviceList.length) {
        setupMsi(igroup, paging);
        const handle: IommufdAttachHandle = { idev };
        if (hwpt.fault) iopfEnable(idev);
        try {
          igroup.group.attachHandle(hwpt.domain!, handle);
        } catch (e) {
          if (hwpt.fault) iopfDisable(idev);
          throw e;
        }
        igroup.hwpt = hwpt;
      }
    } catch (e) {
      paging.ioas.iopt.removeReserved(idev.dev);
      throw e;
    }
    hwpt.users++;
    igroup.deviceList.push(idev);
  } finally {
    igroup.lock.unlock();
  }
}

/** iommufd_hw_pagetable_detach: leave; the last device detaches the group. Returns the HWPT to put. */
export function hwptDetach(idev: IommufdDevice): Hwpt {
  const igroup = idev.igroup;
  const hwpt = igroup.hwpt!;
  igroup.lock.lock();
  try {
    igroup.deviceList.splice(igroup.deviceList.indexOf(idev), 1);
    if (!igroup.deviceList.length) {
      const handle = igroup.group.handle;
      igroup.group.detachHandle();
      if (hwpt.fault) {
        hwpt.fault.autoRespond(hwpt, handle);
        iopfDisable(idev);
      }
      igroup.hwpt = null;
    }
    hwpt.paging.ioas.iopt.removeReserved(idev.dev);
  } finally {
    igroup.lock.unlock();
  }
  return hwpt;
}

/** iommufd_hw_pagetable_put: auto HWPTs die with their last user. */
export function hwptPut(ctx: IommufdCtx, hwpt: Hwpt): void {
  if (hwpt instanceof HwptPaging && hwpt.autoDomain) {
    ctx.objects.putAndTryDestroy(hwpt);
    return;
  }
  hwpt.users--;
}

type AttachFn = (idev: IommufdDevice, hwpt: Hwpt) => Hwpt | null;

const doAttach: AttachFn = (idev, hwpt) => {
  hwptAttach(hwpt, idev);
  return null;
};

/** Reserve the regions of every attached device of the group in a new IOAS, then the MSI cookie. */
function replaceReservedIova(igroup: IommufdGroup, hwpt: HwptPaging): void {
  const old = igroup.hwpt?.paging;
  try {
    if (!old || old.ioas !== hwpt.ioas) for (const d of igroup.deviceList) enforceResvRegions(hwpt.ioas, d, false);
    setupMsi(igroup, hwpt);
  } catch (e) {
    for (const d of igroup.deviceList) hwpt.ioas.iopt.removeReserved(d.dev);
    throw e;
  }
}

/** iommufd_device_do_replace: move the whole group to `hwpt`; returns the HWPT to put. */
const doReplace: AttachFn = (idev, hwpt) => {
  const igroup = idev.igroup;
  const paging = hwpt.paging;
  igroup.lock.lock();
  try {
    if (!igroup.hwpt) fail('EINVAL', `${igroup.group.describe()} is not attached, so there is nothing to replace`);
    if (!igroup.deviceList.includes(idev)) fail('EINVAL', `${idev.describe()} is not attached; replace needs an attached device`);
    if (hwpt === igroup.hwpt) return null;
    const old = igroup.hwpt;
    replaceReservedIova(igroup, paging);
    try {
      const oldHandle = igroup.group.handle;
      const handle: IommufdAttachHandle = { idev };
      if (hwpt.fault && !old.fault) iopfEnable(idev);
      try {
        igroup.group.replaceHandle(hwpt.domain!, handle);
      } catch (e) {
        if (hwpt.fault && !old.fault) iopfDisable(idev);
        throw e;
      }
      if (old.fault) {
        old.fault.autoRespond(old, oldHandle);
        if (!hwpt.fault) iopfDisable(idev);
      }
    } catch (e) {
      for (const d of igroup.deviceList) paging.ioas.iopt.removeReserved(d.dev);
      throw e;
    }
    if (old.paging.ioas !== paging.ioas) for (const d of igroup.deviceList) old.paging.ioas.iopt.removeReserved(d.dev);
    igroup.hwpt = hwpt;
    const n = igroup.deviceList.length;
    hwpt.users += n;
    old.users -= n - 1;
    return old;
  } finally {
    igroup.lock.unlock();
  }
};

/**
 * iommufd_device_auto_get_domain: reuse a compatible automatic HWPT of the IOAS (EINVAL from an
 * attach means "try the next one") or make a new one. Only attach attaches the empty domain
 * before populating it; replace links and populates first.
 */
function autoGetDomain(idev: IommufdDevice, ioas: Ioas, fn: AttachFn): { hwpt: Hwpt; put: Hwpt | null } {
  const ctx = idev.ctx;
  const immediate = fn === doAttach;
  ioas.mutex.lock();
  try {
    for (const cand of [...ioas.hwptList] as HwptPaging[]) {
      if (!cand.autoDomain || !cand.finalized) continue;
      try {
        return { hwpt: cand, put: fn(idev, cand) };
      } catch (e) {
        if (e instanceof IommuError && e.errnoName === 'EINVAL') continue;
        throw e;
      }
    }
    const hwpt = hwptPagingAlloc(ctx, ioas, idev, 0, immediate, null);
    let put: Hwpt | null = null;
    if (!immediate) {
      try {
        put = fn(idev, hwpt);
      } catch (e) {
        ctx.objects.abortAndDestroy(hwpt);
        throw e;
      }
    }
    hwpt.autoDomain = true;
    ctx.objects.finalize(hwpt);
    return { hwpt, put };
  } finally {
    ioas.mutex.unlock();
  }
}

/** iommufd_device_change_pt: returns the id of the HWPT now in use. */
function changePt(idev: IommufdDevice, ptId: number, fn: AttachFn): number {
  const ctx = idev.ctx;
  const obj = ctx.objects.get(ptId);
  let result: { hwpt: Hwpt; put: Hwpt | null };
  switch (obj.type) {
    case ObjType.HWPT_PAGING:
    case ObjType.HWPT_NESTED:
      result = { hwpt: obj as Hwpt, put: fn(idev, obj as Hwpt) };
      break;
    case ObjType.IOAS:
      result = autoGetDomain(idev, obj as Ioas, fn);
      break;
    default:
      fail('EINVAL', `pt_id ${ptId} is a ${objTypeName(obj.type)}, not an IOAS or a HWPT`);
  }
  // Displaced HWPTs are put with no lock held: destroying an auto HWPT takes ioas->mutex.
  if (result.put) hwptPut(ctx, result.put);
  return result.hwpt.id;
}

/** iommufd_device_attach: returns the HWPT id. */
export function deviceAttach(idev: IommufdDevice, ptId: number): number {
  const id = changePt(idev, ptId, doAttach);
  idev.users++;
  return id;
}

/** iommufd_device_replace: returns the HWPT id. */
export function deviceReplace(idev: IommufdDevice, ptId: number): number {
  return changePt(idev, ptId, doReplace);
}

/** iommufd_device_detach */
export function deviceDetach(idev: IommufdDevice): void {
  const hwpt = hwptDetach(idev);
  hwptPut(idev.ctx, hwpt);
  idev.users--;
}

// ------------------------------------------------------------------ IOMMU_GET_HW_INFO

/** The zeros GET_HW_INFO writes past the driver's data, per copy. */
const HW_INFO_ZEROS = new Uint8Array(65536);

export function getHwInfo(ctx: IommufdCtx, ucmd: Ucmd<IommuHwInfo>): number {
  const cmd = ucmd.cmd;
  if (cmd.flags || cmd.reserved.some((b) => b !== 0))
    fail('EOPNOTSUPP', `flags ${hex(cmd.flags)} and __reserved must be 0 (6.12 has no input data type)`);
  const idev = getDevice(ctx, cmd.devId);
  const dev = idev.dev;
  let type = IOMMU_HW_INFO_TYPE_NONE;
  let data: Uint8Array = new Uint8Array(0);
  if (dev.driver.hwInfo) {
    const info = dev.driver.hwInfo(dev);
    if (info.type === IOMMU_HW_INFO_TYPE_NONE) fail('ENODEV', `the ${dev.driver.name} driver reported no hw_info type`);
    type = info.type;
    data = info.data;
  }
  cmd.outDataType = type;
  const copyLen = Math.min(cmd.dataLen, data.length);
  if (copyLen) ucmd.user.copyToUser(cmd.dataUptr, data.subarray(0, copyLen));
  // clear_user of the rest of the caller's buffer (data_len is its __u32, up to 4 GiB), a bounded
  // zero buffer at a time, stopping at the first fault as clear_user does.
  for (let off = copyLen; off < cmd.dataLen; off += HW_INFO_ZEROS.length)
    ucmd.user.copyToUser(cmd.dataUptr + BigInt(off), HW_INFO_ZEROS.subarray(0, Math.min(HW_INFO_ZEROS.length, cmd.dataLen - off)));
  cmd.dataLen = data.length;
  cmd.outCapabilities = dev.driver.capable(dev, 'DIRTY_TRACKING') ? BigInt(IOMMU_HW_CAP_DIRTY_TRACKING) : 0n;
  cmd.outMaxPasidLog2 = 0;
  ucmd.respond();
  return 0;
}
