/**
 * A simulated process (the Task iommufd sees): pid, credentials, RLIMIT_MEMLOCK and an address
 * space, plus the system calls a program uses on its memory (mmap, munmap, mprotect, fork, exit)
 * and its plain loads and stores (readMem, writeMem).
 */
import { fail } from '../lib/error.js';
import type { SimFile } from './file.js';
import type { MappingInfo, SimMm } from './mm.js';
import {
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_HUGETLB,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
} from './mman.js';
import { RLIM_INFINITY, type Capability, type Task, type UserStruct } from './types.js';

/** Default RLIMIT_MEMLOCK: 8 MiB, as on current Linux distributions. */
export const DEFAULT_RLIMIT_MEMLOCK = 8n * 1024n * 1024n;

/** The per-uid record shared by all processes of a uid. */
export class SimUser implements UserStruct {
  lockedVm = 0;
  constructor(readonly uid: number) {}
}

/** Options of the convenience mappers. */
export interface MapOptions {
  /** PROT_* bits; default PROT_READ | PROT_WRITE. */
  prot?: number;
  /** MAP_SHARED instead of MAP_PRIVATE (default: private). */
  shared?: boolean;
  /** MAP_HUGETLB (anonymous only; a hugetlbfs file is huge by itself). */
  hugetlb?: boolean;
  /** MAP_POPULATE. */
  populate?: boolean;
  /** With `fixed`, the exact address (MAP_FIXED); otherwise a hint. */
  addr?: bigint;
  fixed?: boolean;
  /** File offset in bytes (file mappings). */
  offset?: bigint | number;
}

/** The machine services a process needs (implemented by SimMachine). */
export interface ProcessHost {
  forkProcess(parent: SimProcess): SimProcess;
  processExited(p: SimProcess): void;
}

export class SimProcess implements Task {
  private readonly caps: Set<Capability>;
  private memlock: bigint;
  private exited = false;

  constructor(
    private readonly host: ProcessHost,
    readonly pid: number,
    readonly user: SimUser,
    readonly mm: SimMm,
    caps: Iterable<Capability>,
    memlock: bigint,
    readonly name: string,
    /** The process that forked this one. */
    readonly parent: SimProcess | undefined,
  ) {
    this.caps = new Set(caps);
    this.memlock = memlock;
  }

  get uid(): number {
    return this.user.uid;
  }

  /** Still running (exit() not called). */
  alive(): boolean {
    return !this.exited;
  }

  // -- credentials and limits -----------------------------------------------------------------

  capable(cap: Capability): boolean {
    return this.caps.has(cap);
  }

  capabilities(): Capability[] {
    return [...this.caps].sort();
  }

  grant(...caps: Capability[]): this {
    for (const c of caps) this.caps.add(c);
    return this;
  }

  revoke(...caps: Capability[]): this {
    for (const c of caps) this.caps.delete(c);
    return this;
  }

  rlimitMemlock(): bigint {
    return this.memlock;
  }

  /** setrlimit(RLIMIT_MEMLOCK) in bytes; RLIM_INFINITY for unlimited. */
  setRlimitMemlock(bytes: bigint): void {
    if (bytes < 0n || bytes > RLIM_INFINITY) fail('EINVAL', `RLIMIT_MEMLOCK ${bytes} is not a valid rlimit`);
    this.memlock = bytes;
  }

  // -- memory system calls ----------------------------------------------------------------------

  /** mmap(2) with the kernel's argument conventions; see SimMm.mmap. */
  mmap(addr: bigint, length: bigint | number, prot: number, flags: number, file?: SimFile, offset?: bigint | number): bigint {
    this.requireRunning('mmap');
    return this.mm.mmap(addr, length, prot, flags, file, offset);
  }

  /** Anonymous memory: private by default, `shared: true` for MAP_SHARED (shmem). */
  mapAnonymous(length: bigint | number, opts: MapOptions = {}): bigint {
    let flags = MAP_ANONYMOUS | (opts.shared ? MAP_SHARED : MAP_PRIVATE);
    if (opts.hugetlb) flags |= MAP_HUGETLB;
    return this.mmap(opts.addr ?? 0n, length, opts.prot ?? PROT_READ | PROT_WRITE, this.commonFlags(flags, opts));
  }

  /** A file mapping: MAP_SHARED shares the file's pages, MAP_PRIVATE copies on write. */
  mapFile(file: SimFile, length: bigint | number, opts: MapOptions = {}): bigint {
    const flags = opts.shared ? MAP_SHARED : MAP_PRIVATE;
    return this.mmap(opts.addr ?? 0n, length, opts.prot ?? PROT_READ | PROT_WRITE, this.commonFlags(flags, opts), file, opts.offset ?? 0n);
  }

  munmap(addr: bigint, length: bigint | number): void {
    this.requireRunning('munmap');
    this.mm.munmap(addr, length);
  }

  mprotect(addr: bigint, length: bigint | number, prot: number): void {
    this.requireRunning('mprotect');
    this.mm.mprotect(addr, length, prot);
  }

  /** A load by the program: MemoryFault (SIGSEGV/SIGBUS) on a bad address. */
  readMem(addr: bigint, length: number): Uint8Array {
    this.requireRunning('readMem');
    return this.mm.readMem(addr, length);
  }

  /** A store by the program: faults pages in, breaks copy-on-write; MemoryFault on a bad address. */
  writeMem(addr: bigint, data: Uint8Array): void {
    this.requireRunning('writeMem');
    this.mm.writeMem(addr, data);
  }

  /** /proc/<pid>/maps. */
  maps(): MappingInfo[] {
    return this.mm.mappings();
  }

  // -- process lifecycle --------------------------------------------------------------------------

  /** fork(2): a child with a copy-on-write copy of the address space and the same credentials. */
  fork(): SimProcess {
    this.requireRunning('fork');
    return this.host.forkProcess(this);
  }

  /** exit(2): the address space goes with its last user; frames pinned by others stay. */
  exit(): void {
    if (this.exited) return;
    this.exited = true;
    this.mm.put();
    this.host.processExited(this);
  }

  toString(): string {
    return `pid ${this.pid} (${this.name}, uid ${this.uid})`;
  }

  private commonFlags(flags: number, opts: MapOptions): number {
    if (opts.populate) flags |= MAP_POPULATE;
    if (opts.fixed) flags |= MAP_FIXED;
    return flags;
  }

  private requireRunning(op: string): void {
    if (this.exited) throw new Error(`${op} by pid ${this.pid}, which has exited`);
  }
}

