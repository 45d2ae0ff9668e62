/**
 * Fuzzing the binary door: random command numbers, random struct bytes and sizes (including huge
 * values in the `size` field) at random argument pointers (a valid buffer, NULL, unmapped memory,
 * the end of a page followed by an unmapped one, a read-only page, a kernel address) go into
 * DevIommu.ioctl. Every call must return ret >= 0, or ret -1 with an errno the kernel could give
 * (KERNEL_ERRNOS below), never throw, never add to internalErrors and leave lockdep clean and
 * idle. Afterwards the context still works (IOAS_ALLOC, MAP, IOVA_RANGES, UNMAP succeed through
 * the binary door), the io_pagetable invariants hold, and close() releases everything.
 *
 * FC_NUM_RUNS raises the number of runs; failures print the seed and the shrunk call list.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DevIommu } from '../../src/api/dev-iommu.js';
import { Errno, errnoName } from '../../src/lib/errno.js';
import { lockdep } from '../../src/lib/lockdep.js';
import { SimpleFdTable } from '../../src/iommufd/file.js';
import { internalErrors } from '../../src/iommufd/main.js';
import { SimMachine } from '../../src/mm/machine.js';
import { PROT_READ, PROT_WRITE } from '../../src/mm/mman.js';
import type { SimProcess } from '../../src/mm/process.js';
import { IOMMUFD_IOCTLS, IOMMUFD_TYPE, _IO, _IOR, _IOW, _IOWR } from '../../src/uapi/ioctl.js';
import { checkClosed, checkInvariants, numRuns, type Env } from '../property/lib.js';

const PAGE = 4096n;
const U64_MAX = (1n << 64n) - 1n;

/**
 * What ioctl(2) on /dev/iommu can fail with in 6.12 (iommufd_fops_ioctl, every handler, the VFIO
 * compat path and the selftest ops):
 *   ENOTTY     unknown command, wrong direction/size bits, empty table slot, unknown VFIO ioctl (§2.1, §6)
 *   EFAULT     unreadable `size`/struct/tail, unwritable response or user array (§2.1)
 *   EINVAL     size below min_size, bad field values
 *   E2BIG      non-zero bytes past sizeof (§2.1 step 5)
 *   EOPNOTSUPP unknown flags, __reserved, op, option_id, data_type, test op
 *   ENOENT     unknown object id, unmapped IOVA
 *   EBUSY      DESTROY of a busy object, RLIMIT_MODE with objects, id space exhausted
 *   EOVERFLOW  u64 arithmetic overflow
 *   ENOSPC     no room for automatic IOVA
 *   EEXIST     fixed IOVA over an existing area
 *   EADDRINUSE reservation vs area / allowed range, alignment change vs areas
 *   EMSGSIZE   IOVA_RANGES with too small an array
 *   EPERM      RLIMIT_MODE without CAP_SYS_RESOURCE, writeable COPY of read-only pages, ACCESS prot
 *   ENOMEM     allocation, RLIMIT_MEMLOCK, ACCESS_* length > 16 MiB, fd allocation
 *   ENODEV     IOMMU_VFIO_IOAS GET without a compat IOAS, VFIO compat without an IOAS
 *   EBADF, EBADFD  fault / access fd lookups
 *   EDEADLK    unmap of an area an access never unpins
 *   EIO        MD_CHECK_REFS mismatch;  EBADE  ACCESS_PAGES page mismatch
 *   ENXIO, ENOSYS, EAGAIN  device / fault paths of other helpers' commands
 */
const KERNEL_ERRNOS = new Set<number>([
  Errno.ENOTTY,
  Errno.EFAULT,
  Errno.EINVAL,
  Errno.E2BIG,
  Errno.EOPNOTSUPP,
  Errno.ENOENT,
  Errno.EBUSY,
  Errno.EOVERFLOW,
  Errno.ENOSPC,
  Errno.EEXIST,
  Errno.EADDRINUSE,
  Errno.EMSGSIZE,
  Errno.EPERM,
  Errno.ENOMEM,
  Errno.ENODEV,
  Errno.EBADF,
  Errno.EBADFD,
  Errno.EDEADLK,
  Errno.EIO,
  Errno.EBADE,
  Errno.ENXIO,
  Errno.ENOSYS,
  Errno.EAGAIN,
]);

