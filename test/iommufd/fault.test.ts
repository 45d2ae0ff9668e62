/**
 * Fault queues (reference §2.16, §4.15, §7 items 34–37): IOMMU_FAULT_QUEUE_ALLOC, the fault fd's
 * read/write/poll/close, delivery from the mock device through a nested HWPT, and automatic
 * INVALID responses when an attachment or the queue goes away.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DevIommu } from '../../src/api/dev-iommu.js';
import { Iommufd } from '../../src/api/iommufd.js';
import { mockIommu } from '../../src/iommufd/selftest.js';
import { getDevice } from '../../src/iommufd/device.js';
import { POLLIN, POLLOUT, POLLRDNORM, SimpleFdTable, type EmulatedFile } from '../../src/iommufd/file.js';
import { IommuError } from '../../src/lib/error.js';
import { Errno } from '../../src/lib/errno.js';
import { reportDeviceFault, IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE } from '../../src/iommu/fault.js';
import { SimMachine } from '../../src/mm/machine.js';
import type { SimProcess } from '../../src/mm/process.js';
import { IOMMU_DESTROY, IOMMU_FAULT_QUEUE_ALLOC, IOMMU_HWPT_ALLOC, IOMMU_IOAS_ALLOC, IOMMU_TEST_CMD } from '../../src/uapi/ioctl.js';
import {
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_FAULT_ID_VALID,
  IommuDestroy,
  IommuFaultAlloc,
  IommuHwptAlloc,
  IommuHwptPgfault,
  IommuIoasAlloc,
} from '../../src/uapi/iommufd.js';
import {
  IOMMU_HWPT_DATA_SELFTEST,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_TEST_OP_TRIGGER_IOPF,
  IommuTestCmdMockDomain,
  IommuTestCmdMockDomainReplace,
  IommuTestCmdTriggerIopf,
} from '../../src/uapi/iommufd-test.js';
import type { DecodedFields, Fields, StructDef } from '../../src/uapi/struct.js';
import { checkInvariants } from './helpers.js';

checkInvariants();

const PAGE = 4096n;

class Bin {
  readonly m = new SimMachine();
  readonly p: SimProcess;
  readonly fds = new SimpleFdTable();
  readonly dev: DevIommu;
  readonly scratch: bigint;
  /** Where fault records are read to and responses written from. */
  readonly io: bigint;

  constructor() {
    this.p = this.m.spawn();
    this.dev = new DevIommu(this.p, {}, undefined, this.fds);
    this.scratch = this.p.mapAnonymous(PAGE);
    this.io = this.p.mapAnonymous(PAGE);
  }

  call<F extends Fields>(cmd: number, def: StructDef<F>, fields: Partial<DecodedFields<F>>): { errno: number; out: DecodedFields<F> } {
    const bytes = new Uint8Array(def.size);
    def.encode(def.make({ size: def.size, ...fields } as Partial<DecodedFields<F>>), bytes, 0);
    this.p.writeMem(this.scratch, bytes);
    const r = this.dev.ioctl(cmd, this.scratch);
    return { errno: r.errno, out: def.decode(this.p.readMem(this.scratch, def.size)) };
  }

  ok<F extends Fields>(cmd: number, def: StructDef<F>, fields: Partial<DecodedFields<F>>): DecodedFields<F> {
    const r = this.call(cmd, def, fields);
    assert.equal(r.errno, 0, `errno ${r.errno}: ${this.dev.ctx.lastError?.message}`);
    return r.out;
  }

  file(fd: number): EmulatedFile {
    return this.fds.get(fd)!;
  }

  /** read(2): bytes, or -errno. */
  read(fd: number, count: number, addr = this.io): number {
    return sys(() => this.file(fd).read!(this.p.mm, addr, count));
  }

  /** write(2) of responses (cookie, code) pairs: bytes, or -errno. */
  write(fd: number, responses: [number, number][], count = responses.length * 8, addr = this.io): number {
    const bytes = new Uint8Array(responses.length * 8);
    const dv = new DataView(bytes.buffer);
    responses.forEach(([cookie, code], i) => {
      dv.setUint32(i * 8, cookie, true);
      dv.setUint32(i * 8 + 4, code, true);
    });
    if (bytes.length) this.p.writeMem(addr, bytes);
    return sys(() => this.file(fd).write!(this.p.mm, addr, count));
  }

  records(n: number, addr = this.io): DecodedFields<typeof IommuHwptPgfault.fields>[] {
    const out = [];
    for (let i = 0; i < n; i++) out.push(IommuHwptPgfault.decode(this.p.readMem(addr + BigInt(i * 40), 40)));
    return out;
  }

  destroy(id: number): number {
    return this.call(IOMMU_DESTROY, IommuDestroy, { id }).errno;
  }

  trigger(devId: number, f: { pasid?: number; grpid?: number; perm?: number; addr?: bigint } = {}): void {
    this.ok(IOMMU_TEST_CMD, IommuTestCmdTriggerIopf, {
      op: IOMMU_TEST_OP_TRIGGER_IOPF,
      devId,
      pasid: f.pasid ?? 1,
      grpid: f.grpid ?? 2,
      perm: f.perm ?? 3,
      addr: f.addr ?? 0xdeadbeafn,
    });
  }

  /** The upstream fixture: IOAS, mock device, fault queue, NEST_PARENT HWPT, nested HWPT with the queue, replace onto it. */
  setup() {
    const ioasId = this.ok(IOMMU_IOAS_ALLOC, IommuIoasAlloc, {}).outIoasId;
    const md = this.ok(IOMMU_TEST_CMD, IommuTestCmdMockDomain, { op: IOMMU_TEST_OP_MOCK_DOMAIN, id: ioasId });
    const fault = this.ok(IOMMU_FAULT_QUEUE_ALLOC, IommuFaultAlloc, {});
    const parent = this.ok(IOMMU_HWPT_ALLOC, IommuHwptAlloc, { devId: md.outIdevId, ptId: ioasId, flags: IOMMU_HWPT_ALLOC_NEST_PARENT }).outHwptId;
    const data = this.p.mapAnonymous(PAGE);
    this.p.writeMem(data, Uint8Array.of(0xef, 0xbe, 0xad, 0x0b));
    const iopf = this.ok(IOMMU_HWPT_ALLOC, IommuHwptAlloc, {
      devId: md.outIdevId,
      ptId: parent,
      flags: IOMMU_HWPT_FAULT_ID_VALID,
      faultId: fault.outFaultId,
      dataType: IOMMU_HWPT_DATA_SELFTEST,
      dataLen: 4,
      dataUptr: data,
    }).outHwptId;
    return { ioasId, stdevId: md.outStdevId, devId: md.outIdevId, autoHwpt: md.outHwptId, faultId: fault.outFaultId, faultFd: fault.outFaultFd, parent, iopf };
  }

  replace(stdevId: number, ptId: number): number {
    return this.ok(IOMMU_TEST_CMD, IommuTestCmdMockDomainReplace, { op: IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id: stdevId, ptId }).ptId;
  }
}

