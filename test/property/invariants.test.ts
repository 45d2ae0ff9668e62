/**
 * io_pagetable invariants under random IOAS command sequences.
 *
 * One context; each step goes through the typed door (Iommufd.call) or the binary door
 * (iommufdIoctl on the same context, the function DevIommu.ioctl calls) with a random struct
 * size (exact, short, longer with a zero or non-zero tail), or is a munmap of part of the
 * process's buffer; ops include mock domains (MOCK_DOMAIN / MOCK_DOMAIN_FLAGS), so MAP, COPY and
 * attach pin pages and charge them. The typed door may only throw IommuError; internalErrors stays empty; after
 * every step (checkInvariants in lib.ts): areas are disjoint, populated, clear of reserved ranges,
 * aligned (iova, length, page offset) to iova_alignment; iovaRanges() is the complement of the
 * union of reserved ranges; allowed ranges avoid reserved ones; with no domain nothing is
 * pinned and nothing is accounted (user locked_vm, mm pinned_vm / locked_vm); with domains every
 * area is pinned, stored in a domain of its IOAS, each container pins exactly the pages its
 * domain-backed areas cover and locked_vm / pinned_vm equal the pages pinned; lockdep is clean
 * and idle. After close() the object table is empty and the accounting is back to zero.
 *
 * FC_NUM_RUNS raises the number of sequences; failures print the seed and shrunk sequence.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { iommufdIoctl } from '../../src/iommufd/main.js';
import { iommufdIoctlByNr } from '../../src/uapi/ioctl.js';
import {
  DATA_PAGES,
  Errno,
  Iommufd,
  buildCmd,
  checkClosed,
  checkInvariants,
  errnoText,
  ioctlNumber,
  makeEnv,
  numRuns,
  opWithDomainsArb,
  runTyped,
  type Env,
  type Op,
} from './lib.js';

type SizeMode = 'exact' | 'short' | 'longZero' | 'longNonZero';
type Step =
  | { door: 'typed'; op: Op }
  | { door: 'binary'; op: Op; size: SizeMode }
  | { door: 'munmap'; page: number; pages: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ door: fc.constant('typed' as const), op: opWithDomainsArb }) },
  {
    weight: 8,
    arbitrary: fc.record({
      door: fc.constant('binary' as const),
      op: opWithDomainsArb,
      size: fc.oneof(
        { weight: 8, arbitrary: fc.constant<SizeMode>('exact') },
        { weight: 1, arbitrary: fc.constantFrom<SizeMode>('short', 'longZero', 'longNonZero') },
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ door: fc.constant('munmap' as const), page: fc.nat({ max: DATA_PAGES - 1 }), pages: fc.integer({ min: 1, max: 4 }) }),
  },
);

/** Every errno these sequences can produce (§2.2–2.9, ADD_RESERVED, MOCK_DOMAIN, §2.1 size rules). */
const IOAS_ERRNOS = new Set<number>([
  0,
  Errno.EOPNOTSUPP,
  Errno.EOVERFLOW,
  Errno.EINVAL,
  Errno.ENOENT,
  Errno.EEXIST,
  Errno.ENOSPC,
  Errno.EPERM,
  Errno.EBUSY,
  Errno.EFAULT,
  Errno.EMSGSIZE,
  Errno.EADDRINUSE,
  Errno.E2BIG,
  // With mock domains: RLIMIT_MEMLOCK (8 MiB here) when pinning.
  Errno.ENOMEM,
]);

