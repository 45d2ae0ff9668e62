/**
 * ioctl command numbers and the iommufd command table (nr → struct, sizes).
 *
 * Linux's generic encoding: nr in bits 0-7, type in 8-15, size in 16-29, direction in 30-31.
 * iommufd (and the VFIO container API it also answers) uses _IO() for everything, so each
 * command value is just `0x3b00 | nr`; the struct's own leading `size` field versions it.
 */
import {
  IommuDestroy,
  IommuFaultAlloc,
  IommuHwInfo,
  IommuHwptAlloc,
  IommuHwptGetDirtyBitmap,
  IommuHwptInvalidate,
  IommuHwptSetDirtyTracking,
  IommuIoasAlloc,
  IommuIoasAllowIovas,
  IommuIoasCopy,
  IommuIoasIovaRanges,
  IommuIoasMap,
  IommuIoasUnmap,
  IommuOption,
  IommuVfioIoas,
} from './iommufd.js';
import { IommuTestCmd } from './iommufd-test.js';
import type { Fields, StructDef } from './struct.js';

// ---- Generic ioctl encoding (include/uapi/asm-generic/ioctl.h, x86-64/arm64 values) -------------

export const _IOC_NRBITS = 8;
export const _IOC_TYPEBITS = 8;
export const _IOC_SIZEBITS = 14;
export const _IOC_DIRBITS = 2;
export const _IOC_NRSHIFT = 0;
export const _IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS;
export const _IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS;
export const _IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS;
export const _IOC_NONE = 0;
export const _IOC_WRITE = 1;
export const _IOC_READ = 2;

/** Build a command value; `>>> 0` keeps READ-direction values positive (bit 31 set). */
export function _IOC(dir: number, type: number, nr: number, size: number): number {
  return (
    ((dir << _IOC_DIRSHIFT) |
      (type << _IOC_TYPESHIFT) |
      (nr << _IOC_NRSHIFT) |
      (size << _IOC_SIZESHIFT)) >>>
    0
  );
}
export const _IO = (type: number, nr: number): number => _IOC(_IOC_NONE, type, nr, 0);
export const _IOR = (type: number, nr: number, size: number): number => _IOC(_IOC_READ, type, nr, size);
export const _IOW = (type: number, nr: number, size: number): number => _IOC(_IOC_WRITE, type, nr, size);
export const _IOWR = (type: number, nr: number, size: number): number =>
  _IOC(_IOC_READ | _IOC_WRITE, type, nr, size);

export const _IOC_NR = (cmd: number): number => (cmd >>> _IOC_NRSHIFT) & ((1 << _IOC_NRBITS) - 1);
export const _IOC_TYPE = (cmd: number): number =>
  (cmd >>> _IOC_TYPESHIFT) & ((1 << _IOC_TYPEBITS) - 1);
export const _IOC_SIZE = (cmd: number): number =>
  (cmd >>> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1);
export const _IOC_DIR = (cmd: number): number => (cmd >>> _IOC_DIRSHIFT) & ((1 << _IOC_DIRBITS) - 1);

// ---- iommufd command numbers -------------------------------------------------------------------

export const IOMMUFD_TYPE = 0x3b; // ';'
export const IOMMUFD_CMD_BASE = 0x80;
export const IOMMUFD_CMD_DESTROY = IOMMUFD_CMD_BASE;
export const IOMMUFD_CMD_IOAS_ALLOC = 0x81;
export const IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82;
export const IOMMUFD_CMD_IOAS_COPY = 0x83;
export const IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84;
export const IOMMUFD_CMD_IOAS_MAP = 0x85;
export const IOMMUFD_CMD_IOAS_UNMAP = 0x86;
export const IOMMUFD_CMD_OPTION = 0x87;
export const IOMMUFD_CMD_VFIO_IOAS = 0x88;
export const IOMMUFD_CMD_HWPT_ALLOC = 0x89;
export const IOMMUFD_CMD_GET_HW_INFO = 0x8a;
export const IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING = 0x8b;
export const IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP = 0x8c;
export const IOMMUFD_CMD_HWPT_INVALIDATE = 0x8d;
export const IOMMUFD_CMD_FAULT_QUEUE_ALLOC = 0x8e;
/** IOMMU_TEST_CMD's nr, BASE + 32; only test kernels extend the table this far. */
export const IOMMUFD_CMD_TEST = IOMMUFD_CMD_BASE + 32;

export const IOMMU_DESTROY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY);
export const IOMMU_IOAS_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC);
export const IOMMU_IOAS_ALLOW_IOVAS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOW_IOVAS);
export const IOMMU_IOAS_COPY = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_COPY);
export const IOMMU_IOAS_IOVA_RANGES = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES);
export const IOMMU_IOAS_MAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP);
export const IOMMU_IOAS_UNMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP);
export const IOMMU_OPTION = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION);
export const IOMMU_VFIO_IOAS = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VFIO_IOAS);
export const IOMMU_HWPT_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC);
export const IOMMU_GET_HW_INFO = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_GET_HW_INFO);
export const IOMMU_HWPT_SET_DIRTY_TRACKING = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING);
export const IOMMU_HWPT_GET_DIRTY_BITMAP = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP);
export const IOMMU_HWPT_INVALIDATE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_INVALIDATE);
export const IOMMU_FAULT_QUEUE_ALLOC = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_FAULT_QUEUE_ALLOC);
export const IOMMU_TEST_CMD = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_TEST);

