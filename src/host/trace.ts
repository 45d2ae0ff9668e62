/**
 * strace-like lines for the daemon's trace: one per ioctl, with the decoded struct as the caller
 * passed it, the result and either the fields the call wrote back or the errno and the emulator's
 * explanation:
 *
 *   [4242] IOMMU_IOAS_MAP {flags=0x7, ioas_id=1, user_va=0x7f..., length=0x10000, iova=0x0} = 0 {iova=0x1000000}
 *   [4242] IOMMU_DESTROY {id=99} = -1 ENOENT (object 99 does not exist)
 */
import { errnoName } from '../lib/errno.js';
import { ioctlName, iommufdIoctlByNr, _IOC_NR } from '../uapi/ioctl.js';
import * as testUapi from '../uapi/iommufd-test.js';
import type { StructDef } from '../uapi/struct.js';
import { VFIO_IOCTL_NAMES, VFIO_IOMMU_MAP_DMA, VFIO_IOMMU_UNMAP_DMA, VfioIommuType1DmaMap, VfioIommuType1DmaUnmap } from '../uapi/vfio.js';
import { testCmdStruct } from '../iommufd/test-cmd.js';

const TEST_OP_NAMES = new Map<number, string>();
for (const [k, v] of Object.entries(testUapi)) {
  if (k.startsWith('IOMMU_TEST_OP_') && typeof v === 'number') TEST_OP_NAMES.set(v, k.slice('IOMMU_TEST_OP_'.length));
}

const snake = (s: string): string => s.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());

function formatValue(name: string, kind: string, v: unknown, def?: StructDef): string {
  if (kind === 'struct' && def) return formatFields(def, v as Record<string, unknown>, undefined);
  if (v instanceof Uint8Array) {
    let s = '';
    for (const b of v) s += b.toString(16).padStart(2, '0');
    return '0x' + s;
  }
  if (typeof v === 'bigint') return '0x' + v.toString(16);
  if (typeof v === 'number' && /flags|mask|caps/i.test(name)) return '0x' + (v >>> 0).toString(16);
  return String(v);
}

function isZero(v: unknown): boolean {
  if (v instanceof Uint8Array) return v.every((b) => b === 0);
  return v === 0 || v === 0n;
}

/** `{a=1, b=0x2}`; with `before`, only the fields that differ from it. */
function formatFields(def: StructDef, value: Record<string, unknown>, before: Record<string, unknown> | undefined): string {
  const parts: string[] = [];
  for (const key of def.keys) {
    const spec = def.fields[key] as { kind: string; def?: StructDef };
    const v = value[key];
    if (before) {
      const b = before[key];
      const same =
        v instanceof Uint8Array && b instanceof Uint8Array ? Buffer.from(v).equals(Buffer.from(b)) : JSON.stringify(v, big) === JSON.stringify(b, big);
      if (same) continue;
    } else {
      if (key === 'size' && v === def.size) continue;
      if (/^(reserved|__reserved|pad|padding|union)/i.test(key) && isZero(v)) continue;
    }
    parts.push(`${snake(key)}=${formatValue(key, spec.kind, v, spec.def)}`);
  }
  return `{${parts.join(', ')}}`;
}

const big = (_k: string, v: unknown): unknown => (typeof v === 'bigint' ? v.toString() : v);

/** The struct definition and display name for a command, given the bytes at arg. */
function describe(cmd: number, bytes: Uint8Array): { name: string; def: StructDef | undefined } {
  const nr = _IOC_NR(cmd);
  const op = iommufdIoctlByNr(nr, true);
  if (op && op.cmd === cmd >>> 0) {
    if (op.name === 'IOMMU_TEST_CMD') {
      const testOp = bytes.length >= 8 ? new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true) : -1;
      return { name: `IOMMU_TEST_CMD(${TEST_OP_NAMES.get(testOp) ?? testOp})`, def: testCmdStruct(testOp) };
    }
    return { name: op.name, def: op.struct as unknown as StructDef };
  }
  if (cmd >>> 0 === VFIO_IOMMU_MAP_DMA) return { name: 'VFIO_IOMMU_MAP_DMA', def: VfioIommuType1DmaMap as unknown as StructDef };
  if (cmd >>> 0 === VFIO_IOMMU_UNMAP_DMA) return { name: 'VFIO_IOMMU_UNMAP_DMA', def: VfioIommuType1DmaUnmap as unknown as StructDef };
  return { name: ioctlName(cmd, VFIO_IOCTL_NAMES), def: undefined };
}

function decodePadded(def: StructDef, bytes: Uint8Array): Record<string, unknown> {
  const buf = new Uint8Array(def.size);
  buf.set(bytes.subarray(0, def.size));
  return def.decode(buf) as Record<string, unknown>;
}

export interface TraceIoctl {
  pid: number;
  cmd: number;
  arg: bigint;
  /** The struct bytes the caller passed (as many as were readable). */
  before: Uint8Array;
  /** The same bytes after the call. */
  after: Uint8Array;
  ret: number;
  explanation?: string;
}

export function formatIoctl(t: TraceIoctl): string {
  const { name, def } = describe(t.cmd, t.before);
  let args: string;
  if (def && t.before.length >= 4) args = formatFields(def, decodePadded(def, t.before), undefined);
  else if (def) args = `0x${t.arg.toString(16)}${t.arg === 0n ? ' (NULL)' : ' (unreadable)'}`;
  else args = `0x${t.arg.toString(16)}`;
  let line = `[${t.pid}] ${name} ${args} = `;
  if (t.ret < 0) {
    line += `-1 ${errnoName(-t.ret)}`;
    if (t.explanation) line += ` (${t.explanation})`;
    return line;
  }
  line += String(t.ret);
  if (def && t.before.length >= 4) {
    const changed = formatFields(def, decodePadded(def, t.after), decodePadded(def, t.before));
    if (changed !== '{}') line += ' ' + changed;
  }
  return line;
}

/** read/write/poll/open/release on emulated files, in the same style. */
export function formatCall(pid: number, call: string, ret: number, explanation?: string): string {
  if (ret < 0) return `[${pid}] ${call} = -1 ${errnoName(-ret)}${explanation ? ` (${explanation})` : ''}`;
  return `[${pid}] ${call} = ${ret}`;
}
