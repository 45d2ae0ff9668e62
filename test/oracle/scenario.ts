/**
 * Oracle scenarios: the JSON format shared by the C generator (tools/oracle/gen-c.ts, which runs a
 * scenario on the real kernel) and the TypeScript replayer (test/oracle/replay.ts, which runs it
 * against the emulator). Both print the same one-line-per-step transcript; this module holds the
 * parsing, validation and the formatting rules both sides must follow.
 *
 * Scenario file: `{ "description": "...", "steps": [ ... ] }` (a bare array of steps is accepted).
 * Steps (every step may have a "label"; "comment" keys are ignored):
 *
 *   { "open": "f0" }                         open /dev/iommu as fd name f0
 *   { "close": "f0" }
 *   { "mmap": "b0", "length": "0x4000", "flags": "private|anon", "fill": 170, "align": "0x1000" }
 *       flags: shared | private | anon | hugetlb (combined with '|'); the buffer's address has its
 *       lowest set bit exactly at `align` (default 0x1000, 0x200000 for hugetlb), so automatic
 *       IOVA allocation (which looks at the user VA's low bits) is the same in the VM and emulator.
 *   { "munmap": "b0", "offset": "0x1000", "length": "0x1000" }   (offset/length optional: whole)
 *   { "array": "r0", "struct": "iommu_iova_range", "count": 4, "items": [ {"start": 0, "last": "0xfff"} ],
 *     "fill": 255 }                          a buffer holding an array of structs (count ≥ items)
 *   { "ioctl": "IOMMU_IOAS_MAP" | number, "fd": "f0", "struct": "iommu_ioas_map", "size": 40,
 *     "fields": { "flags": 7, "user_va": "buf:b0+0x1000" }, "tail": "00 07", "readable": 20,
 *     "arg": "null", "save": { "ioas1": "out_ioas_id" }, "print_buffers": [ ... ], "groups": [...] }
 *       size: the value of the struct's size word (`size`, or `argsz` for VFIO structs), default
 *         sizeof. The argument buffer is max(sizeof, size, sizeof + tail) bytes, zero except for
 *         the given fields and the tail (bytes placed at offset sizeof).
 *       readable: only the first N bytes of the argument are mapped (the rest is an unmapped page).
 *       arg: pass this value as the ioctl argument instead of a struct ("null", "unmapped", a
 *         number such as a VFIO extension id, "buf:b0"). No fields are printed then.
 *       groups: union members to print for structs with dotted (union) fields, besides those named
 *         in fields/save.
 *     print_buffers: [ { "buf": "r0", "struct": "iommu_iova_range", "count": 3, "offset": 0 },
 *                      { "buf": "b0", "offset": "0x10", "length": 16 } ]
 *   { "read": "$ffd", "addr": "buf:b1+0x28", "count": 40, "print_buffers": [ ... ] }
 *   { "write": "$ffd", "addr": "buf:b1", "count": 8 }
 *       read(2)/write(2) on any fd: an fd name (from "open") or an expression, usually a saved
 *       output such as out_fault_fd. Prints `label | ret=R errno=E | -` (+ dumps).
 *   { "poll": "$ffd", "events": "0x5" }
 *       poll(2) of one fd with timeout 0; events default 0x3c7 (IN|PRI|OUT|RDNORM|RDBAND|WRNORM|
 *       WRBAND). Prints `label | ret=R errno=E | revents=0x..` (POLLNVAL 0x20 for a closed fd).
 *   { "close": "$ffd" }                      close(2) of an fd given by an expression (prints the
 *                                            real return value, unlike the close of a named fd)
 *   { "memlock": "0x2000" }                  setrlimit(RLIMIT_MEMLOCK) (soft = hard = the value) and
 *                                            drop CAP_IPC_LOCK, so that page containers created from
 *                                            then on are charged (programs start as root)
 *
 * Values: JSON numbers, or strings of terms joined left to right by `+`, `-`, `|`: hex/decimal
 * numbers, constants from layout-data.json (plus U64_MAX, U32_MAX, PAGE_SIZE, HPAGE_SIZE),
 * `$name` (a saved output), `buf:NAME` (a buffer's address), `unmapped` (an address in a region
 * that is never mapped), `null` (0).
 *
 * Output, one line per step: `label | ret=R errno=NAME | fields | dumps` where fields are
 * `name=0x..` for every field of the struct after the call (user pointers printed relative to
 * buffers, e.g. `buf:b0+0x1000`, never as raw addresses), or `-` if no struct was passed; the dump
 * part is present only when print_buffers is given.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface FieldLayout {
  offset: number;
  size: number;
}
export interface StructLayout {
  size: number;
  fields: Record<string, FieldLayout>;
}
export interface Layout {
  kernel: string;
  structs: Record<string, StructLayout>;
  ioctls: Record<string, number>;
  constants: Record<string, number>;
}

export const ORACLE_DIR = dirname(fileURLToPath(import.meta.url));
export const SCENARIO_DIR = join(ORACLE_DIR, 'scenarios');
export const TRANSCRIPT_DIR = join(ORACLE_DIR, 'transcripts');

let cachedLayout: Layout | undefined;
export function loadLayout(): Layout {
  cachedLayout ??= JSON.parse(
    readFileSync(join(ORACLE_DIR, '..', 'uapi', 'layout-data.json'), 'utf8'),
  ) as Layout;
  return cachedLayout;
}

export const U64_MASK = (1n << 64n) - 1n;
export const PAGE = 4096n;
export const HPAGE = 0x200000n;
/** Size of the never-mapped region `unmapped` points into. */
export const UNMAPPED_LEN = 0x100000n;
/** Largest argument buffer a step may ask for without `readable`. */
export const MAX_ARG = 0x100000;

