/**
 * A reference model of one iommufd context restricted to IOAS objects with no domains and no
 * accesses, written from the semantics reference (§2.2–2.9, §2.17 ADD_RESERVED, §3) and the
 * 6.12 sources, independently of src/iommufd: plain sorted arrays, no trees. It predicts the
 * errno, the written-back output fields and the resulting area / reserved / allowed sets.
 */
import type { Cmd, Env, Range } from './lib.js';
import { DATA_PAGES, Errno, U64_MAX } from './lib.js';

const PAGE = 4096n;
const HPAGE = 2n * 1024n * 1024n;
const ULONG_HALF = U64_MAX / 2n;

export interface MArea {
  iova: bigint;
  last: bigint;
  /** User VA of the area's first byte. */
  va: bigint;
  /** Its page container was created writable. */
  writable: boolean;
}

export interface MIoas {
  areas: MArea[];
  /** owner: 0 for ADD_RESERVED, else the id of the HWPT whose aperture it is. */
  reserved: (Range & { owner: number })[];
  allowed: Range[];
  hugeDisabled: boolean;
  /** The auto-domain HWPT linked to this IOAS (a mock domain: pgsize 2048, aperture [16M, 2G-1]). */
  hwpt?: number;
}

/** Objects other than IOASes: the selftest device handle, the device, the auto-domain HWPT. */
type MObj = { type: 'stdev'; idev: number; hwpt: number } | { type: 'idev' } | { type: 'hwpt'; ioas: number; devices: number };

const MOCK_APERTURE_START = 0x1000000n;
const MOCK_APERTURE_LAST = 0x7fffffffn;

export interface Prediction {
  errno: number;
  /** Output fields (decoded names) the call writes back on this outcome. */
  out: Record<string, bigint | number>;
  /** IOVA_RANGES: the entries written to the user array. */
  array?: Range[];
}

/** A decoded command (field values are number or bigint, per the struct definition). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Flds = { [k: string]: any };

class Refusal extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}
const refuse = (errno: number): never => {
  throw new Refusal(errno);
};

function merge(ranges: readonly Range[]): Range[] {
  const s = [...ranges].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: Range[] = [];
  for (const r of s) {
    const p = out[out.length - 1];
    if (p && r.start <= p.last + 1n) {
      if (r.last > p.last) p.last = r.last;
    } else out.push({ start: r.start, last: r.last });
  }
  return out;
}

/** Maximal gaps of a merged list inside [from, to]. */
function gaps(merged: readonly Range[], from: bigint, to: bigint): Range[] {
  const out: Range[] = [];
  let cur = from;
  for (const r of merged) {
    if (r.last < cur) continue;
    if (r.start > to) break;
    if (r.start > cur) out.push({ start: cur, last: r.start - 1n });
    if (r.last >= to) return out;
    cur = r.last + 1n;
  }
  if (cur <= to) out.push({ start: cur, last: to });
  return out;
}

const hits = (rs: readonly Range[], start: bigint, last: bigint): boolean => rs.some((r) => r.start <= last && start <= r.last);

const spans = (areas: readonly MArea[]): Range[] => areas.map((a) => ({ start: a.iova, last: a.last }));

function roundUpPow2(v: bigint): bigint {
  let p = 1n;
  while (p < v) p <<= 1n;
  return p;
}

export class Model {
  readonly ioas = new Map<number, MIoas>();
  readonly others = new Map<number, MObj>();
  /** Object ids in use. */
  private readonly ids = new Set<number>();
  rlimitModeMm = false;

  constructor(
    private readonly env: Env,
    private readonly sysResource: boolean,
  ) {}

  alignment(io: MIoas): bigint {
    const base = io.hugeDisabled ? PAGE : 1n;
    return io.hwpt !== undefined && base < 2048n ? 2048n : base;
  }

  /** Every object id in use, ascending. */
  allIds(): number[] {
    return [...this.ids].sort((a, b) => a - b);
  }

  private newId(): number {
    let id = 1;
    while (this.ids.has(id)) id++;
    this.ids.add(id);
    return id;
  }

  /** Can the pages behind user VA [va, va + length) be pinned (inside the data buffer)? */
  private pinnable(va: bigint, length: bigint): boolean {
    const first = va - (va % PAGE);
    const end = va + length;
    return first >= this.env.data && end <= this.env.data + BigInt(DATA_PAGES) * PAGE;
  }

