/**
 * The typed door with out-of-range arguments: negative bigints, bigints of 2^64 and more, numbers
 * of 2^32 and more, negative and fractional numbers, numbers where bigints are expected.
 *
 * The C ABI has __u32/__u64 fields, so the typed door must behave as if each value had been stored
 * into its field, like the binary door's encoder does.
 *  1. IOAS commands through the typed methods (ioasAlloc, destroy, ioasMap, ioasCopy, ioasUnmap,
 *     allowIovas, testAddReserved, setHugePages, testMockDomain) agree with the binary door given
 *     the same raw values encoded by the struct codec: same errno, same state (test/property/lib
 *     snapshot), and the invariants of lib's checkInvariants hold on both contexts.
 *  2. Every typed-door method (devices, HWPTs, fault queues, accesses included) with such
 *     arguments only ever throws IommuError, leaves no internal error behind, and keeps the
 *     invariants; close() (then unbinding the kAPI devices) releases everything.
 *
 * FC_NUM_RUNS raises the number of runs; FC_SEED / FC_PATH replay a failure.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ArmSmmuV3Driver } from '../../src/drivers/arm-smmu-v3.js';
import { IommuError } from '../../src/lib/error.js';
import { ObjType } from '../../src/iommufd/object.js';
import { RLIM_INFINITY } from '../../src/mm/types.js';
import { IommuTestCmdAddReserved, IommuTestCmdMockDomainFlags } from '../../src/uapi/iommufd-test.js';
import {
  IommuDestroy,
  IommuIoasAlloc,
  IommuIoasAllowIovas,
  IommuIoasCopy,
  IommuIoasMap,
  IommuIoasUnmap,
  IommuIovaRange,
  IommuOption,
} from '../../src/uapi/iommufd.js';
import type { StructDef } from '../../src/uapi/struct.js';
import {
  DATA_PAGES,
  DevIommu,
  Iommufd,
  checkClosed,
  checkInvariants,
  errnoText,
  ioctlNumber,
  makeEnv,
  numRuns,
  snapshot,
  type Env,
} from './lib.js';

const PAGE = 4096n;
const TWO64 = 1n << 64n;
const TWO32 = 2 ** 32;

const params = <T>(runs: number): fc.Parameters<T> => {
  const p: fc.Parameters<T> = { numRuns: numRuns(runs), includeErrorInReport: true };
  if (process.env.FC_SEED) p.seed = Number(process.env.FC_SEED);
  if (process.env.FC_PATH) p.path = process.env.FC_PATH;
  return p;
};

/** A typical u64 value, or the same value plus or minus a multiple of 2^64, or anything. */
function wildBig(typical: fc.Arbitrary<bigint>): fc.Arbitrary<bigint> {
  return fc.oneof(
    { weight: 4, arbitrary: typical },
    { weight: 2, arbitrary: typical.map((v) => v - TWO64) },
    { weight: 1, arbitrary: fc.tuple(typical, fc.integer({ min: 1, max: 3 })).map(([v, k]) => v + BigInt(k) * TWO64) },
    { weight: 1, arbitrary: fc.constantFrom(-1n, -PAGE, -TWO64, TWO64, TWO64 - 1n, 1n << 70n, -(1n << 70n), -(1n << 63n)) },
    { weight: 1, arbitrary: fc.bigInt({ min: -(1n << 80n), max: 1n << 80n }) },
  );
}

/** A typical u32 value, or the same value plus or minus 2^32, or a negative, huge or fractional number. */
function wildNum(typical: fc.Arbitrary<number>): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 4, arbitrary: typical },
    { weight: 2, arbitrary: typical.map((v) => v + TWO32) },
    { weight: 1, arbitrary: typical.map((v) => v - TWO32) },
    { weight: 1, arbitrary: typical.map((v) => v + 0.5) },
    { weight: 1, arbitrary: fc.constantFrom(-1, -2, TWO32, 2 ** 53, -(2 ** 31), 2 ** 40 + 1) },
    { weight: 1, arbitrary: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }).map((v) => v * 3) },
  );
}

const idArb = wildNum(fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 1, max: 2 }) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: 8 }) }));
const iovaArb = wildBig(fc.oneof(fc.integer({ min: 0, max: 32 }).map((n) => BigInt(n) * PAGE), fc.constantFrom(0x1000000n, 0x1004000n, TWO64 - PAGE)));
const lengthArb = wildBig(fc.oneof(fc.integer({ min: 0, max: 8 }).map((n) => BigInt(n) * PAGE), fc.constantFrom(1n, 0x800n, TWO64 - 1n)));
const vaOffArb = wildBig(fc.integer({ min: 0, max: DATA_PAGES }).map((n) => BigInt(n) * PAGE));
const flagsArb = wildNum(fc.constantFrom(0, 0, 0, 1, 2));
const rangeArb = fc.record({ start: iovaArb, last: iovaArb });

