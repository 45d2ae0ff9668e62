import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { IommuError } from '../../src/lib/error.js';
import {
  MemoryFault,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  SimMachine,
  type PageFrame,
  type SimFile,
  type SimProcess,
} from '../../src/mm/index.js';

const PAGE = 4096n;

type Op =
  | { t: 'mmap'; proc: number; pages: number; kind: number; prot: number }
  | { t: 'munmap'; proc: number; map: number; from: number; pages: number }
  | { t: 'mprotect'; proc: number; map: number; prot: number }
  | { t: 'write'; proc: number; map: number; off: number; len: number; kernel: boolean; value: number }
  | { t: 'read'; proc: number; map: number; off: number; len: number; kernel: boolean }
  | { t: 'pin'; proc: number; map: number; from: number; pages: number; write: boolean }
  | { t: 'unpin'; which: number }
  | { t: 'fork'; proc: number }
  | { t: 'exit'; proc: number };

const small = fc.nat({ max: 1000 });
const protArb = fc.constantFrom(PROT_READ | PROT_WRITE, PROT_READ | PROT_WRITE, PROT_READ, PROT_NONE);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ t: fc.constant('mmap' as const), proc: small, pages: fc.integer({ min: 1, max: 6 }), kind: fc.nat({ max: 3 }), prot: protArb }), weight: 4 },
  { arbitrary: fc.record({ t: fc.constant('munmap' as const), proc: small, map: small, from: fc.nat({ max: 6 }), pages: fc.integer({ min: 1, max: 4 }) }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('mprotect' as const), proc: small, map: small, prot: protArb }), weight: 1 },
  {
    arbitrary: fc.record({ t: fc.constant('write' as const), proc: small, map: small, off: fc.integer({ min: -100, max: 30000 }), len: fc.integer({ min: 1, max: 9000 }), kernel: fc.boolean(), value: fc.integer({ min: 1, max: 255 }) }),
    weight: 4,
  },
  { arbitrary: fc.record({ t: fc.constant('read' as const), proc: small, map: small, off: fc.integer({ min: -100, max: 30000 }), len: fc.integer({ min: 1, max: 9000 }), kernel: fc.boolean() }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('pin' as const), proc: small, map: small, from: fc.integer({ min: -1, max: 6 }), pages: fc.integer({ min: 1, max: 4 }), write: fc.boolean() }), weight: 4 },
  { arbitrary: fc.record({ t: fc.constant('unpin' as const), which: small }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('fork' as const), proc: small }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant('exit' as const), proc: small }), weight: 1 },
);

interface Pin {
  proc: SimProcess;
  addr: bigint;
  frames: PageFrame[];
  /** Still expected to be what the page table maps (until the range is unmapped). */
  mapped: boolean;
}

function expectOnly<T>(fn: () => T, allowed: (e: unknown) => boolean, what: string): T | undefined {
  try {
    return fn();
  } catch (e) {
    if (!allowed(e)) throw new Error(`${what} threw an unexpected ${String(e)}`, { cause: e });
    return undefined;
  }
}
const isErrno = (e: unknown) => e instanceof IommuError;
const isFault = (e: unknown) => e instanceof MemoryFault;

