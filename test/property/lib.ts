/**
 * Shared machinery of the IOAS property tests: a generator of IOAS command sequences (as plain
 * data, so fast-check can shrink and print them), the two doors that run them (typed:
 * Iommufd.call; binary: bytes in process memory through DevIommu.ioctl), an independent reference
 * model of one context written from the semantics reference (§2.2–2.9, §2.17 ADD_RESERVED, §3),
 * state snapshots and the invariants every step must keep.
 */
import { checkObjectUsers } from '../refcounts.js';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DevIommu } from '../../src/api/dev-iommu.js';
import { Iommufd } from '../../src/api/iommufd.js';
import { Errno, errnoName } from '../../src/lib/errno.js';
import { IommuError } from '../../src/lib/error.js';
import { lockdep } from '../../src/lib/lockdep.js';
import type { IommufdCtx } from '../../src/iommufd/context.js';
import type { Ioas } from '../../src/iommufd/ioas.js';
import { HANDLERS, internalErrors } from '../../src/iommufd/main.js';
import { ObjType } from '../../src/iommufd/object.js';
import { testCmdStruct } from '../../src/iommufd/test-cmd.js';
import type { Ucmd } from '../../src/iommufd/ucmd.js';
import { SimMachine, type SpawnOptions } from '../../src/mm/machine.js';
import { PROT_READ } from '../../src/mm/mman.js';
import type { SimProcess } from '../../src/mm/process.js';
import { IOMMUFD_TYPE, _IO, iommufdIoctlByNr } from '../../src/uapi/ioctl.js';
import {
  IommuDestroy,
  IommuIoasAlloc,
  IommuIoasAllowIovas,
  IommuIoasCopy,
  IommuIoasIovaRanges,
  IommuIoasMap,
  IommuIoasUnmap,
  IommuOption,
} from '../../src/uapi/iommufd.js';
import type { StructDef } from '../../src/uapi/struct.js';

export const U64_MAX = (1n << 64n) - 1n;
const PAGE = 4096n;
const HPAGE = 2n * 1024n * 1024n;

/** Default runs per property; FC_NUM_RUNS raises (or lowers) it. */
export function numRuns(dflt: number): number {
  const v = Number(process.env.FC_NUM_RUNS);
  return Number.isFinite(v) && v > 0 ? v : dflt;
}

// ================================================================================ the ops

export interface Range {
  start: bigint;
  last: bigint;
}

/** An object id: the n-th live object (resolved at run time) or a raw u32. */
export type IdSel = { k: 'live'; n: number } | { k: 'raw'; v: number } | { k: 'busiest' };
/** A user VA: an offset into the mapped data buffer, or a raw (bogus) value. */
export type VaSel = { k: 'buf'; off: bigint } | { k: 'raw'; v: bigint };
/** An IOVA range: raw, relative to the current areas (exact covers and partial overlaps), or unmap-all. */
export type RangeSel =
  | { k: 'raw'; iova: bigint; length: bigint }
  | { k: 'areas'; first: number; count: number; startAdj: bigint; lastAdj: bigint }
  | { k: 'inside'; n: number; off: bigint; length: bigint }
  | { k: 'all' };
/** Where a user array pointer points. */
export type PtrKind = 'array' | 'null' | 'unmapped' | 'kernel' | 'ro' | 'straddle';

export type Op =
  | { t: 'alloc'; flags: number }
  | { t: 'destroy'; id: IdSel }
  | { t: 'map'; flags: number; reserved: number; ioas: IdSel; va: VaSel; length: bigint; iova: bigint }
  | { t: 'copy'; flags: number; dst: IdSel; src: IdSel; srcRange: RangeSel; dstIova: bigint }
  | { t: 'unmap'; ioas: IdSel; range: RangeSel }
  | { t: 'allow'; ioas: IdSel; reserved: number; ranges: Range[]; ptr: PtrKind }
  | { t: 'ranges'; ioas: IdSel; reserved: number; capacity: number; ptr: PtrKind }
  | { t: 'option'; optionId: number; op: number; reserved: number; objectId: IdSel; val64: bigint }
  | { t: 'reserve'; testOp: number; ioas: IdSel; start: bigint; length: bigint }
  /** IOMMU_TEST_OP_MOCK_DOMAIN (devFlags undefined) or MOCK_DOMAIN_FLAGS: a mock device attached to `id`. */
  | { t: 'mock'; id: IdSel; devFlags?: number };

