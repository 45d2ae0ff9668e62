/**
 * A small declarative codec for the fixed-layout C structs of the iommufd uAPI.
 *
 *   export const IommuDestroy = defineStruct('iommu_destroy', 8, { size: u32(0), id: u32(4) });
 *   export type IommuDestroy = Decoded<typeof IommuDestroy>;   // { size: number; id: number }
 *
 * Offsets are given explicitly (not computed from C alignment rules) because they are facts of
 * the ABI that test/uapi checks against the compiler's view of the real headers. Everything is
 * little-endian: the emulator models x86-64/arm64 user space only.
 */

export type FieldKind = 'u8' | 'u16' | 'u32' | 'u64' | 'bytes' | 'struct';

export interface FieldSpec<K extends FieldKind = FieldKind> {
  readonly kind: K;
  readonly offset: number;
  readonly size: number;
}

/** A nested struct member (e.g. a VFIO capability header), decoded as a nested object. */
export interface StructFieldSpec<F extends Fields = Fields> extends FieldSpec<'struct'> {
  readonly def: StructDef<F>;
}

// StructDef<F> is invariant in F (F appears in both decode's result and encode's argument), so a
// nested definition can only be accepted through `any`; FieldValue still sees the precise type.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyFieldSpec = FieldSpec<'u8' | 'u16' | 'u32' | 'u64' | 'bytes'> | StructFieldSpec<any>;

export type Fields = { readonly [name: string]: AnyFieldSpec };

export const u8 = (offset: number): FieldSpec<'u8'> => ({ kind: 'u8', offset, size: 1 });
export const u16 = (offset: number): FieldSpec<'u16'> => ({ kind: 'u16', offset, size: 2 });
export const u32 = (offset: number): FieldSpec<'u32'> => ({ kind: 'u32', offset, size: 4 });
export const u64 = (offset: number): FieldSpec<'u64'> => ({ kind: 'u64', offset, size: 8 });
/** A fixed-size byte array such as `__u8 __reserved[3]`; decoded as a copy. */
export const bytes = (offset: number, size: number): FieldSpec<'bytes'> => ({
  kind: 'bytes',
  offset,
  size,
});
export const struct = <F extends Fields>(offset: number, def: StructDef<F>): StructFieldSpec<F> => ({
  kind: 'struct',
  offset,
  size: def.size,
  def,
});

type FieldValue<S> =
  S extends StructFieldSpec<infer F>
    ? DecodedFields<F>
    : S extends FieldSpec<'u64'>
      ? bigint
      : S extends FieldSpec<'bytes'>
        ? Uint8Array
        : number;

export type DecodedFields<F extends Fields> = { -readonly [K in keyof F]: FieldValue<F[K]> };

/** The plain-object type a struct definition decodes to. */
export type Decoded<D> = D extends StructDef<infer F> ? DecodedFields<F> : never;

