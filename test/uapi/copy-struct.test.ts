// copy_struct_from_user and the write-back rule, over a fake page-granular user memory.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { UserAccess } from '../../src/iommufd/ucmd.js';
import { Errno } from '../../src/lib/errno.js';
import { fail, IommuError } from '../../src/lib/error.js';
import {
  copyStructFromUser,
  copyStructToUser,
  firstNonZeroUserByte,
  respondBytes,
} from '../../src/uapi/copy-struct.js';
import { IommuDestroy, IommuHwptAlloc, IommuIoasMap } from '../../src/uapi/iommufd.js';

const PAGE = 4096n;

/** A sparse address space of 4 KiB pages; touching an absent page is EFAULT. */
class FakeUser implements UserAccess {
  readonly pages = new Map<bigint, Uint8Array>();
  readonly readOnly = new Set<bigint>();
  reads = 0;

  map(addr: bigint, npages = 1, readOnly = false): this {
    for (let i = 0n; i < BigInt(npages); i++) {
      const p = (addr & ~(PAGE - 1n)) + i * PAGE;
      this.pages.set(p, new Uint8Array(Number(PAGE)));
      if (readOnly) this.readOnly.add(p);
    }
    return this;
  }

  #page(addr: bigint, write: boolean): [Uint8Array, number] {
    const base = addr & ~(PAGE - 1n);
    const page = this.pages.get(base);
    if (!page || (write && this.readOnly.has(base))) fail('EFAULT', `no ${write ? 'writable ' : ''}page at 0x${base.toString(16)}`);
    return [page, Number(addr - base)];
  }

  poke(addr: bigint, data: ArrayLike<number>): void {
    for (let i = 0; i < data.length; i++) {
      const [p, o] = this.#page(addr + BigInt(i), false);
      p[o] = data[i]!;
    }
  }

  peek(addr: bigint, length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) {
      const [p, o] = this.#page(addr + BigInt(i), false);
      out[i] = p[o]!;
    }
    return out;
  }

  copyFromUser(addr: bigint, length: number): Uint8Array {
    this.reads++;
    return this.peek(addr, length);
  }

  copyToUser(addr: bigint, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) this.#page(addr + BigInt(i), true);
    for (let i = 0; i < data.length; i++) {
      const [p, o] = this.#page(addr + BigInt(i), true);
      p[o] = data[i]!;
    }
  }
}

