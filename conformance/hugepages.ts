/**
 * Huge pages for the 22 selftest cases that mmap MAP_HUGETLB. The oracle VM reserves 128 x 2 MiB;
 * the largest single test (dirty tracking, 128M_huge) needs 64 at once. As root, the driver adds
 * 128 to vm.nr_hugepages for the run and takes exactly those away afterwards, so concurrent runs
 * (and other users of huge pages) do not release pages under each other.
 */
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';

export const WANT_PAGES = 128; // what the oracle VM has
export const NEED_PAGES = 64; // the largest single mapping: 128 MiB of 2 MiB pages

export interface HugepageState {
  available: boolean;
  /** One sentence for the summary. */
  note: string;
  /** Puts vm.nr_hugepages back if this run changed it; idempotent. */
  restore(): string | undefined;
}

function meminfo(): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of readFileSync('/proc/meminfo', 'utf8').split('\n')) {
    const r = /^(\S+):\s+([0-9]+)/.exec(line);
    if (r) m.set(r[1]!, Number(r[2]));
  }
  return m;
}

const NR = '/proc/sys/vm/nr_hugepages';
const LOCK = '/tmp/iommufd-ts-conformance-hugepages.lock';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Holds a host-wide lock (a file with the holder's pid; a dead holder's lock is taken over) from
 * the reservation to the release: two conformance runs on one host take turns, so neither sees
 * its huge pages taken by the other's tests or released under it. Returns the release function,
 * or undefined if the lock could not be had within waitMs.
 */
function acquireRunLock(waitMs: number, log: (s: string) => void): (() => void) | undefined {
  const deadline = Date.now() + waitMs;
  let told = false;
  for (;;) {
    try {
      writeFileSync(LOCK, `${process.pid}\n`, { flag: 'wx' });
      return () => {
        try {
          if (readFileSync(LOCK, 'utf8').trim() === String(process.pid)) unlinkSync(LOCK);
        } catch {
          /* gone */
        }
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return undefined;
    }
    let holder = NaN;
    try {
      holder = Number(readFileSync(LOCK, 'utf8').trim());
    } catch {
      continue; // released meanwhile
    }
    if (!Number.isInteger(holder) || holder <= 0 || !alive(holder)) {
      try {
        unlinkSync(LOCK); // stale: its holder is gone
      } catch {
        /* someone else took it over */
      }
      continue;
    }
    if (Date.now() > deadline) return undefined;
    if (!told) log(`waiting for another conformance run (pid ${holder}) to give back its huge pages (${LOCK})`);
    told = true;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 250);
  }
}

export function prepareHugepages(opts: { reserve: boolean; lockWaitMs?: number; log?: (s: string) => void }): HugepageState {
  const none = (available: boolean, note: string): HugepageState => ({ available, note, restore: () => undefined });
  let info: Map<string, number>;
  try {
    info = meminfo();
  } catch (e) {
    return none(false, `cannot read /proc/meminfo (${(e as Error).message})`);
  }
  const size = info.get('Hugepagesize');
  if (size !== 2048) return none(false, `the default huge page size is ${size ?? '?'} kB, the selftest assumes 2 MiB`);
  const free0 = info.get('HugePages_Free') ?? 0;
  const isRoot = process.getuid?.() === 0;
  if (!opts.reserve || !isRoot) {
    const why = !opts.reserve ? 'reserving was turned off (--no-reserve-hugepages)' : 'not running as root';
    if (free0 >= NEED_PAGES) return none(true, `${free0} free 2 MiB huge pages on this host (${why}; ${NEED_PAGES} suffice)`);
    return none(
      false,
      `only ${free0} free 2 MiB huge pages and ${why}: reserve ${WANT_PAGES} first (sudo sysctl vm.nr_hugepages=${WANT_PAGES})`,
    );
  }
  // As root, always add our own WANT_PAGES on top of whatever is there, and later take away exactly
  // what we added, so pages another user reserved are neither used up nor released under them.
  // Conformance runs on one host take turns from reservation to release (acquireRunLock).
  const unlock = acquireRunLock(opts.lockWaitMs ?? 20 * 60_000, opts.log ?? (() => undefined));
  const lockNote = unlock ? '' : `; without the host-wide lock (${LOCK}): a concurrent run may take them`;
  let added = 0;
  let before = '';
  let writeError = '';
  try {
    before = readFileSync(NR, 'utf8').trim();
    writeFileSync(NR, `${Number(before) + WANT_PAGES}\n`);
    added = Number(readFileSync(NR, 'utf8').trim()) - Number(before);
  } catch (e) {
    writeError = ` (${NR}: ${(e as Error).message})`;
  }
  const free1 = meminfo().get('HugePages_Free') ?? 0;
  let restored = false;
  const restore = (): string | undefined => {
    if (restored) return undefined;
    restored = true;
    let msg: string | undefined;
    if (added > 0) {
      try {
        const now = Number(readFileSync(NR, 'utf8').trim());
        const target = Math.max(0, now - added);
        writeFileSync(NR, `${target}\n`);
        msg = `vm.nr_hugepages back to ${target} (${added} pages added for the run released)`;
      } catch (e) {
        msg = `could not release the ${added} huge pages added to vm.nr_hugepages: ${(e as Error).message}`;
      }
    }
    unlock?.();
    return msg;
  };
  const available = free1 >= NEED_PAGES;
  const note = available
    ? `reserved ${added} x 2 MiB huge pages for the run (vm.nr_hugepages ${before} -> ${Number(before) + added}, ${free1} free; released afterwards${lockNote})`
    : `tried to reserve ${WANT_PAGES} x 2 MiB huge pages but only ${free1} are free (${added} added)${writeError}: memory too fragmented or too small`;
  return { available, note, restore };
}
