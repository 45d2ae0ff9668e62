import { Errno, errnoName } from '../lib/errno.js';
import type { Task } from '../mm/types.js';
import { IommufdCtx } from '../iommufd/context.js';
import { DEFAULT_IOCTL_OPTIONS, iommufdIoctl, type IoctlOptions } from '../iommufd/main.js';
import { SimpleFdTable, type FdTable } from '../iommufd/file.js';

/** What ioctl(2) returns in C: ret, and errno when ret is -1. */
export interface IoctlResult {
  ret: number;
  errno: number;
  /** Why the call was refused (the emulator's explanation), when it was. */
  explanation?: string;
}

/**
 * The binary door on the simulated machine: an open /dev/iommu file of a process. ioctl() takes
 * the command number and a pointer into the process's memory, exactly as a C program passes them.
 */
export class DevIommu {
  readonly ctx: IommufdCtx;
  /** close() was called: the fd no longer exists. */
  private closed = false;

  constructor(
    readonly task: Task,
    opts: { vfioContainer?: boolean; name?: string } = {},
    private readonly ioctlOpts: IoctlOptions = DEFAULT_IOCTL_OPTIONS,
    /** The process's fd table (new fds from FAULT_QUEUE_ALLOC and the like land here). */
    readonly fds: FdTable = new SimpleFdTable(),
  ) {
    this.ctx = new IommufdCtx(opts.name, opts.vfioContainer);
  }

  ioctl(cmd: number, arg: bigint): IoctlResult {
    if (this.closed) return { ret: -1, errno: Errno.EBADF, explanation: this.ctx.closedFdExplanation('ioctl') };
    const r = iommufdIoctl(this.ctx, this.task, cmd, arg, this.task.mm, this.fds, this.ioctlOpts);
    if (r >= 0) return { ret: r, errno: 0 };
    const e = this.ctx.lastError;
    return { ret: -1, errno: -r, explanation: e?.explanation ?? errnoName(-r) };
  }

  /** close(2): 0, or -EBADF when this file was already closed (it drops the reference only once). */
  close(): number {
    if (this.closed) return -Errno.EBADF;
    this.closed = true;
    this.ctx.put();
    return 0;
  }
}
