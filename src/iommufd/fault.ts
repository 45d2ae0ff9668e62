/**
 * Fault queues (fault.c): the FAULT object, IOMMU_FAULT_QUEUE_ALLOC and the "[iommufd-pgfault]"
 * file through which user space reads I/O page-fault groups and writes page responses.
 *
 * A nested HWPT allocated with FAULT_ID_VALID routes its domain's page requests here (deliver).
 * Groups wait in the delivery queue until read; a read gives each group a cookie (lowest free
 * from 1) and moves it to the response table; a write answers it by cookie. Groups of an
 * attachment that ends are answered INVALID (autoRespond), as is everything left when the
 * object is destroyed.
 */
import { Errno } from '../lib/errno.js';
import { fail, hex, IommuError } from '../lib/error.js';
import { Lock } from '../lib/lockdep.js';
import { IOMMU_PAGE_RESP_INVALID, type IopfGroup } from '../iommu/fault.js';
import {
  IOMMUFD_PAGE_RESP_INVALID,
  IOMMUFD_PAGE_RESP_SUCCESS,
  IommuHwptPageResponse,
  IommuHwptPgfault,
  type IommuFaultAlloc,
} from '../uapi/iommufd.js';
import type { IommufdCtx } from './context.js';
import type { IommufdAttachHandle } from './device.js';
import { POLLIN, POLLOUT, POLLRDNORM, type EmulatedFile } from './file.js';
import type { Hwpt, HwptFaultQueue } from './hw-pagetable.js';
import { IommufdObject, ObjType } from './object.js';
import type { Ucmd, UserAccess } from './ucmd.js';

/** sizeof(struct iommu_hwpt_pgfault) and sizeof(struct iommu_hwpt_page_response). */
export const FAULT_RECORD_SIZE = IommuHwptPgfault.size;
export const RESPONSE_RECORD_SIZE = IommuHwptPageResponse.size;
const COOKIE_MAX = 0xffff_ffff;

/** A FAULT object (struct iommufd_fault). */
export class IommufdFault extends IommufdObject implements HwptFaultQueue {
  readonly type = ObjType.FAULT;
  /** Groups not read yet, oldest first. */
  readonly deliverQueue: IopfGroup[] = [];
  /** Groups read and awaiting a response, by cookie. */
  readonly response = new Map<number, IopfGroup>();
  /** The open file, from creation until its release. */
  file: FaultFile | null = null;
  readonly mutex = new Lock('fault->mutex');
  readonly lock = new Lock('fault->lock');

  constructor(readonly ctx: IommufdCtx) {
    super();
  }

  /** iommufd_fault_destroy: answer INVALID to everything still queued or awaiting a response. */
  destroy(): void {
    for (const group of this.deliverQueue.splice(0)) group.respond(IOMMU_PAGE_RESP_INVALID);
    for (const [cookie, group] of [...this.response]) {
      this.response.delete(cookie);
      group.respond(IOMMU_PAGE_RESP_INVALID);
    }
  }

  /** Creation failed: the file is released synchronously first (it holds a reference). */
  override abort(): void {
    this.file?.release();
    this.destroy();
  }

  override describe(): string {
    return `fault queue ${this.id}`;
  }

  /** The domain's iopf handler (iommufd_fault_iopf_handler): queue the group for reading. */
  deliver(_hwpt: Hwpt, group: unknown): void {
    this.lock.lock();
    this.deliverQueue.push(group as IopfGroup);
    this.lock.unlock();
  }

  /**
   * iommufd_auto_response_faults: the attachment `handle` ended; answer INVALID to its groups,
   * queued ones first, then those awaiting a response (their cookies become free).
   */
  autoRespond(_hwpt: Hwpt, handle: object | null): void {
    this.mutex.lock();
    try {
      const gone: IopfGroup[] = [];
      this.lock.lock();
      for (let i = 0; i < this.deliverQueue.length; ) {
        if (this.deliverQueue[i]!.attachHandle === handle) gone.push(...this.deliverQueue.splice(i, 1));
        else i++;
      }
      this.lock.unlock();
      for (const group of gone) group.respond(IOMMU_PAGE_RESP_INVALID);
      for (const [cookie, group] of [...this.response]) {
        if (group.attachHandle !== handle) continue;
        this.response.delete(cookie);
        group.respond(IOMMU_PAGE_RESP_INVALID);
      }
    } finally {
      this.mutex.unlock();
    }
  }

  /** The first queued group, taken off the queue. */
  private fetch(): IopfGroup | undefined {
    this.lock.lock();
    const g = this.deliverQueue.shift();
    this.lock.unlock();
    return g;
  }

  /** Put a group back at the head of the queue. */
  private restore(group: IopfGroup): void {
    this.lock.lock();
    this.deliverQueue.unshift(group);
    this.lock.unlock();
  }

  private allocCookie(): number {
    let c = 1;
    while (this.response.has(c)) c++;
    if (c > COOKIE_MAX) fail('EBUSY', 'every response cookie is in use');
    return c;
  }

