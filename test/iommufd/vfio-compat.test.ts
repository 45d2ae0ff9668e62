/**
 * The VFIO type1 container ioctls on the iommufd fd (reference §6, vfio_compat.c), through the
 * binary door: structs in the process's memory, errno back. Oracle: ioctl-numbers.txt (API
 * version, CHECK_EXTENSION, ENODEV before a compat IOAS), vfio-ioas.txt (DMA_CC).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { IoctlResult } from '../../src/api/dev-iommu.js';
import type { Iommufd } from '../../src/api/iommufd.js';
import { createArmSmmu, type ArmSmmuDomain } from '../../src/drivers/arm-smmu.js';
import { IntelIommuDriver } from '../../src/drivers/intel-vtd.js';
import type { HwptPaging } from '../../src/iommufd/hw-pagetable.js';
import { iommufdIoctl } from '../../src/iommufd/main.js';
import { IoptArea } from '../../src/iommufd/area.js';
import { IoptPages } from '../../src/iommufd/pages.js';
import { Errno } from '../../src/lib/errno.js';
import { PROT_READ } from '../../src/mm/mman.js';
import type { SimProcess } from '../../src/mm/process.js';
import type { Capability } from '../../src/mm/types.js';
import { _IOWR } from '../../src/uapi/ioctl.js';
import { MOCK_FLAGS_DEVICE_HUGE_IOVA } from '../../src/uapi/iommufd-test.js';
import type { DecodedFields, Fields, StructDef } from '../../src/uapi/struct.js';
import {
  VFIO_CHECK_EXTENSION,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_DISABLE,
  VFIO_IOMMU_ENABLE,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
  VfioIommuType1DmaMap,
  VfioIommuType1DmaUnmap,
  VfioIommuType1Info,
} from '../../src/uapi/vfio.js';
import { PAGE, U64_MAX, areasOf, checkInvariants, ioasOf, world, type World } from './helpers.js';

checkInvariants();

const TYPE1 = 1n;
const TYPE1v2 = 3n;
const NOIOMMU = 8n;

interface Vw extends World {
  /** A page for ioctl structs. */
  arg: bigint;
  /** 16 pages of shared memory to map. */
  buf: bigint;
  ioas: number;
}

/** A context with an IOAS set as the compat IOAS (unless `compat: false`). */
function vworld(opts: { compat?: boolean; vfioContainer?: boolean; caps?: Capability[] } = {}): Vw {
  const w = world(opts.caps ? { caps: opts.caps } : {});
  if (opts.vfioContainer) (w.fd.ctx as { accountMode: number }).accountMode = 2;
  const ioas = w.fd.ioasAlloc();
  if (opts.compat !== false) w.fd.vfioIoasSet(ioas);
  return { ...w, arg: w.p.mapAnonymous(PAGE), buf: w.p.mapAnonymous(16n * PAGE, { shared: true }), ioas };
}

function ioctl(w: { fd: Iommufd; p: SimProcess }, cmd: number, arg: bigint): IoctlResult {
  const r = iommufdIoctl(w.fd.ctx, w.p, cmd, arg);
  if (r >= 0) return { ret: r, errno: 0 };
  return { ret: -1, errno: -r, explanation: w.fd.ctx.lastError?.explanation ?? '' };
}

function ok(r: IoctlResult, ret = 0): void {
  assert.equal(r.errno, 0, `expected success, got errno ${r.errno}: ${r.explanation}`);
  assert.equal(r.ret, ret);
}

function err(r: IoctlResult, errno: keyof typeof Errno, re?: RegExp): void {
  assert.equal(r.ret, -1, `expected ${errno}, got ${r.ret}`);
  assert.equal(r.errno, Errno[errno], `expected ${errno}, got errno ${r.errno}: ${r.explanation}`);
  if (re) assert.match(r.explanation ?? '', re);
}