// ================================================================================ 1. the doors agree

type IoasOp =
  | { t: 'alloc'; flags: number }
  | { t: 'destroy'; id: number }
  | { t: 'map'; ioas: number; va: bigint; length: bigint; iova: bigint | null; r: boolean; w: boolean }
  | { t: 'copy'; dst: number; src: number; srcIova: bigint; length: bigint; dstIova: bigint | null; r: boolean; w: boolean; at: Alias | null }
  | { t: 'unmap'; ioas: number; iova: bigint; length: bigint; at: Alias | null }
  | { t: 'allow'; ioas: number; ranges: { start: bigint; last: bigint }[] }
  | { t: 'reserve'; ioas: number; start: bigint; length: bigint }
  | { t: 'huge'; ioas: number; on: boolean }
  | { t: 'mock'; pt: number; devFlags: number };

/** Aim at the n-th area of the IOAS: its IOVA and length, each plus a multiple of 2^64 (k, l). */
type Alias = { n: number; k: number; l: number };
const aliasArb: fc.Arbitrary<Alias | null> = fc.option(fc.record({ n: fc.nat(4), k: fc.integer({ min: -2, max: 2 }), l: fc.integer({ min: -2, max: 2 }) }), { nil: null, freq: 2 });

/** Resolve `at` against the typed door's context (the binary one has the same areas). */
function aim(ctx: Iommufd['ctx'], ioasId: number, at: Alias | null, iova: bigint, length: bigint): { iova: bigint; length: bigint } {
  if (!at) return { iova, length };
  const obj = ctx.objects.peek(ioasId >>> 0);
  const areas = obj?.type === ObjType.IOAS ? [...(obj as unknown as { iopt: { areas: { all(): Iterable<{ iova: bigint; length: bigint }> } } }).iopt.areas.all()] : [];
  const a = areas[at.n % Math.max(1, areas.length)];
  if (!a) return { iova, length };
  return { iova: a.iova + BigInt(at.k) * TWO64, length: a.length + BigInt(at.l) * TWO64 };
}

const ioasOpArb: fc.Arbitrary<IoasOp> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ t: fc.constant('alloc' as const), flags: flagsArb }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('destroy' as const), id: idArb }) },
  {
    weight: 6,
    arbitrary: fc.record({
      t: fc.constant('map' as const),
      ioas: idArb,
      va: vaOffArb,
      length: lengthArb,
      iova: fc.option(iovaArb, { nil: null }),
      r: fc.oneof({ weight: 4, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      w: fc.boolean(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('copy' as const),
      dst: idArb,
      src: idArb,
      srcIova: iovaArb,
      length: lengthArb,
      dstIova: fc.option(iovaArb, { nil: null }),
      r: fc.boolean(),
      w: fc.boolean(),
      at: aliasArb,
    }),
  },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('unmap' as const), ioas: idArb, iova: iovaArb, length: lengthArb, at: aliasArb }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('allow' as const), ioas: idArb, ranges: fc.array(rangeArb, { maxLength: 3 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('reserve' as const), ioas: idArb, start: iovaArb, length: lengthArb }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('huge' as const), ioas: idArb, on: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('mock' as const), pt: idArb, devFlags: wildNum(fc.constantFrom(0, 1, 2)) }) },
);

const mapFlags = (fixed: boolean, r: boolean, w: boolean): number => (fixed ? 1 : 0) | (w ? 2 : 0) | (r ? 4 : 0);

/** The typed door's call for an op, with the raw values. */
function runTypedOp(env: Env, fd: Iommufd, op: IoasOp): void {
  switch (op.t) {
    case 'alloc':
      fd.ioasAlloc(op.flags);
      return;
    case 'destroy':
      fd.destroy(op.id);
      return;
    case 'map':
      fd.ioasMap({ ioasId: op.ioas, userVa: env.data + op.va, length: op.length, readable: op.r, writeable: op.w, ...(op.iova !== null ? { iova: op.iova } : {}) });
      return;
    case 'copy':
      fd.ioasCopy({
        dstIoasId: op.dst,
        srcIoasId: op.src,
        srcIova: op.srcIova,
        length: op.length,
        readable: op.r,
        writeable: op.w,
        ...(op.dstIova !== null ? { dstIova: op.dstIova } : {}),
      });
      return;
    case 'unmap':
      fd.ioasUnmap(op.ioas, op.iova, op.length);
      return;
    case 'allow':
      fd.allowIovas(op.ioas, op.ranges);
      return;
    case 'reserve':
      fd.testAddReserved(op.ioas, op.start, op.length);
      return;
    case 'huge':
      fd.setHugePages(op.ioas, op.on);
      return;
    case 'mock':
      fd.testMockDomain(op.pt, op.devFlags);
      return;
  }
}

