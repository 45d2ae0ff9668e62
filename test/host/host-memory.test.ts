/** Page identities, synthetic pfns and the inline struct window of the host memory model. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, test } from 'node:test';
import { IommuError } from '../../src/lib/error.js';
import { HostMemory, HostMm, InlineUser, parseMaps, type Vma } from '../../src/host/host-memory.js';

const MAPS = `55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000400000 rw-s 00000000 00:10 4242                       /anon_hugepage (deleted)
7f0000400000-7f0000410000 rw-s 00002000 00:01 77                         /dev/zero (deleted)
7f0000410000-7f0000411000 r--p 00000000 08:01 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd000f0000-7ffd000f2000 r--p 00000000 00:00 0                          [vvar]
`;

function mm(memory: HostMemory): HostMm {
  // A stand-in address space: its secret cannot be found, so it counts as gone once asked.
  return new HostMm(memory, process.pid, fs.openSync('/proc/self/mem', 'r'), 0x1000n, new Uint8Array(16).fill(7));
}

describe('host memory', () => {
  test('parseMaps', () => {
    const v = parseMaps(MAPS);
    assert.equal(v.length, 6);
    assert.deepEqual(
      { ...v[2] },
      { start: 0x7f0000400000n, end: 0x7f0000410000n, read: true, write: true, shared: true, offset: 0x2000n, dev: '00:01', inode: '77', path: '/dev/zero (deleted)' },
    );
    assert.equal(v[3]!.write, false);
    assert.equal(v[0]!.path, '[heap]');
  });

  test('classification: shared, hugetlb, private file, special', () => {
    const memory = new HostMemory();
    const v = parseMaps(MAPS);
    assert.deepEqual(v.map((x) => memory.classify(x)), ['private', 'huge-shared', 'shared', 'private', 'private', 'special']);
  });

  test('shared pages are one frame in every mapping and process; private pages are per mm', () => {
    const memory = new HostMemory();
    const [a, b] = [mm(memory), mm(memory)];
    const shm: Vma = parseMaps(MAPS)[2]!;
    const other: Vma = { ...shm, start: 0x7e0000000000n, end: 0x7e0000010000n }; // same object, another VA
    const f1 = memory.frameFor(a, shm, 'shared', shm.start + 0x3000n);
    const f2 = memory.frameFor(b, other, 'shared', other.start + 0x3000n);
    assert.equal(f1, f2);
    assert.notEqual(memory.frameFor(a, shm, 'shared', shm.start + 0x4000n), f1);
    const heap = parseMaps(MAPS)[0]!;
    const p1 = memory.frameFor(a, heap, 'private', heap.start);
    assert.equal(memory.frameFor(a, heap, 'private', heap.start), p1, 'stable while known');
    assert.notEqual(memory.frameFor(b, heap, 'private', heap.start), p1, 'another mm, another page');
  });

  test('ordinary pages are never physically contiguous; hugetlb pages are 512 aligned contiguous compound frames', () => {
    const memory = new HostMemory();
    const a = mm(memory);
    const heap = parseMaps(MAPS)[0]!;
    const pfns = [0n, 1n, 2n, 3n].map((i) => memory.frameFor(a, heap, 'private', heap.start + i * 4096n).pfn);
    for (let i = 1; i < pfns.length; i++) assert.notEqual(pfns[i], pfns[i - 1]! + 1);
    const huge = parseMaps(MAPS)[1]!;
    // Look pages up out of order: the block is still one.
    const f7 = memory.frameFor(a, huge, 'huge-shared', huge.start + 7n * 4096n);
    const f0 = memory.frameFor(a, huge, 'huge-shared', huge.start);
    const f511 = memory.frameFor(a, huge, 'huge-shared', huge.start + 511n * 4096n);
    assert.equal(f0.pfn % 512, 0);
    assert.equal(f7.pfn, f0.pfn + 7);
    assert.equal(f511.pfn, f0.pfn + 511);
    assert.ok(f0.compound && f7.compound);
    const second = memory.frameFor(a, huge, 'huge-shared', huge.start + 512n * 4096n);
    assert.equal(second.pfn % 512, 0);
    assert.notEqual(second.pfn, f0.pfn);
    const hp: Vma = { ...heap, start: 0x7f1000000000n, end: 0x7f1000400000n };
    const q3 = memory.frameFor(a, hp, 'huge-private', hp.start + 3n * 4096n);
    const q0 = memory.frameFor(a, hp, 'huge-private', hp.start);
    assert.equal(q0.pfn % 512, 0);
    assert.equal(q3.pfn, q0.pfn + 3);
  });

  test('sweep: past the bound, unpinned shared frames not looked at in this request are forgotten; pinned ones and their identity stay', () => {
    const memory = new HostMemory();
    const a = mm(memory);
    const shm = parseMaps(MAPS)[2]!;
    const pinned = memory.frameFor(a, shm, 'shared', shm.start);
    pinned.pinCount++;
    const loose = memory.frameFor(a, shm, 'shared', shm.start + 0x1000n);
    assert.equal(loose.key, 's00:01:77:3', 'identity: object and file page (offset 0x2000 + 0x1000)');
    assert.equal(memory.frameCount, 2);
    memory.beginRequest();
    memory.sweep(1);
    assert.equal(memory.frameCount, 1);
    assert.equal(memory.frameFor(a, shm, 'shared', shm.start), pinned, 'the pinned frame is still the page');
    assert.notEqual(memory.frameFor(a, shm, 'shared', shm.start + 0x1000n).pfn, loose.pfn, 'a forgotten page gets a new pfn');
    // Through another mapping of the same object (a new Vma): still the same frames.
    const again: Vma = { ...shm };
    assert.equal(memory.frameFor(a, again, 'shared', again.start), pinned);
    // Every frame of the object forgotten: its map goes too, and a cached Vma does not keep using it.
    pinned.pinCount--;
    memory.beginRequest();
    memory.sweep(0);
    assert.equal(memory.frameCount, 0);
    const fresh = memory.frameFor(a, shm, 'shared', shm.start);
    assert.notEqual(fresh, pinned);
    assert.equal(memory.frameFor(a, again, 'shared', again.start), fresh, 'both mappings find the new frame');
  });

  test('pins are counted per identity', () => {
    const memory = new HostMemory();
    const a = mm(memory);
    const shm = parseMaps(MAPS)[2]!;
    const f = memory.frameFor(a, shm, 'shared', shm.start);
    f.pinCount++;
    assert.equal(memory.pinnedFrameCount(), 1);
    a.unpinPages([f]);
    assert.equal(memory.pinnedFrameCount(), 0);
    assert.throws(() => a.unpinPages([f]), /not pinned/);
  });

  test('InlineUser: the struct window serves reads, collects writes, refuses its read-only tail', () => {
    const memory = new HostMemory();
    const a = mm(memory);
    const base = 0x7000_0000_1000n;
    const inline = Uint8Array.from({ length: 24 }, (_, i) => i);
    const u = new InlineUser(a, base, inline, 16);
    assert.deepEqual([...u.copyFromUser(base + 4n, 4)], [4, 5, 6, 7]);
    u.copyToUser(base + 8n, Uint8Array.of(0xaa, 0xbb));
    assert.deepEqual(u.dirty(), { off: 8, bytes: Uint8Array.of(0xaa, 0xbb) });
    assert.deepEqual([...u.copyFromUser(base + 8n, 2)], [0xaa, 0xbb], 'reads see earlier writes');
    assert.throws(() => u.copyToUser(base + 14n, new Uint8Array(4)), (e: unknown) => e instanceof IommuError && e.errnoName === 'EFAULT');
    // Past the window the process itself is asked (this stand-in mm is gone: EFAULT).
    assert.throws(() => u.copyFromUser(base + 20n, 8), (e: unknown) => e instanceof IommuError && e.errnoName === 'EFAULT');
    assert.equal(inline[8], 8, 'the request buffer itself is untouched');
    // The size field without a copy: only at the struct's start, only if its 4 bytes arrived.
    assert.equal(u.peekU32(base), 0x03020100);
    assert.equal(u.peekU32(base + 4n), undefined);
    assert.equal(new InlineUser(a, base, Uint8Array.of(1, 2, 3), 3).peekU32(base), undefined);
  });

  test('InlineUser: the pointed-to window serves reads from what arrived, stages writes, retires on a partial overlap', () => {
    // A stand-in for the process: records what reaches it.
    const calls: string[] = [];
    const proc = new Map<bigint, number>();
    const fake = {
      copyFromUser(addr: bigint, n: number): Uint8Array {
        calls.push(`read ${addr - win}+${n}`);
        return Uint8Array.from({ length: n }, (_, i) => proc.get(addr + BigInt(i)) ?? 0xee);
      },
      copyToUser(addr: bigint, data: Uint8Array): void {
        calls.push(`write ${addr - win}+${data.length}`);
        data.forEach((b, i) => proc.set(addr + BigInt(i), b));
      },
    } as unknown as HostMm;
    const base = 0x7000_0000_1000n;
    const win = 0x7000_0000_8000n;
    const arrived = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8]);
    const u = new InlineUser(fake, base, new Uint8Array(16), 16, { addr: win, size: 16, bytes: arrived, writable: true });
    assert.deepEqual([...u.copyFromUser(win + 2n, 4)], [3, 4, 5, 6], 'inside what arrived: no access to the process');
    u.copyToUser(win + 8n, Uint8Array.of(9, 9, 9));
    assert.deepEqual(u.windowDirty(), { off: 8, bytes: Uint8Array.of(9, 9, 9) });
    assert.deepEqual([...u.copyFromUser(win + 8n, 3)], [9, 9, 9], 'what the call staged reads back');
    assert.deepEqual(calls, []);
    // Reading past what arrived and was staged: the staged bytes are written back first, then the process answers.
    assert.deepEqual([...u.copyFromUser(win + 6n, 8)], [0xee, 0xee, 9, 9, 9, 0xee, 0xee, 0xee]);
    assert.deepEqual(calls, ['write 8+3', 'read 6+8']);
    assert.equal(u.windowDirty(), undefined, 'retired: nothing left for the shim to apply');
    u.copyToUser(win, Uint8Array.of(1));
    assert.deepEqual(calls.at(-1), 'write 0+1', 'a retired window is the process again');

    // A window whose bytes the call only reads: a write there goes to the process and retires it.
    calls.length = 0;
    const r = new InlineUser(fake, base, new Uint8Array(16), 16, { addr: win, size: 8, bytes: arrived, writable: false });
    r.copyToUser(win + 1n, Uint8Array.of(0x55));
    assert.deepEqual(calls, ['write 1+1']);
    r.copyFromUser(win, 2);
    assert.deepEqual(calls, ['write 1+1', 'read 0+2'], 'later reads see the write: the process is asked');

    // A window over the struct itself is not used.
    calls.length = 0;
    const s2 = new InlineUser(fake, win, new Uint8Array(16), 16, { addr: win + 4n, size: 8, bytes: arrived, writable: true });
    s2.copyToUser(win + 4n, Uint8Array.of(7));
    assert.deepEqual(s2.windowDirty(), undefined);
    assert.deepEqual(s2.dirty(), { off: 4, bytes: Uint8Array.of(7) });
  });
});
