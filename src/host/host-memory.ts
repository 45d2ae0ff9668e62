/**
 * The memory of real host processes as iommufd sees it (the AddressSpace and PageFrame interfaces
 * of src/mm/types.ts), for programs running under the preload shim.
 *
 * - copy_{from,to}_user go through /proc/<pid>/mem with synchronous reads and writes. That file
 *   ignores page protections, so /proc/<pid>/maps is consulted first: a hole, PROT_NONE, an
 *   address beyond TASK_SIZE or (for writes) a non-writable mapping is EFAULT, never a crash.
 *   The /proc/<pid>/mem fd is opened once per address space and keeps naming that mm: after the
 *   process exits or execs, reads through it fail, which is how a dead mm is detected.
 * - Pages are identified honestly. A page of a shared mapping is (device, inode, file page), so
 *   two processes, or two mappings in one process, of one shmem/hugetlbfs page are the same frame.
 *   A page of a private mapping is (mm identity, virtual address): a FOLL_LONGTERM pin unshares
 *   it, so the pinned page is the process's own. Frames get synthetic pfns, stable per identity
 *   while the frame is known; hugetlb pages get 512 contiguous pfns aligned to 512 and are
 *   `compound`; ordinary pages are never physically contiguous with each other.
 * - Pin counts are kept per identity. A frame's content is read and written through a live
 *   mapping of it (the caller's, the pinning process's), or for shared memory pinned by a
 *   process through an fd on the backing object (/proc/<pid>/map_files, when permitted), so a
 *   shmem page stays reachable after the process that pinned it has gone (selftest fork_gone).
 */
import * as fs from 'node:fs';
import { allocBytes, copyBytes } from '../lib/bytes.js';
import { fail, hex, IommuError } from '../lib/error.js';
import type { AddressSpace, PageFrame } from '../mm/types.js';
import { preadFd, pwriteFd } from './native.js';
import { objectKey, SharedObjects } from './shared-objects.js';
import { readProcText } from './procfs.js';
import type { IoctlWindow } from './protocol.js';

export const PAGE_SIZE = 4096;
const PAGE = 4096n;
const HUGE_FRAMES = 512;
const HUGE_SIZE = 2n * 1024n * 1024n;
/** x86-64 TASK_SIZE_MAX with 4-level paging: user addresses are below it (access_ok). */
export const TASK_SIZE = 0x7ffffffff000n;

/** One line of /proc/<pid>/maps. */
export interface Vma {
  start: bigint;
  end: bigint;
  read: boolean;
  write: boolean;
  shared: boolean;
  /** File offset of `start`, in bytes. */
  offset: bigint;
  /** "major:minor" in hex, as maps prints it. */
  dev: string;
  inode: string;
  path: string;
  /** classify() and needsDirtyTracking() of this line, computed once (a Vma never changes). */
  cls?: VmaClass;
  dirtyTracked?: boolean;
}

export function parseMaps(text: string): Vma[] {
  const out: Vma[] = [];
  let pos = 0;
  while (pos < text.length) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = text.length;
    const line = text.slice(pos, nl);
    pos = nl + 1;
    if (!line) continue;
    // 7f0000000000-7f0000001000 rw-s 00000000 00:01 1234    /dev/zero (deleted)
    const dash = line.indexOf('-');
    const sp1 = line.indexOf(' ', dash);
    const sp2 = line.indexOf(' ', sp1 + 1);
    const sp3 = line.indexOf(' ', sp2 + 1);
    const sp4 = line.indexOf(' ', sp3 + 1);
    let sp5 = line.indexOf(' ', sp4 + 1);
    if (sp5 < 0) sp5 = line.length;
    const perms = line.slice(sp1 + 1, sp2);
    out.push({
      start: BigInt('0x' + line.slice(0, dash)),
      end: BigInt('0x' + line.slice(dash + 1, sp1)),
      read: perms[0] === 'r',
      write: perms[1] === 'w',
      shared: perms[3] === 's',
      offset: BigInt('0x' + line.slice(sp2 + 1, sp3)),
      dev: line.slice(sp3 + 1, sp4),
      inode: line.slice(sp4 + 1, sp5),
      path: line.slice(sp5).trim(),
    });
  }
  return out;
}

type VmaClass = 'private' | 'shared' | 'huge-shared' | 'huge-private' | 'special';

/** Filesystem types by device, from /proc/self/mountinfo (device numbers as maps prints them). */
function loadFsTypes(): Map<string, string> {
  const m = new Map<string, string>();
  try {
    for (const line of fs.readFileSync('/proc/self/mountinfo', 'latin1').split('\n')) {
      const f = line.split(' ');
      const sep = f.indexOf('-');
      if (sep < 0 || f.length < sep + 2) continue;
      const [maj, min] = f[2]!.split(':').map(Number);
      if (maj === undefined || min === undefined) continue;
      const key = `${maj.toString(16).padStart(2, '0')}:${min.toString(16).padStart(2, '0')}`;
      m.set(key, f[sep + 1]!);
    }
  } catch {
    /* no mountinfo: classify by path only */
  }
  return m;
}

