import { Errno } from '../lib/errno.js';
import { IommuError } from '../lib/error.js';
import type { SimProcess } from '../mm/process.js';
import type { EmulatedFile, FdTable } from '../iommufd/file.js';
import { DevIommu, type IoctlResult } from './dev-iommu.js';
import { POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM } from '../iommufd/file.js';

/** What poll reports for a file with no poll operation (/dev/iommu itself). */
const DEFAULT_POLLMASK = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM;

/** What a file-descriptor system call returns in C: ret, and errno when ret is -1. */
export interface SyscallResult {
  ret: number;
  errno: number;
  explanation?: string;
}

/**
 * The system-call surface of a simulated process as a C program sees it: one fd table holding
 * /dev/iommu files and the files ioctls create (fault queues, access handles), with Linux's
 * lowest-free fd numbering; ioctl(2), read(2), write(2), poll(2) and close(2) with pointers into
 * the process's memory.
 */
export class SimSyscalls implements FdTable {
  private readonly files = new Map<number, DevIommu | EmulatedFile>();

  constructor(readonly proc: SimProcess) {}

  private lowestFree(): number {
    let fd = 3;
    while (this.files.has(fd)) fd++;
    return fd;
  }

  /** open("/dev/iommu") (or "/dev/vfio/vfio", which starts in VFIO accounting mode). */
  open(path = '/dev/iommu'): number {
    if (path !== '/dev/iommu' && path !== '/dev/vfio/vfio') return -Errno.ENOENT;
    const fd = this.lowestFree();
    this.files.set(fd, new DevIommu(this.proc, { vfioContainer: path === '/dev/vfio/vfio' }, undefined, this));
    return fd;
  }

  install(file: EmulatedFile): number {
    const fd = this.lowestFree();
    this.files.set(fd, file);
    return fd;
  }

  get(fd: number): EmulatedFile | undefined {
    const f = this.files.get(fd);
    return f instanceof DevIommu ? undefined : f;
  }

  /** Take back an fd an ioctl installed before its creation failed (the file is released by the caller). */
  remove(fd: number): EmulatedFile | undefined {
    const f = this.get(fd);
    if (f) this.files.delete(fd);
    return f;
  }

  close(fd: number): number {
    const f = this.files.get(fd);
    if (!f) return -Errno.EBADF;
    this.files.delete(fd);
    if (f instanceof DevIommu) f.close();
    else f.release();
    return 0;
  }

  file(fd: number): DevIommu | undefined {
    const f = this.files.get(fd);
    return f instanceof DevIommu ? f : undefined;
  }

  ioctl(fd: number, cmd: number, arg: bigint): IoctlResult {
    const f = this.files.get(fd);
    if (!f) return { ret: -1, errno: Errno.EBADF, explanation: `fd ${fd} is not open` };
    if (!(f instanceof DevIommu)) return { ret: -1, errno: Errno.ENOTTY, explanation: `${f.name} has no ioctls` };
    return f.ioctl(cmd, arg);
  }

  read(fd: number, addr: bigint, count: number): SyscallResult {
    return this.fileOp(fd, 'read', (f) => f.read?.(this.proc.mm, addr, count));
  }

  write(fd: number, addr: bigint, count: number): SyscallResult {
    return this.fileOp(fd, 'write', (f) => f.write?.(this.proc.mm, addr, count));
  }

  /** The file's poll mask (f_op->poll); a file without a poll op is always ready (DEFAULT_POLLMASK). */
  poll(fd: number): SyscallResult {
    const f = this.files.get(fd);
    if (!f) return { ret: -1, errno: Errno.EBADF, explanation: `fd ${fd} is not open` };
    if (f instanceof DevIommu || !f.poll) return { ret: DEFAULT_POLLMASK, errno: 0 };
    return this.fileOp(fd, 'poll', (g) => g.poll!());
  }

  private fileOp(fd: number, what: string, op: (f: EmulatedFile) => number | undefined): SyscallResult {
    const f = this.files.get(fd);
    if (!f) return { ret: -1, errno: Errno.EBADF, explanation: `fd ${fd} is not open` };
    if (f instanceof DevIommu) return { ret: -1, errno: Errno.EINVAL, explanation: `/dev/iommu does not support ${what}` };
    try {
      const r = op(f);
      if (r === undefined) return { ret: -1, errno: Errno.EINVAL, explanation: `${f.name} does not support ${what}` };
      return { ret: r, errno: 0 };
    } catch (e) {
      if (e instanceof IommuError) return { ret: -1, errno: e.errno, explanation: e.explanation };
      throw e;
    }
  }
}