function sys(fn: () => number): number {
  try {
    return fn();
  } catch (e) {
    if (e instanceof IommuError) return -e.errno;
    throw e;
  }
}

function responsesFor(devName: string): number[] {
  return mockIommu.pageResponses.filter((r) => r.dev.name === devName).map((r) => r.code);
}

describe('the upstream selftest sequence', () => {
  test('FAULT_QUEUE_ALLOC, nested HWPT with FAULT_ID_VALID, replace, TRIGGER_IOPF, read, respond, close, destroy', () => {
    const b = new Bin();
    const s = b.setup();
    assert.equal(b.file(s.faultFd).name, '[iommufd-pgfault]');
    assert.equal(b.replace(s.stdevId, s.iopf), s.iopf);
    b.trigger(s.devId);
    assert.equal(b.read(s.faultFd, 40), 40);
    const [f] = b.records(1);
    assert.deepEqual(f, { flags: 3, devId: s.devId, pasid: 1, grpid: 2, perm: 3, reserved: 0, addr: 0xdeadbeafn, length: 0, cookie: 1 });
    const devName = getDevice(b.dev.ctx, s.devId).dev.name;
    assert.equal(b.write(s.faultFd, [[f!.cookie, 0]]), 8);
    assert.deepEqual(responsesFor(devName), [0]);
    b.replace(s.stdevId, s.ioasId);
    assert.equal(b.destroy(s.iopf), 0);
    assert.equal(b.destroy(s.faultId), Errno.EBUSY, 'the fd still holds the FAULT');
    b.fds.close(s.faultFd);
    assert.equal(b.destroy(s.faultId), 0);
  });
});