/** A shared page: its object and the byte offset in it; `key` is "dev:inode" (computed once). */
interface SharedIdentity {
  dev: string;
  inode: string;
  key: string;
  fileOff: bigint;
}

/** The window of an InlineUser: `bytes` holds `readLen` bytes that arrived, then what the call staged. */
interface StagedWindow {
  addr: bigint;
  bytes: Uint8Array;
  readLen: number;
  writable: boolean;
  dirtyLo: number;
  dirtyHi: number;
}

/** Long-term pin of a shared page's backing object, so its content stays reachable. */
interface Backing {
  fd: number;
  pins: number;
  writable: boolean;
}

/** A page of host memory (struct page), by identity. */
export class HostFrame implements PageFrame {
  pinCount = 0;
  /** The request that last looked this frame up (registry sweeping). */
  epoch = 0;
  /** Last content seen through us: what a page nobody maps any more still holds. */
  private snapshot: Uint8Array | undefined;

  constructor(
    private readonly memory: HostMemory,
    readonly pfn: number,
    readonly compound: boolean,
    /** Private page: the owning mm and its VA. Shared page: a mm and VA that mapped it. */
    public mm: HostMm,
    public va: bigint,
    /** Shared page: the object ("dev:inode" in `key`) and byte offset in it. */
    readonly shared?: SharedIdentity,
  ) {}

  /** The identity, as text (explanations, debugging): (dev, inode, file page) or (mm, VA). */
  get key(): string {
    const s = this.shared;
    return s ? `s${s.dev}:${s.inode}:${(s.fileOff / PAGE).toString(16)}` : `p${this.mm.id}:${this.va.toString(16)}`;
  }

  read(offset: number, length: number): Uint8Array {
    checkSpan(offset, length);
    const got = this.memory.frameIo(this, offset, length, undefined);
    if (got) {
      this.remember(offset, got);
      return got;
    }
    const out = allocBytes(length);
    if (this.snapshot) out.set(this.snapshot.subarray(offset, offset + length));
    return out;
  }

  write(offset: number, data: Uint8Array): void {
    checkSpan(offset, data.length);
    this.memory.frameIo(this, offset, data.length, data);
    this.remember(offset, data);
  }

  private remember(offset: number, data: Uint8Array): void {
    if (!this.snapshot) this.snapshot = new Uint8Array(PAGE_SIZE);
    this.snapshot.set(data, offset);
  }
}

/** The bytes a copy of `length` moves: the first `length` of `data` (a write), or a new array to read into. */
function ioBuffer(length: number, data: Uint8Array | undefined): Uint8Array {
  if (!data) return allocBytes(length);
  return length === data.length ? data : data.subarray(0, length);
}

function checkSpan(offset: number, length: number): void {
  if (offset < 0 || length < 0 || offset + length > PAGE_SIZE) throw new RangeError(`frame access [${offset}, +${length}) beyond 4096`);
}

/** How many shared objects stay open after their last pinned page went (see unpinBacking). */
const IDLE_BACKINGS = 4;

/**
 * The frame registry and the machinery shared by all host address spaces of one daemon.
 * `beginRequest()` starts a new request: cached /proc/<pid>/maps are dropped.
 */
export class HostMemory {
  /** Frames of shared pages: by object ("dev:inode"), then by page index in it. */
  private readonly frames = new Map<string, Map<number, HostFrame>>();
  private sharedFrames = 0;
  /** The object key and page map of each Vma (Vma objects live as long as the cached maps). */
  private readonly pagesOfVma = new WeakMap<Vma, { key: string; pages: Map<number, HostFrame> }>();
  private readonly backings = new Map<string, Backing>();
  /** Backings no page pins any more, still open (least recently released first). */
  private readonly idleBackings = new Map<string, Backing>();
  private nextPfn = 0x100000;
  private nextMmId = 1;
  private fsTypes: Map<string, string> | undefined;
  /** Bumped at every request: maps read during one request are reused within it. */
  epoch = 0;
  /** The mm of the task making the current request (its mappings are tried first for content). */
  current: HostMm | undefined;
  /** Client shared objects mapped here, for copies without /proc/<pid>/mem. */
  readonly sharedObjects = new SharedObjects();

  beginRequest(current?: HostMm, gen?: number): void {
    this.epoch++;
    this.current = current;
    if (current && gen !== undefined) current.noteGeneration(gen, this.epoch);
    this.sweep();
  }

  newMmId(): number {
    return this.nextMmId++;
  }

  get frameCount(): number {
    return this.sharedFrames;
  }

