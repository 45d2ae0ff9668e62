// The struct codec: round trips over every uAPI definition, and its edge behaviour.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as iommufd from '../../src/uapi/iommufd.js';
import * as iommufdTest from '../../src/uapi/iommufd-test.js';
import * as vfio from '../../src/uapi/vfio.js';
import {
  bytes,
  defineStruct,
  codecMode,
  isPacked,
  setStructCodegen,
  struct,
  u16,
  u32,
  u64,
  u8,
  type AnyFieldSpec,
  type StructDef,
} from '../../src/uapi/struct.js';

const defs: [string, StructDef][] = [];
for (const mod of [iommufd, iommufdTest, vfio] as Record<string, unknown>[]) {
  for (const [k, v] of Object.entries(mod)) {
    if (typeof v === 'object' && v !== null && typeof (v as StructDef).decode === 'function') {
      defs.push([k, v as StructDef]);
    }
  }
}

function arbField(spec: AnyFieldSpec): fc.Arbitrary<unknown> {
  switch (spec.kind) {
    case 'u8':
      return fc.integer({ min: 0, max: 0xff });
    case 'u16':
      return fc.integer({ min: 0, max: 0xffff });
    case 'u32':
      return fc.integer({ min: 0, max: 0xffffffff });
    case 'u64':
      return fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
    case 'bytes':
      return fc.uint8Array({ minLength: spec.size, maxLength: spec.size });
    case 'struct':
      return arbValue(spec.def);
  }
}

function arbValue(def: StructDef): fc.Arbitrary<Record<string, unknown>> {
  const rec: Record<string, fc.Arbitrary<unknown>> = {};
  for (const k of def.keys) rec[k] = arbField(def.fields[k]!);
  return fc.record(rec, { noNullPrototype: true });
}

/** Which bytes of the struct some field covers. */
function coverage(def: StructDef): boolean[] {
  const cov = new Array<boolean>(def.size).fill(false);
  for (const k of def.keys) {
    const f = def.fields[k]!;
    for (let i = f.offset; i < f.offset + f.size; i++) cov[i] = true;
  }
  return cov;
}

describe('round trips over every uAPI struct', () => {
  for (const [name, def] of defs) {
    it(`${name}: decode(encode(v)) = v, and bytes survive decode → encode`, () => {
      fc.assert(
        fc.property(arbValue(def), (v) => {
          const b = def.encode(v as never);
          assert.equal(b.length, def.size);
          assert.deepEqual(def.decode(b), v);
        }),
        { numRuns: 200 },
      );
      const cov = coverage(def);
      fc.assert(
        fc.property(
          fc.uint8Array({ minLength: def.size, maxLength: def.size }),
          fc.integer({ min: 0, max: 16 }),
          (raw, pad) => {
            // Decode from an offset inside a larger buffer, as the daemon does.
            const big = new Uint8Array(pad + def.size + 3);
            big.set(raw, pad);
            const v = def.decode(big, pad);
            const fresh = def.encode(v);
            if (isPacked(def)) assert.deepEqual(fresh, raw);
            for (let i = 0; i < def.size; i++) assert.equal(fresh[i], cov[i] ? raw[i] : 0, `byte ${i}`);
            // Encoding over the original bytes reproduces them exactly, padding included.
            const over = def.encode(v, big.slice(), pad);
            assert.deepEqual(over, big);
          },
        ),
        { numRuns: 200 },
      );
    });
  }

  it('only iommu_test_cmd views have padding', () => {
    const padded = defs.filter(([, d]) => !isPacked(d)).map(([, d]) => d.name.split('.')[0]);
    assert.deepEqual([...new Set(padded)], ['iommu_test_cmd']);
  });
});

