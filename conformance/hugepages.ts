/**
 * Huge pages for the 22 selftest cases that mmap MAP_HUGETLB. The oracle VM reserves 128 x 2 MiB;
 * the largest single test (dirty tracking, 128M_huge) needs 64 at once. As root, the driver adds
 * 128 to vm.nr_hugepages for the run and takes exactly those away afterwards, so concurrent runs
 * (and other users of huge pages) do not release pages under each other.
 */
import { mkdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';

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

/** Runs fn holding a host-wide lock (a directory; one older than 30 s is considered stale). */
function withLock(fn: () => void): void {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      mkdirSync(LOCK);
      break;
    } catch {
      try {
        if (Date.now() - statSync(LOCK).mtimeMs > 30_000) rmdirSync(LOCK);
      } catch {
        /* gone meanwhile */
      }
      if (Date.now() > deadline) break; // proceed unlocked rather than hang
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  try {
    fn();
  } finally {
    try {
      rmdirSync(LOCK);
    } catch {
      /* not ours or gone */
    }
  }
}

export function prepareHugepages(opts: { reserve: boolean }): HugepageState {
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
  // what we added: pages another user reserved (or another conformance run, concurrently) are
  // neither used up nor released under them. The read-modify-write of nr_hugepages is serialised
  // between concurrent runs by a lock directory.
  let added = 0;
  let before = '';
  let writeError = '';
  withLock(() => {
    try {
      before = readFileSync(NR, 'utf8').trim();
      writeFileSync(NR, `${Number(before) + WANT_PAGES}\n`);
      added = Number(readFileSync(NR, 'utf8').trim()) - Number(before);
    } catch (e) {
      writeError = ` (${NR}: ${(e as Error).message})`;
    }
  });
  const free1 = meminfo().get('HugePages_Free') ?? 0;
  let restored = false;
  const restore = (): string | undefined => {
    if (added <= 0 || restored) return undefined;
    restored = true;
    let msg = '';
    withLock(() => {
      try {
        const now = Number(readFileSync(NR, 'utf8').trim());
        const target = Math.max(0, now - added);
        writeFileSync(NR, `${target}\n`);
        msg = `vm.nr_hugepages back to ${target} (${added} pages added for the run released)`;
      } catch (e) {
        msg = `could not release the ${added} huge pages added to vm.nr_hugepages: ${(e as Error).message}`;
      }
    });
    return msg;
  };
  const available = free1 >= NEED_PAGES;
  const note = available
    ? `reserved ${added} x 2 MiB huge pages for the run (vm.nr_hugepages ${before} -> ${Number(before) + added}, ${free1} free; released afterwards)`
    : `tried to reserve ${WANT_PAGES} x 2 MiB huge pages but only ${free1} are free (${added} added)${writeError}: memory too fragmented or too small`;
  return { available, note, restore };
}
