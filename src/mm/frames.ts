/**
 * Physical memory of the simulated machine: page frames with synthetic frame numbers.
 *
 * Frames are handed out by a deterministic bump allocator (no reuse, no randomness), so the same
 * sequence of calls always yields the same pfns. Content is allocated on first write: a frame that
 * was never written reads as zeros and costs no 4 KiB buffer.
 */
import type { PageFrame } from './types.js';
import { hex } from '../lib/error.js';

export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;
/** Frames in a 2 MiB hugetlb page. */
export const HUGE_PAGE_FRAMES = 512;
export const HUGE_PAGE_SIZE = PAGE_SIZE * HUGE_PAGE_FRAMES;

/** Who a frame belongs to, which decides copy-on-write rules. */
export const FrameKind = {
  /** Private anonymous memory of one or more (after fork) address spaces. */
  Anon: 0,
  /** Page cache of a SimFile (shmem, hugetlbfs). */
  File: 1,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

const ZERO_PAGE = new Uint8Array(PAGE_SIZE);

export class Frame implements PageFrame {
  /** Long-term pins (FOLL_PIN | FOLL_LONGTERM). */
  pinCount = 0;
  /** Page-table entries that reference this frame, across all address spaces. */
  mapCount = 0;
  /** Held by a file's page cache. */
  cached = false;
  private bytes: Uint8Array | undefined;
  private freed = false;

  constructor(
    private readonly memory: PhysicalMemory,
    readonly pfn: number,
    readonly compound: boolean,
    readonly kind: FrameKind,
  ) {}

  /** Synthetic physical address of the first byte. */
  get physAddr(): bigint {
    return BigInt(this.pfn) << 12n;
  }

  /** Still referenced by a mapping, a pin or a page cache. */
  get live(): boolean {
    return !this.freed;
  }

  /** Whether 4 KiB of content has been materialised. */
  get materialized(): boolean {
    return this.bytes !== undefined;
  }

  read(offset: number, length: number): Uint8Array {
    this.check(offset, length);
    const out = new Uint8Array(length);
    if (this.bytes) out.set(this.bytes.subarray(offset, offset + length));
    return out;
  }

  /** Copy `length` bytes at `offset` into `dst` at `dstOffset` without an intermediate buffer. */
  readInto(offset: number, length: number, dst: Uint8Array, dstOffset: number): void {
    this.check(offset, length);
    if (this.bytes) dst.set(this.bytes.subarray(offset, offset + length), dstOffset);
    else dst.fill(0, dstOffset, dstOffset + length);
  }

  write(offset: number, data: Uint8Array): void {
    this.check(offset, data.length);
    if (data.length === 0) return;
    if (!this.bytes) {
      // Writing zeros into a zero page changes nothing: stay lean.
      if (isAllZero(data)) return;
      this.bytes = new Uint8Array(PAGE_SIZE);
      this.memory.materialized++;
    }
    this.bytes.set(data, offset);
  }

  /** Make this frame's content a copy of `src` (copy-on-write, unshare, fork of a pinned page). */
  copyFrom(src: Frame): void {
    if (!src.bytes) {
      if (this.bytes) this.bytes.set(ZERO_PAGE);
      return;
    }
    if (!this.bytes) {
      this.bytes = new Uint8Array(PAGE_SIZE);
      this.memory.materialized++;
    }
    this.bytes.set(src.bytes);
  }

  /** Free the frame once nothing references it any more. */
  releaseIfUnused(): void {
    if (this.freed || this.mapCount > 0 || this.pinCount > 0 || this.cached) return;
    this.freed = true;
    if (this.bytes) this.memory.materialized--;
    this.bytes = undefined;
    this.memory.forget(this);
  }

  private check(offset: number, length: number): void {
    if (this.freed) {
      throw new Error(`use after free: pfn ${hex(this.pfn)} was released (no mapping, pin or page cache holds it)`);
    }
    if (!Number.isInteger(offset) || offset < 0 || length < 0 || offset + length > PAGE_SIZE) {
      throw new RangeError(`frame access [${offset}, +${length}) outside the 4096-byte frame pfn ${hex(this.pfn)}`);
    }
  }
}

function isAllZero(data: Uint8Array): boolean {
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}

export interface PhysicalMemoryOptions {
  /** First pfn handed out (default 0x1000, i.e. physical 16 MiB, so pfn 0 is never used). */
  firstPfn?: number;
  /**
   * Distance between consecutive small frames (default 2). With a gap, ordinary 4 KiB pages are
   * never physically contiguous, as on a real machine without THP, so IOMMU drivers only build
   * large IOPTEs from hugetlb memory. Use 1 for a plain bump allocator.
   */
  smallFrameStride?: number;
}

/** The machine's RAM: allocation of frames and lookup by pfn. */
export class PhysicalMemory {
  private nextPfn: number;
  private readonly stride: number;
  private readonly byPfn = new Map<number, Frame>();
  /** Frames whose 4 KiB content buffer exists. */
  materialized = 0;

  constructor(opts: PhysicalMemoryOptions = {}) {
    this.nextPfn = opts.firstPfn ?? 0x1000;
    this.stride = opts.smallFrameStride ?? 2;
    if (!Number.isInteger(this.stride) || this.stride < 1) throw new RangeError('smallFrameStride must be >= 1');
  }

  /** Frames currently alive (mapped, pinned or cached). */
  get liveFrames(): number {
    return this.byPfn.size;
  }

  /** The live frame with this pfn, if any. */
  frame(pfn: number): Frame | undefined {
    return this.byPfn.get(pfn);
  }

  /** A zero-filled 4 KiB frame. The caller must take a reference (map, pin, cache) at once. */
  allocFrame(kind: FrameKind): Frame {
    const f = new Frame(this, this.nextPfn, false, kind);
    this.nextPfn += this.stride;
    this.byPfn.set(f.pfn, f);
    return f;
  }

  /** A 2 MiB compound page: 512 frames with contiguous pfns, the first aligned to 512. */
  allocHugePage(kind: FrameKind): Frame[] {
    const base = Math.ceil(this.nextPfn / HUGE_PAGE_FRAMES) * HUGE_PAGE_FRAMES;
    const frames = new Array<Frame>(HUGE_PAGE_FRAMES);
    for (let i = 0; i < HUGE_PAGE_FRAMES; i++) {
      const f = new Frame(this, base + i, true, kind);
      frames[i] = f;
      this.byPfn.set(f.pfn, f);
    }
    this.nextPfn = base + HUGE_PAGE_FRAMES;
    return frames;
  }

  /** Allocate a unit of `n` frames (1, or 512 for a huge page). */
  allocUnit(kind: FrameKind, huge: boolean): Frame[] {
    return huge ? this.allocHugePage(kind) : [this.allocFrame(kind)];
  }

  /** @internal called by Frame when it is released. */
  forget(f: Frame): void {
    this.byPfn.delete(f.pfn);
  }
}