function errOf(f: () => unknown): IommuError {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof IommuError, `expected an IommuError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected an error');
}

const BASE = 0x10000n;

describe('copyStructFromUser', () => {
  it('size == sizeof copies the struct', () => {
    const u = new FakeUser().map(BASE);
    const bytes = IommuIoasMap.encode(IommuIoasMap.make({ size: 40, ioasId: 3, iova: 0x1000n }));
    u.poke(BASE, bytes);
    assert.deepEqual(copyStructFromUser(u, BASE, 40, IommuIoasMap), bytes);
  });

  it('size < sizeof copies `size` bytes and zero-fills the rest', () => {
    const u = new FakeUser().map(BASE);
    u.poke(BASE, new Uint8Array(48).fill(0xee));
    const k = copyStructFromUser(u, BASE, 24, IommuHwptAlloc);
    assert.equal(k.length, 48);
    assert.deepEqual([...k.subarray(0, 24)], new Array(24).fill(0xee));
    assert.deepEqual([...k.subarray(24)], new Array(24).fill(0));
    const v = IommuHwptAlloc.decode(k);
    assert.equal(v.dataType, 0);
    assert.equal(v.dataUptr, 0n);
  });

  it('size < sizeof never touches memory past `size`', () => {
    // The struct's first 24 bytes end exactly at a page boundary; the next page is unmapped.
    const u = new FakeUser().map(BASE);
    const uptr = BASE + PAGE - 24n;
    assert.equal(copyStructFromUser(u, uptr, 24, IommuHwptAlloc).length, 48);
  });

  it('size 0 reads nothing', () => {
    const u = new FakeUser();
    assert.deepEqual(copyStructFromUser(u, 0n, 0, IommuDestroy), new Uint8Array(8));
    assert.equal(u.reads, 0);
  });

  it('size > sizeof with an all-zero tail is accepted', () => {
    const u = new FakeUser().map(BASE, 3);
    const bytes = IommuDestroy.encode({ size: 3 * 4096 - 16, id: 7 });
    u.poke(BASE + 16n, bytes);
    const k = copyStructFromUser(u, BASE + 16n, 3 * 4096 - 16, IommuDestroy);
    assert.deepEqual(IommuDestroy.decode(k), { size: 3 * 4096 - 16, id: 7 });
  });

  it('size > sizeof with a non-zero tail byte is E2BIG naming the byte', () => {
    const u = new FakeUser().map(BASE);
    u.poke(BASE, IommuIoasMap.encode(IommuIoasMap.make({ size: 44 })));
    u.poke(BASE + 41n, [7]);
    const e = errOf(() => copyStructFromUser(u, BASE, 44, IommuIoasMap));
    assert.equal(e.errno, Errno.E2BIG);
    assert.equal(e.explanation, 'size 44 exceeds sizeof(struct iommu_ioas_map) 40 and byte 41 of the tail is 0x7');
  });

  it('an unreadable tail is EFAULT', () => {
    // 40-byte struct ends at the page boundary; its 8-byte tail is in an unmapped page.
    const u = new FakeUser().map(BASE);
    const uptr = BASE + PAGE - 40n;
    const e = errOf(() => copyStructFromUser(u, uptr, 48, IommuIoasMap));
    assert.equal(e.errno, Errno.EFAULT);
    assert.match(e.explanation, /^size 48 exceeds sizeof\(struct iommu_ioas_map\) 40 and its tail \[40, 48\)/);
  });

  it('the first event in the tail decides: non-zero before a fault is E2BIG, after is EFAULT', () => {
    const u = new FakeUser().map(BASE);
    const uptr = BASE + PAGE - 48n; // tail: 8 bytes in the mapped page, then unmapped
    u.poke(uptr + 45n, [1]);
    assert.equal(errOf(() => copyStructFromUser(u, uptr, 200, IommuIoasMap)).errno, Errno.E2BIG);
    u.poke(uptr + 45n, [0]);
    assert.equal(errOf(() => copyStructFromUser(u, uptr, 200, IommuIoasMap)).errno, Errno.EFAULT);
  });

  it('an unreadable head is EFAULT, checked after the tail', () => {
    // Head in an unmapped page, tail [40, 4136) in the mapped page that follows it.
    const u = new FakeUser().map(BASE + PAGE);
    const uptr = BASE + PAGE - 8n;
    const e = errOf(() => copyStructFromUser(u, uptr, 4096, IommuIoasMap));
    assert.equal(e.errno, Errno.EFAULT);
    assert.match(e.explanation, /^reading the first 40 bytes of struct iommu_ioas_map/);
    // A dirty tail is reported first even though the head is unreadable.
    u.poke(BASE + PAGE + 100n, [9]);
    assert.equal(errOf(() => copyStructFromUser(u, uptr, 4096, IommuIoasMap)).errno, Errno.E2BIG);
  });

  it('an unreadable head with size < sizeof is EFAULT', () => {
    const e = errOf(() => copyStructFromUser(new FakeUser(), 0n, 8, IommuIoasMap));
    assert.equal(e.errno, Errno.EFAULT);
    assert.match(e.explanation, /first 8 bytes/);
  });

  it('errors other than EFAULT from the memory layer propagate unchanged', () => {
    const boom = new Error('boom');
    const u: UserAccess = {
      copyFromUser: () => {
        throw boom;
      },
      copyToUser: () => {},
    };
    assert.throws(() => copyStructFromUser(u, BASE, 48, IommuIoasMap), (e) => e === boom);
    assert.throws(() => copyStructFromUser(u, BASE, 8, IommuIoasMap), (e) => e === boom);
  });

  it('property: the result is the user prefix, zero-padded, or the error the rules predict', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 120 }),
        fc.uint8Array({ minLength: 120, maxLength: 120 }),
        fc.integer({ min: 0, max: 120 }),
        (size, content, dirtyFrom) => {
          const u = new FakeUser().map(BASE);
          // Only bytes before `dirtyFrom` may be non-zero.
          u.poke(BASE, content.map((b, i) => (i < dirtyFrom ? b : 0)));
          const tailDirty = content.findIndex((b, i) => i >= 40 && i < Math.min(size, dirtyFrom) && b !== 0);
          if (size > 40 && tailDirty >= 0) {
            assert.equal(errOf(() => copyStructFromUser(u, BASE, size, IommuIoasMap)).errno, Errno.E2BIG);
            return;
          }
          const k = copyStructFromUser(u, BASE, size, IommuIoasMap);
          const n = Math.min(size, 40);
          assert.deepEqual(k.subarray(0, n), u.peek(BASE, n));
          assert.ok(k.subarray(n).every((b) => b === 0));
        },
      ),
    );
  });
});

describe('firstNonZeroUserByte', () => {
  it('scans across pages', () => {
    const u = new FakeUser().map(BASE, 3);
    assert.equal(firstNonZeroUserByte(u, BASE + 10n, 3 * 4096 - 10), -1);
    u.poke(BASE + 2n * PAGE + 5n, [1]);
    assert.equal(firstNonZeroUserByte(u, BASE + 10n, 3 * 4096 - 10), 2 * 4096 + 5 - 10);
  });
});

describe('the write-back rule', () => {
  it('respondBytes = min(user size, sizeof)', () => {
    assert.equal(respondBytes(24, 48), 24);
    assert.equal(respondBytes(100, 48), 48);
    assert.equal(respondBytes(48, 48), 48);
  });

  it('writes only min(size, sizeof) bytes', () => {
    const u = new FakeUser().map(BASE);
    u.poke(BASE, new Uint8Array(64).fill(0xcc));
    const k = IommuHwptAlloc.encode(IommuHwptAlloc.make({ size: 24, outHwptId: 5, faultId: 9 }));
    copyStructToUser(u, BASE, 24, IommuHwptAlloc, k);
    assert.deepEqual(u.peek(BASE, 24), k.subarray(0, 24));
    assert.ok(u.peek(BASE + 24n, 40).every((b) => b === 0xcc));
    copyStructToUser(u, BASE, 64, IommuHwptAlloc, k);
    assert.deepEqual(u.peek(BASE, 48), k);
    assert.ok(u.peek(BASE + 48n, 16).every((b) => b === 0xcc), 'never past sizeof');
  });

  it('write-back over the kernel copy returns untouched bytes unchanged', () => {
    const u = new FakeUser().map(BASE);
    const orig = IommuIoasMap.encode(IommuIoasMap.make({ size: 40, flags: 3, userVa: 0x1234n }));
    u.poke(BASE, orig);
    const k = copyStructFromUser(u, BASE, 40, IommuIoasMap);
    const cmd = IommuIoasMap.decode(k);
    cmd.iova = 0x5000n;
    copyStructToUser(u, BASE, 40, IommuIoasMap, IommuIoasMap.encode(cmd, k));
    assert.deepEqual(IommuIoasMap.decode(u.peek(BASE, 40)), { ...IommuIoasMap.decode(orig), iova: 0x5000n });
  });

  it('an unwritable destination is EFAULT', () => {
    const u = new FakeUser().map(BASE, 1, true);
    const e = errOf(() => copyStructToUser(u, BASE, 8, IommuDestroy, new Uint8Array(8)));
    assert.equal(e.errno, Errno.EFAULT);
    assert.match(e.explanation, /^writing back 8 bytes of struct iommu_destroy/);
  });
});
