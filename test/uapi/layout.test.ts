// Every struct definition, ioctl value and constant against the real headers' layout-data.json.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as iommufd from '../../src/uapi/iommufd.js';
import * as iommufdTest from '../../src/uapi/iommufd-test.js';
import * as ioctl from '../../src/uapi/ioctl.js';
import * as vfio from '../../src/uapi/vfio.js';
import type { StructDef } from '../../src/uapi/struct.js';
import { camel, layout, structLayout } from './layout.js';

const modules = { iommufd, iommufdTest, ioctl, vfio } as Record<string, Record<string, unknown>>;

function isStructDef(v: unknown): v is StructDef {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as StructDef).decode === 'function' &&
    typeof (v as StructDef).name === 'string'
  );
}

const defs: [string, StructDef][] = [];
for (const mod of Object.values(modules)) {
  for (const [exportName, v] of Object.entries(mod)) if (isStructDef(v)) defs.push([exportName, v]);
}

// Union members whose kernel name cannot be used as is (it would clash with a header field).
const MEMBER_ALIASES: Record<string, string> = { 'check_iotlb.id': 'iotlbId' };

/** The JSON fields a definition should reproduce, keyed by their TypeScript name. */
function expectedFields(defName: string): { size: number; fields: Map<string, { k: string; offset: number; size: number }> } {
  const [base, member] = defName.split('.') as [string, string | undefined];
  const s = structLayout(base);
  const fields = new Map<string, { k: string; offset: number; size: number }>();
  for (const [k, f] of Object.entries(s.fields)) {
    const dot = k.indexOf('.');
    if (dot >= 0) {
      if (k.slice(0, dot) !== member) continue;
      fields.set(MEMBER_ALIASES[k] ?? camel(k.slice(dot + 1)), { k, ...f });
    } else if (f.size === 0) {
      // A flexible array member: not a decodable field, but it must start at sizeof.
      continue;
    } else {
      fields.set(camel(k), { k, ...f });
    }
  }
  return { size: s.size, fields };
}

describe('struct layouts match the 6.12.117 headers', () => {
  it('layout-data.json is for 6.12.117', () => {
    assert.equal(layout.kernel, '6.12.117');
  });

  for (const [exportName, def] of defs) {
    it(`${exportName} (${def.name})`, () => {
      const exp = expectedFields(def.name);
      assert.equal(def.size, exp.size, `sizeof(struct ${def.name})`);
      const partial = def === iommufdTest.IommuTestCmdHeader;
      for (const key of def.keys) {
        const spec = def.fields[key]!;
        if (def === iommufdTest.IommuTestCmd && key === 'union') {
          assert.deepEqual([spec.offset, spec.size], [16, 48], 'the anonymous union spans [16, 64)');
          continue;
        }
        const f = exp.fields.get(key);
        assert.ok(f, `${def.name}.${key} has no counterpart in the header`);
        assert.equal(spec.offset, f.offset, `offsetof(${def.name}, ${f.k})`);
        assert.equal(spec.size, f.size, `sizeof(${def.name}.${f.k})`);
      }
      if (!partial) {
        for (const [key, f] of exp.fields) {
          assert.ok(key in def.fields, `${def.name} lacks the kernel field ${f.k} (as ${key})`);
        }
      }
    });
  }

  it('every struct in the JSON has a definition', () => {
    const defined = new Set(defs.map(([, d]) => d.name.split('.')[0]));
    for (const name of Object.keys(layout.structs)) assert.ok(defined.has(name), `no definition for ${name}`);
  });

  it('every iommu_test_cmd union member has a view, and TEST_CMD_MEMBERS names them all', () => {
    const members = new Set(
      Object.keys(structLayout('iommu_test_cmd').fields)
        .filter((k) => k.includes('.'))
        .map((k) => k.split('.')[0]),
    );
    assert.deepEqual(new Set(Object.keys(iommufdTest.TEST_CMD_MEMBERS)), members);
    for (const [m, def] of Object.entries(iommufdTest.TEST_CMD_MEMBERS)) {
      assert.equal(def.name, `iommu_test_cmd.${m}`);
    }
  });

  it('flexible array members start at sizeof', () => {
    for (const [name, s] of Object.entries(layout.structs)) {
      for (const [k, f] of Object.entries(s.fields)) {
        if (f.size === 0) assert.equal(f.offset, s.size, `${name}.${k}[]`);
      }
    }
    assert.equal(vfio.VFIO_CAP_IOVA_RANGE_ENTRIES_OFFSET, vfio.VfioIommuType1InfoCapIovaRange.size);
  });
});