/** The binary door with a chosen struct size; returns the errno (0 on success). */
function runBinarySized(env: Env, iom: Iommufd, op: Op, mode: SizeMode): number {
  const c = buildCmd(env, iom.ctx, op);
  const entry = iommufdIoctlByNr(c.nr, true)!;
  let bytes = c.bytes;
  let size = bytes.length;
  if (mode === 'short') size = entry.minSize - 1;
  if (mode === 'longZero' || mode === 'longNonZero') {
    size = bytes.length + 8;
    bytes = new Uint8Array(size);
    bytes.set(c.bytes);
    if (mode === 'longNonZero') bytes[size - 3] = 0x5a;
  }
  new DataView(bytes.buffer).setUint32(0, size, true);
  if (c.arrayIn) env.proc.writeMem(env.array, c.arrayIn);
  env.proc.writeMem(env.arg, bytes);
  const r = iommufdIoctl(iom.ctx, env.proc, ioctlNumber(c.nr), env.arg);
  assert.ok(Number.isInteger(r) && r <= 0, `ioctl result ${r}`);
  const errno = -r;
  if (mode === 'short') assert.equal(errnoText(errno), 'EINVAL', 'size below min_size');
  if (mode === 'longNonZero') assert.equal(errnoText(errno), 'E2BIG', 'non-zero tail past sizeof');
  return errno;
}

function runSteps(steps: Step[]): void {
  const env = makeEnv();
  const iom = new Iommufd(env.proc);
  checkInvariants(iom.ctx, env, 'fresh');
  steps.forEach((s, i) => {
    const where = `step ${i} (${s.door}${'op' in s ? ' ' + s.op.t : ''})`;
    let errno = 0;
    if (s.door === 'munmap') {
      env.proc.munmap(env.data + BigInt(s.page) * 4096n, BigInt(s.pages) * 4096n);
    } else if (s.door === 'typed') {
      // runTyped rethrows anything that is not an IommuError: that fails the property.
      errno = runTyped(env, iom, buildCmd(env, iom.ctx, s.op)).errno;
    } else {
      errno = runBinarySized(env, iom, s.op, s.size);
    }
    assert.ok(IOAS_ERRNOS.has(errno), `${where}: unexpected errno ${errnoText(errno)}`);
    checkInvariants(iom.ctx, env, where);
  });
  iom.close();
  checkClosed(iom.ctx, env);
}

describe('io_pagetable invariants under random command sequences', () => {
  it('hold after every step and after close', () => {
    const params: fc.Parameters<[Step[]]> = { numRuns: numRuns(300), includeErrorInReport: true };
    if (process.env.FC_SEED) params.seed = Number(process.env.FC_SEED);
    if (process.env.FC_PATH) params.path = process.env.FC_PATH;
    fc.assert(
      fc.property(
        fc
          .tuple(fc.array(fc.constant<Step>({ door: 'typed', op: { t: 'alloc', flags: 0 } }), { minLength: 1, maxLength: 2 }), fc.array(stepArb, { maxLength: 40, size: 'max' }))
          .map(([a, b]) => [...a, ...b]),
        (steps) => runSteps(steps),
      ),
      params,
    );
  });

  it('close releases IOASes with areas, reservations and allowed ranges', () => {
    const raw = (v: number) => ({ k: 'raw' as const, v });
    runSteps([
      { door: 'typed', op: { t: 'alloc', flags: 0 } },
      { door: 'binary', op: { t: 'alloc', flags: 0 }, size: 'exact' },
      { door: 'typed', op: { t: 'map', flags: 7, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0n }, length: 0x4000n, iova: 0x10000n } },
      { door: 'binary', op: { t: 'copy', flags: 6, dst: raw(2), src: raw(1), srcRange: { k: 'raw', iova: 0x11000n, length: 0x1000n }, dstIova: 0n }, size: 'exact' },
      { door: 'typed', op: { t: 'reserve', testOp: 1, ioas: raw(2), start: 0x100000n, length: 0x1000n } },
      { door: 'binary', op: { t: 'allow', ioas: raw(1), reserved: 0, ranges: [{ start: 0x200000n, last: 0x2fffffn }], ptr: 'array' }, size: 'longZero' },
      { door: 'munmap', page: 0, pages: 4 },
      { door: 'typed', op: { t: 'map', flags: 6, reserved: 0, ioas: raw(1), va: { k: 'buf', off: 0n }, length: 0x1000n, iova: 0n } },
    ]);
  });
});
