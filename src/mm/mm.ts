/**
 * A simulated address space (struct mm_struct): its areas, their page tables, the page-fault
 * rules (copy-on-write, unsharing for long-term pins) and the two ways in: what the program itself
 * does (mmap, readMem, writeMem: a bad access is a signal) and what the kernel does on its behalf
 * (copy_{from,to}_user, pin_user_pages: a bad access is EFAULT).
 */
import btreePkg from 'sorted-btree';
import { fail, hex } from '../lib/error.js';
import { Frame, FrameKind, HUGE_PAGE_FRAMES, HUGE_PAGE_SIZE, PAGE_SIZE, type PhysicalMemory } from './frames.js';
import type { SimFile } from './file.js';
import {
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_FIXED_NOREPLACE,
  MAP_HUGETLB,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  MMAP_BASE,
  MMAP_MIN_ADDR,
  MemoryFault,
  PROT_EXEC,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  TASK_SIZE,
} from './mman.js';
import type { AddressSpace, PageFrame } from './types.js';
import { Vma } from './vma.js';

// sorted-btree is CommonJS with the class on `exports.default`.
const BTree = btreePkg.default;
type BTree<K, V> = import('sorted-btree').default<K, V>;

/** What an address space needs from its machine. */
export interface MmHost {
  readonly memory: PhysicalMemory;
  /** A fresh unnamed shmem/hugetlbfs file for anonymous MAP_SHARED memory. */
  createAnonFile(size: number, hugetlb: boolean): SimFile;
}

/** One line of /proc/<pid>/maps, for inspection and visualisation. */
export interface MappingInfo {
  start: bigint;
  end: bigint;
  prot: number;
  shared: boolean;
  hugetlb: boolean;
  /** Backing file (anonymous MAP_SHARED memory has an unnamed one). */
  file: SimFile | undefined;
  /** Byte offset into the file of `start`. */
  offset: bigint;
  /** Pages with a page-table entry. */
  residentPages: number;
}

type ViolationKind = 'unmapped' | 'prot_none' | 'readonly' | 'eof';
interface Violation {
  addr: number;
  kind: ViolationKind;
  vma?: Vma;
}

const TOP_PAGE = MMAP_BASE / PAGE_SIZE;
const MIN_PAGE = MMAP_MIN_ADDR / PAGE_SIZE;
const TASK_SIZE_BIG = BigInt(TASK_SIZE);

export class SimMm implements AddressSpace {
  /** mm->locked_vm, in pages. */
  lockedVm = 0;
  /** mm->pinned_vm, in pages. */
  pinnedVm = 0;
  /** Tasks using this mm (mm_users). */
  private users = 1;
  private readonly areas: BTree<number, Vma> = new BTree<number, Vma>();
  /** Page index such that [freeHint, TOP_PAGE) has no free page: top-down search starts here. */
  private freeHint = TOP_PAGE;

  constructor(
    private readonly host: MmHost,
    readonly id: number,
  ) {}

  alive(): boolean {
    return this.users > 0;
  }

  /** Number of areas (VMAs). */
  get mapCount(): number {
    return this.areas.size;
  }

  // ------------------------------------------------------------------------------------------
  // System calls made by the program.

