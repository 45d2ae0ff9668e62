/**
 * IOMMU_TEST_CMD ops through the binary door where the oracle cannot go or that need more than a
 * transcript (the kernel's answers for the mock are in oracle/transcripts/test-ops.txt):
 * SET_TEMP_MEMORY_LIMIT is global (one context sets it, another's ACCESS_RW batches change), and
 * the "not a mock" EINVAL branches of MD_CHECK_MAP, MD_CHECK_IOTLB, DIRTY and TRIGGER_IOPF on
 * objects of other drivers (arm-smmu, SMMUv3, a second mock driver instance).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DevIommu } from '../../src/api/dev-iommu.js';
import { createArmSmmu } from '../../src/drivers/arm-smmu.js';
import { ArmSmmuV3Driver } from '../../src/drivers/arm-smmu-v3.js';
import { MockIommuDriver } from '../../src/drivers/mock.js';
import { deviceAttach, deviceBind } from '../../src/iommufd/device.js';
import { SimpleFdTable } from '../../src/iommufd/file.js';
import { selftestKnobs } from '../../src/iommufd/selftest.js';
import { SimMachine } from '../../src/mm/machine.js';
import type { SimProcess } from '../../src/mm/process.js';
import { IOMMU_HWPT_ALLOC, IOMMU_IOAS_ALLOC, IOMMU_IOAS_MAP, IOMMU_TEST_CMD } from '../../src/uapi/ioctl.js';
import {
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IommuHwptAlloc,
  IommuIoasAlloc,
  IommuIoasMap,
} from '../../src/uapi/iommufd.js';
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_MD_CHECK_IOTLB,
  IOMMU_TEST_OP_MD_CHECK_MAP,
  IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
  IOMMU_TEST_OP_TRIGGER_IOPF,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  IommuTestCmdAccessRw,
  IommuTestCmdCheckIotlb,
  IommuTestCmdCheckMap,
  IommuTestCmdCreateAccess,
  IommuTestCmdDirty,
  IommuTestCmdMemoryLimit,
  IommuTestCmdTriggerIopf,
} from '../../src/uapi/iommufd-test.js';
import type { DecodedFields, Fields, StructDef } from '../../src/uapi/struct.js';
import { PAGE, checkInvariants, expectIoctl } from './helpers.js';

checkInvariants();

/** One process, any number of /dev/iommu contexts on it, one scratch page for structs. */
class Proc {
  readonly m = new SimMachine();
  readonly p: SimProcess = this.m.spawn();
  readonly fds = new SimpleFdTable();
  readonly scratch = this.p.mapAnonymous(PAGE);

  open(): DevIommu {
    return new DevIommu(this.p, {}, undefined, this.fds);
  }

  ioctl<F extends Fields>(dev: DevIommu, cmd: number, def: StructDef<F>, fields: Partial<DecodedFields<F>>) {
    const bytes = new Uint8Array(def.size);
    def.encode(def.make({ size: cmd === IOMMU_TEST_CMD ? 72 : def.size, ...fields } as Partial<DecodedFields<F>>), bytes, 0);
    this.p.writeMem(this.scratch, bytes);
    const r = dev.ioctl(cmd, this.scratch);
    return { r, out: def.decode(this.p.readMem(this.scratch, def.size)) };
  }

  ioas(dev: DevIommu): number {
    const { r, out } = this.ioctl(dev, IOMMU_IOAS_ALLOC, IommuIoasAlloc, {});
    expectIoctl(r, 'OK');
    return out.outIoasId;
  }

  map(dev: DevIommu, ioasId: number, userVa: bigint, length: bigint, iova: bigint): void {
    const flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE;
    expectIoctl(this.ioctl(dev, IOMMU_IOAS_MAP, IommuIoasMap, { flags, ioasId, userVa, length, iova }).r, 'OK');
  }

  setLimit(dev: DevIommu, limit: number) {
    return this.ioctl(dev, IOMMU_TEST_CMD, IommuTestCmdMemoryLimit, { op: IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, limit }).r;
  }
}

