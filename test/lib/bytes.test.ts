/** The daemon's small-array allocator: zeroed, disjoint, ordinary Uint8Arrays. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { allocBytes, copyBytes, sameBytes } from '../../src/lib/bytes.js';

describe('allocBytes / copyBytes', () => {
  test('arrays are zero-filled and never overlap, whatever was written into earlier ones', () => {
    const seen: Uint8Array[] = [];
    for (const n of [0, 1, 64, 65, 72, 100, 2048, 4096, 4097, 72, 8000, 72]) {
      const a = allocBytes(n);
      assert.equal(a.length, n);
      assert.ok(a.every((b) => b === 0), `${n} bytes zero-filled`);
      a.fill(0xa5);
      seen.push(a);
    }
    // Thousands of pooled arrays span several chunks; each keeps its own bytes.
    const many = Array.from({ length: 3000 }, (_, i) => {
      const a = allocBytes(72 + (i % 50));
      a.fill(i & 0xff);
      return a;
    });
    many.forEach((a, i) => assert.ok(a.every((b) => b === (i & 0xff)), `array ${i} kept its bytes`));
    for (const a of seen) assert.ok(a.every((b) => b === 0xa5));
  });

  test('pooled arrays behave as Uint8Arrays: slice copies, a DataView needs the byteOffset', () => {
    const a = allocBytes(100);
    assert.ok(a instanceof Uint8Array && !(a instanceof Buffer));
    a[0] = 1;
    const s = a.slice(0, 10);
    s[0] = 2;
    assert.equal(a[0], 1);
    new DataView(a.buffer, a.byteOffset, a.length).setUint32(4, 0x01020304, true);
    assert.deepEqual([...a.subarray(4, 8)], [4, 3, 2, 1]);
  });

  test('small arrays are pooled too: a 1- to 64-byte array is a view into a shared chunk, not an on-heap array', () => {
    // An on-heap array would get a backing store of its own at its first subarray() or native call.
    for (const n of [1, 16, 64]) {
      const a = allocBytes(n);
      assert.equal(a.buffer.byteLength, 8192, `${n} bytes`);
      assert.equal(a.byteOffset % 8, 0);
    }
    assert.equal(allocBytes(0).length, 0);
  });

  test('copyBytes copies a range into an array of its own', () => {
    const src = Uint8Array.from({ length: 200 }, (_, i) => i);
    const c = copyBytes(src, 10, 90);
    assert.deepEqual([...c], [...src.slice(10, 90)]);
    src[10] = 255;
    assert.equal(c[0], 10);
    assert.deepEqual([...copyBytes(src)], [...src]);
  });

  test('sameBytes: equal bytes only (a secret differing in its last byte, or shorter, is not the same)', () => {
    const a = Uint8Array.from({ length: 16 }, (_, i) => i);
    assert.equal(sameBytes(a, Buffer.from(a)), true);
    const b = Uint8Array.from(a);
    b[15] = 99;
    assert.equal(sameBytes(a, b), false);
    assert.equal(sameBytes(a, a.subarray(0, 15)), false);
    assert.equal(sameBytes(new Uint8Array(0), new Uint8Array(0)), true);
  });
});