  /**
   * mmap(2). `file` is the file descriptor's inode for a file mapping. Errors are the errnos the
   * syscall returns: EINVAL (flags, alignment, length 0), EBADF (no file), EACCES (writable shared
   * mapping of a read-only file), EEXIST (MAP_FIXED_NOREPLACE overlap), ENOMEM (no room).
   */
  mmap(
    addr: bigint,
    length: bigint | number,
    prot: number,
    flags: number,
    file?: SimFile,
    offset: bigint | number = 0n,
  ): bigint {
    this.requireAlive('mmap');
    const len = BigInt(length);
    if (len <= 0n) fail('EINVAL', `mmap length ${len} must be positive`);
    const type = flags & (MAP_SHARED | MAP_PRIVATE);
    if (type !== MAP_SHARED && type !== MAP_PRIVATE) {
      fail('EINVAL', `mmap flags ${hex(flags)} must contain exactly one of MAP_SHARED and MAP_PRIVATE`);
    }
    if (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) fail('EINVAL', `mmap prot ${hex(prot)} has unknown bits`);
    const shared = type === MAP_SHARED;
    const anon = (flags & MAP_ANONYMOUS) !== 0;
    if (!anon && !file) fail('EBADF', 'mmap of a file without a file (pass a SimFile or MAP_ANONYMOUS)');
    let hugetlb: boolean;
    if (anon) hugetlb = (flags & MAP_HUGETLB) !== 0;
    else {
      hugetlb = file!.hugetlb;
      if (!hugetlb && flags & MAP_HUGETLB) fail('EINVAL', `MAP_HUGETLB with file ${file!.name}, which is not on hugetlbfs`);
    }
    const unit = hugetlb ? HUGE_PAGE_SIZE : PAGE_SIZE;
    const unitBig = BigInt(unit);
    const rounded = ((len + unitBig - 1n) / unitBig) * unitBig;
    if (rounded > TASK_SIZE_BIG) fail('ENOMEM', `mmap length ${hex(len)} exceeds the user address space`);
    const npages = Number(rounded) / PAGE_SIZE;

    let pgoff = 0;
    if (!anon) {
      const off = BigInt(offset);
      if (off < 0n || off % unitBig !== 0n) fail('EINVAL', `mmap offset ${hex(off)} is not a multiple of ${hex(unit)}`);
      if (off > BigInt(Number.MAX_SAFE_INTEGER)) fail('EOVERFLOW', `mmap offset ${hex(off)} is too large`);
      pgoff = Number(off) / PAGE_SIZE;
      if (shared && prot & PROT_WRITE && file!.readOnly) {
        fail('EACCES', `writable MAP_SHARED mapping of ${file!.name}, which was opened read-only`);
      }
    }

    const fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) !== 0;
    let start: number;
    if (fixed) {
      if (addr % unitBig !== 0n) fail('EINVAL', `MAP_FIXED address ${hex(addr)} is not ${hex(unit)}-aligned`);
      if (addr + rounded > TASK_SIZE_BIG) fail('ENOMEM', `[${hex(addr)}, +${hex(rounded)}) is outside the user address space`);
      if (addr < BigInt(MMAP_MIN_ADDR)) fail('EPERM', `MAP_FIXED address ${hex(addr)} is below mmap_min_addr ${hex(MMAP_MIN_ADDR)}`);
      start = Number(addr) / PAGE_SIZE;
      if (flags & MAP_FIXED_NOREPLACE) {
        const hit = this.overlapping(start, start + npages)[0];
        if (hit) fail('EEXIST', `MAP_FIXED_NOREPLACE range [${hex(addr)}, +${hex(rounded)}) overlaps ${hit.describe()}`);
      }
      this.removeRange(start, start + npages);
    } else {
      start = this.place(addr, npages, hugetlb ? HUGE_PAGE_FRAMES : 1);
    }

