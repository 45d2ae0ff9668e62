import { fail, hex } from '../lib/error.js';
import { Lock } from '../lib/lockdep.js';
import { PAGE_SIZE, PAGE_SIZE_NUM, alignDown, U64_MAX } from '../lib/u64.js';

const PAGE_MASK = PAGE_SIZE - 1n;
import type { PageFrame, Task } from '../mm/types.js';
import { AccountMode, chargePinned, unchargePinned, type AccountModeValue } from '../mm/accounting.js';

/**
 * Pages pinned per call into the mm: the kernel's user page array is one temp_kmalloc of at most
 * TEMP_MEMORY_LIMIT (64 KiB) of page pointers.
 */
export const PIN_BATCH_PAGES = 65536 / 8;

/** Pages per chunk of the pin table (2 MiB of user memory). */
const PIN_CHUNK = 512;

/**
 * Pinned pages [key * PIN_CHUNK, key * PIN_CHUNK + frames.length) of a container: parallel
 * arrays instead of an object per page keep pin, unpin and the PFN walk cheap for big ranges.
 */
interface PinChunk {
  readonly frames: (PageFrame | undefined)[];
  /** Areas (with a storage domain) and access pin ranges that currently need each page. */
  readonly users: number[];
  /** Pages pinned in this chunk; the chunk is dropped at 0. */
  count: number;
}

/** A container's pin bookkeeping (the kernel's pinned_pfns xarray and pages->mutex). */
class PinState {
  private readonly chunks = new Map<number, PinChunk>();
  readonly mutex = new Lock('pages->mutex');
  npinned = 0;
  /** Pages pinned now. */
  size = 0;

  /** `npages`: a small container gets one chunk just its size. */
  constructor(private readonly npages: number) {}

  frame(index: number): PageFrame | undefined {
    const key = Math.floor(index / PIN_CHUNK);
    return this.chunks.get(key)?.frames[index - key * PIN_CHUNK];
  }

  /** Record a newly pinned page, with no users yet. */
  add(index: number, frame: PageFrame): void {
    const key = Math.floor(index / PIN_CHUNK);
    let c = this.chunks.get(key);
    if (!c) {
      const len = Math.min(PIN_CHUNK, this.npages);
      c = { frames: new Array<PageFrame | undefined>(len).fill(undefined), users: new Array<number>(len).fill(0), count: 0 };
      this.chunks.set(key, c);
    }
    const i = index - key * PIN_CHUNK;
    // Past the container's end (never expected): grow the arrays rather than mis-count.
    while (c.frames.length <= i) {
      c.frames.push(undefined);
      c.users.push(0);
    }
    c.frames[i] = frame;
    c.users[i] = 0;
    c.count++;
    this.size++;
  }

  /** Forget a pinned page whatever its users (undoing a failed pin). */
  remove(index: number): void {
    const key = Math.floor(index / PIN_CHUNK);
    const c = this.chunks.get(key)!;
    const i = index - key * PIN_CHUNK;
    c.frames[i] = undefined;
    c.users[i] = 0;
    this.size--;
    if (--c.count === 0) this.chunks.delete(key);
  }

  /** One more user of every page of [first, last] (all pinned). */
  addUser(first: number, last: number): void {
    for (let idx = first; idx <= last; ) {
      const key = Math.floor(idx / PIN_CHUNK);
      const c = this.chunks.get(key)!;
      const i0 = idx - key * PIN_CHUNK;
      const n = Math.min(last - idx + 1, PIN_CHUNK - i0);
      for (let i = i0; i < i0 + n; i++) c.users[i]!++;
      idx += n;
    }
  }

