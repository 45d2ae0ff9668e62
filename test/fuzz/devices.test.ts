/**
 * Fuzzing the device-related ioctls through the binary door (reference §2.11–§2.17): HWPT_ALLOC,
 * GET_HW_INFO, HWPT_SET_DIRTY_TRACKING, HWPT_GET_DIRTY_BITMAP, HWPT_INVALIDATE, FAULT_QUEUE_ALLOC
 * and IOMMU_TEST_CMD with every op, with random struct sizes and field values that are often
 * meaningful (live object ids, flag bits, pointers to good, read-only and unmapped memory, IOVAs
 * inside the mappings, page sizes). The context starts with mock devices (plain, NO_DIRTY,
 * HUGE_IOVA), a dirty-tracking HWPT, a NEST_PARENT HWPT with a nested child, and mappings.
 * Every call returns ret >= 0 or -1 with an errno, never throws, never adds to internalErrors, and
 * leaves lockdep clean and idle; afterwards every area is mirrored in every domain of its IOAS,
 * no area meets a reserved range, every object's users count matches its holders (test/refcounts.ts:
 * IOAS, HWPTs, DEVICE, ACCESS, FAULT, SELFTEST), and closing
 * (the fds first or last) releases everything.
 *
 * FC_NUM_RUNS raises the number of runs.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DevIommu } from '../../src/api/dev-iommu.js';
import { checkObjectUsers } from '../refcounts.js';
import type { Hwpt } from '../../src/iommufd/hw-pagetable.js';
import type { Ioas } from '../../src/iommufd/ioas.js';
import { SimpleFdTable } from '../../src/iommufd/file.js';
import { internalErrors } from '../../src/iommufd/main.js';
import { ObjType } from '../../src/iommufd/object.js';
import { testCmdStruct } from '../../src/iommufd/test-cmd.js';
import { Errno } from '../../src/lib/errno.js';
import { lockdep } from '../../src/lib/lockdep.js';
import { SimMachine } from '../../src/mm/machine.js';
import { PROT_READ } from '../../src/mm/mman.js';
import type { SimProcess } from '../../src/mm/process.js';
import {
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_TEST_CMD,
  iommufdIoctlByNr,
  _IOC_NR,
} from '../../src/uapi/ioctl.js';
import { IommuHwptAlloc, IommuIoasAlloc, IommuIoasMap } from '../../src/uapi/iommufd.js';
import { IOMMU_TEST_OP_DIRTY, IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, IommuTestCmdDirty, IommuTestCmdMockDomainFlags } from '../../src/uapi/iommufd-test.js';
import type { StructDef } from '../../src/uapi/struct.js';

const PAGE = 4096n;
const U64_MAX = (1n << 64n) - 1n;

function numRuns(dflt: number): number {
  const v = Number(process.env.FC_NUM_RUNS);
  return Number.isFinite(v) && v > 0 ? v : dflt;
}

const BUF = 0x1000_0000n; // 4 pages RW
const RO = 0x2000_0000n; // 1 page read-only
const DATA = 0x4000_0000n; // 4 MiB of hugetlb memory, mapped at 0x1000000
const HOLE = 0x6000_0000n;
const ARG = 0x7000_0000n; // the ioctl struct (2 pages RW, then a hole)

const CMDS = [
  IOMMU_HWPT_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_TEST_CMD,
];

const KNOWN_ERRNOS = new Set<number>(
  [
    'ENOTTY',
    'EFAULT',
    'EINVAL',
    'E2BIG',
    'EOPNOTSUPP',
    'ENOENT',
    'EBUSY',
    'EOVERFLOW',
    'ENOSPC',
    'EEXIST',
    'EADDRINUSE',
    'EPERM',
    'ENOMEM',
    'ENODEV',
    'EBADF',
    'EBADFD',
    'EIO',
    'EBADE',
    'EMFILE',
  ].map((n) => Errno[n as keyof typeof Errno]),
);

interface Arena {
  proc: SimProcess;
  dev: DevIommu;
}

function ioctl(a: Arena, cmd: number, def: StructDef, fields: Record<string, unknown>): Record<string, unknown> {
  const bytes = new Uint8Array(def.size);
  def.encode(def.make({ size: def.size, ...fields } as never) as never, bytes, 0);
  a.proc.writeMem(ARG, bytes);
  const r = a.dev.ioctl(cmd, ARG);
  assert.equal(r.ret, 0, `setup ${cmd.toString(16)}: ${r.explanation}`);
  return def.decode(a.proc.readMem(ARG, def.size)) as Record<string, unknown>;
}

/** A context with three mock devices, auto/dirty/parent/nested HWPTs and mappings. */
function makeArena(): Arena {
  const m = new SimMachine();
  const proc = m.spawn();
  const fixed = (addr: bigint, len: bigint, hugetlb = false) => proc.mapAnonymous(len, { addr, fixed: true, hugetlb });
  fixed(BUF, 4n * PAGE);
  fixed(RO, PAGE);
  proc.mprotect(RO, PAGE, PROT_READ);
  fixed(DATA, 4n << 20n, true);
  fixed(ARG, 2n * PAGE);
  const dev = new DevIommu(proc, {}, { testKernel: true }, new SimpleFdTable());
  const a = { proc, dev };
  const ioas = ioctl(a, IOMMU_IOAS_ALLOC, IommuIoasAlloc as unknown as StructDef, {}).outIoasId as number; // 1
  ioctl(a, IOMMU_IOAS_ALLOC, IommuIoasAlloc as unknown as StructDef, {}); // 2
  ioctl(a, IOMMU_IOAS_MAP, IommuIoasMap as unknown as StructDef, { flags: 7, ioasId: ioas, userVa: DATA, length: 2n << 20n, iova: 0x1000000n });
  const md = (flags: number) =>
    ioctl(a, IOMMU_TEST_CMD, IommuTestCmdMockDomainFlags as unknown as StructDef, { size: 72, op: IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, id: ioas, devFlags: flags });
  const d0 = md(0).outIdevId as number;
  md(1);
  md(2);
  const dirty = ioctl(a, IOMMU_HWPT_ALLOC, IommuHwptAlloc as unknown as StructDef, { devId: d0, ptId: ioas, flags: 2 }).outHwptId as number;
  const parent = ioctl(a, IOMMU_HWPT_ALLOC, IommuHwptAlloc as unknown as StructDef, { devId: d0, ptId: 2, flags: 1 }).outHwptId as number;
  proc.writeMem(BUF, Uint8Array.of(0xef, 0xbe, 0xad, 0xde));
  ioctl(a, IOMMU_HWPT_ALLOC, IommuHwptAlloc as unknown as StructDef, { devId: d0, ptId: parent, dataType: 0xdead, dataLen: 4, dataUptr: BUF });
  // Dirty tracking on, a few marks.
  ioctl(a, IOMMU_HWPT_SET_DIRTY_TRACKING, iommufdIoctlByNr(_IOC_NR(IOMMU_HWPT_SET_DIRTY_TRACKING), true)!.struct as unknown as StructDef, { flags: 1, hwptId: dirty });
  proc.writeMem(BUF + 0x100n, new Uint8Array(16).fill(0x41));
  ioctl(a, IOMMU_TEST_CMD, IommuTestCmdDirty as unknown as StructDef, {
    size: 72,
    op: IOMMU_TEST_OP_DIRTY,
    id: dirty,
    iova: 0x1000000n,
    length: 128n * 2048n,
    pageSize: 2048n,
    uptr: BUF + 0x100n,
  });
  return a;
}

