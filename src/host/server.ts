/**
 * The daemon: serves /dev/iommu to real processes running with the preload shim.
 *
 * One unix-socket connection per emulated file (an open /dev/iommu context, a fault queue fd, an
 * access fd). The connection's end (EOF, ECONNRESET, close) is the file's release: the kernel's
 * socket refcounting across dup, fork, close-on-exec and exit decides when that happens, exactly
 * as it decides the last fput() of a real file. Requests are handled one at a time, in arrival
 * order, synchronously: the emulator core is synchronous and this loop is its one big lock.
 *
 * A connection that sends anything malformed is dropped (its file released); a client that dies
 * mid-call only loses its own files. Nobody but the daemon's own uid gets in: the socket lives in
 * a 0700 directory, every connection's HELLO is checked against /proc (the claimed pid must hold
 * the random secret it claims, run as our uid and own the socket fd it names), and every request
 * proves its pid again. Memory access is always the requesting process's own.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { Errno, errnoName } from '../lib/errno.js';
import { IommuError } from '../lib/error.js';
import { lockdep } from '../lib/lockdep.js';
import { IommufdCtx } from '../iommufd/context.js';
import { POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM, type EmulatedFile, type FdTable } from '../iommufd/file.js';
import { DEFAULT_IOCTL_OPTIONS, iommufdIoctl, type IoctlOptions } from '../iommufd/main.js';
import { HostProcesses } from './host-task.js';
import type { Capability } from '../mm/types.js';
import type { HostTask } from './host-task.js';
import { InlineUser } from './host-memory.js';
import { Channel } from './channel.js';
import { nativeHelper } from './native.js';
import {
  ConnKind,
  decodeChannelOpen,
  decodeDoorbell,
  decodeHello,
  decodeIoctl,
  decodePoll,
  decodeRw,
  encodeAck,
  encodeDone,
  encodeResult,
  FrameReader,
  FrameType,
  ProtocolError,
  WAKE_FRAME,
  type Auth,
  type Hello,
  type IoctlRequest,
  type ResultFrame,
} from './protocol.js';
import { formatCall, formatIoctl } from './trace.js';

/** What poll returns for files without a poll method (the kernel's DEFAULT_POLLMASK). */
const DEFAULT_POLLMASK = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM;
/** The kernel clamps read/write counts to MAX_RW_COUNT. */
const MAX_RW_COUNT = 0x7ffff000;
/** How long serveWhileQuiet waits for the next request before it starts yielding the CPU. */
const YIELD_AFTER_MS = 0.02;
/** A polled channel counts as busy (competing for the daemon) this long after its last request. */
const BUSY_WINDOW_MS = 0.1;
/**
 * Longest run of channel requests answered back to back before the event loop gets a turn. Socket
 * input cuts a run short at once (socketsQuiet), so only timers wait; a client whose request
 * arrives during that turn usually misses its pick-up and rings, so turns are rare.
 */
const SERVE_SLICE_MS = 20;
/** How long the daemon stays idle before it unmaps the client objects it mapped (SharedObjects). */
const SHARED_UNMAP_MS = 20;
/** How many dropped connections a channel request can still be told apart for (EIO, not EBADF). */
const DROPPED_KEPT = 64;

