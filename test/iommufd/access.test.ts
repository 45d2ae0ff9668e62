/**
 * In-kernel accesses through the selftest's access handle (reference §2.17 CREATE_ACCESS,
 * ACCESS_REPLACE_IOAS, ACCESS_PAGES, DESTROY_ACCESS_PAGES, ACCESS_RW; §3.9 step 4; §3.11; §7 items
 * 21 and 44) and the access kAPI underneath (access.ts).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DevIommu } from '../../src/api/dev-iommu.js';
import { Iommufd } from '../../src/api/iommufd.js';
import { SimSyscalls } from '../../src/api/sim-syscalls.js';
import { accessCreate, accessDestroy, IOMMUFD_ACCESS_RW_WRITE, accessIntervals } from '../../src/iommufd/access.js';
import { SimpleFdTable } from '../../src/iommufd/file.js';
import { selftestKnobs } from '../../src/iommufd/selftest.js';
import { getIoas } from '../../src/iommufd/ioas.js';
import { iommufdIoctl } from '../../src/iommufd/main.js';
import { ObjType } from '../../src/iommufd/object.js';
import { Errno } from '../../src/lib/errno.js';
import { SimMachine } from '../../src/mm/machine.js';
import type { SimProcess } from '../../src/mm/process.js';
import { IOMMU_DESTROY, IOMMU_FAULT_QUEUE_ALLOC, IOMMU_IOAS_ALLOC, IOMMU_IOAS_IOVA_RANGES, IOMMU_IOAS_MAP, IOMMU_IOAS_UNMAP, IOMMU_TEST_CMD } from '../../src/uapi/ioctl.js';
import {
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IommuDestroy,
  IommuFaultAlloc,
  IommuIoasAlloc,
  IommuIoasIovaRanges,
  IommuIoasMap,
  IommuIoasUnmap,
} from '../../src/uapi/iommufd.js';
import {
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  IOMMU_TEST_OP_MD_CHECK_REFS,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_APERTURE_START,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_ACCESS_SYZ,
  MOCK_FLAGS_ACCESS_WRITE,
  IommuTestCmdAccessPages,
  IommuTestCmdAccessReplaceIoas,
  IommuTestCmdAccessRw,
  IommuTestCmdCheckRefs,
  IommuTestCmdCreateAccess,
  IommuTestCmdDestroyAccessPages,
  IommuTestCmdMockDomain,
} from '../../src/uapi/iommufd-test.js';
import type { DecodedFields, Fields, StructDef } from '../../src/uapi/struct.js';
import { checkInvariants, throwsErrno } from './helpers.js';

checkInvariants();

const PAGE = 4096n;
const U64_MAX = (1n << 64n) - 1n;
const NEEDS_PIN = MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES;
const APERTURE = BigInt(MOCK_APERTURE_START);

/** A process with /dev/iommu open through the binary door, a scratch page for structs, a buffer. */
class Bin {
  readonly m: SimMachine;
  readonly p: SimProcess;
  readonly fds = new SimpleFdTable();
  readonly dev: DevIommu;
  readonly scratch: bigint;
  readonly buf: bigint;

