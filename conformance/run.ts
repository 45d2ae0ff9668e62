/**
 * npm run conformance [-- OPTIONS] [-- SELFTEST-ARGS]
 *
 * Builds the upstream iommufd selftest from Debian's linux-source-6.12 (conformance/build.sh), runs
 * it under the emulator (`iommufd-ts run -- PROGRAM`), patched and as shipped, and compares each
 * test's verdict with the real kernel's (conformance/expected/*.verdicts), honouring
 * conformance/known-differences.txt. Exit status 0 only if every verdict matches or is a listed
 * known difference, no listed difference has gone away, and the environment could provide what
 * the tests need (huge pages).
 *
 * Options:
 *   --variant NAME             run only iommufd or iommufd.asis (repeatable)
 *   --trace                    pass --trace build/conformance/results/VARIANT.trace to iommufd-ts run
 *   --tap                      stream the raw TAP output
 *   --timeout SECONDS          per variant (default 420); the run is killed after it
 *   --no-reserve-hugepages     do not touch vm.nr_hugepages, even as root
 *   --allow-without WHAT       exit 0 even though the host lacks WHAT (hugepages, or
 *                              cap_sys_resource with --no-grant-cap), so the tests that need it
 *                              could not be checked; they are still listed under "environment"
 *                              (repeatable)
 *   --no-grant-cap             when this process lacks CAP_SYS_RESOURCE (which the oracle VM's
 *                              tests have), do not grant it inside the emulator
 *                              (`iommufd-ts run --cap CAP_SYS_RESOURCE`): global_options then
 *                              gets EPERM, as the kernel would give it here
 *   --oracle                   also run the oracle VM now (../shared/oracle, ~30 s) for a
 *                              same-machine, same-moment wall-time comparison
 *   --oracle-if-built          the same when the oracle's kernel is built already (its cache,
 *                              ~/.cache/iommufd-oracle, has bzImage); otherwise say so and skip
 *                              it rather than build it (3-5 min): what CI passes
 *   -- ARGS                    passed to the selftest (e.g. -r iommufd_ioas.no_domain.area);
 *                              only the tests that ran are compared then
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, createWriteStream } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareHugepages, type HugepageState } from './hugepages.js';
import {
  compare,
  formatTotals,
  formatVerdicts,
  formatWallTime,
  needsHugetlb,
  parseKnownDifferences,
  parseTap,
  parseVerdictFile,
  tapPlan,
  tapDiagnostics,
  tapTotals,
  totals,
  type Difference,
  type ExpectedList,
  type Verdict,
  type VariantRun,
} from './verdicts.js';
import { nodeFlagsOf } from './cli-flags.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');
const BUILD = process.env['CONFORMANCE_BUILD'] ?? join(REPO, 'build', 'conformance');
const RESULTS = join(BUILD, 'results');
// CONFORMANCE_CLI: another iommufd-ts entry point (to exercise the driver itself).
const CLI = process.env['CONFORMANCE_CLI'] ?? join(REPO, 'bin', 'iommufd-ts.js');
/** The node flags of the CLI's `#!/usr/bin/env -S node FLAGS` line: the selftest runs it as an installed command would. */
const CLI_NODE_FLAGS = nodeFlagsOf(CLI);
const ORACLE_SCRIPTS = process.env['IOMMUFD_ORACLE_SCRIPTS'] ?? join(REPO, '..', 'shared', 'oracle');
const VARIANTS = ['iommufd', 'iommufd.asis'] as const;
const VARIANT_TITLE: Record<string, string> = {
  iommufd: 'iommufd (with the 6.12.y compat patch)',
  'iommufd.asis': 'iommufd.asis (as Debian ships it)',
};

interface Options {
  variants: string[];
  trace: boolean;
  tap: boolean;
  timeoutS: number;
  reserveHugepages: boolean;
  allowWithout: Set<string>;
  grantCap: boolean;
  /** Set by main: the capabilities to grant inside the emulator. */
  caps: string[];
  oracle: boolean | 'if-built';
  selftestArgs: string[];
}