  /** Frames holding long-term pins (tests: nothing stays pinned after every file is released). */
  pinnedFrameCount(mms: Iterable<HostMm> = []): number {
    let n = 0;
    for (const pages of this.frames.values()) for (const f of pages.values()) if (f.pinCount > 0) n++;
    for (const mm of mms) for (const f of mm.privateFrames.values()) if (f.pinCount > 0) n++;
    return n;
  }

  /** Shared objects held open for pinned pages. */
  get backingCount(): number {
    return this.backings.size;
  }

  /** The frame for one page of `vma` at `va` in `mm`; created (with a new pfn) on first sight. */
  frameFor(mm: HostMm, vma: Vma, cls: VmaClass, va: bigint): HostFrame {
    if (cls === 'private' || cls === 'huge-private') {
      let f = mm.privateFrames.get(va);
      if (!f) {
        let pfn: number;
        if (cls === 'huge-private') {
          // The 512 pages of one private huge page: one aligned block, found through its head.
          const base = va - (va % HUGE_SIZE);
          let head = mm.privateFrames.get(base);
          if (!head) {
            head = new HostFrame(this, this.allocHugeBlock(), true, mm, base);
            mm.privateFrames.set(base, head);
          }
          pfn = head.pfn + Number((va - base) / PAGE);
        } else {
          pfn = this.allocPfn();
        }
        f = mm.privateFrames.get(va) ?? new HostFrame(this, pfn, cls === 'huge-private', mm, va);
        mm.privateFrames.set(va, f);
      }
      return f;
    }
    const fileOff = vma.offset + (va - vma.start);
    const page = Number(fileOff / PAGE);
    const pages = this.pagesOf(vma);
    let f = pages.get(page);
    if (f) f.epoch = this.epoch;
    if (!f) {
      let pfn: number;
      if (cls === 'huge-shared') {
        // All 512 pages of one huge page share one contiguous, aligned pfn block.
        const base = fileOff - (fileOff % HUGE_SIZE);
        const headPage = Number(base / PAGE);
        const head = pages.get(headPage);
        const headPfn = head ? head.pfn : this.allocHugeBlock();
        if (!head && headPage !== page) {
          const va0 = va - (fileOff - base);
          pages.set(headPage, new HostFrame(this, headPfn, true, mm, va0, { dev: vma.dev, inode: vma.inode, key: objectKey(vma), fileOff: base }));
          this.sharedFrames++;
        }
        pfn = headPfn + (page - headPage);
      } else {
        pfn = this.allocPfn();
      }
      f = new HostFrame(this, pfn, cls === 'huge-shared', mm, va, { dev: vma.dev, inode: vma.inode, key: objectKey(vma), fileOff });
      f.epoch = this.epoch;
      pages.set(page, f);
      this.sharedFrames++;
    } else if (mm.alive()) {
      // Remember a live mapping of it, for content access after others go.
      f.mm = mm;
      f.va = va;
    }
    return f;
  }

  /** The frames of the object `vma` maps, by page index. */
  private pagesOf(vma: Vma): Map<number, HostFrame> {
    const known = this.pagesOfVma.get(vma);
    // Still the object's map (sweep drops the maps of objects with no frames left).
    if (known && this.frames.get(known.key) === known.pages) return known.pages;
    const key = known?.key ?? objectKey(vma);
    let pages = this.frames.get(key);
    if (!pages) this.frames.set(key, (pages = new Map()));
    this.pagesOfVma.set(vma, { key, pages });
    return pages;
  }

  private allocPfn(): number {
    // Leave a hole after every frame: no two ordinary pages are physically contiguous.
    const pfn = this.nextPfn;
    this.nextPfn += 2;
    return pfn;
  }

  private allocHugeBlock(): number {
    this.nextPfn = Math.ceil(this.nextPfn / HUGE_FRAMES) * HUGE_FRAMES;
    const pfn = this.nextPfn;
    this.nextPfn += HUGE_FRAMES;
    return pfn;
  }

  classify(vma: Vma): VmaClass {
    return (vma.cls ??= this.classifyLine(vma));
  }

  private classifyLine(vma: Vma): VmaClass {
    const p = vma.path;
    if (p.startsWith('[') && p !== '[heap]' && !p.startsWith('[stack') && !p.startsWith('[anon')) return 'special';
    this.fsTypes ??= loadFsTypes();
    const huge = p.startsWith('/anon_hugepage') || this.fsTypes.get(vma.dev) === 'hugetlbfs';
    if (vma.shared && vma.inode !== '0') return huge ? 'huge-shared' : 'shared';
    return huge ? 'huge-private' : 'private';
  }

  /** Whether a shared file mapping needs dirty tracking (6.x refuses FOLL_LONGTERM|FOLL_WRITE on it). */
  needsDirtyTracking(vma: Vma): boolean {
    return (vma.dirtyTracked ??= this.dirtyTrackedLine(vma));
  }

