/**
 * Small copies through the native helper go through a bounce view (src/host/native.ts): handing a
 * Uint8Array of at most 64 bytes (V8 keeps those on its heap) to Node-API would give it a backing
 * store per call. The bytes must still land exactly where they would without the bounce.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { bounced, bounceFor, nativeHelper, preadFd, pwriteFd } from '../../src/host/native.js';

describe('bounce views for small native copies', () => {
  test('an array of at most 64 bytes is handed over as a view of its length over the bounce buffer; a larger one as itself', () => {
    const small = new Uint8Array(40);
    const b = bounceFor(small);
    assert.notEqual(b, small);
    assert.equal(b.length, 40);
    assert.notEqual(b.buffer, small.buffer, 'a view of the one bounce buffer, not of the caller\'s array');
    assert.equal(bounceFor(new Uint8Array(40)), b, 'one view per length, reused');
    const big = new Uint8Array(65);
    assert.equal(bounceFor(big), big);
  });

  test('reads land in the caller\'s array (whole and short counts), writes take the caller\'s bytes, errors leave it alone', () => {
    const into = new Uint8Array(8).fill(0xee);
    // A read op filling the view it was given.
    assert.equal(bounced(into, false, (v) => (v.set([1, 2, 3, 4, 5, 6, 7, 8]), 8)), 8);
    assert.deepEqual([...into], [1, 2, 3, 4, 5, 6, 7, 8]);
    // A short read: only the first r bytes change.
    into.fill(0xee);
    assert.equal(bounced(into, false, (v) => (v.set([9, 9, 9]), 3)), 3);
    assert.deepEqual([...into], [9, 9, 9, 0xee, 0xee, 0xee, 0xee, 0xee]);
    // A failed read: nothing changes.
    into.fill(0xee);
    assert.equal(bounced(into, false, (v) => (v.fill(1), -14)), -14);
    assert.ok(into.every((x) => x === 0xee));
    // A write: the op sees the caller's bytes.
    const from = Uint8Array.from([5, 4, 3, 2, 1]);
    let seen: number[] = [];
    assert.equal(bounced(from, true, (v) => ((seen = [...v]), v.length)), 5);
    assert.deepEqual(seen, [5, 4, 3, 2, 1]);
  });

  test('preadFd/pwriteFd of small and large arrays move exactly their bytes', (t) => {
    if (!nativeHelper()?.pread) return t.skip('the native helper is not built');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iommufd-ts-bounce-'));
    try {
      const file = path.join(dir, 'f');
      const content = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);
      fs.writeFileSync(file, content);
      const fd = fs.openSync(file, 'r+');
      try {
        for (const [n, pos] of [[1, 0], [17, 5], [64, 100], [65, 3], [200, 50]] as const) {
          const into = new Uint8Array(n);
          assert.equal(preadFd(fd, into, pos), n);
          assert.deepEqual([...into], [...content.subarray(pos, pos + n)], `${n} bytes at ${pos}`);
        }
        // A read past the end is short; the rest of the array is untouched.
        const tail = new Uint8Array(20).fill(0xaa);
        assert.equal(preadFd(fd, tail, 290), 10);
        assert.deepEqual([...tail.subarray(0, 10)], [...content.subarray(290)]);
        assert.ok(tail.subarray(10).every((x) => x === 0xaa));
        assert.equal(pwriteFd(fd, Uint8Array.from([1, 2, 3]), 7), 3);
        assert.deepEqual([...fs.readFileSync(file).subarray(6, 11)], [content[6], 1, 2, 3, content[10]]);
      } finally {
        fs.closeSync(fd);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