describe('the codec without code generation', () => {
  it('interprets its plan with the same values and bytes as the generated codec, padding, nesting and truncation included', () => {
    const fields = () => ({
      a: u8(0),
      b: u16(2),
      c: u32(4),
      d: u64(8),
      e: bytes(16, 3),
      h: struct(24, defineStruct('inner', 16, { x: u32(0), y: u64(8) })),
      f: u32(40),
    });
    const generated = defineStruct('demo', 48, fields());
    setStructCodegen(false);
    let interpreted: StructDef;
    try {
      interpreted = defineStruct('demo', 48, fields());
      interpreted.decode(new Uint8Array(48)); // compiled (or not) on first use
    } finally {
      setStructCodegen(true);
    }
    generated.decode(new Uint8Array(48));
    // Two implementations compared, not one with itself.
    assert.equal(codecMode(generated), 'generated');
    assert.equal(codecMode(interpreted), 'interpreted');
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 54, maxLength: 54 }), fc.integer({ min: 0, max: 6 }), (raw, at) => {
        const v = generated.decode(raw, at);
        assert.deepEqual(interpreted.decode(raw, at), v);
        assert.deepEqual(interpreted.encode(v, raw.slice(), at), generated.encode(v, raw.slice(), at));
        const wide = { ...v, b: 0x12345, c: -1, d: -1n, e: Uint8Array.of(7) };
        const fresh = generated.encode(wide as never);
        assert.deepEqual(interpreted.encode(wide as never), fresh);
        assert.equal(generated.decode(fresh).c, 0xffffffff);
        assert.equal(generated.decode(fresh).b, 0x2345);
      }),
      { numRuns: 300 },
    );
  });
});