/** User-pointer fields, printed buffer-relative. Fields given a buf:/unmapped value are added per step. */
export const POINTER_FIELDS: Record<string, readonly string[]> = {
  iommu_ioas_iova_ranges: ['allowed_iovas'],
  iommu_ioas_allow_iovas: ['allowed_iovas'],
  iommu_ioas_map: ['user_va'],
  iommu_hwpt_alloc: ['data_uptr'],
  iommu_hw_info: ['data_uptr'],
  iommu_hwpt_get_dirty_bitmap: ['data'],
  iommu_hwpt_invalidate: ['data_uptr'],
  iommu_test_cmd: ['check_map.uptr', 'check_refs.uptr', 'access_pages.uptr', 'access_rw.uptr', 'dirty.uptr'],
  vfio_iommu_type1_dma_map: ['vaddr'],
};

// ---------------------------------------------------------------------------------------------
// Expressions

export type Term =
  | { kind: 'num'; value: bigint }
  | { kind: 'saved'; name: string }
  | { kind: 'buf'; name: string }
  | { kind: 'unmapped' };
export type Op = '+' | '-' | '|';
export interface Expr {
  text: string;
  terms: { op: Op; term: Term }[];
  /** Contains buf: or unmapped: the value is a user address. */
  isPointer: boolean;
}

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const BUILTIN_CONSTANTS: Record<string, bigint> = {
  U64_MAX: U64_MASK,
  U32_MAX: 0xffffffffn,
  PAGE_SIZE: PAGE,
  HPAGE_SIZE: HPAGE,
  null: 0n,
};

export class ScenarioError extends Error {}

function parseTerm(tok: string, layout: Layout, where: string): Term {
  if (/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(tok)) return { kind: 'num', value: BigInt(tok) & U64_MASK };
  if (tok.startsWith('$')) {
    const name = tok.slice(1);
    if (!NAME_RE.test(name)) throw new ScenarioError(`${where}: bad saved name ${tok}`);
    return { kind: 'saved', name };
  }
  if (tok.startsWith('buf:')) {
    const name = tok.slice(4);
    if (!NAME_RE.test(name)) throw new ScenarioError(`${where}: bad buffer name ${tok}`);
    return { kind: 'buf', name };
  }
  if (tok === 'unmapped') return { kind: 'unmapped' };
  const b = BUILTIN_CONSTANTS[tok];
  if (b !== undefined) return { kind: 'num', value: b };
  const c = layout.constants[tok] ?? layout.ioctls[tok];
  if (c !== undefined) return { kind: 'num', value: BigInt(c) };
  throw new ScenarioError(`${where}: unknown term '${tok}'`);
}

