/**
 * What iommufd needs from memory management, as interfaces. Two implementations exist (or will):
 * the simulated process in this folder, and the real host process behind the preload shim
 * (src/host). Everything is synchronous: the subsystem never waits.
 *
 * Errors are IommuError values (src/lib/error.ts) carrying the errno the kernel would produce.
 */

/** Capabilities iommufd consults. */
export type Capability = 'CAP_IPC_LOCK' | 'CAP_SYS_RESOURCE' | 'CAP_SYS_RAWIO';

/** RLIM_INFINITY as a byte count. */
export const RLIM_INFINITY = (1n << 64n) - 1n;

/**
 * A physical page (struct page). Identity is the object itself; `pfn` is a synthetic physical
 * frame number, unique among live frames, and contiguous for the 512 frames of a 2 MiB huge page.
 */
export interface PageFrame {
  readonly pfn: number;
  /** Part of a compound (hugetlb) page: MD_CHECK_REFS does not look at these. */
  readonly compound: boolean;
  /** Long-term pins held on this frame (FOLL_PIN | FOLL_LONGTERM). */
  readonly pinCount: number;
  /** Read bytes of the frame's content (offset + length <= 4096). */
  read(offset: number, length: number): Uint8Array;
  /** Write bytes into the frame's content. */
  write(offset: number, data: Uint8Array): void;
}

/** The per-uid accounting record (struct user_struct): shared by every process of that uid. */
export interface UserStruct {
  readonly uid: number;
  /** Pages charged by io_uring-style "user" accounting (IOPT_PAGES_ACCOUNT_USER). */
  lockedVm: number;
}

/** An address space (struct mm_struct). */
export interface AddressSpace {
  readonly id: number;
  /** mmget_not_zero(): false once every task using it has exited. */
  alive(): boolean;
  /** mm->locked_vm in pages (IOPT_PAGES_ACCOUNT_MM, VFIO style). */
  lockedVm: number;
  /** mm->pinned_vm in pages: every iommufd pin, whatever the accounting mode. */
  pinnedVm: number;

  /** copy_from_user: the bytes (a new array the caller owns), or EFAULT if any of them is not readable. */
  copyFromUser(addr: bigint, length: number): Uint8Array;
  /** copy_to_user: EFAULT if any byte is not writable; on EFAULT nothing is guaranteed written. */
  copyToUser(addr: bigint, data: Uint8Array): void;

  /**
   * pin_user_pages(FOLL_LONGTERM [| FOLL_WRITE]) of `npages` pages from the page-aligned `addr`.
   * All or nothing: EFAULT for a hole, PROT_NONE, a write pin of read-only memory, or a dead mm.
   * Pages are faulted in. In a private mapping the pinned frame is always the process's own, even
   * for a read pin (6.x unshares on FOLL_LONGTERM): a file page or a page still copy-on-write
   * shared after fork is copied first. A shared mapping pins the shared frame. Each returned
   * frame's pinCount is raised by one; the frames stay valid after munmap or exit while pinned.
   */
  pinPages(addr: bigint, npages: number, write: boolean): PageFrame[];
  /** unpin_user_pages: drop one long-term pin from each frame. Frames stay valid while pinned. */
  unpinPages(frames: readonly PageFrame[]): void;
  /** get_user_pages without a long-term pin: the frame mapped at `addr` now, or EFAULT. */
  lookupPage(addr: bigint, write: boolean): PageFrame;
}

/** The calling (or mapping) task as iommufd sees it: its mm, its cred and its rlimits. */
export interface Task {
  readonly pid: number;
  readonly user: UserStruct;
  readonly mm: AddressSpace;
  capable(cap: Capability): boolean;
  /** RLIMIT_MEMLOCK in bytes (RLIM_INFINITY when unlimited). */
  rlimitMemlock(): bigint;
}