describe('ioctl values and constants match the headers', () => {
  const exported = new Map<string, unknown>();
  for (const mod of Object.values(modules)) for (const [k, v] of Object.entries(mod)) exported.set(k, v);

  for (const [name, value] of Object.entries(layout.ioctls)) {
    it(`${name} = 0x${value.toString(16)}`, () => {
      assert.equal(exported.get(name), value);
    });
  }

  it('every constant', () => {
    for (const [name, value] of Object.entries(layout.constants)) {
      assert.equal(exported.get(name), value, name);
    }
  });

  it('no uAPI constant exported without a counterpart in the headers', () => {
    // Helpers of our own, not kernel names.
    const ours = new Set(['VFIO_CAP_IOVA_RANGE_ENTRIES_OFFSET']);
    for (const mod of [iommufd, iommufdTest, vfio] as Record<string, unknown>[]) {
      for (const [k, v] of Object.entries(mod)) {
        if (typeof v !== 'number' || ours.has(k)) continue;
        assert.ok(k in layout.constants || k in layout.ioctls, `${k} is not in layout-data.json`);
      }
    }
  });
});

describe('the iommufd ioctl table', () => {
  // §2.1 of the reference: name, struct, min_size (offsetofend of the last mandatory field), sizeof.
  const reference: [string, string, string, number, number][] = [
    ['IOMMU_DESTROY', 'iommu_destroy', 'id', 8, 8],
    ['IOMMU_IOAS_ALLOC', 'iommu_ioas_alloc', 'out_ioas_id', 12, 12],
    ['IOMMU_IOAS_ALLOW_IOVAS', 'iommu_ioas_allow_iovas', 'allowed_iovas', 24, 24],
    ['IOMMU_IOAS_COPY', 'iommu_ioas_copy', 'src_iova', 40, 40],
    ['IOMMU_IOAS_IOVA_RANGES', 'iommu_ioas_iova_ranges', 'out_iova_alignment', 32, 32],
    ['IOMMU_IOAS_MAP', 'iommu_ioas_map', 'iova', 40, 40],
    ['IOMMU_IOAS_UNMAP', 'iommu_ioas_unmap', 'length', 24, 24],
    ['IOMMU_OPTION', 'iommu_option', 'val64', 24, 24],
    ['IOMMU_VFIO_IOAS', 'iommu_vfio_ioas', '__reserved', 12, 12],
    ['IOMMU_HWPT_ALLOC', 'iommu_hwpt_alloc', '__reserved', 24, 48],
    ['IOMMU_GET_HW_INFO', 'iommu_hw_info', '__reserved', 32, 40],
    ['IOMMU_HWPT_SET_DIRTY_TRACKING', 'iommu_hwpt_set_dirty_tracking', '__reserved', 16, 16],
    ['IOMMU_HWPT_GET_DIRTY_BITMAP', 'iommu_hwpt_get_dirty_bitmap', 'data', 48, 48],
    ['IOMMU_HWPT_INVALIDATE', 'iommu_hwpt_invalidate', '__reserved', 32, 32],
    ['IOMMU_FAULT_QUEUE_ALLOC', 'iommu_fault_alloc', 'out_fault_fd', 16, 16],
    ['IOMMU_TEST_CMD', 'iommu_test_cmd', 'last', 68, 72],
  ];

  it('lists the commands in nr order with the reference names', () => {
    assert.deepEqual(
      ioctl.IOMMUFD_IOCTLS.map((e) => e.name),
      reference.map((r) => r[0]),
    );
    const nrs = ioctl.IOMMUFD_IOCTLS.map((e) => e.nr);
    assert.deepEqual(nrs, [...nrs].sort((a, b) => a - b));
  });

  for (const [name, structName, lastField, minSize, sizeofStruct] of reference) {
    it(`${name}: struct ${structName}, min_size ${minSize}, sizeof ${sizeofStruct}`, () => {
      const e = ioctl.IOMMUFD_IOCTLS.find((x) => x.name === name)!;
      assert.equal(e.cmd, layout.ioctls[name]);
      assert.equal(ioctl._IOC_NR(e.cmd), e.nr);
      assert.equal(e.struct.name, structName);
      assert.equal(e.struct.size, sizeofStruct);
      assert.equal(e.lastMandatory, camel(lastField));
      const f = structLayout(structName).fields[lastField]!;
      assert.equal(e.minSize, f.offset + f.size, `offsetofend(${structName}, ${lastField})`);
      assert.equal(e.minSize, minSize);
      assert.equal(e.testOnly, name === 'IOMMU_TEST_CMD');
    });
  }

  it('table span: 0x21 slots on a test kernel, 0x0f otherwise', () => {
    assert.equal(ioctl.iommufdTableLength(true), 0x21);
    assert.equal(ioctl.iommufdTableLength(false), 0x0f);
    assert.equal(ioctl.iommufdIoctlByNr(0xa0, true)?.name, 'IOMMU_TEST_CMD');
    assert.equal(ioctl.iommufdIoctlByNr(0xa0, false), undefined);
    assert.equal(ioctl.inIommufdTable(0xa0, false), false);
    assert.equal(ioctl.iommufdIoctlByNr(0x95, true), undefined, 'empty slot');
    assert.equal(ioctl.inIommufdTable(0x95, true), true);
    assert.equal(ioctl.inIommufdTable(0x95, false), false);
    assert.equal(ioctl.inIommufdTable(0x7f, true), false);
    assert.equal(ioctl.inIommufdTable(0xa1, true), false);
    assert.equal(ioctl.iommufdIoctlByNr(0x85, false)?.name, 'IOMMU_IOAS_MAP');
  });

  it('VFIO compat commands fall outside the table', () => {
    for (const name of Object.keys(layout.ioctls).filter((n) => n.startsWith('VFIO_'))) {
      assert.equal(ioctl.inIommufdTable(ioctl._IOC_NR(layout.ioctls[name]!), true), false, name);
    }
  });
});