/** The OS fd behind a socket or server (libuv's pipe handle), or -1 when it has none. */
function handleFd(h: net.Socket | net.Server): number {
  const fd = (h as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

export interface ServerOptions {
  socketPath: string;
  /** Receives one line per ioctl (and per open, read, write, poll, release). */
  trace?: (line: string) => void;
  /** Diagnostics: rejected clients, protocol errors, emulator bugs. */
  log?: (line: string) => void;
  ioctlOptions?: IoctlOptions;
  /** The uid allowed to connect (default: the daemon's effective uid). */
  uid?: number;
  /**
   * After a request, keep the event loop polling (instead of sleeping in epoll) for this many
   * microseconds, so the next request of a chatty client is picked up without a wake-up of an idle
   * CPU (tens of microseconds in a VM). 0: one more event-loop round only. Default 200.
   */
  spinMicros?: number;
  /**
   * While a client's fast channel (channel.ts) has had requests within this many microseconds,
   * keep polling it between event-loop rounds (the client then needs no doorbell). Default 3000:
   * a doorbell to an idle daemon costs the client about a millisecond on a VM (its wake-up), and
   * programs often compute for a millisecond or two between calls (the selftest rang 1000-1100
   * times with 500, 800-900 with 3000). The rounds yield the CPU to whoever else wants it.
   */
  channelPollMicros?: number;
  /** Map fast channels with the native helper when it is there (default); false: pread/pwrite. */
  mapChannels?: boolean;
  /**
   * Answer a channel request in the event-loop round that finds it, when no socket has anything
   * pending (default, with the native helper); false: always in the next round.
   */
  serveAtOnce?: boolean;
  /**
   * After a request answered at once, keep looking for the next one this many microseconds
   * before going back to the event loop (default 200; 0: do not wait). A round of the event loop
   * costs more than a call: a request that arrives during one waits for it.
   */
  serveSpinMicros?: number;
  /**
   * Yield the CPU (sched_yield) in polling rounds that find nothing (default true; needs the
   * native helper; IOMMUFD_TS_YIELD=0 turns it off).
   */
  yieldCpu?: boolean;
  /** Capabilities every client holds in the emulated kernel (HostProcessesOptions.grantCaps). */
  grantCaps?: readonly Capability[];
}

/**
 * The file behind a connection. Several connections share one when processes that inherited it
 * took their own (ATTACH); `conns` counts them and the file is released with the last.
 */
type Bound = ({ kind: 'ctx'; ctx: IommufdCtx } | { kind: 'file'; file: EmulatedFile }) & { conns: number };

class Conn {
  readonly reader = new FrameReader();
  hello: Hello | undefined;
  /** The task (pid + mm) that opened this connection, verified at HELLO. */
  opener: HostTask | undefined;
  bound: Bound | null = null;
  released = false;
  rejected = false;
  /** A WAKE frame was sent and the client has not made a request since. */
  wakePending = false;
  /** Counted in the opener's number of connections (channels close with the last). */
  counted = false;
  /** A task other than the opener that was found to hold this socket (exec'd, same pid). */
  heldBy: HostTask | undefined;
  constructor(
    readonly id: number,
    readonly socket: net.Socket,
  ) {}

  get name(): string {
    if (!this.bound) return 'spare';
    return this.bound.kind === 'ctx' ? '/dev/iommu' : this.bound.file.name;
  }
}

export interface ServerStats {
  connections: number;
  open: number;
  requests: number;
  ioctls: number;
  protocolErrors: number;
  rejected: number;
  /** Requests answered through a fast channel, and how many of those the client rang for. */
  channelRequests: number;
  /** Channel requests answered in the event-loop round that found them (sockets quiet). */
  servedAtOnce: number;
  /** Polling rounds that found nothing and yielded the CPU (sched_yield). */
  yields: number;
  doorbells: number;
  channels: number;
}

export class IommufdServer {
  readonly procs: HostProcesses;
  private readonly server: net.Server;
  private readonly conns = new Set<Conn>();
  private readonly byIno = new Map<bigint, Conn>();
  private readonly spares = new Map<bigint, Conn>();
  private readonly pollable = new Set<Conn>();
  private readonly opts: IoctlOptions;
  private nextId = 1;
  /** Requests received and not yet handled, in arrival order across connections. */
  private readonly pending: { conn: Conn; type: number; payload: Buffer }[] = [];
  private drainScheduled = false;
  private listening = false;
  /** Each client process's fast channel, and the ones being polled between event-loop rounds. */
  private readonly channels = new Map<HostTask, Channel>();
  private readonly polled = new Set<Channel>();
  /** Connections each task opened (its channel is closed with the last). */
  private readonly connsOf = new Map<HostTask, number>();
  /** Where the RESULT of the request being handled goes when it came through a channel (ch null: its socket). */
  private readonly replyTo: { ch: Channel | null; seq: number; sent: boolean } = { ch: null, seq: 0, sent: false };
  /** Exceptions that escaped the emulator while serving (bugs); the daemon keeps running. */
  readonly internalErrors: unknown[] = [];
  readonly stats: ServerStats = { connections: 0, open: 0, requests: 0, ioctls: 0, protocolErrors: 0, rejected: 0, channelRequests: 0, servedAtOnce: 0, yields: 0, doorbells: 0, channels: 0 };

  constructor(private readonly options: ServerOptions) {
    this.procs = new HostProcesses({ uid: options.uid, grantCaps: options.grantCaps });
    this.opts = options.ioctlOptions ?? DEFAULT_IOCTL_OPTIONS;
    this.server = net.createServer({ allowHalfOpen: false }, (s) => this.accept(s));
    this.server.on('error', (e) => this.log(`server error: ${e.message}`));
  }

  get socketPath(): string {
    return this.options.socketPath;
  }

  /** Bind the socket (removing a stale one first) and wait until it accepts connections. */
  async listen(): Promise<void> {
    const p = this.options.socketPath;
    try {
      if (fs.lstatSync(p).isSocket()) fs.unlinkSync(p);
    } catch {
      /* nothing there */
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error): void => reject(e);
      this.server.once('error', onError);
      this.server.listen(p, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    fs.chmodSync(p, 0o600);
    this.listening = true;
  }

  /** Release every file, stop listening, remove the socket. */
  async close(): Promise<void> {
    for (const c of [...this.conns]) {
      this.release(c, 'daemon shutdown');
      c.socket.destroy();
    }
    for (const ch of this.channels.values()) ch.close();
    this.channels.clear();
    this.polled.clear();
    this.unwatchSockets();
    clearTimeout(this.unmapTimer);
    if (this.listening) {
      await new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.listening = false;
    }
    try {
      fs.unlinkSync(this.options.socketPath);
    } catch {
      /* already gone */
    }
    this.procs.dispose();
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  private trace(line: string): void {
    this.options.trace?.(line);
  }

  private accept(socket: net.Socket): void {
    const conn = new Conn(this.nextId++, socket);
    this.conns.add(conn);
    this.socketFds = null;
    this.stats.connections++;
    this.stats.open++;
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('end', () => {
      this.release(conn, 'EOF');
      socket.destroy();
    });
    socket.on('error', () => this.release(conn, 'connection error'));
    socket.on('close', () => this.release(conn, 'closed'));
  }

  private onData(conn: Conn, chunk: Buffer): void {
    if (conn.released || conn.rejected) return;
    try {
      conn.reader.push(chunk);
      let f;
      while ((f = conn.reader.next())) this.pending.push({ conn, type: f.type, payload: f.payload });
    } catch (e) {
      this.dropConn(conn, e);
      return;
    }
    // Requests run in the check phase, after every event of this poll round: a client that closed
    // one file and then called on another gets the close (EOF) processed first, as the kernel's
    // synchronous release would have done.
    if (!this.drainScheduled) {
      this.drainScheduled = true;
      setImmediate(() => this.drain());
    }
  }

  private drain(): void {
    this.drainScheduled = false;
    const batch = this.pending.splice(0);
    for (const { conn, type, payload } of batch) {
      if (conn.released || conn.rejected) continue;
      try {
        this.handle(conn, type, payload);
      } catch (e) {
        this.dropConn(conn, e);
      }
    }
    this.checkWakes();
    this.spin();
  }

  private lastActivity = 0;
  private hot = false;

  /**
   * Adaptive polling. While the event loop has setImmediate work pending, libuv polls with a zero
   * timeout, so after a request we keep a tick going for a while: sockets are then read without an
   * idle CPU having to wake up, and the fast channels of recently active clients are polled.
   */
  private spin(): void {
    this.lastActivity = performance.now();
    if (this.hot || !this.listening) return;
    this.hot = true;
    setImmediate(this.tick);
  }

  private readonly tick = (): void => {
    let now = performance.now();
    // Requests the previous round found are answered now, after the poll phase in between: a
    // close() the client made before its call (an EOF on another socket) has been released first,
    // exactly as the socket path orders them.
    for (const ch of this.polled) {
      if (ch.seen && ch.seen !== ch.answered) this.serveChannel(ch, ch.seen);
      ch.seen = 0;
    }
    let found = false;
    let servedNow = false;
    for (const ch of this.polled) {
      if (ch.closed) {
        this.polled.delete(ch);
        continue;
      }
      const seq = this.peek(ch);
      if (seq !== ch.answered) {
        ch.lastRequest = now;
        found = true;
        this.markSeen(ch, seq);
        if (this.socketsQuiet()) {
          this.serveChannel(ch, seq, true);
          servedNow = true;
        } else ch.seen = seq;
      }
    }
    if (servedNow) {
      this.serveWhileQuiet();
      now = performance.now();
    }
    if (found) this.lastActivity = now;
    else this.yieldCpu();
    const window = (this.polled.size ? (this.options.channelPollMicros ?? 3000) : (this.options.spinMicros ?? 200)) / 1000;
    if (this.listening && (found || now - this.lastActivity < window)) {
      setImmediate(this.tick);
      return;
    }
    // Going idle: tell the clients to ring the doorbell from now on, then look once more (a
    // request stored before they could see that is still found here).
    for (const ch of this.polled) ch.setPolled(false, 0);
    for (const ch of this.polled) {
      const seq = this.peek(ch);
      if (seq !== ch.answered) {
        ch.seen = seq;
        found = true;
      } else this.polled.delete(ch);
    }
    if (found && this.listening) {
      for (const ch of this.polled) ch.setPolled(true, this.busy());
      this.lastActivity = now;
      setImmediate(this.tick);
      return;
    }
    this.polled.clear();
    this.hot = false;
    this.procs.memory.closeIdleBackings();
    // Client objects mapped for copies go a little later: a client pausing between calls (a
    // doorbell each) would otherwise have them mapped again every time.
    if (!this.unmapTimer)
      this.unmapTimer = setTimeout(() => {
        this.unmapTimer = undefined;
        if (!this.hot) this.procs.memory.sharedObjects.dropAll();
      }, SHARED_UNMAP_MS).unref();
  };

  private unmapTimer: NodeJS.Timeout | undefined;

  /** The fds of every live connection and of the listening socket (null: rebuild). */
  private socketFds: Int32Array | null = null;
  /** An epoll instance watching socketFds (native watch), or -1: then ready() polls them. */
  private watchFd = -1;

  /**
   * Whether a channel request may be answered right now rather than after the next poll phase:
   * no socket request is queued and no socket (connection or listener) has input, a hangup or an
   * error pending. Then nothing the client did before its call is still unseen. Needs the native
   * helper (a zero-timeout poll); without it the answer always waits for the next round.
   */
  private socketsQuiet(): boolean {
    if (this.pending.length || this.drainScheduled || this.options.serveAtOnce === false) return false;
    const helper = nativeHelper();
    if (!helper?.ready) return false;
    if (!this.socketFds) {
      const fds: number[] = [];
      for (const c of this.conns) {
        const fd = handleFd(c.socket);
        if (fd < 0) return false;
        fds.push(fd);
      }
      const lfd = handleFd(this.server);
      if (lfd < 0) return false;
      fds.push(lfd);
      this.socketFds = Int32Array.from(fds);
      // One epoll_wait per request instead of a poll() visiting every socket (1-1.5 µs for 3-7).
      this.unwatchSockets();
      const ep = helper.watch?.(this.socketFds) ?? -1;
      if (ep >= 0) this.watchFd = ep;
    }
    if (this.watchFd >= 0) {
      const r = helper.watchReady!(this.watchFd);
      if (r >= 0) return r === 0;
      this.unwatchSockets();
    }
    return helper.ready(this.socketFds) === 0;
  }

  private unwatchSockets(): void {
    if (this.watchFd < 0) return;
    nativeHelper()?.unwatch?.(this.watchFd);
    this.watchFd = -1;
  }

  /**
   * After answering a channel request at once, wait here a little for the same clients' next
   * requests (a program calling in a loop sends the next within microseconds) and answer those at
   * once too, while the sockets stay quiet; at most SERVE_SLICE_MS in a row, then back to the
   * event loop.
   */
  private serveWhileQuiet(): void {
    const waitMs = (this.options.serveSpinMicros ?? 200) / 1000;
    if (waitMs <= 0) return;
    const start = performance.now();
    let deadline = start + waitMs;
    for (let i = 0; ; i++) {
      let served = false;
      for (const ch of this.polled) {
        if (ch.closed) continue;
        const seq = this.peek(ch);
        if (seq === ch.answered) continue;
        ch.lastRequest = performance.now();
        this.markSeen(ch, seq);
        if (!this.socketsQuiet()) {
          ch.seen = seq; // the next round answers it, after the poll phase
          return;
        }
        this.serveChannel(ch, seq, true);
        served = true;
      }
      // The clock is read every few rounds while nothing comes (a read costs about as much as a round).
      if (!served && (i & 7) !== 7) continue;
      const now = performance.now();
      // A client calling in a loop is back within a few microseconds; yield (for a client that
      // shares our CPU) only once it is late, or its request waits for the end of a system call.
      if (!served && now - (deadline - waitMs) > YIELD_AFTER_MS) this.yieldCpu();
      if (served) deadline = now + waitMs;
      if (now >= deadline || now - start >= SERVE_SLICE_MS) return;
    }
  }

  /**
   * Polling with nothing to do: let a client that shares our CPU run. A socket wake-up (a
   * doorbell) places the woken daemon on the waker's CPU, and a client then waiting for its
   * answer awake would otherwise wait for our time slice to end (hundreds of microseconds) while
   * the other CPU idles.
   */
  private yieldCpu(): void {
    this.yielder ??= (this.options.yieldCpu !== false && process.env.IOMMUFD_TS_YIELD !== '0' && nativeHelper()?.yield) || null;
    if (!this.yielder) return;
    this.yielder();
    this.stats.yields++;
  }

  private yielder: (() => number) | null | undefined;

  /**
   * How many clients the daemon is serving now, as published to them (a client spins for its
   * answer only while it is alone): the polled channels with a request in the last 100 µs. A
   * channel polled because it was active a moment ago does not compete (a test harness's previous
   * child, a process between bursts); counting it made every new client ring.
   */
  private busy(): number {
    const now = performance.now();
    let n = 0;
    for (const ch of this.polled) if (now - ch.lastRequest < BUSY_WINDOW_MS) n++;
    return n;
  }

  private markSeen(ch: Channel, seq: number): void {
    try {
      ch.markSeen(seq);
    } catch (e) {
      this.dropChannel(ch, e);
    }
  }

  /**
   * The channel's request number, or the last one answered when there is nothing new (0: the
   * client is writing a new request); a channel that cannot be read any more is dropped.
   */
  private peek(ch: Channel): number {
    try {
      return ch.requestSeq() || ch.answered;
    } catch (e) {
      this.dropChannel(ch, e);
      return ch.answered;
    }
  }

  private closeChannel(ch: Channel): void {
    ch.close();
    this.polled.delete(ch);
    if (this.channels.get(ch.task) === ch) this.channels.delete(ch.task);
  }

  /** Close the channels of processes that have exited or exec'd. */
  private sweepChannels(): void {
    for (const ch of [...this.channels.values()]) if (!ch.task.alive()) this.closeChannel(ch);
  }

  /** A channel that misbehaved: the client is told to ring (then finds no channel and uses its socket). */
  private dropChannel(ch: Channel, e: unknown): void {
    this.log(`process ${ch.task.pid}: fast channel dropped: ${e instanceof Error ? e.message : String(e)}`);
    try {
      ch.setPolled(false, 0);
    } catch {
      /* unreadable */
    }
    this.closeChannel(ch);
  }

  /** Answer request `seq` of a channel (one the tick or a doorbell found). */
  private serveChannel(ch: Channel, seq: number, atOnce = false): void {
    let conn: Conn | undefined;
    let req: IoctlRequest;
    try {
      const r = ch.readIoctl(seq);
      // The client gave up on it (its doorbell failed) and is writing its next request: nothing to answer.
      if (!r) return;
      conn = this.byIno.get(r.ino);
      if (!conn && this.dropped.has(r.ino)) {
        // The socket path fails the same call with a transport error (EIO in the shim).
        this.stats.requests++;
        ch.answerResult(seq, { ret: -Errno.EIO }, this.busy());
        this.trace(formatCall(ch.task.pid, `ioctl on fd ${r.fd}`, -Errno.EIO, `the daemon dropped this file's connection (a protocol error)`));
        return;
      }
      if (!conn || conn.released || conn.rejected || !conn.hello || !this.holds(conn, ch.task, r.fd, r.ino)) {
        this.stats.requests++;
        ch.answerResult(seq, { ret: -Errno.EBADF }, this.busy());
        this.trace(formatCall(ch.task.pid, `ioctl on fd ${r.fd}`, -Errno.EBADF, `fd ${r.fd} of process ${ch.task.pid} is not an emulated file it holds`));
        return;
      }
      req = r.decode();
    } catch (e) {
      this.dropChannel(ch, e);
      return;
    }
    this.stats.requests++;
    this.stats.channelRequests++;
    if (atOnce) this.stats.servedAtOnce++;
    const rt = this.replyTo;
    rt.ch = ch;
    rt.seq = seq;
    rt.sent = false;
    try {
      this.ioctl(conn, req, ch.task);
    } catch (e) {
      this.dropConn(conn, e);
    } finally {
      rt.ch = null;
      if (!rt.sent && !ch.closed) {
        try {
          ch.answerResult(seq, { ret: -Errno.EIO }, this.busy());
        } catch (e2) {
          this.dropChannel(ch, e2);
        }
      }
    }
    this.checkWakes();
  }

  /** Whether `task` may call through `conn`: it opened it, or /proc says it holds the socket. */
  private holds(conn: Conn, task: HostTask, fd: number, ino: bigint): boolean {
    if (conn.opener === task || conn.heldBy === task) return true;
    let link = '';
    try {
      link = fs.readlinkSync(`/proc/${task.pid}/fd/${fd}`);
    } catch {
      link = '';
    }
    if (link !== `socket:[${ino}]`) return false;
    conn.heldBy = task;
    return true;
  }

  /** The RESULT of the request being handled: into its channel, or onto its socket. */
  private reply(conn: Conn, result: ResultFrame): void {
    const r = this.replyTo;
    if (!r.ch) {
      this.send(conn, encodeResult(result));
      return;
    }
    r.sent = true;
    try {
      r.ch.answerResult(r.seq, result, this.busy());
    } catch (e) {
      this.dropChannel(r.ch, e);
    }
  }

  private channelOpen(conn: Conn, payload: Buffer): void {
    const c = decodeChannelOpen(payload);
    let status = 0;
    try {
      const task = this.procs.authenticate(c.auth.pid, c.auth.secretAddr, c.auth.secret);
      // Its own connection, or (after exec, same pid) one /proc says it holds at that fd.
      if (!conn.hello || !this.holds(conn, task, c.sockFd, conn.hello.ino))
        throw new IommuError(Errno.EPERM, `process ${task.pid} asks for a channel over a connection it does not hold (fd ${c.sockFd})`);
      if (this.channels.size >= 16) this.sweepChannels();
      const ch = Channel.open(task, c.memfd, c.size, this.options.mapChannels ?? true);
      const old = this.channels.get(task);
      if (old) this.dropChannel(old, new Error('replaced by a new channel'));
      this.channels.set(task, ch);
      this.stats.channels++;
      // Its first request follows at once: poll it from now on, so that it needs no doorbell.
      ch.lastRequest = performance.now();
      this.polled.add(ch);
      ch.setPolled(true, this.busy());
      this.trace(formatCall(task.pid, `channel(fd ${c.memfd})`, 0));
    } catch (e) {
      status = e instanceof IommuError ? -e.errno : -Errno.EINVAL;
      this.log(`connection ${conn.id}: channel refused: ${e instanceof IommuError ? e.explanation : e instanceof Error ? e.message : String(e)}`);
    }
    this.send(conn, encodeAck(status));
  }

  private doorbell(conn: Conn, payload: Buffer): void {
    const d = decodeDoorbell(payload);
    this.stats.doorbells++;
    let task: HostTask;
    try {
      task = this.procs.authenticate(d.auth.pid, d.auth.secretAddr, d.auth.secret);
    } catch (e) {
      if (!(e instanceof IommuError)) throw e;
      this.send(conn, encodeDone(-e.errno, d.seq));
      return;
    }
    const ch = this.channels.get(task);
    if (!ch || ch.closed) {
      this.send(conn, encodeDone(-Errno.ENXIO, d.seq));
      return;
    }
    // Poll its channel for a while from now on (it is talking), unless it asked not to: set
    // before the answer is stored, so that its next call, right after, already sees it.
    if (d.noPoll) {
      ch.setPolled(false, this.busy());
      this.polled.delete(ch);
    } else {
      ch.lastRequest = performance.now();
      if (!this.polled.has(ch)) {
        this.polled.add(ch);
        ch.setPolled(true, this.busy());
      }
    }
    if (ch.answered !== d.seq) {
      const seq = this.peek(ch);
      if (seq === d.seq) {
        ch.seen = 0;
        this.serveChannel(ch, seq);
      }
    }
    if (ch.closed || ch.answered !== d.seq) {
      this.send(conn, encodeDone(-Errno.EIO, d.seq));
      return;
    }
    this.send(conn, encodeDone(0, d.seq));
  }

  private dropConn(conn: Conn, e: unknown): void {
    if (e instanceof ProtocolError) {
      this.stats.protocolErrors++;
      this.log(`connection ${conn.id}: protocol error: ${e.message}; dropping it`);
    } else {
      this.internalErrors.push(e);
      lockdep.resetHeld();
      this.log(`connection ${conn.id}: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    }
    const ino = conn.hello?.ino;
    if (ino !== undefined) {
      this.dropped.add(ino);
      if (this.dropped.size > DROPPED_KEPT) this.dropped.delete(this.dropped.values().next().value!);
    }
    this.release(conn, 'protocol error');
    conn.socket.destroy();
  }

  /** Socket inodes of connections dropped for protocol errors (the newest DROPPED_KEPT). */
  private readonly dropped = new Set<bigint>();

  private send(conn: Conn, buf: Buffer): void {
    if (conn.socket.destroyed || !conn.socket.writable) return;
    conn.socket.write(buf);
  }

  private handle(conn: Conn, type: number, payload: Buffer): void {
    this.stats.requests++;
    if (!conn.hello) {
      if (type !== FrameType.HELLO) throw new ProtocolError(`first frame has type ${type}, not HELLO`);
      this.hello(conn, decodeHello(payload));
      return;
    }
    conn.wakePending = false;
    switch (type) {
      case FrameType.IOCTL:
        this.ioctl(conn, decodeIoctl(payload));
        return;
      case FrameType.READ:
      case FrameType.WRITE:
        this.readWrite(conn, type, payload);
        return;
      case FrameType.POLL:
        this.poll(conn, payload);
        return;
      case FrameType.CHANNEL:
        this.channelOpen(conn, payload);
        return;
      case FrameType.DOORBELL:
        this.doorbell(conn, payload);
        return;
      default:
        throw new ProtocolError(`unexpected frame type ${type}`);
    }
  }

  private reject(conn: Conn, errno: number, why: string): void {
    this.stats.rejected++;
    this.log(`connection ${conn.id} rejected: ${why}`);
    this.trace(formatCall(conn.hello?.pid ?? 0, 'connect', -errno, why));
    conn.rejected = true;
    this.send(conn, encodeAck(-errno));
    conn.socket.end();
  }

  private hello(conn: Conn, h: Hello): void {
    conn.hello = h;
    if (h.kind !== ConnKind.IOMMU && h.kind !== ConnKind.VFIO && h.kind !== ConnKind.SPARE && h.kind !== ConnKind.ATTACH) {
      this.reject(conn, Errno.EINVAL, `unknown connection kind ${h.kind}`);
      return;
    }
    try {
      conn.opener = this.procs.authenticate(h.pid, h.secretAddr, h.secret);
    } catch (e) {
      if (!(e instanceof IommuError)) throw e;
      this.reject(conn, e.errno, e.explanation);
      return;
    }
    if (h.uid !== this.procs.uid) {
      this.reject(conn, Errno.EACCES, `client claims uid ${h.uid}; this daemon serves uid ${this.procs.uid} only`);
      return;
    }
    // The process must hold this very socket: its fd names the inode the shim announced.
    let link = '';
    try {
      link = fs.readlinkSync(`/proc/${h.pid}/fd/${h.fd}`);
    } catch {
      link = '';
    }
    if (link !== `socket:[${h.ino}]` || this.byIno.has(h.ino)) {
      this.reject(conn, Errno.EPERM, `fd ${h.fd} of process ${h.pid} is "${link}", not the socket:[${h.ino}] announced`);
      return;
    }
    this.byIno.set(h.ino, conn);
    if (h.kind === ConnKind.SPARE) {
      if (h.token === 0n || this.spares.has(h.token)) {
        this.reject(conn, Errno.EINVAL, 'spare connection without a fresh token');
        return;
      }
      this.spares.set(h.token, conn);
    } else if (h.kind === ConnKind.ATTACH) {
      // Join the file behind the caller's fd `attachFd`, which must hold socket `token`.
      let held = '';
      try {
        held = fs.readlinkSync(`/proc/${h.pid}/fd/${h.attachFd}`);
      } catch {
        held = '';
      }
      const old = this.byIno.get(h.token);
      if (held !== `socket:[${h.token}]` || !old || old.released || !old.bound) {
        this.byIno.delete(h.ino);
        this.reject(conn, Errno.EBADF, `fd ${h.attachFd} of process ${h.pid} ("${held}") is not an emulated file to attach to`);
        return;
      }
      conn.bound = old.bound;
      conn.bound.conns++;
      if (conn.bound.kind === 'file' && conn.bound.file.poll) this.pollable.add(conn);
      this.trace(formatCall(h.pid, `attach(${conn.name}, fd ${h.attachFd})`, 0));
    } else {
      conn.bound = { kind: 'ctx', ctx: new IommufdCtx('iommufd', h.kind === ConnKind.VFIO), conns: 1 };
      this.trace(formatCall(h.pid, `open("${h.kind === ConnKind.VFIO ? '/dev/vfio/vfio' : '/dev/iommu'}")`, h.fd));
    }
    conn.counted = true;
    this.connsOf.set(conn.opener, (this.connsOf.get(conn.opener) ?? 0) + 1);
    this.send(conn, encodeAck(0));
  }

  /**
   * The task behind a request, or undefined after answering it with the refusal (`what` names the
   * request in that explanation: a string, or an ioctl command number).
   */
  private who(conn: Conn, auth: Auth, what: string | number, expected?: HostTask): HostTask | undefined {
    try {
      const task = this.procs.authenticate(auth.pid, auth.secretAddr, auth.secret);
      if (expected && task !== expected) throw new IommuError(Errno.EPERM, `a request of process ${task.pid} in the channel of process ${expected.pid}`);
      this.procs.memory.beginRequest(task.mm, auth.gen);
      task.mm.requesting();
      return task;
    } catch (e) {
      if (!(e instanceof IommuError)) throw e;
      this.stats.rejected++;
      const name = typeof what === 'number' ? `ioctl 0x${what.toString(16)}` : what;
      this.log(`connection ${conn.id}: ${name} refused: ${e.explanation}`);
      this.trace(formatCall(auth.pid, name, -e.errno, e.explanation));
      this.reply(conn, { ret: -e.errno });
      return undefined;
    }
  }

  private ioctl(conn: Conn, r: IoctlRequest, channelTask?: HostTask): void {
    this.stats.ioctls++;
    const task = this.who(conn, r.auth, r.cmd, channelTask);
    if (!task) return;
    const user = new InlineUser(task.mm, r.arg, r.inline, r.writableLen, r.window);
    const fds = new RequestFds(this, task, r);
    let ret: number;
    let explanation: string | undefined;
    const b = conn.bound;
    if (!b || b.kind !== 'ctx') {
      ret = -Errno.ENOTTY;
      explanation = `${conn.name} has no ioctls`;
    } else {
      ret = iommufdIoctl(b.ctx, task, r.cmd, r.arg, user, fds, this.opts);
      if (ret < 0) explanation = b.ctx.lastError?.explanation;
    }
    if (r.spareToken) this.spares.delete(r.spareToken);
    const dirty = user.dirty();
    const winDirty = user.windowDirty();
    const installed = fds.installed;
    this.reply(conn, {
      ret,
      dirtyOff: dirty?.off,
      dirty: dirty?.bytes,
      newFd: installed ? installed.fd : -1,
      newFdCloexec: installed?.cloexec,
      winDirtyOff: winDirty?.off,
      winDirty: winDirty?.bytes,
    });
    if (this.options.trace)
      this.trace(formatIoctl({ pid: task.pid, cmd: r.cmd, arg: r.arg, before: r.inline, after: user.current, ret, explanation }));
  }

  private readWrite(conn: Conn, type: number, payload: Buffer): void {
    const r = decodeRw(payload);
    const op = type === FrameType.READ ? 'read' : 'write';
    const task = this.who(conn, r.auth, op);
    if (!task) return;
    const count = r.count > BigInt(MAX_RW_COUNT) ? MAX_RW_COUNT : Number(r.count);
    let ret: number;
    let explanation: string | undefined;
    const b = conn.bound;
    const file = b?.kind === 'file' ? b.file : undefined;
    const fn = file ? (type === FrameType.READ ? file.read : file.write) : undefined;
    if (!file || !fn) {
      ret = -Errno.EINVAL;
      explanation = `${conn.name} does not support ${op}`;
    } else {
      try {
        ret = fn.call(file, task.mm, r.addr, count);
      } catch (e) {
        ({ ret, explanation } = this.fileError(e, op));
      }
    }
    this.send(conn, encodeResult({ ret }));
    this.trace(formatCall(task.pid, `${op}(${conn.name}, 0x${r.addr.toString(16)}, ${count})`, ret, explanation));
  }

  private poll(conn: Conn, payload: Buffer): void {
    const r = decodePoll(payload);
    const task = this.who(conn, r.auth, 'poll');
    if (!task) return;
    const b = conn.bound;
    let ret: number;
    let explanation: string | undefined;
    try {
      ret = b?.kind === 'file' && b.file.poll ? b.file.poll() : DEFAULT_POLLMASK;
    } catch (e) {
      ({ ret, explanation } = this.fileError(e, 'poll'));
    }
    this.send(conn, encodeResult({ ret }));
    this.trace(formatCall(task.pid, `poll(${conn.name}, 0x${r.events.toString(16)})`, ret, explanation));
  }

  private fileError(e: unknown, op: string): { ret: number; explanation: string } {
    if (e instanceof IommuError) return { ret: -e.errno, explanation: e.explanation };
    this.internalErrors.push(e);
    lockdep.resetHeld();
    const msg = e instanceof Error ? e.message : String(e);
    this.log(`internal error in ${op}: ${msg}`);
    return { ret: -Errno.ENOTRECOVERABLE, explanation: `internal emulator error in ${op}: ${msg}` };
  }

  /** Bind a spare connection to a file created by an ioctl. */
  bindSpare(token: bigint, pid: number, fd: number, file: EmulatedFile): boolean {
    const spare = this.spares.get(token);
    if (!spare || spare.released || spare.bound || !spare.hello || spare.hello.pid !== pid || spare.hello.fd !== fd) return false;
    spare.bound = { kind: 'file', file, conns: 1 };
    if (file.poll) this.pollable.add(spare);
    return true;
  }

  unbindSpare(token: bigint): EmulatedFile | undefined {
    const spare = this.spares.get(token);
    if (!spare || spare.bound?.kind !== 'file') return undefined;
    const f = spare.bound.file;
    spare.bound = null;
    this.pollable.delete(spare);
    return f;
  }

  /** The emulated file behind fd `fd` of process `pid`, found through the kernel (/proc/pid/fd). */
  fileOfFd(pid: number, fd: number, task?: HostTask, inoHint?: number): EmulatedFile | undefined {
    if (task && inoHint) {
      // The shim's fstat of that fd: believed for connections this very task opened (so it held
      // the socket); anything else is looked up through /proc.
      const conn = this.byIno.get(BigInt(inoHint));
      if (conn && conn.opener === task && !conn.released && conn.bound?.kind === 'file') return conn.bound.file;
    }
    let link: string;
    try {
      link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return undefined;
    }
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (!m) return undefined;
    const conn = this.byIno.get(BigInt(m[1]!));
    return conn && !conn.released && conn.bound?.kind === 'file' ? conn.bound.file : undefined;
  }

  /** Files that became readable get a WAKE frame, so a real poll/epoll on their socket wakes up. */
  private checkWakes(): void {
    for (const c of this.pollable) {
      if (c.wakePending || c.released || c.bound?.kind !== 'file') continue;
      let mask = 0;
      try {
        mask = c.bound.file.poll?.() ?? 0;
      } catch {
        mask = 0;
      }
      if (mask & POLLIN) {
        c.wakePending = true;
        this.send(c, WAKE_FRAME);
      }
    }
  }

  private release(conn: Conn, why: string): void {
    if (conn.released) return;
    conn.released = true;
    this.conns.delete(conn);
    this.socketFds = null;
    this.stats.open--;
    this.pollable.delete(conn);
    const h = conn.hello;
    if (h) {
      if (this.byIno.get(h.ino) === conn) this.byIno.delete(h.ino);
      if (this.spares.get(h.token) === conn) this.spares.delete(h.token);
    }
    if (conn.counted && conn.opener) {
      // The opener's last connection: its process has exited, exec'd or closed every file.
      conn.counted = false;
      const left = (this.connsOf.get(conn.opener) ?? 1) - 1;
      if (left > 0) this.connsOf.set(conn.opener, left);
      else {
        this.connsOf.delete(conn.opener);
        const ch = this.channels.get(conn.opener);
        // A live process keeps its channel for the files it may open next.
        if (ch && !conn.opener.alive()) this.closeChannel(ch);
      }
    }
    const b = conn.bound;
    conn.bound = null;
    if (!b) return;
    // Another process's connection to the same file keeps it open.
    if (--b.conns > 0) return;
    this.trace(formatCall(h?.pid ?? 0, `release(${b.kind === 'ctx' ? '/dev/iommu' : b.file.name}) [${why}]`, 0));
    try {
      if (b.kind === 'ctx') b.ctx.put();
      else b.file.release();
    } catch (e) {
      this.internalErrors.push(e);
      lockdep.resetHeld();
      this.log(`internal error releasing connection ${conn.id}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    }
    this.checkWakes();
  }
}

/** The caller's fd table during one ioctl: new files go to the shim's spare connection. */
class RequestFds implements FdTable {
  installed: { fd: number; cloexec: boolean; file: EmulatedFile } | undefined;

  constructor(
    private readonly server: IommufdServer,
    private readonly task: HostTask,
    private readonly req: IoctlRequest,
  ) {}

  install(file: EmulatedFile, cloexec: boolean): number {
    if (this.installed || !this.req.spareToken || !this.server.bindSpare(this.req.spareToken, this.task.pid, this.req.spareFd, file))
      throw new IommuError(Errno.EMFILE, `no spare connection from the shim to carry a new ${file.name} fd`);
    this.installed = { fd: this.req.spareFd, cloexec, file };
    return this.req.spareFd;
  }

  get(fd: number): EmulatedFile | undefined {
    const hint = this.req.idIno && this.req.inline.length >= 12 && this.req.inline.readUInt32LE(8) === fd ? this.req.idIno : undefined;
    return this.server.fileOfFd(this.task.pid, fd, this.task, hint);
  }

  remove(fd: number): EmulatedFile | undefined {
    if (!this.installed || this.installed.fd !== fd) return undefined;
    this.installed = undefined;
    return this.server.unbindSpare(this.req.spareToken);
  }
}

export { errnoName };
