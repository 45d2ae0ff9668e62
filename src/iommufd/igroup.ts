import { Lock } from '../lib/lockdep.js';
import type { IommuGroup } from '../iommu/group.js';
import type { IommufdCtx } from './context.js';
import type { IommufdDevice } from './device.js';
import type { Hwpt } from './hw-pagetable.js';

/** No software MSI window learned yet (PHYS_ADDR_MAX). */
export const NO_SW_MSI = -1n;

/**
 * An iommu_group as one context sees it (struct iommufd_group): which HWPT the group is attached
 * to and which of its devices are attached. Its lock is the "device lock" of the seed thread:
 * attach, replace and detach of any device of the group run under it.
 */
export class IommufdGroup {
  refs = 1;
  hwpt: Hwpt | null = null;
  readonly deviceList: IommufdDevice[] = [];
  swMsiStart = NO_SW_MSI;
  readonly lock: Lock;

  constructor(
    readonly ctx: IommufdCtx,
    readonly group: IommuGroup,
  ) {
    this.lock = new Lock('igroup->lock', `group ${group.id}`);
  }

  /** iommufd_get_group: the context's igroup for this group, created on first use. */
  static get(ctx: IommufdCtx, group: IommuGroup): IommufdGroup {
    let ig = ctx.groups.get(group);
    if (ig) {
      ig.refs++;
      return ig;
    }
    ig = new IommufdGroup(ctx, group);
    ctx.groups.set(group, ig);
    return ig;
  }

  put(): void {
    if (--this.refs === 0) {
      if (this.ctx.groups.get(this.group) === this) this.ctx.groups.delete(this.group);
    }
  }
}