const EDGE_U64 = [0n, 1n, U64_MAX, U64_MAX - 1n, U64_MAX - PAGE + 1n, 1n << 63n, (1n << 63n) - 1n, U64_MAX / 2n, 1n << 31n];

/** IOVAs in a small window so that ops collide, plus edges and anything. */
const iovaArb: fc.Arbitrary<bigint> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 64 }).map((n) => BigInt(n) * PAGE) },
  { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: 0x40000n }) },
  { weight: 1, arbitrary: fc.constantFrom(...EDGE_U64) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: U64_MAX }) },
);

const lengthArb: fc.Arbitrary<bigint> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 16 }).map((n) => BigInt(n) * PAGE) },
  { weight: 2, arbitrary: fc.bigInt({ min: 1n, max: 0x9000n }) },
  { weight: 1, arbitrary: fc.constantFrom(0n, 2n * HPAGE, ...EDGE_U64, U64_MAX - PAGE, U64_MAX - PAGE - 1n) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: U64_MAX }) },
);

const idArb: fc.Arbitrary<IdSel> = fc.oneof(
  { weight: 8, arbitrary: fc.nat({ max: 3 }).map((n): IdSel => ({ k: 'live', n })) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, 2, 5, 0x7fffffff, 0xffffffff).map((v): IdSel => ({ k: 'raw', v })) },
);

/** The data buffer is DATA_PAGES pages: offsets go a little past its end, and are often unaligned. */
export const DATA_PAGES = 64;
const vaArb: fc.Arbitrary<VaSel> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: DATA_PAGES }).map((n): VaSel => ({ k: 'buf', off: BigInt(n) * PAGE })) },
  { weight: 3, arbitrary: fc.bigInt({ min: 0n, max: BigInt(DATA_PAGES + 2) * PAGE }).map((off): VaSel => ({ k: 'buf', off })) },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 0x200000n }).map((off): VaSel => ({ k: 'buf', off: off * 0x800n })) },
  {
    weight: 2,
    arbitrary: fc
      .constantFrom(0n, 1n << 31n, 0x1000n, U64_MAX, U64_MAX - PAGE, 0xffff_8000_0000_0000n, 0x7fff_ffff_f000n, 1n << 21n, 3n << 21n)
      .map((v): VaSel => ({ k: 'raw', v })),
  },
  { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: U64_MAX }).map((v): VaSel => ({ k: 'raw', v })) },
);

const rangeSelArb: fc.Arbitrary<RangeSel> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ k: fc.constant('raw' as const), iova: iovaArb, length: lengthArb }) },
  {
    weight: 4,
    arbitrary: fc.record({
      k: fc.constant('areas' as const),
      first: fc.nat({ max: 8 }),
      count: fc.integer({ min: 1, max: 3 }),
      startAdj: fc.constantFrom(0n, 0n, 0n, -1n, 1n, -PAGE, PAGE, 0x800n),
      lastAdj: fc.constantFrom(0n, 0n, 0n, -1n, 1n, -PAGE, PAGE, 0x800n),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ k: 'all' as const }) },
);

/** COPY sources: mostly whole areas, runs of adjacent areas and sub-ranges of an area. */
const srcRangeArb: fc.Arbitrary<RangeSel> = fc.oneof(
  { weight: 2, arbitrary: rangeSelArb },
  {
    weight: 3,
    arbitrary: fc.record({
      k: fc.constant('inside' as const),
      n: fc.nat({ max: 8 }),
      off: fc.oneof(fc.constant(0n), fc.bigInt({ min: 0n, max: 0x10000n }), fc.integer({ min: 0, max: 16 }).map((n) => BigInt(n) * PAGE)),
      length: fc.oneof(fc.bigInt({ min: 1n, max: 0x10000n }), fc.integer({ min: 1, max: 16 }).map((n) => BigInt(n) * PAGE)),
    }),
  },
);