// ---------------------------------------------------------------------------- the arena

/** Fixed addresses, each region followed by unmapped memory so tail scans stay short. */
const BUF = 0x1000_0000n; // 2 pages RW, then a hole
const RO = 0x2000_0000n; // 1 page read-only
const EDGE = 0x3000_0000n; // 1 page RW, the next one unmapped
const DATA = 0x4000_0000n; // 16 pages RW: user VAs for MAP
const ARRAY = 0x5000_0000n; // 1 page RW: user arrays
const HOLE = 0x6000_0000n; // never mapped

function makeArena(sysResource: boolean): { machine: SimMachine; proc: SimProcess; env: Env } {
  const machine = new SimMachine();
  const proc = machine.spawn({ capabilities: sysResource ? ['CAP_SYS_RESOURCE'] : [] });
  const fixed = (addr: bigint, pages: bigint, shared = false): bigint => proc.mapAnonymous(pages * PAGE, { addr, fixed: true, shared });
  fixed(BUF, 2n);
  fixed(RO, 1n);
  proc.mprotect(RO, PAGE, PROT_READ);
  fixed(EDGE, 1n);
  fixed(DATA, 16n, true);
  fixed(ARRAY, 1n);
  const arg = proc.mapAnonymous(PAGE);
  const env: Env = { machine, proc, data: DATA, arg, array: ARRAY, ro: RO, straddle: EDGE + PAGE - 8n, unmapped: HOLE };
  return { machine, proc, env };
}

// ---------------------------------------------------------------------------- generators

const IOMMUFD_CMDS = IOMMUFD_IOCTLS.map((e) => e.cmd);

const cmdArb: fc.Arbitrary<number> = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(...IOMMUFD_CMDS) },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.constantFrom(...IOMMUFD_IOCTLS), fc.constantFrom(_IOR, _IOW, _IOWR), fc.oneof(fc.constant(-1), fc.nat({ max: 0x3fff })))
      .map(([e, mk, size]) => mk(IOMMUFD_TYPE, e.nr, size < 0 ? e.struct.size : size)),
  },
  { weight: 3, arbitrary: fc.nat({ max: 0xff }).map((nr) => _IO(IOMMUFD_TYPE, nr)) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffff_ffff }) },
  {
    weight: 1,
    arbitrary: fc.tuple(fc.nat({ max: 0xff }), fc.nat({ max: 0xff })).map(([type, nr]) => _IO(type === IOMMUFD_TYPE ? 0x3c : type, nr)),
  },
);

type PtrSel = { k: 'buf'; off: number } | { k: 'ro'; off: number } | { k: 'edge'; back: number } | { k: 'raw'; v: bigint };
const ptrArb: fc.Arbitrary<PtrSel> = fc.oneof(
  { weight: 8, arbitrary: fc.nat({ max: 4095 }).map((off): PtrSel => ({ k: 'buf', off })) },
  { weight: 2, arbitrary: fc.nat({ max: 4000 }).map((off): PtrSel => ({ k: 'ro', off })) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 80 }).map((back): PtrSel => ({ k: 'edge', back })) },
  {
    weight: 2,
    arbitrary: fc
      .constantFrom(0n, 1n, 8n, HOLE, HOLE + 0x10n, 0x7fff_ffff_fff8n, 0xffff_8000_0000_0000n, U64_MAX - 7n, U64_MAX)
      .map((v): PtrSel => ({ k: 'raw', v })),
  },
);

/** Struct content: 8-byte words that are often meaningful (ids, flags, pointers, page sizes). */
type Word = { k: 'u64'; v: bigint } | { k: 'ids'; lo: number; hi: number } | { k: 'ptr'; which: 'data' | 'array' | 'ro' | 'hole'; off: bigint };
const wordArb: fc.Arbitrary<Word> = fc.oneof(
  { weight: 3, arbitrary: fc.bigInt({ min: 0n, max: U64_MAX }).map((v): Word => ({ k: 'u64', v })) },
  { weight: 3, arbitrary: fc.constantFrom(0n, 1n, 2n, 6n, 7n, 0x1000n, 0x2000n, 0x10000n, U64_MAX, 1n << 31n).map((v): Word => ({ k: 'u64', v })) },
  { weight: 4, arbitrary: fc.tuple(fc.nat({ max: 7 }), fc.nat({ max: 7 })).map(([lo, hi]): Word => ({ k: 'ids', lo, hi })) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom<'data' | 'array' | 'ro' | 'hole'>('data', 'array', 'ro', 'hole'), fc.constantFrom(0n, 0x800n, 0x1000n, 0x123n))
      .map(([which, off]): Word => ({ k: 'ptr', which, off })),
  },
);

