/**
 * Client shared memory mapped into the daemon. A copy to or from a shared mapping of a client (a
 * MAP_SHARED anonymous buffer, a memfd, a tmpfs file) is a memcpy into the same pages through a
 * mapping of that object here, instead of a /proc/<pid>/mem access (several microseconds each,
 * the largest cost of a small ACCESS_RW). The object is reached through /proc/<pid>/map_files
 * (which needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE; without it everything goes through
 * /proc/<pid>/mem as before) and mapped by the native helper, which also does the copies: they are
 * bounds-checked and a SIGBUS (a page past the object's end) is a failed copy, not a crash.
 *
 * Mappings keep their objects alive, so few are kept (least recently used go first) and all are
 * dropped once the daemon has been idle for a moment (HostMemory.closeIdleBackings). Huge pages are never mapped here (that would take pages
 * from the pool). Which object an address names comes from the cached /proc/<pid>/maps, as for
 * every other decision about user memory.
 */
import * as fs from 'node:fs';
import { bounced, nativeHelper, type NativeHelper } from './native.js';

/** What the daemon needs to know about one mapping of the client (a line of /proc/<pid>/maps). */
export interface SharedVma {
  start: bigint;
  end: bigint;
  offset: bigint;
  dev: string;
  inode: string;
}

interface MappedObject {
  handle: number;
  fd: number;
  size: number;
  writable: boolean;
}

/** "dev:inode": the key of the object a mapping maps (as /proc/<pid>/maps prints both). */
export function objectKey(vma: { dev: string; inode: string }): string {
  return `${vma.dev}:${vma.inode}`;
}

/** objRead/objWrite of all of `buf` at `off` of a mapped object (small arrays through a bounce view). */
function copyObject(h: NativeHelper, handle: number, off: number, buf: Uint8Array, write: boolean): boolean {
  const copy = write ? h.objWrite! : h.objRead!;
  return bounced(buf, write, (b) => (copy(handle, off, b) === 0 ? b.length : -1)) === buf.length;
}

/** Most objects mapped at once, and most bytes of address space they take. */
const MAX_OBJECTS = 8;
const MAX_BYTES = 2 ** 31;
/** Larger objects are left to /proc/<pid>/mem. */
const MAX_OBJECT = 2 ** 30;

export class SharedObjects {
  /** By "dev:inode", least recently used first; null: it cannot be mapped (do not try again until idle). */
  private readonly objects = new Map<string, MappedObject | null>();
  private bytes = 0;
  private readonly helper: NativeHelper | null;
  /** The mapping the last copy went through (consecutive copies mostly hit the same one). */
  private lastVma: SharedVma | undefined;
  private lastObject: MappedObject | null | undefined;

  constructor(enabled = process.env.IOMMUFD_TS_MAP_SHARED !== '0') {
    const h = enabled ? nativeHelper() : null;
    this.helper = h?.objMap && h.objRead && h.objWrite && h.objUnmap ? h : null;
  }

  /** Objects mapped so far (tests, stats). */
  mapsMade = 0;

  /** Objects mapped now (tests). */
  get count(): number {
    let n = 0;
    for (const o of this.objects.values()) if (o) n++;
    return n;
  }

  /**
   * Copy `buf.length` bytes between `buf` and the object `vma` maps, at user address `addr` of
   * process `pid` (write: into the object). False when this cannot be done here: the caller then
   * uses /proc/<pid>/mem.
   */
  io(pid: number, vma: SharedVma, addr: bigint, buf: Uint8Array, write: boolean): boolean {
    const h = this.helper;
    if (!h) return false;
    let o: MappedObject | null | undefined;
    if (vma === this.lastVma) o = this.lastObject;
    else {
      const key = objectKey(vma);
      o = this.objects.get(key);
      if (o === undefined) o = this.map(pid, vma, key);
      else {
        // Most recently used last.
        this.objects.delete(key);
        this.objects.set(key, o);
      }
      this.lastVma = vma;
      this.lastObject = o;
    }
    if (!o || (write && !o.writable)) return false;
    const off = Number(vma.offset + (addr - vma.start));
    if (off + buf.length > o.size) return false;
    return copyObject(h, o.handle, off, buf, write);
  }

  /**
   * Copy at byte `off` of object `key` ("dev:inode") if it is mapped here already (a frame's content
   * access: the page is known by its object and offset); false otherwise.
   */
  ioMapped(key: string, off: number, buf: Uint8Array, write: boolean): boolean {
    const h = this.helper;
    if (!h) return false;
    const o = this.objects.get(key);
    if (!o || (write && !o.writable) || off + buf.length > o.size) return false;
    return copyObject(h, o.handle, off, buf, write);
  }

  private map(pid: number, vma: SharedVma, key: string): MappedObject | null {
    return this.mapPath(`/proc/${pid}/map_files/${vma.start.toString(16)}-${vma.end.toString(16)}`, vma.inode, key);
  }

  /**
   * Map object `key` (inode `inode`) through an fd of it that the caller holds (a pinned page's
   * backing; SharedObjects never takes it over), unless it is mapped, or known unmappable,
   * already; writable only if that fd is. Whether it is mapped now.
   */
  mapThrough(key: string, inode: string, fd: number, writable: boolean): boolean {
    if (!this.helper) return false;
    const known = this.objects.get(key);
    if (known !== undefined) return known !== null;
    return this.mapPath(`/proc/self/fd/${fd}`, inode, key, writable) !== null;
  }

  /** Open `path` (read-write if allowed and possible, else read-only), check it is inode `inode`, and map it as `key`. */
  private mapPath(path: string, inode: string, key: string, allowWrite = true): MappedObject | null {
    const h = this.helper!;
    let fd = -1;
    let writable = allowWrite;
    try {
      fd = fs.openSync(path, allowWrite ? fs.constants.O_RDWR : fs.constants.O_RDONLY);
    } catch {
      fd = -1;
    }
    if (fd < 0 && allowWrite) {
      writable = false;
      try {
        fd = fs.openSync(path, fs.constants.O_RDONLY);
      } catch {
        fd = -1;
      }
    }
    let o: MappedObject | null = null;
    if (fd >= 0) {
      let size = 0;
      try {
        const st = fs.fstatSync(fd);
        // Still the object the maps named (an address can be remapped in between).
        if (String(st.ino) === inode) size = st.size;
      } catch {
        size = 0;
      }
      const handle = size > 0 && size <= MAX_OBJECT ? h.objMap!(fd, size, writable) : -1;
      if (handle >= 0) {
        this.mapsMade++;
        o = { handle, fd, size, writable };
        this.bytes += size;
      } else fs.closeSync(fd);
    }
    this.objects.set(key, o);
    this.evict();
    return o;
  }

  private evict(): void {
    let mapped = this.count;
    for (const [key, o] of this.objects) {
      if (mapped <= MAX_OBJECTS && this.bytes <= MAX_BYTES) break;
      if (!o) continue;
      this.release(o);
      this.objects.delete(key);
      mapped--;
    }
  }

  private release(o: MappedObject): void {
    if (o === this.lastObject) this.lastVma = this.lastObject = undefined;
    this.helper!.objUnmap!(o.handle);
    fs.closeSync(o.fd);
    this.bytes -= o.size;
  }

  /** Unmap everything (the daemon is idle, or shutting down): the objects may go when their clients let go. */
  dropAll(): void {
    for (const o of this.objects.values()) if (o) this.release(o);
    this.objects.clear();
    this.lastVma = this.lastObject = undefined;
  }
}