export function parseExpr(v: unknown, layout: Layout, where: string): Expr {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new ScenarioError(`${where}: ${v} is not a safe integer`);
    return { text: String(v), terms: [{ op: '+', term: { kind: 'num', value: BigInt(v) & U64_MASK } }], isPointer: false };
  }
  if (typeof v !== 'string') throw new ScenarioError(`${where}: expected a number or a string, got ${JSON.stringify(v)}`);
  const terms: { op: Op; term: Term }[] = [];
  let rest = v.trim();
  if (rest === '') throw new ScenarioError(`${where}: empty value`);
  let first = true;
  while (rest.length > 0) {
    const m = /^([|+-])?\s*([^|+\-\s]+)\s*/.exec(rest);
    if (!m || m[2] === undefined) throw new ScenarioError(`${where}: cannot parse '${v}'`);
    const opText = m[1];
    if (!first && opText === undefined) throw new ScenarioError(`${where}: missing operator in '${v}'`);
    if (first && opText === '|') throw new ScenarioError(`${where}: leading '|' in '${v}'`);
    const op: Op = (opText as Op | undefined) ?? '+';
    terms.push({ op, term: parseTerm(m[2], layout, where) });
    rest = rest.slice(m[0].length);
    first = false;
  }
  const isPointer = terms.some((t) => t.term.kind === 'buf' || t.term.kind === 'unmapped');
  return { text: v, terms, isPointer };
}

export interface EvalEnv {
  saved(name: string): bigint;
  buf(name: string): bigint;
  unmapped(): bigint;
}

export function applyOp(acc: bigint, op: Op, x: bigint): bigint {
  switch (op) {
    case '+':
      return (acc + x) & U64_MASK;
    case '-':
      return (acc - x) & U64_MASK;
    case '|':
      return acc | x;
  }
}

export function evalExpr(e: Expr, env: EvalEnv): bigint {
  let acc = 0n;
  for (const { op, term } of e.terms) {
    let x: bigint;
    switch (term.kind) {
      case 'num':
        x = term.value;
        break;
      case 'saved':
        x = env.saved(term.name);
        break;
      case 'buf':
        x = env.buf(term.name);
        break;
      case 'unmapped':
        x = env.unmapped();
        break;
    }
    acc = applyOp(acc, op, x);
  }
  return acc;
}