const mapFlagsArb = fc.oneof(
  { weight: 14, arbitrary: fc.constantFrom(6, 7, 2, 3, 4, 5) },
  { weight: 1, arbitrary: fc.constantFrom(0, 1, 8, 0x10006, 0xffffffff) },
  { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) },
);
const reservedArb = fc.oneof({ weight: 12, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.constantFrom(1, 0x8000) });
const ptrArb: fc.Arbitrary<PtrKind> = fc.oneof(
  { weight: 10, arbitrary: fc.constant('array' as const) },
  { weight: 1, arbitrary: fc.constantFrom<PtrKind>('null', 'unmapped', 'kernel', 'ro', 'straddle') },
);
const smallRangeArb: fc.Arbitrary<Range> = fc
  .tuple(iovaArb, fc.oneof(fc.bigInt({ min: -2n, max: 0x20000n }), lengthArb))
  .map(([start, len]) => ({ start, last: BigInt.asUintN(64, start + len) }));

export const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ t: fc.constant('alloc' as const), flags: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat() }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('destroy' as const), id: idArb }) },
  {
    weight: 8,
    arbitrary: fc.record({ t: fc.constant('map' as const), flags: mapFlagsArb, reserved: reservedArb, ioas: idArb, va: vaArb, length: lengthArb, iova: iovaArb }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant('copy' as const),
      // bit 16 (MOCK_FLAGS_ACCESS_SYZ) is accepted by test kernels; see §2.7 step 1.
      flags: fc.oneof({ weight: 6, arbitrary: mapFlagsArb }, { weight: 1, arbitrary: fc.constantFrom(0x10006, 0x10007) }),
      dst: idArb,
      src: fc.oneof({ weight: 2, arbitrary: fc.constant<IdSel>({ k: 'busiest' }) }, { weight: 1, arbitrary: idArb }),
      srcRange: srcRangeArb,
      dstIova: iovaArb,
    }),
  },
  { weight: 5, arbitrary: fc.record({ t: fc.constant('unmap' as const), ioas: idArb, range: rangeSelArb }) },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('allow' as const), ioas: idArb, reserved: reservedArb, ranges: fc.array(smallRangeArb, { maxLength: 4 }), ptr: ptrArb }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('ranges' as const), ioas: idArb, reserved: reservedArb, capacity: fc.nat({ max: 5 }), ptr: ptrArb }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('option' as const),
      optionId: fc.oneof({ weight: 6, arbitrary: fc.constant(1) }, { weight: 2, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat() }),
      op: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(0, 1) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
      reserved: reservedArb,
      objectId: fc.oneof({ weight: 6, arbitrary: idArb }, { weight: 1, arbitrary: fc.constant<IdSel>({ k: 'raw', v: 0 }) }),
      val64: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0n, 1n) }, { weight: 1, arbitrary: fc.constantFrom(2n, U64_MAX) }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('reserve' as const),
      testOp: fc.oneof({ weight: 10, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.constantFrom(0, 99) }),
      ioas: idArb,
      start: iovaArb,
      length: lengthArb,
    }),
  },
);

/** Mock domains: the selftest's MOCK_DOMAIN / MOCK_DOMAIN_FLAGS, attached to an IOAS (or anything). */
export const mockOpArb: fc.Arbitrary<Op> = fc.record(
  {
    t: fc.constant('mock' as const),
    id: idArb,
    devFlags: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(0, 1, 2, 3) }, { weight: 1, arbitrary: fc.constantFrom(4, 0xffffffff) }),
  },
  { requiredKeys: ['t', 'id'] },
);

/** Ops including mock domains (pinning, apertures, alignment 2048). */
export const opWithDomainsArb: fc.Arbitrary<Op> = fc.oneof({ weight: 12, arbitrary: opArb }, { weight: 1, arbitrary: mockOpArb });

