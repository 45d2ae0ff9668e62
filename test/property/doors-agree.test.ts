/**
 * The two doors agree, and both agree with a reference model.
 *
 * A random sequence of IOAS commands is applied to two fresh contexts of the same simulated
 * process: one through the typed door (Iommufd.call with the decoded command), one through the
 * binary door (the struct encoded in process memory, DevIommu.ioctl, the struct read back). After
 * every step: same errno, same written-back bytes (the whole struct, val64 for IOMMU_OPTION, the
 * IOVA_RANGES array), same state (object ids, areas with their containers, reserved, IOVA
 * ranges, alignment, allowed ranges, large-page mode). The typed door's result is then checked
 * against test/property/model.ts (errno, output fields, area / reserved / allowed sets).
 *
 * FC_NUM_RUNS=1000 raises the number of sequences; a failure prints the seed and the shrunk
 * sequence (replay with FC_SEED / FC_PATH, see fast-check's `seed` and `path`).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  DevIommu,
  Errno,
  Iommufd,
  U64_MAX,
  buildCmd,
  checkClosed,
  checkInvariants,
  errnoText,
  ioasesOf,
  makeEnv,
  numRuns,
  opWithDomainsArb,
  opsArb,
  runBinary,
  runTyped,
  sanityOfCmds,
  snapshot,
  type Op,
  type Outcome,
} from './lib.js';
import { Model, type Prediction } from './model.js';
import type { IommufdCtx } from '../../src/iommufd/context.js';
import { RLIM_INFINITY } from '../../src/mm/types.js';

const fcParams = (runs: number): fc.Parameters<unknown> => {
  const p: fc.Parameters<unknown> = { numRuns: numRuns(runs), includeErrorInReport: true };
  if (process.env.FC_SEED) p.seed = Number(process.env.FC_SEED);
  if (process.env.FC_PATH) p.path = process.env.FC_PATH;
  return p;
};

const show = (v: unknown): string => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x));

function compareModel(model: Model, ctx: IommufdCtx, where: string): void {
  const ioases = ioasesOf(ctx);
  assert.deepEqual(
    ioases.map((i) => i.id),
    [...model.ioas.keys()].sort((a, b) => a - b),
    `${where}: IOAS ids differ from the model`,
  );
  assert.deepEqual(ctx.objects.ids(), model.allIds(), `${where}: object ids differ from the model`);
  const sortR = <T extends { start: bigint }>(rs: readonly T[]): { start: bigint; last: bigint }[] =>
    [...rs].map((r) => ({ start: r.start, last: (r as unknown as { last: bigint }).last })).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  for (const io of ioases) {
    const m = model.ioas.get(io.id)!;
    const at = `${where}: IOAS ${io.id}`;
    assert.deepEqual(
      [...io.iopt.areas.all()].map((a) => ({ iova: a.iova, last: a.last, va: a.pages.uptr + a.startByte, writable: a.pages.writable })),
      m.areas.map((a) => ({ iova: a.iova, last: a.last, va: a.va, writable: a.writable })),
      `${at}: areas differ from the model`,
    );
    assert.deepEqual(sortR(io.iopt.reserved.all()), sortR(m.reserved), `${at}: reserved ranges differ from the model`);
    assert.deepEqual(sortR(io.iopt.allowedRanges()), sortR(m.allowed), `${at}: allowed ranges differ from the model`);
    assert.equal(io.iopt.disableLargePages, m.hugeDisabled, `${at}: large-page mode`);
    assert.equal(io.iopt.iovaAlignment, model.alignment(m), `${at}: alignment`);
    assert.equal(io.iopt.domains.length, m.hwpt === undefined ? 0 : 1, `${at}: domains`);
  }
}

function checkPrediction(p: Prediction, ot: Outcome, where: string): void {
  assert.equal(
    errnoText(ot.errno),
    errnoText(p.errno),
    `${where}: the model predicts ${errnoText(p.errno)}, the emulator gave ${errnoText(ot.errno)} (${ot.explanation ?? ''})`,
  );
  if (p.errno === 0 || p.errno === Errno.EMSGSIZE) {
    for (const [k, v] of Object.entries(p.out)) {
      const got = ot.cmd![k] as bigint | number;
      assert.equal(typeof got === 'bigint' ? BigInt.asUintN(64, got) : got, v, `${where}: output field ${k}`);
    }
  }
  if (p.array && ot.array) {
    const dv = new DataView(ot.array.buffer, ot.array.byteOffset, ot.array.byteLength);
    const n = ot.array.length / 16;
    for (let i = 0; i < n; i++) {
      const want: { start: bigint; last: bigint } = p.array[i] ?? { start: 0n, last: 0n };
      assert.deepEqual({ start: dv.getBigUint64(i * 16, true), last: dv.getBigUint64(i * 16 + 8, true) }, want, `${where}: IOVA_RANGES entry ${i}`);
    }
  }
}

/** Returns the errno names of the steps (typed door). */
function runSequence(ops: Op[], sysResource: boolean, withModel: boolean): string[] {
  const errnos: string[] = [];
  // Both contexts pin the same pages and charge the same uid: no RLIMIT_MEMLOCK, so that the
  // door that runs second is not refused for the first one's charge.
  const env = makeEnv({ sysResource, rlimitMemlock: RLIM_INFINITY });
  const typed = new Iommufd(env.proc, { name: 'typed' });
  const bin = new DevIommu(env.proc, { name: 'binary' });
  const model = new Model(env, sysResource);
  ops.forEach((op, i) => {
    const c = buildCmd(env, typed.ctx, op);
    const ot = runTyped(env, typed, c);
    const ob = runBinary(env, bin, c);
    const where = `step ${i} ${show(op)}`;
    errnos.push(errnoText(ot.errno));
    assert.equal(
      errnoText(ob.errno),
      errnoText(ot.errno),
      `${where}: binary door ${errnoText(ob.errno)} (${ob.explanation ?? ''}), typed door ${errnoText(ot.errno)} (${ot.explanation ?? ''})`,
    );
    assert.equal(ob.ret, ot.errno ? -1 : ot.ret, `${where}: return value`);
    assert.deepEqual(ob.bytes, ot.bytes, `${where}: written-back struct differs`);
    assert.deepEqual(ob.array, ot.array, `${where}: user array differs`);
    assert.deepEqual(snapshot(bin.ctx), snapshot(typed.ctx), `${where}: state differs`);
    checkInvariants(typed.ctx, env, where, [bin.ctx]);
    if (withModel) {
      checkPrediction(model.apply(c), ot, where);
      compareModel(model, typed.ctx, where);
    }
  });
  typed.close();
  bin.close();
  checkClosed(typed.ctx, env);
  checkClosed(bin.ctx, env);
  return errnos;
}