  private dirtyTrackedLine(vma: Vma): boolean {
    if (!vma.shared || vma.inode === '0') return false;
    const p = vma.path;
    if (p.startsWith('/dev/zero') || p.startsWith('/SYSV') || p.startsWith('/memfd:') || p.startsWith('/anon_hugepage')) return false;
    this.fsTypes ??= loadFsTypes();
    const t = this.fsTypes.get(vma.dev);
    if (t === undefined) return false; // the kernel's internal shm mount
    return !(t === 'tmpfs' || t === 'hugetlbfs' || t === 'devtmpfs' || t === 'ramfs');
  }

  /** A pin was taken on a shared frame: hold its backing object open (when /proc allows). */
  pinBacking(f: HostFrame, vma: Vma): void {
    if (!f.shared) return;
    const k = f.shared.key;
    let b = this.backings.get(k);
    if (!b) {
      b = this.idleBackings.get(k);
      if (b) {
        this.idleBackings.delete(k);
        this.backings.set(k, b);
      }
    }
    if (!b) {
      const path = `/proc/${f.mm.pid}/map_files/${vma.start.toString(16)}-${vma.end.toString(16)}`;
      let fd = -1;
      let writable = false;
      try {
        fd = fs.openSync(path, fs.constants.O_RDWR);
        writable = true;
      } catch {
        try {
          fd = fs.openSync(path, fs.constants.O_RDONLY);
        } catch {
          fd = -1;
        }
      }
      b = { fd, pins: 0, writable };
      this.backings.set(k, b);
    }
    b.pins++;
  }

  unpinBacking(f: HostFrame): void {
    if (!f.shared) return;
    const k = f.shared.key;
    const b = this.backings.get(k);
    if (!b) return;
    if (--b.pins === 0) {
      this.backings.delete(k);
      // Kept open while the daemon is busy (closeIdleBackings): a copy through an access pins
      // and unpins the same object per call. Never huge pages: an open hugetlbfs file keeps its
      // pages from the pool after the program has unmapped them.
      if (f.compound || b.fd < 0) {
        if (b.fd >= 0) fs.closeSync(b.fd);
        return;
      }
      this.idleBackings.set(k, b);
      if (this.idleBackings.size > IDLE_BACKINGS) {
        const [oldKey, old] = this.idleBackings.entries().next().value!;
        this.idleBackings.delete(oldKey);
        if (old.fd >= 0) fs.closeSync(old.fd);
      }
    }
  }

  /** Backings no pin holds, kept open while the daemon is busy. */
  get idleBackingCount(): number {
    return this.idleBackings.size;
  }

  /** Close the backings no pin holds (the daemon has nothing to do for now). */
  closeIdleBackings(): void {
    for (const b of this.idleBackings.values()) if (b.fd >= 0) fs.closeSync(b.fd);
    this.idleBackings.clear();
  }

  /**
   * Read (data undefined) or write bytes of a frame through something that reaches the very
   * page: the backing object, a live mapping in the current caller, the last mm that mapped it.
   * Returns the bytes read (or `data` for a write), or undefined when nothing reaches it.
   */
  frameIo(f: HostFrame, offset: number, length: number, data: Uint8Array | undefined): Uint8Array | undefined {
    if (f.shared) {
      // The object mapped here for copies already: a memcpy.
      const buf = ioBuffer(length, data);
      if (this.sharedObjects.ioMapped(f.shared.key, Number(f.shared.fileOff) + offset, buf, data !== undefined)) return data ?? buf;
      const b = this.backings.get(f.shared.key);
      // A pinned page's object: map it here through its backing (never huge pages: see
      // SharedObjects), and copy by memcpy from now on rather than a system call per copy.
      if (b && b.fd >= 0 && !f.compound && this.sharedObjects.mapThrough(f.shared.key, f.shared.inode, b.fd, b.writable) &&
          this.sharedObjects.ioMapped(f.shared.key, Number(f.shared.fileOff) + offset, buf, data !== undefined))
        return data ?? buf;
      if (b && b.fd >= 0 && (!data || b.writable)) {
        // A short or failed transfer (hugetlbfs has no write()) falls back to a mapping.
        const pos = Number(f.shared.fileOff) + offset;
        if (data) {
          if (pwriteFd(b.fd, length === data.length ? data : data.subarray(0, length), pos) === length) return data;
        } else {
          const out = allocBytes(length);
          if (preadFd(b.fd, out, pos) === length) return out;
        }
      }
      for (const mm of [this.current, f.mm]) {
        if (!mm || !mm.alive()) continue;
        const va = mm.findShared(f.shared.dev, f.shared.inode, f.shared.fileOff);
        if (va === undefined) continue;
        const r = mm.rawIo(va + BigInt(offset), length, data);
        if (r) return r;
      }
      return undefined;
    }
    if (!f.mm.alive()) return undefined;
    return f.mm.rawIo(f.va + BigInt(offset), length, data);
  }