describe('IOMMU_FAULT_QUEUE_ALLOC', () => {
  test('flags must be 0; the fd holds the FAULT and the context; a HWPT using it holds it too', () => {
    const b = new Bin();
    assert.equal(b.call(IOMMU_FAULT_QUEUE_ALLOC, IommuFaultAlloc, { flags: 1 }).errno, Errno.EOPNOTSUPP);
    assert.equal(b.dev.ctx.objects.count, 0);
    const s = b.setup();
    b.fds.close(s.faultFd);
    assert.equal(b.destroy(s.faultId), Errno.EBUSY, 'the nested HWPT references it');
    assert.equal(b.destroy(s.iopf), 0);
    assert.equal(b.destroy(s.faultId), 0);
  });

  test('the fault fd keeps the context alive after /dev/iommu closes; closing it releases everything', () => {
    const b = new Bin();
    const s = b.setup();
    b.replace(s.stdevId, s.iopf);
    b.trigger(s.devId);
    const devName = getDevice(b.dev.ctx, s.devId).dev.name;
    b.dev.close();
    assert.equal(b.dev.ctx.released, false);
    assert.equal(b.read(s.faultFd, 40), 40, 'still readable');
    b.fds.close(s.faultFd);
    assert.equal(b.dev.ctx.released, true);
    assert.equal(b.dev.ctx.objects.count, 0);
    assert.deepEqual(responsesFor(devName), [1], 'the unanswered group was answered INVALID');
  });

  test('a failed response write-back leaves no object and no fd', () => {
    const b = new Bin();
    const r = b.dev.ioctl(IOMMU_FAULT_QUEUE_ALLOC, 0x10n);
    assert.equal(r.errno, Errno.EFAULT);
    const p = b.p;
    const ro = p.mapAnonymous(PAGE);
    const bytes = new Uint8Array(16);
    IommuFaultAlloc.encode(IommuFaultAlloc.make({ size: 16 }), bytes, 0);
    p.writeMem(ro, bytes);
    p.mprotect(ro, PAGE, 1);
    assert.equal(b.dev.ioctl(IOMMU_FAULT_QUEUE_ALLOC, ro).errno, Errno.EFAULT);
    assert.equal(b.dev.ctx.objects.count, 0);
    assert.deepEqual(b.fds.fds(), []);
    assert.equal(b.dev.ctx.fileRefs, 1);
  });
});

