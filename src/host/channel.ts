/**
 * The fast channel: a page set shared with one client process (a memfd the shim maps and the
 * daemon opens through /proc/<pid>/fd/<n>), through which that process's ioctls travel while the
 * daemon is busy serving it, with no socket round trip.
 *
 * Layout (little-endian; mirrored in shim/iommufd-shim.c):
 *
 *   0     u32 magic "CHAN" | u32 version
 *   8     u32 req_seq   client: the request in the request area is number req_seq (0 while it
 *                       writes one: a request a client gave up on is never read half-overwritten)
 *   12    u32 resp_seq  daemon: the RESULT frame in the response area answers request resp_seq
 *   16    u32 state     daemon: 1 while it polls this channel (no doorbell needed), else 0
 *   20    u32 busy      daemon: how many channels it polls (the client spins only when it is alone)
 *   24    u32 seen      daemon: the request it has picked up (so the client knows it is being served)
 *   64    request:  u64 socket inode | u32 frame type | u32 payload length | i32 fd | u32 pad | payload
 *   8192  response: a RESULT frame exactly as on the socket (u32 length | u32 type | payload)
 *
 * The daemon maps it with its native helper (shim/host-native.c) and then polls and answers it
 * with plain loads and stores; without the helper (or with IOMMUFD_TS_NATIVE=0) it uses
 * pread/pwrite on the memfd, a system call per access. A client that finds
 * state 0, or waits too long, rings the doorbell: a DOORBELL frame on the socket of the file it
 * calls, answered by DONE once the RESULT is in the channel.
 */
import * as fs from 'node:fs';
import { decodeIoctlAt, encodeResult, FrameType, PROTO_VERSION, ProtocolError, resultSize, writeResult, type IoctlRequest, type ResultFrame } from './protocol.js';
import type { HostTask } from './host-task.js';
import { nativeHelper } from './native.js';

export const CHAN_MAGIC = 0x4e414843;
export const CHAN_SIZE = 16384;
const REQ_SEQ = 8;
const RESP_SEQ = 12;
const STATE = 16;
const BUSY = 20;
const SEEN = 24;
const REQ_OFF = 64;
const REQ_HDR = 24;
export const CHAN_RESP_OFF = 8192;
/** Largest request payload the request area holds. */
export const CHAN_REQ_MAX = CHAN_RESP_OFF - REQ_OFF - REQ_HDR;
/** Largest RESULT frame the response area holds. */
export const CHAN_RESP_MAX = CHAN_SIZE - CHAN_RESP_OFF;

/** The header of a request in the channel; its payload is in the channel's copy, after the header. */
interface ChannelRequest {
  ino: bigint;
  type: number;
  fd: number;
  len: number;
}

/** A request in the channel: the file (socket inode) and fd it names; decode() reads it as an IOCTL. */
export interface ChannelIoctl {
  ino: bigint;
  fd: number;
  /** The IOCTL request (views into the channel's copy, valid until the next request is read); ProtocolError when malformed. */
  decode(): IoctlRequest;
}

/** The shared memory as the daemon reaches it. */
interface ChannelMemory {
  u32(off: number): number;
  setU32(off: number, v: number): void;
  /** Copy `len` bytes at `off` into `into` (from 0); false if they could not be read. */
  read(off: number, into: Buffer, len: number): boolean;
  write(off: number, data: Buffer): void;
  /** The mapped bytes and a view of them, when the memory is mapped (stores go there directly). */
  readonly mappedBytes?: Buffer;
  readonly mappedView?: DataView;
  close(): void;
}

