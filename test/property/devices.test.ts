/**
 * Device and HWPT invariants under random sequences (reference §3.10, §4, §5, §7 items 22–28).
 *
 * Each run builds a fresh machine with an arm-smmu driver with two SMMUs (a group of three devices
 * and a group of two behind smmu0, one device behind smmu1), an SMMUv3 group of two, and mock
 * devices made on demand by MOCK_DOMAIN. Steps mix IOAS ops (alloc, map fixed/auto, unmap, copy)
 * with device ops (MOCK_DOMAIN(_FLAGS), MOCK_DOMAIN_REPLACE, DESTROY of any object; bind, attach,
 * replace, detach, unbind of the kAPI devices; HWPT_ALLOC paging/nested). Refusals must be
 * IommuErrors. After every step:
 *  - every populated area is mapped in every domain of its IOAS: iova_to_phys over the area equals
 *    the pinned frame's physical address at the right offset;
 *  - no area intersects a reserved range;
 *  - each attached device's reserved regions are reserved (owner = device) in its HWPT's IOAS;
 *  - HWPT users == attached devices + nested children + 1, and every other object's users match
 *    its holders (test/refcounts.ts: IOAS = HWPTs + accesses + 1, DEVICE = 2 + attached, ...);
 *  - every frame's pin count == number of page containers pinning it;
 *  - uid locked_vm / mm pinned_vm == pages pinned by accounted containers.
 * After close (and unbinding the kAPI devices, which hold the context) nothing is pinned or
 * charged, no object is left, every group is back on its default domain and every mock device is
 * gone. The learned lock order never contradicts KERNEL_LOCK_ORDER.
 *
 * FC_NUM_RUNS raises the number of runs; FC_SEED / FC_PATH replay a failure.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Iommufd } from '../../src/api/iommufd.js';
import { checkObjectUsers } from '../refcounts.js';
import { createArmSmmu } from '../../src/drivers/arm-smmu.js';
import { ArmSmmuV3Driver } from '../../src/drivers/arm-smmu-v3.js';
import type { MockDevice } from '../../src/drivers/mock/device.js';
import type { IommuDevice } from '../../src/iommu/device.js';
import { ResvType } from '../../src/iommu/resv.js';
import { getDevice } from '../../src/iommufd/device.js';
import { HwptNested, HwptPaging, type Hwpt } from '../../src/iommufd/hw-pagetable.js';
import type { Ioas } from '../../src/iommufd/ioas.js';
import type { IoptPages } from '../../src/iommufd/pages.js';
import { ObjType } from '../../src/iommufd/object.js';
import { IommuError } from '../../src/lib/error.js';
import { KERNEL_LOCK_ORDER, lockdep } from '../../src/lib/lockdep.js';
import { SimMachine } from '../../src/mm/machine.js';
import type { SimProcess } from '../../src/mm/process.js';
import { MOCK_FLAGS_DEVICE_HUGE_IOVA, MOCK_FLAGS_DEVICE_NO_DIRTY } from '../../src/uapi/iommufd-test.js';

const PAGE = 4096n;
const DATA_PAGES = 32;

function numRuns(dflt: number): number {
  const v = Number(process.env.FC_NUM_RUNS);
  return Number.isFinite(v) && v > 0 ? v : dflt;
}

type PtSel = { k: 'ioas' | 'hwpt'; n: number };
type Op =
  | { t: 'ioasAlloc' }
  | { t: 'map'; ioas: number; page: number; pages: number; iova: bigint | null }
  | { t: 'unmap'; ioas: number; area: number; all: boolean }
  | { t: 'copy'; src: number; dst: number; area: number; iova: bigint | null }
  | { t: 'mockDomain'; pt: PtSel; flags: number }
  | { t: 'mockReplace'; stdev: number; pt: PtSel }
  | { t: 'destroy'; n: number }
  | { t: 'bind'; dev: number }
  | { t: 'unbind'; dev: number }
  | { t: 'attach'; dev: number; pt: PtSel }
  | { t: 'replace'; dev: number; pt: PtSel }
  | { t: 'detach'; dev: number }
  | { t: 'hwptAlloc'; dev: number; ioas: number; flags: number }
  | { t: 'nestedAlloc'; dev: number; parent: number };

/** kAPI devices: 0-2 arm-smmu group A (smmu0), 3-4 group B (smmu0), 5 smmu1, 6-7 SMMUv3 group. */
const KAPI_DEVS = 8;

