import { fail, IommuError } from '../lib/error.js';
import type { IommuDevice } from '../iommu/device.js';
import { deviceAttach, deviceBind, deviceDetach, deviceReplace, deviceUnbind, getDevice, getHwInfo } from '../iommufd/device.js';
import { hwptAlloc } from '../iommufd/hw-pagetable.js';
import { U64_MAX } from '../lib/u64.js';
import type { Task } from '../mm/types.js';
import { IommufdCtx } from '../iommufd/context.js';
import { ioasAlloc, ioasAllowIovas, ioasCopy, ioasIovaRanges, ioasMap, ioasUnmap } from '../iommufd/ioas.js';
import { destroy, HANDLERS, option, vfioIoas, type Handler } from '../iommufd/main.js';
import type { Range } from '../iommufd/ranges.js';
import type { Ucmd } from '../iommufd/ucmd.js';
import { iommufdTest, testCmdStruct } from '../iommufd/test-cmd.js';
import { faultQueueAlloc } from '../iommufd/fault.js';
import {
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_OPTION_HUGE_PAGES,
  IOMMU_OPTION_OP_GET,
  IOMMU_OPTION_OP_SET,
  IOMMU_OPTION_RLIMIT_MODE,
  IOMMU_VFIO_IOAS_CLEAR,
  IOMMU_VFIO_IOAS_GET,
  IOMMU_VFIO_IOAS_SET,
  IommuDestroy,
  IommuFaultAlloc,
  IommuHwInfo,
  IommuHwptPageResponse,
  IommuHwptPgfault,
  IommuHwptAlloc,
  IommuIoasAlloc,
  IommuIoasAllowIovas,
  IommuIoasCopy,
  IommuIoasIovaRanges,
  IommuIoasMap,
  IommuIoasUnmap,
  IommuIovaRange,
  IommuOption,
  IommuVfioIoas,
} from '../uapi/iommufd.js';
import {
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_ADD_RESERVED,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IommuTestCmdAccessPages,
  IommuTestCmdAccessReplaceIoas,
  IommuTestCmdAccessRw,
  IommuTestCmdCreateAccess,
  IommuTestCmdDestroyAccessPages,
  IommuTestCmdAddReserved,
  IommuTestCmdMockDomainFlags,
  IommuTestCmdMockDomainReplace,
  IommuTestCmdHeader,
} from '../uapi/iommufd-test.js';
import { IOMMUFD_CMD_TEST, iommufdIoctlByNr } from '../uapi/ioctl.js';
import { cInt, cU32, cU64, type StructDef } from '../uapi/struct.js';
import { StagedUser } from './staged-user.js';
import { SimpleFdTable, type EmulatedFile, type FdTable } from '../iommufd/file.js';

export interface MapArgs {
  ioasId: number;
  userVa: bigint;
  length: bigint;
  /** A fixed IOVA; omit for automatic allocation. */
  iova?: bigint;
  readable?: boolean;
  writeable?: boolean;
}

export interface CopyArgs {
  dstIoasId: number;
  srcIoasId: number;
  srcIova: bigint;
  length: bigint;
  dstIova?: bigint;
  readable?: boolean;
  writeable?: boolean;
}

/**
 * One typed-door call in flight. A class rather than an object literal with a closure: this is on
 * every MAP/UNMAP, and a closure per call costs more than the handler's own work for small maps.
 * Fields stay own properties, so `{ ...ucmd }` copies them.
 */
class TypedUcmd<T> implements Ucmd<T> {
  responded = false;
  constructor(
    readonly cmd: T,
    readonly task: Task,
    readonly user: StagedUser,
    readonly fds: FdTable,
  ) {}
  respond(): void {
    this.responded = true;
  }
}

/** The struct a handler's command is, for the handlers of the ioctl table (the test command by its op). */
const STRUCT_OF = new Map<Handler, (cmd: object) => StructDef>();
for (const [nr, handler] of HANDLERS) {
  const op = iommufdIoctlByNr(nr, true);
  if (!op || nr === IOMMUFD_CMD_TEST) continue;
  const def = op.struct as unknown as StructDef;
  STRUCT_OF.set(handler, () => def);
}
STRUCT_OF.set(iommufdTest, (cmd) => testCmdStruct(IommuTestCmdHeader.normalize(cmd as never).op));

