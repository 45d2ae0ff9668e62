/**
 * sorted-btree is CommonJS with its class on `exports.default`; under Node's ESM interop the
 * default import is the whole exports object, so unwrap it once here.
 */
import pkg from 'sorted-btree';

export const BTree = pkg.default;
export type BTree<K, V> = import('sorted-btree').default<K, V>;

export function compareBigint(a: bigint, b: bigint): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A B+ tree keyed by u64 (bigint). */
export function bigintTree<V>(): BTree<bigint, V> {
  return new BTree<bigint, V>(undefined, compareBigint);
}
