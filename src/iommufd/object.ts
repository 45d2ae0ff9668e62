import { fail } from '../lib/error.js';
import { kernelWarn } from '../lib/warn.js';

/** Object types (the kernel's internal enum iommufd_object_type; never visible in the uAPI). */
export const ObjType = {
  ANY: 0,
  DEVICE: 1,
  HWPT_PAGING: 2,
  HWPT_NESTED: 3,
  IOAS: 4,
  ACCESS: 5,
  FAULT: 6,
  SELFTEST: 7,
} as const;
export type ObjTypeValue = (typeof ObjType)[keyof typeof ObjType];

const typeNames: Record<number, string> = {
  0: 'object',
  1: 'device',
  2: 'paging HWPT',
  3: 'nested HWPT',
  4: 'IOAS',
  5: 'access',
  6: 'fault queue',
  7: 'selftest device',
};
export function objTypeName(t: number): string {
  return typeNames[t] ?? `type ${t}`;
}

/**
 * Every object in a context's table. `users` counts long-term references; the table itself
 * holds one, so DESTROY only succeeds when users is exactly 1.
 */
export abstract class IommufdObject {
  abstract readonly type: ObjTypeValue;
  id = 0;
  users = 1;
  /** References held for the duration of one call (iommufd_get_object). */
  shortterm = 0;
  /** Published: visible to lookups and DESTROY. */
  finalized = false;

  /** Tear down a published object (the type's destroy op). */
  abstract destroy(): void;
  /** Tear down an object whose creation failed before it was published; defaults to destroy(). */
  abort(): void {
    this.destroy();
  }

  describe(): string {
    return `${objTypeName(this.type)} ${this.id}`;
  }
}

/** Object ids are an allocating xarray: lowest free id from 1, at most INT_MAX. */
export const OBJ_ID_MAX = 0x7fff_ffff;

/** A binary min-heap of freed ids below `next`, so allocation is always the lowest free id. */
class FreeIds {
  private readonly heap: number[] = [];
  get size(): number {
    return this.heap.length;
  }
  push(v: number): void {
    const h = this.heap;
    h.push(v);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]! <= v) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = v;
  }
  pop(): number {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= h.length) break;
        const r = l + 1;
        const c = r < h.length && h[r]! < h[l]! ? r : l;
        if (h[c]! >= last) break;
        h[i] = h[c]!;
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
}

export class ObjectTable {
  private readonly slots = new Map<number, IommufdObject>();
  private readonly free = new FreeIds();
  private next = 1;

  /** Number of ids in use, reserved ones included (the RLIMIT_MODE "xa_empty" test). */
  get count(): number {
    return this.slots.size;
  }

  /** Reserve the lowest free id for an object under construction (_iommufd_object_alloc). */
  reserve<T extends IommufdObject>(obj: T): T {
    let id: number;
    if (this.free.size) id = this.free.pop();
    else {
      if (this.next > OBJ_ID_MAX) fail('EBUSY', `all object ids 1..${OBJ_ID_MAX} are in use`);
      id = this.next++;
    }
    obj.id = id;
    this.slots.set(id, obj);
    return obj;
  }

  /** Publish a reserved object. */
  finalize(obj: IommufdObject): void {
    obj.finalized = true;
  }

  /** Tear down an unpublished object and release its id (iommufd_object_abort_and_destroy). */
  abortAndDestroy(obj: IommufdObject): void {
    obj.abort();
    this.release(obj);
  }

  /** Release the id of an object that was never published, without running its ops. */
  release(obj: IommufdObject): void {
    if (this.slots.get(obj.id) === obj) {
      this.slots.delete(obj.id);
      this.free.push(obj.id);
    }
  }

  /** A published object by id and type (iommufd_get_object): ENOENT when absent or of another type. */
  get(id: number, type: ObjTypeValue = ObjType.ANY): IommufdObject {
    const obj = this.slots.get(id);
    if (!obj || !obj.finalized) fail('ENOENT', `no object with id ${id}`);
    if (type !== ObjType.ANY && obj.type !== type)
      fail('ENOENT', `object ${id} is a ${objTypeName(obj.type)}, not a ${objTypeName(type)}`);
    return obj;
  }

  /** Like get() but undefined instead of ENOENT. */
  peek(id: number): IommufdObject | undefined {
    const obj = this.slots.get(id);
    return obj && obj.finalized ? obj : undefined;
  }

  /**
   * IOMMU_DESTROY (iommufd_object_remove): ENOENT if absent or unpublished, EBUSY if anything
   * else holds a reference; otherwise unpublish and run the type's destroy.
   */
  destroyUser(id: number): IommufdObject {
    const obj = this.slots.get(id);
    if (!obj || !obj.finalized) fail('ENOENT', `no object with id ${id}`);
    if (obj.users !== 1 || obj.shortterm !== 0)
      fail('EBUSY', `${obj.describe()} still has ${obj.users - 1} other user(s)`);
    this.remove(obj);
    obj.destroy();
    return obj;
  }

  /**
   * Destroy an object the kernel releases on its own when only the table's reference is left
   * (iommufd_object_put_and_try_destroy): true if it was destroyed.
   */
  tryDestroy(obj: IommufdObject): boolean {
    if (obj.users !== 1 || this.slots.get(obj.id) !== obj) return false;
    this.remove(obj);
    obj.destroy();
    return true;
  }

  /**
   * Kernel-side destruction (iommufd_object_destroy_user): drop the caller's reference and remove
   * the object. If someone else still holds it, that is a kernel WARN: the caller's reference
   * stays dropped (iommufd_object_remove does not give it back; only the short-term count is
   * restored) and the object is left to the context release, which frees it once its other
   * holders let go.
   */
  destroyKernel(obj: IommufdObject): boolean {
    obj.users--;
    if (obj.users !== 1 || this.slots.get(obj.id) !== obj) {
      kernelWarn(`${obj.describe()} destroyed by its driver while ${obj.users - 1} other reference(s) hold it; left for close`);
      return false;
    }
    this.remove(obj);
    obj.destroy();
    return true;
  }

  /** iommufd_object_put_and_try_destroy: drop the caller's reference, destroy if only the table's remains. */
  putAndTryDestroy(obj: IommufdObject): boolean {
    obj.users--;
    return this.tryDestroy(obj);
  }

  private remove(obj: IommufdObject): void {
    this.slots.delete(obj.id);
    this.free.push(obj.id);
    obj.finalized = false;
  }

  /** Ids in ascending order (release sweeps). */
  ids(): number[] {
    return [...this.slots.keys()].sort((a, b) => a - b);
  }

  objects(): IommufdObject[] {
    return this.ids().map((id) => this.slots.get(id)!);
  }
}