describe('reading the fault fd', () => {
  function ready() {
    const b = new Bin();
    const s = b.setup();
    b.replace(s.stdevId, s.iopf);
    const dev = getDevice(b.dev.ctx, s.devId).dev;
    return { b, s, dev };
  }

  test('count not a multiple of 40 is ESPIPE; an empty queue reads 0', () => {
    const { b, s } = ready();
    assert.equal(b.read(s.faultFd, 39), -Errno.ESPIPE);
    assert.equal(b.read(s.faultFd, 0), 0);
    assert.equal(b.read(s.faultFd, 400), 0);
    b.trigger(s.devId);
    assert.equal(b.read(s.faultFd, 41), -Errno.ESPIPE);
  });

  test('whole groups only: a first group bigger than count is EINVAL, later ones that do not fit stay queued', () => {
    const { b, s, dev } = ready();
    // A group of two: a request without LAST_PAGE waits for its group's last one.
    reportDeviceFault(dev, { flags: 0, pasid: 0, grpid: 7, perm: 1, addr: 0x1000n });
    reportDeviceFault(dev, { flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, pasid: 0, grpid: 7, perm: 1, addr: 0x2000n });
    b.trigger(s.devId, { grpid: 8 });
    assert.equal(b.read(s.faultFd, 40), -Errno.EINVAL);
    assert.equal(b.read(s.faultFd, 120), 120, 'both groups fit');
    const recs = b.records(3);
    assert.deepEqual(recs.map((r) => [r.grpid, r.addr, r.cookie, r.flags]), [
      [7, 0x1000n, 1, 0],
      [7, 0x2000n, 1, 2],
      [8, 0xdeadbeafn, 2, 3],
    ]);
    reportDeviceFault(dev, { flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, pasid: 0, grpid: 9, perm: 2, addr: 0x3000n });
    reportDeviceFault(dev, { flags: 0, pasid: 0, grpid: 10, perm: 2, addr: 0x4000n });
    reportDeviceFault(dev, { flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, pasid: 0, grpid: 10, perm: 2, addr: 0x5000n });
    assert.equal(b.read(s.faultFd, 80), 40, 'the second group does not fit behind the first');
    assert.equal(b.records(1)[0]!.cookie, 3);
    assert.equal(b.read(s.faultFd, 80), 80);
  });

  test('cookies are the lowest free from 1, reused after a response', () => {
    const { b, s } = ready();
    b.trigger(s.devId, { grpid: 1 });
    b.trigger(s.devId, { grpid: 2 });
    b.trigger(s.devId, { grpid: 3 });
    assert.equal(b.read(s.faultFd, 80), 80);
    assert.deepEqual(b.records(2).map((r) => r.cookie), [1, 2]);
    assert.equal(b.write(s.faultFd, [[1, 0]]), 8);
    assert.equal(b.read(s.faultFd, 40), 40);
    assert.deepEqual(b.records(1).map((r) => [r.grpid, r.cookie]), [[3, 1]]);
  });

  test('a faulting destination is EFAULT and puts the group back (its cookie released)', () => {
    const { b, s } = ready();
    b.trigger(s.devId, { grpid: 1 });
    b.trigger(s.devId, { grpid: 2 });
    assert.equal(b.read(s.faultFd, 40, 0x10n), -Errno.EFAULT);
    const edge = b.p.mapAnonymous(2n * PAGE);
    b.p.munmap(edge + PAGE, PAGE);
    assert.equal(b.read(s.faultFd, 80, edge + PAGE - 40n), 40, 'the bytes of the groups before the fault are returned');
    assert.equal(b.records(1, edge + PAGE - 40n)[0]!.cookie, 1);
    assert.equal(b.read(s.faultFd, 80), 40);
    assert.deepEqual(b.records(1).map((r) => [r.grpid, r.cookie]), [[2, 2]]);
  });

  test('poll: POLLOUT always, POLLIN|POLLRDNORM while groups are queued', () => {
    const { b, s } = ready();
    const f = b.file(s.faultFd);
    assert.equal(f.poll!(), POLLOUT);
    b.trigger(s.devId);
    assert.equal(f.poll!(), POLLOUT | POLLIN | POLLRDNORM);
    b.read(s.faultFd, 40);
    assert.equal(f.poll!(), POLLOUT, 'read groups no longer count');
  });
});

