/**
 * Host processes as iommufd sees them (the Task interface of src/mm/types.ts): pid, the uid's
 * accounting record (one UserStruct per uid in the daemon), effective capabilities and
 * RLIMIT_MEMLOCK read from /proc/<pid>/status and /proc/<pid>/limits, and the address space.
 *
 * Who is asking: every request carries the caller's pid and the address and value of a random
 * secret the shim keeps in its own memory. The daemon reads that address through /proc/<pid>/mem:
 * only the process itself (or one able to write its memory) can make them agree. A process is
 * then known by (pid, secret); a new secret under a known pid means a new mm (exec) and the old
 * one is dead. Liveness also needs the /proc/<pid>/mem fd to still reach the secret.
 */
import * as fs from 'node:fs';
import { sameBytes } from '../lib/bytes.js';
import { Errno } from '../lib/errno.js';
import { IommuError } from '../lib/error.js';
import { RLIM_INFINITY, type Capability, type Task, type UserStruct } from '../mm/types.js';
import { HostMemory, HostMm, TASK_SIZE } from './host-memory.js';
import { readProcText } from './procfs.js';

const CAP_BITS: Record<Capability, number> = {
  CAP_IPC_LOCK: 14,
  CAP_SYS_RAWIO: 17,
  CAP_SYS_RESOURCE: 24,
};

/** Fields of /proc/<pid>/status (Uid, CapEff) and the start time from /proc/<pid>/stat. */
export interface ProcStatus {
  uid: number;
  euid: number;
  capEff: bigint;
}

export function readStatus(pid: number): ProcStatus {
  const text = readProcText(`/proc/${pid}/status`);
  let uid = -1;
  let euid = -1;
  let capEff = 0n;
  for (const line of text.split('\n')) {
    if (line.startsWith('Uid:')) {
      const f = line.slice(4).trim().split(/\s+/);
      uid = Number(f[0]);
      euid = Number(f[1]);
    } else if (line.startsWith('CapEff:')) {
      capEff = BigInt('0x' + line.slice(7).trim());
    }
  }
  return { uid, euid, capEff };
}

/** Field 22 of /proc/<pid>/stat: the start time in clock ticks after boot (pid reuse detection). */
export function readStartTime(pid: number): bigint | undefined {
  try {
    const s = readProcText(`/proc/${pid}/stat`);
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); starttime is field 22.
    if (rest[0] === 'Z' || rest[0] === 'X') return undefined;
    return BigInt(rest[19]!);
  } catch {
    return undefined;
  }
}

/** RLIMIT_MEMLOCK (soft) in bytes from /proc/<pid>/limits. */
export function readMemlock(pid: number): bigint {
  const text = readProcText(`/proc/${pid}/limits`);
  for (const line of text.split('\n')) {
    if (!line.startsWith('Max locked memory')) continue;
    const soft = line.slice('Max locked memory'.length).trim().split(/\s+/)[0]!;
    return soft === 'unlimited' ? RLIM_INFINITY : BigInt(soft);
  }
  return RLIM_INFINITY;
}

export class HostUser implements UserStruct {
  lockedVm = 0;
  constructor(readonly uid: number) {}
}

/** A host process (thread group) while it runs one mm. */
export class HostTask implements Task {
  private statusEpoch = -1;
  private status: ProcStatus | undefined;

  constructor(
    private readonly memory: HostMemory,
    readonly pid: number,
    readonly user: HostUser,
    readonly mm: HostMm,
    readonly startTime: bigint | undefined,
    readonly secretAddr: bigint,
    readonly secret: Buffer,
    /** Capabilities the daemon was told to grant every client (`--cap`), whatever CapEff says. */
    private readonly granted: ReadonlySet<Capability> = new Set(),
  ) {}

  /** Still this process: the pid has not been reused and the mm is the one we verified. */
  alive(): boolean {
    return this.mm.alive() && readStartTime(this.pid) === this.startTime;
  }

  private currentStatus(): ProcStatus | undefined {
    // Cached across requests while the requester's state generation is unchanged.
    if (!this.mm.stillValid(this.statusEpoch)) {
      try {
        this.status = readStatus(this.pid);
      } catch {
        this.status = undefined;
      }
      this.statusEpoch = this.memory.epoch;
    }
    return this.status;
  }

  capable(cap: Capability): boolean {
    if (this.granted.has(cap)) return true;
    const s = this.currentStatus();
    return s !== undefined && ((s.capEff >> BigInt(CAP_BITS[cap])) & 1n) === 1n;
  }