/** The same op as bytes: the raw values encoded by the struct codec (which truncates like C). */
function binaryCmd(env: Env, op: IoasOp): { nr: number; def: StructDef; fields: Record<string, unknown>; array?: Uint8Array } {
  switch (op.t) {
    case 'alloc':
      return { nr: 0x81, def: IommuIoasAlloc as never, fields: { flags: op.flags } };
    case 'destroy':
      return { nr: 0x80, def: IommuDestroy as never, fields: { id: op.id } };
    case 'map':
      return {
        nr: 0x85,
        def: IommuIoasMap as never,
        fields: { flags: mapFlags(op.iova !== null, op.r, op.w), ioasId: op.ioas, userVa: env.data + op.va, length: op.length, iova: op.iova ?? 0n },
      };
    case 'copy':
      return {
        nr: 0x83,
        def: IommuIoasCopy as never,
        fields: { flags: mapFlags(op.dstIova !== null, op.r, op.w), dstIoasId: op.dst, srcIoasId: op.src, length: op.length, dstIova: op.dstIova ?? 0n, srcIova: op.srcIova },
      };
    case 'unmap':
      return { nr: 0x86, def: IommuIoasUnmap as never, fields: { ioasId: op.ioas, iova: op.iova, length: op.length } };
    case 'allow': {
      const array = new Uint8Array(op.ranges.length * 16);
      op.ranges.forEach((r, i) => IommuIovaRange.encode({ start: r.start, last: r.last }, array, i * 16));
      return { nr: 0x82, def: IommuIoasAllowIovas as never, fields: { ioasId: op.ioas, numIovas: op.ranges.length, allowedIovas: env.array }, array };
    }
    case 'reserve':
      return { nr: 0xa0, def: IommuTestCmdAddReserved as never, fields: { size: 72, op: 1, id: op.ioas, start: op.start, length: op.length } };
    case 'huge':
      return { nr: 0x87, def: IommuOption as never, fields: { optionId: 1, op: 0, objectId: op.ioas, val64: op.on ? 1n : 0n } };
    case 'mock':
      return { nr: 0xa0, def: IommuTestCmdMockDomainFlags as never, fields: { size: 72, op: 12, id: op.pt, devFlags: op.devFlags } };
  }
}

function errnoOfCall(fn: () => void): number {
  try {
    fn();
    return 0;
  } catch (e) {
    if (!(e instanceof IommuError)) throw e;
    return e.errno;
  }
}