    let backing = file;
    if (anon && shared) backing = this.host.createAnonFile(npages * PAGE_SIZE, hugetlb);
    const vma = new Vma(start, start + npages, prot, shared, hugetlb, backing, pgoff);
    backing?.get();
    this.insert(vma);
    if (flags & MAP_POPULATE) this.populate(vma);
    return BigInt(start) * BigInt(PAGE_SIZE);
  }

  /** munmap(2): unmapping a range that is partly or not at all mapped is fine. Pinned frames survive. */
  munmap(addr: bigint, length: bigint | number): void {
    const [start, end] = this.syscallRange('munmap', addr, length);
    if (start === end) fail('EINVAL', `munmap length 0`);
    this.checkHugeSplit('munmap', start, end);
    this.removeRange(start, end);
  }

  /** mprotect(2): ENOMEM if part of the range is unmapped. */
  mprotect(addr: bigint, length: bigint | number, prot: number): void {
    const [start, end] = this.syscallRange('mprotect', addr, length);
    if (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC)) fail('EINVAL', `mprotect prot ${hex(prot)} has unknown bits`);
    if (start === end) return;
    const vmas = this.overlapping(start, end);
    let at = start;
    for (const v of vmas) {
      if (v.start > at) break;
      at = v.end;
    }
    if (at < end) fail('ENOMEM', `mprotect: address ${hex(at * PAGE_SIZE)} in [${hex(addr)}, +${hex(BigInt(length))}) is not mapped`);
    for (const v of vmas) {
      if (v.shared && prot & PROT_WRITE && v.file?.readOnly) {
        fail('EACCES', `mprotect PROT_WRITE on shared mapping ${v.describe()} of a read-only file`);
      }
    }
    this.checkHugeSplit('mprotect', start, end);
    for (const v of this.isolate(start, end)) v.prot = prot;
  }

  /** The program reads memory: faults like a CPU would (SIGSEGV/SIGBUS thrown as MemoryFault). */
  readMem(addr: bigint, length: number): Uint8Array {
    const a = this.userRange(addr, length);
    const v = this.findViolation(a, a + length, false);
    if (v) this.segv(v, 'the program reads it');
    return this.readBytes(a, length);
  }

  /** The program writes memory: faults pages in and breaks copy-on-write. */
  writeMem(addr: bigint, data: Uint8Array): void {
    const a = this.userRange(addr, data.length);
    const v = this.findViolation(a, a + data.length, true);
    if (v) this.segv(v, 'the program writes to it');
    this.writeBytes(a, data);
  }

  // ------------------------------------------------------------------------------------------
  // The kernel on behalf of a task (AddressSpace).

  copyFromUser(addr: bigint, length: number): Uint8Array {
    if (length === 0) return new Uint8Array(0);
    const a = this.kernelRange('copy_from_user', addr, length);
    const v = this.findViolation(a, a + length, false);
    if (v) fail('EFAULT', `copy_from_user of ${length} bytes at ${hex(addr)}: ${this.explain(v, 'a read was requested')}`);
    return this.readBytes(a, length);
  }

  copyToUser(addr: bigint, data: Uint8Array): void {
    if (data.length === 0) return;
    const a = this.kernelRange('copy_to_user', addr, data.length);
    const v = this.findViolation(a, a + data.length, true);
    if (v) {
      // Like the kernel's copy routines, everything before the faulting byte is stored.
      if (v.addr > a) this.writeBytes(a, data.subarray(0, v.addr - a));
      fail('EFAULT', `copy_to_user of ${data.length} bytes at ${hex(addr)}: ${this.explain(v, 'copy_to_user writes to it')}`);
    }
    this.writeBytes(a, data);
  }

  pinPages(addr: bigint, npages: number, write: boolean): Frame[] {
    if (!Number.isSafeInteger(npages) || npages < 0) throw new RangeError(`pinPages: bad page count ${npages}`);
    if (npages === 0) return [];
    if (addr % BigInt(PAGE_SIZE) !== 0n) throw new RangeError(`pinPages: address ${hex(addr)} is not page aligned`);
    const what = `pin of ${npages} page${npages === 1 ? '' : 's'} at ${hex(addr)}`;
    const a = this.kernelRange(what, addr, npages * PAGE_SIZE);
    const v = this.findViolation(a, a + npages * PAGE_SIZE, write);
    if (v) fail('EFAULT', `${what}: ${this.explain(v, 'a write pin was requested')}`);
    const frames = new Array<Frame>(npages);
    const first = a / PAGE_SIZE;
    let vma = this.findVma(first)!;
    for (let i = 0; i < npages; i++) {
      const page = first + i;
      if (page >= vma.end) vma = this.findVma(page)!;
      const f = this.faultIn(vma, page, write, true);
      f.pinCount++;
      frames[i] = f;
    }
    return frames;
  }

  unpinPages(frames: readonly PageFrame[]): void {
    for (const pf of frames) {
      const f = pf as Frame;
      if (f.pinCount <= 0) throw new Error(`unpin of pfn ${hex(f.pfn)}, which is not pinned`);
      f.pinCount--;
      f.releaseIfUnused();
    }
  }

  lookupPage(addr: bigint, write: boolean): Frame {
    const aligned = addr - (addr % BigInt(PAGE_SIZE));
    const what = `get_user_pages at ${hex(addr)}`;
    const a = this.kernelRange(what, aligned, PAGE_SIZE);
    const v = this.findViolation(a, a + PAGE_SIZE, write);
    if (v) fail('EFAULT', `${what}: ${this.explain(v, 'a write access was requested')}`);
    const page = a / PAGE_SIZE;
    return this.faultIn(this.findVma(page)!, page, write, false);
  }

  // ------------------------------------------------------------------------------------------
  // Inspection (tests, the CLI, visualisation). No faults, no side effects.

  /** The areas, lowest address first. */
  mappings(): MappingInfo[] {
    const out: MappingInfo[] = [];
    for (const v of this.areas.values()) {
      out.push({
        start: BigInt(v.start * PAGE_SIZE),
        end: BigInt(v.end * PAGE_SIZE),
        prot: v.prot,
        shared: v.shared,
        hugetlb: v.hugetlb,
        file: v.file,
        offset: BigInt(v.pgoff) * BigInt(PAGE_SIZE),
        residentPages: v.ptes.size,
      });
    }
    return out;
  }

  /** The frame the page table maps at `addr`, if resident (no fault). */
  residentFrame(addr: bigint): Frame | undefined {
    if (addr < 0n || addr >= TASK_SIZE_BIG) return undefined;
    const page = Number(addr / BigInt(PAGE_SIZE));
    return this.findVma(page)?.ptes.get(page);
  }

  // ------------------------------------------------------------------------------------------
  // Lifecycle, driven by SimProcess.

  /** @internal mmget: another task shares this mm. */
  get(): void {
    this.users++;
  }

  /** @internal mmput: a task stops using this mm; the last one tears the address space down. */
  put(): void {
    if (this.users <= 0) throw new Error(`mm ${this.id}: unbalanced put()`);
    if (--this.users > 0) return;
    for (const v of this.areas.values()) this.dropArea(v);
    this.areas.clear();
  }

  /**
   * @internal dup_mmap: fill `child` (a fresh mm) with copies of this one's areas. Private pages
   * become copy-on-write shared, except anonymous pages that are long-term pinned: the child gets
   * its own copy at once so the parent keeps the pinned page (copy_present_page).
   */
  forkInto(child: SimMm): void {
    const mem = this.host.memory;
    for (const v of this.areas.values()) {
      const c = new Vma(v.start, v.end, v.prot, v.shared, v.hugetlb, v.file, v.pgoff);
      v.file?.get();
      if (v.shared) {
        for (const [p, f] of v.ptes) {
          f.mapCount++;
          c.ptes.set(p, f);
        }
      } else {
        const unit = v.unitPages;
        for (const [p, f] of v.ptes) {
          if (p % unit !== 0 && unit > 1) continue; // hugetlb: handled with its unit's first page
          if (f.kind === FrameKind.Anon && this.unitPinned(v, p, unit)) {
            const copies = mem.allocUnit(FrameKind.Anon, v.hugetlb);
            for (let i = 0; i < unit; i++) {
              const src = v.ptes.get(p + i)!;
              const dst = copies[i]!;
              dst.copyFrom(src);
              dst.mapCount++;
              c.ptes.set(p + i, dst);
            }
          } else {
            for (let i = 0; i < unit; i++) {
              const src = v.ptes.get(p + i)!;
              src.mapCount++;
              c.ptes.set(p + i, src);
            }
          }
        }
      }
      child.areas.set(c.start, c);
    }
    child.freeHint = this.freeHint;
  }

  // ------------------------------------------------------------------------------------------
  // Internals.

  private unitPinned(v: Vma, base: number, unit: number): boolean {
    for (let i = 0; i < unit; i++) if (v.ptes.get(base + i)!.pinCount > 0) return true;
    return false;
  }

  private findVma(page: number): Vma | undefined {
    const pair = this.areas.getPairOrNextLower(page);
    return pair && pair[1].end > page ? pair[1] : undefined;
  }

  /** Areas intersecting [start, end), in address order. */
  private overlapping(start: number, end: number): Vma[] {
    const out: Vma[] = [];
    const below = this.findVma(start);
    const from = below ? below.start : start;
    for (const [k, v] of this.areas.entries(from)) {
      if (k >= end) break;
      out.push(v);
    }
    return out;
  }

  private insert(vma: Vma): void {
    this.areas.set(vma.start, vma);
    // Keep the top-down hint: if the new area reaches the covered region, the region grows down.
    if (vma.start <= this.freeHint && vma.end >= this.freeHint) {
      this.freeHint = vma.start;
      for (;;) {
        const below = this.areas.nextLowerPair(this.freeHint);
        if (!below || below[1].end !== this.freeHint) break;
        this.freeHint = below[1].start;
      }
    }
  }

  /** Choose an address: the hint if it is free, else the highest gap below MMAP_BASE (top-down). */
  private place(hintAddr: bigint, npages: number, align: number): number {
    if (hintAddr > 0n) {
      const unit = BigInt(align * PAGE_SIZE);
      const h = ((hintAddr + unit - 1n) / unit) * unit;
      if (h >= BigInt(MMAP_MIN_ADDR) && h + BigInt(npages * PAGE_SIZE) <= TASK_SIZE_BIG) {
        const p = Number(h) / PAGE_SIZE;
        if (this.overlapping(p, p + npages).length === 0) return p;
      }
    }
    let gapEnd = Math.min(this.freeHint, TOP_PAGE);
    const fit = (gapStart: number): number | undefined => {
      const s = Math.floor((gapEnd - npages) / align) * align;
      return s >= gapStart && s >= MIN_PAGE ? s : undefined;
    };
    for (const [k, v] of this.areas.entriesReversed(gapEnd - 1)) {
      if (k >= gapEnd) continue;
      if (v.end < gapEnd) {
        const s = fit(v.end);
        if (s !== undefined) return s;
      }
      gapEnd = Math.min(gapEnd, v.start);
    }
    const s = fit(MIN_PAGE);
    if (s === undefined) fail('ENOMEM', `no free range of ${hex(npages * PAGE_SIZE)} bytes below ${hex(MMAP_BASE)}`);
    return s;
  }

  /** Split areas so that [start, end) is exactly covered by whole areas; returns those areas. */
  private isolate(start: number, end: number): Vma[] {
    const out: Vma[] = [];
    for (let v of this.overlapping(start, end)) {
      if (v.start < start) {
        const tail = v.splitAt(start);
        this.areas.set(tail.start, tail);
        v = tail;
      }
      if (v.end > end) {
        const tail = v.splitAt(end);
        this.areas.set(tail.start, tail);
      }
      out.push(v);
    }
    return out;
  }

  private removeRange(start: number, end: number): void {
    const victims = this.isolate(start, end);
    if (victims.length === 0) return;
    for (const v of victims) {
      this.areas.delete(v.start);
      this.dropArea(v);
    }
    // [max(hint, end), TOP) is still fully covered.
    this.freeHint = Math.max(this.freeHint, end);
  }

  private dropArea(v: Vma): void {
    v.unmapAll();
    v.file?.put();
  }

  /** Hugetlb areas can only be split at 2 MiB boundaries. */
  private checkHugeSplit(op: string, start: number, end: number): void {
    for (const cut of [start, end]) {
      const v = this.findVma(cut);
      if (v && v.hugetlb && v.start !== cut && cut % HUGE_PAGE_FRAMES !== 0) {
        fail('EINVAL', `${op}: ${hex(cut * PAGE_SIZE)} would split hugetlb mapping ${v.describe()} inside a 2 MiB page`);
      }
    }
  }

  private populate(v: Vma): void {
    if (v.prot === PROT_NONE) return;
    // Writable private memory is populated with write faults so copy-on-write is already broken.
    const write = !v.shared && (v.prot & PROT_WRITE) !== 0;
    const lastFilePage = v.file ? v.file.npages : Infinity;
    for (let p = v.start; p < v.end && v.filePage(p) < lastFilePage; p += v.unitPages) this.faultIn(v, p, write, false);
  }

  /**
   * handle_mm_fault + GUP's unshare: the frame for `page`, creating or replacing page-table
   * entries as needed. `exclusive`-needing accesses (a write, or a long-term pin of a private
   * mapping, which must not be a page that may later be replaced by copy-on-write) get a frame
   * owned by this mm alone.
   */
  private faultIn(v: Vma, page: number, write: boolean, longterm: boolean): Frame {
    const existing = v.ptes.get(page);
    if (v.shared) return existing ?? this.mapFileUnit(v, page);
    const needExclusive = write || longterm;
    if (existing) {
      if (!needExclusive || (existing.kind === FrameKind.Anon && existing.mapCount === 1)) return existing;
      return this.installCopy(v, page, true);
    }
    if (v.file) return needExclusive ? this.installCopy(v, page, false) : this.mapFileUnit(v, page);
    return this.installCopy(v, page, false);
  }

  /** Map the file's page-cache unit holding `page`. */
  private mapFileUnit(v: Vma, page: number): Frame {
    const unit = v.unitPages;
    const base = page - (page % unit);
    const { frames } = v.file!.unit(v.filePage(base));
    for (let i = 0; i < unit; i++) {
      const f = frames[i]!;
      f.mapCount++;
      v.ptes.set(base + i, f);
    }
    return frames[page - base]!;
  }

  /**
   * Give `page`'s unit fresh anonymous frames: a copy of what the page table maps (`fromPte`), or
   * of the file's page (private file mapping, never written), or zeros.
   */
  private installCopy(v: Vma, page: number, fromPte: boolean): Frame {
    const unit = v.unitPages;
    const base = page - (page % unit);
    const fresh = this.host.memory.allocUnit(FrameKind.Anon, v.hugetlb);
    for (let i = 0; i < unit; i++) {
      const p = base + i;
      const f = fresh[i]!;
      const old = fromPte ? v.ptes.get(p) : undefined;
      const src = old ?? (v.file ? v.file.peek(v.filePage(p)) : undefined);
      if (src) f.copyFrom(src);
      f.mapCount++;
      v.ptes.set(p, f);
      if (old) {
        old.mapCount--;
        old.releaseIfUnused();
      }
    }
    return fresh[page - base]!;
  }

  private readBytes(a: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let done = 0;
    let vma: Vma | undefined;
    while (done < length) {
      const pos = a + done;
      const page = Math.floor(pos / PAGE_SIZE);
      const inPage = pos - page * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - inPage, length - done);
      if (!vma || page >= vma.end) vma = this.findVma(page)!;
      // Not resident: private anonymous memory reads as zeros, file memory as the file's page.
      const f = vma.ptes.get(page) ?? (vma.file ? vma.file.peek(vma.filePage(page)) : undefined);
      if (f) f.readInto(inPage, n, out, done); // `out` is already zero otherwise
      done += n;
    }
    return out;
  }

  private writeBytes(a: number, data: Uint8Array): void {
    let done = 0;
    let vma: Vma | undefined;
    while (done < data.length) {
      const pos = a + done;
      const page = Math.floor(pos / PAGE_SIZE);
      const inPage = pos - page * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - inPage, data.length - done);
      if (!vma || page >= vma.end) vma = this.findVma(page)!;
      this.faultIn(vma, page, true, false).write(inPage, data.subarray(done, done + n));
      done += n;
    }
  }

  /** The first byte of [first, end) the access may not touch, and why. */
  private findViolation(first: number, end: number, write: boolean): Violation | undefined {
    let a = first;
    while (a < end) {
      const page = Math.floor(a / PAGE_SIZE);
      const vma = this.findVma(page);
      if (!vma) return { addr: a, kind: 'unmapped' };
      if (vma.prot === PROT_NONE) return { addr: a, kind: 'prot_none', vma };
      if (write && !(vma.prot & PROT_WRITE)) return { addr: a, kind: 'readonly', vma };
      const vEnd = vma.end * PAGE_SIZE;
      if (vma.file) {
        const lastPage = Math.floor((Math.min(end, vEnd) - 1) / PAGE_SIZE);
        if (vma.filePage(lastPage) >= vma.file.npages) {
          const eofPage = vma.start + (vma.file.npages - vma.pgoff);
          return { addr: Math.max(a, eofPage * PAGE_SIZE), kind: 'eof', vma };
        }
      }
      a = vEnd;
    }
    return undefined;
  }

  private explain(v: Violation, action: string): string {
    switch (v.kind) {
      case 'unmapped':
        return `address ${hex(v.addr)} is not mapped`;
      case 'prot_none':
        return `address ${hex(v.addr)} is in a PROT_NONE mapping ${v.vma!.describe()}`;
      case 'readonly':
        return `page at ${hex(v.addr - (v.addr % PAGE_SIZE))} is read-only and ${action} (mapping ${v.vma!.describe()})`;
      case 'eof':
        return `address ${hex(v.addr)} is beyond the end of ${v.vma!.file!.name} (${v.vma!.file!.size} bytes)`;
    }
  }

  private segv(v: Violation, action: string): never {
    throw new MemoryFault(v.kind === 'eof' ? 'SIGBUS' : 'SIGSEGV', BigInt(v.addr), this.explain(v, action));
  }

  /** Validate a kernel access: the mm must be alive and the range inside user space (access_ok). */
  private kernelRange(what: string, addr: bigint, length: number): number {
    if (!this.alive()) fail('EFAULT', `${what}: mm ${this.id} is gone (every task using it has exited)`);
    if (addr < 0n || addr + BigInt(length) > TASK_SIZE_BIG) {
      fail('EFAULT', `${what}: [${hex(addr)}, +${hex(length)}) is not a user address range (TASK_SIZE ${hex(TASK_SIZE)})`);
    }
    return Number(addr);
  }

  private userRange(addr: bigint, length: number): number {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`bad length ${length}`);
    if (!this.alive()) throw new Error(`mm ${this.id} is gone: its process has exited`);
    if (addr < 0n || addr + BigInt(length) > TASK_SIZE_BIG) {
      throw new MemoryFault('SIGSEGV', addr, `${hex(addr)} is outside the user address space`);
    }
    return Number(addr);
  }

  /** Page-aligned [start, end) page indexes of a syscall range; EINVAL like the syscalls. */
  private syscallRange(op: string, addr: bigint, length: bigint | number): [number, number] {
    this.requireAlive(op);
    const len = BigInt(length);
    if (addr % BigInt(PAGE_SIZE) !== 0n || addr < 0n) fail('EINVAL', `${op}: address ${hex(addr)} is not page aligned`);
    if (len < 0n) fail('EINVAL', `${op}: negative length`);
    const end = ((addr + len + BigInt(PAGE_SIZE) - 1n) / BigInt(PAGE_SIZE)) * BigInt(PAGE_SIZE);
    if (end > TASK_SIZE_BIG) fail('EINVAL', `${op}: [${hex(addr)}, +${hex(len)}) extends beyond the user address space`);
    return [Number(addr) / PAGE_SIZE, Number(end) / PAGE_SIZE];
  }

  private requireAlive(op: string): void {
    if (!this.alive()) throw new Error(`${op} on mm ${this.id}, whose process has exited`);
  }
}