type SizeSel = { k: 'keep' } | { k: 'sizeof' } | { k: 'min' } | { k: 'v'; v: number };
const sizeArb: fc.Arbitrary<SizeSel> = fc.oneof(
  { weight: 3, arbitrary: fc.constant<SizeSel>({ k: 'sizeof' }) },
  { weight: 1, arbitrary: fc.constant<SizeSel>({ k: 'min' }) },
  { weight: 2, arbitrary: fc.constant<SizeSel>({ k: 'keep' }) },
  { weight: 2, arbitrary: fc.nat({ max: 300 }).map((v): SizeSel => ({ k: 'v', v })) },
  { weight: 1, arbitrary: fc.constantFrom(0xffff_ffff, 0x8000_0000, 0x10000, 8192, 4097).map((v): SizeSel => ({ k: 'v', v })) },
);

/**
 * A plausible struct for the command's nr (ids 1..4, the data buffer, page-sized lengths, valid
 * flags, the user array), built from small random picks, then a few bytes flipped: this reaches
 * the handlers' deeper paths (successful MAP/COPY/UNMAP, mock domains if the test op exists).
 */
type Template = { k: 'template'; picks: number[]; flips: [number, number][] };

function templateBytes(nr: number, t: Template): Uint8Array {
  const p = (i: number): number => t.picks[i % t.picks.length] ?? 0;
  const b = new Uint8Array(80);
  const dv = new DataView(b.buffer);
  const u32 = (o: number, v: number): void => dv.setUint32(o, v >>> 0, true);
  const u16 = (o: number, v: number): void => dv.setUint16(o, v & 0xffff, true);
  const u64 = (o: number, v: bigint): void => dv.setBigUint64(o, BigInt.asUintN(64, v), true);
  const id = (i: number): number => [1, 2, 1, 2, 3, 1, 2, 4][p(i) % 8]!;
  const page = (i: number): bigint => BigInt(p(i)) * PAGE;
  switch (nr) {
    case 0x80:
      u32(4, id(0));
      break;
    case 0x82:
      u32(4, id(0));
      u32(8, p(1) % 3);
      u64(16, ARRAY);
      break;
    case 0x83:
      u32(4, [7, 5, 6, 4, 3][p(0) % 5]!);
      u32(8, id(1));
      u32(12, id(2));
      u64(16, page(3) || PAGE);
      u64(24, page(4));
      u64(32, page(5));
      break;
    case 0x84:
      u32(4, id(0));
      u32(8, p(1) % 4);
      u64(16, ARRAY);
      break;
    case 0x85:
      u32(4, [7, 6, 3, 5][p(0) % 4]!);
      u32(8, id(1));
      u64(16, DATA + page(2));
      u64(24, page(3) || PAGE);
      u64(32, page(4));
      break;
    case 0x86:
      u32(4, id(0));
      u64(8, page(1));
      u64(16, p(2) === 0 ? U64_MAX : page(2));
      if (p(2) === 0) u64(8, 0n);
      break;
    case 0x87:
      u32(4, p(0) % 2);
      u16(8, p(1) % 2);
      u32(12, p(0) % 2 ? id(2) : 0);
      u64(16, BigInt(p(3) % 2));
      break;
    case 0x88:
      u32(4, id(0));
      u16(8, p(1) % 3);
      break;
    case 0xa0:
      u32(4, 1 + (p(0) % 15));
      u32(8, id(1));
      // The union: ids, IOVAs, the data buffer, lengths.
      for (let i = 0; i < 6; i++) {
        const v = p(2 + i);
        u64(16 + 8 * i, v < 4 ? BigInt(id(2 + i)) : v < 8 ? page(2 + i) : v < 12 ? DATA + page(3 + i) : BigInt(v) * 0x800n);
      }
      break;
    default:
      // HWPT / HW_INFO / dirty / invalidate / fault: ids and small values in every word.
      for (let o = 4; o + 4 <= 64; o += 4) u32(o, p(o) < 8 ? id(o) : 0);
  }
  for (const [off, v] of t.flips) b[off % b.length] = v;
  return b;
}