/** Sequences start with an IOAS or two so that most ops have something to act on. */
export const opsArb = (maxLength: number, op: fc.Arbitrary<Op> = opArb): fc.Arbitrary<Op[]> =>
  fc
    .tuple(fc.array(fc.constant<Op>({ t: 'alloc', flags: 0 }), { minLength: 1, maxLength: 2 }), fc.array(op, { maxLength, size: 'max' }))
    .map(([a, b]) => [...a, ...b]);

// ================================================================================ the environment

/** One simulated process with the buffers the ops point at. */
export interface Env {
  machine: SimMachine;
  proc: SimProcess;
  data: bigint;
  /** The struct the binary door passes (one page). */
  arg: bigint;
  /** User arrays (ALLOW_IOVAS / IOVA_RANGES). */
  array: bigint;
  ro: bigint;
  /** 8 bytes before an unmapped page. */
  straddle: bigint;
  unmapped: bigint;
}

export function makeEnv(opts: { sysResource?: boolean; rlimitMemlock?: bigint } = {}): Env {
  const machine = new SimMachine();
  const spawn: SpawnOptions = { capabilities: opts.sysResource ? ['CAP_SYS_RESOURCE'] : [] };
  if (opts.rlimitMemlock !== undefined) spawn.rlimitMemlock = opts.rlimitMemlock;
  const proc = machine.spawn(spawn);
  const data = proc.mapAnonymous(BigInt(DATA_PAGES) * PAGE, { shared: true });
  const arg = proc.mapAnonymous(PAGE);
  const array = proc.mapAnonymous(PAGE);
  const ro = proc.mapAnonymous(PAGE, { prot: PROT_READ });
  const two = proc.mapAnonymous(2n * PAGE);
  proc.munmap(two + PAGE, PAGE);
  return { machine, proc, data, arg, array, ro, straddle: two + PAGE - 8n, unmapped: two + PAGE };
}

export function ptrOf(env: Env, k: PtrKind): bigint {
  switch (k) {
    case 'array':
      return env.array;
    case 'null':
      return 0n;
    case 'unmapped':
      return env.unmapped;
    case 'kernel':
      return 0xffff_8000_0000_1000n;
    case 'ro':
      return env.ro;
    case 'straddle':
      return env.straddle;
  }
}

// ================================================================================ resolving ops into commands

export function ioasesOf(ctx: IommufdCtx): Ioas[] {
  return ctx.objects.objects().filter((o) => o.type === ObjType.IOAS && o.finalized) as Ioas[];
}

function resolveId(ctx: IommufdCtx, s: IdSel): number {
  if (s.k === 'raw') return s.v;
  if (s.k === 'busiest') {
    // The IOAS with the most areas (the lowest id on a tie), else 1.
    let best: Ioas | undefined;
    for (const i of ioasesOf(ctx)) if (!best || i.iopt.areas.size > best.iopt.areas.size) best = i;
    return best?.id ?? 1;
  }
  const ids = ctx.objects.objects().filter((o) => o.finalized).map((o) => o.id);
  return ids.length ? ids[s.n % ids.length]! : s.n + 1;
}

function resolveRange(ioas: Ioas | undefined, r: RangeSel): { iova: bigint; length: bigint } {
  if (r.k === 'raw') return { iova: r.iova, length: r.length };
  if (r.k === 'all') return { iova: 0n, length: U64_MAX };
  const areas = ioas ? [...ioas.iopt.areas.all()] : [];
  if (r.k === 'inside') {
    const a = areas[r.n % Math.max(1, areas.length)];
    if (!a) return { iova: r.off, length: r.length };
    const off = r.off % a.length;
    const room = a.length - off;
    return { iova: a.iova + off, length: r.length < room ? r.length : room };
  }
  if (!areas.length) return { iova: BigInt(r.first) * PAGE, length: BigInt(r.count) * PAGE };
  const a = areas[r.first % areas.length]!;
  const b = areas[Math.min(areas.length - 1, (r.first % areas.length) + r.count - 1)]!;
  const start = BigInt.asUintN(64, a.iova + r.startAdj);
  const last = BigInt.asUintN(64, b.last + r.lastAdj);
  return { iova: start, length: BigInt.asUintN(64, last - start + 1n) };
}

