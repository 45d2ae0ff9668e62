import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FakeMemoryTarget, PlaybackTarget, parseLine } from './fake-target.js';
import { mapAligned, replay } from './replay.js';
import {
  SCENARIO_DIR,
  TRANSCRIPT_DIR,
  ScenarioError,
  listScenarios,
  loadLayout,
  loadScenarioFile,
  parseExpr,
  parseScenario,
  evalExpr,
  transcriptLines,
} from './scenario.js';

const layout = loadLayout();

describe('oracle scenario format', () => {
  it('evaluates expressions left to right over u64', () => {
    const env = { saved: (n: string) => (n === 'x' ? 5n : 0n), buf: () => 0x7f0000001000n, unmapped: () => 0n };
    assert.equal(evalExpr(parseExpr('0x10+$x|0x100', layout, 't'), env), 0x115n);
    assert.equal(evalExpr(parseExpr('-1', layout, 't'), env), (1n << 64n) - 1n);
    assert.equal(evalExpr(parseExpr('buf:b0+0x10', layout, 't'), env), 0x7f0000001010n);
    assert.equal(evalExpr(parseExpr('IOMMU_IOAS_MAP_READABLE|IOMMU_IOAS_MAP_WRITEABLE', layout, 't'), env), 6n);
    assert.equal(parseExpr('buf:b0+1', layout, 't').isPointer, true);
    assert.throws(() => parseExpr('FOO', layout, 't'), ScenarioError);
  });

  it('rejects unknown structs, fields and references', () => {
    assert.throws(() => parseScenario('x', [{ open: 'f0' }, { ioctl: 'IOMMU_DESTROY', struct: 'nope' }]), ScenarioError);
    assert.throws(
      () => parseScenario('x', [{ open: 'f0' }, { ioctl: 'IOMMU_DESTROY', struct: 'iommu_destroy', fields: { idd: 1 } }]),
      ScenarioError,
    );
    assert.throws(
      () => parseScenario('x', [{ open: 'f0' }, { ioctl: 'IOMMU_DESTROY', struct: 'iommu_destroy', fields: { id: '$nope' } }]),
      ScenarioError,
    );
  });

  it('prints only the union members a test command uses', () => {
    const sc = parseScenario('x', [
      { open: 'f0' },
      { ioctl: 'IOMMU_TEST_CMD', struct: 'iommu_test_cmd', fields: { op: 1, 'add_reserved.start': 0 } },
    ]);
    const st = sc.steps[1]!;
    assert.equal(st.kind, 'ioctl');
    if (st.kind === 'ioctl')
      assert.deepEqual(st.printFields, ['size', 'op', 'id', '__reserved', 'add_reserved.start', 'add_reserved.length', 'last']);
  });

  it('maps buffers with the requested lowest set bit', () => {
    const t = new FakeMemoryTarget();
    for (const align of [0x1000n, 0x10000n, 0x200000n]) {
      const { addr } = mapAligned(t, 0x3000n, 'private', align);
      assert.equal(addr & (2n * align - 1n), align);
      t.write(addr + 0x2fffn, Uint8Array.of(1));
    }
  });
});

describe('oracle replay against a fake target', () => {
  it('prints one well-formed line per step with a target that knows no ioctl', () => {
    const sc = parseScenario('enotty', {
      steps: [
        { open: 'f0' },
        { mmap: 'b0', length: '0x4000', fill: 0xaa },
        { array: 'r0', struct: 'iommu_iova_range', count: 2, items: [{ start: '0x1000', last: '0x1fff' }] },
        {
          label: 'MAP',
          ioctl: 'IOMMU_IOAS_MAP',
          struct: 'iommu_ioas_map',
          fields: { flags: 7, ioas_id: 1, user_va: 'buf:b0+0x1000', length: '0x1000', iova: '0x10000' },
          tail: '00 07',
          size: 42,
        },
        { label: 'ALLOW', ioctl: 'IOMMU_IOAS_ALLOW_IOVAS', struct: 'iommu_ioas_allow_iovas', fields: { ioas_id: 1, num_iovas: 1, allowed_iovas: 'buf:r0' }, print_buffers: [{ buf: 'r0', struct: 'iommu_iova_range', count: 2 }, { buf: 'b0', length: 4 }] },
        { label: 'NULL arg', ioctl: 'IOMMU_DESTROY', arg: 'null' },
        { label: 'raw', ioctl: '0x3b8f', struct: 'iommu_destroy', readable: 4 },
        { munmap: 'b0' },
        { close: 'f0' },
      ],
    });
    const t = new FakeMemoryTarget();
    const lines = replay(sc, t);
    assert.deepEqual(lines, [
      'open f0 | ret=0 errno=OK',
      'mmap b0 | ret=0 errno=OK',
      'array r0 | ret=0 errno=OK',
      'MAP | ret=-1 errno=ENOTTY | size=0x2a flags=0x7 ioas_id=0x1 __reserved=0x0 user_va=buf:b0+0x1000 length=0x1000 iova=0x10000 tail=00 07',
      'ALLOW | ret=-1 errno=ENOTTY | size=0x18 ioas_id=0x1 num_iovas=0x1 __reserved=0x0 allowed_iovas=buf:r0+0x0 | r0+0x0=[{start=0x1000 last=0x1fff} {start=0x0 last=0x0}] ; b0+0x0=[aa aa aa aa]',
      'NULL arg | ret=-1 errno=ENOTTY | -',
      'raw | ret=-1 errno=ENOTTY | size=0x8 id=0x0',
      'munmap b0 | ret=0 errno=OK',
      'close f0 | ret=0 errno=OK',
    ]);
    assert.equal(t.calls.length, 4);
    assert.equal(t.calls[0]!.cmd, 0x3b85);
    assert.equal(t.calls[2]!.arg, 0n);
    assert.equal(t.calls[3]!.cmd, 0x3b8f);
    for (const l of lines) assert.doesNotThrow(() => parseLine(l));
  });
});

describe('oracle transcripts', () => {
  const names = listScenarios();
  it('every scenario parses and has a transcript with one line per step', () => {
    assert.ok(names.length > 0);
    for (const name of names) {
      const sc = loadScenarioFile(join(SCENARIO_DIR, `${name}.json`));
      const tx = join(TRANSCRIPT_DIR, `${name}.txt`);
      assert.ok(existsSync(tx), `${name}: no transcript (run tools/oracle/run.sh ${name})`);
      const text = readFileSync(tx, 'utf8');
      assert.match(text.split('\n')[0]!, /^# oracle: Linux 6\.12\.117, /, `${name}: header`);
      assert.equal(transcriptLines(text).length, sc.steps.length, `${name}: line count`);
    }
  });

  for (const name of names) {
    it(`replay formats ${name} exactly like the oracle's C program`, () => {
      const sc = loadScenarioFile(join(SCENARIO_DIR, `${name}.json`));
      const expected = transcriptLines(readFileSync(join(TRANSCRIPT_DIR, `${name}.txt`), 'utf8'));
      const actual = replay(sc, new PlaybackTarget(sc, expected, layout));
      // buffers written by the kernel (dumps) are not played back: compare up to the dump part
      const strip = (l: string) => l.split(' | ').slice(0, 3).join(' | ');
      assert.deepEqual(actual.map(strip), expected.map(strip));
    });
  }
});