describe('typed and binary doors agree on IOAS command sequences', () => {
  sanityOfCmds();

  it('random sequences: same errno, output bytes and state; matches the reference model', () => {
    fc.assert(
      fc.property(opsArb(30), fc.boolean(), (ops, sysResource) => void runSequence(ops, sysResource, true)),
      fcParams(150),
    );
  });

  it('long sequences', () => {
    fc.assert(
      fc.property(opsArb(120), fc.boolean(), (ops, sysResource) => void runSequence(ops, sysResource, true)),
      fcParams(20),
    );
  });

  it('sequences with mock domains (pinning, apertures, alignment 2048)', () => {
    fc.assert(
      fc.property(opsArb(40, opWithDomainsArb), fc.boolean(), (ops, sysResource) => void runSequence(ops, sysResource, true)),
      fcParams(100),
    );
  });

  it('the model agrees on hand-picked cases', () => {
    const raw = (v: number) => ({ k: 'raw' as const, v });
    const cases: Op[][] = [
      // Fixed MAP of a free range adds exactly it; UNMAP of [start, last] covering it removes it.
      [
        { t: 'alloc', flags: 0 },
        { t: 'map', flags: 7, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0x123n }, length: 0x2000n, iova: 0x5000n },
        { t: 'map', flags: 7, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0n }, length: 0x1000n, iova: 0x7000n },
        { t: 'unmap', ioas: raw(1), range: { k: 'raw', iova: 0x5000n, length: 0x2800n } },
        { t: 'unmap', ioas: raw(1), range: { k: 'raw', iova: 0x4000n, length: 0x4000n } },
        { t: 'unmap', ioas: raw(1), range: { k: 'all' } },
      ],
      // Reserved beats EEXIST; IOVA_RANGES with too small an array; huge pages off.
      [
        { t: 'alloc', flags: 0 },
        { t: 'map', flags: 7, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0n }, length: 0x1000n, iova: 0x10000n },
        { t: 'reserve', testOp: 1, ioas: raw(1), start: 0x11000n, length: 0x1000n },
        { t: 'map', flags: 7, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0n }, length: 0x2000n, iova: 0x10000n },
        { t: 'ranges', ioas: raw(1), reserved: 0, capacity: 1, ptr: 'array' },
        { t: 'option', optionId: 1, op: 0, reserved: 0, objectId: raw(1), val64: 0n },
        { t: 'map', flags: 6, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0x800n }, length: 0x1000n, iova: 0n },
        { t: 'copy', flags: 6, dst: raw(1), src: raw(1), srcRange: { k: 'raw', iova: 0x10000n, length: 0x1000n }, dstIova: 0n },
        { t: 'option', optionId: 1, op: 1, reserved: 0, objectId: raw(1), val64: 0n },
      ],
      // COPY spanning two adjacent areas, read-only source asked to be writeable, SYZ conversion.
      [
        { t: 'alloc', flags: 0 },
        { t: 'alloc', flags: 0 },
        { t: 'map', flags: 5, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0n }, length: 0x3000n, iova: 0x1000n },
        { t: 'map', flags: 7, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0x8000n }, length: 0x1000n, iova: 0x4000n },
        { t: 'copy', flags: 6, dst: raw(2), src: raw(1), srcRange: { k: 'raw', iova: 0x2800n, length: 0x2000n }, dstIova: 0n },
        { t: 'copy', flags: 4, dst: raw(2), src: raw(1), srcRange: { k: 'raw', iova: 0x2800n, length: 0x2000n }, dstIova: 0n },
        { t: 'copy', flags: 0x10005, dst: raw(2), src: raw(1), srcRange: { k: 'raw', iova: (0x800n << 32n) | 1n, length: 0x800n }, dstIova: 0n },
        { t: 'allow', ioas: raw(2), reserved: 0, ranges: [{ start: 0x100000n, last: 0x1fffffn }], ptr: 'array' },
        { t: 'map', flags: 6, reserved: 0, ioas: raw(2), va: { k: 'buf', off: 0n }, length: 0x1000n, iova: 0n },
        { t: 'reserve', testOp: 1, ioas: raw(2), start: 0x180000n, length: 0x1000n },
        { t: 'destroy', id: raw(2) },
        { t: 'destroy', id: raw(2) },
      ],
      // SYZ conversion wrapping at 64 bits: {area 1, offset 0x2000} past an area at the top is 0x1000.
      [
        { t: 'alloc', flags: 0 },
        { t: 'alloc', flags: 0 },
        { t: 'map', flags: 7, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0n }, length: 0x3000n, iova: 0x1000n },
        { t: 'map', flags: 7, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0x3000n }, length: 0x1000n, iova: U64_MAX - 0xfffn },
        { t: 'copy', flags: 0x10007, dst: raw(2), src: raw(1), srcRange: { k: 'raw', iova: (0x2000n << 32n) | 1n, length: 0x1000n }, dstIova: 0x100000n },
        { t: 'copy', flags: 0x10007, dst: raw(2), src: raw(1), srcRange: { k: 'raw', iova: (0x1000n << 32n) | 1n, length: 0x1000n }, dstIova: 0x200000n },
        { t: 'copy', flags: 0x10006, dst: raw(2), src: raw(1), srcRange: { k: 'raw', iova: (0xffffffffn << 32n) | 1n, length: 0x1n }, dstIova: 0n },
        { t: 'copy', flags: 0x10007, dst: raw(2), src: raw(1), srcRange: { k: 'raw', iova: (0x3000n << 32n) | 1n, length: 0x1000n }, dstIova: U64_MAX - 0xfffn },
      ],
      // Top of the address space.
      [
        { t: 'alloc', flags: 0 },
        { t: 'map', flags: 7, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0n }, length: 0x1000n, iova: U64_MAX - 0xfffn },
        { t: 'unmap', ioas: raw(1), range: { k: 'raw', iova: U64_MAX - 0xfffn, length: 0x1000n } },
        { t: 'map', flags: 7, reserved: 0, ioas: raw(1), va: { k: 'raw', v: U64_MAX - 0x1000n }, length: 0x1000n, iova: 0n },
      ],
    ];
    for (const ops of cases) runSequence(ops, false, true);
  });

  it('a mock domain: aperture vs areas, alignment 2048, pinning, who holds whom', () => {
    const raw = (v: number) => ({ k: 'raw' as const, v });
    const map = (off: bigint, length: bigint, iova?: bigint): Op => ({
      t: 'map',
      flags: iova === undefined ? 6 : 7,
      reserved: 0,
      ioas: raw(1),
      va: { k: 'buf', off },
      length,
      iova: iova ?? 0n,
    });
    const ranges: Op = { t: 'ranges', ioas: raw(1), reserved: 0, capacity: 4, ptr: 'array' };
    const steps: [Op, string][] = [
      [{ t: 'alloc', flags: 0 }, 'success'],
      [map(0n, 0x1000n, 0x1000n), 'success'],
      [{ t: 'mock', id: raw(1) }, 'EADDRINUSE'], // [0, 16M) would cover the area
      [{ t: 'unmap', ioas: raw(1), range: { k: 'all' } }, 'success'],
      [map(0x400n, 0x800n, 0x1000400n), 'success'],
      [{ t: 'mock', id: raw(1) }, 'EADDRINUSE'], // the area is not 2048-aligned
      [{ t: 'unmap', ioas: raw(1), range: { k: 'all' } }, 'success'],
      [map(0x800n, 0x800n, 0x1000800n), 'success'],
      [{ t: 'mock', id: raw(1) }, 'success'], // stdev 2, idev 3, hwpt 4
      [{ t: 'mock', id: raw(1), devFlags: 2 }, 'success'], // stdev 5, idev 6, the same hwpt 4
      [{ t: 'mock', id: raw(3) }, 'EINVAL'], // a device is not something to attach to
      [ranges, 'success'],
      [{ t: 'map', flags: 6, reserved: 0, ioas: raw(1), va: { k: 'raw', v: 1n << 31n }, length: 0x1000n, iova: 0n }, 'EFAULT'],
      [map(0x3f800n, 0x1000n), 'EFAULT'], // runs past the end of the buffer
      [map(0x800n, 0x1800n), 'success'],
      [{ t: 'option', optionId: 1, op: 0, reserved: 0, objectId: raw(1), val64: 0n }, 'EINVAL'],
      [{ t: 'destroy', id: raw(1) }, 'EBUSY'],
      [{ t: 'destroy', id: raw(4) }, 'EBUSY'],
      [{ t: 'destroy', id: raw(3) }, 'EBUSY'],
      [{ t: 'destroy', id: raw(2) }, 'success'],
      [ranges, 'success'],
      [{ t: 'destroy', id: raw(5) }, 'success'], // the last device: the auto domain goes too
      [{ t: 'destroy', id: raw(4) }, 'ENOENT'],
      [ranges, 'success'],
    ];
    const got = runSequence(
      steps.map(([op]) => op),
      false,
      true,
    );
    assert.deepEqual(got, steps.map(([, e]) => e));
  });
});