/** A command ready for both doors: nr, the struct view, its bytes (size = sizeof) and array input. */
export interface Cmd {
  nr: number;
  def: StructDef;
  bytes: Uint8Array;
  /** Bytes written at env.array before the call (ALLOW_IOVAS input). */
  arrayIn?: Uint8Array;
  /** IOVA_RANGES: how many array bytes to compare after the call. */
  arrayOut?: number;
}

function encode(def: StructDef, fields: Record<string, unknown>): Uint8Array {
  return def.encode(def.make({ ...fields, size: def.size } as never));
}

/** Resolve an op against the current state of `ctx` (ids and areas) into a command. */
export function buildCmd(env: Env, ctx: IommufdCtx, op: Op): Cmd {
  const ioasOf = (id: number): Ioas | undefined => ioasesOf(ctx).find((i) => i.id === id);
  switch (op.t) {
    case 'alloc':
      return { nr: 0x81, def: IommuIoasAlloc as never, bytes: encode(IommuIoasAlloc as never, { flags: op.flags >>> 0 }) };
    case 'destroy':
      return { nr: 0x80, def: IommuDestroy as never, bytes: encode(IommuDestroy as never, { id: resolveId(ctx, op.id) >>> 0 }) };
    case 'map': {
      const userVa = op.va.k === 'buf' ? env.data + op.va.off : op.va.v;
      const fields = { flags: op.flags >>> 0, reserved: op.reserved, ioasId: resolveId(ctx, op.ioas), userVa, length: op.length, iova: op.iova };
      return { nr: 0x85, def: IommuIoasMap as never, bytes: encode(IommuIoasMap as never, fields) };
    }
    case 'copy': {
      const src = resolveId(ctx, op.src);
      const r = resolveRange(ioasOf(src), op.srcRange);
      const fields = { flags: op.flags >>> 0, dstIoasId: resolveId(ctx, op.dst), srcIoasId: src, length: r.length, dstIova: op.dstIova, srcIova: r.iova };
      return { nr: 0x83, def: IommuIoasCopy as never, bytes: encode(IommuIoasCopy as never, fields) };
    }
    case 'unmap': {
      const id = resolveId(ctx, op.ioas);
      const r = resolveRange(ioasOf(id), op.range);
      return { nr: 0x86, def: IommuIoasUnmap as never, bytes: encode(IommuIoasUnmap as never, { ioasId: id, iova: r.iova, length: r.length }) };
    }
    case 'allow': {
      const arr = new Uint8Array(op.ranges.length * 16);
      const dv = new DataView(arr.buffer);
      op.ranges.forEach((r, i) => {
        dv.setBigUint64(i * 16, r.start, true);
        dv.setBigUint64(i * 16 + 8, r.last, true);
      });
      const fields = { ioasId: resolveId(ctx, op.ioas), numIovas: op.ranges.length, reserved: op.reserved, allowedIovas: ptrOf(env, op.ptr) };
      return { nr: 0x82, def: IommuIoasAllowIovas as never, bytes: encode(IommuIoasAllowIovas as never, fields), arrayIn: arr };
    }
    case 'ranges': {
      const fields = { ioasId: resolveId(ctx, op.ioas), numIovas: op.capacity, reserved: op.reserved, allowedIovas: ptrOf(env, op.ptr) };
      return { nr: 0x84, def: IommuIoasIovaRanges as never, bytes: encode(IommuIoasIovaRanges as never, fields), arrayOut: 16 * 8 };
    }
    case 'option': {
      const fields = { optionId: op.optionId >>> 0, op: op.op, reserved: op.reserved, objectId: resolveId(ctx, op.objectId), val64: op.val64 };
      return { nr: 0x87, def: IommuOption as never, bytes: encode(IommuOption as never, fields) };
    }
    case 'reserve': {
      const def = testCmdStruct(op.testOp);
      const fields = { op: op.testOp, id: resolveId(ctx, op.ioas), start: op.start, length: op.length };
      return { nr: 0xa0, def, bytes: encode(def, fields) };
    }
    case 'mock': {
      const testOp = op.devFlags === undefined ? 2 : 12;
      const def = testCmdStruct(testOp);
      return { nr: 0xa0, def, bytes: encode(def, { op: testOp, id: resolveId(ctx, op.id), devFlags: op.devFlags ?? 0 }) };
    }
  }
}

