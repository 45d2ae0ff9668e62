/**
 * The daemon's optional native helper (shim/host-native.c, a Node-API module the install step
 * builds with the system C compiler). Node can neither map memory nor poll fds synchronously, and
 * its fs layer costs about a microsecond per call on top of the system call; the daemon makes
 * several such calls per ioctl. Without the helper (not built, or IOMMUFD_TS_NATIVE=0) everything
 * still works, through fs and the event loop.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';

export interface NativeHelper {
  /** MAP_SHARED of [0, length) of fd, unmapped when the ArrayBuffer is collected. */
  map(fd: number, length: number): ArrayBuffer;
  /** How many of `fds` have input, a hangup or an error pending (poll, zero timeout); -1 on error. */
  ready?(fds: Int32Array): number;
  /** An epoll instance watching `fds` for input (its fd), or -errno; asked by watchReady, closed by unwatch. */
  watch?(fds: Int32Array): number;
  /** Whether any watched fd has input, a hangup or an error pending (epoll, zero timeout): 1, 0, or -errno. */
  watchReady?(epfd: number): number;
  unwatch?(epfd: number): number;
  /** pread/pwrite of the whole array at `pos`: the byte count, or -errno. */
  pread?(fd: number, into: Uint8Array, pos: number): number;
  pwrite?(fd: number, from: Uint8Array, pos: number): number;
  /** Map [0, length) of a client's shared object: a handle for objRead/objWrite/objUnmap, or -errno. */
  objMap?(fd: number, length: number, writable: boolean): number;
  objUnmap?(handle: number): number;
  /** Copy between the object at `off` and the array: 0, or -errno (-EFAULT past its end, SIGBUS included). */
  objRead?(handle: number, off: number, into: Uint8Array): number;
  objWrite?(handle: number, off: number, from: Uint8Array): number;
  /** sched_yield (0, or -1). */
  yield?(): number;
}

let native: NativeHelper | null | undefined;

/** The native helper, or null when it was not built or is disabled (IOMMUFD_TS_NATIVE=0). */
export function nativeHelper(): NativeHelper | null {
  if (native !== undefined) return native;
  native = null;
  if (process.env.IOMMUFD_TS_NATIVE === '0') return native;
  try {
    native = createRequire(import.meta.url)('../../shim/iommufd-ts-host.node') as NativeHelper;
  } catch {
    native = null;
  }
  return native;
}

/**
 * Native code must see an array's bytes outside V8's heap. A Uint8Array of at most 64 bytes lives
 * on the heap, and handing one to Node-API makes V8 give it a backing store there and then: a
 * malloc and an ArrayBuffer (about 1.2 µs, against 0.9 µs for a whole pread), freed later by
 * V8's sweeper on a worker thread. Per call that churn also stalled the daemon for milliseconds
 * (the allocator consolidating what the sweeper freed). Such small copies therefore go through
 * views, one per length, of a buffer allocated once (`bounced`).
 */
const BOUNCE_MAX = 64;
const bounceBuffer = new ArrayBuffer(BOUNCE_MAX);
const bounceViews: Uint8Array[] = [];

/** The array to hand to native code for a copy of `buf`'s bytes: `buf` itself, or a bounce view of its length. */
export function bounceFor(buf: Uint8Array): Uint8Array {
  const n = buf.length;
  if (n > BOUNCE_MAX) return buf;
  return (bounceViews[n] ??= new Uint8Array(bounceBuffer, 0, n));
}

/**
 * Run the native copy `op` on `buf` (into it when `write` is false, out of it when true) through a
 * bounce view when `buf` is small; `op` returns the byte count or a negative errno.
 */
export function bounced(buf: Uint8Array, write: boolean, op: (b: Uint8Array) => number): number {
  const b = bounceFor(buf);
  if (b === buf) return op(buf);
  if (write) b.set(buf);
  const r = op(b);
  if (!write && r > 0) {
    if (r >= buf.length) buf.set(b);
    else for (let i = 0; i < r; i++) buf[i] = b[i]!;
  }
  return r;
}

/**
 * pread (write false) or pwrite of the whole array at `pos` (a byte offset or a user address): the
 * count, or -1 on any error.
 */
function fdIo(fd: number, buf: Uint8Array, pos: number, write: boolean): number {
  const h = nativeHelper();
  const native = write ? h?.pwrite : h?.pread;
  if (native) {
    const r = bounced(buf, write, (b) => native(fd, b, pos));
    return r < 0 ? -1 : r;
  }
  try {
    return write ? fs.writeSync(fd, buf, 0, buf.length, pos) : fs.readSync(fd, buf, 0, buf.length, pos);
  } catch {
    return -1;
  }
}

export const preadFd = (fd: number, into: Uint8Array, pos: number): number => fdIo(fd, into, pos, false);
export const pwriteFd = (fd: number, from: Uint8Array, pos: number): number => fdIo(fd, from, pos, true);