  /** Forget unpinned frames of a dead mm (its private pages can no longer be named). */
  forgetMm(mm: HostMm): void {
    for (const [va, f] of mm.privateFrames) if (f.pinCount === 0) mm.privateFrames.delete(va);
  }

  /**
   * Bound the registry: when it holds more than `limit` shared frames, forget the unpinned ones
   * not looked at in the current request (their next lookup gets a new pfn, as if the kernel had
   * reclaimed and refaulted the page).
   */
  sweep(limit = 1 << 18): void {
    if (this.sharedFrames <= limit) return;
    for (const [obj, pages] of this.frames) {
      for (const [k, f] of pages) {
        // Huge pages stay: their 512 frames must keep one contiguous block.
        if (f.pinCount === 0 && !f.compound && f.epoch !== this.epoch) {
          pages.delete(k);
          this.sharedFrames--;
        }
      }
      if (!pages.size) this.frames.delete(obj);
    }
  }

  /** Close every backing fd (daemon shutdown). */
  dispose(): void {
    for (const b of this.backings.values()) if (b.fd >= 0) fs.closeSync(b.fd);
    this.backings.clear();
    this.closeIdleBackings();
    this.sharedObjects.dropAll();
    this.frames.clear();
    this.sharedFrames = 0;
  }
}

/**
 * The address space of one live host process (one mm: a pid until it exits or execs). The
 * identity proof is the shim's random secret at `secretAddr`: it is read back through the
 * /proc/<pid>/mem fd, which keeps naming the same mm.
 */
export class HostMm implements AddressSpace {
  readonly id: number;
  lockedVm = 0;
  pinnedVm = 0;
  /** Frames of this mm's private pages, by VA. */
  readonly privateFrames = new Map<bigint, HostFrame>();
  private memFd: number;
  private dead = false;
  /** The request during which the cached maps were read from /proc. */
  private mapsReadEpoch = -1;
  private maps: Vma[] = [];
  private aliveEpoch = -1;

  constructor(
    private readonly memory: HostMemory,
    readonly pid: number,
    memFd: number,
    private readonly secretAddr: bigint,
    private readonly secret: Uint8Array,
  ) {
    this.id = memory.newMmId();
    this.memFd = memFd;
  }

  /** The buffer alive() reads the secret and the state generation into. */
  private aliveBuf: Buffer | undefined;

  /** mmget_not_zero(): the process still runs this mm (not exited, not exec'd). */
  alive(): boolean {
    if (this.dead) return false;
    if (this.aliveEpoch === this.memory.epoch) return true;
    // The shim keeps its state generation right after the secret: one read gives both.
    const n = this.secret.length;
    const buf = (this.aliveBuf ??= Buffer.alloc(n + 4));
    const ok = preadFd(this.memFd, buf, Number(this.secretAddr)) === buf.length && buf.compare(this.secret, 0, n, 0, n) === 0;
    if (!ok) {
      this.markDead();
      return false;
    }
    this.aliveEpoch = this.memory.epoch;
    if (this !== this.memory.current) this.noteGeneration(buf.readUInt32LE(n), this.memory.epoch);
    return true;
  }

  /** The process just sent us a request carrying its secret: it is alive for this request. */
  requesting(): void {
    if (!this.dead) this.aliveEpoch = this.memory.epoch;
  }

  markDead(): void {
    if (this.dead) return;
    this.dead = true;
    try {
      fs.closeSync(this.memFd);
    } catch {
      /* already closed */
    }
    this.memFd = -1;
    this.maps = [];
    this.memory.forgetMm(this);
  }

  /**
   * The requester told us its state generation. While it stays the same, what we read about this
   * mm (maps here; status and rlimits in its task) stays valid across requests.
   */
  noteGeneration(gen: number, epoch: number): void {
    if (gen !== this.gen) {
      this.gen = gen;
      this.stableSince = epoch;
    }
    this.notedEpoch = epoch;
  }

  /** Whether something read during request `readEpoch` is still valid in the current request. */
  stillValid(readEpoch: number): boolean {
    const now = this.memory.epoch;
    return readEpoch === now || (readEpoch >= 0 && this.notedEpoch === now && readEpoch >= this.stableSince);
  }

  private gen = -1;
  private stableSince = Number.MAX_SAFE_INTEGER;
  private notedEpoch = -1;

  /** Forget the cached maps (a lookup missed: glibc may have mapped something we did not see). */
  refreshMappings(): Vma[] {
    this.mapsReadEpoch = -1;
    return this.mappings();
  }

  /** /proc/<pid>/maps, read at most once per request (or once per state generation of the requester). */
  mappings(): Vma[] {
    if (!this.stillValid(this.mapsReadEpoch)) {
      let text = '';
      try {
        text = readProcText(`/proc/${this.pid}/maps`);
      } catch {
        text = '';
      }
      this.maps = parseMaps(text);
      this.mapsReadEpoch = this.memory.epoch;
    }
    return this.maps;
  }

