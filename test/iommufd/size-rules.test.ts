/**
 * The dispatcher's framing rules (reference §2.1, §7 items 6-7) for every ioctl number the
 * iommufd table holds, through the binary door.
 *
 * Oracle: test/oracle/transcripts/size-min.txt, size-tail.txt, size-fault.txt, ioctl-numbers.txt.
 * Each command is sent with the transcripts' baseline fields (ids 0x7fff, which do not exist, or an
 * unknown op/flag), so the "OK path" is the handler's own first refusal: a size-rule failure
 * cannot be confused with it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DevIommu } from '../../src/api/dev-iommu.js';
import type { ErrnoName } from '../../src/lib/errno.js';
import { SimMachine } from '../../src/mm/machine.js';
import type { SimProcess } from '../../src/mm/process.js';
import {
  IOMMU_DESTROY,
  IOMMU_IOAS_ALLOC,
  IOMMUFD_IOCTLS,
  _IO,
  _IOR,
  _IOW,
  _IOWR,
  type IommufdIoctlName,
} from '../../src/uapi/ioctl.js';
import { IommuDestroy, IommuIoasAlloc } from '../../src/uapi/iommufd.js';
import type { StructDef } from '../../src/uapi/struct.js';
import { PAGE, checkInvariants, expectIoctl, getStruct, putStruct } from './helpers.js';

checkInvariants();

/** Handlers the emulator does not have yet: the kernel's answer past the size rules is pinned as todo. */
const UNIMPLEMENTED = new Set<IommufdIoctlName>([]);

/** Baseline fields and the errno they give once the size rules pass (size-min.txt "size=sizeof"). */
const BASELINE: Record<IommufdIoctlName, { fields: Record<string, number | bigint>; errno: ErrnoName }> = {
  IOMMU_DESTROY: { fields: { id: 0x7fff }, errno: 'ENOENT' },
  IOMMU_IOAS_ALLOC: { fields: { flags: 1 }, errno: 'EOPNOTSUPP' },
  IOMMU_IOAS_ALLOW_IOVAS: { fields: { ioasId: 0x7fff }, errno: 'ENOENT' },
  IOMMU_IOAS_COPY: { fields: { flags: 6, dstIoasId: 0x7fff, srcIoasId: 0x7fff, length: 0x1000n }, errno: 'ENOENT' },
  IOMMU_IOAS_IOVA_RANGES: { fields: { ioasId: 0x7fff }, errno: 'ENOENT' },
  IOMMU_IOAS_MAP: { fields: { flags: 6, ioasId: 0x7fff, length: 0x1000n }, errno: 'ENOENT' },
  IOMMU_IOAS_UNMAP: { fields: { ioasId: 0x7fff }, errno: 'ENOENT' },
  IOMMU_OPTION: { fields: { optionId: 0x63 }, errno: 'EOPNOTSUPP' },
  IOMMU_VFIO_IOAS: { fields: { op: 0x63 }, errno: 'EOPNOTSUPP' },
  IOMMU_HWPT_ALLOC: { fields: { devId: 0x7fff, ptId: 0x7fff }, errno: 'ENOENT' },
  IOMMU_GET_HW_INFO: { fields: { devId: 0x7fff }, errno: 'ENOENT' },
  IOMMU_HWPT_SET_DIRTY_TRACKING: { fields: { hwptId: 0x7fff }, errno: 'ENOENT' },
  IOMMU_HWPT_GET_DIRTY_BITMAP: { fields: { hwptId: 0x7fff }, errno: 'ENOENT' },
  IOMMU_HWPT_INVALIDATE: { fields: { hwptId: 0x7fff }, errno: 'ENOENT' },
  IOMMU_FAULT_QUEUE_ALLOC: { fields: { flags: 1 }, errno: 'EOPNOTSUPP' },
  IOMMU_TEST_CMD: { fields: { op: 0x7fff }, errno: 'EOPNOTSUPP' },
};

interface Rig {
  p: SimProcess;
  dev: DevIommu;
}

function rig(testKernel = true): Rig {
  const m = new SimMachine();
  const p = m.spawn();
  return { p, dev: new DevIommu(p, {}, { testKernel }) };
}