/**
 * Store a command's fields as a C caller storing them into the struct would: the truncation the
 * binary door's encoder applies, so that both doors hand the handler the same values. Without a
 * known struct (a wrapped handler and no `def`), bigints are taken as __u64 and numbers as __u32.
 */
function normalizeCmd(handler: Handler, cmd: object, def: StructDef | undefined): void {
  const d = def ?? STRUCT_OF.get(handler)?.(cmd);
  if (d) {
    d.normalize(cmd as never);
    return;
  }
  const o = cmd as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    const v = o[k];
    if (typeof v === 'bigint') o[k] = cU64(v);
    else if (typeof v === 'number') o[k] = cU32(v);
  }
}

/** vfs_read/vfs_write clamp a count to MAX_RW_COUNT (INT_MAX & PAGE_MASK). */
const MAX_RW_COUNT = 0x7fff_f000n;

/** The staging room given to caller-sized outputs that are dense buffers in the result. */
function rwCount(count: bigint): number {
  return Number(count > MAX_RW_COUNT ? MAX_RW_COUNT : count);
}

/**
 * The typed door: the same handlers as /dev/iommu's ioctls, called with typed commands instead
 * of bytes. Refusals throw IommuError (errno + explanation). `call()` gives raw access to any
 * handler with a full command struct, for callers that want the kernel's exact field semantics.
 */
export class Iommufd {
  readonly ctx: IommufdCtx;
  /** close() was called: the /dev/iommu fd no longer exists (files it handed out stay open). */
  private closed = false;
  /** Devices bound through bindDevice (the VFIO side): only those can be unbound here. */
  private readonly boundHere = new WeakSet<object>();
  /** Files this door received (fault queues, access handles), by fd number. */
  readonly fds = new SimpleFdTable(1000);

  constructor(
    readonly task: Task,
    opts: { vfioContainer?: boolean; name?: string } = {},
  ) {
    this.ctx = new IommufdCtx(opts.name, opts.vfioContainer);
  }

  /**
   * Run a handler on a command object (mutated in place with the outputs, as the kernel's copy
   * is). Its fields are first stored as into the C struct (`def`, or the handler's struct in the
   * ioctl table): -1n in a __u64 is U64_MAX, 2^32 + 1 in a __u32 is 1. `responded` tells whether
   * the handler wrote the struct back before returning or failing.
   */
  call<T extends object>(
    handler: Handler,
    cmd: T,
    user = new StagedUser(this.task.mm),
    def?: StructDef,
  ): { ret: number; cmd: T; responded: boolean } {
    const ucmd = new TypedUcmd(cmd, this.task, user, this.fds);
    try {
      this.assertOpen('ioctl');
      normalizeCmd(handler, cmd, def);
      const ret = handler(this.ctx, ucmd);
      return { ret, cmd, responded: ucmd.responded };
    } catch (e) {
      if (e instanceof IommuError) this.ctx.lastError = e;
      throw e;
    }
  }

  destroy(id: number): void {
    this.call(destroy, IommuDestroy.make({ size: IommuDestroy.size, id }));
  }

  ioasAlloc(flags = 0): number {
    return this.call(ioasAlloc, IommuIoasAlloc.make({ size: IommuIoasAlloc.size, flags })).cmd.outIoasId;
  }

  ioasMap(a: MapArgs): bigint {
    let flags = 0;
    if (a.iova !== undefined) flags |= IOMMU_IOAS_MAP_FIXED_IOVA;
    if (a.readable ?? true) flags |= IOMMU_IOAS_MAP_READABLE;
    if (a.writeable ?? true) flags |= IOMMU_IOAS_MAP_WRITEABLE;
    const cmd = {
      size: IommuIoasMap.size,
      flags,
      ioasId: a.ioasId,
      reserved: 0,
      userVa: a.userVa,
      length: a.length,
      iova: a.iova ?? 0n,
    };
    return this.call(ioasMap, cmd).cmd.iova;
  }