  /** The mapping containing `addr`, or undefined. */
  findVma(addr: bigint): Vma | undefined {
    const v = this.lookupVma(this.mappings(), addr);
    if (v || this.mapsFresh()) return v;
    return this.lookupVma(this.refreshMappings(), addr);
  }

  /** Whether the cached maps were read during this very request. */
  private mapsFresh(): boolean {
    return this.mapsReadEpoch === this.memory.epoch;
  }

  /** The line lookupVma found last, and the maps it is in (consecutive copies mostly hit one mapping). */
  private lastVma: Vma | undefined;
  private lastVmaOf: Vma[] | undefined;

  private lookupVma(maps: Vma[], addr: bigint): Vma | undefined {
    const last = this.lastVma;
    if (last && this.lastVmaOf === maps && addr >= last.start && addr < last.end) return last;
    let lo = 0;
    let hi = maps.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const v = maps[mid]!;
      if (addr < v.start) hi = mid - 1;
      else if (addr >= v.end) lo = mid + 1;
      else {
        this.lastVma = v;
        this.lastVmaOf = maps;
        return v;
      }
    }
    return undefined;
  }

  /** A VA in this mm that maps byte `fileOff` of the shared object (dev, inode), if any. */
  findShared(dev: string, inode: string, fileOff: bigint): bigint | undefined {
    for (const v of this.mappings()) {
      if (!v.shared || v.dev !== dev || v.inode !== inode) continue;
      if (fileOff >= v.offset && fileOff < v.offset + (v.end - v.start)) return v.start + (fileOff - v.offset);
    }
    return undefined;
  }

  /**
   * Why [addr, addr + length) cannot be accessed (read, or written when `write`), or undefined
   * when every byte can. `gup` applies get_user_pages' extra rules (special mappings, FOLL_LONGTERM
   * on file mappings that need dirty tracking).
   */
  private violation(addr: bigint, length: bigint, write: boolean, gup: boolean): string | undefined {
    if (!this.alive()) return `process ${this.pid} has exited (its mm is gone)`;
    const end = addr + length;
    if (addr < 0n || end > TASK_SIZE) return `[${hex(addr)}, ${hex(end)}) is not a user address range`;
    let a = addr;
    while (a < end) {
      const v = this.findVma(a);
      if (!v) return `${hex(a)} is not mapped in process ${this.pid}`;
      if (!v.read && !v.write) return `${hex(a)} is in a PROT_NONE mapping [${hex(v.start)}, ${hex(v.end)})`;
      if (write && !v.write) return `${hex(a)} is in a read-only mapping [${hex(v.start)}, ${hex(v.end)})`;
      if (!write && !v.read) return `${hex(a)} is in a write-only mapping [${hex(v.start)}, ${hex(v.end)})`;
      if (gup) {
        const cls = this.memory.classify(v);
        if (cls === 'special') return `${hex(a)} is in the special mapping ${v.path}`;
        if (write && this.memory.needsDirtyTracking(v))
          return `${hex(a)} is in a shared mapping of ${v.path || 'a file'} that needs dirty tracking: no FOLL_LONGTERM write pin`;
      }
      a = v.end;
    }
    return undefined;
  }

  /**
   * Bytes through /proc/<pid>/mem (or a mapping of the shared object there, SharedObjects), no
   * protection checks; undefined if the kernel refuses.
   */
  rawIo(addr: bigint, length: number, data: Uint8Array | undefined): Uint8Array | undefined {
    if (this.dead || this.memFd < 0 || addr < 0n || addr + BigInt(length) > TASK_SIZE) return undefined;
    const buf = ioBuffer(length, data);
    const v = this.lookupVma(this.mappings(), addr);
    if (v && v.shared && addr + BigInt(length) <= v.end && this.memory.classify(v) === 'shared' && this.memory.sharedObjects.io(this.pid, v, addr, buf, data !== undefined))
      return data ?? buf;
    const at = Number(addr);
    let done = 0;
    while (done < length) {
      const part = done === 0 ? buf : buf.subarray(done);
      const n = data ? pwriteFd(this.memFd, part, at + done) : preadFd(this.memFd, part, at + done);
      if (n <= 0) return undefined;
      done += n;
    }
    return data ?? buf;
  }

  copyFromUser(addr: bigint, length: number): Uint8Array {
    if (length === 0) return new Uint8Array(0);
    const v = this.violation(addr, BigInt(length), false, false);
    if (v) fail('EFAULT', `copy_from_user of ${length} bytes at ${hex(addr)}: ${v}`);
    const r = this.rawIo(addr, length, undefined);
    if (!r) fail('EFAULT', `copy_from_user of ${length} bytes at ${hex(addr)}: /proc/${this.pid}/mem refused the read`);
    return r;
  }

  copyToUser(addr: bigint, data: Uint8Array): void {
    if (data.length === 0) return;
    const v = this.violation(addr, BigInt(data.length), true, false);
    if (v) fail('EFAULT', `copy_to_user of ${data.length} bytes at ${hex(addr)}: ${v}`);
    if (!this.rawIo(addr, data.length, data))
      fail('EFAULT', `copy_to_user of ${data.length} bytes at ${hex(addr)}: /proc/${this.pid}/mem refused the write`);
  }

  pinPages(addr: bigint, npages: number, write: boolean): PageFrame[] {
    if (!Number.isSafeInteger(npages) || npages < 0) throw new RangeError(`pinPages: bad page count ${npages}`);
    if (npages === 0) return [];
    if (addr % PAGE !== 0n) throw new RangeError(`pinPages: address ${hex(addr)} is not page aligned`);
    const v = this.violation(addr, BigInt(npages) * PAGE, write, true);
    if (v) fail('EFAULT', `pin of ${npages} page${npages === 1 ? '' : 's'} at ${hex(addr)}: ${v}`);
    const frames: HostFrame[] = new Array(npages);
    let vma = this.findVma(addr)!;
    let cls = this.memory.classify(vma);
    for (let i = 0; i < npages; i++) {
      const va = addr + BigInt(i) * PAGE;
      if (va >= vma.end) {
        vma = this.findVma(va)!;
        cls = this.memory.classify(vma);
      }
      const f = this.memory.frameFor(this, vma, cls, va);
      if (f.pinCount++ === 0) this.memory.pinBacking(f, vma);
      frames[i] = f;
    }
    return frames;
  }

  unpinPages(frames: readonly PageFrame[]): void {
    for (const pf of frames) {
      const f = pf as HostFrame;
      if (f.pinCount <= 0) throw new Error(`unpin of pfn ${hex(f.pfn)}, which is not pinned`);
      if (--f.pinCount === 0) this.memory.unpinBacking(f);
    }
  }

  lookupPage(addr: bigint, write: boolean): PageFrame {
    const aligned = addr - (addr % PAGE);
    const v = this.violation(aligned, PAGE, write, true);
    if (v) fail('EFAULT', `get_user_pages at ${hex(addr)}: ${v}`);
    const vma = this.findVma(aligned)!;
    return this.memory.frameFor(this, vma, this.memory.classify(vma), aligned);
  }
}

