/**
 * Verdict lists of the upstream selftest, in the oracle's format (../shared/oracle/run-selftests.sh):
 * one `ok NAME` / `not ok NAME` line per test, sorted by NAME, test numbers dropped, TAP directives
 * (`# SKIP reason`) kept. And the comparison of the emulator's list with the kernel's, honouring
 * conformance/known-differences.txt. Pure functions: the driver (run.ts) does the I/O.
 */

export interface Verdict {
  /** `ok` or `not ok`. */
  status: 'ok' | 'not ok';
  /** The TAP directive with its leading space (` # SKIP reason`), or ''. */
  directive: string;
}

/** The text that is compared: `ok`, `not ok`, `ok # SKIP reason`. */
export function verdictText(v: Verdict | undefined): string {
  return v === undefined ? '(absent)' : v.status + v.directive;
}

const RESULT_LINE = /^(not ok|ok) [0-9]+ (\S+)(.*)$/;
const VERDICT_LINE = /^(not ok|ok) (\S+)(.*)$/;

function setOnce(map: Map<string, Verdict>, name: string, v: Verdict, where: string): void {
  if (map.has(name)) throw new Error(`${where}: test ${name} appears twice`);
  map.set(name, v);
}

/** Verdicts from raw kselftest TAP (`ok 12 iommufd_ioas.no_domain.area`, `not ok 3 x # SKIP y`). */
export function parseTap(tap: string): Map<string, Verdict> {
  const out = new Map<string, Verdict>();
  for (const line of tap.split('\n')) {
    const m = RESULT_LINE.exec(line.trimEnd());
    if (!m) continue;
    const directive = (m[3] ?? '').trim();
    setOnce(out, m[2]!, { status: m[1] as Verdict['status'], directive: directive ? ' ' + directive : '' }, 'TAP');
  }
  return out;
}

/** The `# Totals: pass:.. fail:..` line of a TAP run, if the harness got that far. */
export function tapTotals(tap: string): string | undefined {
  const lines = tap.split('\n').filter((l) => l.startsWith('# Totals:'));
  return lines.length ? lines[lines.length - 1]!.trim() : undefined;
}

/** The `1..N` plan line's N, if any. */
export function tapPlan(tap: string): number | undefined {
  const m = /^1\.\.([0-9]+)\s*$/m.exec(tap);
  return m ? Number(m[1]) : undefined;
}

/** The oracle's format: `ok NAME`, `not ok NAME # SKIP reason`, sorted by NAME (byte order). */
export function formatVerdicts(verdicts: Map<string, Verdict>): string {
  const names = [...verdicts.keys()].sort(byteOrder);
  return names.map((n) => `${verdicts.get(n)!.status} ${n}${verdicts.get(n)!.directive}`).join('\n') + (names.length ? '\n' : '');
}

export function byteOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface ExpectedList {
  verdicts: Map<string, Verdict>;
  /** The `# ...` header lines, without the leading `# `. */
  header: string[];
  /** vm_wall_s of the oracle run (boot to power-off), from the `# oracle: ...` header line. */
  vmWallSeconds: number | undefined;
  /** program_s of the oracle run. */
  programSeconds: number | undefined;
}

