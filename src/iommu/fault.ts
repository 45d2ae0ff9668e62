/**
 * I/O page faults as the IOMMU core hands them around (struct iommu_fault_page_request) and the
 * core's fault path (drivers/iommu/io-pgfault.c): a driver reports page requests with
 * `reportDeviceFault`; requests without LAST_PAGE wait on the device; the one with LAST_PAGE
 * collects its group and goes to the attached domain's `iopfHandler`, or is answered INVALID.
 */
import { fail } from '../lib/error.js';
import type { IommuDevice } from './device.js';
import type { AttachHandle } from './group.js';
import { kernelWarn } from '../lib/warn.js';

export const IOMMU_FAULT_PAGE_REQUEST_PASID_VALID = 1 << 0;
export const IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE = 1 << 1;
export const IOMMU_FAULT_PAGE_REQUEST_PRIV_DATA = 1 << 2;
export const IOMMU_FAULT_PAGE_RESPONSE_NEEDS_PASID = 1 << 3;

/** The RID's PASID slot (IOMMU_NO_PASID). */
export const IOMMU_NO_PASID = 0;

export interface IopfFault {
  flags: number;
  pasid: number;
  grpid: number;
  perm: number;
  addr: bigint;
}

/** Page response codes (enum iommu_page_response_code). */
export const IOMMU_PAGE_RESP_SUCCESS = 0;
export const IOMMU_PAGE_RESP_INVALID = 1;
export const IOMMU_PAGE_RESP_FAILURE = 2;

/**
 * A device's fault state while IOPF is enabled on it (struct iommu_fault_param): requests waiting
 * for their group's last page, and groups handed to a handler that have not been answered yet.
 */
export class IopfParam {
  readonly partial: IopfFault[] = [];
  readonly pending = new Set<IopfGroup>();
}

/**
 * A complete fault group (struct iopf_group): the parked requests of one `grpid`, in arrival order,
 * followed by the request that carried LAST_PAGE. The handler answers it with `respond()`.
 */
export class IopfGroup {
  /** Free for the handler's use (iommufd's fault fd gives each read group a cookie). */
  cookie = 0;
  private answered = false;

  constructor(
    readonly dev: IommuDevice,
    readonly attachHandle: AttachHandle,
    readonly faults: readonly IopfFault[],
    private readonly param: IopfParam,
  ) {}

  get lastFault(): IopfFault {
    return this.faults[this.faults.length - 1]!;
  }

  /** Whether `respond()` was called. */
  get responded(): boolean {
    return this.answered;
  }

  /** iopf_group_response: the driver's page response for the group's last fault. */
  respond(code: number): void {
    this.answered = true;
    this.dev.driver.pageResponse?.(this.dev, this.lastFault, code);
    this.param.pending.delete(this);
  }
}

/** iopf_queue_add_device: give the device fault state (ENODEV without page_response, EBUSY twice). */
export function iopfQueueAddDevice(dev: IommuDevice): void {
  if (!dev.driver.pageResponse) fail('ENODEV', `the ${dev.driver.name} driver cannot answer page requests`);
  if (dev.iopfParam) fail('EBUSY', `${dev.describe()} already takes I/O page faults`);
  dev.iopfParam = new IopfParam();
}

/**
 * iopf_queue_remove_device: drop parked partial requests, answer every unanswered group INVALID,
 * and forget the device's fault state. Returns false (the kernel's WARN) if it had none.
 */
export function iopfQueueRemoveDevice(dev: IommuDevice): boolean {
  const param = dev.iopfParam;
  if (!param) return false;
  param.partial.length = 0;
  for (const group of [...param.pending]) group.respond(IOMMU_PAGE_RESP_INVALID);
  dev.iopfParam = null;
  return true;
}

/**
 * The attachment that handles a fault (find_fault_handler). PASID attachments are not modelled, so
 * a PASID-tagged request can only reach the RID attachment, and only for drivers that keep PASID
 * tables in user space and when that attachment is a nested domain.
 */
function findFaultHandler(dev: IommuDevice, fault: IopfFault): AttachHandle | null {
  const rid = dev.group?.handle ?? null;
  let handle: AttachHandle | null;
  if (fault.flags & IOMMU_FAULT_PAGE_REQUEST_PASID_VALID) {
    if (!dev.driver.userPasidTable) return null;
    handle = rid && rid.domain?.kind === 'nested' ? rid : null;
  } else handle = rid;
  if (!handle?.domain?.iopfHandler) return null;
  return handle;
}

/** What became of a reported request. */
export type FaultOutcome =
  /** Parked until the group's LAST_PAGE request arrives. */
  | 'partial'
  /** Its group went to the domain's handler. */
  | 'delivered'
  /** The handler refused the group: answered FAILURE. */
  | 'aborted'
  /** No attachment with a handler, or no fault state on the device: answered INVALID (the kernel's -EINVAL). */
  | 'invalid';

/** iommu_report_device_fault for page requests. */
export function reportDeviceFault(dev: IommuDevice, fault: IopfFault): FaultOutcome {
  const handle = findFaultHandler(dev, fault);
  const param = dev.iopfParam;
  // A fault-capable attachment without fault state on the device is a kernel WARN (e.g. a group
  // device other than the one that enabled IOPF at attach).
  if (handle && !param)
    kernelWarn(`${dev.describe()} reported a page request to a fault-capable attachment, but has no I/O page fault state (IOPF not enabled on it)`);
  if (!handle || !param) {
    dev.driver.pageResponse?.(dev, fault, IOMMU_PAGE_RESP_INVALID);
    return 'invalid';
  }
  if (!(fault.flags & IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE)) {
    param.partial.push({ ...fault });
    return 'partial';
  }
  const faults: IopfFault[] = [];
  for (let i = 0; i < param.partial.length; ) {
    const f = param.partial[i]!;
    if (f.grpid === fault.grpid) {
      faults.push(f);
      param.partial.splice(i, 1);
    } else i++;
  }
  faults.push({ ...fault });
  const group = new IopfGroup(dev, handle, faults, param);
  param.pending.add(group);
  try {
    handle.domain!.iopfHandler!(group);
  } catch {
    group.respond(IOMMU_PAGE_RESP_FAILURE);
    return 'aborted';
  }
  return 'delivered';
}