/** pread/pwrite on the memfd. */
class FdMemory implements ChannelMemory {
  private readonly word = Buffer.alloc(4);
  constructor(private readonly fd: number) {}
  u32(off: number): number {
    if (fs.readSync(this.fd, this.word, 0, 4, off) !== 4) throw new ProtocolError('the channel memfd cannot be read');
    return this.word.readUInt32LE(0);
  }
  setU32(off: number, v: number): void {
    this.word.writeUInt32LE(v >>> 0, 0);
    fs.writeSync(this.fd, this.word, 0, 4, off);
  }
  read(off: number, into: Buffer, len: number): boolean {
    return fs.readSync(this.fd, into, 0, len, off) === len;
  }
  write(off: number, data: Buffer): void {
    fs.writeSync(this.fd, data, 0, data.length, off);
  }
  close(): void {
    fs.closeSync(this.fd);
  }
}

/** The memfd mapped into the daemon: the shim's counterpart of the same pages. */
class MappedMemory implements ChannelMemory {
  private readonly words: Int32Array;
  private readonly bytes: Buffer;
  readonly mappedBytes: Buffer;
  readonly mappedView: DataView;
  constructor(ab: ArrayBuffer) {
    this.words = new Int32Array(ab);
    this.bytes = Buffer.from(ab);
    this.mappedBytes = this.bytes;
    this.mappedView = new DataView(ab);
  }
  u32(off: number): number {
    return Atomics.load(this.words, off >> 2) >>> 0;
  }
  setU32(off: number, v: number): void {
    // Atomics.store is sequentially consistent: everything written before it is visible first.
    Atomics.store(this.words, off >> 2, v | 0);
  }
  read(off: number, into: Buffer, len: number): boolean {
    if (off + len > this.bytes.length) return false;
    this.bytes.copy(into, 0, off, off + len);
    return true;
  }
  write(off: number, data: Buffer): void {
    data.copy(this.bytes, off);
  }
  close(): void {
    /* unmapped when the ArrayBuffer is collected */
  }
}

/** The memfd mapped by the native helper, or null (no helper, or it could not map). */
function mapOrNull(fd: number): ArrayBuffer | null {
  const helper = nativeHelper();
  if (!helper) return null;
  try {
    return helper.map(fd, CHAN_SIZE);
  } catch {
    return null;
  }
}

export class Channel {
  /** The last request number answered. */
  answered = 0;
  /** A request seen by a poll round and not yet answered (answered in the next round). */
  seen = 0;
  /** performance.now() of the last request. */
  lastRequest = 0;
  /** Whether the daemon has told the client it polls this channel. */
  polled = false;
  closed = false;
  private readonly reqBuf = Buffer.alloc(REQ_HDR + CHAN_REQ_MAX);
  private readonly reqView = new DataView(this.reqBuf.buffer, this.reqBuf.byteOffset, this.reqBuf.length);

  constructor(
    readonly task: HostTask,
    private readonly mem: ChannelMemory,
    /** Whether the daemon reaches it by mapping (else pread/pwrite). */
    readonly mapped: boolean,
  ) {
    if (mem.u32(0) !== CHAN_MAGIC || mem.u32(4) !== PROTO_VERSION)
      throw new ProtocolError('the channel does not start with the magic and this protocol version');
    this.answered = this.requestSeq();
  }