type Val = { k: 'id'; v: number } | { k: 'num'; v: bigint } | { k: 'ptr'; base: 'buf' | 'ro' | 'hole' | 'data'; off: number } | { k: 'rand'; v: bigint };
const valArb: fc.Arbitrary<Val> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 12 }).map((v): Val => ({ k: 'id', v })) },
  {
    weight: 4,
    arbitrary: fc
      .constantFrom(0n, 1n, 2n, 3n, 4n, 5n, 7n, 8n, 16n, 2048n, 4096n, 1n << 20n, 0x1000000n, 0x1100000n, 0xdeadn, 0xdeadbeefn, 0xdadbeefn, 0xfeedbeefn, U64_MAX, 1n << 19n)
      .map((v): Val => ({ k: 'num', v })),
  },
  {
    weight: 3,
    arbitrary: fc
      .record({ base: fc.constantFrom('buf' as const, 'ro' as const, 'hole' as const, 'data' as const), off: fc.nat(8192) })
      .map((r): Val => ({ k: 'ptr', ...r })),
  },
  { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: U64_MAX }).map((v): Val => ({ k: 'rand', v })) },
);

interface Call {
  cmd: number;
  op: number;
  size: number | 'exact';
  vals: Val[];
  /** Random bytes written to BUF first (user arrays, bitmaps, driver data). */
  buf: Uint8Array;
  /** Start from a valid command and change only the fields with these indexes (null: all random). */
  mut: number[] | null;
}

