/**
 * A memory-backed file (a shmem/tmpfs or hugetlbfs inode) with its page cache.
 *
 * Shared mappings of the same file at the same offset reference the same frames, whichever process
 * maps them. Anonymous MAP_SHARED memory is an unnamed file of this kind, as in Linux (shmem_zero_setup).
 */
import { Frame, FrameKind, HUGE_PAGE_FRAMES, HUGE_PAGE_SIZE, PAGE_SIZE, type PhysicalMemory } from './frames.js';

export interface SimFileOptions {
  /** hugetlbfs: 2 MiB pages, size rounded up to 2 MiB. */
  hugetlb?: boolean;
  /** Opened O_RDONLY: MAP_SHARED with PROT_WRITE is refused (EACCES), private mappings may still write (COW). */
  readOnly?: boolean;
  /** A named file stays until unlink(); an unnamed one goes with its last mapping. */
  persistent?: boolean;
}

export class SimFile {
  readonly hugetlb: boolean;
  readonly readOnly: boolean;
  /** Size in bytes (a multiple of the file's page size). */
  readonly size: number;
  private readonly cache = new Map<number, Frame>();
  private mappers = 0;
  private persistent: boolean;
  private released = false;

  constructor(
    private readonly memory: PhysicalMemory,
    /** Inode number, unique per machine. */
    readonly ino: number,
    readonly name: string,
    size: number,
    opts: SimFileOptions = {},
  ) {
    this.hugetlb = opts.hugetlb ?? false;
    this.readOnly = opts.readOnly ?? false;
    this.persistent = opts.persistent ?? true;
    const unit = this.hugetlb ? HUGE_PAGE_SIZE : PAGE_SIZE;
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad file size ${size}`);
    this.size = Math.ceil(size / unit) * unit;
  }

  /** Size in 4 KiB pages. */
  get npages(): number {
    return this.size / PAGE_SIZE;
  }

  /** Pages resident in the page cache. */
  get cachedPages(): number {
    return this.cache.size;
  }

  /** The cached frame of page `pgoff`, without allocating. */
  peek(pgoff: number): Frame | undefined {
    return this.cache.get(pgoff);
  }

  /**
   * The frames of the allocation unit holding page `pgoff`, allocated (zeroed) if absent: one
   * frame, or for hugetlbfs the 512 frames of its huge page. Returns the unit's first page index too.
   */
  unit(pgoff: number): { base: number; frames: Frame[] } {
    if (this.released) throw new Error(`file ${this.name} (ino ${this.ino}) was released`);
    const base = this.hugetlb ? pgoff - (pgoff % HUGE_PAGE_FRAMES) : pgoff;
    const n = this.hugetlb ? HUGE_PAGE_FRAMES : 1;
    const first = this.cache.get(base);
    if (first) {
      if (n === 1) return { base, frames: [first] };
      const frames = new Array<Frame>(n);
      for (let i = 0; i < n; i++) frames[i] = this.cache.get(base + i)!;
      return { base, frames };
    }
    const frames = this.memory.allocUnit(FrameKind.File, this.hugetlb);
    for (let i = 0; i < n; i++) {
      const f = frames[i]!;
      f.cached = true;
      this.cache.set(base + i, f);
    }
    return { base, frames };
  }

  /** pread(2): bytes of the file, zeros for holes. */
  pread(offset: number, length: number): Uint8Array {
    this.checkRange(offset, length);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const pgoff = Math.floor(pos / PAGE_SIZE);
      const inPage = pos % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - inPage, length - done);
      this.cache.get(pgoff)?.readInto(inPage, n, out, done);
      done += n;
    }
    return out;
  }

  /** pwrite(2) within the file's size (for setting up content; ignores readOnly like the file's owner would). */
  pwrite(offset: number, data: Uint8Array): void {
    this.checkRange(offset, data.length);
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const pgoff = Math.floor(pos / PAGE_SIZE);
      const inPage = pos % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - inPage, data.length - done);
      const f = this.peek(pgoff) ?? this.frameOf(pgoff);
      f.write(inPage, data.subarray(done, done + n));
      done += n;
    }
  }

  /** A mapping starts referencing the file. */
  get(): void {
    this.mappers++;
  }

  /** A mapping stops referencing the file. */
  put(): void {
    if (this.mappers <= 0) throw new Error(`file ${this.name}: unbalanced put()`);
    this.mappers--;
    this.maybeRelease();
  }

  /** Remove the name: the inode goes once no mapping uses it. */
  unlink(): void {
    this.persistent = false;
    this.maybeRelease();
  }

  private frameOf(pgoff: number): Frame {
    const { base, frames } = this.unit(pgoff);
    return frames[pgoff - base]!;
  }

  private maybeRelease(): void {
    if (this.released || this.persistent || this.mappers > 0) return;
    this.released = true;
    // Frames still mapped privately or pinned survive the page cache.
    for (const f of this.cache.values()) {
      f.cached = false;
      f.releaseIfUnused();
    }
    this.cache.clear();
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`[${offset}, +${length}) is outside file ${this.name} of ${this.size} bytes`);
    }
  }
}