const show = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x < 0n ? '-' : ''}0x${(x < 0n ? -x : x).toString(16)}` : x));

function runAgree(ops: IoasOp[]): void {
  const env = makeEnv({ rlimitMemlock: RLIM_INFINITY });
  const typed = new Iommufd(env.proc, { name: 'typed' });
  const bin = new DevIommu(env.proc, { name: 'binary' });
  ops.forEach((op0, i) => {
    let op = op0;
    if (op.t === 'copy') {
      const r = aim(typed.ctx, op.src, op.at, op.srcIova, op.length);
      op = { ...op, srcIova: r.iova, length: r.length };
    } else if (op.t === 'unmap') {
      const r = aim(typed.ctx, op.ioas, op.at, op.iova, op.length);
      op = { ...op, iova: r.iova, length: r.length };
    }
    const where = `step ${i} ${show(op)}`;
    const te = errnoOfCall(() => runTypedOp(env, typed, op));
    const c = binaryCmd(env, op);
    if (c.array) env.proc.writeMem(env.array, c.array);
    const bytes = c.def.encode(c.def.make({ size: c.def.size, ...c.fields } as never));
    env.proc.writeMem(env.arg, bytes);
    const r = bin.ioctl(ioctlNumber(c.nr), env.arg);
    const be = r.ret < 0 ? r.errno : 0;
    assert.equal(errnoText(te), errnoText(be), `${where}: typed ${errnoText(te)} (${typed.ctx.lastError?.explanation ?? ''}), binary ${errnoText(be)} (${r.explanation ?? ''})`);
    assert.deepEqual(snapshot(typed.ctx), snapshot(bin.ctx), `${where}: state differs`);
    checkInvariants(typed.ctx, env, where, [bin.ctx]);
  });
  typed.close();
  bin.close();
  checkClosed(typed.ctx, env);
  checkClosed(bin.ctx, env);
}

// ================================================================================ 2. every method

type AnyOp = { m: string; a: unknown[] };

/** Occasionally a number where a bigint is expected (a JavaScript caller's type confusion). */
const bigOrNum = (b: fc.Arbitrary<bigint>): fc.Arbitrary<bigint> =>
  fc.oneof({ weight: 6, arbitrary: b }, { weight: 1, arbitrary: fc.integer({ min: -(2 ** 33), max: 2 ** 33 }).map((n) => n as unknown as bigint) });

const fdArb = wildNum(fc.integer({ min: 1000, max: 1003 }));
const recordsArb = wildNum(fc.integer({ min: 0, max: 4 }));
const dataLenArb = wildNum(fc.constantFrom(0, 8, 64, 4096));
const rwLenArb = wildNum(fc.integer({ min: 0, max: 0x3000 }));
const respArb = fc.array(fc.record({ cookie: wildNum(fc.integer({ min: 0, max: 8 })), code: wildNum(fc.constantFrom(0, 1)) }), { maxLength: 2 });

const anyOpArb: fc.Arbitrary<AnyOp> = fc.oneof(
  ...(
    [
      ['destroy', [idArb]],
      ['ioasAlloc', [flagsArb]],
      [
        'ioasMap',
        [
          fc.record(
            { ioasId: idArb, userVa: bigOrNum(vaOffArb), length: bigOrNum(lengthArb), iova: fc.option(bigOrNum(iovaArb), { nil: undefined }), readable: fc.boolean(), writeable: fc.boolean() },
            { requiredKeys: ['ioasId', 'userVa', 'length'] },
          ),
        ],
      ],
      [
        'ioasCopy',
        [
          fc.record(
            { dstIoasId: idArb, srcIoasId: idArb, srcIova: bigOrNum(iovaArb), length: bigOrNum(lengthArb), dstIova: fc.option(iovaArb, { nil: undefined }), writeable: fc.boolean() },
            { requiredKeys: ['dstIoasId', 'srcIoasId', 'srcIova', 'length'] },
          ),
        ],
      ],
      ['ioasUnmap', [idArb, bigOrNum(iovaArb), bigOrNum(lengthArb)]],
      ['ioasUnmapAll', [idArb]],
      ['iovaRanges', [idArb]],
      ['allowIovas', [idArb, fc.array(fc.record({ start: bigOrNum(iovaArb), last: bigOrNum(iovaArb) }), { maxLength: 3 })]],
      ['getHugePages', [idArb]],
      ['setHugePages', [idArb, fc.boolean()]],
      ['getRlimitModeMm', []],
      ['setRlimitModeMm', [fc.boolean()]],
      ['vfioIoasGet', []],
      ['vfioIoasSet', [idArb]],
      ['vfioIoasClear', []],
      ['testAddReserved', [idArb, bigOrNum(iovaArb), bigOrNum(lengthArb)]],
      ['bind', [fc.nat(2)]],
      ['unbindDevice', [idArb]],
      ['attach', [idArb, idArb]],
      ['replace', [idArb, idArb]],
      ['detach', [idArb]],
      ['hwptAlloc', [fc.record({ devId: idArb, ptId: idArb, flags: wildNum(fc.constantFrom(0, 1, 2)), dataType: wildNum(fc.constantFrom(0, 0xdead)), faultId: idArb })]],
      ['getHwInfo', [idArb, dataLenArb]],
      ['testMockDomain', [idArb, wildNum(fc.constantFrom(0, 1, 2))]],
      ['testMockDomainReplace', [idArb, idArb]],
      ['faultQueueAlloc', [flagsArb]],
      ['faultRead', [fdArb, recordsArb]],
      ['faultWrite', [fdArb, respArb]],
      ['poll', [fdArb]],
      ['closeFd', [fdArb]],
      ['testCreateAccess', [idArb, wildNum(fc.constantFrom(0, 1))]],
      ['testAccessReplaceIoas', [fdArb, idArb]],
      ['testAccessPages', [fdArb, bigOrNum(iovaArb), bigOrNum(lengthArb), fc.record({ flags: wildNum(fc.constantFrom(0, 1)) })]],
      ['testDestroyAccessPages', [fdArb, idArb]],
      ['testAccessRw', [fdArb, bigOrNum(iovaArb), fc.oneof(fc.record({ length: rwLenArb }), fc.record({ data: fc.uint8Array({ maxLength: 0x1800 }) })), wildNum(fc.constantFrom(0, 1, 2))]],
    ] as [string, fc.Arbitrary<unknown>[]][]
  ).map(([m, args]) => fc.tuple(...args).map((a): AnyOp => ({ m, a }))),
);

function runEvery(ops: AnyOp[]): void {
  const env = makeEnv({ rlimitMemlock: RLIM_INFINITY });
  const fd = new Iommufd(env.proc);
  const drv = new ArmSmmuV3Driver();
  const devs = [drv.addDevice('v0'), drv.addDevice('v1'), drv.addDevice('v2')];
  const bound = new Set<number>();
  // Something for the ids and fds to hit: IOASes 1 and 2 with mappings, a bound device, a fault
  // queue (object 4, fd 1000) and an access on IOAS 2 (fd 1001).
  fd.ioasAlloc();
  fd.ioasAlloc();
  fd.ioasMap({ ioasId: 1, userVa: env.data, length: 4n * PAGE, iova: 0x1000000n });
  fd.ioasMap({ ioasId: 2, userVa: env.data + 4n * PAGE, length: 2n * PAGE });
  bound.add(fd.bindDevice(devs[0]!));
  fd.faultQueueAlloc();
  fd.testCreateAccess(2);
  ops.forEach((op, i) => {
    const where = `step ${i} ${show(op)}`;
    try {
      if (op.m === 'bind') bound.add(fd.bindDevice(devs[op.a[0] as number]!));
      else {
        if (op.m === 'unbindDevice') {
          const id = op.a[0] as number;
          (fd.unbindDevice as (id: number) => void)(id);
          bound.delete(id >>> 0);
        } else {
          const userVa = op.m === 'ioasMap' ? (op.a[0] as { userVa: bigint }) : undefined;
          if (userVa) userVa.userVa = (typeof userVa.userVa === 'bigint' ? env.data : 0n) + BigInt(userVa.userVa);
          (fd as unknown as Record<string, (...a: unknown[]) => unknown>)[op.m]!(...op.a);
        }
      }
    } catch (e) {
      if (!(e instanceof IommuError)) throw new Error(`${where}: ${String(e)}`, { cause: e });
    }
    checkInvariants(fd.ctx, env, where);
    for (const id of bound) if (fd.ctx.objects.peek(id)?.type !== ObjType.DEVICE) bound.delete(id);
  });
  fd.close();
  for (const id of bound) fd.unbindDevice(id);
  for (const f of [...Array(10).keys()].map((k) => 1000 + k)) fd.fds.close(f);
  checkClosed(fd.ctx, env);
}

describe('typed door: out-of-range arguments are stored as into the C fields', () => {
  it('IOAS commands agree with the binary door given the same raw values', () => {
    fc.assert(
      fc.property(fc.array(ioasOpArb, { maxLength: 30, size: 'max' }), (ops) => runAgree([{ t: 'alloc', flags: 0 }, { t: 'alloc', flags: 0 }, ...ops])),
      params(150),
    );
  });

  it('every typed-door method: only IommuError, invariants kept, close releases everything', () => {
    fc.assert(fc.property(fc.array(anyOpArb, { maxLength: 40, size: 'max' }), (ops) => runEvery(ops)), params(150));
  });

  it('hand-picked: lengths of -1n, ids of 2^32 + n, IOVAs of 2^64 + x', () => {
    runAgree([
      { t: 'alloc', flags: TWO32 },
      { t: 'map', ioas: 1, va: 0n, length: -1n, iova: 0x1000n, r: true, w: true },
      { t: 'map', ioas: 1, va: 0n, length: -1n, iova: null, r: true, w: true },
      { t: 'map', ioas: TWO32 + 1, va: TWO64, length: PAGE - TWO64, iova: TWO64 + 0x2000n, r: true, w: true },
      { t: 'copy', dst: 1 - TWO32, src: 1, srcIova: 0x2000n - TWO64, length: PAGE, dstIova: 0x8000n + (3n << 64n), r: true, w: false, at: null },
      { t: 'unmap', ioas: 1.5, iova: 0x2000n, length: PAGE - TWO64, at: null },
      { t: 'allow', ioas: 1, ranges: [{ start: 0x1000n - TWO64, last: -1n }] },
      { t: 'reserve', ioas: TWO32 + 1, start: -0x3000n, length: PAGE },
      { t: 'unmap', ioas: 1, iova: 0n, length: -1n, at: null },
      { t: 'destroy', id: TWO32 * 5 + 1 },
    ]);
  });
});