// ================================================================================ the doors

export interface Outcome {
  /** 0 or the errno. */
  errno: number;
  ret: number;
  /** The command struct in user memory after the call (binary) or as the kernel would have written it back (typed). */
  bytes: Uint8Array;
  /** The IOVA_RANGES output array, if any. */
  array?: Uint8Array;
  /** The typed door's command object after the call. */
  cmd?: Record<string, unknown>;
  explanation?: string;
}

function prepareArray(env: Env, c: Cmd): void {
  const clear = new Uint8Array(Number(PAGE));
  env.proc.writeMem(env.array, clear);
  if (c.arrayIn) env.proc.writeMem(env.array, c.arrayIn);
}

function readArray(env: Env, c: Cmd): Uint8Array | undefined {
  return c.arrayOut ? env.proc.readMem(env.array, c.arrayOut) : undefined;
}

/**
 * The typed door: Iommufd.call with the decoded command. The handler is wrapped only to observe
 * whether it responded (IOVA_RANGES responds and then fails EMSGSIZE), from which the bytes a
 * binary caller would see are derived: the whole struct, or just val64 for IOMMU_OPTION.
 * Anything thrown but an IommuError propagates.
 */
export function runTyped(env: Env, iom: Iommufd, c: Cmd): Outcome {
  prepareArray(env, c);
  const handler = HANDLERS.get(c.nr)!;
  const cmd = c.def.decode(c.bytes) as Record<string, unknown>;
  let responded = false;
  let errno = 0;
  let ret = 0;
  let explanation: string | undefined;
  try {
    ret = iom.call(
      (ctx, ucmd: Ucmd<unknown>) =>
        handler(ctx, {
          ...ucmd,
          respond() {
            responded = true;
            ucmd.respond();
          },
        }),
      cmd,
      undefined,
      c.def,
    ).ret;
  } catch (e) {
    if (!(e instanceof IommuError)) throw e;
    errno = e.errno;
    explanation = e.explanation;
  }
  const bytes = c.bytes.slice();
  if (responded) {
    const out = c.def.encode(cmd as never);
    if (c.nr === 0x87) bytes.set(out.subarray(16, 24), 16);
    else bytes.set(out);
  }
  return { errno, ret, bytes, array: readArray(env, c), cmd, explanation };
}

export const ioctlNumber = (nr: number): number => _IO(IOMMUFD_TYPE, nr);

/** The binary door: the struct in process memory, DevIommu.ioctl, the struct read back. */
export function runBinary(env: Env, dev: DevIommu, c: Cmd): Outcome {
  prepareArray(env, c);
  env.proc.writeMem(env.arg, c.bytes);
  const r = dev.ioctl(ioctlNumber(c.nr), env.arg);
  const bytes = env.proc.readMem(env.arg, c.bytes.length);
  if (r.ret < 0) assert.equal(r.ret, -1);
  return { errno: r.ret < 0 ? r.errno : 0, ret: r.ret < 0 ? -1 : r.ret, bytes, array: readArray(env, c), explanation: r.explanation };
}

export function sanityOfCmds(): void {
  // The ops use these table slots; fail loudly if the table changes under us.
  for (const nr of [0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0xa0]) assert.ok(iommufdIoctlByNr(nr, true), `nr ${nr}`);
}

// ================================================================================ snapshots