describe('IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT (selftest.c; §7 item 45)', () => {
  test('below sizeof(unsigned long) + sizeof(u32) = 12 is EINVAL and changes nothing; 12 and U32_MAX are accepted', () => {
    const pr = new Proc();
    const dev = pr.open();
    const saved = selftestKnobs.memoryLimit;
    try {
      for (const bad of [0, 1, 11]) {
        expectIoctl(pr.setLimit(dev, bad), 'EINVAL', new RegExp(`limit ${bad} is below the 12-byte minimum`));
        assert.equal(selftestKnobs.memoryLimit, saved);
      }
      expectIoctl(pr.setLimit(dev, 12), 'OK');
      assert.equal(selftestKnobs.memoryLimit, 12);
      expectIoctl(pr.setLimit(dev, 0xffff_ffff), 'OK');
      assert.equal(selftestKnobs.memoryLimit, 0xffff_ffff);
    } finally {
      selftestKnobs.memoryLimit = saved;
    }
  });

  test('global: set through one context, it sizes the ACCESS_RW slow-path batches of another', () => {
    const pr = new Proc();
    const a = pr.open();
    const b = pr.open();
    const ioas = pr.ioas(a);
    // Page 1 is faulted in before page 0, so the two are not physically adjacent; page 2 goes away.
    const va = pr.p.mapAnonymous(3n * PAGE);
    pr.p.writeMem(va + PAGE, new Uint8Array(Number(PAGE)).fill(0x22));
    pr.p.writeMem(va, new Uint8Array(Number(PAGE)).fill(0x11));
    pr.map(a, ioas, va, 3n * PAGE, 0x20_0000n);
    pr.p.munmap(va + 2n * PAGE, PAGE);
    const { r, out } = pr.ioctl(a, IOMMU_TEST_CMD, IommuTestCmdCreateAccess, { op: IOMMU_TEST_OP_CREATE_ACCESS, id: ioas });
    expectIoctl(r, 'OK');
    const src = pr.p.mapAnonymous(2n * PAGE);
    pr.p.writeMem(src, new Uint8Array(Number(2n * PAGE)).fill(0x77));
    const write = () =>
      pr.ioctl(a, IOMMU_TEST_CMD, IommuTestCmdAccessRw, {
        op: IOMMU_TEST_OP_ACCESS_RW,
        id: out.outAccessFd,
        iova: 0x20_0800n,
        length: 2n * PAGE,
        uptr: src,
        flags: MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH,
      }).r;
    const saved = selftestKnobs.memoryLimit;
    try {
      // Default limit: one batch holds the whole range, the hole fails it before any copy.
      expectIoctl(write(), 'EFAULT');
      assert.deepEqual(pr.p.readMem(va + 0x800n, 0x800), new Uint8Array(0x800).fill(0x11));
      // Context b sets a one-run batch; context a's next write copies page 0's part first.
      expectIoctl(pr.setLimit(b, 12), 'OK');
      expectIoctl(write(), 'EFAULT');
      assert.deepEqual(pr.p.readMem(va + 0x800n, 0x800), new Uint8Array(0x800).fill(0x77));
      assert.deepEqual(pr.p.readMem(va + PAGE, Number(PAGE)), new Uint8Array(Number(PAGE)).fill(0x22));
      b.close();
      assert.equal(selftestKnobs.memoryLimit, 12, 'closing the context that set it does not reset it');
    } finally {
      selftestKnobs.memoryLimit = saved;
    }
    pr.fds.close(out.outAccessFd);
  });
});

