import { bigintTree } from '../lib/btree.js';
import { U64_MAX } from '../lib/u64.js';
import type { IoptArea } from './area.js';
import type { Range } from './ranges.js';

/**
 * The areas of an io_pagetable, ordered by IOVA and never overlapping, plus an index of the gaps
 * between them so automatic IOVA allocation does not walk every area: a packed IOAS with a
 * million areas has only a couple of gaps.
 */
export class AreaTree {
  private readonly byIova = bigintTree<IoptArea>();
  /** Maximal IOVA ranges covered by no area: start -> last. */
  private readonly gaps = bigintTree<bigint>();
  // Scratch pairs for lookups whose result does not leave this class: without them every
  // getPairOrNextLower/nextHigherPair allocates a [key, value] array (several per MAP/UNMAP).
  private readonly gapPair: [bigint, bigint] = [0n, 0n];
  private readonly areaPair = [0n, undefined] as unknown as [bigint, IoptArea];

  constructor() {
    this.gaps.set(0n, U64_MAX);
  }

  get size(): number {
    return this.byIova.size;
  }

  insert(area: IoptArea): void {
    const g = this.gaps.getPairOrNextLower(area.iova, this.gapPair);
    if (!g || g[1] < area.last) throw new Error(`area tree: ${area.describe()} overlaps an existing area`);
    const [gs, gl] = g;
    // Shrink the gap in place when its start stays: a B+ tree delete costs far more than an overwrite.
    if (gs < area.iova) this.gaps.set(gs, area.iova - 1n);
    else this.gaps.delete(gs);
    if (area.last < gl) this.gaps.set(area.last + 1n, gl);
    this.byIova.set(area.iova, area);
  }

  remove(area: IoptArea): void {
    if (this.byIova.get(area.iova) !== area) throw new Error(`area tree: ${area.describe()} is not in the tree`);
    this.byIova.delete(area.iova);
    let start = area.iova;
    let last = area.last;
    if (start > 0n) {
      const left = this.gaps.getPairOrNextLower(start - 1n, this.gapPair);
      // The merged gap keeps the left gap's key, so the final set() overwrites it in place.
      if (left && left[1] === start - 1n) start = left[0];
    }
    if (last < U64_MAX) {
      const right = this.gaps.get(last + 1n);
      if (right !== undefined) {
        this.gaps.delete(last + 1n);
        last = right;
      }
    }
    this.gaps.set(start, last);
  }

  /** Whether no area intersects [start, last] (one gap holds it all): one lookup. */
  isFree(start: bigint, last: bigint): boolean {
    const g = this.gaps.getPairOrNextLower(start, this.gapPair);
    return g !== undefined && g[1] >= last;
  }

  /** The lowest area intersecting [start, last]. */
  firstIntersecting(start: bigint, last: bigint): IoptArea | undefined {
    const p = this.byIova.getPairOrNextLower(start, this.areaPair);
    if (p && p[1].last >= start) return p[1];
    const n = this.byIova.nextHigherPair(start, this.areaPair);
    return n && n[0] <= last ? n[1] : undefined;
  }

  /** The area with an IOVA strictly above `iova` and starting at or below `last`. */
  nextAfter(area: IoptArea, last: bigint): IoptArea | undefined {
    const n = this.byIova.nextHigherPair(area.iova, this.areaPair);
    return n && n[0] <= last ? n[1] : undefined;
  }

  /** Areas intersecting [start, last], ascending. */
  *intersecting(start: bigint, last: bigint): Generator<IoptArea> {
    let a = this.firstIntersecting(start, last);
    while (a) {
      yield a;
      a = this.nextAfter(a, last);
    }
  }

  *all(): Generator<IoptArea> {
    for (const [, a] of this.byIova.entries()) yield a;
  }

  /** The gap holding `iova`, or else the lowest gap above it, as [start, last]. */
  gapAtOrAfter(iova: bigint): [bigint, bigint] | undefined {
    const g = this.gaps.getPairOrNextLower(iova);
    return g && g[1] >= iova ? g : this.gaps.nextHigherPair(iova);
  }

  /** The gap after the one starting at `gapStart`. */
  gapAfter(gapStart: bigint): [bigint, bigint] | undefined {
    return this.gaps.nextHigherPair(gapStart);
  }

  /** Gaps between areas intersecting [start, last], clipped to it, ascending. */
  *gapsWithin(start: bigint, last: bigint): Generator<Range> {
    let g = this.gaps.getPairOrNextLower(start);
    if (!g || g[1] < start) g = this.gaps.nextHigherPair(start);
    while (g && g[0] <= last) {
      yield { start: g[0] < start ? start : g[0], last: g[1] > last ? last : g[1] };
      g = this.gaps.nextHigherPair(g[0]);
    }
  }
}