describe('writing page responses', () => {
  function withTwoRead() {
    const b = new Bin();
    const s = b.setup();
    b.replace(s.stdevId, s.iopf);
    b.trigger(s.devId, { grpid: 1 });
    b.trigger(s.devId, { grpid: 2 });
    assert.equal(b.read(s.faultFd, 80), 80);
    const devName = getDevice(b.dev.ctx, s.devId).dev.name;
    return { b, s, devName };
  }

  test('count not a multiple of 8 is ESPIPE; 0 writes nothing', () => {
    const { b, s } = withTwoRead();
    assert.equal(b.write(s.faultFd, [[1, 0]], 7), -Errno.ESPIPE);
    assert.equal(b.write(s.faultFd, [], 0), 0);
  });

  test('a bad code or an unknown cookie is EINVAL, or the bytes done before it', () => {
    const { b, s, devName } = withTwoRead();
    assert.equal(b.write(s.faultFd, [[1, 2]]), -Errno.EINVAL);
    assert.equal(b.write(s.faultFd, [[9, 0]]), -Errno.EINVAL);
    assert.equal(b.write(s.faultFd, [[1, 1], [1, 0], [2, 0]]), 8, 'the second response repeats a cookie');
    assert.equal(b.write(s.faultFd, [[2, 0]]), 8);
    assert.deepEqual(responsesFor(devName), [1, 0]);
    assert.equal(b.write(s.faultFd, [], 8, 0x10n), -Errno.EFAULT);
  });

  test('replacing away from the fault HWPT answers queued and read groups INVALID; their cookies are dead (§7 item 36)', () => {
    const { b, s, devName } = withTwoRead();
    b.trigger(s.devId, { grpid: 3 });
    b.replace(s.stdevId, s.ioasId);
    assert.deepEqual(responsesFor(devName), [1, 1, 1]);
    assert.equal(b.write(s.faultFd, [[1, 0]]), -Errno.EINVAL);
    assert.equal(b.read(s.faultFd, 40), 0);
    b.trigger(s.devId);
    assert.equal(b.read(s.faultFd, 40), 0, 'nothing reaches the queue when no fault HWPT is attached');
  });

  test('destroying the SELFTEST device (detach) answers the attachment groups INVALID', () => {
    const { b, s, devName } = withTwoRead();
    assert.equal(b.destroy(s.stdevId), 0);
    assert.deepEqual(responsesFor(devName), [1, 1]);
  });
});

describe('typed door', () => {
  test('faultQueueAlloc, faultRead, faultWrite, poll, closeFd', () => {
    const m = new SimMachine();
    const fd = new Iommufd(m.spawn());
    const ioas = fd.ioasAlloc();
    const md = fd.testMockDomain(ioas);
    const { faultId, fd: ffd } = fd.faultQueueAlloc();
    assert.ok(ffd >= 1000);
    const parent = fd.hwptAlloc({ devId: md.idevId, ptId: ioas, flags: IOMMU_HWPT_ALLOC_NEST_PARENT });
    const nested = fd.hwptAlloc({
      devId: md.idevId,
      ptId: parent,
      flags: IOMMU_HWPT_FAULT_ID_VALID,
      faultId,
      dataType: IOMMU_HWPT_DATA_SELFTEST,
      data: Uint8Array.of(0, 0, 0, 0),
    });
    fd.testMockDomainReplace(md.stdevId, nested);
    assert.equal(fd.poll(ffd), POLLOUT);
    const dev = getDevice(fd.ctx, md.idevId).dev;
    reportDeviceFault(dev, { flags: IOMMU_FAULT_PAGE_REQUEST_LAST_PAGE, pasid: 0, grpid: 4, perm: 1, addr: 0x1234n });
    assert.equal(fd.poll(ffd), POLLOUT | POLLIN | POLLRDNORM);
    const recs = fd.faultRead(ffd);
    assert.equal(recs.length, 1);
    assert.equal(recs[0]!.devId, md.idevId);
    assert.equal(recs[0]!.flags, 2);
    assert.equal(fd.faultWrite(ffd, [{ cookie: recs[0]!.cookie, code: 0 }]), 8);
    assert.throws(() => fd.faultWrite(ffd, [{ cookie: 1, code: 0 }]), (e: unknown) => e instanceof IommuError && e.errnoName === 'EINVAL');
    assert.throws(() => fd.destroy(faultId), (e: unknown) => e instanceof IommuError && e.errnoName === 'EBUSY');
    fd.closeFd(ffd);
    assert.throws(() => fd.poll(ffd), (e: unknown) => e instanceof IommuError && e.errnoName === 'EBADF');
  });
});
