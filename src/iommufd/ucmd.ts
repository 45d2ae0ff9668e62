import type { Task } from '../mm/types.js';
import type { FdTable } from './file.js';

/** The caller's memory as seen through pointers inside an ioctl struct (copy_{from,to}_user). */
export interface UserAccess {
  /** A new array of exactly `length` bytes, the caller's to keep and modify (EFAULT when unreadable). */
  copyFromUser(addr: bigint, length: number): Uint8Array;
  copyToUser(addr: bigint, data: Uint8Array): void;
  /** get_user of a little-endian u32, when the access can do it without a copy (else undefined: use copyFromUser). */
  peekU32?(addr: bigint): number | undefined;
}

/**
 * One ioctl call in flight (the kernel's struct iommufd_ucmd): the decoded command, which the
 * handler also uses for its outputs, the caller, and `respond()`, which writes the command back to
 * user space. The binary door writes min(user size, sizeof) bytes and may fail with EFAULT; the
 * typed door only records that a response was made. Handlers decide when to respond, because the
 * kernel's handlers differ there (creation aborts on a failed response, MAP keeps its mapping,
 * IOVA_RANGES responds and then returns EMSGSIZE, HWPT_INVALIDATE always responds).
 */
export interface Ucmd<T> {
  readonly cmd: T;
  readonly task: Task;
  readonly user: UserAccess;
  /** The caller's fd table, for ioctls that return or take file descriptors. */
  readonly fds: FdTable;
  respond(): void;
}