const IOVAS = [0x0n, 0x10000n, 0x1000000n, 0x1004000n, 0x8000000n, 0x80ff000n, 0x7fffc000n, 0x100000000n];

const ptArb: fc.Arbitrary<PtSel> = fc.record({ k: fc.constantFrom('ioas' as const, 'hwpt' as const), n: fc.nat(3) });
const iovaArb = fc.option(fc.constantFrom(...IOVAS), { nil: null, freq: 2 });
const dev = fc.nat(KAPI_DEVS - 1);

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.constant<Op>({ t: 'ioasAlloc' }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant('map' as const), ioas: fc.nat(2), page: fc.nat(DATA_PAGES - 1), pages: fc.integer({ min: 1, max: 4 }), iova: iovaArb }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('unmap' as const), ioas: fc.nat(2), area: fc.nat(5), all: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('copy' as const), src: fc.nat(2), dst: fc.nat(2), area: fc.nat(5), iova: iovaArb }) },
  {
    weight: 3,
    arbitrary: fc.record({ t: fc.constant('mockDomain' as const), pt: ptArb, flags: fc.constantFrom(0, MOCK_FLAGS_DEVICE_NO_DIRTY, MOCK_FLAGS_DEVICE_HUGE_IOVA) }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('mockReplace' as const), stdev: fc.nat(3), pt: ptArb }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('destroy' as const), n: fc.nat(12) }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('bind' as const), dev }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('unbind' as const), dev }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('attach' as const), dev, pt: ptArb }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('replace' as const), dev, pt: ptArb }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('detach' as const), dev }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('hwptAlloc' as const), dev: fc.nat(KAPI_DEVS + 3), ioas: fc.nat(2), flags: fc.constantFrom(0, 1, 2, 3) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('nestedAlloc' as const), dev: fc.nat(3), parent: fc.nat(3) }) },
);

interface Env {
  m: SimMachine;
  p: SimProcess;
  fd: Iommufd;
  data: bigint;
  devs: IommuDevice[];
  /** DEVICE id of each kAPI device while bound. */
  bound: (number | undefined)[];
  mockDevs: MockDevice[];
}

function makeEnv(): Env {
  const m = new SimMachine();
  const p = m.spawn();
  const fd = new Iommufd(p);
  const data = p.mapAnonymous(BigInt(DATA_PAGES) * PAGE);
  for (let i = 0; i < DATA_PAGES; i++) p.writeMem(data + BigInt(i) * PAGE, Uint8Array.of(i + 1));
  const s0 = createArmSmmu();
  const s1 = s0.driver.probe();
  const a0 = s0.addDevice('a0');
  const b0 = s0.addDevice('b0');
  const v3 = new ArmSmmuV3Driver();
  const v0 = v3.addDevice('v0');
  const devs: IommuDevice[] = [
    a0,
    s0.addDevice('a1', { group: a0.group }),
    s0.addDevice('a2', { group: a0.group }),
    b0,
    s0.addDevice('b1', { group: b0.group }),
    s1.addDevice('c0'),
    v0,
    v3.addDevice('v1', v0.group),
  ];
  return { m, p, fd, data, devs, bound: new Array(KAPI_DEVS).fill(undefined), mockDevs: [] };
}

function live(env: Env, type: number): number[] {
  return env.fd.ctx.objects
    .objects()
    .filter((o) => o.finalized && o.type === type)
    .map((o) => o.id);
}

function pick<T>(xs: T[], n: number): T | undefined {
  return xs.length ? xs[n % xs.length] : undefined;
}