describe('"not a mock" (get_md_pagetable, get_md_pagetable_nested, iommufd_selftest_is_mock_dev): EINVAL', () => {
  function setup() {
    const pr = new Proc();
    const dev = pr.open();
    const ioas = pr.ioas(dev);
    const buf = pr.p.mapAnonymous(4n * PAGE);
    pr.map(dev, ioas, buf, 4n * PAGE, 0x100_0000n);
    const smmu = deviceBind(dev.ctx, createArmSmmu().addDevice('smmu'));
    const v3 = deviceBind(dev.ctx, new ArmSmmuV3Driver().addDevice('v3'));
    return { pr, dev, ioas, buf, smmu, v3, smmuHwpt: deviceAttach(smmu, ioas), v3Hwpt: deviceAttach(v3, ioas) };
  }

  test('MD_CHECK_MAP and DIRTY on arm-smmu and SMMUv3 paging HWPTs (after the argument checks)', () => {
    const { pr, dev, buf, smmuHwpt, v3Hwpt } = setup();
    assert.notEqual(smmuHwpt, v3Hwpt);
    for (const id of [smmuHwpt, v3Hwpt]) {
      const check = pr.ioctl(dev, IOMMU_TEST_CMD, IommuTestCmdCheckMap, { op: IOMMU_TEST_OP_MD_CHECK_MAP, id, iova: 0x100_0000n, length: PAGE, uptr: buf });
      expectIoctl(check.r, 'EINVAL', /not by a paging domain of the selftest's mock driver/);
      // A misaligned argument is EINVAL before the lookup, a bad id ENOENT: the driver check comes between.
      const dirty = pr.ioctl(dev, IOMMU_TEST_CMD, IommuTestCmdDirty, {
        op: IOMMU_TEST_OP_DIRTY,
        id,
        iova: 0x100_0000n,
        length: 4n * PAGE,
        pageSize: PAGE,
        uptr: buf,
      });
      expectIoctl(dirty.r, 'EINVAL', /not by a paging domain of the selftest's mock driver/);
    }
    expectIoctl(
      pr.ioctl(dev, IOMMU_TEST_CMD, IommuTestCmdDirty, { op: IOMMU_TEST_OP_DIRTY, id: 999, iova: 0x100_0000n, length: 4n * PAGE, pageSize: PAGE, uptr: buf }).r,
      'ENOENT',
    );
  });

  test('MD_CHECK_IOTLB on a nested HWPT of another driver, TRIGGER_IOPF on a device of another driver', () => {
    const { pr, dev, ioas, smmu } = setup();
    // A second mock driver instance stands for "a driver with nesting that is not the selftest's mock".
    const other = new MockIommuDriver('mock-other');
    const odev = deviceBind(dev.ctx, other.createMockDevice(0));
    const parent = pr.ioctl(dev, IOMMU_HWPT_ALLOC, IommuHwptAlloc, { flags: IOMMU_HWPT_ALLOC_NEST_PARENT, devId: odev.id, ptId: ioas });
    expectIoctl(parent.r, 'OK');
    const data = pr.p.mapAnonymous(PAGE);
    const nested = pr.ioctl(dev, IOMMU_HWPT_ALLOC, IommuHwptAlloc, {
      devId: odev.id,
      ptId: parent.out.outHwptId,
      dataType: IOMMU_HWPT_DATA_SELFTEST,
      dataLen: 4,
      dataUptr: data,
    });
    expectIoctl(nested.r, 'OK');
    const iotlb = pr.ioctl(dev, IOMMU_TEST_CMD, IommuTestCmdCheckIotlb, { op: IOMMU_TEST_OP_MD_CHECK_IOTLB, id: nested.out.outHwptId, iotlbId: 0, iotlb: 0 });
    expectIoctl(iotlb.r, 'EINVAL', /not by a nested domain of the selftest's mock driver/);
    const check = pr.ioctl(dev, IOMMU_TEST_CMD, IommuTestCmdCheckMap, { op: IOMMU_TEST_OP_MD_CHECK_MAP, id: parent.out.outHwptId, iova: 0n, length: 0n, uptr: 0n });
    expectIoctl(check.r, 'EINVAL', /selftest's mock driver/);
    for (const devId of [smmu.id, odev.id]) {
      const trig = pr.ioctl(dev, IOMMU_TEST_CMD, IommuTestCmdTriggerIopf, { op: IOMMU_TEST_OP_TRIGGER_IOPF, devId, grpid: 1, perm: 1 });
      expectIoctl(trig.r, 'EINVAL', /is not a mock device/);
    }
  });
});
