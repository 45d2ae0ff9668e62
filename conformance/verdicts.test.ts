/**
 * The conformance comparison: TAP parsing, the oracle's verdict-list format, known differences
 * (listed, fixed, invalid) and environment-dependent tests. The committed expected lists and
 * known-differences.txt are parsed here too, so a malformed edit fails `npm test`.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  compare,
  formatVerdicts,
  formatWallTime,
  needsHugetlb,
  parseKnownDifferences,
  parseTap,
  parseVerdictFile,
  tapPlan,
  tapTotals,
  totals,
  type Verdict,
} from './verdicts.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ok: Verdict = { status: 'ok', directive: '' };
const notOk: Verdict = { status: 'not ok', directive: '' };

const TAP = `TAP version 13
1..3
# Starting 3 tests from 2 test cases.
#  RUN           b.two ...
#            OK  b.two
ok 1 b.two
#  RUN           a.one ...
# a.one: Test terminated by assertion
#          FAIL  a.one
not ok 2 a.one
ok 3 c.three # SKIP no huge pages
# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0
`;

test('TAP becomes the oracle verdict format: sorted, numbers dropped, directives kept', () => {
  const v = parseTap(TAP);
  assert.equal(formatVerdicts(v), 'not ok a.one\nok b.two\nok c.three # SKIP no huge pages\n');
  assert.equal(tapPlan(TAP), 3);
  assert.equal(tapTotals(TAP), '# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0');
  assert.deepEqual(totals(v), { pass: 1, fail: 1, skip: 1, total: 3 });
  assert.equal(tapPlan('garbage'), undefined);
  assert.throws(() => parseTap('ok 1 x\nok 2 x\n'), /appears twice/);
});

test('a verdict file round-trips and its header gives the oracle timing', () => {
  const text = '# Expected\n# oracle: exit=0 kernel_warnings=0 program_s=8.91 vm_wall_s=10.92\n' + formatVerdicts(parseTap(TAP));
  const e = parseVerdictFile(text);
  assert.equal(e.vmWallSeconds, 10.92);
  assert.equal(e.programSeconds, 8.91);
  assert.equal(formatVerdicts(e.verdicts), formatVerdicts(parseTap(TAP)));
  assert.throws(() => parseVerdictFile('ok a\nmaybe b\n'), /not a verdict line/);
});

test('known differences: variant prefixes, reasons required, duplicates refused', () => {
  const k = parseKnownDifferences('# c\n\na.one  no shim yet\niommufd.asis:b.two  asis only\n');
  assert.deepEqual(
    k.map((e) => [e.variant, e.test, e.reason]),
    [
      [undefined, 'a.one', 'no shim yet'],
      ['iommufd.asis', 'b.two', 'asis only'],
    ],
  );
  assert.throws(() => parseKnownDifferences('a.one\n'), /no reason/);
  assert.throws(() => parseKnownDifferences('a.one x\niommufd:a.one y\n'), /already listed/);
  assert.throws(() => parseKnownDifferences('iommufd:a.one x\na.one y\n'), /already listed/);
  assert.doesNotThrow(() => parseKnownDifferences('iommufd:a.one x\niommufd.asis:a.one y\n'));
});

test('compare: unexpected, known, environment, fixed, invalid', () => {
  const expected = new Map([
    ['a.one', ok],
    ['b.two', ok],
    ['c.huge', ok],
    ['d.four', notOk],
  ]);
  const actual = new Map([
    ['a.one', notOk], // listed
    ['b.two', ok], // listed, but matches now: fixed
    ['c.huge', notOk], // environment
    ['d.four', ok], // unexpected
  ]);
  const known = parseKnownDifferences('a.one reason A\nb.two reason B\nz.none reason Z\n');
  const cmp = compare([{ variant: 'iommufd', expected, actual, partial: false }], known, {
    unavailable: new Map([['c.huge', 'no huge pages']]),
  });
  assert.deepEqual(
    cmp.differences.map((d) => [d.test, d.category, d.kernel, d.emulator, d.reason]),
    [
      ['a.one', 'known', 'ok', 'not ok', 'reason A'],
      ['c.huge', 'environment', 'ok', 'not ok', 'no huge pages'],
      ['d.four', 'unexpected', 'not ok', 'ok', undefined],
    ],
  );
  assert.deepEqual(
    cmp.fixed.map((e) => e.test),
    ['b.two'],
  );
  assert.deepEqual(
    cmp.invalid.map((i) => i.entry.test),
    ['z.none'],
  );
});

test('compare: an entry is still needed if it differs in any variant; absent tests differ; partial runs', () => {
  const expected = new Map([
    ['a.one', ok],
    ['b.two', ok],
  ]);
  const known = parseKnownDifferences('a.one differs in asis only\n');
  const runs = [
    { variant: 'iommufd', expected, actual: new Map([['a.one', ok]]), partial: false },
    { variant: 'iommufd.asis', expected, actual: new Map([['a.one', notOk], ['b.two', ok], ['x.new', ok]]), partial: false },
  ];
  const cmp = compare(runs, known, { unavailable: new Map() });
  assert.deepEqual(cmp.fixed, []);
  assert.deepEqual(
    cmp.differences.map((d) => `${d.variant} ${d.test} ${d.kernel} -> ${d.emulator} ${d.category}`),
    ['iommufd b.two ok -> (absent) unexpected', 'iommufd.asis a.one ok -> not ok known', 'iommufd.asis x.new (absent) -> ok unexpected'],
  );
  // A filtered run compares only what ran, and cannot call an entry for a test that did not run fixed.
  const partial = compare([{ variant: 'iommufd', expected, actual: new Map([['b.two', ok]]), partial: true }], known, {
    unavailable: new Map(),
  });
  assert.deepEqual(partial.differences, []);
  assert.deepEqual(partial.fixed, []);
  // A variant that could not run keeps its entries.
  const notRun = compare([{ variant: 'iommufd', expected, actual: undefined, partial: false }], known, { unavailable: new Map() });
  assert.deepEqual(notRun.notRun, ['iommufd']);
  assert.deepEqual(notRun.fixed, []);
});

test('the committed expected lists are the kernel verdicts the issue states, and 22 tests need hugetlb', () => {
  const patched = parseVerdictFile(readFileSync(join(HERE, 'expected/iommufd.verdicts'), 'utf8'));
  const asis = parseVerdictFile(readFileSync(join(HERE, 'expected/iommufd.asis.verdicts'), 'utf8'));
  const failNth = parseVerdictFile(readFileSync(join(HERE, 'expected/iommufd_fail_nth.verdicts'), 'utf8'));
  assert.deepEqual(totals(patched.verdicts), { pass: 190, fail: 0, skip: 0, total: 190 });
  assert.deepEqual(totals(asis.verdicts), { pass: 164, fail: 26, skip: 0, total: 190 });
  assert.deepEqual(totals(failNth.verdicts), { pass: 7, fail: 0, skip: 0, total: 7 });
  assert.ok(patched.vmWallSeconds !== undefined && patched.vmWallSeconds > 0);
  assert.deepEqual([...asis.verdicts.keys()], [...patched.verdicts.keys()]);
  assert.equal([...patched.verdicts.keys()].filter(needsHugetlb).length, 22);
  // known-differences.txt parses and names only real tests.
  const known = parseKnownDifferences(readFileSync(join(HERE, 'known-differences.txt'), 'utf8'));
  for (const e of known) assert.ok(patched.verdicts.has(e.test), `known-differences.txt line ${e.line}: no test ${e.test}`);
});

test('flaky entries: not fixed when they match, reported only where the kernel passes', () => {
  const expected = new Map([
    ['a.race', ok],
    ['b.setup', notOk],
  ]);
  const known = parseKnownDifferences('a.race [flaky] close ordering\nb.setup [flaky] same race\n');
  assert.ok(known.every((e) => e.flaky));
  const cmp = compare([{ variant: 'iommufd', expected, actual: new Map(expected), partial: false }], known, { unavailable: new Map() });
  assert.deepEqual(cmp.differences, []);
  assert.deepEqual(cmp.fixed, []); // b.setup: the kernel fails it, so its race cannot show either way
  assert.deepEqual(cmp.flakyMatched.map((f) => f.entry.test), ['a.race']);
  assert.equal(parseKnownDifferences('x.y a reason mentioning [flaky] later\n')[0]!.flaky, false);
});

test('the wall-time line claims the target only against a VM run on this machine just now', () => {
  const now = formatWallTime(6.6, 16.9, { justNow: true });
  assert.match(now, /emulator 6\.6 s .* oracle VM 16\.9 s boot to power-off \(vm_wall_s, run just now on this machine\); ratio 0\.39 \(target < 0\.5\)$/);
  const recorded = formatWallTime(7.4, 10.92, { recordedIn: 'expected/iommufd.verdicts' });
  assert.match(recorded, /recorded in expected\/iommufd\.verdicts, on the machine that recorded it\); ratio 0\.68, not a same-machine figure/);
  assert.doesNotMatch(recorded, /target < 0\.5/);
  assert.match(formatWallTime(5, undefined, { justNow: true }), /ratio \? /);
});