  /** One user fewer of every pinned page of [first, last]; returns the frames left without users, in index order. */
  dropUser(first: number, last: number): PageFrame[] {
    const gone: PageFrame[] = [];
    for (let idx = first; idx <= last; ) {
      const key = Math.floor(idx / PIN_CHUNK);
      const i0 = idx - key * PIN_CHUNK;
      const n = Math.min(last - idx + 1, PIN_CHUNK - i0);
      idx += n;
      const c = this.chunks.get(key);
      if (!c) continue;
      const { frames, users } = c;
      for (let i = i0; i < i0 + n && i < frames.length; i++) {
        const f = frames[i];
        if (!f || --users[i]! !== 0) continue;
        gone.push(f);
        frames[i] = undefined;
        c.count--;
        this.size--;
      }
      if (c.count === 0) this.chunks.delete(key);
    }
    return gone;
  }
}

/**
 * A page container (struct iopt_pages): one linear range of user VA, created by each MAP and
 * shared by reference between areas (COPY). It pins each page at most once, however many areas,
 * domains and accesses use it, and charges pinned pages to the mapping task's accounting.
 */
export class IoptPages {
  /** Areas and in-flight slice lists referencing this container (kref). */
  refs = 1;
  /** Page-aligned start of the user range. */
  readonly uptr: bigint;
  // A number, exact: npages <= (2^64 - 1) / 4096 + 1 < 2^53. A small one is stored inline, where
  // a bigint would be one more 24-byte heap object per container.
  private readonly npagesNum: number;
  accountMode: AccountModeValue;
  // Created on first pin: most containers (no domain, no access) never pin anything, and the
  // benchmark keeps a million of them alive, so they carry one empty field instead of three.
  private pinState: PinState | undefined;

  constructor(
    userVa: bigint,
    length: bigint,
    readonly writable: boolean,
    /** The mapping task: its mm is where pages come from, its rlimit and uid pay for them. */
    readonly source: Task,
  ) {
    // Share the caller's bigint when it is already aligned (no new heap object per container).
    this.uptr = userVa & PAGE_MASK ? alignDown(userVa, PAGE_SIZE) : userVa;
    this.npagesNum = Number((length + (userVa - this.uptr) + PAGE_SIZE - 1n) / PAGE_SIZE);
    this.accountMode = source.capable('CAP_IPC_LOCK') ? AccountMode.NONE : AccountMode.USER;
  }

  /** iopt_alloc_pages() argument checks: EINVAL for length 0 or beyond SIZE_MAX - PAGE_SIZE, EOVERFLOW on wrap. */
  static create(userVa: bigint, length: bigint, writable: boolean, source: Task): IoptPages {
    if (length === 0n) fail('EINVAL', 'length is 0');
    if (length > U64_MAX - PAGE_SIZE) fail('EINVAL', `length ${hex(length)} is larger than SIZE_MAX - PAGE_SIZE`);
    if (userVa + length > U64_MAX)
      fail('EOVERFLOW', `user_va ${hex(userVa)} + length ${hex(length)} overflows 64 bits`);
    return new IoptPages(userVa, length, writable, source);
  }

  get npages(): bigint {
    return BigInt(this.npagesNum);
  }

  get mutex(): Lock {
    return this.pins.mutex;
  }

  private get pins(): PinState {
    return (this.pinState ??= new PinState(this.npagesNum));
  }

  /** Pages pinned now, and pages charged at the last accounting update. */
  get npinned(): number {
    return this.pinState?.npinned ?? 0;
  }
  private set npinned(n: number) {
    this.pins.npinned = n;
  }

  get pinnedCount(): number {
    return this.pinState?.size ?? 0;
  }

  /** The pinned frame of a page index, if pinned. */
  frameAt(index: number): PageFrame | undefined {
    return this.pinState?.frame(index);
  }