interface Call {
  cmd: number;
  ptr: PtrSel;
  /** Random bytes, structured words or a template; `len` bytes of it are written at the pointer. */
  content: { k: 'bytes'; b: Uint8Array } | { k: 'words'; w: Word[] } | Template;
  len: number;
  size: SizeSel;
}

const callArb: fc.Arbitrary<Call> = fc.record({
  cmd: cmdArb,
  ptr: ptrArb,
  content: fc.oneof(
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((b) => ({ k: 'bytes' as const, b })) },
    { weight: 1, arbitrary: fc.array(wordArb, { maxLength: 10 }).map((w) => ({ k: 'words' as const, w })) },
    {
      weight: 3,
      arbitrary: fc.record({
      k: fc.constant('template' as const),
      picks: fc.array(fc.nat({ max: 15 }), { minLength: 8, maxLength: 8 }),
        flips: fc.oneof(
          { weight: 3, arbitrary: fc.constant<[number, number][]>([]) },
          { weight: 1, arbitrary: fc.array(fc.tuple(fc.nat({ max: 79 }), fc.nat({ max: 255 })), { maxLength: 2 }) },
        ),
      }),
    },
  ),
  len: fc.nat({ max: 300 }),
  size: sizeArb,
});

// ---------------------------------------------------------------------------- running

function addrOf(p: PtrSel): bigint {
  switch (p.k) {
    case 'buf':
      return BUF + BigInt(p.off);
    case 'ro':
      return RO + BigInt(p.off);
    case 'edge':
      return EDGE + PAGE - BigInt(p.back);
    case 'raw':
      return p.v;
  }
}

function contentBytes(c: Call): Uint8Array {
  if (c.content.k === 'template') return templateBytes(c.cmd & 0xff, c.content);
  if (c.content.k === 'bytes') {
    const out = new Uint8Array(c.len);
    out.set(c.content.b.subarray(0, c.len));
    return out;
  }
  const out = new Uint8Array(Math.max(c.len, c.content.w.length * 8));
  const dv = new DataView(out.buffer);
  c.content.w.forEach((w, i) => {
    const at = i * 8;
    if (w.k === 'u64') dv.setBigUint64(at, w.v, true);
    else if (w.k === 'ids') {
      dv.setUint32(at, w.lo, true);
      dv.setUint32(at + 4, w.hi, true);
    } else {
      const base = { data: DATA, array: ARRAY, ro: RO, hole: HOLE }[w.which];
      dv.setBigUint64(at, base + w.off, true);
    }
  });
  return out;
}

function structSizes(cmd: number): { sizeof: number; min: number } {
  const e = IOMMUFD_IOCTLS.find((x) => x.cmd === (cmd >>> 0)) ?? IOMMUFD_IOCTLS.find((x) => x.nr === (cmd & 0xff));
  return e ? { sizeof: e.struct.size, min: e.minSize } : { sizeof: 8, min: 8 };
}

/** Put the call's bytes in memory (where the pointer is writable by the program or by us). */
function stage(proc: SimProcess, c: Call): bigint {
  const addr = addrOf(c.ptr);
  const bytes = contentBytes(c);
  const size: SizeSel = c.content.k === 'template' && c.size.k === 'keep' ? { k: 'sizeof' } : c.size;
  if (size.k !== 'keep' && bytes.length >= 4) {
    const s = structSizes(c.cmd);
    const v = size.k === 'sizeof' ? s.sizeof : size.k === 'min' ? s.min : size.v;
    new DataView(bytes.buffer).setUint32(0, v >>> 0, true);
  }
  if (c.ptr.k === 'buf') {
    proc.writeMem(BUF, new Uint8Array(Number(2n * PAGE)));
    proc.writeMem(addr, bytes.subarray(0, Math.min(bytes.length, Number(BUF + 2n * PAGE - addr))));
  } else if (c.ptr.k === 'ro') {
    proc.mprotect(RO, PAGE, PROT_READ | PROT_WRITE);
    proc.writeMem(RO, new Uint8Array(Number(PAGE)));
    proc.writeMem(addr, bytes.subarray(0, Math.min(bytes.length, Number(RO + PAGE - addr))));
    proc.mprotect(RO, PAGE, PROT_READ);
  } else if (c.ptr.k === 'edge') {
    proc.writeMem(addr, bytes.subarray(0, Math.min(bytes.length, c.ptr.back)));
  }
  return addr;
}