function put<F extends Fields>(p: SimProcess, addr: bigint, def: StructDef<F>, fields: Partial<DecodedFields<F>>): void {
  p.writeMem(addr, def.encode(def.make(fields)));
}

function get<F extends Fields>(p: SimProcess, addr: bigint, def: StructDef<F>): DecodedFields<F> {
  return def.decode(p.readMem(addr, def.size));
}

function mapDma(w: Vw, iova: bigint, size: bigint, opts: { vaddr?: bigint; flags?: number; argsz?: number } = {}): IoctlResult {
  put(w.p, w.arg, VfioIommuType1DmaMap, { argsz: opts.argsz ?? 32, flags: opts.flags ?? 3, vaddr: opts.vaddr ?? w.buf, iova, size });
  return ioctl(w, VFIO_IOMMU_MAP_DMA, w.arg);
}

function unmapDma(w: Vw, iova: bigint, size: bigint, opts: { flags?: number; argsz?: number } = {}): { r: IoctlResult; size: bigint } {
  put(w.p, w.arg, VfioIommuType1DmaUnmap, { argsz: opts.argsz ?? 24, flags: opts.flags ?? 0, iova, size });
  const r = ioctl(w, VFIO_IOMMU_UNMAP_DMA, w.arg);
  return { r, size: get(w.p, w.arg, VfioIommuType1DmaUnmap).size };
}

/** An ARM SMMU device bound and attached to the compat IOAS (its domain is then in the IOAS). */
function attachArmSmmu(w: Vw): ArmSmmuDomain {
  const dev = createArmSmmu().addDevice('nic0');
  const id = w.fd.bindDevice(dev);
  w.fd.attach(id, w.ioas);
  return ioasOf(w.fd, w.ioas).iopt.domains[0] as ArmSmmuDomain;
}

describe('VFIO_GET_API_VERSION, unknown ioctls', () => {
  test('returns VFIO_API_VERSION 0 whatever the argument', () => {
    const w = vworld({ compat: false });
    ok(ioctl(w, VFIO_GET_API_VERSION, 0n), 0);
    ok(ioctl(w, VFIO_GET_API_VERSION, 0xdead_beefn), 0);
  });

  test('the number must match exactly; ENABLE, DISABLE, DIRTY_PAGES are ENOTTY', () => {
    const w = vworld();
    err(ioctl(w, _IOWR(0x3b, 0x64, 8), w.arg), 'ENOTTY');
    for (const cmd of [VFIO_IOMMU_ENABLE, VFIO_IOMMU_DISABLE, VFIO_IOMMU_DIRTY_PAGES]) err(ioctl(w, cmd, w.arg), 'ENOTTY');
  });
});