  private get(id: number): MIoas {
    return this.ioas.get(id) ?? refuse(Errno.ENOENT);
  }

  /** Is [p, p + len) readable / writable user memory of the environment? */
  private readable(p: bigint, len: bigint): boolean {
    const e = this.env;
    const inside = (base: bigint, size: bigint): boolean => p >= base && p + len <= base + size;
    return inside(e.array, PAGE) || inside(e.ro, PAGE) || inside(e.straddle, 8n);
  }
  private writable(p: bigint, len: bigint): boolean {
    return p >= this.env.array && p + len <= this.env.array + PAGE;
  }

  apply(c: Cmd): Prediction {
    const f = c.def.decode(c.bytes) as Flds;
    const out: Record<string, bigint | number> = {};
    const pred: Prediction = { errno: 0, out };
    try {
      switch (c.nr) {
        case 0x80:
          this.destroy(f['id']);
          break;
        case 0x81:
          out['outIoasId'] = this.alloc(f['flags']);
          break;
        case 0x82:
          this.allow(f, c);
          break;
        case 0x83:
          out['dstIova'] = this.copy(f, out);
          break;
        case 0x84:
          this.iovaRanges(f, pred);
          break;
        case 0x85:
          out['iova'] = this.map(f);
          break;
        case 0x86:
          out['length'] = this.unmap(f['ioasId'], f['iova'], f['length']);
          break;
        case 0x87:
          out['val64'] = this.option(f);
          break;
        case 0xa0:
          this.test(f, out);
          break;
        default:
          throw new Error(`model: nr ${c.nr}`);
      }
    } catch (e) {
      if (!(e instanceof Refusal)) throw e;
      // `out` is only meaningful on success, and for IOVA_RANGES on EMSGSIZE (written back first).
      pred.errno = e.errno;
    }
    return pred;
  }

  // ---------------------------------------------------------------- objects

  private alloc(flags: number): number {
    if (flags) refuse(Errno.EOPNOTSUPP);
    const id = this.newId();
    this.ioas.set(id, { areas: [], reserved: [], allowed: [], hugeDisabled: false });
    return id;
  }

  private destroy(id: number): void {
    if (!this.ids.has(id)) refuse(Errno.ENOENT);
    const io = this.ioas.get(id);
    const o = this.others.get(id);
    // The HWPT holds its IOAS, the attached device its HWPT, the selftest handle its device.
    if (io && io.hwpt !== undefined) refuse(Errno.EBUSY);
    if (o?.type === 'idev' || (o?.type === 'hwpt' && o.devices > 0)) refuse(Errno.EBUSY);
    if (o?.type === 'stdev') {
      const h = this.others.get(o.hwpt) as Extract<MObj, { type: 'hwpt' }>;
      if (--h.devices === 0) {
        // An auto domain goes with its last device: aperture reservations go, alignment drops.
        const hio = this.ioas.get(h.ioas)!;
        hio.reserved = hio.reserved.filter((r) => r.owner !== o.hwpt);
        hio.hwpt = undefined;
        this.others.delete(o.hwpt);
        this.ids.delete(o.hwpt);
      }
      this.others.delete(o.idev);
      this.ids.delete(o.idev);
    }
    this.ids.delete(id);
    this.ioas.delete(id);
    this.others.delete(id);
  }

