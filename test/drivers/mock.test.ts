/**
 * The selftest's mock IOMMU driver (reference §2.17 "The mock IOMMU driver", §2.11 6c, §2.15,
 * §4.13–4.15; drivers/iommu/iommufd/selftest.c and io-pgfault.c of Linux 6.12).
 */
import { kernelWarnings } from '../../src/lib/warn.js';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  MOCK_HUGE_PAGE_SIZE,
  MOCK_IO_PAGE_SIZE,
  MOCK_PFN_DIRTY_IOVA,
  MOCK_PFN_HUGE_IOVA,
  MOCK_PFN_LAST_IOVA,
  MOCK_PFN_START_IOVA,
  MockDevice,
  MockIommu,
  MockIommuDriver,
  MockNestedDomain,
  MockPagingDomain,
  triggerIopf,
} from '../../src/drivers/mock.js';
import { IommuDevice } from '../../src/iommu/device.js';
import { IOMMU_CACHE, IOMMU_DIRTY_NO_CLEAR, IOMMU_READ, IOMMU_WRITE, type IommuDomain } from '../../src/iommu/domain.js';
import {
  IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE,
  IOMMU_FAULT_PAGE_REQUEST_PASID_VALID,
  IOMMU_PAGE_RESP_FAILURE,
  IOMMU_PAGE_RESP_INVALID,
  IOMMU_PAGE_RESP_SUCCESS,
  reportDeviceFault,
  type IopfFault,
  type IopfGroup,
} from '../../src/iommu/fault.js';
import { iommuMap, iommuUnmap } from '../../src/iommu/map.js';
import { UserData, UserDataArray } from '../../src/iommu/user-data.js';
import type { UserAccess } from '../../src/iommufd/ucmd.js';
import { fail, IommuError } from '../../src/lib/error.js';
import type { ErrnoName } from '../../src/lib/errno.js';
import {
  IOMMU_HW_INFO_SELFTEST_REGVAL,
  IOMMU_HW_INFO_TYPE_SELFTEST,
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST,
  IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID,
  IOMMU_TEST_INVALIDATE_FLAG_ALL,
  IOMMU_TEST_IOTLB_DEFAULT,
  MOCK_APERTURE_LAST,
  MOCK_APERTURE_START,
  MOCK_FLAGS_DEVICE_HUGE_IOVA,
  MOCK_FLAGS_DEVICE_NO_DIRTY,
} from '../../src/uapi/iommufd-test.js';
import { throwsErrno } from '../assert-errno.js';

const NEST_PARENT = 1;
const DIRTY = 2;
const PROT = IOMMU_READ | IOMMU_WRITE | IOMMU_CACHE;
const APERTURE = BigInt(MOCK_APERTURE_START);
const MiB = 1n << 20n;


/** User memory: one readable window at BASE; anything else faults. */
const BASE = 0x10000n;
function userMemory(bytes: Uint8Array): UserAccess {
  return {
    copyFromUser(addr, length) {
      const off = Number(addr - BASE);
      if (addr < BASE || off + length > bytes.length) fail('EFAULT', `read of ${length} bytes at 0x${addr.toString(16)} faulted`);
      return bytes.slice(off, off + length);
    },
    copyToUser() {
      fail('EFAULT', 'read-only test memory');
    },
  };
}

function u32s(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setUint32(i * 4, v >>> 0, true));
  return out;
}

function selftestData(iotlb: number, opts: { type?: number; len?: number; uptr?: bigint } = {}): UserData {
  const bytes = u32s(iotlb, 0);
  return new UserData(opts.type ?? IOMMU_HWPT_DATA_SELFTEST, opts.uptr ?? BASE, opts.len ?? 4, userMemory(bytes));
}

/** Invalidation entries {flags, iotlb_id}; `readable` limits how many bytes of the array can be read. */
function invalidation(entries: [number, number][], opts: { type?: number; entryLen?: number; readable?: number } = {}): UserDataArray {
  const bytes = u32s(...entries.flat());
  const mem = userMemory(bytes.subarray(0, opts.readable ?? bytes.length));
  return new UserDataArray(opts.type ?? IOMMU_HWPT_INVALIDATE_DATA_SELFTEST, BASE, opts.entryLen ?? 8, entries.length, mem);
}

function world(flags = 0) {
  const drv = new MockIommuDriver();
  const dev = drv.createMockDevice(flags);
  return { drv, dev };
}

function paging(drv: MockIommuDriver, dev: MockDevice, flags = 0): MockPagingDomain {
  const d = drv.domainAllocUser(dev, flags, null, null);
  assert.ok(d instanceof MockPagingDomain);
  return d;
}

function nested(drv: MockIommuDriver, dev: MockDevice, parent: IommuDomain, iotlb = IOMMU_TEST_IOTLB_DEFAULT): MockNestedDomain {
  const d = drv.domainAllocUser(dev, 0, parent, selftestData(iotlb));
  assert.ok(d instanceof MockNestedDomain);
  return d;
}

class Sink {
  readonly ranges: [bigint, bigint][] = [];
  record(iova: bigint, length: bigint): void {
    this.ranges.push([iova, length]);
  }
}