describe('VFIO_CHECK_EXTENSION', () => {
  test('the answers of ioctl-numbers.txt (no compat IOAS)', () => {
    const w = vworld({ compat: false });
    const expect: [bigint, number][] = [
      [0n, 0], [1n, 1], [2n, 0], [3n, 1], [5n, 0], [6n, 0], [7n, 0], [8n, 1], [9n, 1], [10n, 0], [11n, 0], [12n, 0],
      [0xffff_ffffn, 0], [U64_MAX, 0],
    ];
    for (const [ext, ret] of expect) ok(ioctl(w, VFIO_CHECK_EXTENSION, ext), ret);
    err(ioctl(w, VFIO_CHECK_EXTENSION, 4n), 'ENODEV', /no compat IOAS/);
  });

  test('no-iommu mode withdraws TYPE1, TYPE1v2 and UNMAP_ALL', () => {
    const w = vworld({ compat: false });
    w.fd.ctx.noIommuMode = true;
    for (const ext of [1n, 3n, 9n]) ok(ioctl(w, VFIO_CHECK_EXTENSION, ext), 0);
    ok(ioctl(w, VFIO_CHECK_EXTENSION, NOIOMMU), 1);
  });

  test('DMA_CC_IOMMU: vacuously 1, 1 while every HWPT enforces, 0 once a non-enforcing one joins (§4.12)', () => {
    const w = vworld();
    ok(ioctl(w, VFIO_CHECK_EXTENSION, 4n), 1);
    // VT-d devices: behind a unit with snoop control (enforcing) and behind one without.
    const vtd = new IntelIommuDriver();
    const sc = w.fd.bindDevice(vtd.addUnit({ snoopControl: true }).addDevice('sc'));
    const nosc = w.fd.bindDevice(vtd.addUnit({ snoopControl: false }).addDevice('nosc'));
    const h1 = w.fd.attach(sc, w.ioas);
    assert.equal((ioasOf(w.fd, w.ioas).hwptList[0] as HwptPaging).enforceCacheCoherency, true);
    ok(ioctl(w, VFIO_CHECK_EXTENSION, 4n), 1);
    // The non-enforcing device cannot join the force-snooping auto HWPT: a second, non-CC one.
    const h2 = w.fd.attach(nosc, w.ioas);
    assert.notEqual(h2, h1);
    ok(ioctl(w, VFIO_CHECK_EXTENSION, 4n), 0);
    w.fd.detach(nosc);
    ok(ioctl(w, VFIO_CHECK_EXTENSION, 4n), 1); // the non-CC auto HWPT died with its last device
    // A user HWPT counts too: allocated for the non-enforcing device, it does not enforce.
    const h3 = w.fd.hwptAlloc({ devId: nosc, ptId: w.ioas });
    ok(ioctl(w, VFIO_CHECK_EXTENSION, 4n), 0);
    w.fd.destroy(h3);
    ok(ioctl(w, VFIO_CHECK_EXTENSION, 4n), 1);
    // Mock domains never enforce.
    w.fd.testMockDomain(w.ioas);
    ok(ioctl(w, VFIO_CHECK_EXTENSION, 4n), 0);
  });
});

describe('VFIO_SET_IOMMU', () => {
  test('types other than TYPE1/TYPE1v2 are EINVAL, before the compat IOAS is looked for', () => {
    const w = vworld({ compat: false });
    for (const t of [0n, 2n, 4n, 7n, NOIOMMU, 0x1_0000_0001n]) err(ioctl(w, VFIO_SET_IOMMU, t), 'EINVAL');
    err(ioctl(w, VFIO_SET_IOMMU, TYPE1v2), 'ENODEV');
  });

  test('TYPE1v2 keeps large pages, TYPE1 disables them', () => {
    const w = vworld();
    const iopt = ioasOf(w.fd, w.ioas).iopt;
    ok(ioctl(w, VFIO_SET_IOMMU, TYPE1v2));
    assert.equal(iopt.disableLargePages, false);
    assert.equal(w.fd.getHugePages(w.ioas), true);
    ok(ioctl(w, VFIO_SET_IOMMU, TYPE1));
    assert.equal(iopt.disableLargePages, true);
    assert.equal(iopt.iovaAlignment, PAGE);
    ok(ioctl(w, VFIO_SET_IOMMU, TYPE1), 0);
  });

  test('TYPE1 is EINVAL once the IOAS has a domain and a mapping', () => {
    const w = vworld();
    w.fd.testMockDomain(w.ioas);
    ok(mapDma(w, 0x100_0000n, PAGE));
    err(ioctl(w, VFIO_SET_IOMMU, TYPE1), 'EINVAL', /large pages cannot be disabled/);
    ok(ioctl(w, VFIO_SET_IOMMU, TYPE1v2));
  });

  test('no-iommu mode: NOIOMMU needs CAP_SYS_RAWIO; TYPE1 is EINVAL', () => {
    const w = vworld({ compat: false });
    w.fd.ctx.noIommuMode = true;
    err(ioctl(w, VFIO_SET_IOMMU, NOIOMMU), 'EPERM', /CAP_SYS_RAWIO/);
    err(ioctl(w, VFIO_SET_IOMMU, TYPE1), 'EINVAL', /no-iommu/);
    const root = vworld({ compat: false, caps: ['CAP_SYS_RAWIO'] });
    root.fd.ctx.noIommuMode = true;
    ok(ioctl(root, VFIO_SET_IOMMU, NOIOMMU));
  });
});