  /** IOMMU_TEST_OP_MOCK_DOMAIN(_FLAGS): a mock device bound and attached to `id`. */
  private mockDomain(f: Flds, out: Record<string, bigint | number>): void {
    const stdev = this.newId();
    try {
      if (f['op'] === 12 && f['devFlags'] & ~3) refuse(Errno.EINVAL);
      const idev = this.newId();
      try {
        const target: number = f['id'];
        // The selftest handle is unpublished until the end (ENOENT); the device was published by
        // iommufd_device_bind, so naming it is a wrong type (EINVAL).
        if (!this.ids.has(target) || target === stdev) refuse(Errno.ENOENT);
        const io = this.ioas.get(target);
        const o = this.others.get(target);
        let hwpt: number;
        if (o?.type === 'hwpt') hwpt = target;
        else if (!io) return refuse(Errno.EINVAL);
        else if (io.hwpt !== undefined) hwpt = io.hwpt;
        else {
          // A new auto domain (iommufd_hwpt_paging_alloc + iopt_table_add_domain).
          hwpt = this.newId();
          try {
            const align = this.alignment({ ...io, hwpt });
            if (align !== this.alignment(io))
              for (const a of io.areas)
                if (a.iova % align || (a.last - a.iova + 1n) % align || (a.va % PAGE) % align) refuse(Errno.EADDRINUSE);
            const res = [
              { start: 0n, last: MOCK_APERTURE_START - 1n, owner: hwpt },
              { start: MOCK_APERTURE_LAST + 1n, last: U64_MAX, owner: hwpt },
            ];
            for (const r of res) if (hits(spans(io.areas), r.start, r.last) || hits(io.allowed, r.start, r.last)) refuse(Errno.EADDRINUSE);
            for (const a of io.areas) if (!this.pinnable(a.va, a.last - a.iova + 1n)) refuse(Errno.EFAULT);
            io.reserved.push(...res);
            io.hwpt = hwpt;
            this.others.set(hwpt, { type: 'hwpt', ioas: target, devices: 0 });
          } catch (e) {
            this.ids.delete(hwpt);
            throw e;
          }
        }
        (this.others.get(hwpt) as Extract<MObj, { type: 'hwpt' }>).devices++;
        this.others.set(idev, { type: 'idev' });
        this.others.set(stdev, { type: 'stdev', idev, hwpt });
        out['outStdevId'] = stdev;
        out['outHwptId'] = hwpt;
        out['outIdevId'] = idev;
      } catch (e) {
        this.ids.delete(idev);
        throw e;
      }
    } catch (e) {
      this.ids.delete(stdev);
      throw e;
    }
  }

  // ---------------------------------------------------------------- ranges

  private iovaRanges(f: Flds, pred: Prediction): void {
    if (f['reserved']) refuse(Errno.EOPNOTSUPP);
    const io = this.get(f['ioasId']);
    const capacity: number = f['numIovas'];
    const holes = gaps(merge(io.reserved), 0n, U64_MAX);
    const ptr: bigint = f['allowedIovas'];
    pred.array = [];
    for (let i = 0; i < holes.length && i < capacity; i++) {
      if (!this.writable(ptr + 16n * BigInt(i), 16n)) {
        pred.array = [];
        refuse(Errno.EFAULT);
      }
      pred.array.push(holes[i]!);
    }
    pred.out['numIovas'] = holes.length;
    pred.out['outIovaAlignment'] = this.alignment(io);
    if (holes.length > capacity) refuse(Errno.EMSGSIZE);
  }

  private allow(f: Flds, c: Cmd): void {
    if (f['reserved']) refuse(Errno.EOPNOTSUPP);
    const io = this.get(f['ioasId']);
    const list: Range[] = [];
    const input = c.arrayIn ?? new Uint8Array(0);
    const dv = new DataView(input.buffer, input.byteOffset, input.byteLength);
    const ptr: bigint = f['allowedIovas'];
    for (let i = 0; i < f['numIovas']; i++) {
      const at = ptr + 16n * BigInt(i);
      if (!this.readable(at, 16n)) refuse(Errno.EFAULT);
      // What the process's memory holds there: our array, or zeros (the ro page).
      const off = Number(at - this.env.array);
      const inArray = at >= this.env.array && at < this.env.array + PAGE;
      const start = inArray && off + 16 <= input.length ? dv.getBigUint64(off, true) : 0n;
      const last = inArray && off + 16 <= input.length ? dv.getBigUint64(off + 8, true) : 0n;
      if (start >= last) refuse(Errno.EINVAL);
      if (hits(list, start, last)) refuse(Errno.EINVAL);
      list.push({ start, last });
    }
    for (const r of list) if (hits(io.reserved, r.start, r.last)) refuse(Errno.EADDRINUSE);
    io.allowed = list.sort((a, b) => (a.start < b.start ? -1 : 1));
  }

  private test(f: Flds, out: Record<string, bigint | number>): void {
    if (f['op'] === 2 || f['op'] === 12) return this.mockDomain(f, out);
    if (f['op'] !== 1) refuse(Errno.EOPNOTSUPP);
    const start: bigint = f['start'];
    const length: bigint = f['length'];
    if (length === 0n) refuse(Errno.EINVAL);
    const last = start + length - 1n;
    if (last > U64_MAX) refuse(Errno.EOVERFLOW);
    const io = this.get(f['id']);
    if (hits(spans(io.areas), start, last)) refuse(Errno.EADDRINUSE);
    if (hits(io.allowed, start, last)) refuse(Errno.EADDRINUSE);
    io.reserved.push({ start, last, owner: 0 });
  }