/** Everything observable about a context's IOAS state, for comparing two contexts. */
export function snapshot(ctx: IommufdCtx): unknown {
  return {
    objects: ctx.objects.objects().map((o) => [o.id, o.type, o.finalized, o.users]),
    ioas: ioasesOf(ctx).map((i) => ({
      id: i.id,
      areas: [...i.iopt.areas.all()].map((a) => [
        a.iova,
        a.last,
        a.startByte,
        a.prot,
        a.pages.uptr,
        a.pages.npages,
        a.pages.writable,
        a.populated,
        a.pages.pinnedCount,
        a.storageDomain !== null,
      ]),
      domains: i.iopt.domains.length,
      reserved: i.iopt.reserved.all().map((r) => [r.start, r.last, r.owner === null]),
      ranges: i.iopt.iovaRanges(),
      alignment: i.iopt.iovaAlignment,
      disableLargePages: i.iopt.disableLargePages,
      allowed: i.iopt.allowedRanges(),
    })),
    accountMode: ctx.accountMode,
  };
}

// ================================================================================ invariants

function merge(ranges: readonly Range[]): Range[] {
  const s = [...ranges].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: Range[] = [];
  for (const r of s) {
    const p = out[out.length - 1];
    if (p && r.start <= p.last + 1n) {
      if (r.last > p.last) p.last = r.last;
    } else out.push({ start: r.start, last: r.last });
  }
  return out;
}

function complement(merged: readonly Range[]): Range[] {
  const out: Range[] = [];
  let cur = 0n;
  for (const r of merged) {
    if (r.start > cur) out.push({ start: cur, last: r.start - 1n });
    cur = r.last + 1n;
  }
  if (cur <= U64_MAX) out.push({ start: cur, last: U64_MAX });
  return out;
}

/**
 * The io_pagetable invariants of §3 for every IOAS of `ctx`, plus: nothing pinned or accounted
 * while no IOAS has a domain or access, no internal errors, lockdep clean and idle.
 */