  ioasCopy(a: CopyArgs): bigint {
    let flags = 0;
    if (a.dstIova !== undefined) flags |= IOMMU_IOAS_MAP_FIXED_IOVA;
    if (a.readable ?? true) flags |= IOMMU_IOAS_MAP_READABLE;
    if (a.writeable ?? true) flags |= IOMMU_IOAS_MAP_WRITEABLE;
    const cmd = IommuIoasCopy.make({
      size: IommuIoasCopy.size,
      flags,
      dstIoasId: a.dstIoasId,
      srcIoasId: a.srcIoasId,
      length: a.length,
      dstIova: a.dstIova ?? 0n,
      srcIova: a.srcIova,
    });
    return this.call(ioasCopy, cmd).cmd.dstIova;
  }

  /** Returns the bytes unmapped. */
  ioasUnmap(ioasId: number, iova: bigint, length: bigint): bigint {
    const cmd = { size: IommuIoasUnmap.size, ioasId, iova, length };
    return this.call(ioasUnmap, cmd).cmd.length;
  }

  ioasUnmapAll(ioasId: number): bigint {
    return this.ioasUnmap(ioasId, 0n, U64_MAX);
  }

  /** The usable IOVA ranges and the IOAS's alignment (the whole list, whatever its length). */
  iovaRanges(ioasId: number): { ranges: Range[]; alignment: bigint } {
    const probe = IommuIoasIovaRanges.make({ size: IommuIoasIovaRanges.size, ioasId, numIovas: 0 });
    let count = 0;
    try {
      count = this.call(ioasIovaRanges, probe).cmd.numIovas;
    } catch (e) {
      if (!(e instanceof IommuError && e.errnoName === 'EMSGSIZE')) throw e;
      count = probe.numIovas;
    }
    const user = new StagedUser(this.task.mm);
    const buf = user.alloc(count * IommuIovaRange.size);
    const cmd = IommuIoasIovaRanges.make({ size: IommuIoasIovaRanges.size, ioasId, numIovas: count, allowedIovas: buf.addr });
    this.call(ioasIovaRanges, cmd, user);
    const ranges: Range[] = [];
    for (let i = 0; i < cmd.numIovas; i++) {
      const r = IommuIovaRange.decode(buf.bytes, i * IommuIovaRange.size);
      ranges.push({ start: r.start, last: r.last });
    }
    return { ranges, alignment: cmd.outIovaAlignment };
  }

  allowIovas(ioasId: number, ranges: readonly Range[]): void {
    const user = new StagedUser(this.task.mm);
    const bytes = new Uint8Array(ranges.length * IommuIovaRange.size);
    ranges.forEach((r, i) => IommuIovaRange.encode(IommuIovaRange.normalize({ start: r.start, last: r.last }), bytes, i * IommuIovaRange.size));
    const addr = user.stage(bytes);
    this.call(
      ioasAllowIovas,
      IommuIoasAllowIovas.make({ size: IommuIoasAllowIovas.size, ioasId, numIovas: ranges.length, allowedIovas: addr }),
      user,
    );
  }

  private option(optionId: number, op: number, objectId: number, val64 = 0n): bigint {
    const cmd = IommuOption.make({ size: IommuOption.size, optionId, op, objectId, val64 });
    return this.call(option, cmd).cmd.val64;
  }

  getHugePages(ioasId: number): boolean {
    return this.option(IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_GET, ioasId) === 1n;
  }
  setHugePages(ioasId: number, enabled: boolean): void {
    this.option(IOMMU_OPTION_HUGE_PAGES, IOMMU_OPTION_OP_SET, ioasId, enabled ? 1n : 0n);
  }
  /** true when pinned pages are charged to the mapping mm (VFIO style) rather than the user. */
  getRlimitModeMm(): boolean {
    return this.option(IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_GET, 0) === 1n;
  }
  setRlimitModeMm(mm: boolean): void {
    this.option(IOMMU_OPTION_RLIMIT_MODE, IOMMU_OPTION_OP_SET, 0, mm ? 1n : 0n);
  }