describe('ioctl encoding helpers', () => {
  it('match known Linux command values', () => {
    assert.equal(ioctl._IOW(0x54, 202, 4), 0x400454ca); // TUNSETIFF
    assert.equal(ioctl._IOR(0x54, 207, 4), 0x800454cf); // TUNGETFEATURES
    assert.equal(ioctl._IOWR(0x64, 0x00, 64), 0xc0406400); // DRM_IOCTL_VERSION on 64-bit
    assert.equal(ioctl._IO(0x3b, 0x85), 0x3b85);
  });

  it('decode round-trips', () => {
    const cmd = ioctl._IOWR(0x3b, 0x80, 8);
    assert.notEqual(cmd, ioctl.IOMMU_DESTROY);
    assert.equal(ioctl._IOC_NR(cmd), 0x80);
    assert.equal(ioctl._IOC_TYPE(cmd), 0x3b);
    assert.equal(ioctl._IOC_SIZE(cmd), 8);
    assert.equal(ioctl._IOC_DIR(cmd), ioctl._IOC_READ | ioctl._IOC_WRITE);
  });

  it('ioctlName', () => {
    assert.equal(ioctl.ioctlName(0x3b85), 'IOMMU_IOAS_MAP');
    assert.equal(ioctl.ioctlName(ioctl._IOWR(0x3b, 0x85, 40)), 'ioctl 0xc0283b85');
    assert.equal(ioctl.ioctlName(0x3b72, vfio.VFIO_IOCTL_NAMES), 'VFIO_IOMMU_UNMAP_DMA');
  });
});