  constructor(m = new SimMachine(), p?: SimProcess) {
    this.m = m;
    this.p = p ?? m.spawn({ capabilities: ['CAP_IPC_LOCK'] });
    this.dev = new DevIommu(this.p, {}, undefined, this.fds);
    this.scratch = this.p.mapAnonymous(PAGE);
    this.buf = this.p.mapAnonymous(64n * PAGE);
    const bytes = new Uint8Array(Number(64n * PAGE));
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >> 12)) & 0xff;
    this.p.writeMem(this.buf, bytes);
  }

  /** Run an ioctl with `def` filled from `fields`; errno 0 on success, and the struct afterwards. */
  io<F extends Fields>(cmd: number, def: StructDef<F>, fields: Partial<DecodedFields<F>>): { errno: number; out: DecodedFields<F>; ret: number } {
    const v = def.make({ size: def.size, ...fields } as Partial<DecodedFields<F>>);
    const bytes = new Uint8Array(def.size);
    def.encode(v, bytes, 0);
    this.p.writeMem(this.scratch, bytes);
    const r = this.dev.ioctl(cmd, this.scratch);
    return { errno: r.errno, ret: r.ret, out: def.decode(this.p.readMem(this.scratch, def.size)) };
  }

  ok<F extends Fields>(cmd: number, def: StructDef<F>, fields: Partial<DecodedFields<F>>): DecodedFields<F> {
    const r = this.io(cmd, def, fields);
    assert.equal(r.errno, 0, `expected success, got errno ${r.errno}: ${this.dev.ctx.lastError?.message}`);
    return r.out;
  }

  err<F extends Fields>(errno: keyof typeof Errno, cmd: number, def: StructDef<F>, fields: Partial<DecodedFields<F>>, re?: RegExp): void {
    const r = this.io(cmd, def, fields);
    assert.equal(r.errno, Errno[errno], `expected ${errno}, got ${r.errno === 0 ? 'success' : `errno ${r.errno}`}: ${this.dev.ctx.lastError?.message}`);
    if (re) assert.match(this.dev.ctx.lastError!.explanation, re);
  }

  ioas(): number {
    return this.ok(IOMMU_IOAS_ALLOC, IommuIoasAlloc, {}).outIoasId;
  }

  map(ioasId: number, userVa: bigint, length: bigint, iova: bigint, flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE): void {
    this.ok(IOMMU_IOAS_MAP, IommuIoasMap, { ioasId, userVa, length, iova, flags: flags | IOMMU_IOAS_MAP_FIXED_IOVA });
  }

  unmap(ioasId: number, iova: bigint, length: bigint): { errno: number } {
    return this.io(IOMMU_IOAS_UNMAP, IommuIoasUnmap, { ioasId, iova, length });
  }

  createAccess(ioasId: number, flags = NEEDS_PIN): number {
    return this.ok(IOMMU_TEST_CMD, IommuTestCmdCreateAccess, { op: IOMMU_TEST_OP_CREATE_ACCESS, id: ioasId, flags }).outAccessFd;
  }

  pages(fd: number, iova: bigint, length: bigint, opts: { flags?: number; uptr?: bigint } = {}) {
    return this.io(IOMMU_TEST_CMD, IommuTestCmdAccessPages, { op: IOMMU_TEST_OP_ACCESS_PAGES, id: fd, iova, length, flags: opts.flags ?? 0, uptr: opts.uptr ?? 0n });
  }

  pin(fd: number, iova: bigint, length: bigint, opts: { flags?: number; uptr?: bigint } = {}): number {
    const r = this.pages(fd, iova, length, opts);
    assert.equal(r.errno, 0, `ACCESS_PAGES failed with errno ${r.errno}: ${this.dev.ctx.lastError?.message}`);
    return r.out.outAccessPagesId;
  }

  unpin(fd: number, item: number): number {
    return this.io(IOMMU_TEST_CMD, IommuTestCmdDestroyAccessPages, { op: IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, id: fd, accessPagesId: item }).errno;
  }

  rw(fd: number, iova: bigint, length: bigint, uptr: bigint, flags = 0): number {
    return this.io(IOMMU_TEST_CMD, IommuTestCmdAccessRw, { op: IOMMU_TEST_OP_ACCESS_RW, id: fd, iova, length, uptr, flags }).errno;
  }

  replace(fd: number, ioasId: number): number {
    return this.io(IOMMU_TEST_CMD, IommuTestCmdAccessReplaceIoas, { op: IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, id: fd, ioasId }).errno;
  }

  destroy(id: number): number {
    return this.io(IOMMU_DESTROY, IommuDestroy, { id }).errno;
  }

  mockDomain(ioasId: number): { stdevId: number; hwptId: number; errno: number } {
    const r = this.io(IOMMU_TEST_CMD, IommuTestCmdMockDomain, { op: IOMMU_TEST_OP_MOCK_DOMAIN, id: ioasId });
    return { stdevId: r.out.outStdevId, hwptId: r.out.outHwptId, errno: r.errno };
  }

  checkRefs(uptr: bigint, length: bigint, refs: number): number {
    return this.io(IOMMU_TEST_CMD, IommuTestCmdCheckRefs, { op: IOMMU_TEST_OP_MD_CHECK_REFS, uptr, length, refs }).errno;
  }

  pinCount(va: bigint): number {
    return this.p.mm.residentFrame(va)?.pinCount ?? 0;
  }

  alignment(ioasId: number): bigint {
    return this.io(IOMMU_IOAS_IOVA_RANGES, IommuIoasIovaRanges, { ioasId }).out.outIovaAlignment;
  }
}

