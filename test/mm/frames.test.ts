import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameKind, HUGE_PAGE_FRAMES, PhysicalMemory } from '../../src/mm/frames.js';

test('frames: deterministic pfns, lazy zero content', () => {
  const a = new PhysicalMemory();
  const b = new PhysicalMemory();
  const fa = [a.allocFrame(FrameKind.Anon), a.allocFrame(FrameKind.Anon)];
  const fb = [b.allocFrame(FrameKind.Anon), b.allocFrame(FrameKind.Anon)];
  assert.deepEqual(fa.map((f) => f.pfn), fb.map((f) => f.pfn));
  assert.notEqual(fa[0]!.pfn, fa[1]!.pfn);
  // Default stride 2: ordinary frames are never physically contiguous.
  assert.equal(fa[1]!.pfn - fa[0]!.pfn, 2);
  assert.deepEqual(fa[0]!.read(0, 8), new Uint8Array(8));
  assert.equal(a.materialized, 0);
  fa[0]!.write(0, new Uint8Array(16)); // zeros into a zero page: still nothing allocated
  assert.equal(a.materialized, 0);
  fa[0]!.write(100, new Uint8Array([7, 8]));
  assert.equal(a.materialized, 1);
  assert.deepEqual(fa[0]!.read(99, 4), new Uint8Array([0, 7, 8, 0]));
  assert.equal(fa[0]!.physAddr, BigInt(fa[0]!.pfn) * 4096n);
});

test('frames: a plain bump allocator with stride 1', () => {
  const m = new PhysicalMemory({ smallFrameStride: 1, firstPfn: 10 });
  assert.equal(m.allocFrame(FrameKind.Anon).pfn, 10);
  assert.equal(m.allocFrame(FrameKind.Anon).pfn, 11);
});

test('frames: huge pages are 512 contiguous compound frames aligned to 512', () => {
  const m = new PhysicalMemory();
  m.allocFrame(FrameKind.Anon);
  const h = m.allocHugePage(FrameKind.File);
  assert.equal(h.length, HUGE_PAGE_FRAMES);
  assert.equal(h[0]!.pfn % 512, 0);
  h.forEach((f, i) => {
    assert.equal(f.pfn, h[0]!.pfn + i);
    assert.equal(f.compound, true);
  });
  const h2 = m.allocHugePage(FrameKind.Anon);
  assert.equal(h2[0]!.pfn % 512, 0);
  assert.ok(h2[0]!.pfn > h[511]!.pfn);
  assert.equal(m.allocFrame(FrameKind.Anon).compound, false);
});

test('frames: released when nothing references them; use after free throws', () => {
  const m = new PhysicalMemory();
  const f = m.allocFrame(FrameKind.Anon);
  f.mapCount++;
  f.pinCount++;
  f.write(0, new Uint8Array([1]));
  f.mapCount--;
  f.releaseIfUnused();
  assert.equal(f.live, true, 'pinned frame survives losing its mapping');
  assert.deepEqual(f.read(0, 1), new Uint8Array([1]));
  assert.equal(m.frame(f.pfn), f);
  f.pinCount--;
  f.releaseIfUnused();
  assert.equal(f.live, false);
  assert.equal(m.frame(f.pfn), undefined);
  assert.equal(m.materialized, 0);
  assert.throws(() => f.read(0, 1), /use after free/);
});

test('frames: out-of-frame access is a RangeError', () => {
  const f = new PhysicalMemory().allocFrame(FrameKind.Anon);
  assert.throws(() => f.read(4095, 2), RangeError);
  assert.throws(() => f.write(-1, new Uint8Array(1)), RangeError);
});