  /** Open the memfd the client names, checking that it is one (and as large as a channel). */
  static open(task: HostTask, memfd: number, size: number, mapIt = true): Channel {
    const path = `/proc/${task.pid}/fd/${memfd}`;
    let link = '';
    try {
      link = fs.readlinkSync(path);
    } catch {
      link = '';
    }
    if (!link.startsWith('/memfd:iommufd-ts-channel') || size !== CHAN_SIZE)
      throw new ProtocolError(`fd ${memfd} of process ${task.pid} ("${link}", ${size} bytes) is not a channel memfd of ${CHAN_SIZE} bytes`);
    const fd = fs.openSync(path, fs.constants.O_RDWR);
    let mem: ChannelMemory;
    let mapped = false;
    try {
      if (fs.fstatSync(fd).size < CHAN_SIZE) throw new ProtocolError(`the channel memfd of process ${task.pid} is smaller than ${CHAN_SIZE} bytes`);
      const ab = mapIt ? mapOrNull(fd) : null;
      mem = ab ? new MappedMemory(ab) : new FdMemory(fd);
      mapped = ab !== null;
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    if (mapped) fs.closeSync(fd); // the mapping keeps the memfd
    try {
      return new Channel(task, mem, mapped);
    } catch (e) {
      mem.close();
      throw e;
    }
  }

  requestSeq(): number {
    return this.mem.u32(REQ_SEQ);
  }

  /** Tell the client its request `seq` has been picked up (it will be answered soon). */
  markSeen(seq: number): void {
    this.mem.setU32(SEEN, seq);
  }

  /**
   * A request numbered `seq` is in the request area: copy it (ProtocolError when malformed), or
   * null when the client has moved on from it (req_seq changed before or while it was copied).
   */
  private readRequest(seq: number): ChannelRequest | null {
    if (this.requestSeq() !== seq) return null;
    // A copy: the client's memory could change under us; this buffer is reused per request.
    const live = this.mem.mappedView;
    let len: number;
    if (live) {
      len = live.getUint32(REQ_OFF + 12, true);
      if (len > CHAN_REQ_MAX) throw new ProtocolError(`channel request of ${len} bytes exceeds ${CHAN_REQ_MAX}`);
      if (!this.mem.read(REQ_OFF, this.reqBuf, REQ_HDR + len)) throw new ProtocolError('short channel request');
    } else {
      const first = REQ_HDR + 256;
      if (!this.mem.read(REQ_OFF, this.reqBuf, first)) throw new ProtocolError('short channel request');
      len = this.reqView.getUint32(12, true);
      if (len > CHAN_REQ_MAX) throw new ProtocolError(`channel request of ${len} bytes exceeds ${CHAN_REQ_MAX}`);
      if (REQ_HDR + len > first && !this.mem.read(REQ_OFF + first, this.reqBuf.subarray(first), REQ_HDR + len - first))
        throw new ProtocolError('short channel request payload');
    }
    if (this.requestSeq() !== seq) return null;
    const v = this.reqView;
    if (v.getUint32(12, true) !== len) throw new ProtocolError('the channel request changed while it was read');
    return { ino: v.getBigUint64(0, true), type: v.getUint32(8, true), fd: v.getInt32(16, true), len };
  }

  /**
   * Request `seq` as an IOCTL (ProtocolError when it is malformed or of another type), or null when
   * the client has moved on from it. The result's views stay valid until the next request is read.
   */
  readIoctl(seq: number): ChannelIoctl | null {
    const r = this.readRequest(seq);
    if (!r) return null;
    if (r.type !== FrameType.IOCTL) throw new ProtocolError(`channel request of type ${r.type}; only IOCTL travels there`);
    return { ino: r.ino, fd: r.fd, decode: () => decodeIoctlAt(this.reqBuf, this.reqView, REQ_HDR, r.len) };
  }

  /** Store the RESULT `r` for request `seq` (straight into the mapping when there is one). */
  answerResult(seq: number, r: ResultFrame, busy: number): void {
    const size = resultSize(r);
    if (size > CHAN_RESP_MAX) throw new ProtocolError(`answer of ${size} bytes exceeds ${CHAN_RESP_MAX}`);
    const bytes = this.mem.mappedBytes;
    const view = this.mem.mappedView;
    if (bytes && view) writeResult(bytes, view, CHAN_RESP_OFF, r);
    else this.mem.write(CHAN_RESP_OFF, encodeResult(r));
    this.mem.setU32(BUSY, busy);
    this.mem.setU32(RESP_SEQ, seq);
    this.answered = seq;
  }

  /** Tell the client whether it may expect to be polled (1) or must ring the doorbell (0). */
  setPolled(on: boolean, busy: number): void {
    if (this.closed || this.polled === on) return;
    this.polled = on;
    this.mem.setU32(BUSY, busy);
    this.mem.setU32(STATE, on ? 1 : 0);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.mem.close();
    } catch {
      /* already gone */
    }
  }
}