/** A verdict list file: `#` comment lines (the header), then `ok NAME` / `not ok NAME` lines. */
export function parseVerdictFile(text: string, where = 'verdict file'): ExpectedList {
  const verdicts = new Map<string, Verdict>();
  const header: string[] = [];
  let vmWallSeconds: number | undefined;
  let programSeconds: number | undefined;
  text.split('\n').forEach((raw, i) => {
    const line = raw.trimEnd();
    if (line === '') return;
    if (line.startsWith('#')) {
      const h = line.replace(/^# ?/, '');
      header.push(h);
      const vm = /\bvm_wall_s=([0-9.]+)/.exec(h);
      if (vm && h.startsWith('oracle:')) vmWallSeconds = Number(vm[1]);
      const ps = /\bprogram_s=([0-9.]+)/.exec(h);
      if (ps && h.startsWith('oracle:')) programSeconds = Number(ps[1]);
      return;
    }
    const m = VERDICT_LINE.exec(line);
    if (!m) throw new Error(`${where}:${i + 1}: not a verdict line: ${line}`);
    setOnce(verdicts, m[2]!, { status: m[1] as Verdict['status'], directive: m[3] ?? '' }, `${where}:${i + 1}`);
  });
  return { verdicts, header, vmWallSeconds, programSeconds };
}

export interface Totals {
  pass: number;
  fail: number;
  skip: number;
  total: number;
}

export function totals(verdicts: Map<string, Verdict>): Totals {
  let pass = 0;
  let fail = 0;
  let skip = 0;
  for (const v of verdicts.values()) {
    if (/^ # SKIP\b/i.test(v.directive)) skip++;
    else if (v.status === 'ok') pass++;
    else fail++;
  }
  return { pass, fail, skip, total: verdicts.size };
}

export function formatTotals(t: Totals): string {
  return `${t.pass} ok, ${t.fail} not ok${t.skip ? `, ${t.skip} skipped` : ''} (of ${t.total})`;
}

// ---- known differences ---------------------------------------------------------------------------

export interface KnownDifference {
  /** Restricts the entry to one variant (`iommufd.asis:NAME`); undefined = every variant. */
  variant: string | undefined;
  test: string;
  reason: string;
  line: number;
  /** The reason starts with `[flaky]`: the test differs in some runs only (a race to fix). Such an
   * entry is not reported as fixed when the test happens to match; the summary shows it. */
  flaky: boolean;
}

/**
 * conformance/known-differences.txt: one line per test, `[VARIANT:]TEST REASON...`; `#` comments
 * and blank lines ignored. Every entry needs a reason; a test may be listed once per variant.
 */
export function parseKnownDifferences(text: string, where = 'known-differences.txt'): KnownDifference[] {
  const out: KnownDifference[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^(\S+)\s+(.*\S)$/.exec(line);
    if (!m) throw new Error(`${where}:${i + 1}: "${line}" has no reason (format: [VARIANT:]TEST REASON)`);
    const key = m[1]!;
    const colon = key.indexOf(':');
    const variant = colon >= 0 ? key.slice(0, colon) : undefined;
    const test = colon >= 0 ? key.slice(colon + 1) : key;
    const clash = out.find((e) => e.test === test && (e.variant === undefined || variant === undefined || e.variant === variant));
    if (clash) throw new Error(`${where}:${i + 1}: ${test} is already listed on line ${clash.line}`);
    out.push({ variant, test, reason: m[2]!, line: i + 1, flaky: m[2]!.startsWith('[flaky]') });
  });
  return out;
}

// ---- comparison --------------------------------------------------------------------------------

export type Category = 'known' | 'environment' | 'unexpected';

export interface Difference {
  variant: string;
  test: string;
  kernel: string;
  emulator: string;
  category: Category;
  /** The known-differences reason, or the environment's. */
  reason: string | undefined;
}

export interface VariantRun {
  variant: string;
  expected: Map<string, Verdict>;
  /** undefined: the run produced nothing to compare (it could not start). */
  actual: Map<string, Verdict> | undefined;
  /** A filtered run (extra selftest arguments): tests that did not run are not compared. */
  partial: boolean;
}

export interface Environment {
  /** Tests whose verdict depends on the environment, with why it could not provide them. */
  unavailable: Map<string, string>;
}

export interface Comparison {
  differences: Difference[];
  /** Entries of known-differences.txt whose tests now match the kernel in every variant run. */
  fixed: KnownDifference[];
  /** Entries naming a test or variant that does not exist. */
  invalid: { entry: KnownDifference; why: string }[];
  /** Variants whose run produced no verdicts. */
  notRun: string[];
  /** Flaky entries whose test matched the kernel in this run (not a failure: see KnownDifference). */
  flakyMatched: { variant: string; entry: KnownDifference }[];
}

function applies(e: KnownDifference, variant: string, test: string): boolean {
  return e.test === test && (e.variant === undefined || e.variant === variant);
}

export function compare(runs: VariantRun[], known: KnownDifference[], env: Environment): Comparison {
  const differences: Difference[] = [];
  const notRun: string[] = [];
  const flakyMatched: Comparison['flakyMatched'] = [];
  const stillNeeded = new Set<KnownDifference>();
  const checked = new Set<KnownDifference>();
  for (const run of runs) {
    if (run.actual === undefined) {
      notRun.push(run.variant);
      // Not run: nothing tells whether its entries are still needed.
      for (const e of known) if (e.variant === undefined || e.variant === run.variant) stillNeeded.add(e);
      continue;
    }
    const names = new Set([...run.expected.keys(), ...run.actual.keys()]);
    for (const test of [...names].sort(byteOrder)) {
      const kv = run.expected.get(test);
      const ev = run.actual.get(test);
      if (run.partial && ev === undefined) continue;
      const entry = known.find((e) => applies(e, run.variant, test));
      const same = verdictText(kv) === verdictText(ev);
      // A flaky test that the kernel fails stops before its race can show: that run says nothing
      // about the entry.
      if (entry && !(entry.flaky && same && kv?.status !== 'ok')) checked.add(entry);
      if (same) {
        if (entry?.flaky && kv?.status === 'ok') {
          flakyMatched.push({ variant: run.variant, entry });
          stillNeeded.add(entry);
        }
        continue;
      }
      let category: Category = 'unexpected';
      let reason: string | undefined;
      if (entry) {
        category = 'known';
        reason = entry.reason;
        stillNeeded.add(entry);
      } else if (env.unavailable.has(test)) {
        category = 'environment';
        reason = env.unavailable.get(test);
      }
      differences.push({ variant: run.variant, test, kernel: verdictText(kv), emulator: verdictText(ev), category, reason });
    }
  }
  const variants = new Set(runs.map((r) => r.variant));
  const allTests = new Set(runs.flatMap((r) => [...r.expected.keys()]));
  const invalid: Comparison['invalid'] = [];
  for (const e of known) {
    if (e.variant !== undefined && !variants.has(e.variant)) invalid.push({ entry: e, why: `no variant ${e.variant}` });
    else if (!allTests.has(e.test)) invalid.push({ entry: e, why: `no test ${e.test} in the expected lists` });
  }
  const fixed = known.filter((e) => checked.has(e) && !stillNeeded.has(e) && !invalid.some((i) => i.entry === e));
  return { differences, fixed, invalid, notRun, flakyMatched };
}

/** The 22 test cases that need hugetlb pages (MAP_HUGETLB): see the selftest catalogue. */
export function needsHugetlb(test: string): boolean {
  return (
    /^iommufd_ioas\.[^.]+\.access_domain_destory$/.test(test) ||
    /^iommufd_mock_domain\.[^.]+_hugepage\.(basic|all_aligns|all_aligns_copy)$/.test(test) ||
    /^iommufd_dirty_tracking\.[^.]+_huge\.[^.]+$/.test(test) ||
    /^vfio_compat_mock_domain\.[^.]+\.huge_map$/.test(test)
  );
}

/**
 * The harness's diagnostics for each test: the lines between `#  RUN NAME ...` and the test's
 * verdict (assertion messages such as `iommufd.c:557:alloc_hwpt_nested:Expected 0 (0) == ...`),
 * from the merged stdout+stderr of the run, with source paths cut to the file name.
 */
export function tapDiagnostics(tap: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let current: string | undefined;
  let lines: string[] = [];
  for (const raw of tap.split('\n')) {
    const line = raw.trimEnd();
    const run = /^#  RUN\s+(\S+) \.\.\.$/.exec(line);
    if (run) {
      current = run[1];
      lines = [];
      continue;
    }
    const r = RESULT_LINE.exec(line);
    if (r) {
      if (current === r[2] && lines.length) out.set(current!, lines);
      current = undefined;
      continue;
    }
    if (current === undefined || !line.startsWith('# ')) continue;
    if (/^#\s+(OK|FAIL|SKIP|XFAIL|XPASS)\s+\S+$/.test(line)) continue;
    lines.push(line.slice(2).replace(/^\/\S*\/([^/\s]+\.[ch]:)/, '$1'));
  }
  return out;
}

/**
 * The summary's wall-time line: the emulator's whole run next to the oracle VM's boot-to-power-off
 * time. The issue's target (under half) is about the same machine, so only a VM run just now
 * (`--oracle`) gets the target next to the ratio; a time recorded in expected/ comes from the
 * machine that recorded it and is shown for scale only.
 */
export function formatWallTime(emulatorS: number, vmS: number | undefined, vmSource: { justNow: true } | { recordedIn: string }): string {
  const head = `wall time: emulator ${emulatorS.toFixed(1)} s for the whole selftest (iommufd-ts run, start to exit) vs oracle VM ${vmS ?? '?'} s boot to power-off`;
  const ratio = vmS ? (emulatorS / vmS).toFixed(2) : '?';
  if ('justNow' in vmSource) return `${head} (vm_wall_s, run just now on this machine); ratio ${ratio} (target < 0.5)`;
  return (
    `${head} (vm_wall_s recorded in ${vmSource.recordedIn}, on the machine that recorded it); ratio ${ratio}, ` +
    `not a same-machine figure (--oracle runs the VM here for the target's comparison)`
  );
}