  vfioIoasGet(): number {
    return this.call(vfioIoas, IommuVfioIoas.make({ size: IommuVfioIoas.size, op: IOMMU_VFIO_IOAS_GET })).cmd.ioasId;
  }
  vfioIoasSet(ioasId: number): void {
    this.call(vfioIoas, IommuVfioIoas.make({ size: IommuVfioIoas.size, op: IOMMU_VFIO_IOAS_SET, ioasId }));
  }
  vfioIoasClear(): void {
    this.call(vfioIoas, IommuVfioIoas.make({ size: IommuVfioIoas.size, op: IOMMU_VFIO_IOAS_CLEAR }));
  }

  /** IOMMU_TEST_OP_ADD_RESERVED (test kernels): reserve [start, start + length - 1]. */
  testAddReserved(ioasId: number, start: bigint, length: bigint): void {
    const cmd = IommuTestCmdAddReserved.make({ size: 72, op: IOMMU_TEST_OP_ADD_RESERVED, id: ioasId, start, length });
    this.call(iommufdTest, cmd);
  }

  // ---------------------------------------------------------------- devices (the VFIO-side kAPI)

  /** Bind a device to this context (what VFIO_DEVICE_BIND_IOMMUFD does); returns the device id. */
  bindDevice(dev: IommuDevice): number {
    return this.guard(() => {
      this.assertOpen('VFIO_DEVICE_BIND_IOMMUFD');
      const idev = deviceBind(this.ctx, dev);
      this.boundHere.add(idev);
      return idev.id;
    });
  }

  /** Unbind a device (closing its VFIO cdev): detaches it first if it is attached. */
  unbindDevice(devId: number): void {
    this.guard(() => {
      const idev = getDevice(this.ctx, cU32(devId));
      // Another driver's device (a selftest mock device goes with its IOMMU_TEST_OP_MOCK_DOMAIN
      // object): unbinding it here would unbind it twice.
      if (!this.boundHere.has(idev)) fail('ENOENT', `device ${idev.id} was not bound through bindDevice: its own driver unbinds it`);
      this.boundHere.delete(idev);
      if (idev.attached) deviceDetach(idev);
      deviceUnbind(idev);
    });
  }

  /**
   * VFIO_DEVICE_ATTACH_IOMMUFD_PT: attach to an IOAS (automatic HWPT) or a HWPT; returns the HWPT
   * id. Like vfio_iommufd_physical_attach_ioas, an attach of an attached device is a replace.
   * `ptId` is the struct's __u32 pt_id; `devId` an object id (__u32) too.
   */
  attach(devId: number, ptId: number): number {
    return this.guard(() => {
      const idev = getDevice(this.ctx, cU32(devId));
      return idev.attached ? deviceReplace(idev, cU32(ptId)) : deviceAttach(idev, cU32(ptId));
    });
  }

  /** Move the device's whole group to another IOAS or HWPT (iommufd_device_replace); returns the HWPT id. */
  replace(devId: number, ptId: number): number {
    return this.guard(() => deviceReplace(getDevice(this.ctx, cU32(devId)), cU32(ptId)));
  }

  /**
   * VFIO_DEVICE_DETACH_IOMMUFD_PT: like vfio_iommufd_physical_detach_ioas, a device that is not
   * attached is left alone and the call succeeds.
   */
  detach(devId: number): void {
    this.guard(() => {
      const idev = getDevice(this.ctx, cU32(devId));
      if (idev.attached) deviceDetach(idev);
    });
  }

  /** IOMMU_HWPT_ALLOC; returns the HWPT id. */
  hwptAlloc(a: { devId: number; ptId: number; flags?: number; dataType?: number; data?: Uint8Array; faultId?: number }): number {
    const user = new StagedUser(this.task.mm);
    const data = a.data ?? new Uint8Array(0);
    const cmd = IommuHwptAlloc.make({
      size: IommuHwptAlloc.size,
      flags: a.flags ?? 0,
      devId: a.devId,
      ptId: a.ptId,
      dataType: a.dataType ?? 0,
      dataLen: data.length,
      dataUptr: data.length ? user.stage(data) : 0n,
      faultId: a.faultId ?? 0,
    });
    return this.call(hwptAlloc, cmd, user).cmd.outHwptId;
  }

