/**
 * Shared fixtures for the IOAS core tests: a simulated machine and process, both doors onto one
 * /dev/iommu context, struct helpers for the binary door, and the per-test invariants (no
 * internal errors, no lock-order violations, no lock left held).
 */
import assert from 'node:assert/strict';
import { afterEach } from 'node:test';
import { DevIommu, type IoctlResult } from '../../src/api/dev-iommu.js';
import { Iommufd } from '../../src/api/iommufd.js';
import type { Ioas } from '../../src/iommufd/ioas.js';
import { internalErrors } from '../../src/iommufd/main.js';
import { ObjType } from '../../src/iommufd/object.js';
import { Errno, type ErrnoName } from '../../src/lib/errno.js';
import { IommuError } from '../../src/lib/error.js';
import { lockdep } from '../../src/lib/lockdep.js';
import { SimMachine } from '../../src/mm/machine.js';
import { PROT_READ } from '../../src/mm/mman.js';
import type { SimProcess } from '../../src/mm/process.js';
import type { Capability } from '../../src/mm/types.js';
import type { DecodedFields, Fields, StructDef } from '../../src/uapi/struct.js';
import { IOMMU_HWPT_FAULT_ID_VALID } from '../../src/uapi/iommufd.js';
import { IOMMU_HWPT_DATA_SELFTEST } from '../../src/uapi/iommufd-test.js';
export { throwsErrno } from '../assert-errno.js';

export const PAGE = 4096n;
export const U64_MAX = (1n << 64n) - 1n;

/**
 * Register the invariants every test must end with. The arrays are emptied after each check so a
 * failure is reported against the test that caused it, not every later one.
 */
export function checkInvariants(): void {
  afterEach(() => {
    const internal = [...internalErrors];
    const violations = [...lockdep.violations];
    const held = lockdep.heldNames();
    internalErrors.length = 0;
    lockdep.violations.length = 0;
    if (held.length) lockdep.resetHeld();
    lockdep.violations.length = 0;
    assert.deepEqual(internal.map(String), [], 'JavaScript exceptions escaped an ioctl');
    assert.deepEqual(violations, [], 'lock order violations');
    assert.deepEqual(held, [], 'locks still held after the test');
    assert.ok(lockdep.idle());
  });
}

export interface World {
  m: SimMachine;
  p: SimProcess;
  /** The typed door. */
  fd: Iommufd;
}

export function world(opts: { caps?: Capability[]; rlimitMemlock?: bigint } = {}): World {
  const m = new SimMachine();
  const p = m.spawn({ capabilities: opts.caps ?? [], ...(opts.rlimitMemlock !== undefined ? { rlimitMemlock: opts.rlimitMemlock } : {}) });
  return { m, p, fd: new Iommufd(p) };
}

export interface BinWorld {
  m: SimMachine;
  p: SimProcess;
  dev: DevIommu;
  /** A read-write page for ioctl structs. */
  scratch: bigint;
}

export function binWorld(opts: { caps?: Capability[]; testKernel?: boolean } = {}): BinWorld {
  const m = new SimMachine();
  const p = m.spawn({ capabilities: opts.caps ?? [] });
  const dev = new DevIommu(p, {}, { testKernel: opts.testKernel ?? true });
  const scratch = p.mapAnonymous(PAGE);
  return { m, p, dev, scratch };
}


/** Assert a binary-door result: success, or this errno with an explanation matching `re`. */
export function expectIoctl(r: IoctlResult, errno: ErrnoName | 'OK', re?: RegExp): void {
  if (errno === 'OK') {
    assert.equal(r.ret, 0, `expected success, got ${r.errno} (${r.explanation})`);
    assert.equal(r.errno, 0);
    return;
  }
  assert.equal(r.ret, -1, `expected ${errno}, got success`);
  assert.equal(r.errno, Errno[errno], `expected ${errno}, got errno ${r.errno}: ${r.explanation}`);
  if (re) assert.match(r.explanation ?? '', re, `explanation: ${r.explanation}`);
}

/** Write `def` with `fields` at `addr` (plus `extra` bytes after it) and return the bytes written. */
export function putStruct<F extends Fields>(
  p: SimProcess,
  addr: bigint,
  def: StructDef<F>,
  fields: Partial<DecodedFields<F>>,
  extra: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const v = def.make({ size: def.size, ...fields } as Partial<DecodedFields<F>>);
  const buf = new Uint8Array(def.size + extra.length);
  def.encode(v, buf, 0);
  buf.set(extra, def.size);
  p.writeMem(addr, buf);
  return buf;
}

export function getStruct<F extends Fields>(p: SimProcess, addr: bigint, def: StructDef<F>): DecodedFields<F> {
  return def.decode(p.readMem(addr, def.size));
}

/** Put the struct in the scratch page, run the ioctl, decode what is there afterwards. */
export function ioctlStruct<F extends Fields>(
  w: BinWorld,
  cmd: number,
  def: StructDef<F>,
  fields: Partial<DecodedFields<F>>,
): { r: IoctlResult; out: DecodedFields<F> } {
  putStruct(w.p, w.scratch, def, fields);
  const r = w.dev.ioctl(cmd, w.scratch);
  return { r, out: getStruct(w.p, w.scratch, def) };
}

/** A page whose contents are `bytes` (at `offset`) and which is then made read-only. */
export function readOnlyPage(p: SimProcess, bytes: Uint8Array, offset = 0): bigint {
  const a = p.mapAnonymous(PAGE);
  p.writeMem(a + BigInt(offset), bytes);
  p.mprotect(a, PAGE, PROT_READ);
  return a;
}

/** The IOAS object behind an id (for looking at areas and page containers). */
export function ioasOf(fd: { ctx: { objects: { get(id: number, t?: number): unknown } } }, id: number): Ioas {
  return fd.ctx.objects.get(id, ObjType.IOAS) as Ioas;
}

/** The areas of an IOAS as [iova, last] pairs, ascending. */
export function areasOf(fd: { ctx: { objects: { get(id: number, t?: number): unknown } } }, id: number): [bigint, bigint][] {
  return [...ioasOf(fd, id).iopt.areas.all()].map((a) => [a.iova, a.last]);
}

export function hexRe(v: bigint | number): RegExp {
  return new RegExp(`0x${v.toString(16)}\\b`);
}

/**
 * HWPT_ALLOC of a selftest nested HWPT (IOMMU_HWPT_DATA_SELFTEST, a zero iotlb) on NEST_PARENT
 * `parent` for device `devId`, delivering its page faults to the fault queue `faultId`.
 */
export function nestedFaultHwpt(fd: Iommufd, devId: number, parent: number, faultId: number): number {
  return fd.hwptAlloc({ devId, ptId: parent, flags: IOMMU_HWPT_FAULT_ID_VALID, faultId, dataType: IOMMU_HWPT_DATA_SELFTEST, data: new Uint8Array(4) });
}
