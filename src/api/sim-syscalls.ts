import { Errno } from '../lib/errno.js';
import type { SimProcess } from '../mm/process.js';
import { DevIommu, type IoctlResult } from './dev-iommu.js';

/**
 * The system-call surface of a simulated process as a C program sees it: file descriptors for
 * /dev/iommu, ioctl(2) with pointers into its memory, mmap/munmap. Used by scenario replays
 * and by anything that wants to drive the binary door like a program would.
 */
export class SimSyscalls {
  private readonly files = new Map<number, DevIommu>();
  private nextFd = 3;

  constructor(readonly proc: SimProcess) {}

  /** open("/dev/iommu") (or "/dev/vfio/vfio", which starts in VFIO accounting mode). */
  open(path = '/dev/iommu'): number {
    if (path !== '/dev/iommu' && path !== '/dev/vfio/vfio') return -Errno.ENOENT;
    let fd = 3;
    while (this.files.has(fd)) fd++;
    this.nextFd = Math.max(this.nextFd, fd + 1);
    this.files.set(fd, new DevIommu(this.proc, { vfioContainer: path === '/dev/vfio/vfio' }));
    return fd;
  }

  close(fd: number): number {
    const f = this.files.get(fd);
    if (!f) return -Errno.EBADF;
    this.files.delete(fd);
    f.close();
    return 0;
  }

  file(fd: number): DevIommu | undefined {
    return this.files.get(fd);
  }

  ioctl(fd: number, cmd: number, arg: bigint): IoctlResult {
    const f = this.files.get(fd);
    if (!f) return { ret: -1, errno: Errno.EBADF, explanation: `fd ${fd} is not open` };
    return f.ioctl(cmd, arg);
  }
}