  /** IOMMU_GET_HW_INFO: the driver's data (up to `dataLen` bytes), its type and capabilities. */
  getHwInfo(devId: number, dataLen = 64): { type: number; data: Uint8Array; capabilities: bigint; maxPasidLog2: number } {
    const user = new StagedUser(this.task.mm);
    const room = cU32(dataLen);
    const addr = user.allocSparse(BigInt(room));
    const cmd = IommuHwInfo.make({ size: IommuHwInfo.size, devId, dataLen: room, dataUptr: addr });
    this.call(getHwInfo, cmd, user);
    return {
      type: cmd.outDataType,
      data: user.copyFromUser(addr, Math.min(room, cmd.dataLen)),
      capabilities: cmd.outCapabilities,
      maxPasidLog2: cmd.outMaxPasidLog2,
    };
  }

  /** IOMMU_TEST_OP_MOCK_DOMAIN(_FLAGS): a mock device bound and attached to `ptId`. */
  testMockDomain(ptId: number, devFlags = 0): { stdevId: number; hwptId: number; idevId: number } {
    const cmd = IommuTestCmdMockDomainFlags.make({ size: 72, op: IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, id: ptId, devFlags });
    this.call(iommufdTest, cmd);
    return { stdevId: cmd.outStdevId, hwptId: cmd.outHwptId, idevId: cmd.outIdevId };
  }

  /** IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE: returns the HWPT id now in use. */
  testMockDomainReplace(stdevId: number, ptId: number): number {
    const cmd = IommuTestCmdMockDomainReplace.make({ size: 72, op: IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, id: stdevId, ptId });
    return this.call(iommufdTest, cmd).cmd.ptId;
  }

  // ---------------------------------------------------------------- fault queues

  /** IOMMU_FAULT_QUEUE_ALLOC: a FAULT object and the fd of its file (in this door's `fds`). */
  faultQueueAlloc(flags = 0): { faultId: number; fd: number } {
    const cmd = IommuFaultAlloc.make({ size: IommuFaultAlloc.size, flags });
    this.call(faultQueueAlloc, cmd);
    return { faultId: cmd.outFaultId, fd: cmd.outFaultFd };
  }

  /** read(2) of a fault fd with room for `maxRecords` records: the records delivered, in order. */
  faultRead(fd: number, maxRecords = 16): IommuHwptPgfault[] {
    const user = new StagedUser(this.task.mm);
    // The count read(2) gets: a size_t, which vfs_read clamps to MAX_RW_COUNT.
    const count = rwCount(cU64(cU64(maxRecords) * BigInt(IommuHwptPgfault.size)));
    const addr = user.allocSparse(BigInt(count));
    const n = this.fileOp(fd, 'read', (f) => f.read!(user, addr, count));
    const bytes = user.copyFromUser(addr, n);
    const out: IommuHwptPgfault[] = [];
    for (let off = 0; off + IommuHwptPgfault.size <= n; off += IommuHwptPgfault.size) out.push(IommuHwptPgfault.decode(bytes, off));
    return out;
  }

  /** write(2) of page responses to a fault fd; returns the bytes consumed (8 per response). */
  faultWrite(fd: number, responses: readonly { cookie: number; code: number }[]): number {
    const user = new StagedUser(this.task.mm);
    const bytes = new Uint8Array(responses.length * IommuHwptPageResponse.size);
    responses.forEach((r, i) =>
      IommuHwptPageResponse.encode(IommuHwptPageResponse.normalize({ cookie: r.cookie, code: r.code }), bytes, i * IommuHwptPageResponse.size),
    );
    const addr = user.stage(bytes);
    return this.fileOp(fd, 'write', (f) => f.write!(user, addr, bytes.length));
  }

  /** poll(2) of a file this door received: the ready bits (POLLIN, POLLOUT, ...). */
  poll(fd: number): number {
    return this.fileOp(fd, 'poll', (f) => f.poll!());
  }

