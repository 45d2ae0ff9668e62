/**
 * readProcText (src/host/procfs.ts): the daemon's reader for /proc/<pid>/{status,stat,limits,maps}.
 * It must return exactly what readFileSync does, for files of any length (it reads into a reused
 * buffer and grows it), and throw for a process that is gone.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { readProcText } from '../../src/host/procfs.js';

describe('readProcText', () => {
  test('a small procfs file: the same text as readFileSync', () => {
    const want = fs.readFileSync('/proc/self/status', 'latin1');
    const got = readProcText('/proc/self/status');
    // VmRSS and friends may move between the two reads; the identity lines may not.
    assert.equal(got.split('\n')[0], want.split('\n')[0]);
    assert.match(got, /^Uid:\s+\d+/m);
    assert.match(got, /^CapEff:\s+[0-9a-f]+$/m);
  });

  test('a file several times the initial 4 KiB buffer is read to its end, and a short one after it is not polluted', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iommufd-ts-procfs-'));
    try {
      const big = path.join(dir, 'big');
      const text = Array.from({ length: 3000 }, (_, i) => `line ${i} ${'x'.repeat(i % 13)}`).join('\n') + '\n';
      assert.ok(text.length > 4 * 4096);
      fs.writeFileSync(big, text, 'latin1');
      assert.equal(readProcText(big), text);
      const small = path.join(dir, 'small');
      fs.writeFileSync(small, 'tiny\n', 'latin1');
      assert.equal(readProcText(small), 'tiny\n');
      fs.writeFileSync(small, '', 'latin1');
      assert.equal(readProcText(small), '');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('/proc/self/maps, longer than one read of procfs, comes back whole', () => {
    const got = readProcText('/proc/self/maps');
    const lines = got.trimEnd().split('\n');
    assert.ok(got.length > 4096, `maps is ${got.length} bytes`);
    for (const l of lines) assert.match(l, /^[0-9a-f]+-[0-9a-f]+ [r-][w-][x-][ps] /);
    assert.ok(got.endsWith('\n'));
  });

  test('a process that is gone: the open throws ENOENT', () => {
    assert.throws(() => readProcText('/proc/999999999/stat'), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
  });
});