/**
 * A struct definition. Without a type argument it means "some struct": `any` there (rather than
 * `Fields`) because StructDef<F> is invariant in F, and tables of mixed definitions must accept
 * every specific one without casts.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export interface StructDef<F extends Fields = any> {
  /** The kernel's struct name (`iommu_ioas_map`), used in explanations. */
  readonly name: string;
  /** sizeof(struct), including any padding. */
  readonly size: number;
  readonly fields: F;
  /** Field names in offset order. */
  readonly keys: readonly (keyof F & string)[];
  /** Decode `size` bytes starting at `offset`; throws RangeError if there are fewer. */
  decode(bytes: Uint8Array, offset?: number): DecodedFields<F>;
  /**
   * Write every field into `into` (a new zeroed buffer of `size` bytes by default) at `offset`
   * and return `into`. Bytes no field covers (padding, other union members) are left as they
   * are, so encoding into the kernel's copy of a user buffer reproduces what the kernel writes back.
   * Number fields are truncated to their width like a C assignment; no range checks (hot path).
   */
  encode(value: DecodedFields<F>, into?: Uint8Array, offset?: number): Uint8Array;
  /**
   * Store every field of `value` as a C assignment to the field would, in place, and return it:
   * the value the kernel would find after the caller wrote it into the struct. Integer fields take
   * a number or a bigint (truncated toward zero, then reduced modulo 2^width: -1 in a u64 is
   * U64_MAX, 2^32 + 1 in a u32 is 1; NaN, infinities and non-numbers are 0); byte arrays are cut
   * or zero-padded to their size; nested structs are normalised recursively. This is the
   * truncation encode() applies, made available to callers that hand typed commands straight to
   * a handler (the typed door), so both doors see the same field values.
   */
  normalize(value: DecodedFields<F>): DecodedFields<F>;
  /** An all-zero value, as the kernel's memset/zero-filled copy would decode. */
  zero(): DecodedFields<F>;
  /** zero() with some fields set. */
  make(partial?: Partial<DecodedFields<F>>): DecodedFields<F>;
  /** offsetofend(struct, field): where the field's last byte ends. */
  offsetofEnd(key: keyof F & string): number;
}

// Small integer tags so decode/encode switch on a Smi instead of comparing strings.
const K_U8 = 0;
const K_U16 = 1;
const K_U32 = 2;
const K_U64 = 3;
const K_BYTES = 4;
const K_STRUCT = 5;
const KIND_TAG: Record<FieldKind, number> = {
  u8: K_U8,
  u16: K_U16,
  u32: K_U32,
  u64: K_U64,
  bytes: K_BYTES,
  struct: K_STRUCT,
};
const NATURAL_ALIGN: Partial<Record<FieldKind, number>> = { u16: 2, u32: 4, u64: 8 };

// Creating a DataView costs more than decoding a small struct, and the daemon decodes many
// structs out of the same few buffers: remember the view of the last buffer seen.
let lastBuffer: ArrayBufferLike | undefined;
let lastView: DataView | undefined;
function viewOf(buffer: ArrayBufferLike): DataView {
  if (buffer !== lastBuffer || !lastView) {
    lastView = new DataView(buffer);
    lastBuffer = buffer;
  }
  return lastView;
}

/**
 * Whether codecs compile a decoder and an encoder of their own (new Function) the first time
 * they are used: an object literal of fixed shape and constant offsets, about 5x faster than
 * the interpreted loop, which stays for runtimes that forbid code generation (and tests).
 */
let generateCodecs = true;

/** Codecs first used after this call interpret their plan (false) or compile it (true, default). */
export function setStructCodegen(on: boolean): void {
  generateCodecs = on;
}

type DecodeFn = (bytes: Uint8Array, offset: number) => Record<string, unknown>;
type EncodeFn = (value: Record<string, unknown>, buf: Uint8Array, offset: number) => void;

class StructCodec<F extends Fields> implements StructDef<F> {
  readonly keys: readonly (keyof F & string)[];
  // Parallel arrays: the per-field plan precomputed once per definition.
  readonly #names: string[];
  readonly #tags: Uint8Array;
  readonly #offsets: Uint32Array;
  readonly #sizes: Uint32Array;
  readonly #nested: (StructDef | undefined)[];
  #decodeFn: DecodeFn | undefined;
  #encodeFn: EncodeFn | undefined;
  /** How the codec runs once used: its own generated functions, or the interpreted plan. */
  mode: 'generated' | 'interpreted' | undefined;

  constructor(
    readonly name: string,
    readonly size: number,
    readonly fields: F,
  ) {
    const entries = Object.entries(fields).sort((a, b) => a[1].offset - b[1].offset);
    this.keys = entries.map(([k]) => k as keyof F & string);
    this.#names = entries.map(([k]) => k);
    this.#tags = Uint8Array.from(entries, ([, s]) => KIND_TAG[s.kind]);
    this.#offsets = Uint32Array.from(entries, ([, s]) => s.offset);
    this.#sizes = Uint32Array.from(entries, ([, s]) => s.size);
    this.#nested = entries.map(([, s]) => (s.kind === 'struct' ? s.def : undefined));
    validate(name, size, entries);
  }