describe('CREATE_ACCESS and the access handle', () => {
  test('returns an fd; the ACCESS object takes an id, pins the IOAS and is never user-destroyable', () => {
    const b = new Bin();
    const ioas = b.ioas();
    const fd = b.createAccess(ioas);
    assert.equal(fd, 3);
    assert.equal(b.fds.get(fd)!.name, '[iommufd_test_staccess]');
    const access = b.dev.ctx.objects.peek(2)!;
    assert.equal(access.type, ObjType.ACCESS);
    assert.equal(b.ioas(), 3, 'the access consumed id 2');
    assert.equal(b.destroy(2), Errno.EBUSY, 'DESTROY on an ACCESS is always EBUSY');
    assert.equal(b.destroy(ioas), Errno.EBUSY, 'an attached access holds the IOAS');
    b.fds.close(fd);
    assert.equal(b.dev.ctx.objects.peek(2), undefined, 'closing the fd destroys the access');
    assert.equal(b.destroy(ioas), 0);
  });

  test('flags other than NEEDS_PIN_PAGES are EOPNOTSUPP; an unknown IOAS is ENOENT and leaves no id or fd behind', () => {
    const b = new Bin();
    const ioas = b.ioas();
    b.err('EOPNOTSUPP', IOMMU_TEST_CMD, IommuTestCmdCreateAccess, { op: IOMMU_TEST_OP_CREATE_ACCESS, id: ioas, flags: 2 });
    b.err('ENOENT', IOMMU_TEST_CMD, IommuTestCmdCreateAccess, { op: IOMMU_TEST_OP_CREATE_ACCESS, id: 99, flags: NEEDS_PIN });
    assert.deepEqual(b.fds.fds(), []);
    assert.equal(b.ioas(), 2, 'the access id was released');
    assert.equal(b.dev.ctx.fileRefs, 1, 'the access context reference was dropped');
  });

  test('a pin-capable access raises iova_alignment to PAGE_SIZE (EADDRINUSE over misaligned areas); a plain one does not', () => {
    const b = new Bin();
    const ioas = b.ioas();
    const plain = b.createAccess(ioas, 0);
    assert.equal(b.alignment(ioas), 1n);
    const pin = b.createAccess(ioas);
    assert.equal(b.alignment(ioas), PAGE);
    b.fds.close(pin);
    assert.equal(b.alignment(ioas), 1n, 'alignment drops again when the access leaves');
    b.map(ioas, b.buf + 100n, 200n, 0x10000n + 100n);
    b.err('EADDRINUSE', IOMMU_TEST_CMD, IommuTestCmdCreateAccess, { op: IOMMU_TEST_OP_CREATE_ACCESS, id: ioas, flags: NEEDS_PIN });
    b.fds.close(plain);
  });

  test('the ACCESS holds the context: closing /dev/iommu first keeps every object until the access fd closes', () => {
    const b = new Bin();
    const ioas = b.ioas();
    b.map(ioas, b.buf, 4n * PAGE, 0x10000n);
    const fd = b.createAccess(ioas);
    b.pin(fd, 0x10000n, PAGE);
    b.dev.close();
    assert.equal(b.dev.ctx.released, false);
    assert.equal(b.dev.ctx.objects.count, 2);
    assert.equal(b.pinCount(b.buf), 1);
    b.fds.close(fd);
    assert.equal(b.dev.ctx.released, true);
    assert.equal(b.dev.ctx.objects.count, 0);
    assert.equal(b.pinCount(b.buf), 0);
  });

  test('a bad fd, a closed fd or a file that is not an access handle is EBADFD for every access op', () => {
    const b = new Bin();
    const ioas = b.ioas();
    const fd = b.createAccess(ioas);
    b.fds.close(fd);
    const fault = b.ok(IOMMU_FAULT_QUEUE_ALLOC, IommuFaultAlloc, {}).outFaultFd;
    for (const bad of [fd, 77, fault]) {
      assert.equal(b.pages(bad, 0n, PAGE).errno, Errno.EBADFD);
      assert.equal(b.unpin(bad, 0), Errno.EBADFD);
      assert.equal(b.rw(bad, 0n, 8n, b.buf), Errno.EBADFD);
      assert.equal(b.replace(bad, ioas), Errno.EBADFD);
    }
    b.fds.close(fault);
  });
});

describe('creation failing at the write-back (through the syscall layer)', () => {
  test('CREATE_ACCESS and FAULT_QUEUE_ALLOC leave no fd, no object and no context reference behind', () => {
    const m = new SimMachine();
    const p = m.spawn();
    const sys = new SimSyscalls(p);
    const f = sys.open();
    const at = p.mapAnonymous(PAGE);
    const ioasCmd = new Uint8Array(IommuIoasAlloc.size);
    IommuIoasAlloc.encode(IommuIoasAlloc.make({ size: IommuIoasAlloc.size }), ioasCmd, 0);
    p.writeMem(at, ioasCmd);
    assert.equal(sys.ioctl(f, IOMMU_IOAS_ALLOC, at).ret, 0);
    const ro = p.mapAnonymous(PAGE);
    const create = new Uint8Array(IommuTestCmdCreateAccess.size);
    IommuTestCmdCreateAccess.encode(IommuTestCmdCreateAccess.make({ size: 72, op: IOMMU_TEST_OP_CREATE_ACCESS, id: 1, flags: NEEDS_PIN }), create, 0);
    p.writeMem(ro, create);
    const fault = new Uint8Array(IommuFaultAlloc.size);
    IommuFaultAlloc.encode(IommuFaultAlloc.make({ size: IommuFaultAlloc.size }), fault, 0);
    p.writeMem(ro + 128n, fault);
    p.mprotect(ro, PAGE, 1);
    assert.equal(sys.ioctl(f, IOMMU_TEST_CMD, ro).errno, Errno.EFAULT);
    assert.equal(sys.ioctl(f, IOMMU_FAULT_QUEUE_ALLOC, ro + 128n).errno, Errno.EFAULT);
    assert.equal(sys.get(4), undefined, 'the fd numbers were given back');
    const ctx = sys.file(f)!.ctx;
    assert.equal(ctx.objects.count, 1);
    assert.equal(ctx.fileRefs, 1);
    sys.close(f);
    assert.equal(ctx.released, true);
  });
});