function run(ops: Op[]): void {
  const m = new SimMachine();
  const procs: SimProcess[] = [m.spawn()];
  const maps = new Map<SimProcess, { addr: bigint; pages: number }[]>([[procs[0]!, []]]);
  const file: SimFile = m.createShmemFile(64n * PAGE);
  const pins: Pin[] = [];
  // Start with one area of each kind so short histories still pin and copy.
  const p0 = procs[0]!;
  maps.get(p0)!.push(
    { addr: p0.mapAnonymous(4n * PAGE), pages: 4 },
    { addr: p0.mapAnonymous(4n * PAGE, { shared: true }), pages: 4 },
    { addr: p0.mapFile(file, 4n * PAGE, { shared: true }), pages: 4 },
    { addr: p0.mapFile(file, 4n * PAGE, { offset: 2n * PAGE }), pages: 4 },
  );
  const pick = <T>(arr: T[], i: number): T | undefined => (arr.length ? arr[i % arr.length] : undefined);

  const invalidate = (proc: SimProcess, start: bigint, end: bigint) => {
    for (const pin of pins) {
      if (pin.proc !== proc) continue;
      const pEnd = pin.addr + BigInt(pin.frames.length) * PAGE;
      if (pin.addr < end && start < pEnd) pin.mapped = false;
    }
  };

  for (const op of ops) {
    const proc = 'proc' in op ? pick(procs, op.proc)! : undefined;
    const pmaps = proc ? maps.get(proc)! : [];
    const mp = 'map' in op ? pick(pmaps, op.map) : undefined;
    switch (op.t) {
      case 'mmap': {
        const len = BigInt(op.pages) * PAGE;
        const addr =
          op.kind === 0 ? proc!.mapAnonymous(len, { prot: op.prot })
          : op.kind === 1 ? proc!.mapAnonymous(len, { prot: op.prot, shared: true })
          : proc!.mapFile(file, len, { prot: op.prot, shared: op.kind === 2, offset: BigInt(op.pages % 4) * PAGE });
        pmaps.push({ addr, pages: op.pages });
        break;
      }
      case 'munmap': {
        if (!mp) break;
        const start = mp.addr + BigInt(op.from % mp.pages) * PAGE;
        const len = BigInt(op.pages) * PAGE;
        proc!.munmap(start, len);
        invalidate(proc!, start, start + len);
        break;
      }
      case 'mprotect': {
        if (!mp) break;
        expectOnly(() => proc!.mprotect(mp.addr, BigInt(mp.pages) * PAGE, op.prot), isErrno, 'mprotect');
        break;
      }
      case 'write': {
        if (!mp) break;
        const addr = mp.addr + BigInt(op.off);
        const data = new Uint8Array(op.len).fill(op.value);
        if (op.kernel) expectOnly(() => proc!.mm.copyToUser(addr, data), isErrno, 'copyToUser');
        else expectOnly(() => proc!.writeMem(addr, data), isFault, 'writeMem');
        break;
      }
      case 'read': {
        if (!mp) break;
        const addr = mp.addr + BigInt(op.off);
        const r = op.kernel
          ? expectOnly(() => proc!.mm.copyFromUser(addr, op.len), isErrno, 'copyFromUser')
          : expectOnly(() => proc!.readMem(addr, op.len), isFault, 'readMem');
        if (r) assert.equal(r.length, op.len);
        break;
      }
      case 'pin': {
        if (!mp) break;
        // from = -1 starts below the area (a hole or a neighbour); otherwise stay mostly inside.
        const first = op.from < 0 ? -1 : op.from % mp.pages;
        const n = op.from < 0 || op.from >= 5 ? op.pages : Math.min(op.pages, mp.pages - first);
        const addr = mp.addr + BigInt(first) * PAGE;
        const frames = expectOnly(() => proc!.mm.pinPages(addr, n, op.write), isErrno, 'pinPages');
        if (frames) {
          assert.equal(frames.length, n);
          pins.push({ proc: proc!, addr, frames, mapped: true });
        }
        break;
      }
      case 'unpin': {
        const pin = pick(pins, op.which);
        if (!pin) break;
        pins.splice(pins.indexOf(pin), 1);
        pin.proc.mm.unpinPages(pin.frames);
        break;
      }
      case 'fork': {
        const child = proc!.fork();
        procs.push(child);
        maps.set(child, pmaps.map((x) => ({ ...x })));
        break;
      }
      case 'exit': {
        if (procs.length < 2) break;
        proc!.exit();
        procs.splice(procs.indexOf(proc!), 1);
        invalidate(proc!, 0n, 1n << 64n);
        break;
      }
    }
    // A long-term pin keeps the page table pointing at the pinned frame: no COW, fork or write
    // in any process may replace it behind the pinner's back.
    for (const pin of pins) {
      if (!pin.mapped) continue;
      pin.frames.forEach((f, i) => {
        assert.equal(pin.proc.mm.residentFrame(pin.addr + BigInt(i) * PAGE), f, `pinned page ${i} at ${pin.addr.toString(16)} replaced`);
      });
    }
  }

  for (const pin of pins) pin.proc.mm.unpinPages(pin.frames);
  for (const pin of pins) for (const f of pin.frames) assert.equal(f.pinCount, 0);
  for (const p of procs) p.exit();
  file.unlink();
  assert.equal(m.memory.liveFrames, 0, 'every frame is released once nothing holds it');
}

test('property: random memory histories only fail with errno/fault, pins balance, nothing leaks', () => {
  fc.assert(fc.property(fc.array(opArb, { maxLength: 60, size: 'max' }), run), { numRuns: 300, seed: 0x6d6d });
});

test('property: pins keep their frames across writes, forks and exits (random seed)', () => {
  fc.assert(fc.property(fc.array(opArb, { minLength: 20, maxLength: 80, size: 'max' }), run), { numRuns: 100 });
});