const callArb: fc.Arbitrary<Call> = fc.record({
  cmd: fc.constantFrom(...CMDS),
  op: fc.integer({ min: 0, max: 17 }),
  size: fc.oneof({ weight: 6, arbitrary: fc.constant('exact' as const) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: 96 }) }, { weight: 1, arbitrary: fc.constantFrom(24, 32, 40, 4096, 0xffffffff) }),
  vals: fc.array(valArb, { minLength: 12, maxLength: 12 }),
  buf: fc.uint8Array({ minLength: 0, maxLength: 64 }),
  mut: fc.option(fc.array(fc.nat(9), { maxLength: 2 }), { nil: null, freq: 3 }),
});

/** A valid command of each kind, by field name (ids of the arena built by makeArena). */
function template(cmd: number, a: Arena): Record<string, bigint> {
  const ids = (t: number) => a.dev.ctx.objects.objects().filter((o) => o.finalized && o.type === t).map((o) => BigInt(o.id));
  const dev = ids(ObjType.DEVICE)[0] ?? 0n;
  const paging = ids(ObjType.HWPT_PAGING);
  const dirty = paging.find((id) => (a.dev.ctx.objects.peek(Number(id)) as Hwpt).domain?.dirtyOps) ?? 0n;
  const nested = ids(ObjType.HWPT_NESTED)[0] ?? 0n;
  switch (cmd) {
    case IOMMU_HWPT_ALLOC:
      return { devId: dev, ptId: ids(ObjType.IOAS)[0] ?? 0n, flags: 0n };
    case IOMMU_GET_HW_INFO:
      return { devId: dev, dataLen: 16n, dataUptr: BUF + 0x400n };
    case IOMMU_HWPT_SET_DIRTY_TRACKING:
      return { hwptId: dirty, flags: 1n };
    case IOMMU_HWPT_GET_DIRTY_BITMAP:
      return { hwptId: dirty, iova: 0x1000000n, length: 0x100000n, pageSize: 4096n, data: BUF + 0x400n };
    case IOMMU_HWPT_INVALIDATE:
      return { hwptId: nested, dataUptr: BUF + 0x200n, dataType: 0xdeadbeefn, entryLen: 8n, entryNum: 2n };
    case IOMMU_TEST_CMD:
      return { id: paging[0] ?? 0n, iova: 0x1000000n, length: 0x4000n, pageSize: 2048n, uptr: BUF + 0x200n, devId: dev, ptId: nested, limit: 4096n };
    default:
      return {};
  }
}

function valueOf(v: Val): bigint {
  switch (v.k) {
    case 'id':
      return BigInt(v.v);
    case 'num':
    case 'rand':
      return v.v;
    case 'ptr':
      return { buf: BUF, ro: RO, hole: HOLE, data: DATA }[v.base] + BigInt(v.off);
  }
}

/** Encode the call: each field after `size` (and after `op` for the test command) gets the next value. */
function encode(c: Call, a: Arena): Uint8Array {
  const objs = a.dev.ctx.objects.objects().filter((o) => o.finalized);
  const devIds = objs.filter((o) => o.type === ObjType.DEVICE).map((o) => o.id);
  const anyIds = objs.map((o) => o.id);
  const entry = iommufdIoctlByNr(_IOC_NR(c.cmd), true)!;
  const def = (c.cmd === IOMMU_TEST_CMD ? testCmdStruct(c.op) : entry.struct) as unknown as StructDef;
  const bytes = new Uint8Array(Math.max(def.size, 72));
  const dv = new DataView(bytes.buffer);
  let i = 0;
  for (const [name, spec] of Object.entries(def.fields)) {
    const s = spec as { kind: string; offset: number; size: number };
    if (name === 'size' || s.offset + s.size > bytes.length) continue;
    if (name === 'op') {
      dv.setUint32(s.offset, c.op, true);
      continue;
    }
    const fieldIndex = i;
    const val = c.vals[i++ % c.vals.length]!;
    const tmpl = c.mut ? template(c.cmd, a) : undefined;
    if (tmpl && !c.mut!.includes(fieldIndex)) {
      const t = tmpl[name] ?? 0n;
      if (s.kind === 'u64') dv.setBigUint64(s.offset, t, true);
      else if (s.kind === 'u32') dv.setUint32(s.offset, Number(t & 0xffff_ffffn), true);
      continue;
    }
    let v = valueOf(val);
    // Mostly-valid framing, so calls get past the first checks: reserved fields usually 0, flags small.
    if (name.startsWith('reserved') && val.k !== 'rand') v = 0n;
    if (name === 'flags' && val.k !== 'rand') v &= 7n;
    // Ids mostly name live objects of a plausible type.
    if (val.k === 'id' && /dev/i.test(name) && devIds.length) v = BigInt(devIds[val.v % devIds.length]!);
    else if (val.k === 'id' && /^(id|ptId|hwptId|faultId)$/.test(name) && anyIds.length) v = BigInt(anyIds[val.v % anyIds.length]!);
    if (s.kind === 'u64') dv.setBigUint64(s.offset, v & U64_MAX, true);
    else if (s.kind === 'u32') dv.setUint32(s.offset, Number(v & 0xffff_ffffn), true);
    else if (s.kind === 'u16') dv.setUint16(s.offset, Number(v & 0xffffn), true);
    else if (s.kind === 'u8') bytes[s.offset] = Number(v & 0xffn);
    else if (s.kind === 'bytes' && v % 3n === 1n) bytes[s.offset] = 1;
  }
  const size = c.size === 'exact' ? def.size : c.size;
  dv.setUint32(0, size >>> 0, true);
  return bytes.subarray(0, Math.min(bytes.length, Math.max(def.size, 4)));
}

