/**
 * The wire protocol between the preload shim (shim/iommufd-shim.c) and the daemon.
 *
 * One AF_UNIX stream connection per emulated file. Frames, both directions, little-endian:
 *
 *   u32 payload length | u32 type | payload
 *
 * client → daemon
 *   HELLO  (first frame of every connection; answered by ACK)
 *          u32 magic "IOMF" | u32 version | u32 kind (0 /dev/iommu, 1 /dev/vfio/vfio, 2 spare)
 *          u32 pid | u32 euid | i32 fd | u64 socket inode | u64 secret address | u8 secret[16]
 *          u64 token (SPARE: the spare's token; ATTACH: the inode of the socket to join)
 *          i32 attach fd (ATTACH: the caller's fd holding that socket) | u32 pad
 *   IOCTL  auth | u32 cmd | u32 id inode | u64 arg | u64 spare token | i32 spare fd
 *          u32 inline length | u32 writable length | u32 pad | inline bytes (the struct at arg)
 *   READ / WRITE  auth | u64 user address | u64 count
 *   POLL   auth | u32 events | u32 pad
 *   CHANNEL  auth | i32 memfd | u32 size | i32 socket fd | u32 pad  (this process's fast channel,
 *            see channel.ts; answered by ACK; the fd is the one this frame travels on)
 *   DOORBELL auth | u32 seq | u32 flags   (request seq is waiting in the channel; answered by DONE;
 *                                          flag 1: the client rings for every call for now, do not poll it)
 *   where auth = u32 pid | u32 state generation | u64 secret address | u8 secret[16]
 *   (the generation changes whenever the client mmaps, munmaps, mprotects, or changes creds/rlimits)
 *
 * daemon → client
 *   ACK    i32 status (0 or -errno) | u32 pad
 *   RESULT i64 ret (>= 0, or -errno) | u32 dirty offset | u32 dirty length | i32 new fd
 *          | u32 new fd close-on-exec | dirty bytes (to write back at arg + dirty offset)
 *   WAKE   (empty; the file became readable; the shim skips it while waiting for a RESULT)
 *   DONE   i32 status (0, or -errno: no channel / not that request) | u32 seq (the answer is in the channel)
 */

export const FrameType = {
  HELLO: 1,
  IOCTL: 2,
  READ: 3,
  WRITE: 4,
  POLL: 5,
  CHANNEL: 6,
  DOORBELL: 7,
  ACK: 0x81,
  RESULT: 0x82,
  WAKE: 0x83,
  DONE: 0x84,
} as const;

export const HELLO_MAGIC = 0x464d4f49;
export const PROTO_VERSION = 5;
export const HELLO_SIZE = 72;
export const AUTH_SIZE = 32;
export const IOCTL_FIXED_SIZE = AUTH_SIZE + 64;
export const RW_SIZE = AUTH_SIZE + 16;
export const POLL_SIZE = AUTH_SIZE + 8;
export const CHANNEL_SIZE = AUTH_SIZE + 16;
export const DOORBELL_SIZE = AUTH_SIZE + 8;
/** The shim never inlines more than this; anything larger is a protocol violation. */
export const INLINE_MAX = 4096;
/** Largest pointed-to buffer (the window) that travels with an IOCTL. */
export const WIN_MAX = 2048;
/** Largest payload the daemon accepts before calling the peer broken. */
export const MAX_FRAME = IOCTL_FIXED_SIZE + INLINE_MAX + WIN_MAX;
/** The fixed part of a RESULT payload (ret, the struct's dirty range, a new fd, the window's dirty range). */
const RESULT_FIXED = 32;

/**
 * IOMMU/VFIO: open a new context. SPARE: a connection waiting to carry a file an ioctl creates.
 * ATTACH: another connection to the file behind one of the caller's fds (the shim's per-process
 * connection for a file it inherited), released with the others when the last one closes.
 */
export const ConnKind = { IOMMU: 0, VFIO: 1, SPARE: 2, ATTACH: 3 } as const;

/** A malformed frame: the connection is dropped (its file released), nothing else is affected. */
export class ProtocolError extends Error {}

export interface Auth {
  pid: number;
  /** The client's state generation: cached maps, creds and rlimits stay valid while it is unchanged. */
  gen: number;
  secretAddr: bigint;
  secret: Buffer;
}

export interface Hello {
  kind: number;
  pid: number;
  uid: number;
  fd: number;
  ino: bigint;
  secretAddr: bigint;
  secret: Buffer;
  token: bigint;
  attachFd: number;
}

export interface IoctlRequest {
  auth: Auth;
  cmd: number;
  /**
   * For IOMMU_TEST_CMD ops whose `id` is an access fd: the socket inode that fd is (fstat in the
   * shim), 0 otherwise. A hint: the daemon trusts it only for connections this very task opened.
   */
  idIno: number;
  arg: bigint;
  spareToken: bigint;
  spareFd: number;
  inline: Buffer;
  writableLen: number;
  /** A buffer the struct points to that travels with it (IOMMU_TEST_OP_ACCESS_RW's uptr), if any. */
  window: IoctlWindow | undefined;
}

