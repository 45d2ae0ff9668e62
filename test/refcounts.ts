/**
 * The `users` count every object of a context must have between two calls, computed from who
 * holds it (reference §1.4; 6.12's refcount_inc/dec sites in device.c, hw_pagetable.c, fault.c):
 *
 *   IOAS         1 + HWPT_PAGINGs on it + accesses attached to it (the compat pointer holds none)
 *   HWPT_PAGING  1 + attached devices + nested children
 *   HWPT_NESTED  1 + attached devices
 *   DEVICE       1 + the binding driver + 1 while attached
 *   ACCESS       1 + the driver that created it
 *   FAULT        1 + its open fd + HWPTs allocated with it
 *   SELFTEST     1
 *
 * Every object is published (no creation left half done) and holds no short-term reference.
 * Shared by the property and fuzz tests.
 */
import assert from 'node:assert/strict';
import { IommufdAccess } from '../src/iommufd/access.js';
import type { IommufdCtx } from '../src/iommufd/context.js';
import { IommufdDevice } from '../src/iommufd/device.js';
import { IommufdFault } from '../src/iommufd/fault.js';
import { Hwpt, HwptNested, HwptPaging } from '../src/iommufd/hw-pagetable.js';
import { ObjType, objTypeName, type IommufdObject } from '../src/iommufd/object.js';

/** What `users` should be for each object of the context, by id. */
export function expectedUsers(ctx: IommufdCtx): Map<number, number> {
  const objs = ctx.objects.objects();
  const want = new Map<number, number>(objs.map((o) => [o.id, 1]));
  const add = (o: IommufdObject | null | undefined, n = 1) => {
    if (o && want.has(o.id) && ctx.objects.peek(o.id) === o) want.set(o.id, want.get(o.id)! + n);
  };
  for (const ig of ctx.groups.values()) if (ig.hwpt) add(ig.hwpt, ig.deviceList.length);
  for (const o of objs) {
    if (o instanceof HwptPaging) add(o.ioas);
    if (o instanceof HwptNested) add(o.parent);
    if (o instanceof Hwpt) add(o.fault);
    if (o instanceof IommufdAccess) {
      add(o.ioas);
      add(o); // the creating driver
    }
    if (o instanceof IommufdDevice) add(o, o.attached ? 2 : 1);
    if (o instanceof IommufdFault && o.file) add(o);
  }
  return want;
}

export function checkObjectUsers(ctx: IommufdCtx, where: string): void {
  const want = expectedUsers(ctx);
  for (const o of ctx.objects.objects()) {
    assert.ok(o.finalized, `${where}: ${o.describe()} is still only reserved between calls`);
    assert.equal(o.shortterm, 0, `${where}: ${o.describe()} holds short-term references between calls`);
    assert.equal(
      o.users,
      want.get(o.id),
      `${where}: ${o.describe()} (${objTypeName(o.type)}) has ${o.users} users, its holders account for ${want.get(o.id)}`,
    );
    if (o.type === ObjType.SELFTEST) assert.equal(o.users, 1);
  }
}