const show = (v: unknown): string =>
  JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x instanceof Uint8Array ? `<${x.length} bytes>` : x));

function checkCall(dev: DevIommu, proc: SimProcess, c: Call, where: string): void {
  const arg = stage(proc, c);
  let r;
  try {
    r = dev.ioctl(c.cmd, arg);
  } catch (e) {
    assert.fail(`${where}: ioctl(0x${(c.cmd >>> 0).toString(16)}, 0x${arg.toString(16)}) threw ${e instanceof Error ? e.stack : String(e)}`);
  }
  if (r.ret < 0) {
    assert.equal(r.ret, -1, `${where}: ret ${r.ret}`);
    assert.ok(KERNEL_ERRNOS.has(r.errno), `${where}: errno ${errnoName(r.errno)} (${r.explanation ?? ''}) is not one the kernel gives`);
  } else assert.ok(Number.isInteger(r.ret), `${where}: ret ${r.ret}`);
  assert.deepEqual(internalErrors, [], `${where}: internal error (${r.explanation ?? ''})`);
  assert.deepEqual(lockdep.violations, [], `${where}: lockdep`);
  assert.ok(lockdep.idle(), `${where}: locks still held`);
}

/** A plain ALLOC / MAP / IOVA_RANGES / UNMAP through the binary door must still work. */
function stillWorks(dev: DevIommu, proc: SimProcess, env: Env): void {
  const arg = env.arg;
  const call = (nr: number, bytes: Uint8Array): Uint8Array => {
    proc.writeMem(arg, bytes);
    const r = dev.ioctl(_IO(IOMMUFD_TYPE, nr), arg);
    assert.equal(r.ret, 0, `follow-up ioctl nr 0x${nr.toString(16)}: ${errnoName(r.errno)} ${r.explanation ?? ''}`);
    return proc.readMem(arg, bytes.length);
  };
  const alloc = new Uint8Array(12);
  new DataView(alloc.buffer).setUint32(0, 12, true);
  const ioasId = new DataView(call(0x81, alloc).buffer).getUint32(8, true);
  const map = new Uint8Array(40);
  const mv = new DataView(map.buffer);
  mv.setUint32(0, 40, true);
  mv.setUint32(4, 6, true); // READABLE | WRITEABLE, automatic IOVA
  mv.setUint32(8, ioasId, true);
  mv.setBigUint64(16, DATA, true);
  mv.setBigUint64(24, 0x2000n, true);
  const iova = new DataView(call(0x85, map).buffer).getBigUint64(32, true);
  assert.ok(iova >= PAGE && iova % 0x2000n === 0n, `auto IOVA 0x${iova.toString(16)}`);
  const ranges = new Uint8Array(32);
  const rv = new DataView(ranges.buffer);
  rv.setUint32(0, 32, true);
  rv.setUint32(4, ioasId, true);
  rv.setUint32(8, 1, true);
  rv.setBigUint64(16, ARRAY, true);
  const out = new DataView(call(0x84, ranges).buffer);
  assert.equal(out.getUint32(8, true), 1);
  assert.equal(out.getBigUint64(24, true), 1n);
  const unmap = new Uint8Array(24);
  const uv = new DataView(unmap.buffer);
  uv.setUint32(0, 24, true);
  uv.setUint32(4, ioasId, true);
  uv.setBigUint64(8, iova, true);
  uv.setBigUint64(16, 0x2000n, true);
  assert.equal(new DataView(call(0x86, unmap).buffer).getBigUint64(16, true), 0x2000n);
  const destroy = new Uint8Array(8);
  new DataView(destroy.buffer).setUint32(0, 8, true);
  new DataView(destroy.buffer).setUint32(4, ioasId, true);
  call(0x80, destroy);
}