/** Two mapped pages with the second unmapped: returns the address of the first page's end. */
function pageEndBeforeHole(p: SimProcess): bigint {
  const a = p.mapAnonymous(2n * PAGE);
  p.munmap(a + PAGE, PAGE);
  return a + PAGE;
}

/** The struct bytes with `size` in the size word, followed by `tail`. */
function structBytes(def: StructDef, fields: Record<string, number | bigint>, size: number, tail: number[] = []): Uint8Array {
  const v = def.make({ ...fields, size } as never);
  const buf = new Uint8Array(def.size + tail.length);
  def.encode(v, buf, 0);
  buf.set(tail, def.size);
  return buf;
}

for (const op of IOMMUFD_IOCTLS) {
  const base = BASELINE[op.name];
  const def = op.struct as unknown as StructDef;
  const sizeofS = def.size;
  const todo = UNIMPLEMENTED.has(op.name) ? `${op.name} has no handler in the emulator yet` : undefined;
  const okErrno = base.errno;

  describe(`${op.name} (0x${op.cmd.toString(16)}): size rules`, () => {
    /** Write at a fresh page start and call. */
    function call(size: number, tail: number[] = []) {
      const r = rig();
      const a = r.p.mapAnonymous(2n * PAGE);
      r.p.writeMem(a, structBytes(def, base.fields, size, tail));
      return r.dev.ioctl(op.cmd, a);
    }

    test(`size = sizeof (${sizeofS}): the handler's answer ${okErrno} (size-min.txt "${op.name.replace('IOMMU_', '')} size=sizeof")`, { todo }, () => {
      expectIoctl(call(sizeofS), okErrno);
    });

    test(`size = min (${op.minSize}): the handler's answer ${okErrno} (size-min.txt "size=min")`, { todo }, () => {
      expectIoctl(call(op.minSize), okErrno);
    });

    test(`size = min - 1 (${op.minSize - 1}), 0 and 4: EINVAL naming both sizes (size-min.txt "size=min-1", "size=0", "size=4")`, () => {
      for (const size of [op.minSize - 1, 0, 4]) {
        expectIoctl(call(size), 'EINVAL', new RegExp(`size ${size} is below the minimum ${op.minSize}\\b`));
      }
    });

    test(`size = sizeof + 1 with a zero tail behaves as sizeof (size-tail.txt "sizeof+1 zero tail")`, { todo }, () => {
      expectIoctl(call(sizeofS + 1, [0]), okErrno);
    });

    test(`size = sizeof + 0x1000, all zero: as sizeof (size-tail.txt "sizeof+0x1000 zero")`, { todo }, () => {
      expectIoctl(call(sizeofS + 0x1000, new Array(0x1000).fill(0)), okErrno);
    });

    test(`bytes past size are never looked at (size-tail.txt "tail beyond size ignored")`, { todo }, () => {
      expectIoctl(call(sizeofS, [0xff, 0xff]), okErrno);
    });

    test(`non-zero tail: E2BIG naming sizeof and the byte (size-tail.txt "sizeof+1 tail 01", "sizeof+8 last tail byte 80")`, () => {
      expectIoctl(call(sizeofS + 1, [1]), 'E2BIG', new RegExp(`sizeof\\(struct ${def.name}\\) ${sizeofS} and byte ${sizeofS} of the tail is 0x1\\b`));
      expectIoctl(
        call(sizeofS + 8, [0, 0, 0, 0, 0, 0, 0, 0x80]),
        'E2BIG',
        new RegExp(`byte ${sizeofS + 7} of the tail is 0x80\\b`),
      );
    });

    test('NULL or unmapped arg: EFAULT reading the size word (size-fault.txt "NULL arg", "unmapped arg")', () => {
      const r = rig();
      expectIoctl(r.dev.ioctl(op.cmd, 0n), 'EFAULT', /size field at 0x0\b/);
      const hole = pageEndBeforeHole(r.p);
      expectIoctl(r.dev.ioctl(op.cmd, hole), 'EFAULT', new RegExp(`size field at 0x${hole.toString(16)}\\b`));
    });

    test('only 2 bytes readable: EFAULT (size-fault.txt "only 2 bytes readable")', () => {
      const r = rig();
      const end = pageEndBeforeHole(r.p);
      r.p.writeMem(end - 2n, structBytes(def, base.fields, sizeofS).subarray(0, 2));
      expectIoctl(r.dev.ioctl(op.cmd, end - 2n), 'EFAULT');
    });

    test('size word readable, rest not: min-1 is EINVAL (no copy yet), sizeof is EFAULT (size-fault.txt)', () => {
      const r = rig();
      const end = pageEndBeforeHole(r.p);
      r.p.writeMem(end - 4n, structBytes(def, base.fields, op.minSize - 1).subarray(0, 4));
      expectIoctl(r.dev.ioctl(op.cmd, end - 4n), 'EINVAL', new RegExp(`below the minimum ${op.minSize}\\b`));
      r.p.writeMem(end - 4n, structBytes(def, base.fields, sizeofS).subarray(0, 4));
      expectIoctl(r.dev.ioctl(op.cmd, end - 4n), 'EFAULT', new RegExp(`first ${sizeofS} bytes of struct ${def.name.replace(/[.]/g, '\\.')}`));
    });

    test('struct readable, tail not: EFAULT (size-fault.txt "struct readable, tail not")', () => {
      const r = rig();
      const end = pageEndBeforeHole(r.p);
      const at = end - BigInt(sizeofS);
      r.p.writeMem(at, structBytes(def, base.fields, sizeofS + 8));
      expectIoctl(r.dev.ioctl(op.cmd, at), 'EFAULT', new RegExp(`tail \\[${sizeofS}, ${sizeofS + 8}\\).*not readable`));
    });

    test('non-zero tail byte before the unreadable part: E2BIG (size-fault.txt "nonzero tail half readable")', () => {
      const r = rig();
      const end = pageEndBeforeHole(r.p);
      const at = end - BigInt(sizeofS) - 3n;
      r.p.writeMem(at, structBytes(def, base.fields, sizeofS + 8, [0, 0, 1]));
      expectIoctl(r.dev.ioctl(op.cmd, at), 'E2BIG', new RegExp(`byte ${sizeofS + 2} of the tail is 0x1\\b`));
    });

    test('other encodings of the same nr: ENOTTY after reading size, EFAULT with a NULL arg (ioctl-numbers.txt "_IOWR(0x3b,0x80,8)")', () => {
      const r = rig();
      const a = r.p.mapAnonymous(PAGE);
      r.p.writeMem(a, structBytes(def, base.fields, sizeofS));
      const nr = op.nr;
      for (const cmd of [_IOWR(0x3b, nr, sizeofS), _IOW(0x3b, nr, sizeofS), _IOR(0x3b, nr, sizeofS), _IO(0x3b, nr) | (8 << 16), _IO(0x3c, nr)]) {
        expectIoctl(r.dev.ioctl(cmd, a), 'ENOTTY', new RegExp(`0x${cmd.toString(16)}\\b`));
        expectIoctl(r.dev.ioctl(cmd, 0n), 'EFAULT');
      }
    });
  });
}