describe('VFIO_IOMMU_GET_INFO', () => {
  const FULL = 24 + 16 + 16 + 16; // info, DMA_AVAIL (12 padded to 16), IOVA_RANGE header + one range

  /** Fill the page with 0xaa, put the first 16 bytes, run GET_INFO. */
  function getInfo(w: Vw, argsz: number): { r: IoctlResult; bytes: Uint8Array } {
    w.p.writeMem(w.arg, new Uint8Array(Number(PAGE)).fill(0xaa));
    const head = new Uint8Array(16);
    new DataView(head.buffer).setUint32(0, argsz, true);
    w.p.writeMem(w.arg, head);
    const r = ioctl(w, VFIO_IOMMU_GET_INFO, w.arg);
    return { r, bytes: w.p.readMem(w.arg, 256) };
  }

  test('argsz below 16 is EINVAL, an unreadable struct EFAULT, no compat IOAS ENODEV', () => {
    const w = vworld({ compat: false });
    err(getInfo(w, 15).r, 'EINVAL', /argsz 15/);
    err(ioctl(w, VFIO_IOMMU_GET_INFO, 0n), 'EFAULT');
    err(getInfo(w, 24).r, 'ENODEV');
  });

  test('the full cap chain with no domain: pgsizes 0xfffffffffffff000, DMA_AVAIL then IOVA_RANGE', () => {
    const w = vworld();
    const { r, bytes } = getInfo(w, 256);
    ok(r);
    const dv = new DataView(bytes.buffer, bytes.byteOffset);
    const info = VfioIommuType1Info.decode(bytes);
    assert.deepEqual(info, { argsz: FULL, flags: 3, iovaPgsizes: 0xffff_ffff_ffff_f000n, capOffset: 24, pad: 0 });
    // DMA_AVAIL at 24: id 3, version 1, next 40, avail U32_MAX; then 4 padding bytes untouched.
    assert.deepEqual([dv.getUint16(24, true), dv.getUint16(26, true), dv.getUint32(28, true), dv.getUint32(32, true)], [3, 1, 40, 0xffff_ffff]);
    assert.equal(dv.getUint32(36, true), 0xaaaa_aaaa);
    // IOVA_RANGE at 40: id 1, version 1, next 0, nr_iovas 1, reserved 0, {0, U64_MAX}.
    assert.deepEqual(
      [dv.getUint16(40, true), dv.getUint16(42, true), dv.getUint32(44, true), dv.getUint32(48, true), dv.getUint32(52, true)],
      [1, 1, 0, 1, 0],
    );
    assert.deepEqual([dv.getBigUint64(56, true), dv.getBigUint64(64, true)], [0n, U64_MAX]);
    assert.equal(bytes[FULL], 0xaa, 'nothing written past the chain');
  });

  test('a short argsz: argsz says what is needed, cap_offset 0, nothing written past argsz', () => {
    const w = vworld();
    for (let argsz = 16; argsz < FULL; argsz++) {
      const { r, bytes } = getInfo(w, argsz);
      ok(r);
      const dv = new DataView(bytes.buffer, bytes.byteOffset);
      assert.equal(dv.getUint32(0, true), FULL, `argsz ${argsz}`);
      assert.equal(dv.getUint32(4, true), 3);
      assert.equal(dv.getBigUint64(8, true), 0xffff_ffff_ffff_f000n);
      if (argsz >= 24) assert.equal(dv.getUint32(16, true), 0, `cap_offset with argsz ${argsz}`);
      for (let i = argsz; i < 256; i++) assert.equal(bytes[i], 0xaa, `byte ${i} written with argsz ${argsz}`);
      // DMA_AVAIL is there once its 12 bytes fit; the link to IOVA_RANGE once 40 does.
      if (argsz >= 36) assert.equal(dv.getUint16(24, true), 3);
      if (argsz >= 40) assert.equal(dv.getUint32(28, true), 40);
      else if (argsz >= 36) assert.equal(dv.getUint32(28, true), 0);
    }
    // Exactly enough: everything, cap_offset 24.
    assert.equal(VfioIommuType1Info.decode(getInfo(w, FULL).bytes).capOffset, 24);
  });

  test('ranges: the holes of the reserved ranges; pgsizes from the domains', () => {
    const w = vworld();
    const dom = attachArmSmmu(w);
    assert.equal(dom.finalised, true);
    const { r, bytes } = getInfo(w, 256);
    ok(r);
    const dv = new DataView(bytes.buffer, bytes.byteOffset);
    const info = VfioIommuType1Info.decode(bytes);
    // arm-smmu 4K granule: 4K|2M|1G.
    assert.equal(info.iovaPgsizes, 0x4020_1000n);
    // Holes: below the MSI window, between it and 2^48, nothing above the aperture.
    const nr = dv.getUint32(48, true);
    assert.equal(nr, 2);
    assert.equal(info.argsz, 24 + 16 + 16 + 32);
    const ranges = [0, 1].map((i) => [dv.getBigUint64(56 + 16 * i, true), dv.getBigUint64(64 + 16 * i, true)]);
    assert.deepEqual(ranges, [
      [0n, 0x7ff_ffffn],
      [0x810_0000n, (1n << 48n) - 1n],
    ]);
  });

  test('sizes below PAGE_SIZE collapse into PAGE_SIZE (mock 2K pages); ANDed over domains', () => {
    const w = vworld();
    w.fd.testMockDomain(w.ioas);
    assert.equal(VfioIommuType1Info.decode(getInfo(w, 24).bytes).iovaPgsizes, 0x1000n);
    const w2 = vworld();
    w2.fd.testMockDomain(w2.ioas, MOCK_FLAGS_DEVICE_HUGE_IOVA);
    assert.equal(VfioIommuType1Info.decode(getInfo(w2, 24).bytes).iovaPgsizes, 0x10_1000n);
  });

  test('an unwritable struct is EFAULT', () => {
    const w = vworld();
    const ro = w.p.mapAnonymous(PAGE);
    const head = new Uint8Array(16);
    new DataView(head.buffer).setUint32(0, 256, true);
    w.p.writeMem(ro, head);
    w.p.mprotect(ro, PAGE, PROT_READ);
    err(ioctl(w, VFIO_IOMMU_GET_INFO, ro), 'EFAULT');
  });
});