describe('ACCESS_PAGES / DESTROY_ACCESS_PAGES', () => {
  function setup() {
    const b = new Bin();
    const ioas = b.ioas();
    b.map(ioas, b.buf, 16n * PAGE, 0x100000n);
    const fd = b.createAccess(ioas);
    return { b, ioas, fd };
  }

  test('length above 16 MiB is ENOMEM before flags and fd are looked at', () => {
    const { b } = setup();
    assert.equal(b.pages(999, 0n, 16n * 1024n * 1024n + 1n, { flags: 0x80 }).errno, Errno.ENOMEM);
    assert.equal(b.pages(999, 0n, 8n, { flags: 0x80 }).errno, Errno.EOPNOTSUPP);
    assert.equal(b.pages(999, 0n, 8n).errno, Errno.EBADFD);
  });

  test('an access without NEEDS_PIN_PAGES cannot pin (EOPNOTSUPP)', () => {
    const { b, ioas } = setup();
    const plain = b.createAccess(ioas, 0);
    assert.equal(b.pages(plain, 0x100000n, PAGE).errno, Errno.EOPNOTSUPP);
  });

  test('item ids count from 0 per access; pins are per container: one pin per page however often it is pinned', () => {
    const { b, ioas, fd } = setup();
    assert.equal(b.pin(fd, 0x100000n, 2n * PAGE, { uptr: b.buf }), 0);
    assert.equal(b.pin(fd, 0x100000n, 2n * PAGE), 1, 'the identical interval again');
    assert.equal(b.pin(fd, 0x101000n, 3n * PAGE, { uptr: b.buf + PAGE, flags: MOCK_FLAGS_ACCESS_WRITE }), 2);
    const other = b.createAccess(ioas);
    assert.equal(b.pin(other, 0x100000n, PAGE), 0, 'a second access starts at 0');
    assert.equal(b.checkRefs(b.buf, 4n * PAGE, 1), 0);
    assert.equal(b.checkRefs(b.buf + 4n * PAGE, PAGE, 0), 0);
    const pages = getIoas(b.dev.ctx, ioas).iopt.areas.firstIntersecting(0x100000n, 0x100000n)!.pages;
    assert.deepEqual(
      accessIntervals(pages).sort((x, y) => x.first - y.first || x.last - y.last),
      [
        { first: 0, last: 0, users: 1 },
        { first: 0, last: 1, users: 2 },
        { first: 1, last: 3, users: 1 },
      ],
    );
    assert.equal(b.unpin(fd, 0), 0);
    assert.equal(b.unpin(fd, 0), Errno.ENOENT, 'an item goes once');
    assert.equal(b.unpin(fd, 1), 0);
    assert.equal(b.pinCount(b.buf), 1, 'still pinned by the other access');
    assert.equal(b.unpin(fd, 2), 0);
    assert.equal(b.pinCount(b.buf + PAGE), 0);
    b.fds.close(other);
    assert.equal(b.checkRefs(b.buf, 16n * PAGE, 0), 0);
  });

  test('the page comparison with uptr: EBADE on a mismatch, and the pin is undone', () => {
    const { b, fd } = setup();
    assert.equal(b.pages(fd, 0x100000n, PAGE, { uptr: b.buf + PAGE }).errno, Errno.EBADE);
    assert.equal(b.pinCount(b.buf), 0);
    assert.equal(b.pages(fd, 0x100000n, PAGE, { uptr: 0x10n }).errno, Errno.EFAULT, 'an unmapped uptr faults');
    assert.equal(b.pin(fd, 0x100000n, PAGE, { uptr: b.buf }), 0, 'failed attempts consumed no item id');
  });

  test('kAPI errno order: EINVAL length 0, EOVERFLOW, ENOENT holes, EINVAL misaligned, EPERM protection', () => {
    const { b, ioas, fd } = setup();
    assert.equal(b.pages(fd, 0x100000n, 0n).errno, Errno.EINVAL);
    assert.equal(b.pages(fd, U64_MAX - 10n, 100n).errno, Errno.EOVERFLOW);
    assert.equal(b.pages(fd, 0x200000n, PAGE).errno, Errno.ENOENT);
    assert.equal(b.pages(fd, 0x10f000n, 2n * PAGE).errno, Errno.ENOENT, 'runs off the end of the mapping');
    assert.equal(b.pinCount(b.buf + 15n * PAGE), 0, 'the part that was pinned is undone');
    assert.equal(b.pages(fd, 0x100010n, PAGE).errno, Errno.EINVAL, 'not at a page boundary');
    const ro = b.p.mapAnonymous(PAGE);
    b.map(ioas, ro, PAGE, 0x300000n, IOMMU_IOAS_MAP_READABLE);
    assert.equal(b.pages(fd, 0x300000n, PAGE, { flags: MOCK_FLAGS_ACCESS_WRITE }).errno, Errno.EPERM);
    assert.equal(b.pin(fd, 0x300000n, PAGE), 0);
    const wo = b.p.mapAnonymous(PAGE);
    b.map(ioas, wo, PAGE, 0x400000n, IOMMU_IOAS_MAP_WRITEABLE);
    assert.equal(b.pages(fd, 0x400000n, PAGE).errno, Errno.EPERM, 'a read pin needs READABLE');
  });

  test('pins span contiguous areas of different containers', () => {
    const { b, ioas, fd } = setup();
    const other = b.p.mapAnonymous(2n * PAGE);
    b.map(ioas, other, 2n * PAGE, 0x110000n);
    const id = b.pin(fd, 0x10f000n, 3n * PAGE);
    assert.equal(b.pinCount(b.buf + 15n * PAGE), 1);
    assert.equal(b.pinCount(other + PAGE), 1);
    assert.equal(b.unpin(fd, id), 0);
    assert.equal(b.pinCount(other), 0);
  });

  test('an unmapped mm makes the pin EFAULT (pages are only pinned now: lazy)', () => {
    const { b, fd } = setup();
    b.p.munmap(b.buf, PAGE);
    assert.equal(b.pages(fd, 0x100000n, PAGE).errno, Errno.EFAULT);
    assert.equal(b.pin(fd, 0x101000n, PAGE), 0);
  });

  test('SYZ converts the IOVA from {nth area, offset}', () => {
    const { b, ioas, fd } = setup();
    const second = b.p.mapAnonymous(PAGE);
    b.map(ioas, second, PAGE, 0x500000n);
    b.pin(fd, 1n, PAGE, { flags: MOCK_FLAGS_ACCESS_SYZ, uptr: second });
    assert.equal(b.pinCount(second), 1);
    b.pin(fd, (PAGE << 32n) | 0n, PAGE, { flags: MOCK_FLAGS_ACCESS_SYZ, uptr: b.buf + PAGE });
    assert.equal(b.pinCount(b.buf + PAGE), 1);
    assert.equal(b.pages(fd, 7n, PAGE, { flags: MOCK_FLAGS_ACCESS_SYZ }).errno, Errno.ENOENT, 'no 8th area: IOVA 0');
  });
});

