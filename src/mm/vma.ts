/**
 * A virtual memory area (struct vm_area_struct) together with its page table: which frame backs
 * each resident page. Positions are page indexes (address >> 12), exact in a `number`.
 */
import { HUGE_PAGE_FRAMES, PAGE_SIZE, type Frame } from './frames.js';
import type { SimFile } from './file.js';
import { hex } from '../lib/error.js';
import { protString } from './mman.js';

export class Vma {
  /**
   * Resident pages: page index → frame. Each entry holds one `mapCount` on its frame. Hugetlb
   * areas always hold whole 512-entry units.
   */
  ptes = new Map<number, Frame>();

  constructor(
    /** First page index. */
    public start: number,
    /** Page index after the last page. */
    public end: number,
    public prot: number,
    readonly shared: boolean,
    readonly hugetlb: boolean,
    /** Backing file; undefined for private anonymous memory. Each Vma holds one file reference. */
    readonly file: SimFile | undefined,
    /** File page index of `start`. */
    public pgoff: number,
  ) {}

  get npages(): number {
    return this.end - this.start;
  }

  /** Pages per allocation unit: 512 for hugetlb, else 1. */
  get unitPages(): number {
    return this.hugetlb ? HUGE_PAGE_FRAMES : 1;
  }

  filePage(page: number): number {
    return this.pgoff + (page - this.start);
  }

  /** "[0x7f0000000000, 0x7f0000004000) RW- shared" for explanations. */
  describe(): string {
    const kind = this.hugetlb ? 'hugetlb ' : '';
    const sharing = this.shared ? 'shared' : 'private';
    const backing = this.file && !this.file.name.endsWith('(deleted)') ? ` file ${this.file.name}` : '';
    return `[${hex(this.start * PAGE_SIZE)}, ${hex(this.end * PAGE_SIZE)}) ${protString(this.prot)} ${kind}${sharing}${backing}`;
  }

  /** Cut this area at `page`: this keeps [start, page), the returned area gets [page, end). */
  splitAt(page: number): Vma {
    const tail = new Vma(page, this.end, this.prot, this.shared, this.hugetlb, this.file, this.filePage(page));
    this.file?.get();
    this.end = page;
    // Move the tail's page-table entries; cost is proportional to resident pages, not to size.
    const head = this.ptes;
    if (head.size > 0) {
      for (const [p, f] of head) {
        if (p >= page) {
          tail.ptes.set(p, f);
          head.delete(p);
        }
      }
    }
    return tail;
  }

  /** Drop every page-table entry (the area goes away). Frames nobody else holds are freed. */
  unmapAll(): void {
    for (const f of this.ptes.values()) {
      f.mapCount--;
      f.releaseIfUnused();
    }
    this.ptes.clear();
  }
}