function ptId(env: Env, pt: PtSel): number {
  const ids = pt.k === 'ioas' ? live(env, ObjType.IOAS) : [...live(env, ObjType.HWPT_PAGING), ...live(env, ObjType.HWPT_NESTED)];
  return pick(ids, pt.n) ?? 9999;
}

function ioasId(env: Env, n: number): number {
  return pick(live(env, ObjType.IOAS), n) ?? 9999;
}

function areaOf(env: Env, id: number, n: number): { iova: bigint; length: bigint } | undefined {
  const obj = env.fd.ctx.objects.peek(id);
  if (!obj || obj.type !== ObjType.IOAS) return undefined;
  return pick([...(obj as Ioas).iopt.areas.all()], n);
}

/** A DEVICE id usable as HWPT_ALLOC's dev_id: kAPI devices first, then the mock devices. */
function allocDevId(env: Env, n: number): number {
  if (n < KAPI_DEVS) return env.bound[n] ?? 9999;
  return pick(live(env, ObjType.DEVICE).filter((id) => !env.bound.includes(id)), n) ?? 9999;
}

/** The op.dev-th bound kAPI device (index into env.devs), cycling, or undefined when none is bound. */
function boundDev(env: Env, n: number): number | undefined {
  return pick(
    env.bound.flatMap((id, i) => (id === undefined ? [] : [i])),
    n,
  );
}

/** Device ops on an unbound device go to a bound one instead, when there is one. */
function normalize(env: Env, op: Op): Op {
  if ((op.t === 'attach' || op.t === 'replace' || op.t === 'detach' || op.t === 'unbind') && env.bound[op.dev] === undefined) {
    const i = boundDev(env, op.dev);
    if (i !== undefined) return { ...op, dev: i };
  }
  return op;
}

function run(env: Env, op: Op): void {
  const { fd } = env;
  switch (op.t) {
    case 'ioasAlloc':
      fd.ioasAlloc();
      return;
    case 'map': {
      const pages = Math.min(op.pages, DATA_PAGES - op.page);
      fd.ioasMap({
        ioasId: ioasId(env, op.ioas),
        userVa: env.data + BigInt(op.page) * PAGE,
        length: BigInt(pages) * PAGE,
        ...(op.iova !== null ? { iova: op.iova } : {}),
      });
      return;
    }
    case 'unmap': {
      const id = ioasId(env, op.ioas);
      if (op.all) {
        fd.ioasUnmapAll(id);
        return;
      }
      const a = areaOf(env, id, op.area);
      fd.ioasUnmap(id, a?.iova ?? 0x1000n, a?.length ?? PAGE);
      return;
    }
    case 'copy': {
      const src = ioasId(env, op.src);
      const a = areaOf(env, src, op.area);
      fd.ioasCopy({
        srcIoasId: src,
        dstIoasId: ioasId(env, op.dst),
        srcIova: a?.iova ?? 0x1000n,
        length: a?.length ?? PAGE,
        ...(op.iova !== null ? { dstIova: op.iova } : {}),
      });
      return;
    }
    case 'mockDomain': {
      const r = fd.testMockDomain(ptId(env, op.pt), op.flags);
      env.mockDevs.push(getDevice(fd.ctx, r.idevId).dev as MockDevice);
      return;
    }
    case 'mockReplace':
      fd.testMockDomainReplace(pick(live(env, ObjType.SELFTEST), op.stdev) ?? 9999, ptId(env, op.pt));
      return;
    case 'destroy':
      fd.destroy(pick(fd.ctx.objects.ids(), op.n) ?? 9999);
      return;
    case 'bind':
      if (env.bound[op.dev] !== undefined) return;
      env.bound[op.dev] = fd.bindDevice(env.devs[op.dev]!);
      return;
    case 'unbind': {
      const id = env.bound[op.dev];
      if (id === undefined) return;
      fd.unbindDevice(id);
      env.bound[op.dev] = undefined;
      return;
    }
    case 'attach': {
      const id = env.bound[op.dev];
      if (id === undefined) return;
      // An attached device's attach is a replace (VFIO's attach_ioas, §4.3): the typed door does it.
      fd.attach(id, ptId(env, op.pt));
      return;
    }
    case 'replace':
      fd.replace(env.bound[op.dev] ?? 9999, ptId(env, op.pt));
      return;
    case 'detach':
      fd.detach(env.bound[op.dev] ?? 9999);
      return;
    case 'hwptAlloc':
      fd.hwptAlloc({ devId: allocDevId(env, op.dev), ptId: ioasId(env, op.ioas), flags: op.flags });
      return;
    case 'nestedAlloc':
      fd.hwptAlloc({
        devId: allocDevId(env, KAPI_DEVS + op.dev),
        ptId: pick(live(env, ObjType.HWPT_PAGING), op.parent) ?? 9999,
        dataType: 0xdead,
        data: new Uint8Array(4),
      });
      return;
  }
}