  rlimitMemlock(): bigint {
    if (!this.mm.stillValid(this.memlockEpoch)) {
      try {
        this.memlock = readMemlock(this.pid);
      } catch {
        this.memlock = 0n;
      }
      this.memlockEpoch = this.memory.epoch;
    }
    return this.memlock;
  }

  private memlock = 0n;
  private memlockEpoch = -1;
}

export interface HostProcessesOptions {
  /** The only effective uid allowed to connect (default: the daemon's own). */
  uid?: number;
  /**
   * Capabilities every client holds as far as the emulated kernel is concerned, although its
   * process does not (for users without root who want the privileged paths, e.g. setting
   * IOMMU_OPTION_RLIMIT_MODE, which needs CAP_SYS_RESOURCE). Default: none; CapEff decides.
   */
  grantCaps?: readonly Capability[];
}

/** The capabilities `--cap` can grant: the ones the emulated kernel checks. */
export const GRANTABLE_CAPS: readonly Capability[] = Object.keys(CAP_BITS) as Capability[];

/** The daemon's view of every client process: authentication, tasks by pid, users by uid. */
export class HostProcesses {
  readonly memory = new HostMemory();
  private readonly tasks = new Map<number, HostTask>();
  private readonly users = new Map<number, HostUser>();
  readonly uid: number;
  private authCount = 0;

  private readonly granted: ReadonlySet<Capability>;

  constructor(opts: HostProcessesOptions = {}) {
    this.uid = opts.uid ?? process.geteuid?.() ?? 0;
    this.granted = new Set(opts.grantCaps ?? []);
  }

  user(uid: number): HostUser {
    let u = this.users.get(uid);
    if (!u) {
      u = new HostUser(uid);
      this.users.set(uid, u);
    }
    return u;
  }

  get taskCount(): number {
    return this.tasks.size;
  }

  /**
   * The task that sent a request claiming (pid, secret at secretAddr), or an EPERM/EACCES
   * IommuError. Known processes cost one map lookup; a new one is verified through /proc.
   */
  authenticate(pid: number, secretAddr: bigint, secret: Buffer): HostTask {
    const known = this.tasks.get(pid);
    if (known && known.secretAddr === secretAddr && sameBytes(known.secret, secret)) return known;
    return this.verify(pid, secretAddr, secret);
  }

  private verify(pid: number, secretAddr: bigint, secret: Buffer): HostTask {
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new IommuError(Errno.EPERM, `pid ${pid} is not a process id`);
    if (++this.authCount % 64 === 0) this.sweep();
    let status: ProcStatus;
    try {
      status = readStatus(pid);
    } catch {
      throw new IommuError(Errno.EPERM, `process ${pid} does not exist`);
    }
    if (status.euid !== this.uid)
      throw new IommuError(
        Errno.EACCES,
        `process ${pid} runs as uid ${status.uid} (euid ${status.euid}); this daemon serves uid ${this.uid} only`,
      );
    let memFd: number;
    try {
      memFd = fs.openSync(`/proc/${pid}/mem`, fs.constants.O_RDWR);
    } catch (e) {
      throw new IommuError(Errno.EPERM, `cannot open /proc/${pid}/mem: ${(e as Error).message}`);
    }
    const buf = Buffer.alloc(secret.length);
    let n = 0;
    try {
      n = secretAddr < TASK_SIZE ? fs.readSync(memFd, buf, 0, buf.length, Number(secretAddr)) : 0;
    } catch {
      n = 0;
    }
    if (n !== buf.length || !buf.equals(secret)) {
      fs.closeSync(memFd);
      throw new IommuError(Errno.EPERM, `process ${pid} does not hold the secret it claims at ${'0x' + secretAddr.toString(16)}: not its request`);
    }
    const old = this.tasks.get(pid);
    if (old) old.mm.markDead(); // same pid, new secret: exec'd (or the old process is gone)
    const mm = new HostMm(this.memory, pid, memFd, secretAddr, Buffer.from(secret));
    const task = new HostTask(this.memory, pid, this.user(status.uid), mm, readStartTime(pid), secretAddr, Buffer.from(secret), this.granted);
    this.tasks.set(pid, task);
    return task;
  }

  /** Drop exited processes from the table (their objects keep their own references). */
  sweep(): void {
    for (const [pid, t] of this.tasks) {
      if (!t.mm.alive()) this.tasks.delete(pid);
    }
  }

  dispose(): void {
    for (const t of this.tasks.values()) t.mm.markDead();
    this.tasks.clear();
    this.memory.dispose();
  }
}