describe('VFIO_IOMMU_MAP_DMA', () => {
  test('argument checks: EFAULT, argsz, flags, then ENODEV', () => {
    const w = vworld({ compat: false });
    err(ioctl(w, VFIO_IOMMU_MAP_DMA, 0n), 'EFAULT');
    err(mapDma(w, 0x10_0000n, PAGE, { argsz: 31 }), 'EINVAL', /argsz 31/);
    err(mapDma(w, 0x10_0000n, PAGE, { flags: 4 }), 'EINVAL', /0x4/);
    err(mapDma(w, 0x10_0000n, PAGE), 'ENODEV');
  });

  test('a fixed-IOVA map; the struct is not written back', () => {
    const w = vworld();
    put(w.p, w.arg, VfioIommuType1DmaMap, { argsz: 64, flags: 3, vaddr: w.buf, iova: 0x10_0000n, size: 4n * PAGE });
    const before = w.p.readMem(w.arg, 64);
    ok(ioctl(w, VFIO_IOMMU_MAP_DMA, w.arg));
    assert.deepEqual(w.p.readMem(w.arg, 64), before);
    assert.deepEqual(areasOf(w.fd, w.ioas), [[0x10_0000n, 0x10_3fffn]]);
    err(mapDma(w, 0x10_2000n, PAGE), 'EEXIST');
  });

  test('the IOAS_MAP checks apply: size 0, alignment, overflow', () => {
    const w = vworld();
    err(mapDma(w, 0x10_0000n, 0n), 'EINVAL', /length is 0/);
    err(mapDma(w, U64_MAX - PAGE + 1n, 2n * PAGE), 'EOVERFLOW');
    ok(ioctl(w, VFIO_SET_IOMMU, TYPE1));
    err(mapDma(w, 0x10_0800n, PAGE), 'EINVAL', /aligned/);
  });

  test('neither READ nor WRITE is accepted without a domain; arm-smmu page tables refuse it', () => {
    const w = vworld();
    ok(mapDma(w, 0x10_0000n, PAGE, { flags: 0 }));
    const w2 = vworld();
    attachArmSmmu(w2);
    err(mapDma(w2, 0x10_0000n, PAGE, { flags: 0 }), 'EINVAL', /neither IOMMU_READ nor IOMMU_WRITE/);
    assert.deepEqual(areasOf(w2.fd, w2.ioas), []);
    ok(mapDma(w2, 0x10_0000n, PAGE, { flags: 1 }));
  });

  test('pins through the domain and charges the context accounting mode', () => {
    const user = vworld();
    user.fd.testMockDomain(user.ioas);
    ok(mapDma(user, 0x100_0000n, 4n * PAGE));
    assert.equal(user.p.user.lockedVm, 4);
    assert.equal(user.p.mm.lockedVm, 0);
    assert.equal(user.p.mm.pinnedVm, 4);

    const mm = vworld({ vfioContainer: true });
    mm.fd.testMockDomain(mm.ioas);
    ok(mapDma(mm, 0x100_0000n, 4n * PAGE));
    assert.equal(mm.p.mm.lockedVm, 4);
    assert.equal(mm.p.user.lockedVm, 0);
  });

  test('the MSI window of an attached device is reserved', () => {
    const w = vworld();
    attachArmSmmu(w);
    err(mapDma(w, 0x800_0000n, PAGE), 'EINVAL', /reserved/);
  });
});