  // ---------------------------------------------------------------- map, copy, unmap

  /** iopt_alloc_iova, §3.5. */
  private allocIova(io: MIoas, hint: bigint, length: bigint): bigint {
    if (length === 0n || length >= ULONG_HALF) refuse(Errno.EOVERFLOW);
    const pageOffset = hint % PAGE;
    let align = roundUpPow2(length);
    if (hint !== 0n && (hint & -hint) < align) align = hint & -hint;
    if (align >= HPAGE) align = HPAGE;
    if (align < this.alignment(io)) refuse(Errno.EINVAL);
    const up = (v: bigint): bigint | undefined => {
      const r = ((v + align - 1n) / align) * align;
      return r > U64_MAX ? undefined : r | pageOffset;
    };
    const lo = PAGE;
    const hi = U64_MAX - PAGE;
    const windows = io.allowed.length
      ? merge(io.allowed)
          .filter((r) => r.last >= lo && r.start <= hi)
          .map((r) => ({ start: r.start < lo ? lo : r.start, last: r.last > hi ? hi : r.last }))
      : [{ start: lo, last: hi }];
    const used = merge([...io.reserved, ...spans(io.areas)]);
    for (const w of windows) {
      const s = up(w.start);
      if (s === undefined || s >= w.last || w.last - s < length - 1n) continue;
      for (const g of gaps(used, s, w.last)) {
        const t = up(g.start);
        if (t !== undefined && t < g.last && g.last - t >= length - 1n) return t;
      }
    }
    return refuse(Errno.ENOSPC);
  }

  /** iopt_alloc_area_pages + iopt_insert_area for a list of slices. */
  private place(io: MIoas, slices: { va: bigint; length: bigint; writable: boolean }[], length: bigint, iova: bigint | undefined, write: boolean): bigint {
    const align = this.alignment(io);
    if (length === 0n || length % align) refuse(Errno.EINVAL);
    let dst: bigint;
    if (iova === undefined) dst = this.allocIova(io, slices[0]!.va, length);
    else {
      dst = iova;
      if (dst % align) refuse(Errno.EINVAL);
      if (dst + length - 1n > U64_MAX) refuse(Errno.EOVERFLOW);
      if (hits(io.reserved, dst, dst + length - 1n)) refuse(Errno.EINVAL);
      if (hits(spans(io.areas), dst, dst + length - 1n)) refuse(Errno.EEXIST);
    }
    const fresh: MArea[] = [];
    let cur = dst;
    for (const s of slices) {
      if (write && !s.writable) refuse(Errno.EPERM);
      if ((s.va % PAGE) % align) refuse(Errno.EINVAL);
      if (cur + s.length - 1n > U64_MAX) refuse(Errno.EOVERFLOW);
      fresh.push({ iova: cur, last: cur + s.length - 1n, va: s.va, writable: s.writable });
      cur += s.length;
    }
    // With a domain the pages are pinned now (§3.7): anything outside the buffer faults.
    if (io.hwpt !== undefined) for (const s of slices) if (!this.pinnable(s.va, s.length)) refuse(Errno.EFAULT);
    io.areas = [...io.areas, ...fresh].sort((a, b) => (a.iova < b.iova ? -1 : 1));
    return dst;
  }

  private map(f: Flds): bigint {
    const flags: number = f['flags'];
    const length: bigint = f['length'];
    const va: bigint = f['userVa'];
    if (flags & ~7 || f['reserved']) refuse(Errno.EOPNOTSUPP);
    if (f['iova'] === U64_MAX || length === U64_MAX) refuse(Errno.EOVERFLOW);
    if (!(flags & 6)) refuse(Errno.EINVAL);
    const io = this.get(f['ioasId']);
    if (length === 0n || length > U64_MAX - PAGE) refuse(Errno.EINVAL);
    if (va + length > U64_MAX) refuse(Errno.EOVERFLOW);
    const writable = (flags & 2) !== 0;
    return this.place(io, [{ va, length, writable }], length, flags & 1 ? f['iova'] : undefined, writable);
  }

