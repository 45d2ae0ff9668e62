import { Errno } from '../lib/errno.js';
import { fail, hex, IommuError } from '../lib/error.js';
import { lockdep } from '../lib/lockdep.js';
import type { Task } from '../mm/types.js';
import { AccountMode } from '../mm/accounting.js';
import { copyStructFromUser, copyStructToUser } from '../uapi/copy-struct.js';
import { iommufdIoctlByNr, inIommufdTable, IOMMUFD_CMD_TEST, ioctlName, _IOC_NR } from '../uapi/ioctl.js';
import {
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  type IommuDestroy,
  type IommuOption,
  type IommuVfioIoas,
} from '../uapi/iommufd.js';
import type { StructDef } from '../uapi/struct.js';
import type { IommufdCtx } from './context.js';
import { getIoas, ioasAlloc, ioasAllowIovas, ioasCopy, ioasIovaRanges, ioasMap, ioasOption, ioasUnmap } from './ioas.js';
import { ObjType } from './object.js';
import { hwptAlloc, hwptGetDirtyBitmap, hwptInvalidate, hwptSetDirtyTracking } from './hw-pagetable.js';
import { faultQueueAlloc } from './fault.js';
import { getHwInfo } from './device.js';
import { iommufdTest, testCmdStruct } from './test-cmd.js';
import type { Ucmd, UserAccess } from './ucmd.js';
import { vfioCompatIoctl as vfioCompat } from './vfio-compat.js';
import { SimpleFdTable, type FdTable } from './file.js';

/** A handler takes the decoded command and returns the ioctl's non-negative result. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Handler = (ctx: IommufdCtx, ucmd: Ucmd<any>) => number;

/** IOMMU_DESTROY */
export function destroy(ctx: IommufdCtx, ucmd: Ucmd<IommuDestroy>): number {
  const obj = ctx.objects.destroyUser(ucmd.cmd.id);
  if (obj.type === ObjType.IOAS && ctx.vfioIoas === (obj as unknown)) ctx.vfioIoas = null;
  return 0;
}

/** IOMMU_OPTION: RLIMIT_MODE is per context, HUGE_PAGES per IOAS; only val64 is written back. */
export function option(ctx: IommufdCtx, ucmd: Ucmd<IommuOption>): number {
  const cmd = ucmd.cmd;
  if (cmd.reserved) fail('EOPNOTSUPP', `__reserved is ${hex(cmd.reserved)}, must be 0`);
  switch (cmd.optionId) {
    case IOMMU_OPTION_RLIMIT_MODE:
      rlimitMode(ctx, ucmd.task, cmd);
      break;
    case IOMMU_OPTION_HUGE_PAGES:
      ioasOption(ctx, cmd);
      break;
    default:
      fail('EOPNOTSUPP', `unknown option_id ${cmd.optionId}`);
  }
  ucmd.respond();
  return 0;
}

function rlimitMode(ctx: IommufdCtx, task: Task, cmd: IommuOption): void {
  if (cmd.objectId) fail('EOPNOTSUPP', `IOMMU_OPTION_RLIMIT_MODE is global: object_id must be 0, not ${cmd.objectId}`);
  if (cmd.op === IOMMU_OPTION_OP_GET) {
    cmd.val64 = ctx.accountMode === AccountMode.MM ? 1n : 0n;
    return;
  }
  if (cmd.op !== IOMMU_OPTION_OP_SET) fail('EOPNOTSUPP', `unknown op ${cmd.op}`);
  if (!task.capable('CAP_SYS_RESOURCE'))
    fail('EPERM', `setting IOMMU_OPTION_RLIMIT_MODE needs CAP_SYS_RESOURCE, which pid ${task.pid} lacks`);
  if (ctx.objects.count)
    fail('EBUSY', `the accounting mode can only change while the context has no objects; it has ${ctx.objects.count}`);
  if (cmd.val64 === 0n) ctx.accountMode = AccountMode.USER;
  else if (cmd.val64 === 1n) ctx.accountMode = AccountMode.MM;
  else fail('EINVAL', `IOMMU_OPTION_RLIMIT_MODE takes 0 (user) or 1 (mm), not ${cmd.val64}`);
}

/** IOMMU_VFIO_IOAS: get, set or clear the (weak) compat IOAS pointer. */
export function vfioIoas(ctx: IommufdCtx, ucmd: Ucmd<IommuVfioIoas>): number {
  const cmd = ucmd.cmd;
  if (cmd.reserved) fail('EOPNOTSUPP', `__reserved is ${hex(cmd.reserved)}, must be 0`);
  switch (cmd.op) {
    case IOMMU_VFIO_IOAS_GET: {
      const ioas = ctx.vfioIoas;
      if (!ioas || !ioas.finalized) fail('ENODEV', 'no compat IOAS is set for VFIO emulation');
      cmd.ioasId = ioas.id;
      ucmd.respond();
      return 0;
    }
    case IOMMU_VFIO_IOAS_SET:
      ctx.vfioIoas = getIoas(ctx, cmd.ioasId);
      return 0;
    case IOMMU_VFIO_IOAS_CLEAR:
      ctx.vfioIoas = null;
      return 0;
    default:
      fail('EOPNOTSUPP', `unknown op ${cmd.op}`);
  }
}

