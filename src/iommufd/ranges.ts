/** Closed u64 ranges [start, last] and the small sorted sets iommufd keeps of them. */

export interface Range {
  readonly start: bigint;
  readonly last: bigint;
}

export function intersects(a: Range, start: bigint, last: bigint): boolean {
  return a.start <= last && start <= a.last;
}

/**
 * Merge possibly overlapping ranges into sorted, disjoint ranges; ranges that merely touch
 * (last + 1 === next start) are merged too, as the kernel's span iterator sees no hole there.
 */
export function mergeRanges(ranges: readonly Range[]): Range[] {
  const sorted = [...ranges].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: { start: bigint; last: bigint }[] = [];
  for (const r of sorted) {
    const prev = out[out.length - 1];
    if (prev && r.start <= prev.last + 1n) {
      if (r.last > prev.last) prev.last = r.last;
    } else out.push({ start: r.start, last: r.last });
  }
  return out;
}

/** Index of the first range in a sorted disjoint list whose last >= v (binary search). */
export function lowerBoundByLast(sorted: readonly Range[], v: bigint): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]!.last < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Does any range of a sorted disjoint list intersect [start, last]? */
export function anyIntersects(sorted: readonly Range[], start: bigint, last: bigint): Range | undefined {
  const r = sorted[lowerBoundByLast(sorted, start)];
  return r && r.start <= last ? r : undefined;
}

/**
 * The maximal gaps of a sorted disjoint (merged) list inside [from, to], ascending. This is the
 * "hole" half of the kernel's interval_tree span iterator.
 */
export function* holes(merged: readonly Range[], from: bigint, to: bigint): Generator<Range> {
  let cur = from;
  for (let i = lowerBoundByLast(merged, from); i < merged.length; i++) {
    const r = merged[i]!;
    if (r.start > to) break;
    if (r.start > cur) yield { start: cur, last: r.start - 1n };
    if (r.last >= to) return;
    cur = r.last + 1n;
  }
  if (cur <= to) yield { start: cur, last: to };
}