describe('mock driver extensions (opt-in, not in 6.12 and not reachable from IOMMU_TEST_CMD)', () => {
  test('without them: no reserved regions, and joining a group is EINVAL (no device number used)', () => {
    const drv = new MockIommuDriver();
    const a = drv.createMockDevice(0);
    assert.deepEqual(drv.getResvRegions(a), []);
    throwsErrno(() => drv.createMockDevice(0, { group: a.group }), 'EINVAL', /group of its own/);
    assert.equal(drv.createMockDevice(0).id, 1);
  });

  test('groupsOfSeveral: a device joins a group of the same driver; resvRegions are reported for every device', () => {
    const resv = [{ start: 0x800_0000n, length: 0x10_0000n, type: 4 as const }];
    const drv = new MockIommuDriver('mock-ext', { groupsOfSeveral: true, resvRegions: resv });
    const a = drv.createMockDevice(0);
    const b = drv.createMockDevice(0, { group: a.group });
    assert.equal(b.group, a.group);
    assert.deepEqual(a.group.devices, [a, b]);
    assert.deepEqual(drv.getResvRegions(b), resv);
    const other = new MockIommuDriver('mock-other').createMockDevice(0);
    throwsErrno(() => drv.createMockDevice(0, { group: other.group }), 'EINVAL', /another driver/);
    // Deleting one device of a group of two empties nothing and warns about nothing.
    drv.destroyMockDevice(b);
    assert.deepEqual(drv.warnings, []);
  });
});

