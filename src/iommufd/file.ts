import type { UserAccess } from './ucmd.js';

/** poll(2) bits. */
export const POLLIN = 0x001;
export const POLLOUT = 0x004;
export const POLLRDNORM = 0x040;
export const POLLWRNORM = 0x100;

/**
 * A file the subsystem hands to user space as an fd (anon_inode files: the fault queue, the
 * selftest's access handle). File operations take the caller's memory, like the kernel's fops.
 * Errors are thrown IommuErrors.
 */
export interface EmulatedFile {
  /** The anon inode name, e.g. "[iommufd-pgfault]". */
  readonly name: string;
  read?(user: UserAccess, addr: bigint, count: number): number;
  write?(user: UserAccess, addr: bigint, count: number): number;
  poll?(): number;
  /** The last reference to the file went away. */
  release(): void;
}

/** Where an ioctl installs a new fd and finds one by number (the caller's fd table). */
export interface FdTable {
  install(file: EmulatedFile, cloexec: boolean): number;
  get(fd: number): EmulatedFile | undefined;
  /**
   * Take back an fd this call installed, without releasing its file (put_unused_fd after a
   * creation failed late). The caller then releases the file itself.
   */
  remove?(fd: number): EmulatedFile | undefined;
}

/** A plain fd table for callers that have no process of their own (the typed door, tests). */
export class SimpleFdTable implements FdTable {
  private readonly files = new Map<number, EmulatedFile>();

  constructor(private readonly firstFd = 3) {}

  install(file: EmulatedFile): number {
    let fd = this.firstFd;
    while (this.files.has(fd)) fd++;
    this.files.set(fd, file);
    return fd;
  }

  get(fd: number): EmulatedFile | undefined {
    return this.files.get(fd);
  }

  remove(fd: number): EmulatedFile | undefined {
    const f = this.files.get(fd);
    this.files.delete(fd);
    return f;
  }

  /** close(fd): release the file. Returns false for an fd that is not open. */
  close(fd: number): boolean {
    const f = this.files.get(fd);
    if (!f) return false;
    this.files.delete(fd);
    f.release();
    return true;
  }

  fds(): number[] {
    return [...this.files.keys()];
  }
}