  /** read(2) on the fault fd: whole groups while they fit; returns the bytes written. */
  read(user: UserAccess, addr: bigint, count: number): number {
    if (count % FAULT_RECORD_SIZE)
      fail('ESPIPE', `read count ${count} is not a multiple of ${FAULT_RECORD_SIZE} (struct iommu_hwpt_pgfault)`);
    let done = 0;
    let err: IommuError | undefined;
    this.mutex.lock();
    try {
      let group: IopfGroup | undefined;
      while ((group = this.fetch())) {
        const need = group.faults.length * FAULT_RECORD_SIZE;
        if (done >= count || need > count - done) {
          this.restore(group);
          if (done === 0)
            err = new IommuError(
              Errno.EINVAL,
              `the first queued fault group has ${group.faults.length} fault(s), ${need} bytes, more than the ${count} bytes read`,
            );
          break;
        }
        let cookie: number;
        try {
          cookie = this.allocCookie();
        } catch (e) {
          this.restore(group);
          err = e as IommuError;
          break;
        }
        this.response.set(cookie, group);
        group.cookie = cookie;
        const idev = (group.attachHandle as IommufdAttachHandle).idev;
        let groupDone = done;
        for (const f of group.faults) {
          const rec = new Uint8Array(FAULT_RECORD_SIZE);
          IommuHwptPgfault.encode(
            IommuHwptPgfault.make({
              flags: f.flags,
              devId: idev.id,
              pasid: f.pasid,
              grpid: f.grpid,
              perm: f.perm,
              addr: f.addr,
              length: 0,
              cookie,
            }),
            rec,
            0,
          );
          try {
            user.copyToUser(addr + BigInt(groupDone), rec);
          } catch (e) {
            if (!(e instanceof IommuError)) throw e;
            this.response.delete(cookie);
            this.restore(group);
            err = new IommuError(Errno.EFAULT, `writing fault record at ${hex(addr + BigInt(groupDone))} faulted: ${e.explanation}`);
            break;
          }
          groupDone += FAULT_RECORD_SIZE;
        }
        if (err) break;
        done = groupDone;
      }
    } finally {
      this.mutex.unlock();
    }
    if (done === 0 && err) throw err;
    return done;
  }

  /** write(2) on the fault fd: page responses in order; returns the bytes consumed. */
  write(user: UserAccess, addr: bigint, count: number): number {
    if (count % RESPONSE_RECORD_SIZE)
      fail('ESPIPE', `write count ${count} is not a multiple of ${RESPONSE_RECORD_SIZE} (struct iommu_hwpt_page_response)`);
    let done = 0;
    let err: IommuError | undefined;
    this.mutex.lock();
    try {
      while (count > done) {
        let resp;
        try {
          resp = IommuHwptPageResponse.decode(user.copyFromUser(addr + BigInt(done), RESPONSE_RECORD_SIZE));
        } catch (e) {
          if (!(e instanceof IommuError)) throw e;
          err = new IommuError(Errno.EFAULT, `reading the response at ${hex(addr + BigInt(done))} faulted: ${e.explanation}`);
          break;
        }
        if (resp.code !== IOMMUFD_PAGE_RESP_SUCCESS && resp.code !== IOMMUFD_PAGE_RESP_INVALID) {
          err = new IommuError(Errno.EINVAL, `response code ${resp.code} for cookie ${resp.cookie} is neither SUCCESS (0) nor INVALID (1)`);
          break;
        }
        const group = this.response.get(resp.cookie);
        if (!group) {
          err = new IommuError(Errno.EINVAL, `cookie ${resp.cookie} does not name a fault group awaiting a response`);
          break;
        }
        this.response.delete(resp.cookie);
        group.respond(resp.code);
        done += RESPONSE_RECORD_SIZE;
      }
    } finally {
      this.mutex.unlock();
    }
    if (done === 0 && err) throw err;
    return done;
  }

  /** poll(2): always writable; readable while groups are queued. */
  poll(): number {
    this.lock.lock();
    const queued = this.deliverQueue.length > 0;
    this.lock.unlock();
    return POLLOUT | (queued ? POLLIN | POLLRDNORM : 0);
  }
}

/** The "[iommufd-pgfault]" file: holds a reference on its FAULT object and on the context. */
export class FaultFile implements EmulatedFile {
  readonly name = '[iommufd-pgfault]';
  private released = false;

  constructor(readonly fault: IommufdFault) {}

  read(user: UserAccess, addr: bigint, count: number): number {
    return this.fault.read(user, addr, count);
  }

  write(user: UserAccess, addr: bigint, count: number): number {
    return this.fault.write(user, addr, count);
  }

  poll(): number {
    return this.fault.poll();
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    const ctx = this.fault.ctx;
    this.fault.file = null;
    this.fault.users--;
    ctx.put();
  }
}

/** IOMMU_FAULT_QUEUE_ALLOC */
export function faultQueueAlloc(ctx: IommufdCtx, ucmd: Ucmd<IommuFaultAlloc>): number {
  const cmd = ucmd.cmd;
  if (cmd.flags) fail('EOPNOTSUPP', `flags ${hex(cmd.flags >>> 0)} must be 0`);
  const fault = ctx.objects.reserve(new IommufdFault(ctx));
  const file = new FaultFile(fault);
  fault.file = file;
  fault.users++;
  ctx.fileRefs++;
  let fd: number;
  try {
    fd = ucmd.fds.install(file, true);
  } catch (e) {
    ctx.objects.abortAndDestroy(fault);
    throw e;
  }
  try {
    cmd.outFaultId = fault.id;
    cmd.outFaultFd = fd;
    ucmd.respond();
  } catch (e) {
    ucmd.fds.remove?.(fd);
    ctx.objects.abortAndDestroy(fault);
    throw e;
  }
  ctx.objects.finalize(fault);
  return 0;
}