/** Value of an expression that must not depend on run-time values. */
export function constExpr(e: Expr, where: string): bigint {
  return evalExpr(e, {
    saved: () => {
      throw new ScenarioError(`${where}: must be a constant`);
    },
    buf: () => {
      throw new ScenarioError(`${where}: must be a constant`);
    },
    unmapped: () => {
      throw new ScenarioError(`${where}: must be a constant`);
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Steps

export type MapKind = 'shared' | 'private' | 'hugetlb';

export interface Dump {
  buf: string;
  offset: bigint;
  /** Print `count` structs of this type, else `length` raw bytes. */
  struct?: string;
  count: number;
  length: number;
}

/** The fd of a read/write/poll/close step: a named /dev/iommu fd or an expression. */
export type FdRef = { name: string } | { expr: Expr };

export const POLL_DEFAULT_EVENTS = 0x3c7;
export const POLLNVAL = 0x20;
const POLLERR_HUP = 0x18;
/** revents of poll(2) for a file whose poll op returned `mask` and a request of `events`. */
export function pollRevents(mask: number, events: number): number {
  return mask & (events | POLLERR_HUP);
}

export type Step =
  | { kind: 'open'; label: string; fd: string }
  | { kind: 'close'; label: string; fd: string }
  | { kind: 'closefd'; label: string; fd: FdRef }
  | { kind: 'read' | 'write'; label: string; fd: FdRef; addr: Expr; count: bigint; dumps: Dump[] }
  | { kind: 'poll'; label: string; fd: FdRef; events: number }
  | { kind: 'mmap'; label: string; buf: string; length: bigint; mapKind: MapKind; align: bigint; fill?: number }
  | { kind: 'munmap'; label: string; buf: string; offset?: bigint; length?: bigint }
  | { kind: 'memlock'; label: string; bytes: bigint }
  | {
      kind: 'array';
      label: string;
      buf: string;
      struct: string;
      count: number;
      items: [string, Expr][][];
      fill?: number;
    }
  | IoctlStep;

export interface IoctlStep {
  kind: 'ioctl';
  label: string;
  fd: string;
  cmd: bigint;
  /** Struct passed as the argument (absent when `arg` is given). */
  struct?: string;
  /** Raw argument instead of a struct. */
  arg?: Expr;
  /** Bytes of the argument buffer: max(sizeof, size, sizeof + tail). */
  argLen: number;
  /** Bytes of the argument that are mapped (the rest faults). */
  readable: number;
  fields: [string, Expr][];
  tail: Uint8Array;
  save: [string, string][];
  /** Fields printed after the call, in layout order. */
  printFields: string[];
  pointerFields: Set<string>;
  dumps: Dump[];
}

export interface Scenario {
  name: string;
  description: string;
  steps: Step[];
  /** Names, in first-use order (the C program indexes its tables with these). */
  fds: string[];
  bufs: string[];
  saved: string[];
  /** Every struct the scenario uses. */
  structs: string[];
}

const STEP_KEYS: Record<string, readonly string[]> = {
  open: ['open'],
  close: ['close'],
  mmap: ['mmap', 'length', 'flags', 'fill', 'align'],
  munmap: ['munmap', 'offset', 'length'],
  memlock: ['memlock'],
  array: ['array', 'struct', 'count', 'items', 'fill'],
  ioctl: ['ioctl', 'fd', 'struct', 'size', 'fields', 'tail', 'readable', 'arg', 'save', 'print_buffers', 'groups'],
  read: ['read', 'addr', 'count', 'print_buffers'],
  write: ['write', 'addr', 'count', 'print_buffers'],
  poll: ['poll', 'events'],
};

function sizeWord(s: StructLayout): string | undefined {
  if (s.fields['argsz']) return 'argsz';
  if (s.fields['size']) return 'size';
  return undefined;
}

function parseByte(v: unknown, where: string): number {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 255) return v;
  if (typeof v === 'string' && /^(0x[0-9a-fA-F]{1,2}|[0-9]{1,3})$/.test(v)) {
    const n = Number(v);
    if (n <= 255) return n;
  }
  throw new ScenarioError(`${where}: expected a byte, got ${JSON.stringify(v)}`);
}

function parseHexBytes(v: unknown, where: string): Uint8Array {
  if (typeof v !== 'string') throw new ScenarioError(`${where}: tail must be a string of hex bytes`);
  const parts = v.trim().split(/\s+/).filter((p) => p !== '');
  return Uint8Array.from(parts.map((p) => {
    if (!/^[0-9a-fA-F]{2}$/.test(p)) throw new ScenarioError(`${where}: bad tail byte '${p}'`);
    return parseInt(p, 16);
  }));
}

function toSafeNumber(v: bigint, where: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ScenarioError(`${where}: too large`);
  return Number(v);
}

/** Printable fields of a struct: all plain fields plus those of the union members in `groups`. */
export function fieldsToPrint(s: StructLayout, groups: Set<string>): string[] {
  return Object.entries(s.fields)
    .filter(([name, f]) => {
      if (f.size === 0) return false;
      const dot = name.indexOf('.');
      return dot < 0 || groups.has(name.slice(0, dot));
    })
    .map(([name]) => name);
}

function groupOf(field: string): string | undefined {
  const dot = field.indexOf('.');
  return dot < 0 ? undefined : field.slice(0, dot);
}

export function parseScenario(name: string, json: unknown, layout: Layout = loadLayout()): Scenario {
  let description = '';
  let rawSteps: unknown;
  if (Array.isArray(json)) rawSteps = json;
  else if (json && typeof json === 'object') {
    const o = json as Record<string, unknown>;
    description = typeof o['description'] === 'string' ? o['description'] : '';
    rawSteps = o['steps'];
  }
  if (!Array.isArray(rawSteps)) throw new ScenarioError(`${name}: no steps`);

  const fds: string[] = [];
  const bufs: string[] = [];
  const saved: string[] = [];
  const structs = new Set<string>();
  const openFds = new Set<string>();
  const seenBufs = new Set<string>();
  const steps: Step[] = [];

  const useStruct = (s: unknown, where: string): [string, StructLayout] => {
    if (typeof s !== 'string' || !layout.structs[s]) throw new ScenarioError(`${where}: unknown struct ${JSON.stringify(s)}`);
    structs.add(s);
    return [s, layout.structs[s]];
  };
  const checkRefs = (e: Expr, where: string) => {
    for (const { term } of e.terms) {
      if (term.kind === 'saved' && !saved.includes(term.name)) throw new ScenarioError(`${where}: $${term.name} is not saved before`);
      if (term.kind === 'buf' && !seenBufs.has(term.name)) throw new ScenarioError(`${where}: buffer ${term.name} not mapped before`);
    }
  };
  const addBuf = (b: unknown, where: string): string => {
    if (typeof b !== 'string' || !NAME_RE.test(b)) throw new ScenarioError(`${where}: bad buffer name`);
    if (!bufs.includes(b)) bufs.push(b);
    seenBufs.add(b);
    return b;
  };

  rawSteps.forEach((raw, i) => {
    const where = `${name} step ${i + 1}`;
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new ScenarioError(`${where}: not an object`);
    const o = raw as Record<string, unknown>;
    const kind = (['open', 'close', 'mmap', 'munmap', 'memlock', 'array', 'ioctl', 'read', 'write', 'poll'] as const).find((k) => k in o);
    if (!kind) {
      if (Object.keys(o).every((k) => k === 'comment')) return;
      throw new ScenarioError(`${where}: unknown step ${JSON.stringify(o)}`);
    }
    for (const k of Object.keys(o)) {
      if (k !== 'label' && k !== 'comment' && !STEP_KEYS[kind]!.includes(k)) throw new ScenarioError(`${where}: unknown key '${k}' for a ${kind} step`);
    }
    const label = typeof o['label'] === 'string' ? o['label'] : undefined;
    if (label !== undefined && label.includes('|')) throw new ScenarioError(`${where}: label may not contain '|'`);
    const ex = (v: unknown, w: string) => {
      const e = parseExpr(v, layout, `${where} ${w}`);
      checkRefs(e, `${where} ${w}`);
      return e;
    };
    const parseDumps = (raw: unknown): Dump[] => {
      const dumps: Dump[] = [];
      if (raw === undefined) return dumps;
      if (!Array.isArray(raw)) throw new ScenarioError(`${where}: print_buffers must be an array`);
      for (const d of raw as unknown[]) {
        const dd = d as Record<string, unknown>;
        const buf = dd['buf'];
        if (typeof buf !== 'string' || !seenBufs.has(buf)) throw new ScenarioError(`${where}: print_buffers: unknown buffer`);
        const offset = dd['offset'] === undefined ? 0n : constExpr(ex(dd['offset'], 'offset'), where);
        const dump: Dump = { buf, offset, count: 0, length: 0 };
        if (dd['struct'] !== undefined) {
          const [sn] = useStruct(dd['struct'], where);
          dump.struct = sn;
          dump.count = Number(dd['count'] ?? 1);
        } else dump.length = Number(dd['length'] ?? 16);
        if (!Number.isInteger(dump.count) || !Number.isInteger(dump.length) || dump.count < 0 || dump.length < 0 || dump.length > 4096 || dump.count > 256)
          throw new ScenarioError(`${where}: bad dump size`);
        dumps.push(dump);
      }
      return dumps;
    };
    const fdRef = (v: unknown): FdRef => {
      if (typeof v === 'string' && NAME_RE.test(v) && !(v in BUILTIN_CONSTANTS) && layout.constants[v] === undefined) {
        if (!fds.includes(v)) throw new ScenarioError(`${where}: fd ${v} never opened`);
        return { name: v };
      }
      return { expr: ex(v, 'fd') };
    };
    const fdText = (r: FdRef) => ('name' in r ? r.name : r.expr.text);
    switch (kind) {
      case 'read':
      case 'write': {
        const fd = fdRef(o[kind]);
        if (o['addr'] === undefined || o['count'] === undefined) throw new ScenarioError(`${where}: ${kind} needs addr and count`);
        const step: Step = {
          kind,
          label: label ?? `${kind} ${fdText(fd)}`,
          fd,
          addr: ex(o['addr'], 'addr'),
          count: constExpr(ex(o['count'], 'count'), where),
          dumps: parseDumps(o['print_buffers']),
        };
        steps.push(step);
        return;
      }
      case 'poll': {
        const fd = fdRef(o['poll']);
        const events = o['events'] === undefined ? POLL_DEFAULT_EVENTS : Number(constExpr(ex(o['events'], 'events'), where));
        if (events < 0 || events > 0xffff) throw new ScenarioError(`${where}: events must fit in a short`);
        steps.push({ kind, label: label ?? `poll ${fdText(fd)}`, fd, events });
        return;
      }
      case 'open':
      case 'close': {
        if (kind === 'close' && (typeof o['close'] !== 'string' || !NAME_RE.test(o['close']))) {
          const fd = fdRef(o['close']);
          steps.push({ kind: 'closefd', label: label ?? `close ${fdText(fd)}`, fd });
          return;
        }
        const fd = o[kind];
        if (typeof fd !== 'string' || !NAME_RE.test(fd)) throw new ScenarioError(`${where}: bad fd name`);
        if (kind === 'open') {
          if (!fds.includes(fd)) fds.push(fd);
          openFds.add(fd);
        } else if (!fds.includes(fd)) throw new ScenarioError(`${where}: fd ${fd} never opened`);
        steps.push({ kind, label: label ?? `${kind} ${fd}`, fd });
        return;
      }
      case 'mmap': {
        const buf = addBuf(o['mmap'], where);
        const flags = typeof o['flags'] === 'string' ? o['flags'].split('|').map((s) => s.trim()) : ['private'];
        for (const f of flags) if (!['shared', 'private', 'anon', 'hugetlb'].includes(f)) throw new ScenarioError(`${where}: bad mmap flag ${f}`);
        const mapKind: MapKind = flags.includes('hugetlb') ? 'hugetlb' : flags.includes('shared') ? 'shared' : 'private';
        const length = constExpr(ex(o['length'], 'length'), where);
        const gran = mapKind === 'hugetlb' ? HPAGE : PAGE;
        const align = o['align'] === undefined ? gran : constExpr(ex(o['align'], 'align'), where);
        if (length === 0n) throw new ScenarioError(`${where}: length 0`);
        if (align < gran || (align & (align - 1n)) !== 0n) throw new ScenarioError(`${where}: align must be a power of two ≥ ${gran}`);
        const step: Step = { kind, label: label ?? `mmap ${buf}`, buf, length, mapKind, align };
        if (o['fill'] !== undefined) step.fill = parseByte(o['fill'], `${where} fill`);
        steps.push(step);
        return;
      }
      case 'munmap': {
        const buf = o['munmap'];
        if (typeof buf !== 'string' || !seenBufs.has(buf)) throw new ScenarioError(`${where}: unknown buffer`);
        const step: Step = { kind, label: label ?? `munmap ${buf}`, buf };
        if (o['offset'] !== undefined) step.offset = constExpr(ex(o['offset'], 'offset'), where);
        if (o['length'] !== undefined) step.length = constExpr(ex(o['length'], 'length'), where);
        if ((step.offset !== undefined && (step.offset & (PAGE - 1n)) !== 0n) || (step.length !== undefined && (step.length & (PAGE - 1n)) !== 0n))
          throw new ScenarioError(`${where}: partial munmap must be page aligned`);
        steps.push(step);
        return;
      }
      case 'memlock': {
        const bytes = constExpr(ex(o['memlock'], 'memlock'), where);
        steps.push({ kind, label: label ?? `memlock ${'0x' + bytes.toString(16)} (RLIMIT_MEMLOCK, CAP_IPC_LOCK dropped)`, bytes });
        return;
      }
      case 'array': {
        const [sname, s] = useStruct(o['struct'], where);
        const rawItems = o['items'] ?? [];
        if (!Array.isArray(rawItems)) throw new ScenarioError(`${where}: items must be an array`);
        const items = rawItems.map((it, j) => {
          if (!it || typeof it !== 'object') throw new ScenarioError(`${where}: item ${j} not an object`);
          return Object.entries(it as Record<string, unknown>).map(([f, v]): [string, Expr] => {
            if (!s.fields[f]) throw new ScenarioError(`${where}: ${sname} has no field ${f}`);
            return [f, ex(v, `item ${j}.${f}`)];
          });
        });
        const count = o['count'] === undefined ? items.length : Number(o['count']);
        if (!Number.isInteger(count) || count < items.length) throw new ScenarioError(`${where}: count must be ≥ the number of items`);
        const buf = addBuf(o['array'], where);
        const step: Step = { kind, label: label ?? `array ${buf}`, buf, struct: sname, count, items };
        if (o['fill'] !== undefined) step.fill = parseByte(o['fill'], `${where} fill`);
        steps.push(step);
        return;
      }
      case 'ioctl': {
        const ioctlRaw = o['ioctl'];
        let cmd: bigint;
        let cmdName: string;
        if (typeof ioctlRaw === 'string' && layout.ioctls[ioctlRaw] !== undefined) {
          cmd = BigInt(layout.ioctls[ioctlRaw]);
          cmdName = ioctlRaw;
        } else {
          cmd = constExpr(ex(ioctlRaw, 'ioctl'), where);
          cmdName = `ioctl 0x${cmd.toString(16)}`;
        }
        const fd = o['fd'] === undefined ? 'f0' : o['fd'];
        if (typeof fd !== 'string' || !fds.includes(fd)) throw new ScenarioError(`${where}: fd ${String(fd)} never opened`);
        const step: IoctlStep = {
          kind: 'ioctl',
          label: label ?? cmdName,
          fd,
          cmd,
          argLen: 0,
          readable: 0,
          fields: [],
          tail: new Uint8Array(0),
          save: [],
          printFields: [],
          pointerFields: new Set(),
          dumps: [],
        };
        if (o['arg'] !== undefined) {
          if (o['struct'] !== undefined || o['fields'] !== undefined || o['save'] !== undefined || o['tail'] !== undefined || o['size'] !== undefined)
            throw new ScenarioError(`${where}: 'arg' excludes struct/fields/size/tail/save`);
          step.arg = ex(o['arg'], 'arg');
        } else if (o['struct'] !== undefined) {
          const [sname, s] = useStruct(o['struct'], where);
          step.struct = sname;
          const groups = new Set<string>();
          const rawFields = o['fields'] ?? {};
          if (typeof rawFields !== 'object' || rawFields === null) throw new ScenarioError(`${where}: fields must be an object`);
          const sw = sizeWord(s);
          let size = BigInt(s.size);
          if (o['size'] !== undefined) size = constExpr(ex(o['size'], 'size'), where);
          if (sw) step.fields.push([sw, { text: String(size), terms: [{ op: '+', term: { kind: 'num', value: size } }], isPointer: false }]);
          for (const [f, v] of Object.entries(rawFields as Record<string, unknown>)) {
            const fl = s.fields[f];
            if (!fl || fl.size === 0) throw new ScenarioError(`${where}: ${sname} has no field ${f}`);
            if (f === sw) throw new ScenarioError(`${where}: give the size word with "size", not in fields`);
            if (fl.size > 8) throw new ScenarioError(`${where}: field ${f} is wider than 8 bytes`);
            const e = ex(v, f);
            step.fields.push([f, e]);
            if (e.isPointer) step.pointerFields.add(f);
            const g = groupOf(f);
            if (g) groups.add(g);
          }
          for (const p of POINTER_FIELDS[sname] ?? []) step.pointerFields.add(p);
          if (o['tail'] !== undefined) step.tail = parseHexBytes(o['tail'], `${where} tail`);
          if (o['save'] !== undefined) {
            for (const [n, f] of Object.entries(o['save'] as Record<string, unknown>)) {
              if (!NAME_RE.test(n)) throw new ScenarioError(`${where}: bad saved name ${n}`);
              if (typeof f !== 'string' || !s.fields[f] || s.fields[f].size > 8 || s.fields[f].size === 0)
                throw new ScenarioError(`${where}: cannot save field ${String(f)}`);
              step.save.push([n, f]);
              const g = groupOf(f);
              if (g) groups.add(g);
            }
          }
          if (o['groups'] !== undefined) {
            if (!Array.isArray(o['groups'])) throw new ScenarioError(`${where}: groups must be an array`);
            for (const g of o['groups']) groups.add(String(g));
          }
          step.printFields = fieldsToPrint(s, groups);
          const sizeNum = toSafeNumber(size, `${where} size`);
          const wanted = Math.max(s.size, s.size + step.tail.length, sizeNum);
          step.argLen = wanted <= MAX_ARG ? wanted : Math.max(s.size, s.size + step.tail.length);
          if (o['readable'] !== undefined) {
            const r = Number(o['readable']);
            if (!Number.isInteger(r) || r < 0 || r > MAX_ARG) throw new ScenarioError(`${where}: bad readable`);
            step.readable = r;
          } else {
            if (wanted > MAX_ARG) throw new ScenarioError(`${where}: size above ${MAX_ARG} needs 'readable'`);
            step.readable = step.argLen;
          }
        } else {
          step.arg = parseExpr(0, layout, where);
        }
        // saves become visible to later steps
        for (const [n] of step.save) if (!saved.includes(n)) saved.push(n);
        step.dumps = parseDumps(o['print_buffers']);
        steps.push(step);
        return;
      }
    }
  });
  return { name, description, steps, fds, bufs, saved, structs: [...structs] };
}

export function loadScenarioFile(path: string, layout?: Layout): Scenario {
  const base = path.replace(/^.*\//, '').replace(/\.json$/, '');
  return parseScenario(base, JSON.parse(readFileSync(path, 'utf8')), layout);
}

export function listScenarios(): string[] {
  return readdirSync(SCENARIO_DIR)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -5))
    .sort();
}

// ---------------------------------------------------------------------------------------------
// Formatting shared by both sides

export function hex(v: bigint): string {
  return '0x' + v.toString(16);
}

export function hexBytes(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ');
}

/** Little-endian unsigned value of up to 8 bytes. */
export function readLE(b: Uint8Array, off: number, size: number): bigint {
  let v = 0n;
  for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[off + i] ?? 0);
  return v;
}

export function writeLE(b: Uint8Array, off: number, size: number, v: bigint): void {
  for (let i = 0; i < size; i++) {
    b[off + i] = Number((v >> BigInt(8 * i)) & 0xffn);
  }
}

/** Transcript lines of a file, without comments and blank lines. */
export function transcriptLines(text: string): string[] {
  return text.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
}
