/**
 * Locked-memory accounting of pinned pages, as iommufd 6.12 does it for each page container
 * (iopt_pages). The mode is fixed when the container is created:
 *
 * - NONE: the mapping task had CAP_IPC_LOCK; nothing is charged against RLIMIT_MEMLOCK.
 * - USER: pages are charged to the mapping user's (uid's) locked_vm, shared by every process of
 *   that uid, against the mapping task's RLIMIT_MEMLOCK (io_uring style).
 * - MM: pages are charged to the mapping process's mm->locked_vm against the same limit (VFIO
 *   type1 style). There is no CAP_IPC_LOCK bypass here: that choice was made at creation (NONE).
 *
 * In every mode a successful charge also moves mm->pinned_vm.
 */
import { fail } from '../lib/error.js';
import type { Task } from './types.js';

/** IOPT_PAGES_ACCOUNT_* values. */
export const AccountMode = {
  NONE: 0,
  USER: 1,
  MM: 2,
} as const;
export type AccountModeValue = (typeof AccountMode)[keyof typeof AccountMode];

const MODE_NAMES = ['none', 'user', 'mm'] as const;

export function accountModeName(mode: AccountModeValue): string {
  return MODE_NAMES[mode];
}

/** RLIMIT_MEMLOCK of `task` in pages (RLIM_INFINITY >> PAGE_SHIFT when unlimited). */
export function memlockLimitPages(task: Task): number {
  // RLIM_INFINITY >> 12 is 2^52 - 1: still exact in a double.
  return Number(task.rlimitMemlock() >> 12n);
}

/**
 * Charge `npages` newly pinned pages. ENOMEM (nothing charged) if the limit would be exceeded;
 * EINVAL in MM mode if the mapping process's address space is gone.
 */
export function chargePinned(task: Task, mode: AccountModeValue, npages: number): void {
  checkCount(npages);
  if (npages === 0) return;
  const mm = task.mm;
  switch (mode) {
    case AccountMode.NONE:
      break;
    case AccountMode.USER: {
      const limit = memlockLimitPages(task);
      const user = task.user;
      const next = user.lockedVm + npages;
      if (next > limit) {
        fail(
          'ENOMEM',
          `charging ${npages} pages would raise uid ${user.uid}'s locked_vm to ${next} pages, ` +
            `above RLIMIT_MEMLOCK ${limitText(task, limit)} of pid ${task.pid}`,
        );
      }
      user.lockedVm = next;
      break;
    }
    case AccountMode.MM: {
      if (!mm.alive()) {
        fail('EINVAL', `cannot charge ${npages} pages to mm ${mm.id} of pid ${task.pid}: the address space is gone`);
      }
      const limit = memlockLimitPages(task);
      const next = mm.lockedVm + npages;
      if (next > limit) {
        fail(
          'ENOMEM',
          `charging ${npages} pages would raise mm ${mm.id}'s locked_vm (pid ${task.pid}) to ${next} pages, ` +
            `above RLIMIT_MEMLOCK ${limitText(task, limit)}`,
        );
      }
      mm.lockedVm = next;
      break;
    }
    default:
      throw new RangeError(`unknown accounting mode ${String(mode)}`);
  }
  mm.pinnedVm += npages;
}

/**
 * Return `npages` pages that are being unpinned. In MM mode a dead address space cannot be
 * updated (the kernel's update fails and is ignored): nothing changes and false is returned.
 * Uncharging more than was charged is a bug in the caller and throws.
 */
export function unchargePinned(task: Task, mode: AccountModeValue, npages: number): boolean {
  checkCount(npages);
  if (npages === 0) return true;
  const mm = task.mm;
  switch (mode) {
    case AccountMode.NONE:
      break;
    case AccountMode.USER: {
      const user = task.user;
      if (user.lockedVm < npages) {
        throw new Error(`accounting underflow: uncharging ${npages} pages from uid ${user.uid}'s locked_vm of ${user.lockedVm}`);
      }
      user.lockedVm -= npages;
      break;
    }
    case AccountMode.MM:
      if (!mm.alive()) return false;
      if (mm.lockedVm < npages) {
        throw new Error(`accounting underflow: uncharging ${npages} pages from mm ${mm.id}'s locked_vm of ${mm.lockedVm}`);
      }
      mm.lockedVm -= npages;
      break;
    default:
      throw new RangeError(`unknown accounting mode ${String(mode)}`);
  }
  if (mm.pinnedVm < npages) {
    throw new Error(`accounting underflow: uncharging ${npages} pages from mm ${mm.id}'s pinned_vm of ${mm.pinnedVm}`);
  }
  mm.pinnedVm -= npages;
  return true;
}

function checkCount(npages: number): void {
  if (!Number.isSafeInteger(npages) || npages < 0) throw new RangeError(`bad page count ${npages}`);
}

function limitText(task: Task, limitPages: number): string {
  const bytes = task.rlimitMemlock();
  return `${limitPages} pages (${bytes} bytes)`;
}
