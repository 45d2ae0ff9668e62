/**
 * The selftest's access driver (selftest.c's staccess): IOMMU_TEST_OP_CREATE_ACCESS hands user
 * space an fd, "[iommufd_test_staccess]", behind which sits an in-kernel access (access.ts). The
 * fd number is the handle of the other access ops; closing it unpins everything and destroys the
 * access. Pinned ranges are "items" with per-access ids counted from 0.
 */
import { allocBytes } from '../lib/bytes.js';
import { fail, hex, IommuError } from '../lib/error.js';
import { Lock } from '../lib/lockdep.js';
import { PAGE_SIZE, U64_MAX } from '../lib/u64.js';
import type { PageFrame } from '../mm/types.js';
import {
  MOCK_ACCESS_RW_SLOW_PATH,
  MOCK_ACCESS_RW_WRITE,
  MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES,
  MOCK_FLAGS_ACCESS_SYZ,
  MOCK_FLAGS_ACCESS_WRITE,
  type IommuTestCmdAccessPages,
  type IommuTestCmdAccessReplaceIoas,
  type IommuTestCmdAccessRw,
  type IommuTestCmdCreateAccess,
  type IommuTestCmdDestroyAccessPages,
} from '../uapi/iommufd-test.js';
import { accessCreate, accessDestroy, IOMMUFD_ACCESS_RW_WRITE, type IommufdAccess } from './access.js';
import type { IommufdCtx } from './context.js';
import type { EmulatedFile, FdTable } from './file.js';
import type { Ucmd } from './ucmd.js';

/** The op refuses lengths above this before anything else (it would allocate that much). */
const ACCESS_MAX_LENGTH = 16n * 1024n * 1024n;
/** kvmalloc refuses allocations above INT_MAX bytes. */
const KVMALLOC_MAX = 0x7fff_ffffn;
const U64 = 1n << 64n;

interface AccessItem {
  iova: bigint;
  length: bigint;
  id: number;
}

/** The staccess file: owns the access and the list of pinned items. */
export class StaccessFile implements EmulatedFile {
  readonly name = '[iommufd_test_staccess]';
  /** Set once CREATE_ACCESS has succeeded (the fd is visible from then on). */
  access: IommufdAccess | null = null;
  readonly items: AccessItem[] = [];
  nextId = 0;
  readonly lock = new Lock('staccess->lock');

  /** The access's unmap callback: unpin and forget every item that intersects the range. */
  unmap(iova: bigint, length: bigint): void {
    const last = (iova + length - 1n) % U64;
    this.lock.lock();
    try {
      for (let i = 0; i < this.items.length; ) {
        const item = this.items[i]!;
        if (iova > (item.iova + item.length - 1n) % U64 || last < item.iova) {
          i++;
          continue;
        }
        this.items.splice(i, 1);
        this.access!.unpinPages(item.iova, item.length);
      }
    } finally {
      this.lock.unlock();
    }
  }

  release(): void {
    if (!this.access) return;
    this.unmap(0n, U64_MAX);
    accessDestroy(this.access);
  }
}

/** The staccess behind an fd number: EBADFD for a closed fd or any other kind of file. */
function staccessOf(fds: FdTable, fd: number): StaccessFile {
  const file = fds.get(fd);
  if (!file) fail('EBADFD', `fd ${fd} is not open`);
  if (!(file instanceof StaccessFile) || !file.access) fail('EBADFD', `fd ${fd} is a ${file.name} file, not an access handle`);
  return file;
}

/** iommufd_test_syz_conv_iova: {u32 nth area, u32 offset} -> IOVA of that area plus offset, else 0. */
function syzConvIova(access: IommufdAccess, iova: bigint): bigint {
  access.ioasLock.lock();
  try {
    const ioas = access.ioas;
    if (!ioas) return 0n;
    const nth = Number(iova & 0xffff_ffffn);
    const offset = (iova >> 32n) & 0xffff_ffffn;
    ioas.iopt.iovaRwsem.read();
    try {
      let i = 0;
      for (const area of ioas.iopt.areas.all()) if (i++ === nth) return (area.iova + offset) % U64;
      return 0n;
    } finally {
      ioas.iopt.iovaRwsem.unlock();
    }
  } finally {
    access.ioasLock.unlock();
  }
}

/** IOMMU_TEST_OP_CREATE_ACCESS: `id` is the IOAS; the response carries the new fd. */
export function testCreateAccess(ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdCreateAccess>): number {
  const cmd = ucmd.cmd;
  if (cmd.flags & ~MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES)
    fail('EOPNOTSUPP', `flags ${hex((cmd.flags & ~MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) >>> 0)} are not access creation flags`);
  const file = new StaccessFile();
  let fd: number;
  try {
    fd = ucmd.fds.install(file, true);
  } catch (e) {
    if (e instanceof IommuError) fail('ENOMEM', `no fd for the access handle: ${e.explanation}`);
    throw e;
  }
  const needsPin = (cmd.flags & MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES) !== 0;
  let access: IommufdAccess | null = null;
  try {
    access = accessCreate(ctx, { needsPinPages: needsPin, unmap: (iova, length) => file.unmap(iova, length) });
    access.attach(cmd.id);
    cmd.outAccessFd = fd;
    ucmd.respond();
  } catch (e) {
    if (access) accessDestroy(access);
    ucmd.fds.remove?.(fd);
    file.release();
    throw e;
  }
  file.access = access;
  return 0;
}