function closeFds(dev: DevIommu): void {
  const t = dev.fds as SimpleFdTable;
  for (const fd of t.fds()) t.close(fd);
}

describe('binary door fuzz', () => {
  it('random commands, bytes, sizes and pointers: only kernel errnos, no exceptions, context still works', () => {
    const params: fc.Parameters<[Call[], boolean, boolean]> = { numRuns: numRuns(400), includeErrorInReport: true };
    if (process.env.FC_SEED) params.seed = Number(process.env.FC_SEED);
    if (process.env.FC_PATH) params.path = process.env.FC_PATH;
    fc.assert(
      fc.property(fc.array(callArb, { minLength: 1, maxLength: 30, size: 'max' }), fc.boolean(), fc.boolean(), (calls, sysResource, fdsFirst) => {
        const { proc, env } = makeArena(sysResource);
        const dev = new DevIommu(proc);
        // Something to aim at: two IOASes (ids 1 and 2) and a mapping in the first.
        stillWorks(dev, proc, env);
        for (let i = 0; i < 2; i++) {
          const b = new Uint8Array(12);
          new DataView(b.buffer).setUint32(0, 12, true);
          proc.writeMem(env.arg, b);
          assert.equal(dev.ioctl(_IO(IOMMUFD_TYPE, 0x81), env.arg).ret, 0);
        }
        calls.forEach((c, i) => checkCall(dev, proc, c, `call ${i} ${show(c)}`));
        checkInvariants(dev.ctx, env, 'after the fuzz calls');
        stillWorks(dev, proc, env);
        checkInvariants(dev.ctx, env, 'after the follow-up sequence');
        // Process exit: the iommufd and every fd the calls created (fault queues, accesses hold
        // a reference on the context), in either order.
        if (fdsFirst) closeFds(dev);
        dev.close();
        if (!fdsFirst) closeFds(dev);
        checkClosed(dev.ctx, env);
      }),
      params,
    );
  });

  it('every command number with NULL, unmapped, straddling and read-only pointers', () => {
    const { proc, env } = makeArena(false);
    const dev = new DevIommu(proc);
    const cmds = [
      ...IOMMUFD_CMDS,
      ...IOMMUFD_IOCTLS.flatMap((e) => [_IOR(IOMMUFD_TYPE, e.nr, e.struct.size), _IOW(IOMMUFD_TYPE, e.nr, e.struct.size), _IOWR(IOMMUFD_TYPE, e.nr, e.struct.size)]),
      ...Array.from({ length: 256 }, (_, nr) => _IO(IOMMUFD_TYPE, nr)),
    ];
    const ptrs: PtrSel[] = [{ k: 'raw', v: 0n }, { k: 'raw', v: HOLE }, { k: 'edge', back: 2 }, { k: 'edge', back: 8 }, { k: 'ro', off: 0 }, { k: 'raw', v: U64_MAX - 3n }];
    for (const cmd of cmds)
      for (const ptr of ptrs) {
        const c: Call = { cmd, ptr, content: { k: 'bytes', b: new Uint8Array(0) }, len: 0, size: { k: 'keep' } };
        checkCall(dev, proc, c, `cmd 0x${cmd.toString(16)} ptr ${show(ptr)}`);
      }
    // NULL: the size read faults for every nr inside the table (EFAULT), ENOTTY outside it.
    for (const e of IOMMUFD_IOCTLS) assert.equal(errnoName(dev.ioctl(e.cmd, 0n).errno), 'EFAULT', e.name);
    assert.equal(errnoName(dev.ioctl(_IO(IOMMUFD_TYPE, 0x95), 0n).errno), 'EFAULT', 'empty slot inside the table');
    assert.equal(errnoName(dev.ioctl(_IO(IOMMUFD_TYPE, 0xa1), 0n).errno), 'ENOTTY', 'past the table');
    stillWorks(dev, proc, env);
    dev.close();
    closeFds(dev);
    checkClosed(dev.ctx, env);
  });
});