describe('VFIO_IOMMU_UNMAP_DMA', () => {
  test('argument checks: EFAULT, argsz, flags, ENODEV; no write-back', () => {
    const w = vworld({ compat: false });
    err(ioctl(w, VFIO_IOMMU_UNMAP_DMA, 0n), 'EFAULT');
    const short = unmapDma(w, 0n, 0x77n, { argsz: 23 });
    err(short.r, 'EINVAL', /argsz 23/);
    assert.equal(short.size, 0x77n);
    err(unmapDma(w, 0n, 0x77n, { flags: 1 }).r, 'EINVAL');
    err(unmapDma(w, 0n, 0x77n, { flags: 4 }).r, 'EINVAL');
    const none = unmapDma(w, 0n, 0x77n);
    err(none.r, 'ENODEV');
    assert.equal(none.size, 0x77n);
  });

  test('unmapping nothing succeeds with size 0', () => {
    const w = vworld();
    const r = unmapDma(w, 0x10_0000n, 0x10_0000n);
    ok(r.r);
    assert.equal(r.size, 0n);
  });

  test('UNMAP_ALL: iova and size must be 0; then everything goes', () => {
    const w = vworld();
    ok(mapDma(w, 0x10_0000n, PAGE));
    ok(mapDma(w, 0x20_0000n, 2n * PAGE));
    const bad = unmapDma(w, 0n, PAGE, { flags: 2 });
    err(bad.r, 'EINVAL', /FLAG_ALL/);
    assert.equal(bad.size, PAGE, 'not written back');
    const all = unmapDma(w, 0n, 0n, { flags: 2 });
    ok(all.r);
    assert.equal(all.size, 3n * PAGE);
    assert.deepEqual(areasOf(w.fd, w.ioas), []);
  });

  test('size 0 is EINVAL and an overflowing range EOVERFLOW, both writing size 0 back', () => {
    const w = vworld();
    const zero = unmapDma(w, 0x10_0000n, 0n);
    err(zero.r, 'EINVAL');
    assert.equal(zero.size, 0n);
    const over = unmapDma(w, U64_MAX - PAGE + 1n, 2n * PAGE);
    err(over.r, 'EOVERFLOW');
    assert.equal(over.size, 0n);
  });

  test('TYPE1v2: cutting into a mapping is ENOENT; size reports what went before the failure', () => {
    const w = vworld();
    ok(ioctl(w, VFIO_SET_IOMMU, TYPE1v2));
    ok(mapDma(w, 0x10_0000n, PAGE));
    ok(mapDma(w, 0x10_1000n, 2n * PAGE, { vaddr: w.buf + PAGE }));
    const sub = unmapDma(w, 0x10_1000n, PAGE);
    err(sub.r, 'ENOENT', /not fully inside/);
    assert.equal(sub.size, 0n);
    const partial = unmapDma(w, 0x10_0000n, 2n * PAGE);
    err(partial.r, 'ENOENT');
    assert.equal(partial.size, PAGE, 'the first mapping was removed before the second stopped the walk');
    assert.deepEqual(areasOf(w.fd, w.ioas), [[0x10_1000n, 0x10_2fffn]]);
  });

  test('TYPE1 (v1): any page-granular sub-range can be unmapped; the rest stays mapped', () => {
    const w = vworld();
    ok(ioctl(w, VFIO_SET_IOMMU, TYPE1));
    ok(mapDma(w, 0x10_0000n, 16n * PAGE));
    const mid = unmapDma(w, 0x10_4000n, 2n * PAGE);
    ok(mid.r);
    assert.equal(mid.size, 2n * PAGE);
    assert.deepEqual(areasOf(w.fd, w.ioas), [
      [0x10_0000n, 0x10_3fffn],
      [0x10_6000n, 0x10_ffffn],
    ]);
    // Both halves share the page container: it is released only with the last of them.
    const areas = [...ioasOf(w.fd, w.ioas).iopt.areas.all()];
    assert.equal(areas[0]!.pages, areas[1]!.pages);
    assert.equal(areas[0]!.pages.refs, 2);
    assert.equal(areas[1]!.startByte, 6n * PAGE);
    // Unmapping across the end of the first and start of the second.
    const across = unmapDma(w, 0x10_3000n, 4n * PAGE);
    ok(across.r);
    assert.equal(across.size, 2n * PAGE);
    assert.deepEqual(areasOf(w.fd, w.ioas), [
      [0x10_0000n, 0x10_2fffn],
      [0x10_7000n, 0x10_ffffn],
    ]);
    const all = unmapDma(w, 0n, 0n, { flags: 2 });
    assert.equal(all.size, 12n * PAGE);
  });

  test('TYPE1: a cut that is not page aligned is EINVAL without write-back', () => {
    const w = vworld();
    ok(ioctl(w, VFIO_SET_IOMMU, TYPE1));
    ok(mapDma(w, 0x10_0000n, 4n * PAGE));
    const r = unmapDma(w, 0x10_0800n, PAGE);
    err(r.r, 'EINVAL', /iova_alignment 0x1000/);
    assert.equal(r.size, PAGE);
    assert.deepEqual(areasOf(w.fd, w.ioas), [[0x10_0000n, 0x10_3fffn]]);
  });

  test('TYPE1 at IOVA 0 only cuts at the end', () => {
    const w = vworld();
    ok(ioctl(w, VFIO_SET_IOMMU, TYPE1));
    ok(mapDma(w, 0n, 4n * PAGE));
    const r = unmapDma(w, 0n, PAGE);
    ok(r.r);
    assert.equal(r.size, PAGE);
    assert.deepEqual(areasOf(w.fd, w.ioas), [[0x1000n, 0x3fffn]]);
  });

  test('TYPE1 with a domain: the split keeps the domain mapping of the rest and the pins', () => {
    const w = vworld();
    ok(ioctl(w, VFIO_SET_IOMMU, TYPE1));
    const dom = attachArmSmmu(w);
    ok(mapDma(w, 0x20_0000n, 16n * PAGE));
    assert.equal(w.p.mm.pinnedVm, 16);
    const r = unmapDma(w, 0x20_8000n, PAGE);
    ok(r.r);
    assert.equal(r.size, PAGE);
    assert.equal(dom.ops.iovaToPhys(0x20_8000n), undefined);
    assert.notEqual(dom.ops.iovaToPhys(0x20_7000n), undefined);
    assert.notEqual(dom.ops.iovaToPhys(0x20_9000n), undefined);
    assert.equal(w.p.mm.pinnedVm, 15);
    unmapDma(w, 0n, 0n, { flags: 2 });
    assert.equal(w.p.mm.pinnedVm, 0);
    assert.equal([...dom.pgtable!.leaves()].length, 0);
  });

  test('a struct that cannot be written back: EFAULT, but the unmap happened', () => {
    const w = vworld();
    ok(mapDma(w, 0x10_0000n, PAGE));
    const ro = w.p.mapAnonymous(PAGE);
    put(w.p, ro, VfioIommuType1DmaUnmap, { argsz: 24, flags: 0, iova: 0x10_0000n, size: PAGE });
    w.p.mprotect(ro, PAGE, PROT_READ);
    err(ioctl(w, VFIO_IOMMU_UNMAP_DMA, ro), 'EFAULT');
    assert.deepEqual(areasOf(w.fd, w.ioas), []);
  });
});