  decode(bytes: Uint8Array, offset = 0): DecodedFields<F> {
    if (offset < 0 || offset + this.size > bytes.length) {
      throw new RangeError(
        `struct ${this.name}: need ${this.size} bytes at offset ${offset}, buffer has ${bytes.length}`,
      );
    }
    if (!this.#decodeFn) this.#compile();
    return this.#decodeFn!(bytes, offset) as DecodedFields<F>;
  }

  /**
   * The generated pair: the struct's bytes are copied into a scratch buffer of this codec (so no
   * view of the caller's buffer is made, which for a small on-heap array would move it off the
   * heap), fields are read from or written to the scratch at constant offsets, and the decoded
   * value is one object literal.
   */
  #compile(): void {
    if (generateCodecs) {
      try {
        this.#generate();
        this.mode = 'generated';
        return;
      } catch {
        /* code generation is not allowed here: interpret */
      }
    }
    this.mode = 'interpreted';
    this.#decodeFn = (bytes, offset) => this.#decodeLoop(bytes, offset);
    this.#encodeFn = (value, buf, offset) => this.#encodeLoop(value, buf, offset);
  }

  #generate(): void {
    const scratch = new Uint8Array(this.size);
    const view = new DataView(scratch.buffer);
    const get: string[] = [];
    const set: string[] = [];
    for (let i = 0; i < this.#names.length; i++) {
      const key = JSON.stringify(this.#names[i]);
      const o = this.#offsets[i]!;
      const n = this.#sizes[i]!;
      switch (this.#tags[i]) {
        case K_U8:
          get.push(`${key}: S[${o}]`);
          set.push(`D.setUint8(${o}, v[${key}]);`);
          break;
        case K_U16:
          get.push(`${key}: D.getUint16(${o}, true)`);
          set.push(`D.setUint16(${o}, v[${key}], true);`);
          break;
        case K_U32:
          get.push(`${key}: D.getUint32(${o}, true)`);
          set.push(`D.setUint32(${o}, v[${key}], true);`);
          break;
        case K_U64:
          // BigInt.asUintN so -1n encodes as all-ones like a C u64 assignment would.
          get.push(`${key}: D.getBigUint64(${o}, true)`);
          set.push(`D.setBigUint64(${o}, BigInt.asUintN(64, v[${key}]), true);`);
          break;
        case K_BYTES:
          get.push(`${key}: b.slice(at + ${o}, at + ${o + n})`);
          set.push(`putBytes(S, ${o}, ${n}, v[${key}]);`);
          break;
        default:
          get.push(`${key}: N[${i}].decode(b, at + ${o})`);
          set.push(`N[${i}].encode(v[${key}], S, ${o});`);
      }
    }
    const copyIn = `for (let i = 0; i < ${this.size}; i++) S[i] = b[at + i];`;
    const make = new Function(
      'S',
      'D',
      'N',
      'putBytes',
      `return [function (b, at) { ${copyIn} return { ${get.join(', ')} }; },
        function (v, b, at) { ${copyIn} ${set.join(' ')} for (let i = 0; i < ${this.size}; i++) b[at + i] = S[i]; }];`,
    ) as (S: Uint8Array, D: DataView, N: (StructDef | undefined)[], put: typeof putBytes) => [DecodeFn, EncodeFn];
    [this.#decodeFn, this.#encodeFn] = make(scratch, view, this.#nested, putBytes);
  }

  #decodeLoop(bytes: Uint8Array, offset: number): Record<string, unknown> {
    const dv = viewOf(bytes.buffer);
    const base = bytes.byteOffset + offset;
    const out: Record<string, unknown> = {};
    const names = this.#names;
    const tags = this.#tags;
    const offs = this.#offsets;
    for (let i = 0; i < names.length; i++) {
      const o = base + offs[i]!;
      let v: unknown;
      switch (tags[i]) {
        case K_U8:
          v = dv.getUint8(o);
          break;
        case K_U16:
          v = dv.getUint16(o, true);
          break;
        case K_U32:
          v = dv.getUint32(o, true);
          break;
        case K_U64:
          v = dv.getBigUint64(o, true);
          break;
        case K_BYTES:
          v = bytes.slice(offset + offs[i]!, offset + offs[i]! + this.#sizes[i]!);
          break;
        default:
          v = this.#nested[i]!.decode(bytes, offset + offs[i]!);
      }
      out[names[i]!] = v;
    }
    return out;
  }

  encode(value: DecodedFields<F>, into?: Uint8Array, offset = 0): Uint8Array {
    const buf = into ?? new Uint8Array(this.size);
    if (offset < 0 || offset + this.size > buf.length) {
      throw new RangeError(
        `struct ${this.name}: need ${this.size} bytes at offset ${offset}, buffer has ${buf.length}`,
      );
    }
    if (!this.#encodeFn) this.#compile();
    this.#encodeFn!(value as Record<string, unknown>, buf, offset);
    return buf;
  }

  #encodeLoop(value: Record<string, unknown>, buf: Uint8Array, offset: number): void {
    const dv = viewOf(buf.buffer);
    const base = buf.byteOffset + offset;
    const src = value as Record<string, unknown>;
    const names = this.#names;
    const tags = this.#tags;
    const offs = this.#offsets;
    for (let i = 0; i < names.length; i++) {
      const o = base + offs[i]!;
      const v = src[names[i]!];
      switch (tags[i]) {
        case K_U8:
          dv.setUint8(o, v as number);
          break;
        case K_U16:
          dv.setUint16(o, v as number, true);
          break;
        case K_U32:
          dv.setUint32(o, v as number, true);
          break;
        case K_U64:
          // BigInt.asUintN so -1n encodes as all-ones like a C u64 assignment would.
          dv.setBigUint64(o, BigInt.asUintN(64, v as bigint), true);
          break;
        case K_BYTES:
          putBytes(buf, offset + offs[i]!, this.#sizes[i]!, v as Uint8Array);
          break;
        default:
          (this.#nested[i] as StructDef).encode(v as never, buf, offset + offs[i]!);
      }
    }
  }

  normalize(value: DecodedFields<F>): DecodedFields<F> {
    const obj = value as Record<string, unknown>;
    const names = this.#names;
    const tags = this.#tags;
    for (let i = 0; i < names.length; i++) {
      const k = names[i]!;
      const v = obj[k];
      switch (tags[i]) {
        case K_U8:
          if (typeof v !== 'number' || (v & 0xff) !== v) obj[k] = Number(BigInt.asUintN(8, toInteger(v)));
          break;
        case K_U16:
          if (typeof v !== 'number' || (v & 0xffff) !== v) obj[k] = Number(BigInt.asUintN(16, toInteger(v)));
          break;
        case K_U32:
          if (typeof v !== 'number' || v >>> 0 !== v) obj[k] = cU32(v);
          break;
        case K_U64:
          if (typeof v !== 'bigint' || v < 0n || v > U64_MAX_BIG) obj[k] = cU64(v);
          break;
        case K_BYTES: {
          const n = this.#sizes[i]!;
          if (!(v instanceof Uint8Array)) obj[k] = new Uint8Array(n);
          else if (v.length !== n) {
            const b = new Uint8Array(n);
            b.set(v.subarray(0, n));
            obj[k] = b;
          }
          break;
        }
        default: {
          const def = this.#nested[i]!;
          if (typeof v !== 'object' || v === null || v instanceof Uint8Array) obj[k] = def.zero();
          else def.normalize(v as never);
        }
      }
    }
    return value;
  }

  zero(): DecodedFields<F> {
    const out: Record<string, unknown> = {};
    for (let i = 0; i < this.#names.length; i++) {
      const tag = this.#tags[i];
      out[this.#names[i]!] =
        tag === K_U64
          ? 0n
          : tag === K_BYTES
            ? new Uint8Array(this.#sizes[i]!)
            : tag === K_STRUCT
              ? this.#nested[i]!.zero()
              : 0;
    }
    return out as DecodedFields<F>;
  }

  make(partial?: Partial<DecodedFields<F>>): DecodedFields<F> {
    return partial ? { ...this.zero(), ...partial } : this.zero();
  }

  offsetofEnd(key: keyof F & string): number {
    const spec = this.fields[key];
    if (!spec) throw new Error(`struct ${this.name} has no field ${key}`);
    return spec.offset + spec.size;
  }
}

const U64_MAX_BIG = (1n << 64n) - 1n;

/** A byte-array field: its first n bytes, zero-filled when it is shorter. */
function putBytes(buf: Uint8Array, start: number, n: number, arr: Uint8Array): void {
  if (arr.length >= n) buf.set(arr.length === n ? arr : arr.subarray(0, n), start);
  else {
    buf.set(arr, start);
    buf.fill(0, start + arr.length, start + n);
  }
}

/** The integer a C conversion starts from: numbers truncated toward zero; NaN, infinities and non-numbers 0. */
function toInteger(v: unknown): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? BigInt(Math.trunc(v)) : 0n;
  if (typeof v === 'boolean') return v ? 1n : 0n;
  return 0n;
}

/** `v` stored into a __u32 (the conversion normalize() applies to u32 fields). */
export function cU32(v: unknown): number {
  return typeof v === 'number' && v >>> 0 === v ? v : Number(BigInt.asUintN(32, toInteger(v)));
}

/** `v` stored into a __u64 (the conversion normalize() applies to u64 fields). */
export function cU64(v: unknown): bigint {
  return typeof v === 'bigint' && v >= 0n && v <= U64_MAX_BIG ? v : BigInt.asUintN(64, toInteger(v));
}

/** `v` stored into a C int (a file descriptor argument). */
export function cInt(v: unknown): number {
  return typeof v === 'number' && (v | 0) === v ? v : Number(BigInt.asIntN(32, toInteger(v)));
}

/** Definition-time sanity checks: a typo in an offset should fail at import, not at runtime. */
function validate(name: string, size: number, entries: [string, AnyFieldSpec][]): void {
  let end = 0;
  let prev = '';
  for (const [k, s] of entries) {
    if (!Number.isInteger(s.offset) || s.offset < 0 || s.offset + s.size > size) {
      throw new Error(`struct ${name}: field ${k} [${s.offset}, +${s.size}) outside sizeof ${size}`);
    }
    if (s.offset < end) throw new Error(`struct ${name}: field ${k} overlaps ${prev}`);
    const align = NATURAL_ALIGN[s.kind];
    if (align && s.offset % align !== 0) {
      throw new Error(`struct ${name}: ${s.kind} field ${k} at misaligned offset ${s.offset}`);
    }
    end = s.offset + s.size;
    prev = k;
  }
}

export function defineStruct<const F extends Fields>(name: string, size: number, fields: F): StructDef<F> {
  return new StructCodec(name, size, fields);
}

/** Whether a codec runs generated functions or its interpreted plan (undefined until first used). */
export function codecMode(def: StructDef): 'generated' | 'interpreted' | undefined {
  return def instanceof StructCodec ? def.mode : undefined;
}

/** Whether the fields cover every byte (no padding), i.e. encode(decode(b)) === b for any b. */
export function isPacked(def: StructDef): boolean {
  let covered = 0;
  for (const k of def.keys) covered += def.fields[k]!.size;
  return covered === def.size;
}