// ---- The command table -------------------------------------------------------------------------

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface IommufdIoctl<F extends Fields = any, N extends string = string> {
  readonly nr: number;
  /** The exact command value the slot accepts (anything else with this nr is ENOTTY). */
  readonly cmd: number;
  readonly name: N;
  readonly struct: StructDef<F>;
  /** The last field a caller must supply: min_size is its offsetofend. */
  readonly lastMandatory: keyof F & string;
  /** User `size` below this is EINVAL. */
  readonly minSize: number;
  /** Only present on CONFIG_IOMMUFD_TEST kernels. */
  readonly testOnly: boolean;
}

function entry<F extends Fields, const N extends string>(
  name: N,
  nr: number,
  def: StructDef<F>,
  lastMandatory: keyof F & string,
  testOnly = false,
): IommufdIoctl<F, N> {
  return {
    nr,
    cmd: _IO(IOMMUFD_TYPE, nr),
    name,
    struct: def,
    lastMandatory,
    minSize: def.offsetofEnd(lastMandatory),
    testOnly,
  };
}

/** The iommufd ioctls in nr order, as the kernel's table lists them. */
export const IOMMUFD_IOCTLS = [
  entry('IOMMU_DESTROY', IOMMUFD_CMD_DESTROY, IommuDestroy, 'id'),
  entry('IOMMU_IOAS_ALLOC', IOMMUFD_CMD_IOAS_ALLOC, IommuIoasAlloc, 'outIoasId'),
  entry('IOMMU_IOAS_ALLOW_IOVAS', IOMMUFD_CMD_IOAS_ALLOW_IOVAS, IommuIoasAllowIovas, 'allowedIovas'),
  entry('IOMMU_IOAS_COPY', IOMMUFD_CMD_IOAS_COPY, IommuIoasCopy, 'srcIova'),
  entry('IOMMU_IOAS_IOVA_RANGES', IOMMUFD_CMD_IOAS_IOVA_RANGES, IommuIoasIovaRanges, 'outIovaAlignment'),
  entry('IOMMU_IOAS_MAP', IOMMUFD_CMD_IOAS_MAP, IommuIoasMap, 'iova'),
  entry('IOMMU_IOAS_UNMAP', IOMMUFD_CMD_IOAS_UNMAP, IommuIoasUnmap, 'length'),
  entry('IOMMU_OPTION', IOMMUFD_CMD_OPTION, IommuOption, 'val64'),
  entry('IOMMU_VFIO_IOAS', IOMMUFD_CMD_VFIO_IOAS, IommuVfioIoas, 'reserved'),
  entry('IOMMU_HWPT_ALLOC', IOMMUFD_CMD_HWPT_ALLOC, IommuHwptAlloc, 'reserved'),
  entry('IOMMU_GET_HW_INFO', IOMMUFD_CMD_GET_HW_INFO, IommuHwInfo, 'reserved'),
  entry(
    'IOMMU_HWPT_SET_DIRTY_TRACKING',
    IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING,
    IommuHwptSetDirtyTracking,
    'reserved',
  ),
  entry('IOMMU_HWPT_GET_DIRTY_BITMAP', IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP, IommuHwptGetDirtyBitmap, 'data'),
  entry('IOMMU_HWPT_INVALIDATE', IOMMUFD_CMD_HWPT_INVALIDATE, IommuHwptInvalidate, 'reserved'),
  entry('IOMMU_FAULT_QUEUE_ALLOC', IOMMUFD_CMD_FAULT_QUEUE_ALLOC, IommuFaultAlloc, 'outFaultFd'),
  entry('IOMMU_TEST_CMD', IOMMUFD_CMD_TEST, IommuTestCmd, 'last', true),
] as const;

export type IommufdIoctlName = (typeof IOMMUFD_IOCTLS)[number]['name'];

/**
 * How many nr slots above IOMMUFD_CMD_BASE the kernel's table spans: through IOMMU_TEST_CMD on a
 * test kernel (0x21), through FAULT_QUEUE_ALLOC otherwise (0x0f). An nr outside
 * [BASE, BASE + len) goes to the VFIO compat handler without touching user memory; one inside
 * the span but with an empty slot (0x8f..0x9f) is ENOTTY only after `size` has been read.
 */
export function iommufdTableLength(testKernel: boolean): number {
  return (testKernel ? IOMMUFD_CMD_TEST : IOMMUFD_CMD_FAULT_QUEUE_ALLOC) - IOMMUFD_CMD_BASE + 1;
}

const BY_NR: ReadonlyMap<number, IommufdIoctl> = new Map(
  IOMMUFD_IOCTLS.map((e): [number, IommufdIoctl] => [e.nr, e]),
);

/** Whether `nr` falls inside the kernel's table (else: VFIO compat path). */
export function inIommufdTable(nr: number, testKernel: boolean): boolean {
  return nr >= IOMMUFD_CMD_BASE && nr < IOMMUFD_CMD_BASE + iommufdTableLength(testKernel);
}

/** The table slot for `nr`, or undefined for an empty slot / an nr outside the table. */
export function iommufdIoctlByNr(nr: number, testKernel: boolean): IommufdIoctl | undefined {
  if (!inIommufdTable(nr, testKernel)) return undefined;
  return BY_NR.get(nr);
}

/** A name for any command value, for traces: "IOMMU_IOAS_MAP", or "ioctl 0xc0103b85". */
export function ioctlName(cmd: number, extra?: Readonly<Record<number, string>>): string {
  const e = BY_NR.get(_IOC_NR(cmd));
  if (e && e.cmd === cmd) return e.name;
  return extra?.[cmd] ?? `ioctl 0x${(cmd >>> 0).toString(16)}`;
}