/**
 * The caller's memory for one ioctl: the struct at `arg` arrived inline with the request (read
 * by the shim with process_vm_readv, so `inline` holds exactly the readable bytes), and the shim
 * probed how many of them are writable. Writes there are collected and sent back with the
 * result; everything else goes to the process's memory directly, except the window (IoctlWindow):
 * one buffer the struct points to whose bytes came along (reads inside what arrived are served
 * from them) or whose writes the shim applies after the call (when writable). An access that only
 * partly overlaps the window first writes back what was staged there and stops using it.
 */
export class InlineUser {
  private readonly bytes: Uint8Array;
  private dirtyLo = Infinity;
  private dirtyHi = -1;
  private win: StagedWindow | undefined;

  constructor(
    private readonly mm: HostMm,
    readonly base: bigint,
    inline: Uint8Array,
    private readonly writableLen: number,
    window?: IoctlWindow,
  ) {
    this.bytes = copyBytes(inline);
    if (window) {
      const end = window.addr + BigInt(window.size);
      // A window over the struct itself (the shim never sends one) would be a second copy of its bytes.
      const apart = end <= base || window.addr >= base + BigInt(inline.length);
      if (apart && end <= TASK_SIZE) {
        const bytes = allocBytes(window.size);
        bytes.set(window.bytes);
        this.win = { addr: window.addr, bytes, readLen: window.bytes.length, writable: window.writable, dirtyLo: Infinity, dirtyHi: -1 };
      }
    }
  }

  /** The struct bytes as they are now (after the handler's writes). */
  get current(): Uint8Array {
    return this.bytes;
  }

  dirty(): { off: number; bytes: Uint8Array } | undefined {
    if (this.dirtyHi < 0) return undefined;
    return { off: this.dirtyLo, bytes: this.bytes.subarray(this.dirtyLo, this.dirtyHi) };
  }

  /** What the handler wrote into the window, for the shim to apply. */
  windowDirty(): { off: number; bytes: Uint8Array } | undefined {
    const w = this.win;
    if (!w || w.dirtyHi < 0) return undefined;
    return { off: w.dirtyLo, bytes: w.bytes.subarray(w.dirtyLo, w.dirtyHi) };
  }

  /**
   * Where [addr, addr + length) falls in the window: its offset when it lies wholly inside, -1 when
   * it misses the window. An access that straddles its edge retires the window (-1 afterwards).
   */
  private inWindow(addr: bigint, length: number): number {
    const w = this.win;
    if (!w) return -1;
    // The common case, an access of the buffer from its start: no BigInt arithmetic.
    if (addr === w.addr && length <= w.bytes.length) return 0;
    const off = addr - w.addr;
    if (off >= 0n && off <= BigInt(w.bytes.length)) {
      const o = Number(off);
      if (o + length <= w.bytes.length) return o;
    } else if (off + BigInt(length) <= 0n || off >= BigInt(w.bytes.length)) return -1;
    this.retireWindow();
    return -1;
  }

