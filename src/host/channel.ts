/**
 * The fast channel: a page set shared with one client process (a memfd the shim maps and the
 * daemon opens through /proc/<pid>/fd/<n>), through which that process's ioctls travel while the
 * daemon is busy serving it, with no socket round trip.
 *
 * Layout (little-endian; mirrored in shim/iommufd-shim.c):
 *
 *   0     u32 magic "CHAN" | u32 version
 *   8     u32 req_seq   client: the request in the request area is number req_seq
 *   12    u32 resp_seq  daemon: the RESULT frame in the response area answers request resp_seq
 *   16    u32 state     daemon: 1 while it polls this channel (no doorbell needed), else 0
 *   20    u32 busy      daemon: how many channels it polls (the client spins only when it is alone)
 *   24    u32 seen      daemon: the request it has picked up (so the client knows it is being served)
 *   64    request:  u64 socket inode | u32 frame type | u32 payload length | i32 fd | u32 pad | payload
 *   8192  response: a RESULT frame exactly as on the socket (u32 length | u32 type | payload)
 *
 * The daemon reads and writes it with pread/pwrite (Node cannot map memory). A client that finds
 * state 0, or waits too long, rings the doorbell: a DOORBELL frame on the socket of the file it
 * calls, answered by DONE once the RESULT is in the channel.
 */
import * as fs from 'node:fs';
import { PROTO_VERSION, ProtocolError } from './protocol.js';
import type { HostTask } from './host-task.js';

export const CHAN_MAGIC = 0x4e414843;
export const CHAN_SIZE = 16384;
const REQ_SEQ = 8;
const RESP_SEQ = 12;
const STATE = 16;
const SEEN = 24;
const REQ_OFF = 64;
const REQ_HDR = 24;
export const CHAN_RESP_OFF = 8192;
/** Largest request payload the request area holds. */
export const CHAN_REQ_MAX = CHAN_RESP_OFF - REQ_OFF - REQ_HDR;
/** Largest RESULT frame the response area holds. */
export const CHAN_RESP_MAX = CHAN_SIZE - CHAN_RESP_OFF;

export interface ChannelRequest {
  seq: number;
  ino: bigint;
  type: number;
  fd: number;
  payload: Buffer;
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
  private readonly seqBuf = Buffer.alloc(4);
  private readonly stateBuf = Buffer.alloc(12);
  private readonly reqBuf = Buffer.alloc(REQ_HDR + 256);

  constructor(
    readonly task: HostTask,
    private readonly fd: number,
  ) {
    const head = Buffer.alloc(8);
    if (fs.readSync(fd, head, 0, 8, 0) !== 8 || head.readUInt32LE(0) !== CHAN_MAGIC || head.readUInt32LE(4) !== PROTO_VERSION)
      throw new ProtocolError('the channel does not start with the magic and this protocol version');
    this.answered = this.requestSeq();
  }

  /** Open the memfd the client names, checking that it is one (and as large as a channel). */
  static open(task: HostTask, memfd: number, size: number): Channel {
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
    try {
      if (fs.fstatSync(fd).size < CHAN_SIZE) throw new ProtocolError(`the channel memfd of process ${task.pid} is smaller than ${CHAN_SIZE} bytes`);
      return new Channel(task, fd);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Tell the client its request `seq` has been picked up (it will be answered soon). */
  markSeen(seq: number): void {
    this.seenBuf.writeUInt32LE(seq, 0);
    fs.writeSync(this.fd, this.seenBuf, 0, 4, SEEN);
  }

  private readonly seenBuf = Buffer.alloc(4);

  requestSeq(): number {
    return fs.readSync(this.fd, this.seqBuf, 0, 4, REQ_SEQ) === 4 ? this.seqBuf.readUInt32LE(0) : this.answered;
  }

  /** A request numbered `seq` is in the request area: read it (ProtocolError when malformed). */
  readRequest(seq: number): ChannelRequest {
    let n = fs.readSync(this.fd, this.reqBuf, 0, this.reqBuf.length, REQ_OFF);
    if (n < REQ_HDR) throw new ProtocolError('short channel request');
    const len = this.reqBuf.readUInt32LE(12);
    if (len > CHAN_REQ_MAX) throw new ProtocolError(`channel request of ${len} bytes exceeds ${CHAN_REQ_MAX}`);
    const ino = this.reqBuf.readBigUInt64LE(0);
    const type = this.reqBuf.readUInt32LE(8);
    const fd = this.reqBuf.readInt32LE(16);
    // The payload is a view of a reused buffer: the request is handled before the next read.
    let payload: Buffer;
    if (REQ_HDR + len <= n) payload = this.reqBuf.subarray(REQ_HDR, REQ_HDR + len);
    else {
      payload = Buffer.alloc(len);
      n = fs.readSync(this.fd, payload, 0, len, REQ_OFF + REQ_HDR);
      if (n !== len) throw new ProtocolError('short channel request payload');
    }
    return { seq, ino, type, fd, payload };
  }

  /** Store the answer to request `seq` (the frame first, then the number that publishes it). */
  answer(seq: number, frame: Buffer, busy: number): void {
    if (frame.length > CHAN_RESP_MAX) throw new ProtocolError(`answer of ${frame.length} bytes exceeds ${CHAN_RESP_MAX}`);
    fs.writeSync(this.fd, frame, 0, frame.length, CHAN_RESP_OFF);
    // resp_seq, state and busy in one write; resp_seq is what the client waits for.
    this.stateBuf.writeUInt32LE(seq, 0);
    this.stateBuf.writeUInt32LE(this.polled ? 1 : 0, 4);
    this.stateBuf.writeUInt32LE(busy, 8);
    fs.writeSync(this.fd, this.stateBuf, 0, 12, RESP_SEQ);
    this.answered = seq;
  }

  /** Tell the client whether it may expect to be polled (1) or must ring the doorbell (0). */
  setPolled(on: boolean, busy: number): void {
    if (this.closed || this.polled === on) return;
    this.polled = on;
    const b = Buffer.alloc(8);
    b.writeUInt32LE(on ? 1 : 0, 0);
    b.writeUInt32LE(busy, 4);
    fs.writeSync(this.fd, b, 0, 8, STATE);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      fs.closeSync(this.fd);
    } catch {
      /* already gone */
    }
  }
}