  /**
   * Make pages [first, last] (indexes into this container) resident and count one more user of
   * each. Pages nobody uses yet are pinned from the source mm (FOLL_WRITE if writable) in batches
   * of at most PIN_BATCH_PAGES, as the kernel's pfn reader fills its page array, so a range that
   * runs into memory that cannot be pinned fails at the batch holding the first such page instead
   * of after walking the whole range; then everything is charged at once (pfn_reader_update_pinned
   * after the last batch). On any failure everything this call did is undone.
   */
  pinRange(first: number, last: number): void {
    this.mutex.lock();
    try {
      const pins = this.pins;
      // Pages pinned by this call, as [start, end) index pairs.
      const fresh: number[] = [];
      let nfresh = 0;
      let i = first;
      try {
        while (i <= last) {
          if (pins.frame(i)) {
            i++;
            continue;
          }
          let j = i;
          const batchLast = Math.min(last, i + PIN_BATCH_PAGES - 1);
          while (j + 1 <= batchLast && !pins.frame(j + 1)) j++;
          const frames = this.source.mm.pinPages(this.uptr + BigInt(i) * PAGE_SIZE, j - i + 1, this.writable);
          for (let k = 0; k < frames.length; k++) pins.add(i + k, frames[k]!);
          fresh.push(i, i + frames.length);
          nfresh += frames.length;
          i = j + 1;
        }
        if (nfresh) chargePinned(this.source, this.accountMode, nfresh);
      } catch (e) {
        for (let r = 0; r < fresh.length; r += 2) {
          for (let idx = fresh[r]!; idx < fresh[r + 1]!; idx++) {
            this.source.mm.unpinPages([pins.frame(idx)!]);
            pins.remove(idx);
          }
        }
        throw e;
      }
      this.npinned += nfresh;
      pins.addUser(first, last);
    } finally {
      this.mutex.unlock();
    }
  }

  /** Drop one user of pages [first, last]; pages left without users are unpinned and uncharged. */
  unpinRange(first: number, last: number): void {
    this.mutex.lock();
    try {
      const gone = this.pins.dropUser(first, last);
      if (gone.length) {
        this.source.mm.unpinPages(gone);
        this.npinned -= gone.length;
        unchargePinned(this.source, this.accountMode, gone.length);
      }
    } finally {
      this.mutex.unlock();
    }
  }

  /** Physical address of byte `offset` of the container; the page must be pinned. */
  physOf(offset: bigint): bigint {
    const idx = Number(offset / PAGE_SIZE);
    const frame = this.pinState?.frame(idx);
    if (!frame) throw new Error(`page ${idx} of the container at ${hex(this.uptr)} is not pinned`);
    return BigInt(frame.pfn) * PAGE_SIZE + (offset % PAGE_SIZE);
  }

  /**
   * Split [startByte, startByte + length) into runs that are physically contiguous, as the
   * kernel's PFN batches are, and hand each to `fn`: each run is mapped into a domain with one
   * iommu_map call. Pages are walked by (exact) number index; only the run bounds are bigints.
   */
  forEachPhysRun(startByte: bigint, length: bigint, pageSized: boolean, fn: (offset: bigint, paddr: bigint, length: bigint) => void): void {
    const pins = this.pins;
    const end = startByte + length;
    if (startByte >= end) return;
    // A run grows while its next page starts before `end`, i.e. up to this page index.
    const lastIdx = Number((end - 1n) / PAGE_SIZE);
    let off = startByte;
    let idx = Number(startByte / PAGE_SIZE);
    while (off < end) {
      const frame = pins.frame(idx);
      if (!frame) throw new Error(`page ${idx} of the container at ${hex(this.uptr)} is not pinned`);
      // pfn * 4096 is exact as a double (a power-of-two scaling), so one BigInt does it.
      const inPage = off & PAGE_MASK;
      const paddr = inPage ? BigInt(frame.pfn * PAGE_SIZE_NUM) + inPage : BigInt(frame.pfn * PAGE_SIZE_NUM);
      let next = idx + 1;
      if (!pageSized) {
        let pfn = frame.pfn;
        while (next <= lastIdx) {
          const f = pins.frame(next);
          if (!f || f.pfn !== pfn + 1) break;
          pfn = f.pfn;
          next++;
        }
      }
      let runEnd = BigInt(next * PAGE_SIZE_NUM);
      if (runEnd > end) runEnd = end;
      fn(off, paddr, runEnd - off);
      off = runEnd;
      idx = next;
    }
  }

  /** Index of the page holding container byte `offset`. */
  static pageIndex(offset: bigint): number {
    return Number(offset / PAGE_SIZE);
  }
}