function containersOf(env: Env): Set<IoptPages> {
  const out = new Set<IoptPages>();
  for (const o of env.fd.ctx.objects.objects())
    if (o.type === ObjType.IOAS) for (const a of (o as Ioas).iopt.areas.all()) out.add(a.pages);
  return out;
}

/**
 * Devices whose reservations the kernel itself dropped: a replace that fails after the
 * reservation step removes every attached device's reservations from the *target's* IOAS
 * (device.c, iommufd_device_do_replace err_unresv), even when that is the IOAS the group stays
 * in. Tolerated until the device reserves again (attach, replace into another IOAS).
 */
const droppedByKernel = new Set<IommuDevice>();

/** For a replace-like op: the igroup it moves and the IOAS of the HWPT it targets. */
function replaceTarget(env: Env, op: Op): { ig: ReturnType<typeof getDevice>['igroup']; ioas: Ioas } | undefined {
  let devId: number | undefined;
  let pt: PtSel | undefined;
  if (op.t === 'mockReplace') {
    const sid = pick(live(env, ObjType.SELFTEST), op.stdev);
    const sobj = sid === undefined ? undefined : (env.fd.ctx.objects.peek(sid) as { idev?: { id: number } } | undefined);
    devId = sobj?.idev?.id;
    pt = op.pt;
  } else if (op.t === 'replace' || op.t === 'attach') {
    devId = env.bound[op.dev];
    pt = op.pt;
  }
  if (devId === undefined || !pt) return undefined;
  const target = env.fd.ctx.objects.peek(ptId(env, pt));
  const idev = env.fd.ctx.objects.peek(devId) as ReturnType<typeof getDevice> | undefined;
  if (!target || !idev || idev.type !== ObjType.DEVICE) return undefined;
  if (target.type === ObjType.IOAS) return { ig: idev.igroup, ioas: target as Ioas };
  if (target.type === ObjType.HWPT_PAGING || target.type === ObjType.HWPT_NESTED) return { ig: idev.igroup, ioas: (target as Hwpt).paging.ioas };
  return undefined;
}