/** IOMMU_TEST_OP_ACCESS_REPLACE_IOAS: `id` is the access fd. */
export function testAccessReplaceIoas(_ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdAccessReplaceIoas>): number {
  const st = staccessOf(ucmd.fds, ucmd.cmd.id);
  st.access!.replace(ucmd.cmd.ioasId);
  return 0;
}

/** Compare the pinned frames with the pages the caller's `uptr` maps now (iommufd_test_check_pages). */
function checkPages(ucmd: Ucmd<unknown>, uptr: bigint, frames: readonly PageFrame[], npages: number): void {
  for (let i = 0; i < npages; i++) {
    const va = (uptr + BigInt(i) * PAGE_SIZE) % U64;
    const frame = ucmd.task.mm.lookupPage(va, false);
    if (frame !== frames[i])
      fail(
        'EBADE',
        `page ${i} of the pinned range is pfn ${frames[i] ? hex(frames[i]!.pfn) : 'none'}, but user address ${hex(va)} maps pfn ${hex(frame.pfn)}`,
      );
  }
}

/** IOMMU_TEST_OP_ACCESS_PAGES: pin [iova, iova + length) and record it as an item. */
export function testAccessPages(_ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdAccessPages>): number {
  const cmd = ucmd.cmd;
  if (cmd.length > ACCESS_MAX_LENGTH) fail('ENOMEM', `length ${hex(cmd.length)} is above the op's 16 MiB limit`);
  const valid = MOCK_FLAGS_ACCESS_WRITE | MOCK_FLAGS_ACCESS_SYZ;
  if (cmd.flags & ~valid) fail('EOPNOTSUPP', `flags ${hex((cmd.flags & ~valid) >>> 0)} are not access-pages flags`);
  const st = staccessOf(ucmd.fds, cmd.id);
  const access = st.access!;
  if (!access.ops.needsPinPages)
    fail('EOPNOTSUPP', `access fd ${cmd.id} was created without MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES`);
  let iova = cmd.iova;
  if (cmd.flags & MOCK_FLAGS_ACCESS_SYZ) iova = syzConvIova(access, cmd.iova);

  const first = iova - (iova % PAGE_SIZE);
  const end = ((iova + cmd.length + PAGE_SIZE - 1n) % U64) & ~(PAGE_SIZE - 1n);
  const npages = ((end - first + U64) % U64) / PAGE_SIZE;
  if (npages * 8n > KVMALLOC_MAX) fail('ENOMEM', `the page array for ${npages} pages is too large to allocate`);

  st.lock.lock();
  try {
    const frames = access.pinPages(iova, cmd.length, cmd.flags & MOCK_FLAGS_ACCESS_WRITE ? IOMMUFD_ACCESS_RW_WRITE : 0);
    let item: AccessItem | undefined;
    try {
      if (cmd.uptr) checkPages(ucmd, (cmd.uptr - (iova - first) + U64) % U64, frames, Number(npages));
      item = { iova, length: cmd.length, id: st.nextId };
      st.nextId = (st.nextId + 1) >>> 0;
      st.items.push(item);
      cmd.outAccessPagesId = item.id;
      ucmd.respond();
    } catch (e) {
      if (item) st.items.splice(st.items.indexOf(item), 1);
      access.unpinPages(iova, cmd.length);
      throw e;
    }
  } finally {
    st.lock.unlock();
  }
  return 0;
}

/** IOMMU_TEST_OP_DESTROY_ACCESS_PAGES: unpin one item; ENOENT if it is gone (also after an unmap). */
export function testDestroyAccessPages(_ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdDestroyAccessPages>): number {
  const cmd = ucmd.cmd;
  const st = staccessOf(ucmd.fds, cmd.id);
  st.lock.lock();
  try {
    const i = st.items.findIndex((it) => it.id === cmd.accessPagesId);
    if (i < 0) fail('ENOENT', `access fd ${cmd.id} has no pinned item ${cmd.accessPagesId}`);
    const [item] = st.items.splice(i, 1);
    st.access!.unpinPages(item!.iova, item!.length);
  } finally {
    st.lock.unlock();
  }
  return 0;
}

/** IOMMU_TEST_OP_ACCESS_RW: copy between `uptr` and the memory behind [iova, iova + length). */
export function testAccessRw(_ctx: IommufdCtx, ucmd: Ucmd<IommuTestCmdAccessRw>): number {
  const cmd = ucmd.cmd;
  if (cmd.length > ACCESS_MAX_LENGTH) fail('ENOMEM', `length ${hex(cmd.length)} is above the op's 16 MiB limit`);
  const valid = MOCK_ACCESS_RW_WRITE | MOCK_ACCESS_RW_SLOW_PATH | MOCK_FLAGS_ACCESS_SYZ;
  if (cmd.flags & ~valid) fail('EOPNOTSUPP', `flags ${hex((cmd.flags & ~valid) >>> 0)} are not access-rw flags`);
  const st = staccessOf(ucmd.fds, cmd.id);
  const write = (cmd.flags & MOCK_ACCESS_RW_WRITE) !== 0;
  const length = Number(cmd.length);
  const tmp = write && length ? ucmd.user.copyFromUser(cmd.uptr, length) : allocBytes(length);
  let iova = cmd.iova;
  if (cmd.flags & MOCK_FLAGS_ACCESS_SYZ) iova = syzConvIova(st.access!, cmd.iova);
  st.access!.rw(iova, tmp, cmd.flags, ucmd.task.mm);
  if (!write && length) ucmd.user.copyToUser(cmd.uptr, tmp);
  return 0;
}