/**
 * The window: `size` bytes at `addr` in the caller, of which the first `bytes.length` arrived (all
 * that was readable; none when the call only writes there). When `writable`, writes into it are
 * staged and applied by the shim after the call, a fault there being the call's EFAULT.
 */
export interface IoctlWindow {
  addr: bigint;
  size: number;
  bytes: Buffer;
  writable: boolean;
}

export interface RwRequest {
  auth: Auth;
  addr: bigint;
  count: bigint;
}

export interface PollRequest {
  auth: Auth;
  events: number;
}

export interface Frame {
  type: number;
  payload: Buffer;
}

/** Splits a byte stream into frames; throws ProtocolError on anything malformed. */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  next(): Frame | undefined {
    if (this.buffered < 8) return undefined;
    let head = this.chunks[0]!;
    if (head.length < 8) {
      this.coalesce();
      head = this.chunks[0]!;
    }
    const len = head.readUInt32LE(0);
    const type = head.readUInt32LE(4);
    if (len > MAX_FRAME) throw new ProtocolError(`frame of ${len} bytes exceeds the limit of ${MAX_FRAME}`);
    if (this.buffered < 8 + len) return undefined;
    if (head.length < 8 + len) {
      this.coalesce();
      head = this.chunks[0]!;
    }
    const payload = head.subarray(8, 8 + len);
    if (head.length === 8 + len) this.chunks.shift();
    else this.chunks[0] = head.subarray(8 + len);
    this.buffered -= 8 + len;
    return { type, payload };
  }

  private coalesce(): void {
    this.chunks = [Buffer.concat(this.chunks)];
  }
}

function readAuth(p: Buffer): Auth {
  return { pid: p.readUInt32LE(0), gen: p.readUInt32LE(4), secretAddr: p.readBigUInt64LE(8), secret: p.subarray(16, 32) };
}

export function decodeHello(p: Buffer): Hello {
  if (p.length !== HELLO_SIZE) throw new ProtocolError(`HELLO of ${p.length} bytes, expected ${HELLO_SIZE}`);
  if (p.readUInt32LE(0) !== HELLO_MAGIC) throw new ProtocolError('HELLO with a bad magic');
  const version = p.readUInt32LE(4);
  if (version !== PROTO_VERSION) throw new ProtocolError(`protocol version ${version}, this daemon speaks ${PROTO_VERSION}`);
  return {
    kind: p.readUInt32LE(8),
    pid: p.readUInt32LE(12),
    uid: p.readUInt32LE(16),
    fd: p.readInt32LE(20),
    ino: p.readBigUInt64LE(24),
    secretAddr: p.readBigUInt64LE(32),
    secret: p.subarray(40, 56),
    token: p.readBigUInt64LE(56),
    attachFd: p.readInt32LE(64),
  };
}

export function decodeIoctl(p: Buffer): IoctlRequest {
  return decodeIoctlAt(p, new DataView(p.buffer, p.byteOffset, p.length), 0, p.length);
}

/**
 * An IOCTL payload of `len` bytes at `off` in `buf` (`view` spans the same bytes as `buf`): the
 * fast channel parses its request area in place. `inline` and `auth.secret` are views into `buf`.
 */
export function decodeIoctlAt(buf: Buffer, view: DataView, off: number, len: number): IoctlRequest {
  if (len < IOCTL_FIXED_SIZE) throw new ProtocolError(`IOCTL of ${len} bytes`);
  const f = off + AUTH_SIZE;
  const inlineLen = view.getUint32(f + 28, true);
  const writableLen = view.getUint32(f + 32, true);
  const winSize = view.getUint32(f + 48, true);
  const winLen = view.getUint32(f + 52, true);
  if (inlineLen > INLINE_MAX || writableLen > inlineLen || winSize > WIN_MAX || winLen > winSize || len !== IOCTL_FIXED_SIZE + inlineLen + winLen)
    throw new ProtocolError(`IOCTL with inline length ${inlineLen}, writable ${writableLen}, window ${winLen} of ${winSize}, frame ${len}`);
  const winAt = off + IOCTL_FIXED_SIZE + inlineLen;
  return {
    auth: {
      pid: view.getUint32(off, true),
      gen: view.getUint32(off + 4, true),
      secretAddr: view.getBigUint64(off + 8, true),
      secret: buf.subarray(off + 16, off + 32),
    },
    cmd: view.getUint32(f, true),
    idIno: view.getUint32(f + 4, true),
    arg: view.getBigUint64(f + 8, true),
    spareToken: view.getBigUint64(f + 16, true),
    spareFd: view.getInt32(f + 24, true),
    inline: buf.subarray(off + IOCTL_FIXED_SIZE, winAt),
    writableLen,
    window: winSize
      ? { addr: view.getBigUint64(f + 40, true), size: winSize, bytes: buf.subarray(winAt, winAt + winLen), writable: view.getUint32(f + 56, true) !== 0 }
      : undefined,
  };
}