function checkStep(env: Env, where: string): void {
  const { fd, p } = env;
  const objs = fd.ctx.objects.objects();
  // Areas: mapped in every domain, clear of reservations.
  for (const o of objs) {
    if (o.type !== ObjType.IOAS) continue;
    const iopt = (o as Ioas).iopt;
    for (const a of iopt.areas.all()) {
      assert.ok(a.populated, `${where}: ${a.describe()} not populated`);
      const r = iopt.reserved.firstIntersecting(a.iova, a.last);
      assert.equal(r, undefined, `${where}: ${a.describe()} intersects reserved [${r?.start}, ${r?.last}]`);
      if (!iopt.domains.length) {
        assert.equal(a.storageDomain, null, `${where}: storage domain without domains`);
        continue;
      }
      assert.ok(a.storageDomain && iopt.domains.includes(a.storageDomain), `${where}: ${a.describe()} has no storage domain`);
      for (const d of iopt.domains) {
        for (let off = 0n; off < a.length; off += 2048n) {
          const want = a.pages.physOf(a.startByte + off);
          assert.equal(d.ops!.iovaToPhys(a.iova + off), want, `${where}: ${d.describe()} at IOVA ${(a.iova + off).toString(16)}`);
        }
      }
    }
  }
  // Attached devices: their reserved regions in their HWPT's IOAS; users counts.
  const attachedTo = new Map<Hwpt, number>();
  for (const ig of fd.ctx.groups.values()) {
    if (!ig.hwpt) {
      assert.equal(ig.deviceList.length, 0, `${where}: devices attached to no HWPT`);
      continue;
    }
    assert.ok(ig.deviceList.length > 0, `${where}: igroup has a HWPT but no attached device`);
    assert.equal(ig.group.domain, ig.hwpt.domain, `${where}: the group translates through another domain`);
    attachedTo.set(ig.hwpt, (attachedTo.get(ig.hwpt) ?? 0) + ig.deviceList.length);
    const iopt = ig.hwpt.paging.ioas.iopt;
    for (const idev of ig.deviceList) {
      const mine = iopt.reserved.all().filter((r) => r.owner === idev.dev);
      if (mine.length) droppedByKernel.delete(idev.dev);
      if (droppedByKernel.has(idev.dev)) continue;
      for (const reg of idev.dev.driver.getResvRegions(idev.dev)) {
        if (reg.type === ResvType.DIRECT_RELAXABLE) continue;
        const last = reg.start + reg.length - 1n;
        assert.ok(
          mine.some((r) => r.start === reg.start && r.last === last),
          `${where}: ${idev.describe()}'s region [${reg.start}, ${last}] is not reserved in its IOAS`,
        );
      }
    }
  }
  for (const o of objs) {
    if (o.type !== ObjType.HWPT_PAGING && o.type !== ObjType.HWPT_NESTED) continue;
    const children = objs.filter((c) => c instanceof HwptNested && c.parent === o).length;
    const want = (attachedTo.get(o as Hwpt) ?? 0) + children + 1;
    assert.equal(o.users, want, `${where}: ${o.describe()} users ${o.users}, expected ${want}`);
    if (o instanceof HwptPaging && o.autoDomain) assert.ok(attachedTo.has(o), `${where}: unused auto ${o.describe()} survived`);
  }
  // Users of every other object too: IOAS (HWPTs + accesses + 1), DEVICE, SELFTEST, ...
  checkObjectUsers(fd.ctx, where);
  // Pins and accounting.
  const pinsByFrame = new Map<object, number>();
  let pinned = 0;
  let charged = 0;
  for (const pages of containersOf(env)) {
    for (let i = 0; i < Number(pages.npages); i++) {
      const f = pages.frameAt(i);
      if (f) pinsByFrame.set(f, (pinsByFrame.get(f) ?? 0) + 1);
    }
    assert.equal(pages.pinnedCount, pages.npinned, `${where}: container pinned/charged disagree`);
    pinned += pages.npinned;
    if (pages.accountMode !== 0) charged += pages.npinned;
  }
  for (let i = 0; i < DATA_PAGES; i++) {
    const f = p.mm.lookupPage(env.data + BigInt(i) * PAGE, false);
    assert.equal(f.pinCount, pinsByFrame.get(f) ?? 0, `${where}: page ${i} pin count`);
  }
  assert.equal(p.mm.pinnedVm, pinned, `${where}: pinned_vm`);
  assert.equal(p.user.lockedVm, charged, `${where}: locked_vm`);
  assert.deepEqual(lockdep.violations, [], `${where}: lockdep`);
  assert.ok(lockdep.idle(), `${where}: locks held`);
}

function checkLockOrder(): void {
  const edges = new Set(lockdep.edges());
  for (const [a, b] of KERNEL_LOCK_ORDER) assert.ok(!edges.has(`${b} -> ${a}`), `learned ${b} -> ${a} against the documented ${a} -> ${b}`);
}