describe('UNMAP while an access holds pins (§3.9 step 4, §7 item 21)', () => {
  test('the access is told to unpin, the unmap succeeds, the item is gone afterwards (ENOENT)', () => {
    const b = new Bin();
    const ioas = b.ioas();
    const lo = APERTURE;
    const hi = APERTURE + 0x100000n;
    b.map(ioas, b.buf, 4n * PAGE, lo);
    b.map(ioas, b.buf + 4n * PAGE, 4n * PAGE, hi);
    const fd = b.createAccess(ioas);
    const kept = b.pin(fd, hi, PAGE);
    const item = b.pin(fd, lo + PAGE, 2n * PAGE);
    const { stdevId, errno } = b.mockDomain(ioas);
    assert.equal(errno, 0);
    assert.equal(b.checkRefs(b.buf, 8n * PAGE, 1), 0, 'domain and access share one pin');
    assert.equal(b.unmap(ioas, lo, 4n * PAGE).errno, 0);
    assert.equal(b.unpin(fd, item), Errno.ENOENT);
    assert.equal(b.unpin(fd, kept), 0, 'items outside the range stay');
    assert.equal(b.checkRefs(b.buf, 4n * PAGE, 0), 0);
    assert.equal(b.checkRefs(b.buf + 4n * PAGE, 4n * PAGE, 1), 0, 'the domain still pins the rest');
    assert.equal(b.destroy(stdevId), 0);
    assert.equal(b.checkRefs(b.buf, 8n * PAGE, 0), 0);
  });

  test('kAPI: pins of an area being unmapped fail EINVAL; an access that never unpins makes UNMAP EDEADLK', () => {
    const m = new SimMachine();
    const p = m.spawn();
    const fd = new Iommufd(p);
    const buf = p.mapAnonymous(4n * PAGE);
    const ioas = fd.ioasAlloc();
    fd.ioasMap({ ioasId: ioas, userVa: buf, length: 4n * PAGE, iova: 0x100000n });
    const seen: string[] = [];
    let calls = 0;
    const access = accessCreate(fd.ctx, {
      needsPinPages: true,
      unmap: (iova, length) => {
        calls++;
        if (calls === 1) {
          const err = throwsErrno(() => access.pinPages(iova, PAGE, 0), 'EINVAL', /being unmapped/);
          seen.push(err.errnoName);
          throwsErrno(() => access.rw(iova, new Uint8Array(4), 0, null), 'EINVAL', /being unmapped/);
        }
      },
    });
    access.attach(ioas);
    access.pinPages(0x100000n, PAGE, IOMMUFD_ACCESS_RW_WRITE);
    throwsErrno(() => fd.ioasUnmap(ioas, 0x100000n, 4n * PAGE), 'EDEADLK');
    assert.equal(calls, 101);
    assert.deepEqual(seen, ['EINVAL']);
    access.unpinPages(0x100000n, PAGE);
    assert.equal(fd.ioasUnmap(ioas, 0x100000n, 4n * PAGE), 4n * PAGE);
    accessDestroy(access);
    assert.equal(fd.ctx.objects.peek(access.id), undefined);
  });
});