export function checkInvariants(ctx: IommufdCtx, env: Env, where = '', others: IommufdCtx[] = []): void {
  const at = where ? ` (${where})` : '';
  assert.deepEqual(internalErrors, [], `internal errors${at}`);
  assert.deepEqual(lockdep.violations, [], `lockdep violations${at}`);
  assert.ok(lockdep.idle(), `locks held between calls${at}`);
  let anyPinner = false;
  for (const ioas of ioasesOf(ctx)) {
    const iopt = ioas.iopt;
    const align = iopt.iovaAlignment;
    assert.ok(align >= 1n && align <= PAGE && (align & (align - 1n)) === 0n, `alignment ${align}${at}`);
    const reserved = merge(iopt.reserved.all());
    let prevLast = -1n;
    for (const a of iopt.areas.all()) {
      const d = `IOAS ${ioas.id} ${a.describe()}${at}`;
      assert.ok(a.iova <= a.last && a.last <= U64_MAX, `${d}: bad bounds`);
      assert.ok(a.iova > prevLast, `${d}: overlaps the previous area (last 0x${prevLast.toString(16)})`);
      prevLast = a.last;
      assert.ok(a.populated, `${d}: not populated between calls`);
      assert.equal(a.iova % align, 0n, `${d}: iova not aligned to ${align}`);
      assert.equal(a.length % align, 0n, `${d}: length not aligned to ${align}`);
      assert.equal(a.pageOffset % align, 0n, `${d}: page offset not aligned to ${align}`);
      const hit = reserved.find((r) => r.start <= a.last && a.iova <= r.last);
      assert.ok(!hit, `${d}: intersects reserved [0x${hit?.start.toString(16)}, 0x${hit?.last.toString(16)}]`);
      assert.ok(a.startByte + a.length <= a.pages.npages * PAGE, `${d}: runs past its page container`);
      assert.ok(a.pages.refs >= 1, `${d}: container has no references`);
    }
    assert.deepEqual(iopt.iovaRanges(), complement(reserved), `IOAS ${ioas.id}: iovaRanges is not the complement of reserved${at}`);
    const allowed = iopt.allowedRanges();
    for (const r of allowed) {
      assert.ok(r.start < r.last, `allowed range${at}`);
      assert.ok(!reserved.some((x) => x.start <= r.last && r.start <= x.last), `allowed range intersects reserved${at}`);
    }
    if (iopt.domains.length || iopt.accesses.size) anyPinner = true;
    if (iopt.domains.length) {
      // Every area is pinned (once per container) and stored in the first domain.
      for (const a of iopt.areas.all()) {
        assert.ok(a.storageDomain !== null && iopt.domains.includes(a.storageDomain), `IOAS ${ioas.id} ${a.describe()}: no storage domain${at}`);
        for (let k = a.firstIndex; k <= a.lastIndex; k++)
          assert.ok(a.pages.frameAt(k), `IOAS ${ioas.id} ${a.describe()}: page ${k} of its container is not pinned${at}`);
      }
    }
    if (!iopt.domains.length && !iopt.accesses.size)
      for (const a of iopt.areas.all()) assert.equal(a.storageDomain, null, `storage domain without domains${at}`);
  }
  // `others`: further contexts of the same process, whose pins are charged to the same counters.
  const all = [ctx, ...others];
  for (const c of all) checkObjectUsers(c, where || 'between calls');
  for (const o of others) for (const i of ioasesOf(o)) if (i.iopt.domains.length || i.iopt.accesses.size) anyPinner = true;
  // A container may be pinned only while an IOAS with a domain or an access uses it (COPY shares
  // containers between IOASes, so look at all of them).
  const held = new Set<object>();
  for (const c of all)
    for (const i of ioasesOf(c)) if (i.iopt.domains.length || i.iopt.accesses.size) for (const a of i.iopt.areas.all()) held.add(a.pages);
  for (const c of all)
    for (const i of ioasesOf(c))
      for (const a of i.iopt.areas.all())
        if (!held.has(a.pages)) assert.equal(a.pages.pinnedCount, 0, `IOAS ${i.id} ${a.describe()}: pinned without a domain or access${at}`);
  // Without accesses, a held container pins exactly the pages its areas in domain-backed IOASes cover.
  if (all.every((c) => ioasesOf(c).every((i) => !i.iopt.accesses.size))) {
    const want = new Map<object, Set<number>>();
    for (const c of all)
      for (const i of ioasesOf(c))
        if (i.iopt.domains.length)
          for (const a of i.iopt.areas.all()) {
            const set = want.get(a.pages) ?? new Set<number>();
            for (let k = a.firstIndex; k <= a.lastIndex; k++) set.add(k);
            want.set(a.pages, set);
          }
    for (const [pages, set] of want)
      assert.equal((pages as { pinnedCount: number }).pinnedCount, set.size, `a container pins more or fewer pages than its areas cover${at}`);
  }
  if (!anyPinner) assertNoAccounting(env, at);
  else if (!env.proc.capable('CAP_IPC_LOCK') && all.every((c) => c.accountMode === 1)) {
    // USER accounting: locked_vm and pinned_vm are the pages pinned by the distinct containers.
    const containers = new Set<{ pinnedCount: number }>();
    for (const c of all) for (const ioas of ioasesOf(c)) for (const a of ioas.iopt.areas.all()) containers.add(a.pages);
    let pinned = 0;
    for (const c of containers) pinned += c.pinnedCount;
    assert.equal(env.proc.user.lockedVm, pinned, `user locked_vm vs pinned pages${at}`);
    assert.equal(env.proc.mm.pinnedVm, pinned, `mm pinned_vm vs pinned pages${at}`);
  }
}

export function assertNoAccounting(env: Env, at = ''): void {
  assert.equal(env.proc.user.lockedVm, 0, `user locked_vm${at}`);
  assert.equal(env.proc.mm.pinnedVm, 0, `mm pinned_vm${at}`);
  assert.equal(env.proc.mm.lockedVm, 0, `mm locked_vm${at}`);
}

/** After close(): the table is empty and nothing is accounted any more. */
export function checkClosed(ctx: IommufdCtx, env: Env): void {
  assert.equal(ctx.objects.count, 0, `objects left after close: ${ctx.objects.ids().join(', ')}`);
  assert.ok(ctx.released, 'context not released after close');
  assertNoAccounting(env, ' after close');
  assert.deepEqual(internalErrors, []);
  assert.deepEqual(lockdep.violations, []);
  assert.ok(lockdep.idle());
}

export function errnoText(n: number): string {
  return n === 0 ? 'success' : errnoName(n);
}

export { Errno, DevIommu, Iommufd };