describe('mock devices', () => {
  test('the shared MockIommu is named mock and keeps PASID tables in user space', () => {
    assert.equal(MockIommu.name, 'mock');
    assert.equal(MockIommu.userPasidTable, true);
  });

  test('flags 0, NO_DIRTY, HUGE_IOVA and both are accepted; any other bit is EINVAL and uses no number', () => {
    const drv = new MockIommuDriver();
    for (const f of [0, MOCK_FLAGS_DEVICE_NO_DIRTY, MOCK_FLAGS_DEVICE_HUGE_IOVA, 3]) assert.equal(drv.createMockDevice(f).flags, f);
    throwsErrno(() => drv.createMockDevice(4), 'EINVAL', /0x4/);
    throwsErrno(() => drv.createMockDevice(0x80000000), 'EINVAL', /0x80000000/);
    assert.equal(drv.createMockDevice(0).id, 4);
  });

  test('each device is a mock, named iommufd_mock<n>, alone in a new group on the static blocking domain', () => {
    const drv = new MockIommuDriver();
    const a = drv.createMockDevice(0);
    const b = drv.createMockDevice(0);
    assert.ok(a instanceof IommuDevice);
    assert.equal(a.isMock, true);
    assert.equal(a.name, 'iommufd_mock0');
    assert.equal(b.name, 'iommufd_mock1');
    assert.notEqual(a.group, b.group);
    // Group numbers come from the core's system-wide allocator (lowest free).
    assert.equal(b.group.id, a.group.id + 1);
    assert.deepEqual(a.group.devices, [a]);
    assert.equal(a.group.domain, drv.blocking);
    assert.equal(a.group.defaultDomain, drv.blocking);
    assert.equal(drv.blocking.kind, 'blocked');
    assert.equal(drv.defaultDomain(a), drv.blockedDomain(b));
    assert.ok(drv.isMockDevice(a));
    assert.ok(!drv.isMockDevice(new IommuDevice('pci', drv)));
  });

  test('deleting a device empties its group and frees both numbers (lowest free reused); twice is EINVAL', () => {
    const drv = new MockIommuDriver();
    const a = drv.createMockDevice(0);
    const b = drv.createMockDevice(0);
    const group = a.group;
    const groupId = group.id;
    drv.destroyMockDevice(a);
    assert.equal(a.alive, false);
    assert.deepEqual(group.devices, []);
    assert.equal(group.domain, null);
    throwsErrno(() => drv.destroyMockDevice(a), 'EINVAL');
    const c = drv.createMockDevice(0);
    assert.equal(c.id, 0);
    assert.equal(c.group.id, groupId);
    assert.notEqual(c.group, group);
    assert.equal(b.id, 1);
    assert.deepEqual(drv.warnings, []);
  });

  test('deleting a device whose group is still owned is a WARN', () => {
    const { drv, dev } = world();
    dev.group.claimDmaOwner({});
    drv.destroyMockDevice(dev);
    assert.equal(drv.warnings.length, 1);
  });

  test('capabilities: cache coherency yes, dirty tracking unless NO_DIRTY, nothing else; no reserved regions', () => {
    const drv = new MockIommuDriver();
    const plain = drv.createMockDevice(0);
    const noDirty = drv.createMockDevice(MOCK_FLAGS_DEVICE_NO_DIRTY);
    assert.equal(drv.capable(plain, 'CACHE_COHERENCY'), true);
    assert.equal(drv.capable(noDirty, 'CACHE_COHERENCY'), true);
    assert.equal(drv.capable(plain, 'DIRTY_TRACKING'), true);
    assert.equal(drv.capable(noDirty, 'DIRTY_TRACKING'), false);
    for (const cap of ['ENFORCE_CACHE_COHERENCY', 'NOEXEC', 'PRE_BOOT_PROTECTION', 'DEFERRED_FLUSH'] as const)
      assert.equal(drv.capable(plain, cap), false, cap);
    assert.deepEqual(drv.getResvRegions(plain), []);
  });

  test('hw_info: type 0xfeedbeef, 8 bytes {flags 0, test_reg 0xdeadbeef} little-endian', () => {
    const { drv, dev } = world();
    const info = drv.hwInfo(dev);
    assert.equal(info.type, IOMMU_HW_INFO_TYPE_SELFTEST);
    assert.equal(info.type, 0xfeedbeef);
    assert.deepEqual([...info.data], [0, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
    assert.equal(new DataView(info.data.buffer).getUint32(4, true), IOMMU_HW_INFO_SELFTEST_REGVAL);
  });
});

describe('paging domain allocation', () => {
  test('geometry [0x1000000, 0x7fffffff], 2048-byte pages, owner mock, no dirty ops', () => {
    const { drv, dev } = world();
    for (const d of [drv.domainAllocPaging(dev), paging(drv, dev)]) {
      assert.equal(d.kind, 'paging');
      assert.equal(d.owner, 'mock');
      assert.equal(d.geometry.apertureStart, 0x1000000n);
      assert.equal(d.geometry.apertureEnd, BigInt(MOCK_APERTURE_LAST));
      assert.equal(d.pgsizeBitmap, 2048n);
      assert.equal(d.dirtyOps, undefined);
      assert.ok(d.ops);
    }
  });

  test('HUGE_IOVA devices get 1 MiB pages too', () => {
    const { drv, dev } = world(MOCK_FLAGS_DEVICE_HUGE_IOVA);
    assert.equal(paging(drv, dev).pgsizeBitmap, 2048n | (1n << 20n));
    assert.equal(drv.domainAllocPaging(dev).pgsizeBitmap, 2048n | MOCK_HUGE_PAGE_SIZE);
  });

  test('flags beyond NEST_PARENT|DIRTY_TRACKING are EOPNOTSUPP', () => {
    const { drv, dev } = world();
    throwsErrno(() => drv.domainAllocUser(dev, 4, null, null), 'EOPNOTSUPP', /0x4/);
    throwsErrno(() => drv.domainAllocUser(dev, ~NEST_PARENT, null, null), 'EOPNOTSUPP');
    for (const f of [NEST_PARENT, DIRTY, NEST_PARENT | DIRTY]) paging(drv, dev, f);
  });

  test('any user data is EOPNOTSUPP, whatever its type', () => {
    const { drv, dev } = world();
    throwsErrno(() => drv.domainAllocUser(dev, 0, null, selftestData(0)), 'EOPNOTSUPP');
    throwsErrno(() => drv.domainAllocUser(dev, 0, null, selftestData(0, { type: 1 })), 'EOPNOTSUPP');
  });

  test('DIRTY_TRACKING gives dirty ops; on a NO_DIRTY device it is EOPNOTSUPP (unknown flags first)', () => {
    const { drv, dev } = world();
    assert.ok(paging(drv, dev, DIRTY).dirtyOps);
    assert.equal(paging(drv, dev, NEST_PARENT).dirtyOps, undefined);
    const nd = drv.createMockDevice(MOCK_FLAGS_DEVICE_NO_DIRTY);
    throwsErrno(() => drv.domainAllocUser(nd, DIRTY, null, null), 'EOPNOTSUPP', /NO_DIRTY/);
    throwsErrno(() => drv.domainAllocUser(nd, DIRTY | 8, null, null), 'EOPNOTSUPP', /flags 0xa/);
    assert.equal(paging(drv, nd, NEST_PARENT).dirtyOps, undefined);
  });

  test('attach: a dirty-tracking domain refuses a NO_DIRTY device with EINVAL; everything else attaches', () => {
    const { drv, dev } = world();
    const nd = drv.createMockDevice(MOCK_FLAGS_DEVICE_NO_DIRTY);
    const dirty = paging(drv, dev, DIRTY);
    throwsErrno(() => dirty.attachDev(nd), 'EINVAL', /NO_DIRTY/);
    dirty.attachDev(dev);
    paging(drv, dev).attachDev(nd);
    drv.blocking.attachDev(nd);
    nested(drv, dev, paging(drv, dev, NEST_PARENT)).attachDev(nd);
    throwsErrno(() => nd.group.attachHandle(dirty, {}), 'EINVAL');
    assert.equal(nd.group.domain, drv.blocking);
  });
});

describe('nested domain allocation (§2.11 step 6c)', () => {
  test('iotlb slots start at the user value; parent and owner are set', () => {
    const { drv, dev } = world();
    const parent = paging(drv, dev, NEST_PARENT);
    const n = nested(drv, dev, parent, 0x1234);
    assert.equal(n.kind, 'nested');
    assert.equal(n.parent, parent);
    assert.equal(n.owner, 'mock');
    assert.deepEqual([0, 1, 2, 3].map((i) => n.iotlb(i)), [0x1234, 0x1234, 0x1234, 0x1234]);
    assert.equal(n.iotlb(4), undefined);
    assert.equal(nested(drv, dev, parent).iotlb(3), IOMMU_TEST_IOTLB_DEFAULT);
  });

  test('data type other than 0xdead is EOPNOTSUPP, before the parent and flags are looked at', () => {
    const { drv, dev } = world();
    throwsErrno(() => drv.domainAllocUser(dev, 0, drv.blocking, selftestData(0, { type: 0xdead + 1 })), 'EOPNOTSUPP', /0xdeae/);
    throwsErrno(() => drv.domainAllocUser(dev, 0, drv.blocking, selftestData(0, { type: 0 })), 'EOPNOTSUPP');
  });

  test('flags != 0 is EOPNOTSUPP, before the parent check', () => {
    const { drv, dev } = world();
    throwsErrno(() => drv.domainAllocUser(dev, NEST_PARENT, drv.blocking, selftestData(0)), 'EOPNOTSUPP');
    throwsErrno(() => drv.domainAllocUser(dev, DIRTY, paging(drv, dev, NEST_PARENT), selftestData(0)), 'EOPNOTSUPP');
  });

  test('a parent that is not a mock paging domain is EINVAL, before the data is read', () => {
    const { drv, dev } = world();
    const n = nested(drv, dev, paging(drv, dev, NEST_PARENT));
    throwsErrno(() => drv.domainAllocUser(dev, 0, n, selftestData(0)), 'EINVAL', /not a mock paging domain/);
    throwsErrno(() => drv.domainAllocUser(dev, 0, drv.blocking, selftestData(0, { len: 3 })), 'EINVAL', /not a mock paging/);
    const other = { kind: 'paging', owner: 'mock', describe: () => 'a look-alike paging domain' } as unknown as IommuDomain;
    throwsErrno(() => drv.domainAllocUser(dev, 0, other, selftestData(0)), 'EINVAL');
  });

  test('data length must be exactly 4: 3 and 5 are EINVAL; unreadable data is EFAULT', () => {
    const { drv, dev } = world();
    const parent = paging(drv, dev, NEST_PARENT);
    throwsErrno(() => drv.domainAllocUser(dev, 0, parent, selftestData(0, { len: 3 })), 'EINVAL', /3/);
    throwsErrno(() => drv.domainAllocUser(dev, 0, parent, selftestData(0, { len: 5 })), 'EINVAL', /5/);
    throwsErrno(() => drv.domainAllocUser(dev, 0, parent, selftestData(0, { uptr: 0n })), 'EFAULT');
    throwsErrno(() => drv.domainAllocUser(dev, 0, parent, null), 'EOPNOTSUPP');
  });
});

describe('page table through iommuMap / iommuUnmap', () => {
  test('a map call marks its first entry START and its last LAST; iova_to_phys and entries follow paddr', () => {
    const { drv, dev } = world();
    const d = paging(drv, dev);
    iommuMap(d, APERTURE, 0x5000n, 0x2000n, PROT);
    assert.equal(d.pfns.size, 4);
    const flags = [0n, 1n, 2n, 3n].map((i) => d.entryAt(APERTURE + i * 2048n)!.flags);
    assert.deepEqual(flags, [MOCK_PFN_START_IOVA, 0, 0, MOCK_PFN_LAST_IOVA]);
    for (let i = 0n; i < 4n; i++) {
      assert.equal(d.iovaToPhys(APERTURE + i * 2048n), 0x5000n + i * 2048n);
      assert.equal(d.physAt(APERTURE + i * 2048n), 0x5000n + i * 2048n);
    }
    assert.equal(d.physAt(APERTURE + 0x2000n), undefined);
    assert.equal(iommuUnmap(d, APERTURE, 0x2000n), 0x2000n);
    assert.equal(d.pfns.size, 0);
    assert.deepEqual(drv.warnings, []);
  });

  test('START and LAST are one bit: a single-entry map carries it once; no HUGE on 2048-byte pages', () => {
    const { drv, dev } = world();
    const d = paging(drv, dev);
    iommuMap(d, APERTURE, 0x800n, 2048n, PROT);
    assert.equal(MOCK_PFN_START_IOVA, MOCK_PFN_LAST_IOVA);
    assert.equal(d.entryAt(APERTURE)!.flags, MOCK_PFN_START_IOVA);
    assert.equal(d.entryAt(APERTURE)!.phys, 0x800n);
  });

  test('HUGE_IOVA: 2 MiB physically contiguous and 1 MiB aligned is mapped with 1 MiB pages, all entries HUGE', () => {
    const { drv, dev } = world(MOCK_FLAGS_DEVICE_HUGE_IOVA);
    const d = paging(drv, dev);
    const iova = APERTURE + MiB;
    const calls: [bigint, bigint][] = [];
    const map = d.mapPages.bind(d);
    d.mapPages = (i, p, size, count, prot, mapped) => {
      calls.push([size, count]);
      map(i, p, size, count, prot, mapped);
    };
    iommuMap(d, iova, 0x40000000n, 2n * MiB, PROT);
    assert.deepEqual(calls, [[MiB, 2n]]);
    assert.equal(d.pfns.size, 1024);
    for (const [, e] of d.pfns) assert.ok(e.flags & MOCK_PFN_HUGE_IOVA);
    assert.equal(d.entryAt(iova)!.flags, MOCK_PFN_START_IOVA | MOCK_PFN_HUGE_IOVA);
    assert.equal(d.entryAt(iova + MiB)!.flags, MOCK_PFN_HUGE_IOVA);
    assert.equal(d.entryAt(iova + 2n * MiB - 2048n)!.flags, MOCK_PFN_LAST_IOVA | MOCK_PFN_HUGE_IOVA);
    assert.equal(d.iovaToPhys(iova + MiB + 2048n), 0x40000000n + MiB + 2048n);
    assert.equal(iommuUnmap(d, iova, 2n * MiB), 2n * MiB);
    assert.equal(d.pfns.size, 0);
    assert.deepEqual(drv.warnings, []);
  });

  test('HUGE_IOVA: non-contiguous 4 KiB pages, or a contiguous run off 1 MiB alignment, get no HUGE entries', () => {
    const { drv, dev } = world(MOCK_FLAGS_DEVICE_HUGE_IOVA);
    const d = paging(drv, dev);
    const iova = APERTURE + MiB;
    for (let i = 0n; i < 512n; i++) iommuMap(d, iova + i * 4096n, 0x80000000n + (511n - i) * 4096n, 4096n, PROT);
    assert.equal(d.pfns.size, 1024);
    for (const [, e] of d.pfns) assert.equal(e.flags & MOCK_PFN_HUGE_IOVA, 0);
    const d2 = paging(drv, dev);
    iommuMap(d2, iova, 0x40001000n, 2n * MiB, PROT);
    for (const [, e] of d2.pfns) assert.equal(e.flags & MOCK_PFN_HUGE_IOVA, 0);
  });

  test('HUGE_IOVA: an unaligned head is mapped small, then the run switches to 1 MiB pages', () => {
    const { drv, dev } = world(MOCK_FLAGS_DEVICE_HUGE_IOVA);
    const d = paging(drv, dev);
    const iova = APERTURE + MiB - 0x1000n;
    iommuMap(d, iova, 0x40000000n - 0x1000n, MiB + 0x1000n, PROT);
    assert.equal(d.entryAt(iova)!.flags, MOCK_PFN_START_IOVA);
    assert.equal(d.entryAt(iova + 2048n)!.flags, MOCK_PFN_LAST_IOVA);
    assert.equal(d.entryAt(APERTURE + MiB)!.flags, MOCK_PFN_START_IOVA | MOCK_PFN_HUGE_IOVA);
  });

  test('mapping over an existing entry overwrites it with a WARN, as the kernel does', () => {
    const { drv, dev } = world();
    const d = paging(drv, dev);
    iommuMap(d, APERTURE, 0x1000n, 4096n, PROT);
    iommuMap(d, APERTURE + 2048n, 0x9000n, 4096n, PROT);
    assert.equal(d.physAt(APERTURE + 2048n), 0x9000n);
    assert.equal(d.entryAt(APERTURE + 2048n)!.flags, MOCK_PFN_START_IOVA);
    assert.equal(drv.warnings.length, 1);
    assert.match(drv.warnings[0]!, /existing entry at 0x1000800/);
  });

  test('unmap reports every byte asked for, mapped or not, and WARNs when a cut is not at a map boundary', () => {
    const { drv, dev } = world();
    const d = paging(drv, dev);
    assert.equal(d.unmapPages(APERTURE, 2048n, 4n), 8192n);
    assert.deepEqual(drv.warnings, []);
    iommuMap(d, APERTURE, 0x1000n, 0x3000n, PROT);
    assert.equal(iommuUnmap(d, APERTURE + 2048n, 0x1000n), 0x1000n);
    assert.equal(drv.warnings.length, 2);
    assert.equal(d.pfns.size, 4);
  });

  test('with 1 MiB pages in the bitmap unmap does not check boundaries', () => {
    const { drv, dev } = world(MOCK_FLAGS_DEVICE_HUGE_IOVA);
    const d = paging(drv, dev);
    iommuMap(d, APERTURE, 0x1000n, 0x3000n, PROT);
    iommuUnmap(d, APERTURE + 2048n, 0x1000n);
    assert.deepEqual(drv.warnings, []);
  });

  test('iova_to_phys of an empty slot is undefined (the kernel WARNs and returns 0)', () => {
    const { drv, dev } = world();
    const d = paging(drv, dev);
    assert.equal(d.iovaToPhys(APERTURE), undefined);
    assert.equal(drv.warnings.length, 1);
  });

  test('the fault-injection point fails map with ENOENT and nothing stays mapped', () => {
    const { drv, dev } = world();
    const d = paging(drv, dev);
    let n = 0;
    drv.failMap = () => ++n === 2;
    iommuMap(d, APERTURE, 0x1000n, 0x1000n, PROT);
    throwsErrno(() => iommuMap(d, APERTURE + MiB, 0x10000n, 0x1000n, PROT), 'ENOENT');
    assert.equal(d.pfns.size, 2);
  });

  test('freeing a domain that still maps something WARNs', () => {
    const { drv, dev } = world();
    const d = paging(drv, dev);
    iommuMap(d, APERTURE, 0x1000n, 0x1000n, PROT);
    d.free();
    assert.equal(drv.warnings.length, 1);
    const e = paging(drv, dev);
    e.free();
    assert.equal(e.freed, true);
    assert.equal(drv.warnings.length, 1);
  });
});

describe('dirty tracking (§2.17, §4.13)', () => {
  function dirtyWorld(flags = 0) {
    const { drv, dev } = world(flags);
    const d = paging(drv, dev, DIRTY);
    return { drv, dev, d, ops: d.dirtyOps! };
  }

  test('set_dirty_tracking toggles the state; enabling twice is fine', () => {
    const { d, ops } = dirtyWorld();
    assert.equal(d.dirtyTracking, false);
    ops.setDirtyTracking(true);
    ops.setDirtyTracking(true);
    assert.equal(d.dirtyTracking, true);
    ops.setDirtyTracking(false);
    assert.equal(d.dirtyTracking, false);
  });

  test('reading into a sink while tracking is off is EINVAL; without a sink it clears', () => {
    const { d, ops } = dirtyWorld();
    iommuMap(d, APERTURE, 0x1000n, 0x1000n, PROT);
    assert.ok(d.markDirty(APERTURE));
    throwsErrno(() => ops.readAndClearDirty(APERTURE, 0x1000n, 0, new Sink()), 'EINVAL', /off/);
    ops.readAndClearDirty(APERTURE, 0x1000n, 0, null);
    assert.equal(d.entryAt(APERTURE)!.flags & MOCK_PFN_DIRTY_IOVA, 0);
  });

  test('marking dirty: only present entries, by table index (iova / page_size)', () => {
    const { d } = dirtyWorld();
    iommuMap(d, APERTURE, 0x1000n, 0x1000n, PROT);
    assert.equal(d.markDirtyIndex(APERTURE / 2048n + 1n), true);
    assert.equal(d.entryAt(APERTURE + 2048n)!.flags, MOCK_PFN_LAST_IOVA | MOCK_PFN_DIRTY_IOVA);
    assert.equal(d.markDirtyIndex(APERTURE / 2048n + 2n), false);
    assert.equal(d.markDirtyIndex(1n << 60n), false);
    assert.equal(d.markDirty(APERTURE - 2048n), false);
  });

  test('read-out reports each dirty 2048-byte entry and clears it; NO_CLEAR keeps the bits', () => {
    const { d, ops } = dirtyWorld();
    ops.setDirtyTracking(true);
    iommuMap(d, APERTURE, 0x100000n, 0x4000n, PROT);
    for (const i of [0n, 3n, 4n]) d.markDirty(APERTURE + i * 2048n);
    const keep = new Sink();
    ops.readAndClearDirty(APERTURE, 0x4000n, IOMMU_DIRTY_NO_CLEAR, keep);
    const expected: [bigint, bigint][] = [0n, 3n, 4n].map((i) => [APERTURE + i * 2048n, 2048n]);
    assert.deepEqual(keep.ranges, expected);
    const first = new Sink();
    ops.readAndClearDirty(APERTURE, 0x4000n, 0, first);
    assert.deepEqual(first.ranges, expected);
    const again = new Sink();
    ops.readAndClearDirty(APERTURE, 0x4000n, 0, again);
    assert.deepEqual(again.ranges, []);
  });

  test('holes are skipped 2048 bytes at a time; a zero-length read still visits one slot', () => {
    const { d, ops } = dirtyWorld();
    ops.setDirtyTracking(true);
    iommuMap(d, APERTURE + 0x2000n, 0x100000n, 0x800n, PROT);
    d.markDirty(APERTURE + 0x2000n);
    const s = new Sink();
    ops.readAndClearDirty(APERTURE, 0x4000n, IOMMU_DIRTY_NO_CLEAR, s);
    assert.deepEqual(s.ranges, [[APERTURE + 0x2000n, 2048n]]);
    const z = new Sink();
    ops.readAndClearDirty(APERTURE + 0x2000n, 0n, 0, z);
    assert.deepEqual(z.ranges, [[APERTURE + 0x2000n, 2048n]]);
  });

  test('huge entries report 1 MiB once, from where the walk stands, and clear the whole page', () => {
    const { d, ops } = dirtyWorld(MOCK_FLAGS_DEVICE_HUGE_IOVA);
    ops.setDirtyTracking(true);
    const iova = APERTURE + MiB;
    iommuMap(d, iova, 0x40000000n, 2n * MiB, PROT);
    d.markDirty(iova + 0x1000n);
    d.markDirty(iova + 0x2000n);
    const keep = new Sink();
    ops.readAndClearDirty(iova, 2n * MiB, IOMMU_DIRTY_NO_CLEAR, keep);
    assert.deepEqual(keep.ranges, [[iova, MiB]]);
    const mid = new Sink();
    ops.readAndClearDirty(iova + 0x800n, 0x800n, IOMMU_DIRTY_NO_CLEAR, mid);
    assert.deepEqual(mid.ranges, [[iova + 0x800n, MiB]]);
    const s = new Sink();
    ops.readAndClearDirty(iova, 2n * MiB, 0, s);
    assert.deepEqual(s.ranges, [[iova, MiB]]);
    for (const [, e] of d.pfns) assert.equal(e.flags & MOCK_PFN_DIRTY_IOVA, 0);
    d.markDirty(iova + MiB + 0x4000n);
    const second = new Sink();
    ops.readAndClearDirty(iova, 2n * MiB, 0, second);
    assert.deepEqual(second.ranges, [[iova + MiB, MiB]]);
  });

  test('the walk keeps an unaligned start offset, crosses 1 MiB chunk boundaries and wraps at 2^64', () => {
    const { d, ops } = dirtyWorld();
    ops.setDirtyTracking(true);
    const top = (1n << 64n) - 2048n;
    iommuMap(d, top, 0x100000n, 2048n, PROT);
    iommuMap(d, 0n, 0x200000n, 2048n, PROT);
    iommuMap(d, APERTURE + MiB - 2048n, 0x300000n, 4096n, PROT);
    for (const iova of [top, 0n, APERTURE + MiB - 2048n, APERTURE + MiB]) assert.ok(d.markDirty(iova));
    const wrap = new Sink();
    ops.readAndClearDirty(top, 4096n, IOMMU_DIRTY_NO_CLEAR, wrap);
    assert.deepEqual(wrap.ranges, [[top, 2048n], [0n, 2048n]]);
    const cross = new Sink();
    ops.readAndClearDirty(APERTURE + MiB - 4096n + 0x100n, 8192n, 0, cross);
    assert.deepEqual(cross.ranges, [[APERTURE + MiB - 2048n + 0x100n, 2048n], [APERTURE + MiB + 0x100n, 2048n]]);
    assert.equal(d.entryAt(APERTURE + MiB)!.flags & MOCK_PFN_DIRTY_IOVA, 0);
    assert.equal(d.pfns.size, 4);
    iommuUnmap(d, APERTURE + MiB - 2048n, 4096n);
    iommuUnmap(d, top, 2048n);
    iommuUnmap(d, 0n, 2048n);
    assert.equal(d.pfns.size, 0);
    assert.deepEqual([...d.pfns], []);
  });
});

describe('nested invalidation (§2.15)', () => {
  function nestedWorld() {
    const { drv, dev } = world();
    const n = nested(drv, dev, paging(drv, dev, NEST_PARENT), 0xbadbeef);
    const slots = () => [0, 1, 2, 3].map((i) => n.iotlb(i));
    return { n, slots };
  }
  const B = 0xbadbeef;

  test('a wrong data_type is EINVAL even with no entries', () => {
    const { n } = nestedWorld();
    const arr = invalidation([], { type: IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID });
    throwsErrno(() => n.cacheInvalidateUser(arr), 'EINVAL', /0xdadbeef/);
    assert.equal(arr.handled, 0);
    const empty = invalidation([]);
    n.cacheInvalidateUser(empty);
    assert.equal(empty.handled, 0);
  });

  test('entry_len must be exactly 8', () => {
    const { n, slots } = nestedWorld();
    for (const entryLen of [4, 7, 9, 16]) {
      const arr = invalidation([[0, 0]], { entryLen });
      throwsErrno(() => n.cacheInvalidateUser(arr), 'EINVAL', new RegExp(`${entryLen}`));
      assert.equal(arr.handled, 0);
    }
    assert.deepEqual(slots(), [B, B, B, B]);
  });

  test('entries zero their slot; ALL zeroes every slot', () => {
    const { n, slots } = nestedWorld();
    const arr = invalidation([[0, 1], [0, 3]]);
    n.cacheInvalidateUser(arr);
    assert.equal(arr.handled, 2);
    assert.deepEqual(slots(), [B, 0, B, 0]);
    const all = invalidation([[IOMMU_TEST_INVALIDATE_FLAG_ALL, 2]]);
    n.cacheInvalidateUser(all);
    assert.equal(all.handled, 1);
    assert.deepEqual(slots(), [0, 0, 0, 0]);
  });

  test('unknown flag bits: EOPNOTSUPP at that entry; earlier entries stay applied and counted', () => {
    const { n, slots } = nestedWorld();
    const arr = invalidation([[0, 0], [0, 1], [2, 2], [0, 3]]);
    throwsErrno(() => n.cacheInvalidateUser(arr), 'EOPNOTSUPP', /entry 2/);
    assert.equal(arr.handled, 2);
    assert.deepEqual(slots(), [0, 0, B, B]);
  });

  test('iotlb_id above 3 is EINVAL, also with ALL', () => {
    const { n, slots } = nestedWorld();
    const arr = invalidation([[0, 2], [0, 4]]);
    throwsErrno(() => n.cacheInvalidateUser(arr), 'EINVAL', /IOTLB 4/);
    assert.equal(arr.handled, 1);
    const all = invalidation([[IOMMU_TEST_INVALIDATE_FLAG_ALL, 4]]);
    throwsErrno(() => n.cacheInvalidateUser(all), 'EINVAL');
    assert.equal(all.handled, 0);
    assert.deepEqual(slots(), [B, B, 0, B]);
  });

  test('an unreadable entry is EFAULT after the readable ones', () => {
    const { n, slots } = nestedWorld();
    const arr = invalidation([[0, 0], [0, 1], [0, 2]], { readable: 12 });
    throwsErrno(() => n.cacheInvalidateUser(arr), 'EFAULT');
    assert.equal(arr.handled, 1);
    assert.deepEqual(slots(), [0, B, B, B]);
  });
});

describe('I/O page faults (§4.15)', () => {
  const fault = (grpid: number, last: boolean, addr = 0x1000n, pasid = 0): IopfFault => ({
    flags: (last ? IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE : 0) | (pasid ? IOMMU_FAULT_PAGE_REQUEST_PASID_VALID : 0),
    pasid,
    grpid,
    perm: 3,
    addr,
  });

  /** A device attached (with a handle) to a nested domain whose handler collects groups. */
  function faultWorld(kind: 'nested' | 'paging' = 'nested') {
    const { drv, dev } = world();
    const parent = paging(drv, dev, NEST_PARENT);
    const domain = kind === 'nested' ? nested(drv, dev, parent) : parent;
    const groups: IopfGroup[] = [];
    domain.iopfHandler = (g) => groups.push(g);
    dev.group.claimDmaOwner({});
    const handle = {};
    dev.group.attachHandle(domain, handle);
    drv.enableIopf(dev);
    return { drv, dev, domain, groups, handle };
  }

  test('enable twice is EBUSY; disable forgets; disabling again is a WARN', () => {
    const { drv, dev } = world();
    drv.enableIopf(dev);
    assert.ok(drv.iopfDevices.has(dev));
    throwsErrno(() => drv.enableIopf(dev), 'EBUSY');
    drv.disableIopf(dev);
    assert.equal(dev.iopfParam, null);
    assert.ok(!drv.iopfDevices.has(dev));
    drv.disableIopf(dev);
    assert.equal(drv.warnings.length, 1);
    drv.enableIopf(dev);
  });

  test('TRIGGER_IOPF: LAST_PAGE, PASID_VALID iff pasid != 0; the group reaches the handler', () => {
    const { dev, groups, handle, drv } = faultWorld();
    assert.equal(triggerIopf(dev, { pasid: 1, grpid: 2, perm: 3, addr: 0xdeadbeafn }), 'delivered');
    assert.equal(groups.length, 1);
    const g = groups[0]!;
    assert.equal(g.dev, dev);
    assert.equal(g.attachHandle, handle);
    assert.deepEqual(g.faults, [{ flags: 3, pasid: 1, grpid: 2, perm: 3, addr: 0xdeadbeafn }]);
    assert.equal(triggerIopf(dev, { pasid: 0, grpid: 2, perm: 1, addr: 0n }), 'delivered');
    assert.equal(groups[1]!.lastFault.flags, IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE);
    g.respond(IOMMU_PAGE_RESP_SUCCESS);
    assert.equal(g.responded, true);
    assert.equal(drv.pageResponses.length, 1);
    assert.equal(drv.pageResponses[0]!.code, IOMMU_PAGE_RESP_SUCCESS);
    assert.equal(drv.pageResponses[0]!.fault.grpid, 2);
  });

  test('partial requests wait; LAST_PAGE collects its grpid in arrival order and leaves the others', () => {
    const { dev, groups, drv } = faultWorld();
    assert.equal(reportDeviceFault(dev, fault(7, false, 0x1000n)), 'partial');
    assert.equal(reportDeviceFault(dev, fault(8, false, 0x2000n)), 'partial');
    assert.equal(reportDeviceFault(dev, fault(7, false, 0x3000n)), 'partial');
    assert.equal(dev.partialFaults.length, 3);
    assert.equal(groups.length, 0);
    assert.equal(reportDeviceFault(dev, fault(7, true, 0x4000n)), 'delivered');
    assert.deepEqual(groups[0]!.faults.map((f) => f.addr), [0x1000n, 0x3000n, 0x4000n]);
    assert.deepEqual(dev.partialFaults.map((f) => f.grpid), [8]);
    assert.deepEqual(drv.pageResponses, []);
  });

  test('no attachment, no handler, or IOPF not enabled: answered INVALID (partial requests too)', () => {
    const { drv, dev } = world();
    assert.equal(reportDeviceFault(dev, fault(1, false)), 'invalid');
    assert.equal(triggerIopf(dev, { pasid: 0, grpid: 1, perm: 1, addr: 0n }), 'invalid');
    assert.deepEqual(drv.pageResponses.map((r) => r.code), [IOMMU_PAGE_RESP_INVALID, IOMMU_PAGE_RESP_INVALID]);
    assert.equal(dev.partialFaults.length, 0);

    const w = faultWorld();
    w.domain.iopfHandler = undefined;
    assert.equal(triggerIopf(w.dev, { pasid: 0, grpid: 1, perm: 1, addr: 0n }), 'invalid');
    const w2 = faultWorld();
    w2.drv.disableIopf(w2.dev);
    assert.equal(triggerIopf(w2.dev, { pasid: 0, grpid: 1, perm: 1, addr: 0n }), 'invalid');
    assert.equal(w2.groups.length, 0);
    // A handler but no fault state on the device: the kernel WARNs (iommu_report_device_fault).
    const warned = kernelWarnings.splice(0);
    assert.equal(warned.length, 1);
    assert.match(warned[0]!, /no I\/O page fault state/);
  });

  test('a PASID-tagged request reaches the RID attachment only if it is nested (user PASID table)', () => {
    const p = faultWorld('paging');
    assert.equal(triggerIopf(p.dev, { pasid: 5, grpid: 1, perm: 1, addr: 0n }), 'invalid');
    assert.equal(triggerIopf(p.dev, { pasid: 0, grpid: 1, perm: 1, addr: 0n }), 'delivered');
    const n = faultWorld('nested');
    assert.equal(triggerIopf(n.dev, { pasid: 5, grpid: 1, perm: 1, addr: 0n }), 'delivered');
  });

  test('a handler that throws gets the group answered FAILURE', () => {
    const { dev, domain, drv } = faultWorld();
    domain.iopfHandler = () => {
      throw new Error('queue gone');
    };
    assert.equal(triggerIopf(dev, { pasid: 0, grpid: 1, perm: 1, addr: 0n }), 'aborted');
    assert.deepEqual(drv.pageResponses.map((r) => r.code), [IOMMU_PAGE_RESP_FAILURE]);
    assert.equal(dev.iopfParam!.pending.size, 0);
  });

  test('disabling IOPF drops parked requests and answers unanswered groups INVALID', () => {
    const { dev, drv, groups } = faultWorld();
    reportDeviceFault(dev, fault(1, false));
    triggerIopf(dev, { pasid: 0, grpid: 2, perm: 1, addr: 0n });
    triggerIopf(dev, { pasid: 0, grpid: 3, perm: 1, addr: 0n });
    groups[0]!.respond(IOMMU_PAGE_RESP_SUCCESS);
    drv.disableIopf(dev);
    assert.deepEqual(
      drv.pageResponses.map((r) => [r.fault.grpid, r.code]),
      [
        [2, IOMMU_PAGE_RESP_SUCCESS],
        [3, IOMMU_PAGE_RESP_INVALID],
      ],
    );
    assert.equal(dev.partialFaults.length, 0);
    assert.equal(groups[1]!.responded, true);
  });
});
