import { mergeRanges, anyIntersects, type Range } from './ranges.js';

/**
 * Who reserved a range: a device (its reserved regions), a domain (the IOVA outside its
 * aperture) or nobody (the selftest's ADD_RESERVED). Any object identity works as an owner.
 */
export type ReservedOwner = object | null;

export interface ReservedRange extends Range {
  readonly owner: ReservedOwner;
}

/**
 * The reserved "tree" of an io_pagetable. Ranges may overlap each other (they are never checked
 * against one another); lookups go through a merged view rebuilt after each change, since
 * reservations change rarely (attach, HWPT allocation) and are read on every MAP.
 */
export class ReservedSet {
  private readonly items: ReservedRange[] = [];
  private mergedCache: Range[] | undefined = [];

  get size(): number {
    return this.items.length;
  }

  add(start: bigint, last: bigint, owner: ReservedOwner): void {
    this.items.push({ start, last, owner });
    this.mergedCache = undefined;
  }

  /** Remove every range of `owner`; returns how many were removed. */
  removeOwner(owner: ReservedOwner): number {
    let removed = 0;
    for (let i = this.items.length - 1; i >= 0; i--) {
      if (this.items[i]!.owner === owner) {
        this.items.splice(i, 1);
        removed++;
      }
    }
    if (removed) this.mergedCache = undefined;
    return removed;
  }

  /** Sorted union of all reservations (touching ranges merged). */
  merged(): readonly Range[] {
    return (this.mergedCache ??= mergeRanges(this.items));
  }

  /** A reserved range intersecting [start, last], if any. */
  firstIntersecting(start: bigint, last: bigint): ReservedRange | undefined {
    const hit = anyIntersects(this.merged(), start, last);
    if (!hit) return undefined;
    // Report a real reservation (with its owner) rather than the merged span.
    return this.items.find((r) => r.start <= last && start <= r.last);
  }

  all(): readonly ReservedRange[] {
    return this.items;
  }
}
