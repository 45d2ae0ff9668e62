import { fail, hex } from '../lib/error.js';
import { Lock } from '../lib/lockdep.js';
import { PAGE_SIZE, alignDown, U64_MAX } from '../lib/u64.js';

const PAGE_MASK = PAGE_SIZE - 1n;
import type { PageFrame, Task } from '../mm/types.js';
import { AccountMode, chargePinned, unchargePinned, type AccountModeValue } from '../mm/accounting.js';

/**
 * Pages pinned per call into the mm: the kernel's user page array is one temp_kmalloc of at most
 * TEMP_MEMORY_LIMIT (64 KiB) of page pointers.
 */
export const PIN_BATCH_PAGES = 65536 / 8;

interface PinnedPage {
  frame: PageFrame;
  /** Areas (with a storage domain) and access pin ranges that currently need this page. */
  users: number;
}

/** A container's pin bookkeeping (the kernel's pinned_pfns xarray and pages->mutex). */
class PinState {
  readonly pinned = new Map<number, PinnedPage>();
  readonly mutex = new Lock('pages->mutex');
  npinned = 0;
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
    return (this.pinState ??= new PinState()).mutex;
  }

  private get pinned(): Map<number, PinnedPage> {
    return (this.pinState ??= new PinState()).pinned;
  }

  /** Pages pinned now, and pages charged at the last accounting update. */
  get npinned(): number {
    return this.pinState?.npinned ?? 0;
  }
  private set npinned(n: number) {
    (this.pinState ??= new PinState()).npinned = n;
  }

  get pinnedCount(): number {
    return this.pinState?.pinned.size ?? 0;
  }

  /** The pinned frame of a page index, if pinned. */
  frameAt(index: number): PageFrame | undefined {
    return this.pinned.get(index)?.frame;
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
      const fresh: number[] = [];
      let i = first;
      try {
        while (i <= last) {
          if (this.pinned.has(i)) {
            i++;
            continue;
          }
          let j = i;
          const batchLast = Math.min(last, i + PIN_BATCH_PAGES - 1);
          while (j + 1 <= batchLast && !this.pinned.has(j + 1)) j++;
          const frames = this.source.mm.pinPages(this.uptr + BigInt(i) * PAGE_SIZE, j - i + 1, this.writable);
          for (let k = 0; k < frames.length; k++) {
            this.pinned.set(i + k, { frame: frames[k]!, users: 0 });
            fresh.push(i + k);
          }
          i = j + 1;
        }
        if (fresh.length) chargePinned(this.source, this.accountMode, fresh.length);
      } catch (e) {
        for (const idx of fresh) {
          this.source.mm.unpinPages([this.pinned.get(idx)!.frame]);
          this.pinned.delete(idx);
        }
        throw e;
      }
      this.npinned += fresh.length;
      for (let k = first; k <= last; k++) this.pinned.get(k)!.users++;
    } finally {
      this.mutex.unlock();
    }
  }

  /** Drop one user of pages [first, last]; pages left without users are unpinned and uncharged. */
  unpinRange(first: number, last: number): void {
    this.mutex.lock();
    try {
      const gone: PageFrame[] = [];
      for (let k = first; k <= last; k++) {
        const p = this.pinned.get(k);
        if (!p) continue;
        if (--p.users === 0) {
          gone.push(p.frame);
          this.pinned.delete(k);
        }
      }
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
    const frame = this.pinned.get(idx)?.frame;
    if (!frame) throw new Error(`page ${idx} of the container at ${hex(this.uptr)} is not pinned`);
    return BigInt(frame.pfn) * PAGE_SIZE + (offset % PAGE_SIZE);
  }

  /**
   * Split [startByte, startByte + length) into runs that are physically contiguous, as the
   * kernel's PFN batches are: each run is mapped into a domain with one iommu_map call.
   */
  *physRuns(startByte: bigint, length: bigint, pageSized: boolean): Generator<{ offset: bigint; paddr: bigint; length: bigint }> {
    const end = startByte + length;
    let off = startByte;
    while (off < end) {
      const idx = Number(off / PAGE_SIZE);
      const frame = this.pinned.get(idx)?.frame;
      if (!frame) throw new Error(`page ${idx} of the container at ${hex(this.uptr)} is not pinned`);
      const paddr = BigInt(frame.pfn) * PAGE_SIZE + (off % PAGE_SIZE);
      let runEnd = BigInt(idx + 1) * PAGE_SIZE;
      if (!pageSized) {
        let pfn = frame.pfn;
        let k = idx + 1;
        while (runEnd < end) {
          const next = this.pinned.get(k)?.frame;
          if (!next || next.pfn !== pfn + 1) break;
          pfn = next.pfn;
          k++;
          runEnd += PAGE_SIZE;
        }
      }
      if (runEnd > end) runEnd = end;
      yield { offset: off, paddr, length: runEnd - off };
      off = runEnd;
    }
  }

  /** Index of the page holding container byte `offset`. */
  static pageIndex(offset: bigint): number {
    return Number(offset / PAGE_SIZE);
  }
}