function runOps(ops: Op[]): void {
  const env = makeEnv();
  droppedByKernel.clear();
  ops.forEach((op0, i) => {
    const op = normalize(env, op0);
    const rt = replaceTarget(env, op);
    const before = rt?.ig.hwpt?.paging.ioas;
    try {
      run(env, op);
    } catch (e) {
      if (!(e instanceof IommuError)) throw e;
    }
    // A replace tried within the group's own IOAS: an incompatible candidate (or target) may have
    // made the kernel drop the group's reservations there, whether the op then succeeded or not.
    if (rt && before && rt.ig.hwpt?.paging.ioas === before && rt.ioas === before) {
      const resv = before.iopt.reserved.all();
      for (const d of rt.ig.deviceList) if (!resv.some((r) => r.owner === d.dev)) droppedByKernel.add(d.dev);
    }
    checkStep(env, `step ${i} (${op.t})`);
  });
  const { fd, p } = env;
  fd.close();
  // kAPI devices hold the context (§7 item 5): closing their VFIO files detaches and unbinds them.
  const stillBound = env.bound.filter((id) => id !== undefined);
  assert.equal(fd.ctx.released, stillBound.length === 0, 'only bound kAPI devices keep the context');
  for (const id of stillBound) fd.unbindDevice(id!);
  assert.ok(fd.ctx.released);
  assert.equal(fd.ctx.objects.count, 0);
  assert.equal(fd.ctx.groups.size, 0);
  assert.equal(p.mm.pinnedVm, 0);
  assert.equal(p.user.lockedVm, 0);
  for (let i = 0; i < DATA_PAGES; i++) assert.equal(p.mm.lookupPage(env.data + BigInt(i) * PAGE, false).pinCount, 0);
  for (const d of env.devs) {
    assert.equal(d.group.ownerCount, 0);
    assert.equal(d.group.handle, null);
    assert.equal(d.group.domain, d.group.defaultDomain);
  }
  for (const m of env.mockDevs) assert.equal(m.alive, false, `${m.describe()} left behind`);
  checkLockOrder();
}

describe('device and HWPT invariants under random sequences', () => {
  it('hold after every step, and close releases everything', () => {
    const params: fc.Parameters<[Op[]]> = { numRuns: numRuns(300), includeErrorInReport: true };
    if (process.env.FC_SEED) params.seed = Number(process.env.FC_SEED);
    if (process.env.FC_PATH) params.path = process.env.FC_PATH;
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 40, size: 'max' }), (ops) => runOps([{ t: 'ioasAlloc' }, { t: 'ioasAlloc' }, ...ops])),
      params,
    );
  });

  it('a fixed scenario: groups move between IOASes with mappings mirrored everywhere', () => {
    const pt = (k: 'ioas' | 'hwpt', n: number): PtSel => ({ k, n });
    runOps([
      { t: 'ioasAlloc' },
      { t: 'ioasAlloc' },
      { t: 'map', ioas: 0, page: 0, pages: 4, iova: 0x1000000n },
      { t: 'map', ioas: 1, page: 4, pages: 4, iova: null },
      { t: 'bind', dev: 0 },
      { t: 'bind', dev: 1 },
      { t: 'bind', dev: 5 },
      { t: 'bind', dev: 6 },
      { t: 'bind', dev: 7 },
      { t: 'attach', dev: 0, pt: pt('ioas', 0) },
      { t: 'attach', dev: 1, pt: pt('ioas', 0) },
      { t: 'attach', dev: 5, pt: pt('ioas', 0) },
      { t: 'mockDomain', pt: pt('ioas', 0), flags: 0 },
      { t: 'attach', dev: 6, pt: pt('ioas', 1) },
      { t: 'attach', dev: 7, pt: pt('ioas', 1) },
      // A plain SMMUv3 HWPT on IOAS 0 for dev 7 to move onto (6.12's SMMUv3 refuses NEST_PARENT).
      { t: 'hwptAlloc', dev: 6, ioas: 0, flags: 0 },
      { t: 'copy', src: 0, dst: 1, area: 0, iova: null },
      { t: 'replace', dev: 7, pt: pt('hwpt', 3) },
      { t: 'unmap', ioas: 0, area: 0, all: false },
      { t: 'detach', dev: 0 },
      { t: 'destroy', n: 3 },
    ]);
  });
});
