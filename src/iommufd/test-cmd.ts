import { fail, hex } from '../lib/error.js';
import { U64_MAX } from '../lib/u64.js';
import {
  IOMMU_TEST_OP_ACCESS_PAGES,
  IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
  IOMMU_TEST_OP_ACCESS_RW,
  IOMMU_TEST_OP_ADD_RESERVED,
  IOMMU_TEST_OP_CREATE_ACCESS,
  IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
  IOMMU_TEST_OP_DIRTY,
  IOMMU_TEST_OP_MD_CHECK_IOTLB,
  IOMMU_TEST_OP_MD_CHECK_MAP,
  IOMMU_TEST_OP_MD_CHECK_REFS,
  IOMMU_TEST_OP_MOCK_DOMAIN,
  IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
  IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
  IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
  IOMMU_TEST_OP_TRIGGER_IOPF,
  IommuTestCmdAccessPages,
  IommuTestCmdAccessReplaceIoas,
  IommuTestCmdAccessRw,
  IommuTestCmdAddReserved,
  IommuTestCmdCheckIotlb,
  IommuTestCmdCreateAccess,
  IommuTestCmdDestroyAccessPages,
  IommuTestCmdCheckMap,
  IommuTestCmdCheckRefs,
  IommuTestCmdDirty,
  IommuTestCmdHeader,
  IommuTestCmdMemoryLimit,
  IommuTestCmdMockDomain,
  IommuTestCmdMockDomainFlags,
  IommuTestCmdMockDomainReplace,
  IommuTestCmdTriggerIopf,
  type IommuTestCmdAddReserved as AddReservedCmd,
} from '../uapi/iommufd-test.js';
import {
  mdCheckIotlb,
  mdCheckMap,
  mdCheckRefs,
  mockDomain,
  mockDomainReplace,
  setTempMemoryLimit,
  testDirty,
  testTriggerIopf,
} from './selftest.js';
import {
  testAccessPages,
  testAccessReplaceIoas,
  testAccessRw,
  testCreateAccess,
  testDestroyAccessPages,
} from './selftest-access.js';
import type { StructDef } from '../uapi/struct.js';
import type { IommufdCtx } from './context.js';
import { getIoas } from './ioas.js';
import type { Ucmd } from './ucmd.js';

/**
 * IOMMU_TEST_CMD (CONFIG_IOMMUFD_TEST kernels): the selftest's back door. The union member is
 * picked by `op`; each op has its own struct view with absolute offsets.
 */
export const TEST_OP_STRUCTS: ReadonlyMap<number, StructDef> = new Map<number, StructDef>([
  [IOMMU_TEST_OP_ADD_RESERVED, IommuTestCmdAddReserved as unknown as StructDef],
  [IOMMU_TEST_OP_MOCK_DOMAIN, IommuTestCmdMockDomain as unknown as StructDef],
  [IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS, IommuTestCmdMockDomainFlags as unknown as StructDef],
  [IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, IommuTestCmdMockDomainReplace as unknown as StructDef],
  [IOMMU_TEST_OP_MD_CHECK_MAP, IommuTestCmdCheckMap as unknown as StructDef],
  [IOMMU_TEST_OP_MD_CHECK_REFS, IommuTestCmdCheckRefs as unknown as StructDef],
  [IOMMU_TEST_OP_MD_CHECK_IOTLB, IommuTestCmdCheckIotlb as unknown as StructDef],
  [IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT, IommuTestCmdMemoryLimit as unknown as StructDef],
  [IOMMU_TEST_OP_DIRTY, IommuTestCmdDirty as unknown as StructDef],
  [IOMMU_TEST_OP_TRIGGER_IOPF, IommuTestCmdTriggerIopf as unknown as StructDef],
  [IOMMU_TEST_OP_CREATE_ACCESS, IommuTestCmdCreateAccess as unknown as StructDef],
  [IOMMU_TEST_OP_ACCESS_REPLACE_IOAS, IommuTestCmdAccessReplaceIoas as unknown as StructDef],
  [IOMMU_TEST_OP_ACCESS_PAGES, IommuTestCmdAccessPages as unknown as StructDef],
  [IOMMU_TEST_OP_DESTROY_ACCESS_PAGES, IommuTestCmdDestroyAccessPages as unknown as StructDef],
  [IOMMU_TEST_OP_ACCESS_RW, IommuTestCmdAccessRw as unknown as StructDef],
]);

/** The struct view of a test command's union for its op (the header alone for unknown ops). */
export function testCmdStruct(op: number): StructDef {
  return TEST_OP_STRUCTS.get(op) ?? (IommuTestCmdHeader as unknown as StructDef);
}

/** IOMMU_TEST_OP_ADD_RESERVED: reserve [start, start + length - 1] with no owner. */
function addReserved(ctx: IommufdCtx, cmd: AddReservedCmd): number {
  if (cmd.length === 0n) fail('EINVAL', 'length is 0');
  const last = cmd.start + cmd.length - 1n;
  if (last > U64_MAX) fail('EOVERFLOW', `start ${hex(cmd.start)} + length ${hex(cmd.length)} overflows 64 bits`);
  const ioas = getIoas(ctx, cmd.id);
  ioas.iopt.reserve(cmd.start, last, null);
  return 0;
}

export function iommufdTest(ctx: IommufdCtx, ucmd: Ucmd<{ op: number; id: number }>): number {
  const cmd = ucmd.cmd;
  switch (cmd.op) {
    case IOMMU_TEST_OP_ADD_RESERVED:
      return addReserved(ctx, cmd as unknown as AddReservedCmd);
    case IOMMU_TEST_OP_MOCK_DOMAIN:
    case IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS:
      return mockDomain(ctx, ucmd as never, cmd.op);
    case IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE:
      return mockDomainReplace(ctx, ucmd as never);
    case IOMMU_TEST_OP_MD_CHECK_MAP:
      return mdCheckMap(ctx, ucmd as never);
    case IOMMU_TEST_OP_MD_CHECK_REFS:
      return mdCheckRefs(ctx, ucmd as never);
    case IOMMU_TEST_OP_MD_CHECK_IOTLB:
      return mdCheckIotlb(ctx, ucmd as never);
    case IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT:
      return setTempMemoryLimit(ctx, ucmd as never);
    case IOMMU_TEST_OP_DIRTY:
      return testDirty(ctx, ucmd as never);
    case IOMMU_TEST_OP_TRIGGER_IOPF:
      return testTriggerIopf(ctx, ucmd as never);
    case IOMMU_TEST_OP_CREATE_ACCESS:
      return testCreateAccess(ctx, ucmd as never);
    case IOMMU_TEST_OP_ACCESS_REPLACE_IOAS:
      return testAccessReplaceIoas(ctx, ucmd as never);
    case IOMMU_TEST_OP_ACCESS_PAGES:
      return testAccessPages(ctx, ucmd as never);
    case IOMMU_TEST_OP_DESTROY_ACCESS_PAGES:
      return testDestroyAccessPages(ctx, ucmd as never);
    case IOMMU_TEST_OP_ACCESS_RW:
      return testAccessRw(ctx, ucmd as never);
    default:
      fail('EOPNOTSUPP', `test op ${cmd.op} is not supported`);
  }
}