describe('ACCESS_RW', () => {
  function setup() {
    const b = new Bin();
    const ioas = b.ioas();
    b.map(ioas, b.buf, 8n * PAGE, 0x100000n);
    const fd = b.createAccess(ioas, 0);
    const tmp = b.p.mapAnonymous(4n * PAGE);
    return { b, ioas, fd, tmp };
  }

  for (const [name, flags] of [
    ['fast path (same mm)', 0],
    ['slow path', MOCK_ACCESS_RW_SLOW_PATH],
  ] as const) {
    test(`${name}: reads and writes at any alignment, single and multi page`, () => {
      const { b, fd, tmp } = setup();
      for (const [off, len] of [
        [0n, 1n],
        [4096n - 50n, 100n],
        [123n, 3n * PAGE + 7n],
      ] as const) {
        assert.equal(b.rw(fd, 0x100000n + off, len, tmp, flags), 0);
        assert.deepEqual(b.p.readMem(tmp, Number(len)), b.p.readMem(b.buf + off, Number(len)));
        const data = new Uint8Array(Number(len)).map((_, i) => (i * 13 + 5) & 0xff);
        b.p.writeMem(tmp, data);
        assert.equal(b.rw(fd, 0x100000n + off, len, tmp, flags | MOCK_ACCESS_RW_WRITE), 0);
        assert.deepEqual(b.p.readMem(b.buf + off, Number(len)), data);
      }
      assert.equal(b.pinCount(b.buf), 0, 'rw never leaves pins');
    });
  }

  test('errno order: ENOMEM > 16 MiB, EOPNOTSUPP, EBADFD, EFAULT of the source, EINVAL length 0, EOVERFLOW, ENOENT, EPERM', () => {
    const { b, ioas, fd, tmp } = setup();
    assert.equal(b.rw(99, 0n, 16n * 1024n * 1024n + 1n, tmp, 0x80), Errno.ENOMEM);
    assert.equal(b.rw(99, 0n, 8n, tmp, MOCK_FLAGS_ACCESS_WRITE << 1), Errno.EOPNOTSUPP);
    assert.equal(b.rw(99, 0n, 8n, tmp), Errno.EBADFD);
    assert.equal(b.rw(fd, 0x100000n, 8n, 0x10n, MOCK_ACCESS_RW_WRITE), Errno.EFAULT, 'the write source is read first');
    assert.equal(b.rw(fd, 0x900000n, 8n, 0x10n, MOCK_ACCESS_RW_WRITE), Errno.EFAULT, 'even before the IOVA is looked at');
    assert.equal(b.rw(fd, 0x100000n, 0n, tmp), Errno.EINVAL);
    assert.equal(b.rw(fd, U64_MAX - 2n, 8n, tmp), Errno.EOVERFLOW);
    assert.equal(b.rw(fd, 0x107ffcn, 8n, tmp), Errno.ENOENT);
    assert.equal(b.rw(fd, 0x100000n, 8n, 0x10n), Errno.EFAULT, 'the read destination faults last');
    const ro = b.p.mapAnonymous(PAGE);
    b.map(ioas, ro, PAGE, 0x300000n, IOMMU_IOAS_MAP_READABLE);
    assert.equal(b.rw(fd, 0x300000n, 8n, tmp, MOCK_ACCESS_RW_WRITE), Errno.EPERM);
    assert.equal(b.rw(fd, 0x300000n, 8n, tmp), 0);
  });

  test('SYZ: the IOVA is area n + offset', () => {
    const { b, fd, tmp } = setup();
    assert.equal(b.rw(fd, (100n << 32n) | 0n, 16n, tmp, MOCK_FLAGS_ACCESS_SYZ), 0);
    assert.deepEqual(b.p.readMem(tmp, 16), b.p.readMem(b.buf + 100n, 16));
  });

  test('typed door: testAccessRw reads and writes', () => {
    const m = new SimMachine();
    const p = m.spawn();
    const fd = new Iommufd(p);
    const buf = p.mapAnonymous(2n * PAGE);
    const ioas = fd.ioasAlloc();
    fd.ioasMap({ ioasId: ioas, userVa: buf, length: 2n * PAGE, iova: 0x10000n });
    const h = fd.testCreateAccess(ioas, NEEDS_PIN);
    fd.testAccessRw(h, 0x10ffen, { data: Uint8Array.of(1, 2, 3, 4) });
    assert.deepEqual(p.readMem(buf + 0xffen, 4), Uint8Array.of(1, 2, 3, 4));
    assert.deepEqual(fd.testAccessRw(h, 0x10fffn, { length: 2 }, MOCK_ACCESS_RW_SLOW_PATH), Uint8Array.of(2, 3));
    const item = fd.testAccessPages(h, 0x10000n, PAGE, { uptr: buf });
    assert.equal(item, 0);
    fd.testDestroyAccessPages(h, item);
    fd.closeFd(h);
  });
});

