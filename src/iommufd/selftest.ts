/**
 * The selftest half of IOMMU_TEST_CMD (selftest.c): the mock IOMMU's devices as SELFTEST objects,
 * and the check ops that compare the mock's page tables with user memory.
 */
import { fail, hex } from '../lib/error.js';
import { MockIommuDriver } from '../drivers/mock/driver.js';
import type { MockDevice } from '../drivers/mock/device.js';
import { MockPagingDomain } from '../drivers/mock/paging-domain.js';
import { MockNestedDomain } from '../drivers/mock/nested-domain.js';
import { triggerIopf } from '../drivers/mock/iopf.js';
import { IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS } from '../uapi/iommufd-test.js';
import type {
  IommuTestCmdCheckIotlb,
  IommuTestCmdCheckMap,
  IommuTestCmdCheckRefs,
  IommuTestCmdDirty,
  IommuTestCmdMemoryLimit,
  IommuTestCmdMockDomainFlags,
  IommuTestCmdMockDomainReplace,
  IommuTestCmdTriggerIopf,
} from '../uapi/iommufd-test.js';
import { U64_MAX } from '../lib/u64.js';
import type { IommufdCtx } from './context.js';
import { deviceAttach, deviceBind, deviceDetach, deviceReplace, deviceUnbind, getDevice, type IommufdDevice } from './device.js';
import type { Hwpt } from './hw-pagetable.js';
import { IommufdObject, ObjType } from './object.js';
import type { Ucmd } from './ucmd.js';

/** The selftest's mock IOMMU: one per kernel, so one per emulator process. */
export const mockIommu = new MockIommuDriver();

/** The temporary-memory cap of SET_TEMP_MEMORY_LIMIT: global, and only a performance knob. */
export const selftestKnobs = { memoryLimit: 65536 };

const MOCK_IO_PAGE = 2048n;
const PAGE = 4096n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** A mock device created by MOCK_DOMAIN (struct selftest_obj): DESTROY on it tears the device down. */
export class SelftestObj extends IommufdObject {
  readonly type = ObjType.SELFTEST;
  mockDev: MockDevice | null = null;
  idev: IommufdDevice | null = null;

  destroy(): void {
    const idev = this.idev!;
    const mdev = this.mockDev!;
    mdev.iopfRwsem.lock();
    try {
      if (idev.attached) deviceDetach(idev);
    } finally {
      mdev.iopfRwsem.unlock();
    }
    deviceUnbind(idev);
    mockIommu.destroyMockDevice(mdev);
  }
}

/** IOMMU_TEST_OP_MOCK_DOMAIN(_FLAGS): create a mock device, bind it, attach it to `id`. */
export function mockDomain(ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdMockDomainFlags>, op: number): number {
  const cmd = ucmd.cmd;
  const sobj = ctx.objects.reserve(new SelftestObj());
  const devFlags = op === IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS ? cmd.devFlags : 0;
  try {
    sobj.mockDev = mockIommu.createMockDevice(devFlags);
  } catch (e) {
    ctx.objects.release(sobj);
    throw e;
  }
  let idev: IommufdDevice;
  try {
    idev = deviceBind(ctx, sobj.mockDev);
  } catch (e) {
    mockIommu.destroyMockDevice(sobj.mockDev);
    ctx.objects.release(sobj);
    throw e;
  }
  sobj.idev = idev;
  const mdev = sobj.mockDev;
  try {
    mdev.iopfRwsem.lock();
    let hwptId: number;
    try {
      hwptId = deviceAttach(idev, cmd.id);
    } finally {
      mdev.iopfRwsem.unlock();
    }
    try {
      cmd.outHwptId = hwptId;
      cmd.outStdevId = sobj.id;
      cmd.outIdevId = idev.id;
      ucmd.respond();
    } catch (e) {
      mdev.iopfRwsem.lock();
      try {
        deviceDetach(idev);
      } finally {
        mdev.iopfRwsem.unlock();
      }
      throw e;
    }
  } catch (e) {
    deviceUnbind(idev);
    mockIommu.destroyMockDevice(sobj.mockDev);
    ctx.objects.release(sobj);
    throw e;
  }
  ctx.objects.finalize(sobj);
  return 0;
}

/** IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: replace the mock device's attachment; returns the HWPT id. */
export function mockDomainReplace(ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdMockDomainReplace & { id: number }>): number {
  const cmd = ucmd.cmd;
  const sobj = ctx.objects.get(cmd.id, ObjType.SELFTEST) as SelftestObj;
  const mdev = sobj.mockDev!;
  mdev.iopfRwsem.lock();
  try {
    cmd.ptId = deviceReplace(sobj.idev!, cmd.ptId);
  } finally {
    mdev.iopfRwsem.unlock();
  }
  ucmd.respond();
  return 0;
}

/**
 * The mock paging domain behind a HWPT_PAGING id (get_md_pagetable): ENOENT, or EINVAL unless the
 * domain is one of the selftest mock's (the kernel compares the domain's ops with mock_ops').
 */
function mockPaging(ctx: IommufdCtx, id: number): MockPagingDomain {
  const hwpt = ctx.objects.get(id, ObjType.HWPT_PAGING) as Hwpt;
  const d = hwpt.domain;
  if (!(d instanceof MockPagingDomain) || d.owner !== mockIommu.name)
    fail('EINVAL', `HWPT ${id} is backed by ${d?.describe() ?? 'no domain'}, not by a paging domain of the selftest's mock driver`);
  return d;
}

/** IOMMU_TEST_OP_MD_CHECK_MAP: every 2 KiB of [iova, iova+length) maps the byte the caller's uptr maps now. */
export function mdCheckMap(ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdCheckMap>): number {
  const { id, iova, length, uptr } = ucmd.cmd;
  if (iova % MOCK_IO_PAGE || length % MOCK_IO_PAGE || uptr % MOCK_IO_PAGE || uptr + length > U64_MAX)
    fail('EINVAL', `iova ${hex(iova)}, length ${hex(length)} and uptr ${hex(uptr)} must be 2 KiB multiples without overflow`);
  const mock = mockPaging(ctx, id);
  for (let off = 0n; off < length; off += MOCK_IO_PAGE) {
    const va = uptr + off;
    const frame = ucmd.task.mm.lookupPage(va & ~(PAGE - 1n), false);
    const want = BigInt(frame.pfn) * PAGE + (va % PAGE);
    const got = mock.physAt(iova + off);
    if (got !== want)
      fail(
        'EINVAL',
        got === undefined
          ? `IOVA ${hex(iova + off)} is not mapped in ${mock.describe()}`
          : `IOVA ${hex(iova + off)} maps physical ${hex(got)}, but user address ${hex(va)} is at physical ${hex(want)}`,
      );
  }
  return 0;
}

/** IOMMU_TEST_OP_MD_CHECK_REFS: every non-huge page of the range has exactly `refs` long-term pins. */
export function mdCheckRefs(_ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdCheckRefs>): number {
  const { length, uptr, refs } = ucmd.cmd;
  if (length % PAGE || uptr % PAGE || uptr + length > U64_MAX)
    fail('EINVAL', `length ${hex(length)} and uptr ${hex(uptr)} must be page multiples without overflow`);
  for (let off = 0n; off < length; off += PAGE) {
    const frame = ucmd.task.mm.lookupPage(uptr + off, false);
    if (!frame.compound && frame.pinCount !== refs)
      fail('EIO', `the page at ${hex(uptr + off)} has ${frame.pinCount} long-term pin(s), expected ${refs}`);
  }
  return 0;
}