describe('the codec where the runtime forbids code generation', () => {
  it('falls back to the interpreted plan (node --disallow-code-generation-from-strings)', () => {
    const script = [
      "import { codecMode, defineStruct, u32, u64 } from './src/uapi/struct.ts';",
      "const D = defineStruct('d', 16, { a: u32(0), b: u64(8) });",
      'const v = D.decode(D.encode({ a: 7, b: 9n }));',
      'console.log(codecMode(D), v.a, v.b);',
    ].join('\n');
    const r = spawnSync(process.execPath, ['--disallow-code-generation-from-strings', '--import', 'tsx', '--input-type=module', '-e', script], {
      encoding: 'utf8',
      cwd: fileURLToPath(new URL('../../', import.meta.url)),
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'interpreted 7 9n');
  });
});

describe('the codec', () => {
  const Demo = defineStruct('demo', 24, {
    a: u8(0),
    b: u16(2),
    c: u32(4),
    d: u64(8),
    e: bytes(16, 3),
    f: u32(20),
  });

  it('is little-endian', () => {
    const b = Demo.encode(Demo.make({ a: 1, b: 0x0203, c: 0x04050607, d: 0x08090a0b0c0d0e0fn }));
    assert.deepEqual([...b.subarray(0, 16)], [1, 0, 3, 2, 7, 6, 5, 4, 0xf, 0xe, 0xd, 0xc, 0xb, 0xa, 9, 8]);
  });

  it('zero() and make()', () => {
    assert.deepEqual(Demo.zero(), { a: 0, b: 0, c: 0, d: 0n, e: new Uint8Array(3), f: 0 });
    assert.deepEqual(Demo.make({ f: 9 }).f, 9);
    // Each zero() owns its byte arrays.
    const z = Demo.zero();
    z.e[0] = 1;
    assert.equal(Demo.zero().e[0], 0);
  });

  it('decoded byte arrays are copies', () => {
    const b = Demo.encode(Demo.make({ e: Uint8Array.of(1, 2, 3) }));
    const v = Demo.decode(b);
    b[16] = 99;
    assert.deepEqual([...v.e], [1, 2, 3]);
  });

  it('truncates like C: u64 -1n is all-ones, u32 wraps, short byte arrays zero-fill', () => {
    const into = new Uint8Array(24).fill(0xaa);
    const b = Demo.encode(Demo.make({ d: -1n, c: 0x1_0000_0005, e: Uint8Array.of(7) }), into);
    assert.equal(b, into);
    const v = Demo.decode(b);
    assert.equal(v.d, 0xffff_ffff_ffff_ffffn);
    assert.equal(v.c, 5);
    assert.deepEqual([...v.e], [7, 0, 0]);
    assert.equal(b[1], 0xaa, 'padding byte left alone');
  });

  it('rejects short buffers', () => {
    assert.throws(() => Demo.decode(new Uint8Array(23)), RangeError);
    assert.throws(() => Demo.decode(new Uint8Array(24), 1), RangeError);
    assert.throws(() => Demo.encode(Demo.zero(), new Uint8Array(10)), RangeError);
  });

  it('reports offsetofend and field order', () => {
    assert.equal(Demo.offsetofEnd('d'), 16);
    assert.equal(iommufd.IommuHwInfo.offsetofEnd('reserved'), 32);
    assert.deepEqual(Demo.keys, ['a', 'b', 'c', 'd', 'e', 'f']);
  });

  it('catches bad definitions at definition time', () => {
    assert.throws(() => defineStruct('x', 8, { a: u32(0), b: u32(2) }), /misaligned|overlaps/);
    assert.throws(() => defineStruct('x', 8, { a: u64(0), b: u32(4) }), /overlaps/);
    assert.throws(() => defineStruct('x', 8, { a: u64(4) }), /outside|misaligned/);
    assert.throws(() => defineStruct('x', 8, { a: u16(1) }), /misaligned/);
  });

  it('nested structs (VFIO capability headers)', () => {
    const cap = vfio.VfioIommuType1InfoDmaAvail.make({
      header: { id: vfio.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, version: 1, next: 24 },
      avail: 0xffffffff,
    });
    const b = vfio.VfioIommuType1InfoDmaAvail.encode(cap);
    assert.deepEqual([...b], [3, 0, 1, 0, 24, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    assert.deepEqual(vfio.VfioInfoCapHeader.decode(b), cap.header);
  });

  it('test command views decode the same bytes per op', () => {
    const b = iommufdTest.IommuTestCmdDirty.encode(
      iommufdTest.IommuTestCmdDirty.make({
        size: 72,
        op: iommufdTest.IOMMU_TEST_OP_DIRTY,
        id: 5,
        iova: 0x1000000n,
        outNrDirty: 3n,
      }),
    );
    const h = iommufdTest.IommuTestCmdHeader.decode(b);
    assert.deepEqual(h, { size: 72, op: 13, id: 5, reserved: 0 });
    const view = iommufdTest.TEST_CMD_BY_OP[iommufdTest.IOMMU_TEST_OP_DIRTY];
    assert.equal(view.decode(b).outNrDirty, 3n);
    assert.equal(iommufdTest.IommuTestCmdCheckMap.decode(b).length, 0x1000000n, 'union aliasing');
  });
});

describe('speed sanity', () => {
  it('decodes and encodes IOMMU_IOAS_MAP 200k times without pathologies', () => {
    const def = iommufd.IommuIoasMap;
    const b = def.encode(def.make({ size: 40, flags: 7, userVa: 0x7f0000000000n, length: 1n << 21n }));
    const t0 = performance.now();
    let sum = 0n;
    for (let i = 0; i < 200_000; i++) {
      const v = def.decode(b);
      sum += v.length;
      def.encode(v, b);
    }
    const ms = performance.now() - t0;
    assert.equal(sum, 200_000n << 21n);
    // Generous: catches an accidental O(n^2) or per-call closure build-up, not CI jitter.
    assert.ok(ms < 5000, `${ms} ms`);
  });
});

it('normalize() stores values as C assignments to the fields would, the same truncation as encode()', () => {
  const Inner = defineStruct('inner', 4, { x: u16(0), y: u16(2) });
  const S = defineStruct('s', 32, { a: u8(0), b: u16(2), c: u32(4), d: u64(8), e: bytes(16, 3), f: struct(20, Inner), g: u32(24) });
  const v = { a: 0x1ff, b: -1, c: 2 ** 32 + 5, d: -1n, e: Uint8Array.of(1, 2, 3, 4), f: { x: 0x12345, y: 7.9 }, g: 5n } as never;
  const n = S.normalize(v) as unknown as Record<string, unknown>;
  assert.equal(n, v, 'in place');
  assert.deepEqual(n, { a: 0xff, b: 0xffff, c: 5, d: (1n << 64n) - 1n, e: Uint8Array.of(1, 2, 3), f: { x: 0x2345, y: 7 }, g: 5 });
  // Whatever encode() makes of the raw values, it makes of the normalised ones.
  const raw = { a: -3, b: 0x10001, c: -1.5, d: (1n << 70n) + 9n, e: Uint8Array.of(9), f: { x: -1, y: 2 ** 40 }, g: 2 ** 33 + 0.25 };
  assert.deepEqual(S.encode(S.normalize({ ...raw, f: { ...raw.f } } as never)), S.encode(raw as never));
  // Numbers in u64 fields, bigints in u32 fields, junk: converted, never thrown.
  assert.deepEqual(S.normalize({ a: NaN, b: Infinity, c: 1n << 40n, d: -2.7, e: 'x', f: null, g: undefined } as never), {
    a: 0,
    b: 0,
    c: 0,
    d: (1n << 64n) - 2n,
    e: new Uint8Array(3),
    f: { x: 0, y: 0 },
    g: 0,
  });
});