/** Handlers by ioctl nr (the kernel's iommufd_ioctl_ops). */
export const HANDLERS: ReadonlyMap<number, Handler> = new Map<number, Handler>([
  [0x80, destroy],
  [0x81, ioasAlloc],
  [0x82, ioasAllowIovas],
  [0x83, ioasCopy],
  [0x84, ioasIovaRanges],
  [0x85, ioasMap],
  [0x86, ioasUnmap],
  [0x87, option],
  [0x88, vfioIoas],
  [0x89, hwptAlloc],
  [0x8a, getHwInfo],
  [0x8b, hwptSetDirtyTracking],
  [0x8c, hwptGetDirtyBitmap],
  [0x8d, hwptInvalidate],
  [0x8e, faultQueueAlloc],
  [IOMMUFD_CMD_TEST, iommufdTest],
]);

/** Options of the binary door. */
export interface IoctlOptions {
  /** A CONFIG_IOMMUFD_TEST kernel: IOMMU_TEST_CMD exists and the table spans to 0xa0. */
  testKernel: boolean;
}

export const DEFAULT_IOCTL_OPTIONS: IoctlOptions = { testKernel: true };

/** Bugs in the emulator that escaped as JavaScript exceptions (tests assert there are none). */
export const internalErrors: unknown[] = [];

/**
 * The binary door (iommufd_fops_ioctl): decode the user struct at `arg` with the kernel's size
 * rules, run the handler, write the response back. Returns the ioctl result (>= 0) or -errno;
 * the explanation of a refusal is left in ctx.lastError.
 */
export function iommufdIoctl(
  ctx: IommufdCtx,
  task: Task,
  cmd: number,
  arg: bigint,
  user: UserAccess = task.mm,
  fds: FdTable = new SimpleFdTable(),
  opts: IoctlOptions = DEFAULT_IOCTL_OPTIONS,
): number {
  ctx.lastError = undefined;
  try {
    if (ctx.released) ctx.assertLive(ioctlName(cmd));
    return dispatch(ctx, task, cmd, arg, user, fds, opts);
  } catch (e) {
    if (e instanceof IommuError) {
      ctx.lastError = e;
      return -e.errno;
    }
    internalErrors.push(e);
    lockdep.resetHeld();
    const err = new IommuError(
      Errno.ENOTRECOVERABLE,
      `internal emulator error in ${ioctlName(cmd)}: ${e instanceof Error ? e.message : String(e)}`,
    );
    ctx.lastError = err;
    return -err.errno;
  }
}

function dispatch(ctx: IommufdCtx, task: Task, cmd: number, arg: bigint, user: UserAccess, fds: FdTable, opts: IoctlOptions): number {
  cmd >>>= 0;
  const nr = _IOC_NR(cmd);
  if (!inIommufdTable(nr, opts.testKernel)) return vfioCompatIoctl(ctx, task, cmd, arg, user);

  let userSize: number;
  try {
    const peeked = user.peekU32?.(arg);
    if (peeked !== undefined) userSize = peeked;
    else {
      const b = user.copyFromUser(arg, 4);
      userSize = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
    }
  } catch (e) {
    if (e instanceof IommuError) fail('EFAULT', `cannot read the size field at ${hex(arg)}: ${e.explanation}`);
    throw e;
  }
  const op = iommufdIoctlByNr(nr, opts.testKernel);
  if (!op || op.cmd !== cmd) fail('ENOTTY', `${ioctlName(cmd)} is not an iommufd ioctl`);
  if (userSize < op.minSize)
    fail('EINVAL', `size ${userSize} is below the minimum ${op.minSize} of struct ${op.struct.name}`);

  const kbuf = copyStructFromUser(user, arg, userSize, op.struct);
  // The kernel's table is full: a command this emulator does not serve yet still gets the size rules.
  const handler = HANDLERS.get(nr);
  if (!handler) fail('ENOTTY', `${op.name} is not implemented by this emulator yet`);
  let def: StructDef = op.struct as unknown as StructDef;
  // The op (u32 at offset 4 of the header) picks the union member.
  if (nr === IOMMUFD_CMD_TEST) def = testCmdStruct((kbuf[4]! | (kbuf[5]! << 8) | (kbuf[6]! << 16) | (kbuf[7]! << 24)) >>> 0);
  const decoded = def.decode(kbuf);
  const ucmd: Ucmd<unknown> = {
    cmd: decoded,
    task,
    user,
    fds,
    respond() {
      def.encode(decoded as never, kbuf);
      copyStructToUser(user, arg, userSize, def, kbuf);
    },
  };
  if (nr === 0x87) {
    // IOMMU_OPTION writes back only val64 (8 bytes at offset 16).
    ucmd.respond = () => {
      def.encode(decoded as never, kbuf);
      try {
        user.copyToUser(arg + 16n, kbuf.subarray(16, 24));
      } catch (e) {
        if (e instanceof IommuError) fail('EFAULT', `writing back val64 at ${hex(arg + 16n)} faulted`);
        throw e;
      }
    };
  }
  // Only test kernels strip IOAS_COPY's MOCK_FLAGS_ACCESS_SYZ bit.
  if (nr === 0x83) return ioasCopy(ctx, ucmd as never, opts.testKernel);
  return handler(ctx, ucmd);
}

/** The VFIO type1 container ioctls served on the iommufd file (nr outside the iommufd table). */
function vfioCompatIoctl(ctx: IommufdCtx, task: Task, cmd: number, arg: bigint, user: UserAccess): number {
  return vfioCompat(ctx, task, cmd, arg, user);
}
