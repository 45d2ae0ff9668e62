import { fail, type IommuError } from '../lib/error.js';
import { AccountMode, type AccountModeValue } from '../mm/accounting.js';
import { ObjectTable, ObjType, type IommufdObject } from './object.js';
import type { Ioas } from './ioas.js';
import type { IommufdGroup } from './igroup.js';
import type { IommuGroup } from '../iommu/group.js';

/**
 * One open file of /dev/iommu (struct iommufd_ctx): its object table, accounting mode and the
 * VFIO compatibility pointer. It lives while the file or anything holding a file reference
 * (devices, accesses, fault fds) does.
 */
export class IommufdCtx {
  readonly objects = new ObjectTable();
  accountMode: AccountModeValue = AccountMode.USER;
  /** The compat IOAS for VFIO type1 emulation: a weak pointer, cleared when that IOAS goes. */
  vfioIoas: Ioas | null = null;
  noIommuMode = false;
  /**
   * iommu_group -> this context's view of it (devices bound, attachment). Keyed by the group
   * itself: the kernel's xarray index is the core's globally unique group id, while simulated
   * drivers number their groups independently.
   */
  readonly groups = new Map<IommuGroup, IommufdGroup>();
  /** The last refusal, with its explanation, for traces and the typed API. */
  lastError: IommuError | undefined;
  /** References on the file: the fd(s) and every object type that pins the file. */
  fileRefs = 1;
  released = false;

  constructor(
    readonly name = 'iommufd',
    /** Opened as /dev/vfio/vfio: accounting starts in "mm" mode, as VFIO type1 does. */
    vfioContainer = false,
  ) {
    if (vfioContainer) this.accountMode = AccountMode.MM;
  }

  /**
   * Refuse a call on a released context: its file is gone, so in the kernel the fd no longer
   * exists and the syscall fails with EBADF before iommufd is reached.
   */
  assertLive(what: string): void {
    if (this.released) fail('EBADF', `${what} on ${this.name}: the file was closed and the context released (0 of its file references left)`);
  }

  /** Why a call through a /dev/iommu fd that was closed is EBADF (both doors say it alike). */
  closedFdExplanation(what: string): string {
    const refs = this.released ? 'context released' : `${this.fileRefs} other reference(s) keep the context`;
    return `${what} on ${this.name}: the file was closed (its fd no longer exists; ${refs})`;
  }

  /** Drop a file reference; the last one releases the context (iommufd_fops_release). */
  put(): void {
    if (this.released) return;
    if (--this.fileRefs === 0) this.release();
  }

  /**
   * Destroy every object, sweeping ids upward and taking only objects nobody else holds, until
   * the table is empty: this peels the reference graph leaf first.
   */
  release(): void {
    this.released = true;
    for (;;) {
      const objs = this.objects.objects();
      if (!objs.length) return;
      let progress = false;
      for (const obj of objs) {
        if (obj.users !== 1) continue;
        if (!obj.finalized) {
          this.objects.release(obj);
        } else if (this.objects.tryDestroy(obj)) {
          if (obj.type === ObjType.IOAS && this.vfioIoas === (obj as unknown)) this.vfioIoas = null;
        }
        progress = true;
      }
      if (!progress) {
        // A reference cycle would be a bug in the emulator, as it is a WARN in the kernel.
        throw new Error(
          `context release stuck with ${objs.length} object(s): ${objs.map((o: IommufdObject) => `${o.describe()} users=${o.users}`).join(', ')}`,
        );
      }
    }
  }
}