  /** Write back what was staged in the window and stop using it: the process's memory is the truth again. */
  private retireWindow(): void {
    const w = this.win!;
    this.win = undefined;
    if (w.dirtyHi >= 0) this.mm.copyToUser(w.addr + BigInt(w.dirtyLo), w.bytes.subarray(w.dirtyLo, w.dirtyHi));
  }

  /** The struct's size field (its first u32), read where it arrived; undefined elsewhere. */
  peekU32(addr: bigint): number | undefined {
    const b = this.bytes;
    if (addr !== this.base || b.length < 4) return undefined;
    return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
  }

  copyFromUser(addr: bigint, length: number): Uint8Array {
    if (length === 0) return new Uint8Array(0);
    const n = this.bytes.length;
    // The common case, the struct itself: no BigInt arithmetic when it is read from its start.
    if (addr === this.base && length <= n) return copyBytes(this.bytes, 0, length);
    const off = addr - this.base;
    if (off >= 0n && off <= BigInt(n)) {
      const o = Number(off);
      if (o + length <= n) return copyBytes(this.bytes, o, o + length);
    }
    if (this.win) {
      const o = this.inWindow(addr, length);
      // Inside what arrived, or inside what this call wrote there.
      if (o >= 0 && (o + length <= this.win!.readLen || (o >= this.win!.dirtyLo && o + length <= this.win!.dirtyHi)))
        return copyBytes(this.win!.bytes, o, o + length);
      if (o >= 0) this.retireWindow();
    }
    const end = off + BigInt(length);
    if (end <= 0n || off >= BigInt(n)) return this.mm.copyFromUser(addr, length);
    // Straddles the inline window: the rest comes from the process.
    const out = allocBytes(length);
    for (let i = 0; i < length; ) {
      const a = off + BigInt(i);
      if (a >= 0n && a < BigInt(n)) {
        const o = Number(a);
        const take = Math.min(n - o, length - i);
        out.set(this.bytes.subarray(o, o + take), i);
        i += take;
      } else {
        const take = a < 0n ? Math.min(Number(-a), length - i) : length - i;
        out.set(this.mm.copyFromUser(addr + BigInt(i), take), i);
        i += take;
      }
    }
    return out;
  }

  copyToUser(addr: bigint, data: Uint8Array): void {
    if (data.length === 0) return;
    const w0 = this.win;
    // The common case of a window, a write of it from its start (it never overlaps the struct).
    if (w0 && w0.writable && addr === w0.addr && data.length <= w0.bytes.length) {
      w0.bytes.set(data, 0);
      w0.dirtyLo = 0;
      if (data.length > w0.dirtyHi) w0.dirtyHi = data.length;
      return;
    }
    const n = this.bytes.length;
    const off = addr - this.base;
    if (off >= 0n && off <= BigInt(n)) {
      const o = Number(off);
      if (o + data.length <= this.writableLen) {
        this.bytes.set(data, o);
        if (o < this.dirtyLo) this.dirtyLo = o;
        if (o + data.length > this.dirtyHi) this.dirtyHi = o + data.length;
        return;
      }
    }
    if (this.win) {
      const o = this.inWindow(addr, data.length);
      const w = this.win;
      if (o >= 0 && w?.writable) {
        w.bytes.set(data, o);
        if (o < w.dirtyLo) w.dirtyLo = o;
        if (o + data.length > w.dirtyHi) w.dirtyHi = o + data.length;
        return;
      }
      if (o >= 0) this.retireWindow(); // a write the shim would not apply: it goes to the process
    }
    const end = off + BigInt(data.length);
    if (end <= 0n || off >= BigInt(n)) {
      this.mm.copyToUser(addr, data);
      return;
    }
    for (let i = 0; i < data.length; ) {
      const a = off + BigInt(i);
      if (a >= 0n && a < BigInt(n)) {
        const o = Number(a);
        const take = Math.min(n - o, data.length - i);
        if (o + take > this.writableLen)
          fail('EFAULT', `copy_to_user of ${data.length} bytes at ${hex(addr)}: ${hex(this.base + BigInt(this.writableLen))} is not writable`);
        this.bytes.set(data.subarray(i, i + take), o);
        this.dirtyLo = Math.min(this.dirtyLo, o);
        this.dirtyHi = Math.max(this.dirtyHi, o + take);
        i += take;
      } else {
        const take = a < 0n ? Math.min(Number(-a), data.length - i) : data.length - i;
        this.mm.copyToUser(addr + BigInt(i), data.subarray(i, i + take));
        i += take;
      }
    }
  }
}

export { IommuError };