function usage(msg: string): never {
  process.stderr.write(`conformance: ${msg}\n(see the comment at the top of conformance/run.ts)\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    variants: [],
    trace: false,
    tap: false,
    timeoutS: 420,
    reserveHugepages: true,
    allowWithout: new Set(),
    grantCap: true,
    caps: [],
    oracle: false,
    selftestArgs: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      o.selftestArgs = argv.slice(i + 1);
      break;
    } else if (a === '--variant') {
      const v = argv[++i];
      if (!v || !(VARIANTS as readonly string[]).includes(v)) usage(`--variant takes one of ${VARIANTS.join(', ')}`);
      o.variants.push(v);
    } else if (a === '--trace') o.trace = true;
    else if (a === '--tap') o.tap = true;
    else if (a === '--timeout') {
      o.timeoutS = Number(argv[++i]);
      if (!(o.timeoutS > 0)) usage('--timeout takes a number of seconds');
    } else if (a === '--no-reserve-hugepages') o.reserveHugepages = false;
    else if (a === '--allow-without') {
      const w = argv[++i];
      if (w !== 'hugepages' && w !== 'cap_sys_resource') usage('--allow-without takes hugepages or cap_sys_resource');
      o.allowWithout.add(w);
    }
    else if (a === '--no-grant-cap') o.grantCap = false;
    else if (a === '--oracle') o.oracle = true;
    else if (a === '--oracle-if-built') o.oracle = 'if-built';
    else if (a === '-h' || a === '--help') {
      const src = readFileSync(fileURLToPath(import.meta.url), 'utf8');
      process.stdout.write(/\/\*\*([\s\S]*?)\*\//.exec(src)![1]!.replace(/^ \* ?/gm, '') + '\n');
      process.exit(0);
    } else usage(`unknown option ${a}`);
  }
  if (o.variants.length === 0) o.variants = [...VARIANTS];
  return o;
}

const out: string[] = [];
function say(line = ''): void {
  out.push(line);
  process.stdout.write(line + '\n');
}
const secs = (ms: number): string => (ms / 1000).toFixed(1);

interface BuildInfo {
  kernel: string;
  source: string;
  compatPatchApplied: boolean;
  seconds: { packages: number; extract: number; headers: number; compile: number };
  cached: { extract: boolean; headers: boolean; compile: boolean };
  binaries: Record<string, string>;
}

function build(): { info: BuildInfo; wallMs: number } | { error: string } {
  const t0 = performance.now();
  const r = spawnSync('bash', [join(HERE, 'build.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
  const wallMs = performance.now() - t0;
  if (r.status !== 0) return { error: `conformance/build.sh failed (exit ${r.status ?? r.signal})` };
  return { info: JSON.parse(readFileSync(join(BUILD, 'build-info.json'), 'utf8')) as BuildInfo, wallMs };
}

/** Whether `iommufd-ts run` exists yet; the reason if not. */
function runCommandProblem(): string | undefined {
  const r = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) return `\`iommufd-ts --help\` failed (exit ${r.status ?? r.signal}): ${(r.stderr ?? '').trim().split('\n')[0]}`;
  if (!/^\s+run\b/m.test(r.stdout ?? '')) return '`iommufd-ts run` is not available yet (no "run" command in `iommufd-ts --help`)';
  return undefined;
}

interface RunResult {
  variant: string;
  verdicts: Map<string, Verdict> | undefined;
  tap: string;
  exit: number | string;
  wallMs: number;
  /** Why the run is not complete, if it is not. */
  problem: string | undefined;
}

let current: ReturnType<typeof spawn> | undefined;

function killCurrent(sig: NodeJS.Signals): void {
  if (current?.pid !== undefined && current.exitCode === null && current.signalCode === null) {
    try {
      process.kill(-current.pid, sig); // the run's own process group (detached below)
    } catch {
      /* already gone */
    }
  }
}

async function runVariant(variant: string, binary: string, o: Options): Promise<RunResult> {
  mkdirSync(RESULTS, { recursive: true });
  const base = join(RESULTS, variant);
  // The program's stderr (the harness's assertion messages) goes into the same pipe as its TAP,
  // in order, as in the oracle's .tap files; the emulator's own stderr stays in VARIANT.err.
  const args = [
    ...CLI_NODE_FLAGS,
    CLI,
    'run',
    ...(o.trace ? ['--trace', `${base}.trace`] : []),
    ...o.caps.flatMap((c) => ['--cap', c]),
    '--',
    '/bin/sh',
    '-c',
    'exec "$0" "$@" 2>&1',
    binary,
    ...o.selftestArgs,
  ];
  const err = createWriteStream(`${base}.err`);
  let tap = '';
  const t0 = performance.now();
  let timedOut = false;
  const exit = await new Promise<number | string>((done) => {
    const child = spawn(process.execPath, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    current = child;
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => {
      tap += s;
      if (o.tap) process.stdout.write(s);
    });
    child.stderr!.pipe(err);
    const timer = setTimeout(() => {
      timedOut = true;
      killCurrent('SIGKILL');
    }, o.timeoutS * 1000);
    child.on('error', (e) => {
      clearTimeout(timer);
      done(`spawn error: ${e.message}`);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      done(code ?? `signal ${signal}`);
    });
  });
  current = undefined;
  const wallMs = performance.now() - t0;
  await new Promise((r) => err.end(r));
  writeFileSync(`${base}.tap`, tap);
  let verdicts: Map<string, Verdict> | undefined;
  let problem: string | undefined;
  try {
    verdicts = parseTap(tap);
  } catch (e) {
    problem = `unreadable TAP: ${(e as Error).message}`;
  }
  const plan = tapPlan(tap);
  const stderrTail = readFileSync(`${base}.err`, 'utf8').trim().split('\n').slice(-3).join(' | ');
  if (timedOut) problem = `killed after the ${o.timeoutS} s timeout`;
  else if (plan === undefined) problem = `no TAP output (exit ${exit}${stderrTail ? `; stderr: ${stderrTail}` : ''})`;
  else if (tapTotals(tap) === undefined) problem = `the run stopped before the end (exit ${exit}; ${verdicts?.size ?? 0}/${plan} verdicts)`;
  else if (exit !== 0 && exit !== 1) problem = `exit status ${exit} (the harness exits 0 or 1)`;
  if (verdicts !== undefined && verdicts.size === 0 && plan === undefined) verdicts = undefined;
  if (verdicts) writeFileSync(`${base}.verdicts`, formatVerdicts(verdicts));
  return { variant, verdicts, tap, exit, wallMs, problem };
}

function loadExpected(name: string): ExpectedList {
  const file = join(HERE, 'expected', `${name}.verdicts`);
  return parseVerdictFile(readFileSync(file, 'utf8'), relative(REPO, file));
}

/** run-selftests.sh now, for a same-moment timing (its header carries vm_wall_s). */
function runOracle(ifBuilt: boolean): Map<string, number> | string {
  const script = join(ORACLE_SCRIPTS, 'run-selftests.sh');
  if (!existsSync(script)) return `${script} not found`;
  if (ifBuilt) {
    // Where the oracle's scripts keep their build (their own rule).
    const cache = process.env['IOMMUFD_ORACLE_DIR'] ?? join(process.env['XDG_CACHE_HOME'] ?? join(process.env['HOME'] ?? '/nonexistent', '.cache'), 'iommufd-oracle');
    if (!existsSync(join(cache, 'bzImage'))) return `its kernel is not built in ${cache} (--oracle builds it, 3-5 min)`;
  }
  const dir = join(BUILD, 'oracle');
  mkdirSync(dir, { recursive: true });
  process.stderr.write('[conformance] running the oracle VM now (run-selftests.sh --asis) for the wall-time comparison\n');
  spawnSync(script, ['--asis', '--brief', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  const m = new Map<string, number>();
  for (const v of VARIANTS) {
    try {
      const s = /vm_wall_s=([0-9.]+)/.exec(readFileSync(join(dir, `${v}.err`), 'utf8'));
      if (s) m.set(v, Number(s[1]));
    } catch {
      /* missing */
    }
  }
  return m;
}

function printDifferences(title: string, diffs: Difference[], diagnostics: Map<string, string[]>, showReason: boolean): void {
  if (diffs.length === 0) return;
  say(`  ${title} (${diffs.length}):`);
  const w = Math.max(...diffs.map((d) => d.test.length));
  for (const d of diffs) {
    say(`    ${d.test.padEnd(w)}  kernel: ${d.kernel.padEnd(6)} emulator: ${d.emulator}${showReason && d.reason ? `  -- ${d.reason}` : ''}`);
    for (const line of (diagnostics.get(d.test) ?? []).slice(0, 2)) say(`        ${line}`);
  }
}

/** Whether this process has capability BIT in its effective set (undefined if unknown). */
function hasCapability(bit: number): boolean | undefined {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? ((BigInt('0x' + m[1]) >> BigInt(bit)) & 1n) === 1n : undefined;
  } catch {
    return undefined;
  }
}
const CAP_SYS_RESOURCE = 24;

async function main(): Promise<number> {
  const o = parseArgs(process.argv.slice(2));
  const partial = o.selftestArgs.length > 0;
  say('== conformance: the upstream iommufd selftest under the emulator vs the real kernel (Linux 6.12.117)');

  // Inputs first: a broken known-differences file or expected list is reported before any work.
  const knownFile = join(HERE, 'known-differences.txt');
  const known = parseKnownDifferences(readFileSync(knownFile, 'utf8'), 'conformance/known-differences.txt');
  const expected = new Map(o.variants.map((v) => [v, loadExpected(v)]));
  const failNth = loadExpected('iommufd_fail_nth');

  const b = build();
  if ('error' in b) {
    say(`FAIL: ${b.error}`);
    return 1;
  }
  const s = b.info.seconds;
  const firstRun = !b.info.cached.extract || !b.info.cached.headers || !b.info.cached.compile;
  say(
    `build: ${b.info.source}, compat patch ${b.info.compatPatchApplied ? 'applied' : 'not needed'}; ` +
      (firstRun
        ? `packages ${s.packages} s, extract ${s.extract} s, headers_install ${s.headers} s, compile ${s.compile} s (${secs(b.wallMs)} s in all)`
        : `cached in build/conformance (${secs(b.wallMs)} s)`),
  );

  // The kernel's verdicts were recorded in the oracle VM, as root with every capability. The one
  // the selftest needs (CAP_SYS_RESOURCE, for IOMMU_OPTION_RLIMIT_MODE in global_options) is
  // granted inside the emulator when this process lacks it, unless --no-grant-cap.
  const hostHasCap = hasCapability(CAP_SYS_RESOURCE) ?? process.geteuid?.() === 0;
  if (!hostHasCap && o.grantCap) {
    o.caps = ['CAP_SYS_RESOURCE'];
    say('capabilities: this process has no CAP_SYS_RESOURCE, which the oracle VM gives its tests; granted to the selftest inside the emulator (iommufd-ts run --cap CAP_SYS_RESOURCE)');
  }

  const problem = runCommandProblem();
  let hp: HugepageState | undefined;
  const results = new Map<string, RunResult>();
  const onSignal = (sig: NodeJS.Signals): void => {
    killCurrent('SIGKILL');
    const r = hp?.restore();
    if (r) process.stderr.write(`[conformance] ${r}\n`);
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (problem) {
    say(`run: ${problem}`);
  } else {
    hp = prepareHugepages({ reserve: o.reserveHugepages, log: (m) => process.stderr.write(`[conformance] ${m}\n`) });
    say(`huge pages: ${hp.note}`);
    try {
      for (const v of o.variants) {
        process.stderr.write(`[conformance] running ${v} under iommufd-ts run ...\n`);
        const r = await runVariant(v, b.info.binaries[v]!, o);
        results.set(v, r);
        process.stderr.write(`[conformance] ${v}: exit ${r.exit}, ${secs(r.wallMs)} s${r.problem ? `: ${r.problem}` : ''}\n`);
      }
    } finally {
      const r = hp.restore();
      if (r) say(`huge pages: ${r}`);
    }
  }

  // What the environment could not provide, and the tests that need it. The kernel's verdicts
  // were recorded in the oracle VM: root with every capability, 128 huge pages.
  const hugeOk = hp?.available ?? true;
  const capOk = hostHasCap || o.caps.includes('CAP_SYS_RESOURCE');
  const unavailable = new Map<string, string>();
  const lacking = new Map<string, string>(); // what -> why, for the result line
  const envKey = new Map<string, string>(); // test -> what
  if (!hugeOk) {
    lacking.set('hugepages', `huge pages: ${hp?.note ?? 'not reserved'}`);
    for (const e of expected.values())
      for (const t of e.verdicts.keys())
        if (needsHugetlb(t)) {
          unavailable.set(t, 'needs hugetlb pages, which this host could not provide');
          envKey.set(t, 'hugepages');
        }
  }
  if (!capOk) {
    // global_options sets IOMMU_OPTION_RLIMIT_MODE, which needs CAP_SYS_RESOURCE: without it the
    // kernel says EPERM too, so the emulator's "not ok" is right for this host, but it is not the
    // kernel's recorded verdict.
    lacking.set('cap_sys_resource', 'this process has no CAP_SYS_RESOURCE (not in CapEff), which the oracle VM gives its tests');
    unavailable.set('iommufd.global_options', 'needs CAP_SYS_RESOURCE (the kernel would say EPERM here too)');
    envKey.set('iommufd.global_options', 'cap_sys_resource');
  }
  if (lacking.size) say(`environment: ${[...lacking.values()].join('; ')}`);
  const runs: VariantRun[] = o.variants.map((v) => ({
    variant: v,
    expected: expected.get(v)!.verdicts,
    actual: results.get(v)?.verdicts,
    partial,
  }));
  const cmp = compare(runs, known, { unavailable });

  const oracleNow = o.oracle && !problem ? runOracle(o.oracle === 'if-built') : undefined;
  const timing: Record<string, unknown> = {};
  for (const v of o.variants) {
    const e = expected.get(v)!;
    const r = results.get(v);
    const kt = totals(e.verdicts);
    say('');
    say(`== ${VARIANT_TITLE[v] ?? v}`);
    say(`  kernel:   ${formatTotals(kt)}`);
    if (!r || !r.verdicts) {
      say(`  emulator: not run${r?.problem ? `: ${r.problem}` : problem ? ' (see "run:" above)' : ''}`);
      continue;
    }
    say(`  emulator: ${formatTotals(totals(r.verdicts))}${r.problem ? `  [${r.problem}]` : ''}`);
    const diffs = cmp.differences.filter((d) => d.variant === v);
    const by = (c: Difference['category']): Difference[] => diffs.filter((d) => d.category === c);
    say(`  differences: ${diffs.length} (${by('unexpected').length} unexpected, ${by('known').length} known, ${by('environment').length} environment)`);
    const diag = tapDiagnostics(r.tap);
    printDifferences('UNEXPECTED (not in known-differences.txt)', by('unexpected'), diag, false);
    printDifferences('known differences (known-differences.txt)', by('known'), diag, true);
    printDifferences('environment (not a verdict on the emulator)', by('environment'), diag, true);
    const flaky = cmp.flakyMatched.filter((f) => f.variant === v);
    if (flaky.length) {
      say(`  flaky known differences that matched the kernel this time (${flaky.length}; kept, the race is not fixed):`);
      for (const f of flaky) say(`    ${f.entry.test}`);
    }
    // Wall time next to the oracle VM's boot-to-poweroff time.
    const vmNow = oracleNow instanceof Map ? oracleNow.get(v) : undefined;
    const vm = vmNow ?? e.vmWallSeconds;
    const from = vmNow !== undefined ? 'run just now' : `recorded in expected/${v}.verdicts`;
    const ratio = vm ? (r.wallMs / 1000 / vm).toFixed(2) : '?';
    say(
      partial
        ? `  wall time: emulator ${secs(r.wallMs)} s (filtered run: not comparable with the oracle VM's whole run)`
        : `  ${formatWallTime(Number(secs(r.wallMs)), vm, vmNow !== undefined ? { justNow: true } : { recordedIn: `expected/${v}.verdicts` })}`,
    );
    timing[v] = { emulatorWallS: Number(secs(r.wallMs)), oracleVmWallS: vm, oracleSource: from, ratio: Number(ratio), partial };
  }
  if (typeof oracleNow === 'string') say(`(oracle not run: ${oracleNow})`);
  say('');
  say(
    `== iommufd_fail_nth: not run. The kernel passes ${formatTotals(totals(failNth.verdicts))} (expected/iommufd_fail_nth.verdicts);` +
      ' the emulator has no fault injection, so its verdicts would say nothing (conformance/README.md).',
  );

  if (cmp.fixed.length || cmp.invalid.length) {
    say('');
    say('== known-differences.txt is out of date (the list may only shrink):');
    for (const e of cmp.fixed)
      say(`  line ${e.line}: ${e.variant ? e.variant + ':' : ''}${e.test} now matches the kernel: fixed, remove it from the list`);
    for (const { entry, why } of cmp.invalid) say(`  line ${entry.line}: ${entry.test}: ${why}`);
  }

  // Verdict.
  const failures: string[] = [];
  if (problem) failures.push(problem);
  for (const v of o.variants) {
    const r = results.get(v);
    if (r?.problem) failures.push(`${v}: ${r.problem}`);
  }
  const unexpected = cmp.differences.filter((d) => d.category === 'unexpected').length;
  const env = cmp.differences.filter((d) => d.category === 'environment').length;
  if (unexpected) failures.push(`${unexpected} verdict(s) differ from the kernel's and are not in known-differences.txt`);
  if (cmp.fixed.length) failures.push(`${cmp.fixed.length} known difference(s) fixed: remove them from known-differences.txt`);
  if (cmp.invalid.length) failures.push(`${cmp.invalid.length} invalid entr(y/ies) in known-differences.txt`);
  const knownCount = cmp.differences.filter((d) => d.category === 'known').length;
  say('');
  let rc = 0;
  if (failures.length) {
    say(`== result: FAIL`);
    for (const f of failures) say(`  - ${f}`);
    rc = 1;
  } else if (env) {
    const envDiffs = cmp.differences.filter((d) => d.category === 'environment');
    const missing = [...new Set(envDiffs.map((d) => envKey.get(d.test)!))];
    const refused = missing.filter((w) => !o.allowWithout.has(w));
    say(
      `== result: ${refused.length ? 'INCOMPLETE' : 'PASS (incomplete)'}: every verdict that could be checked matches the kernel's` +
        `${knownCount ? ` or is a known difference (${knownCount})` : ''}, but ${env} test verdict(s) could not be checked on this host` +
        ` (listed under "environment"): ${missing.map((w) => lacking.get(w)).join('; ')}.`,
    );
    if (refused.length === 0) say(`  Accepted by ${missing.map((w) => `--allow-without ${w}`).join(' ')}.`);
    else say(`  Give the run what it lacks (as root huge pages are reserved for the run), or accept it with ${refused.map((w) => `--allow-without ${w}`).join(' ')}.`);
    rc = refused.length ? 1 : 0;
  } else {
    say(
      `== result: PASS: every verdict matches the kernel's${knownCount ? `, apart from ${knownCount} listed in known-differences.txt (${known.length} entries)` : ''}` +
        `${partial ? ' (filtered run: only the tests that ran were compared)' : ''}`,
    );
  }
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, 'summary.txt'), out.join('\n') + '\n');
  writeFileSync(join(RESULTS, 'timing.json'), JSON.stringify({ build: b.info, buildWallS: Number(secs(b.wallMs)), runs: timing }, null, 2) + '\n');
  return rc;
}

main().then(
  (rc) => process.exit(rc),
  (e: unknown) => {
    process.stderr.write(`conformance: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