  private copy(f: Flds, out: Record<string, bigint | number>): bigint {
    let flags: number = f['flags'];
    let srcIova: bigint = f['srcIova'];
    const length: bigint = f['length'];
    if (flags & 0x10000) {
      flags &= ~0x10000;
      const src = this.ioas.get(f['srcIoasId']);
      if (src) {
        const nth = Number(srcIova & 0xffff_ffffn);
        const a = src.areas[nth];
        // unsigned long arithmetic: the sum wraps.
        srcIova = a ? BigInt.asUintN(64, a.iova + (srcIova >> 32n)) : 0n;
      }
      // The converted fields are what the kernel copy holds (and writes back on success).
      out['flags'] = flags;
      out['srcIova'] = srcIova;
    }
    if (flags & ~7) refuse(Errno.EOPNOTSUPP);
    if (length === U64_MAX || srcIova === U64_MAX || f['dstIova'] === U64_MAX) refuse(Errno.EOVERFLOW);
    if (!(flags & 6)) refuse(Errno.EINVAL);
    const src = this.get(f['srcIoasId']);
    if (length === 0n) refuse(Errno.EINVAL);
    const lastIova = srcIova + length - 1n;
    if (lastIova > U64_MAX) refuse(Errno.EOVERFLOW);
    const slices: { va: bigint; length: bigint; writable: boolean }[] = [];
    let cur = srcIova;
    for (;;) {
      const a = src.areas.find((x) => x.iova <= cur && cur <= x.last);
      if (!a) refuse(Errno.ENOENT);
      const end = lastIova < a!.last ? lastIova : a!.last;
      slices.push({ va: a!.va + (cur - a!.iova), length: end - cur + 1n, writable: a!.writable });
      if (end === lastIova) break;
      cur = end + 1n;
    }
    const dst = this.get(f['dstIoasId']);
    return this.place(dst, slices, length, flags & 1 ? f['dstIova'] : undefined, (flags & 2) !== 0);
  }

  private unmap(id: number, iova: bigint, length: bigint): bigint {
    const io = this.get(id);
    let start = iova;
    let last: bigint;
    if (iova === 0n && length === U64_MAX) {
      start = 0n;
      last = U64_MAX;
    } else {
      if (iova === U64_MAX || length === U64_MAX) refuse(Errno.EOVERFLOW);
      if (length === 0n) refuse(Errno.EINVAL);
      last = iova + length - 1n;
      if (last > U64_MAX) refuse(Errno.EOVERFLOW);
    }
    let sum = 0n;
    for (const a of io.areas.filter((x) => x.iova <= last && start <= x.last)) {
      if (a.iova < start || a.last > last) refuse(Errno.ENOENT);
      io.areas = io.areas.filter((x) => x !== a);
      sum += a.last - a.iova + 1n;
    }
    if (sum === 0n && !(iova === 0n && length === U64_MAX)) refuse(Errno.ENOENT);
    return sum;
  }

  // ---------------------------------------------------------------- options

  private option(f: Flds): bigint {
    if (f['reserved']) refuse(Errno.EOPNOTSUPP);
    const op: number = f['op'];
    const val: bigint = f['val64'];
    if (f['optionId'] === 0) {
      if (f['objectId']) refuse(Errno.EOPNOTSUPP);
      if (op === 1) return this.rlimitModeMm ? 1n : 0n;
      if (op !== 0) refuse(Errno.EOPNOTSUPP);
      if (!this.sysResource) refuse(Errno.EPERM);
      if (this.ids.size) refuse(Errno.EBUSY);
      if (val > 1n) refuse(Errno.EINVAL);
      this.rlimitModeMm = val === 1n;
      return val;
    }
    if (f['optionId'] !== 1) refuse(Errno.EOPNOTSUPP);
    const io = this.get(f['objectId']);
    if (op === 1) return io.hugeDisabled ? 0n : 1n;
    if (op !== 0) refuse(Errno.EOPNOTSUPP);
    if (val === 0n) {
      if (!io.hugeDisabled) {
        if (io.hwpt !== undefined && io.areas.length) refuse(Errno.EINVAL);
        for (const a of io.areas)
          if (a.iova % PAGE || (a.last - a.iova + 1n) % PAGE || a.va % PAGE) refuse(Errno.EADDRINUSE);
        io.hugeDisabled = true;
      }
    } else if (val === 1n) io.hugeDisabled = false;
    else refuse(Errno.EINVAL);
    return val;
  }
}