/** IOMMU_TEST_OP_MD_CHECK_IOTLB */
export function mdCheckIotlb(ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdCheckIotlb>): number {
  const { id, iotlbId, iotlb } = ucmd.cmd;
  const hwpt = ctx.objects.get(id, ObjType.HWPT_NESTED) as Hwpt;
  const d = hwpt.domain;
  if (!(d instanceof MockNestedDomain) || d.owner !== mockIommu.name)
    fail('EINVAL', `HWPT ${id} is backed by ${d?.describe() ?? 'no domain'}, not by a nested domain of the selftest's mock driver`);
  const got = d.iotlb(iotlbId);
  if (got === undefined) fail('EINVAL', `IOTLB id ${iotlbId} is above the mock's maximum 3`);
  if (got !== iotlb) fail('EINVAL', `IOTLB ${iotlbId} holds ${hex(got)}, expected ${hex(iotlb)}`);
  return 0;
}

/** IOMMU_TEST_OP_DIRTY: mark the mock entries whose bit is set in the user bitmap as dirty. */
export function testDirty(ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdDirty>): number {
  const cmd = ucmd.cmd;
  const { iova, length, pageSize, uptr } = cmd;
  if (!pageSize || !length || iova % pageSize || length % pageSize || !uptr)
    fail('EINVAL', `page_size ${hex(pageSize)}, length ${hex(length)}, iova ${hex(iova)} and uptr ${hex(uptr)} must be non-zero multiples`);
  const max = length / pageSize;
  if (max > 16n * 1024n * 1024n * 8n) fail('EOVERFLOW', `${max} bits is more than the 16 MiB bitmap the test op allows`);
  const mock = mockPaging(ctx, cmd.id);
  if (!mock.dirtyTracking) fail('EINVAL', `dirty tracking is not enabled on ${mock.describe()}`);
  const bitmap = ucmd.user.copyFromUser(uptr, Number((max + 7n) / 8n));
  // The index uses page_size, as the kernel's does: only 2 KiB pages address the table right.
  // iova is a multiple of page_size, so bit i's index is first + i. An index beyond
  // MAX_SAFE_INTEGER marks nothing (markDirtyIndex), so one that large becomes Infinity here.
  const first = iova / pageSize;
  const firstNum = first <= MAX_SAFE ? Number(first) : Infinity;
  const nbits = Number(max);
  let count = 0;
  for (let byte = 0; byte < bitmap.length; byte++) {
    const bits = bitmap[byte]!;
    if (!bits) continue;
    for (let b = 0; b < 8; b++) {
      const i = byte * 8 + b;
      if (i >= nbits) break;
      if (!(bits & (1 << b))) continue;
      const index = firstNum + i;
      if (index <= Number.MAX_SAFE_INTEGER && mock.markDirtySlot(index)) count++;
    }
  }
  cmd.outNrDirty = BigInt(count);
  ucmd.respond();
  return 0;
}

/** IOMMU_TEST_OP_TRIGGER_IOPF: the mock device raises a page request; always 0. */
export function testTriggerIopf(ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdTriggerIopf>): number {
  const cmd = ucmd.cmd;
  const idev = getDevice(ctx, cmd.devId);
  if (!mockIommu.isMockDevice(idev.dev)) fail('EINVAL', `${idev.describe()} is not a mock device`);
  const mdev = idev.dev;
  mdev.iopfRwsem.read();
  try {
    triggerIopf(mdev, { pasid: cmd.pasid, grpid: cmd.grpid, perm: cmd.perm, addr: cmd.addr });
  } finally {
    mdev.iopfRwsem.unlock();
  }
  return 0;
}

/** IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT: at least sizeof(unsigned long) + sizeof(u32). */
export function setTempMemoryLimit(_ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdMemoryLimit>): number {
  if (ucmd.cmd.limit < 12) fail('EINVAL', `limit ${ucmd.cmd.limit} is below the 12-byte minimum of a batch element`);
  selftestKnobs.memoryLimit = ucmd.cmd.limit;
  return 0;
}