export function decodeRw(p: Buffer): RwRequest {
  if (p.length !== RW_SIZE) throw new ProtocolError(`READ/WRITE of ${p.length} bytes`);
  return { auth: readAuth(p), addr: p.readBigUInt64LE(AUTH_SIZE), count: p.readBigUInt64LE(AUTH_SIZE + 8) };
}

export function decodePoll(p: Buffer): PollRequest {
  if (p.length !== POLL_SIZE) throw new ProtocolError(`POLL of ${p.length} bytes`);
  return { auth: readAuth(p), events: p.readUInt32LE(AUTH_SIZE) };
}

export interface ChannelOpen {
  auth: Auth;
  memfd: number;
  size: number;
  /** The caller's fd for the socket this frame came on. */
  sockFd: number;
}

export function decodeChannelOpen(p: Buffer): ChannelOpen {
  if (p.length !== CHANNEL_SIZE) throw new ProtocolError(`CHANNEL of ${p.length} bytes`);
  return { auth: readAuth(p), memfd: p.readInt32LE(AUTH_SIZE), size: p.readUInt32LE(AUTH_SIZE + 4), sockFd: p.readInt32LE(AUTH_SIZE + 8) };
}

export interface Doorbell {
  auth: Auth;
  seq: number;
  /** The client rings for every call for a while (it found the CPUs busy): polling it is wasted. */
  noPoll: boolean;
}

export function decodeDoorbell(p: Buffer): Doorbell {
  if (p.length !== DOORBELL_SIZE) throw new ProtocolError(`DOORBELL of ${p.length} bytes`);
  return { auth: readAuth(p), seq: p.readUInt32LE(AUTH_SIZE), noPoll: (p.readUInt32LE(AUTH_SIZE + 4) & 1) !== 0 };
}

export function encodeDone(status: number, seq: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(8, 0);
  b.writeUInt32LE(FrameType.DONE, 4);
  b.writeInt32LE(status, 8);
  b.writeUInt32LE(seq >>> 0, 12);
  return b;
}

export function encodeAck(status: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(8, 0);
  b.writeUInt32LE(FrameType.ACK, 4);
  b.writeInt32LE(status, 8);
  return b;
}

export interface ResultFrame {
  ret: number;
  dirtyOff?: number;
  dirty?: Uint8Array;
  newFd?: number;
  newFdCloexec?: boolean;
  /** Bytes written into the request's window, at this offset in it (after `dirty` in the frame). */
  winDirtyOff?: number;
  winDirty?: Uint8Array;
}

export function encodeResult(r: ResultFrame): Buffer {
  const b = Buffer.allocUnsafe(resultSize(r));
  writeResult(b, new DataView(b.buffer, b.byteOffset, b.length), 0, r);
  return b;
}

/** Bytes of the RESULT frame for `r`, header included. */
export function resultSize(r: ResultFrame): number {
  return 8 + RESULT_FIXED + (r.dirty?.length ?? 0) + (r.winDirty?.length ?? 0);
}

/** The RESULT frame for `r` at `off` in `buf` (`view` spans the same bytes), as encodeResult makes it. */
export function writeResult(buf: Uint8Array, view: DataView, off: number, r: ResultFrame): void {
  const dirtyLen = r.dirty?.length ?? 0;
  const winLen = r.winDirty?.length ?? 0;
  view.setUint32(off, RESULT_FIXED + dirtyLen + winLen, true);
  view.setUint32(off + 4, FrameType.RESULT, true);
  // ret as a signed 64-bit value from a safe integer, without a BigInt.
  view.setInt32(off + 8, r.ret | 0, true);
  view.setInt32(off + 12, r.ret < 0 ? -1 : Math.floor(r.ret / 0x100000000), true);
  view.setUint32(off + 16, r.dirtyOff ?? 0, true);
  view.setUint32(off + 20, dirtyLen, true);
  view.setInt32(off + 24, r.newFd ?? -1, true);
  view.setUint32(off + 28, r.newFdCloexec ? 1 : 0, true);
  view.setUint32(off + 32, r.winDirtyOff ?? 0, true);
  view.setUint32(off + 36, winLen, true);
  if (dirtyLen) buf.set(r.dirty!, off + 8 + RESULT_FIXED);
  if (winLen) buf.set(r.winDirty!, off + 8 + RESULT_FIXED + dirtyLen);
}

export const WAKE_FRAME = Buffer.from([0, 0, 0, 0, FrameType.WAKE, 0, 0, 0]);
