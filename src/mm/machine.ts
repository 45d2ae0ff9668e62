/**
 * The simulated machine: physical memory, pid allocation, per-uid user records and the memory
 * file systems (tmpfs/shmem, hugetlbfs). Every id it hands out is a counter, so runs replay.
 */
import { SimFile } from './file.js';
import { PhysicalMemory, type PhysicalMemoryOptions } from './frames.js';
import { SimMm, type MmHost } from './mm.js';
import { DEFAULT_RLIMIT_MEMLOCK, SimProcess, SimUser, type ProcessHost } from './process.js';
import type { Capability } from './types.js';

export interface MachineOptions extends PhysicalMemoryOptions {
  /** First pid handed out (default 100). */
  firstPid?: number;
}

export interface SpawnOptions {
  /** Default 1000. */
  uid?: number;
  /** Default: none (a non-root process without CAP_IPC_LOCK, whose pins are accounted). */
  capabilities?: Iterable<Capability>;
  /** RLIMIT_MEMLOCK in bytes; default 8 MiB; RLIM_INFINITY for unlimited. */
  rlimitMemlock?: bigint;
  /** A label for explanations and the CLI. */
  name?: string;
}

export interface FileOptions {
  name?: string;
  /** Opened O_RDONLY (e.g. an executable). */
  readOnly?: boolean;
}

export class SimMachine implements MmHost, ProcessHost {
  readonly memory: PhysicalMemory;
  private nextPid: number;
  private nextMmId = 1;
  private nextIno = 1;
  private readonly users = new Map<number, SimUser>();
  private readonly procs = new Map<number, SimProcess>();

  constructor(opts: MachineOptions = {}) {
    this.memory = new PhysicalMemory(opts);
    this.nextPid = opts.firstPid ?? 100;
  }

  /** Start a new process with an empty address space. */
  spawn(opts: SpawnOptions = {}): SimProcess {
    const pid = this.nextPid++;
    const mm = new SimMm(this, this.nextMmId++);
    const p = new SimProcess(
      this,
      pid,
      this.user(opts.uid ?? 1000),
      mm,
      opts.capabilities ?? [],
      opts.rlimitMemlock ?? DEFAULT_RLIMIT_MEMLOCK,
      opts.name ?? `proc${pid}`,
      undefined,
    );
    this.procs.set(pid, p);
    return p;
  }

  /** The uid's user record (struct user_struct), created on first use and shared by its processes. */
  user(uid: number): SimUser {
    let u = this.users.get(uid);
    if (!u) {
      u = new SimUser(uid);
      this.users.set(uid, u);
    }
    return u;
  }

  /** A running process by pid. */
  process(pid: number): SimProcess | undefined {
    return this.procs.get(pid);
  }

  /** Running processes, by pid. */
  processes(): SimProcess[] {
    return [...this.procs.values()];
  }

  /** A named tmpfs file (or memfd) of `size` bytes; it lives until unlink(). */
  createShmemFile(size: bigint | number, opts: FileOptions = {}): SimFile {
    const ino = this.nextIno++;
    return new SimFile(this.memory, ino, opts.name ?? `/dev/shm/file${ino}`, Number(size), { readOnly: opts.readOnly ?? false });
  }

  /** A named hugetlbfs file; its size is rounded up to 2 MiB. */
  createHugetlbFile(size: bigint | number, opts: FileOptions = {}): SimFile {
    const ino = this.nextIno++;
    return new SimFile(this.memory, ino, opts.name ?? `/dev/hugepages/file${ino}`, Number(size), {
      hugetlb: true,
      readOnly: opts.readOnly ?? false,
    });
  }

  /** @internal MmHost: the unnamed file behind anonymous MAP_SHARED memory. */
  createAnonFile(size: number, hugetlb: boolean): SimFile {
    const name = hugetlb ? 'anon_hugepage (deleted)' : '/dev/zero (deleted)';
    return new SimFile(this.memory, this.nextIno++, name, size, { hugetlb, persistent: false });
  }

  /** @internal ProcessHost */
  forkProcess(parent: SimProcess): SimProcess {
    const pid = this.nextPid++;
    const mm = new SimMm(this, this.nextMmId++);
    parent.mm.forkInto(mm);
    const child = new SimProcess(
      this,
      pid,
      parent.user,
      mm,
      parent.capabilities(),
      parent.rlimitMemlock(),
      parent.name,
      parent,
    );
    this.procs.set(pid, child);
    return child;
  }

  /** @internal ProcessHost */
  processExited(p: SimProcess): void {
    this.procs.delete(p.pid);
  }
}