function checkState(a: Arena, where: string): void {
  const ctx = a.dev.ctx;
  assert.deepEqual(internalErrors.map(String), [], `${where}: internal errors`);
  assert.deepEqual(lockdep.violations, [], `${where}: lockdep`);
  assert.ok(lockdep.idle(), `${where}: locks held`);
  const objs = ctx.objects.objects();
  for (const o of objs) {
    if (o.type !== ObjType.IOAS) continue;
    const iopt = (o as Ioas).iopt;
    for (const ar of iopt.areas.all()) {
      assert.equal(iopt.reserved.firstIntersecting(ar.iova, ar.last), undefined, `${where}: ${ar.describe()} meets a reservation`);
      for (const d of iopt.domains)
        for (let off = 0n; off < ar.length; off += 2048n)
          assert.equal(d.ops!.iovaToPhys(ar.iova + off), ar.pages.physOf(ar.startByte + off), `${where}: ${d.describe()} at ${ar.iova + off}`);
    }
  }
  // Users of every object (IOAS, HWPTs, DEVICE, ACCESS, FAULT, SELFTEST) from its holders.
  checkObjectUsers(ctx, where);
}

function closeAll(a: Arena, fdsFirst: boolean): void {
  const t = a.dev.fds as SimpleFdTable;
  const closeFds = () => {
    for (const fd of t.fds()) t.close(fd);
  };
  if (fdsFirst) closeFds();
  a.dev.close();
  if (!fdsFirst) closeFds();
  assert.ok(a.dev.ctx.released, 'context released');
  assert.equal(a.dev.ctx.objects.count, 0);
  assert.equal(a.proc.mm.pinnedVm, 0);
  assert.equal(a.proc.user.lockedVm, 0);
  assert.deepEqual(internalErrors.map(String), []);
  assert.deepEqual(lockdep.violations, []);
}

describe('fuzzing the device ioctls through the binary door', () => {
  it('errno or success, never a crash; invariants hold and close releases everything', () => {
    const params: fc.Parameters<[Call[], boolean]> = { numRuns: numRuns(150), includeErrorInReport: true };
    if (process.env.FC_SEED) params.seed = Number(process.env.FC_SEED);
    fc.assert(
      fc.property(fc.array(callArb, { minLength: 1, maxLength: 25, size: 'max' }), fc.boolean(), (calls, fdsFirst) => {
        const a = makeArena();
        checkState(a, 'setup');
        calls.forEach((c, i) => {
          if (c.buf.length) a.proc.writeMem(BUF + 0x200n, c.buf);
          a.proc.writeMem(ARG, encode(c, a));
          const r = a.dev.ioctl(c.cmd, ARG);
          const where = `call ${i} (${c.cmd.toString(16)} op ${c.op})`;
          assert.ok(r.ret >= 0 || (r.ret === -1 && KNOWN_ERRNOS.has(r.errno)), `${where}: ret ${r.ret} errno ${r.errno} ${r.explanation}`);
          checkState(a, where);
        });
        closeAll(a, fdsFirst);
      }),
      params,
    );
  });
});
