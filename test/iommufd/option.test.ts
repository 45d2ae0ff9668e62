/**
 * IOMMU_OPTION (reference §2.9, §3.12, §3.13, §7.23, §7.39).
 * Oracle: test/oracle/transcripts/option-rlimit.txt (run as root), option-huge-pages.txt.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { option } from '../../src/iommufd/main.js';
import { AccountMode } from '../../src/mm/accounting.js';
import { PROT_READ } from '../../src/mm/mman.js';
import { IOMMU_OPTION } from '../../src/uapi/ioctl.js';
import { IommuOption } from '../../src/uapi/iommufd.js';
import { PAGE, binWorld, checkInvariants, expectIoctl, ioasOf, ioctlStruct, throwsErrno, world } from './helpers.js';

checkInvariants();

const RLIMIT = 0;
const HUGE = 1;
const SET = 0;
const GET = 1;

function setup(caps: ('CAP_SYS_RESOURCE' | 'CAP_IPC_LOCK')[] = ['CAP_SYS_RESOURCE']) {
  const w = world({ caps });
  const opt = (f: Partial<ReturnType<typeof IommuOption.make>>) => w.fd.call(option, IommuOption.make({ size: 24, ...f })).cmd.val64;
  return { ...w, opt };
}

test('RLIMIT_MODE: GET/SET on an empty context, bad values and ops (option-rlimit.txt "RLIMIT_MODE GET fresh" .. "option_id 0xffffffff")', () => {
  const { fd, opt } = setup();
  assert.equal(fd.getRlimitModeMm(), false);
  fd.setRlimitModeMm(true);
  assert.equal(fd.getRlimitModeMm(), true);
  throwsErrno(() => opt({ optionId: RLIMIT, op: SET, val64: 2n }), 'EINVAL', /not 2\b/);
  fd.setRlimitModeMm(false);
  assert.equal(fd.getRlimitModeMm(), false);
  throwsErrno(() => opt({ optionId: RLIMIT, op: GET, objectId: 1 }), 'EOPNOTSUPP', /object_id must be 0, not 1\b/);
  throwsErrno(() => opt({ optionId: RLIMIT, op: 2 }), 'EOPNOTSUPP', /unknown op 2\b/);
  throwsErrno(() => opt({ optionId: RLIMIT, op: 0xffff }), 'EOPNOTSUPP', /65535/);
  throwsErrno(() => opt({ optionId: RLIMIT, op: GET, reserved: 1 }), 'EOPNOTSUPP', /__reserved is 0x1\b/);
  throwsErrno(() => opt({ optionId: 2, op: GET }), 'EOPNOTSUPP', /option_id 2\b/);
  throwsErrno(() => opt({ optionId: 0xffffffff, op: GET }), 'EOPNOTSUPP', /4294967295/);
});

test('RLIMIT_MODE SET with any object is EBUSY, before the value check; GET still works (option-rlimit.txt "RLIMIT_MODE SET 1 with an object" .. "RLIMIT_MODE SET 0")', () => {
  const { fd, opt } = setup();
  const id = fd.ioasAlloc();
  throwsErrno(() => fd.setRlimitModeMm(true), 'EBUSY', /has 1\b/);
  throwsErrno(() => opt({ optionId: RLIMIT, op: SET, val64: 7n }), 'EBUSY');
  throwsErrno(() => fd.setRlimitModeMm(false), 'EBUSY');
  assert.equal(fd.getRlimitModeMm(), false);
  fd.destroy(id);
  fd.setRlimitModeMm(true);
  assert.equal(fd.getRlimitModeMm(), true);
  fd.setRlimitModeMm(false);
});

test('RLIMIT_MODE SET needs CAP_SYS_RESOURCE (EPERM, before EBUSY); GET does not (§2.9 step 3)', () => {
  const { fd } = setup([]);
  throwsErrno(() => fd.setRlimitModeMm(true), 'EPERM', /CAP_SYS_RESOURCE.*pid 100\b/);
  fd.ioasAlloc();
  throwsErrno(() => fd.setRlimitModeMm(true), 'EPERM');
  assert.equal(fd.getRlimitModeMm(), false);
});

test('the accounting mode is captured per MAP: CAP_IPC_LOCK -> none, mm mode -> mm, else user (§3.12, §7.38)', () => {
  const user = setup();
  const mm = setup();
  const none = setup(['CAP_SYS_RESOURCE', 'CAP_IPC_LOCK']);
  mm.fd.setRlimitModeMm(true);
  none.fd.setRlimitModeMm(true);
  for (const [w, mode] of [
    [user, AccountMode.USER],
    [mm, AccountMode.MM],
    [none, AccountMode.NONE],
  ] as const) {
    const id = w.fd.ioasAlloc();
    w.fd.ioasMap({ ioasId: id, userVa: w.p.mapAnonymous(PAGE), length: PAGE });
    assert.equal([...ioasOf(w.fd, id).iopt.areas.all()][0]!.pages.accountMode, mode);
  }
});

test('HUGE_PAGES: lookups, values and ops (option-huge-pages.txt "HUGE_PAGES GET object_id 0" .. "HUGE_PAGES __reserved 1")', () => {
  const { fd, opt } = setup();
  const id = fd.ioasAlloc();
  throwsErrno(() => opt({ optionId: HUGE, op: GET, objectId: 0 }), 'ENOENT', /\b0\b/);
  throwsErrno(() => opt({ optionId: HUGE, op: GET, objectId: 4 }), 'ENOENT', /\b4\b/);
  assert.equal(opt({ optionId: HUGE, op: GET, objectId: id }), 1n);
  throwsErrno(() => opt({ optionId: HUGE, op: SET, objectId: id, val64: 2n }), 'EINVAL', /not 2\b/);
  throwsErrno(() => opt({ optionId: HUGE, op: 2, objectId: id }), 'EOPNOTSUPP', /unknown op 2\b/);
  throwsErrno(() => opt({ optionId: HUGE, op: GET, objectId: id, reserved: 1 }), 'EOPNOTSUPP', /__reserved/);
});

test('HUGE_PAGES 0 raises iova_alignment to 4096, 1 brings it back (option-huge-pages.txt "HUGE_PAGES SET 0 on an empty IOAS" .. "byte-granular map")', () => {
  const { fd, p } = setup();
  const id = fd.ioasAlloc();
  const b0 = p.mapAnonymous(0x10000n);
  fd.setHugePages(id, false);
  assert.equal(fd.getHugePages(id), false);
  assert.equal(fd.iovaRanges(id).alignment, 0x1000n);
  throwsErrno(() => fd.ioasMap({ ioasId: id, userVa: b0, length: 0x1000n, iova: 0x10001n }), 'EINVAL', /IOVA 0x10001 is not aligned to the IOAS's iova_alignment 0x1000/);
  assert.equal(fd.ioasMap({ ioasId: id, userVa: b0, length: 0x1000n, iova: 0x10000n }), 0x10000n);
  fd.setHugePages(id, false); // "SET 0 again (no-op)"
  fd.setHugePages(id, true);
  assert.equal(fd.iovaRanges(id).alignment, 1n);
  assert.equal(fd.ioasMap({ ioasId: id, userVa: b0, length: 0x10n, iova: 0x20001n }), 0x20001n);
});

test('HUGE_PAGES 0 with misaligned areas is EADDRINUSE and stays enabled (option-huge-pages.txt "HUGE_PAGES SET 0 with a misaligned area" .. "HUGE_PAGES SET 1")', () => {
  const { fd, p } = setup();
  const id = fd.ioasAlloc();
  const b0 = p.mapAnonymous(0x10000n);
  fd.ioasMap({ ioasId: id, userVa: b0, length: 0x1000n, iova: 0x10000n });
  fd.ioasMap({ ioasId: id, userVa: b0, length: 0x10n, iova: 0x20001n });
  throwsErrno(() => fd.setHugePages(id, false), 'EADDRINUSE', /area \[0x20001, 0x20010\].*new iova_alignment 0x1000/);
  assert.equal(fd.getHugePages(id), true);
  assert.equal(fd.iovaRanges(id).alignment, 1n);
  fd.ioasUnmap(id, 0x20001n, 0x10n);
  fd.ioasMap({ ioasId: id, userVa: b0 + 0x10n, length: 0x1000n, iova: 0x30000n });
  throwsErrno(() => fd.setHugePages(id, false), 'EADDRINUSE', /page offset 0x10\b/);
  fd.ioasUnmap(id, 0x30000n, 0x1000n);
  fd.setHugePages(id, false);
  fd.setHugePages(id, true);
});

test('binary door: OPTION writes back only val64 (a read-only head of the struct does not matter) (§2.1)', () => {
  const w = binWorld({ caps: ['CAP_SYS_RESOURCE'] });
  // Two pages: the struct's first 16 bytes at the end of a read-only page, val64 on a writable one.
  const a = w.p.mapAnonymous(2n * PAGE);
  const at = a + PAGE - 16n;
  w.p.writeMem(at, IommuOption.encode(IommuOption.make({ size: 24, optionId: RLIMIT, op: GET, val64: 0x77n })));
  w.p.mprotect(a, PAGE, PROT_READ);
  expectIoctl(w.dev.ioctl(IOMMU_OPTION, at), 'OK');
  assert.deepEqual(IommuOption.decode(w.p.readMem(at, 24)), { size: 24, optionId: RLIMIT, op: GET, reserved: 0, objectId: 0, val64: 0n });
  // SET writes val64 back too: a read-only val64 makes a successful SET return EFAULT (after the change).
  const b = w.p.mapAnonymous(PAGE);
  w.p.writeMem(b, IommuOption.encode(IommuOption.make({ size: 24, optionId: RLIMIT, op: SET, val64: 1n })));
  w.p.mprotect(b, PAGE, PROT_READ);
  expectIoctl(w.dev.ioctl(IOMMU_OPTION, b), 'EFAULT', /val64/);
  const g = ioctlStruct(w, IOMMU_OPTION, IommuOption, { optionId: RLIMIT, op: GET });
  expectIoctl(g.r, 'OK');
  assert.equal(g.out.val64, 1n);
});

test('binary door: a failed OPTION writes nothing (option-huge-pages.txt "HUGE_PAGES SET 2")', () => {
  const w = binWorld();
  const r = ioctlStruct(w, IOMMU_OPTION, IommuOption, { optionId: HUGE, op: GET, objectId: 9, val64: 0x55n });
  expectIoctl(r.r, 'ENOENT', /\b9\b/);
  assert.equal(r.out.val64, 0x55n);
});