describe('IoPagetable.cutIova', () => {
  function split(w: Vw) {
    ok(mapDma(w, 0x10_0000n, 4n * PAGE));
    return ioasOf(w.fd, w.ioas).iopt;
  }

  test('cuts at an area edge or outside any area do nothing', () => {
    const w = vworld();
    const iopt = split(w);
    iopt.cutIova([0x10_0000n, 0x10_3fffn, 0x5000n]);
    assert.deepEqual(areasOf(w.fd, w.ioas), [[0x10_0000n, 0x10_3fffn]]);
    iopt.cutIova([0x10_0fffn]);
    assert.deepEqual(areasOf(w.fd, w.ioas), [
      [0x10_0000n, 0x10_0fffn],
      [0x10_1000n, 0x10_3fffn],
    ]);
  });

  test('refusals: EBUSY while being created or unmapped, EINVAL with accesses or large pages', () => {
    const w = vworld();
    const iopt = split(w);
    const area = [...iopt.areas.all()][0]!;
    area.preventAccess = true;
    assert.throws(() => iopt.cutIova([0x10_0fffn]), /EBUSY/);
    area.preventAccess = false;
    area.numAccesses = 1;
    assert.throws(() => iopt.cutIova([0x10_0fffn]), /EINVAL.*access/);
    area.numAccesses = 0;

    const pages = IoptPages.create(w.buf, PAGE, true, w.p);
    const half = new IoptArea(0x50_0000n, 0x50_0fffn, pages, 0n, 3);
    iopt.areas.insert(half);
    assert.throws(() => iopt.cutIova([0x50_07ffn]), /EBUSY/);
    iopt.areas.remove(half);

    const d = vworld();
    attachArmSmmu(d);
    const diopt = split(d);
    assert.throws(() => diopt.cutIova([0x10_0fffn]), /EINVAL.*large pages/);
  });

  test('a later cut failing keeps the earlier one', () => {
    const w = vworld();
    const iopt = split(w);
    ok(ioctl(w, VFIO_SET_IOMMU, TYPE1));
    assert.throws(() => iopt.cutIova([0x10_0fffn, 0x10_27ffn]), /EINVAL/);
    assert.equal(areasOf(w.fd, w.ioas).length, 2);
  });
});
