/**
 * IOMMU_IOAS_ALLOW_IOVAS (reference §2.5, §3.3, §7.14, §7.16).
 * Oracle: test/oracle/transcripts/allow-iovas.txt (b0 is 64 KiB aligned there and here).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { StagedUser } from '../../src/api/staged-user.js';
import { ioasAllowIovas } from '../../src/iommufd/ioas.js';
import { IOMMU_IOAS_ALLOC, IOMMU_IOAS_ALLOW_IOVAS } from '../../src/uapi/ioctl.js';
import { IommuIoasAlloc, IommuIoasAllowIovas, IommuIovaRange } from '../../src/uapi/iommufd.js';
import { PAGE, U64_MAX, binWorld, checkInvariants, expectIoctl, ioasOf, ioctlStruct, throwsErrno, world } from './helpers.js';

checkInvariants();

const r = (start: bigint, last: bigint) => ({ start, last });
const E5 = [r(0x300000n, 0x3fffffn), r(0x100000n, 0x1fffffn), r(0x200000n, 0x2fffffn)];

function setup() {
  const w = world();
  const id = w.fd.ioasAlloc();
  const b0 = w.p.mapAnonymous(0x10000n, { addr: 0x30000000n, fixed: true });
  const auto = () => w.fd.ioasMap({ ioasId: id, userVa: b0, length: PAGE });
  return { ...w, id, b0, auto };
}

test('invalid lists are EINVAL, naming the entry (allow-iovas.txt "start == last", "start > last", "overlapping entries", "entries sharing one byte")', () => {
  const { fd, id } = setup();
  throwsErrno(() => fd.allowIovas(id, [r(0x10000n, 0x10000n)]), 'EINVAL', /range 0 \[0x10000, 0x10000\].*single address/);
  throwsErrno(() => fd.allowIovas(id, [r(0x20000n, 0x1ffffn)]), 'EINVAL', /\[0x20000, 0x1ffff\]/);
  throwsErrno(() => fd.allowIovas(id, [r(0x100000n, 0x1fffffn), r(0x180000n, 0x27ffffn)]), 'EINVAL', /range 1 \[0x180000, 0x27ffff\] overlaps range 0 \[0x100000, 0x1fffff\]/);
  throwsErrno(() => fd.allowIovas(id, [r(0x100000n, 0x1fffffn), r(0x1fffffn, 0x2fffffn)]), 'EINVAL', /range 1 \[0x1fffff, 0x2fffff\]/);
  assert.deepEqual(ioasOf(fd, id).iopt.allowedRanges(), []);
});

test('touching unsorted entries are fine; auto MAP uses the lowest (allow-iovas.txt "touching entries, unsorted", "auto map lands in the lowest allowed range")', () => {
  const { fd, id, auto } = setup();
  fd.allowIovas(id, E5);
  // First window [0x100000, 0x3fffff] (the three merge); align = min(0x1000, lowbit(b0)) = 0x1000.
  assert.equal(auto(), 0x100000n);
});

test('a failing list keeps the old one (allow-iovas.txt "second entry invalid keeps old list", "auto map: still in old list")', () => {
  const { fd, id, auto } = setup();
  fd.allowIovas(id, E5);
  assert.equal(auto(), 0x100000n);
  throwsErrno(() => fd.allowIovas(id, [r(0x800000n, 0x8fffffn), r(0n, 0n)]), 'EINVAL', /range 1 \[0x0, 0x0\]/);
  assert.equal(auto(), 0x101000n);
});

test('num_iovas 0 clears without reading the pointer; 1 with a bad pointer is EFAULT (allow-iovas.txt "num_iovas 1 with unmapped pointer", "num_iovas 0 with unmapped pointer: clears", "auto map after clear: anywhere")', () => {
  const w = binWorld();
  expectIoctl(ioctlStruct(w, IOMMU_IOAS_ALLOC, IommuIoasAlloc, {}).r, 'OK');
  const hole = 0xdead_0000n;
  expectIoctl(ioctlStruct(w, IOMMU_IOAS_ALLOW_IOVAS, IommuIoasAllowIovas, { ioasId: 1, numIovas: 1, allowedIovas: hole }).r, 'EFAULT', /0xdead0000/);
  expectIoctl(ioctlStruct(w, IOMMU_IOAS_ALLOW_IOVAS, IommuIoasAllowIovas, { ioasId: 1, numIovas: 0, allowedIovas: hole }).r, 'OK');
});

test('clearing restores allocation anywhere (allow-iovas.txt "auto map after clear: anywhere")', () => {
  const { fd, id, auto } = setup();
  fd.allowIovas(id, E5);
  assert.equal(auto(), 0x100000n);
  fd.allowIovas(id, []);
  assert.equal(auto(), 0x1000n);
});

test('reservations may not hit allowed ranges and vice versa; EADDRINUSE keeps the old list (allow-iovas.txt "ADD_RESERVED inside allowed" .. "auto map: lowest of the new list")', () => {
  const { fd, id, auto } = setup();
  fd.allowIovas(id, E5);
  assert.equal(auto(), 0x100000n);
  throwsErrno(() => fd.testAddReserved(id, 0x250000n, 0x1000n), 'EADDRINUSE', /\[0x250000, 0x250fff\].*allowed range \[0x100000, 0x3fffff\]/);
  fd.testAddReserved(id, 0x500000n, 0x1000n);
  throwsErrno(
    () => fd.allowIovas(id, [r(0x400000n, 0x5fffffn)]),
    'EADDRINUSE',
    /allowed range \[0x400000, 0x5fffff\] intersects the reserved range \[0x500000, 0x500fff\]/,
  );
  assert.equal(auto(), 0x101000n); // "auto map: old list kept"
  fd.allowIovas(id, [r(0x501000n, 0x5fffffn), r(0x400000n, 0x4fffffn)]);
  assert.equal(auto(), 0x400000n); // "auto map: lowest of the new list"
});

test('allowed ranges are not checked against mappings, and fixed MAP ignores them (allow-iovas.txt "allowed ranges are not checked against mappings", "fixed map outside the allowed ranges is fine")', () => {
  const { fd, id, b0 } = setup();
  fd.ioasMap({ ioasId: id, userVa: b0, length: 0x10000n, iova: 0x10000n });
  fd.allowIovas(id, [r(0x10000n, 0x1ffffn)]);
  assert.equal(fd.ioasMap({ ioasId: id, userVa: b0, length: PAGE, iova: 0x40000000n }), 0x40000000n);
  // The allowed range is full: automatic allocation has nowhere to go.
  throwsErrno(() => fd.ioasMap({ ioasId: id, userVa: b0, length: PAGE }), 'ENOSPC', /0x1000.*allowed/);
});

test('__reserved before the id, the id before the entries (allow-iovas.txt "__reserved=1", "bad ioas", "bad ioas, invalid entries")', () => {
  const { fd } = setup();
  const call = (ioasId: number, reserved: number, ranges: { start: bigint; last: bigint }[]) => {
    const bytes = new Uint8Array(ranges.length * 16);
    const dv = new DataView(bytes.buffer);
    ranges.forEach((x, i) => {
      dv.setBigUint64(i * 16, x.start, true);
      dv.setBigUint64(i * 16 + 8, x.last, true);
    });
    const user = new StagedUser(fd.task.mm);
    const addr = user.stage(bytes);
    fd.call(ioasAllowIovas, IommuIoasAllowIovas.make({ size: 24, ioasId, reserved, numIovas: ranges.length, allowedIovas: addr }), user);
  };
  throwsErrno(() => call(1, 1, [r(0x10000n, 0x1ffffn)]), 'EOPNOTSUPP', /__reserved is 0x1\b/);
  throwsErrno(() => call(0xa, 0, [r(0x10000n, 0x1ffffn)]), 'ENOENT', /\b10\b/);
  throwsErrno(() => call(0xa, 0, [r(0x10000n, 0x10000n)]), 'ENOENT', /\b10\b/);
});

test('with a reservation present, [0, U64_MAX] and [0x1000, 4G) are EADDRINUSE; IOVA_RANGES ignores allowed ranges (allow-iovas.txt "allow everything", "single range [0x1000, 0xffffffff]", "IOVA_RANGES ignores allowed ranges")', () => {
  const { fd, id } = setup();
  fd.testAddReserved(id, 0x500000n, 0x1000n);
  fd.allowIovas(id, [r(0x10000n, 0x1ffffn)]);
  throwsErrno(() => fd.allowIovas(id, [r(0n, U64_MAX)]), 'EADDRINUSE', /\[0x500000, 0x500fff\]/);
  throwsErrno(() => fd.allowIovas(id, [r(0x1000n, 0xffffffffn)]), 'EADDRINUSE', /\[0x500000, 0x500fff\]/);
  assert.deepEqual(ioasOf(fd, id).iopt.allowedRanges(), [r(0x10000n, 0x1ffffn)]);
  assert.deepEqual(fd.iovaRanges(id).ranges, [r(0n, 0x4fffffn), r(0x501000n, U64_MAX)]);
});

describe('entries in array order, as iommufd_ioas_load_iovas (the first bad entry decides)', () => {
  /** The kernel's loop, naively: entry by entry, each against all the earlier ones. */
  function naive(entries: ({ start: bigint; last: bigint } | 'fault')[]): { errno: string; at: number; with?: number } {
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      if (e === 'fault') return { errno: 'EFAULT', at: i };
      if (e.start >= e.last) return { errno: 'EINVAL', at: i };
      for (let k = 0; k < i; k++) {
        const o = entries[k] as { start: bigint; last: bigint };
        if (o.start <= e.last && e.start <= o.last) return { errno: 'EINVAL', at: i, with: k };
      }
    }
    return { errno: 'OK', at: -1 };
  }

  /**
   * ALLOW_IOVAS through the binary door with the array in process memory. The first 'fault' entry
   * starts an unmapped page (nothing after it is ever read).
   */
  function run(entries: ({ start: bigint; last: bigint } | 'fault')[]) {
    const w = binWorld();
    expectIoctl(ioctlStruct(w, IOMMU_IOAS_ALLOC, IommuIoasAlloc, {}).r, 'OK');
    const n = entries.length;
    const firstFault = entries.indexOf('fault');
    const readable = firstFault < 0 ? n : firstFault;
    const buf = new Uint8Array(readable * 16);
    for (let i = 0; i < readable; i++) IommuIovaRange.encode(entries[i] as { start: bigint; last: bigint }, buf, i * 16);
    const span = BigInt(n * 16) + PAGE;
    const region = w.p.mapAnonymous(span + PAGE);
    let addr = region;
    if (firstFault >= 0) {
      addr = region + PAGE - BigInt(firstFault * 16);
      w.p.munmap(region + PAGE, span);
    }
    if (buf.length) w.p.writeMem(addr, buf);
    return ioctlStruct(w, IOMMU_IOAS_ALLOW_IOVAS, IommuIoasAllowIovas, { ioasId: 1, numIovas: n, allowedIovas: addr }).r;
  }

  test('an overlap before a fault is EINVAL; a fault before an overlap is EFAULT; a bad entry after either is not looked at', () => {
    const A = r(0x10000n, 0x1ffffn);
    expectIoctl(run([A, r(0x18000n, 0x28000n), 'fault']), 'EINVAL', /range 1 .* overlaps range 0/);
    expectIoctl(run([A, 'fault', r(0x18000n, 0x28000n)]), 'EFAULT', /allowed range 1 of 3/);
    expectIoctl(run([A, r(5n, 5n), 'fault']), 'EINVAL', /range 1 \[0x5, 0x5\]/);
    expectIoctl(run(['fault', r(5n, 5n)]), 'EFAULT', /allowed range 0 of 2/);
  });

  test('an entry spanning several earlier ones, inside one, around one, equal to one: EINVAL naming the lowest it overlaps', () => {
    const { fd, id } = setup();
    const earlier = [r(0x10000n, 0x1ffffn), r(0x30000n, 0x3ffffn), r(0x50000n, 0x5ffffn)];
    throwsErrno(() => fd.allowIovas(id, [...earlier, r(0x20000n, 0x5ffffn)]), 'EINVAL', /range 3 \[0x20000, 0x5ffff\] overlaps range 1 \[0x30000, 0x3ffff\]/);
    throwsErrno(() => fd.allowIovas(id, [...earlier, r(0x0n, U64_MAX)]), 'EINVAL', /range 3 .* overlaps range 0 \[0x10000, 0x1ffff\]/);
    throwsErrno(() => fd.allowIovas(id, [...earlier, r(0x31000n, 0x32000n)]), 'EINVAL', /overlaps range 1 /);
    throwsErrno(() => fd.allowIovas(id, [...earlier, r(0x5ffffn, 0x60000n)]), 'EINVAL', /overlaps range 2 /);
    throwsErrno(() => fd.allowIovas(id, [...earlier, r(0x50000n, 0x5ffffn)]), 'EINVAL', /range 3 .* overlaps range 2 /);
    throwsErrno(() => fd.allowIovas(id, [...earlier, r(0x40000n, 0x4ffffn), r(0x4ffffn, 0x50000n)]), 'EINVAL', /range 4 .* overlaps range 3 /);
    fd.allowIovas(id, [...earlier, r(0x20000n, 0x2ffffn), r(0x40000n, 0x4ffffn), r(0n, 0xffffn), r(0x60000n, U64_MAX)]);
    assert.equal(ioasOf(fd, id).iopt.allowedRanges().length, 7);
  });

  test('random lists: the same errno and the same entry as the kernel\'s entry-by-entry loop', () => {
    const entry = fc.oneof(
      { weight: 12, arbitrary: fc.tuple(fc.nat(64), fc.nat(8)).map(([s, l]) => r(BigInt(s) * 0x1000n, BigInt(s) * 0x1000n + BigInt(l) * 0x1000n + 0xfffn)) },
      // Empty and single-address entries.
      { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 1, max: 64 }), fc.nat(1)).map(([s, d]) => r(BigInt(s) * 0x1000n, BigInt(s) * 0x1000n - BigInt(d))) },
      { weight: 1, arbitrary: fc.constant<'fault'>('fault') },
    );
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 24 }), (entries) => {
        const want = naive(entries);
        const got = run(entries);
        if (want.errno === 'OK') return expectIoctl(got, 'OK');
        expectIoctl(got, want.errno as 'EINVAL', new RegExp(want.errno === 'EFAULT' ? `allowed range ${want.at} of` : `range ${want.at} \\[`));
        if (want.with !== undefined) {
          // The reported earlier entry is one it really overlaps.
          const k = Number(/overlaps range (\d+)/.exec(got.explanation ?? '')![1]);
          const a = entries[want.at] as { start: bigint; last: bigint };
          const b = entries[k] as { start: bigint; last: bigint };
          assert.ok(k < want.at && b.start <= a.last && a.start <= b.last, `entry ${k} does not overlap entry ${want.at}`);
        }
      }),
      { numRuns: 300 },
    );
  });

  test('100,000 entries (disjoint, unsorted) are accepted; one more overlapping the middle one is EINVAL', { timeout: 20000 }, () => {
    const { fd, id, auto } = setup();
    const N = 100_000;
    const ranges = Array.from({ length: N }, (_, i) => {
      const k = BigInt((i * 7919) % N); // a permutation of 0..N-1
      return r(0x100000n + k * 0x2000n, 0x100000n + k * 0x2000n + 0xfffn);
    });
    fd.allowIovas(id, ranges);
    const allowed = ioasOf(fd, id).iopt.allowedRanges();
    assert.equal(allowed.length, N);
    assert.deepEqual(allowed[0], r(0x100000n, 0x100fffn));
    assert.equal(auto(), 0x100000n);
    const mid = ranges[N / 2]!;
    throwsErrno(() => fd.allowIovas(id, [...ranges, r(mid.start + 0x800n, mid.last + 0x800n)]), 'EINVAL', new RegExp(`range ${N} .* overlaps range ${N / 2} `));
    assert.equal(ioasOf(fd, id).iopt.allowedRanges().length, N, 'the old list is kept');
  });
});