describe('ACCESS_REPLACE_IOAS', () => {
  test('ENOENT for a bad IOAS, same IOAS is a no-op, a move unpins in the old IOAS and moves the IOAS reference', () => {
    const b = new Bin();
    const a = b.ioas();
    const c = b.ioas();
    b.map(a, b.buf, 4n * PAGE, 0x100000n);
    b.map(c, b.buf, 4n * PAGE, 0x100000n);
    const fd = b.createAccess(a);
    const item = b.pin(fd, 0x100000n, PAGE);
    assert.equal(b.replace(fd, 99), Errno.ENOENT);
    assert.equal(b.replace(fd, a), 0);
    assert.equal(b.unpin(fd, item), 0, 'same IOAS: nothing was dropped');
    const item2 = b.pin(fd, 0x100000n, PAGE);
    assert.equal(b.replace(fd, c), 0);
    assert.equal(b.pinCount(b.buf), 0, 'the driver unpinned everything in the old IOAS');
    assert.equal(b.unpin(fd, item2), Errno.ENOENT);
    assert.equal(b.destroy(a), 0, 'the old IOAS is free');
    assert.equal(b.destroy(c), Errno.EBUSY);
    assert.equal(b.pin(fd, 0x100000n, PAGE), 2, 'pins go to the new IOAS');
    assert.equal(b.checkRefs(b.buf, PAGE, 1), 0);
    b.fds.close(fd);
    assert.equal(b.destroy(c), 0);
  });

  test('EADDRINUSE when the new IOAS has misaligned areas; EBUSY when its 65536 access slots are full', () => {
    const b = new Bin();
    const a = b.ioas();
    const c = b.ioas();
    b.map(c, b.buf + 8n, 100n, 0x100008n);
    const fd = b.createAccess(a);
    assert.equal(b.replace(fd, c), Errno.EADDRINUSE);
    const d = b.ioas();
    const iopt = getIoas(b.dev.ctx, d).iopt;
    const dummy = { iovaAlignment: 1n, notifyUnmap() {} };
    for (let i = 0; i < 0x10000; i++) iopt.accesses.set(i, dummy);
    assert.equal(b.replace(fd, d), Errno.EBUSY);
    iopt.accesses.clear();
    assert.equal(b.replace(fd, d), 0);
    b.fds.close(fd);
  });

  test('kAPI: replace of a detached access is ENOENT; attach twice is EINVAL', () => {
    const m = new SimMachine();
    const fd = new Iommufd(m.spawn());
    const ioas = fd.ioasAlloc();
    const access = accessCreate(fd.ctx, { needsPinPages: false });
    throwsErrno(() => access.replace(ioas), 'ENOENT');
    access.attach(ioas);
    throwsErrno(() => access.attach(ioas), 'EINVAL');
    access.detach();
    throwsErrno(() => access.pinPages(0n, PAGE, 0), 'EINVAL', /not created for pinning/);
    throwsErrno(() => access.rw(0n, new Uint8Array(1), 0, null), 'ENOENT');
    accessDestroy(access);
  });
});