describe('size rules on the success path', () => {
  test('IOAS_ALLOC with size sizeof+4 and a zero tail succeeds; the tail is not written', () => {
    const r = rig();
    const a = r.p.mapAnonymous(PAGE);
    putStruct(r.p, a, IommuIoasAlloc, { size: 16, outIoasId: 0x5555 }, new Uint8Array(4));
    expectIoctl(r.dev.ioctl(IOMMU_IOAS_ALLOC, a), 'OK');
    assert.deepEqual(getStruct(r.p, a, IommuIoasAlloc), { size: 16, flags: 0, outIoasId: 1 });
    assert.deepEqual([...r.p.readMem(a + 12n, 4)], [0, 0, 0, 0]);
  });

  test('DESTROY with size 9 and a zero tail destroys (ioas-alloc.txt "IOAS_ALLOC size=16 zero tail" is the same rule)', () => {
    const r = rig();
    const a = r.p.mapAnonymous(PAGE);
    putStruct(r.p, a, IommuIoasAlloc, {});
    expectIoctl(r.dev.ioctl(IOMMU_IOAS_ALLOC, a), 'OK');
    putStruct(r.p, a, IommuDestroy, { size: 9, id: 1 }, new Uint8Array(1));
    expectIoctl(r.dev.ioctl(IOMMU_DESTROY, a), 'OK');
    expectIoctl(r.dev.ioctl(IOMMU_DESTROY, a), 'ENOENT');
  });

  test('after every wrong encoding of DESTROY, the IOAS is still there (ioctl-numbers.txt "IOAS still there after the above")', () => {
    const r = rig();
    const a = r.p.mapAnonymous(PAGE);
    putStruct(r.p, a, IommuIoasAlloc, {});
    expectIoctl(r.dev.ioctl(IOMMU_IOAS_ALLOC, a), 'OK');
    putStruct(r.p, a, IommuDestroy, { id: 1 });
    for (const cmd of [_IOWR(0x3b, 0x80, 8), _IOW(0x3b, 0x80, 8), _IOR(0x3b, 0x80, 8), 0x83b80, _IO(0x3c, 0x80)]) {
      expectIoctl(r.dev.ioctl(cmd, a), 'ENOTTY');
    }
    expectIoctl(r.dev.ioctl(IOMMU_DESTROY, a), 'OK');
  });
});