  /** close(2) of a file this door received (fault fd, access handle). */
  closeFd(fd: number): void {
    const n = cInt(fd);
    if (!this.fds.close(n)) this.guard(() => fail('EBADF', `fd ${n} is not open`));
  }

  private fileOp(fd: number, op: 'read' | 'write' | 'poll', fn: (f: EmulatedFile) => number): number {
    return this.guard(() => {
      fd = cInt(fd);
      const f = this.fds.get(fd);
      if (!f) fail('EBADF', `fd ${fd} is not open`);
      if (!f[op]) fail('EINVAL', `${f.name} has no ${op} operation`);
      return fn(f);
    });
  }

  // ---------------------------------------------------------------- selftest accesses

  /** IOMMU_TEST_OP_CREATE_ACCESS: returns the access handle fd. */
  testCreateAccess(ioasId: number, flags = 0): number {
    const cmd = IommuTestCmdCreateAccess.make({ size: 72, op: IOMMU_TEST_OP_CREATE_ACCESS, id: ioasId, flags });
    return this.call(iommufdTest, cmd).cmd.outAccessFd;
  }

  testAccessReplaceIoas(accessFd: number, ioasId: number): void {
    this.call(iommufdTest, IommuTestCmdAccessReplaceIoas.make({ size: 72, op: IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, id: accessFd, ioasId }));
  }

  /** IOMMU_TEST_OP_ACCESS_PAGES: pin; returns the item id. `uptr` 0 skips the page comparison. */
  testAccessPages(accessFd: number, iova: bigint, length: bigint, opts: { flags?: number; uptr?: bigint } = {}): number {
    const cmd = IommuTestCmdAccessPages.make({
      size: 72,
      op: IOMMU_TEST_OP_ACCESS_PAGES,
      id: accessFd,
      flags: opts.flags ?? 0,
      iova,
      length,
      uptr: opts.uptr ?? 0n,
    });
    return this.call(iommufdTest, cmd).cmd.outAccessPagesId;
  }

  testDestroyAccessPages(accessFd: number, itemId: number): void {
    this.call(iommufdTest, IommuTestCmdDestroyAccessPages.make({ size: 72, op: IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, id: accessFd, accessPagesId: itemId }));
  }

  /** IOMMU_TEST_OP_ACCESS_RW: read `length` bytes (no `data`) or write `data`; returns what was read. */
  testAccessRw(accessFd: number, iova: bigint, arg: { length: number } | { data: Uint8Array }, flags = 0): Uint8Array {
    const user = new StagedUser(this.task.mm);
    const isWrite = 'data' in arg;
    // A read's length is the struct's __u64 length; its buffer is staged sparsely (the op itself
    // refuses more than 16 MiB).
    const length = isWrite ? BigInt(arg.data.length) : cU64(arg.length);
    const uptr = isWrite ? user.stage(arg.data.slice()) : user.allocSparse(length);
    const cmd = IommuTestCmdAccessRw.make({
      size: 72,
      op: IOMMU_TEST_OP_ACCESS_RW,
      id: accessFd,
      iova,
      length,
      uptr,
      flags: isWrite ? cU32(flags) | 1 : flags,
    });
    this.call(iommufdTest, cmd, user);
    return isWrite ? arg.data : user.copyFromUser(uptr, Number(length));
  }

  /** Run kernel-API code with this door's error bookkeeping. */
  private guard<R>(fn: () => R): R {
    try {
      return fn();
    } catch (e) {
      if (e instanceof IommuError) this.ctx.lastError = e;
      throw e;
    }
  }

  /**
   * close(): drop the file reference; the context is released when nothing else holds it (bound
   * VFIO devices, fault fds). Afterwards ioctls and binds are EBADF; the device methods (the VFIO
   * device files) and the files this door received keep working. A second close() is EBADF.
   */
  close(): void {
    this.guard(() => this.assertOpen('close'));
    this.closed = true;
    this.ctx.put();
  }

  /** EBADF once the /dev/iommu fd is closed (or the context released under it). */
  private assertOpen(what: string): void {
    if (this.closed) fail('EBADF', this.ctx.closedFdExplanation(what));
    this.ctx.assertLive(what);
  }
}