describe('pins from another process (selftest fork_present / fork_gone)', () => {
  function forked() {
    const b = new Bin();
    const ioas = b.ioas();
    const child = b.p.fork();
    const cbuf = child.mapAnonymous(4n * PAGE);
    const data = new Uint8Array(Number(4n * PAGE)).map((_, i) => (i * 3) & 0xff);
    child.writeMem(cbuf, data);
    // The child maps its own buffer into the parent's iommufd (the fd was inherited).
    const scratch = child.mapAnonymous(PAGE);
    const cmd = IommuIoasMap.make({
      size: IommuIoasMap.size,
      ioasId: ioas,
      userVa: cbuf,
      length: 4n * PAGE,
      iova: APERTURE,
      flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
    });
    const bytes = new Uint8Array(IommuIoasMap.size);
    IommuIoasMap.encode(cmd, bytes, 0);
    child.writeMem(scratch, bytes);
    assert.equal(iommufdIoctl(b.dev.ctx, child, IOMMU_IOAS_MAP, scratch, child.mm, b.fds), 0);
    return { b, ioas, child, data, cbuf };
  }

  test('fork_present: the parent reads and writes the child memory through an access', () => {
    const { b, ioas, child, data, cbuf } = forked();
    const fd = b.createAccess(ioas, 0);
    const tmp = b.p.mapAnonymous(4n * PAGE);
    assert.equal(b.rw(fd, APERTURE + 10n, 20n, tmp), 0, 'one page: a short-term reference in the child');
    assert.deepEqual(b.p.readMem(tmp, 20), data.slice(10, 30));
    assert.equal(b.rw(fd, APERTURE, 4n * PAGE, tmp), 0, 'multi page: pinned just for the copy');
    assert.deepEqual(b.p.readMem(tmp, Number(4n * PAGE)), data);
    b.p.writeMem(tmp, Uint8Array.of(9, 9));
    assert.equal(b.rw(fd, APERTURE + PAGE, 2n, tmp, MOCK_ACCESS_RW_WRITE), 0);
    assert.deepEqual(child.readMem(cbuf + PAGE, 2), Uint8Array.of(9, 9));
    assert.equal(b.pinCount(b.buf), 0);
    b.fds.close(fd);
  });

  test('fork_gone: with no domain the pages cannot be pinned any more (EFAULT); with a domain the data stays readable', () => {
    {
      const { b, ioas, child } = forked();
      child.exit();
      const fd = b.createAccess(ioas);
      const tmp = b.p.mapAnonymous(4n * PAGE);
      assert.equal(b.rw(fd, APERTURE, 2n * PAGE, tmp), Errno.EFAULT);
      assert.equal(b.rw(fd, APERTURE, 8n, tmp), Errno.EFAULT);
      assert.equal(b.pages(fd, APERTURE, PAGE).errno, Errno.EFAULT);
      assert.equal(b.mockDomain(ioas).errno, Errno.EFAULT);
      b.fds.close(fd);
    }
    {
      const { b, ioas, child, data } = forked();
      const fd = b.createAccess(ioas);
      assert.equal(b.mockDomain(ioas).errno, 0, 'pinned while the child lives');
      child.exit();
      assert.equal(b.mockDomain(ioas).errno, 0, 'a second domain copies from the first');
      const tmp = b.p.mapAnonymous(4n * PAGE);
      assert.equal(b.rw(fd, APERTURE + 5n, 8n, tmp), 0);
      assert.deepEqual(b.p.readMem(tmp, 8), data.slice(5, 13));
      assert.equal(b.rw(fd, APERTURE, 4n * PAGE, tmp, MOCK_ACCESS_RW_SLOW_PATH), 0);
      assert.deepEqual(b.p.readMem(tmp, Number(4n * PAGE)), data);
      const item = b.pin(fd, APERTURE, 2n * PAGE);
      assert.equal(b.unpin(fd, item), 0);
      b.fds.close(fd);
    }
  });
});

describe('ACCESS_RW slow path: the batch is gathered before it is copied', () => {
  /** 3 pages at 0x200000 whose user pages are page 0 = 0x11, page 1 = 0x22 (faulted first, so not after page 0 physically), page 2 unmapped. */
  function setup() {
    const b = new Bin();
    const ioas = b.ioas();
    const va = b.p.mapAnonymous(3n * PAGE);
    b.p.writeMem(va + PAGE, new Uint8Array(Number(PAGE)).fill(0x22));
    b.p.writeMem(va, new Uint8Array(Number(PAGE)).fill(0x11));
    b.map(ioas, va, 3n * PAGE, 0x200000n);
    b.p.munmap(va + 2n * PAGE, PAGE);
    const fd = b.createAccess(ioas, 0);
    const src = b.p.mapAnonymous(3n * PAGE);
    b.p.writeMem(src, new Uint8Array(Number(3n * PAGE)).fill(0x77));
    return { b, va, fd, src };
  }

  test('a page that cannot be pinned fails the write before any byte is copied', () => {
    const { b, va, fd, src } = setup();
    assert.equal(b.rw(fd, 0x200000n + 0x800n, 2n * PAGE, src, MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH), Errno.EFAULT);
    assert.deepEqual(b.p.readMem(va + 0x800n, 0x800), new Uint8Array(0x800).fill(0x11));
    assert.deepEqual(b.p.readMem(va + PAGE, Number(PAGE)), new Uint8Array(Number(PAGE)).fill(0x22));
    assert.equal(b.pinCount(va), 0);
    assert.equal(b.pinCount(va + PAGE), 0);
  });

  test('with a one-run batch (SET_TEMP_MEMORY_LIMIT 12) the batches before the failing one are copied', () => {
    const { b, va, fd, src } = setup();
    const saved = selftestKnobs.memoryLimit;
    selftestKnobs.memoryLimit = 12;
    try {
      assert.equal(b.rw(fd, 0x200000n + 0x800n, 2n * PAGE, src, MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH), Errno.EFAULT);
    } finally {
      selftestKnobs.memoryLimit = saved;
    }
    assert.deepEqual(b.p.readMem(va + 0x800n, 0x800), new Uint8Array(0x800).fill(0x77));
    assert.deepEqual(b.p.readMem(va + PAGE, Number(PAGE)), new Uint8Array(Number(PAGE)).fill(0x22));
    assert.equal(b.pinCount(va), 0);
    assert.equal(b.pinCount(va + PAGE), 0);
  });
});
