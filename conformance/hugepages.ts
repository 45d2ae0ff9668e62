/**
 * Huge pages for the 22 selftest cases that mmap MAP_HUGETLB. The oracle VM reserves 128 x 2 MiB;
 * the largest single test (dirty tracking, 128M_huge) needs 64 at once. As root, the driver raises
 * vm.nr_hugepages for the run and puts the old value back afterwards.
 */
import { readFileSync, writeFileSync } from 'node:fs';

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
  if (free0 >= WANT_PAGES) return none(true, `${free0} free 2 MiB huge pages already reserved on this host`);
  const isRoot = process.getuid?.() === 0;
  if (!opts.reserve || !isRoot) {
    const why = !opts.reserve ? 'reserving was turned off (--no-reserve-hugepages)' : 'not running as root';
    if (free0 >= NEED_PAGES) return none(true, `${free0} free 2 MiB huge pages on this host (${why}; ${NEED_PAGES} suffice)`);
    return none(
      false,
      `only ${free0} free 2 MiB huge pages and ${why}: reserve ${WANT_PAGES} first (sudo sysctl vm.nr_hugepages=${WANT_PAGES})`,
    );
  }
  let before: string;
  try {
    before = readFileSync(NR, 'utf8').trim();
  } catch (e) {
    return none(free0 >= NEED_PAGES, `cannot read ${NR} (${(e as Error).message})`);
  }
  const target = Number(before) + (WANT_PAGES - free0);
  let changed = false;
  let writeError = '';
  try {
    writeFileSync(NR, `${target}\n`);
    changed = true;
  } catch (e) {
    writeError = ` (writing ${NR}: ${(e as Error).message})`;
  }
  const free1 = meminfo().get('HugePages_Free') ?? 0;
  let restored = false;
  const restore = (): string | undefined => {
    if (!changed || restored) return undefined;
    restored = true;
    try {
      writeFileSync(NR, `${before}\n`);
      return `vm.nr_hugepages restored to ${before}`;
    } catch (e) {
      return `could not restore vm.nr_hugepages to ${before}: ${(e as Error).message}`;
    }
  };
  const available = free1 >= NEED_PAGES;
  const note = available
    ? `reserved ${free1 - free0} x 2 MiB huge pages for the run (vm.nr_hugepages ${before} -> ${target}, ${free1} free; restored afterwards)`
    : `tried to reserve ${WANT_PAGES} x 2 MiB huge pages (vm.nr_hugepages ${before} -> ${target}) but only ${free1} are free${writeError}: memory too fragmented or too small`;
  return { available, note, restore };
}
