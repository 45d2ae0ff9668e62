/**
 * The mock's page table (the kernel's `pfns` xarray): one entry per 2048-byte I/O page, indexed by
 * iova / 2048. Entries live in chunks of 512 slots (one 1 MiB huge page) held as typed arrays, so
 * the selftest's 128 MiB buffers (65536 entries) cost a few hundred small arrays instead of an
 * object per entry, and the per-page loops of map, unmap and dirty read-out run on numbers.
 */

/** One entry as the selftest hooks and tests see it. */
export interface MockPte {
  /** Physical address / 2048. */
  pfn: number;
  /** MOCK_PFN_* bits. */
  flags: number;
}

/** Slots per chunk: one 1 MiB huge page, so a huge page's entries are one chunk. */
export const CHUNK_SLOTS = 512;
/** Flag-byte bit that says a slot holds an entry (above every MOCK_PFN_* bit). */
export const PTE_PRESENT = 0x80;

export interface PteChunk {
  /** Physical address / 2048 of each slot (exact: below 2^53). */
  readonly pfn: Float64Array;
  /** MOCK_PFN_* bits | PTE_PRESENT of each slot; 0 = empty. */
  readonly flags: Uint8Array;
  /** Slots present in this chunk; the chunk is dropped when it reaches 0. */
  used: number;
}

/** Chunk key of a slot index (indexes are below 2^53, so this is exact). */
export function chunkKey(index: number): number {
  return Math.floor(index / CHUNK_SLOTS);
}

/** Empty chunks kept for reuse: a map and unmap of one page in an empty megabyte would otherwise allocate and drop one each time. */
const SPARE_CHUNKS = 16;

export class MockPageTable {
  private readonly chunks = new Map<number, PteChunk>();
  /** Dropped chunks, all slots empty (flags 0; stale pfns are never read). */
  private readonly spare: PteChunk[] = [];
  /** Entries present (the xarray's population). */
  size = 0;

  /** The chunk with key `key`, created empty if `create`. */
  chunk(key: number, create: true): PteChunk;
  chunk(key: number, create?: boolean): PteChunk | undefined;
  chunk(key: number, create = false): PteChunk | undefined {
    let c = this.chunks.get(key);
    if (!c && create) {
      c = this.spare.pop() ?? { pfn: new Float64Array(CHUNK_SLOTS), flags: new Uint8Array(CHUNK_SLOTS), used: 0 };
      this.chunks.set(key, c);
    }
    return c;
  }

  /** Account for `n` (negative: removed) entries of chunk `key`; drops the chunk once empty. */
  adjust(key: number, c: PteChunk, n: number): void {
    c.used += n;
    this.size += n;
    if (c.used === 0) {
      this.chunks.delete(key);
      if (this.spare.length < SPARE_CHUNKS) this.spare.push(c);
    }
  }

  /** The entry at a slot index, as a fresh object (for the non-hot paths). */
  get(index: number): MockPte | undefined {
    const key = chunkKey(index);
    const c = this.chunks.get(key);
    const i = index - key * CHUNK_SLOTS;
    if (!c || !(c.flags[i]! & PTE_PRESENT)) return undefined;
    return { pfn: c.pfn[i]!, flags: c.flags[i]! & ~PTE_PRESENT };
  }

  /** Every entry as [index, entry], chunk by chunk (tests and debugging). */
  *[Symbol.iterator](): IterableIterator<[number, MockPte]> {
    for (const [key, c] of this.chunks) {
      for (let i = 0; i < CHUNK_SLOTS; i++) {
        if (c.flags[i]! & PTE_PRESENT) yield [key * CHUNK_SLOTS + i, { pfn: c.pfn[i]!, flags: c.flags[i]! & ~PTE_PRESENT }];
      }
    }
  }
}