describe('numbers outside the table', () => {
  test('empty slots 0x8f and 0x9f read the size word first: EFAULT with NULL, ENOTTY otherwise (ioctl-numbers.txt "nr 0x8f", "nr 0x9f")', () => {
    const r = rig();
    const a = r.p.mapAnonymous(PAGE);
    putStruct(r.p, a, IommuDestroy, { id: 1 });
    for (const nr of [0x8f, 0x90, 0x9f]) {
      expectIoctl(r.dev.ioctl(_IO(0x3b, nr), a), 'ENOTTY', new RegExp(`0x3b${nr.toString(16)}\\b`));
      expectIoctl(r.dev.ioctl(_IO(0x3b, nr), 0n), 'EFAULT', /size field/);
    }
  });

  test('nr below 0x80 or past 0xa0 goes to the VFIO handler without touching memory: ENOTTY even with NULL (ioctl-numbers.txt "nr 0x00", "nr 0x7f", "nr 0x63", "nr 0xa1", "nr 0xff")', () => {
    const r = rig();
    const a = r.p.mapAnonymous(PAGE);
    putStruct(r.p, a, IommuDestroy, { id: 1 });
    for (const nr of [0x00, 0x7f, 0x63, 0xa1, 0xff]) {
      expectIoctl(r.dev.ioctl(_IO(0x3b, nr), a), 'ENOTTY');
      expectIoctl(r.dev.ioctl(_IO(0x3b, nr), 0n), 'ENOTTY');
      expectIoctl(r.dev.ioctl(_IO(0x3b, nr), 0xdead_0000_0000n), 'ENOTTY');
    }
  });

  test('_IOWR-encoded TEST_CMD: EFAULT with NULL, ENOTTY otherwise (ioctl-numbers.txt "_IOWR TEST_CMD")', () => {
    const r = rig();
    const a = r.p.mapAnonymous(PAGE);
    putStruct(r.p, a, IommuDestroy, { id: 1 });
    expectIoctl(r.dev.ioctl(_IOWR(0x3b, 0xa0, 72), a), 'ENOTTY');
    expectIoctl(r.dev.ioctl(_IOWR(0x3b, 0xa0, 72), 0n), 'EFAULT');
  });

  test('a kernel without CONFIG_IOMMUFD_TEST: the table ends at 0x8e, so 0x8f-0xa0 never read memory (§2.1 step 1)', () => {
    const r = rig(false);
    for (const nr of [0x8f, 0x9f, 0xa0]) expectIoctl(r.dev.ioctl(_IO(0x3b, nr), 0n), 'ENOTTY');
    // 0x8e is still inside the table: the size word is read.
    expectIoctl(r.dev.ioctl(_IO(0x3b, 0x8e), 0n), 'EFAULT');
  });
});
