/**
 * drivers/iommu/iommufd/iommufd_test.h (Linux 6.12.117): IOMMU_TEST_CMD and the mock driver's
 * uAPI, only reachable on CONFIG_IOMMUFD_TEST kernels.
 *
 * `struct iommu_test_cmd` is a 16-byte header, a 48-byte anonymous union at offset 16 and `last`
 * at 64 (sizeof 72 with tail padding, min_size 68). Each union member is defined below as its
 * own 72-byte view with ABSOLUTE offsets, header included, so the handler for an op decodes the
 * whole command with one call: `TEST_CMD_BY_OP[cmd.op]?.decode(bytes)`.
 */
import { bytes, defineStruct, u32, u64, type Decoded } from './struct.js';

export const IOMMU_TEST_OP_ADD_RESERVED = 1;
export const IOMMU_TEST_OP_MOCK_DOMAIN = 2;
export const IOMMU_TEST_OP_MD_CHECK_MAP = 3;
export const IOMMU_TEST_OP_MD_CHECK_REFS = 4;
export const IOMMU_TEST_OP_CREATE_ACCESS = 5;
export const IOMMU_TEST_OP_DESTROY_ACCESS_PAGES = 6;
export const IOMMU_TEST_OP_ACCESS_PAGES = 7;
export const IOMMU_TEST_OP_ACCESS_RW = 8;
export const IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT = 9;
export const IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE = 10;
export const IOMMU_TEST_OP_ACCESS_REPLACE_IOAS = 11;
export const IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS = 12;
export const IOMMU_TEST_OP_DIRTY = 13;
export const IOMMU_TEST_OP_MD_CHECK_IOTLB = 14;
export const IOMMU_TEST_OP_TRIGGER_IOPF = 15;

/** The mock domain's aperture, [16 MiB, 2 GiB - 1]. */
export const MOCK_APERTURE_START = 0x1000000;
export const MOCK_APERTURE_LAST = 0x7fffffff;

/** ACCESS_PAGES flags. */
export const MOCK_FLAGS_ACCESS_WRITE = 1 << 0;
/** Fuzzer hook: `iova` is {u32 nth area, u32 offset} rather than an address (also on IOAS_COPY). */
export const MOCK_FLAGS_ACCESS_SYZ = 1 << 16;

/** ACCESS_RW flags. */
export const MOCK_ACCESS_RW_WRITE = 1 << 0;
export const MOCK_ACCESS_RW_SLOW_PATH = 1 << 2;

/** CREATE_ACCESS flags. */
export const MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES = 1 << 0;

/** MOCK_DOMAIN_FLAGS `dev_flags`. */
export const MOCK_FLAGS_DEVICE_NO_DIRTY = 1 << 0;
export const MOCK_FLAGS_DEVICE_HUGE_IOVA = 1 << 1;

export const MOCK_NESTED_DOMAIN_IOTLB_ID_MAX = 3;
export const MOCK_NESTED_DOMAIN_IOTLB_NUM = 4;

const header = { size: u32(0), op: u32(4), id: u32(8), reserved: u32(12) } as const;
const last = u32(64);

/** The whole command with the union as raw bytes; use it to read `op`, then a member view. */
export const IommuTestCmd = defineStruct('iommu_test_cmd', 72, {
  ...header,
  union: bytes(16, 48),
  last,
});
export type IommuTestCmd = Decoded<typeof IommuTestCmd>;

/** The header alone: enough to dispatch on `op` without decoding the union twice. */
export const IommuTestCmdHeader = defineStruct('iommu_test_cmd', 72, header);
export type IommuTestCmdHeader = Decoded<typeof IommuTestCmdHeader>;

export const IommuTestCmdAddReserved = defineStruct('iommu_test_cmd.add_reserved', 72, {
  ...header,
  start: u64(16),
  length: u64(24),
  last,
});
export type IommuTestCmdAddReserved = Decoded<typeof IommuTestCmdAddReserved>;

export const IommuTestCmdMockDomain = defineStruct('iommu_test_cmd.mock_domain', 72, {
  ...header,
  outStdevId: u32(16),
  outHwptId: u32(20),
  outIdevId: u32(24),
  last,
});
export type IommuTestCmdMockDomain = Decoded<typeof IommuTestCmdMockDomain>;

export const IommuTestCmdMockDomainFlags = defineStruct('iommu_test_cmd.mock_domain_flags', 72, {
  ...header,
  outStdevId: u32(16),
  outHwptId: u32(20),
  outIdevId: u32(24),
  devFlags: u32(28),
  last,
});
export type IommuTestCmdMockDomainFlags = Decoded<typeof IommuTestCmdMockDomainFlags>;

export const IommuTestCmdMockDomainReplace = defineStruct('iommu_test_cmd.mock_domain_replace', 72, {
  ...header,
  ptId: u32(16),
  last,
});
export type IommuTestCmdMockDomainReplace = Decoded<typeof IommuTestCmdMockDomainReplace>;

export const IommuTestCmdCheckMap = defineStruct('iommu_test_cmd.check_map', 72, {
  ...header,
  iova: u64(16),
  length: u64(24),
  uptr: u64(32),
  last,
});
export type IommuTestCmdCheckMap = Decoded<typeof IommuTestCmdCheckMap>;

export const IommuTestCmdCheckRefs = defineStruct('iommu_test_cmd.check_refs', 72, {
  ...header,
  length: u64(16),
  uptr: u64(24),
  refs: u32(32),
  last,
});
export type IommuTestCmdCheckRefs = Decoded<typeof IommuTestCmdCheckRefs>;

export const IommuTestCmdCreateAccess = defineStruct('iommu_test_cmd.create_access', 72, {
  ...header,
  outAccessFd: u32(16),
  flags: u32(20),
  last,
});
export type IommuTestCmdCreateAccess = Decoded<typeof IommuTestCmdCreateAccess>;

export const IommuTestCmdDestroyAccessPages = defineStruct(
  'iommu_test_cmd.destroy_access_pages',
  72,
  { ...header, accessPagesId: u32(16), last },
);
export type IommuTestCmdDestroyAccessPages = Decoded<typeof IommuTestCmdDestroyAccessPages>;

export const IommuTestCmdAccessPages = defineStruct('iommu_test_cmd.access_pages', 72, {
  ...header,
  flags: u32(16),
  outAccessPagesId: u32(20),
  iova: u64(24),
  length: u64(32),
  uptr: u64(40),
  last,
});
export type IommuTestCmdAccessPages = Decoded<typeof IommuTestCmdAccessPages>;

export const IommuTestCmdAccessRw = defineStruct('iommu_test_cmd.access_rw', 72, {
  ...header,
  iova: u64(16),
  length: u64(24),
  uptr: u64(32),
  flags: u32(40),
  last,
});
export type IommuTestCmdAccessRw = Decoded<typeof IommuTestCmdAccessRw>;

export const IommuTestCmdMemoryLimit = defineStruct('iommu_test_cmd.memory_limit', 72, {
  ...header,
  limit: u32(16),
  last,
});
export type IommuTestCmdMemoryLimit = Decoded<typeof IommuTestCmdMemoryLimit>;

export const IommuTestCmdAccessReplaceIoas = defineStruct('iommu_test_cmd.access_replace_ioas', 72, {
  ...header,
  ioasId: u32(16),
  last,
});
export type IommuTestCmdAccessReplaceIoas = Decoded<typeof IommuTestCmdAccessReplaceIoas>;

export const IommuTestCmdDirty = defineStruct('iommu_test_cmd.dirty', 72, {
  ...header,
  flags: u32(16),
  iova: u64(24),
  length: u64(32),
  pageSize: u64(40),
  uptr: u64(48),
  outNrDirty: u64(56),
  last,
});
export type IommuTestCmdDirty = Decoded<typeof IommuTestCmdDirty>;

/**
 * The kernel calls the slot index `check_iotlb.id`, which would clash with the header's `id`
 * (the nested HWPT); here it is `iotlbId`, the name the invalidation entry uses for the same index.
 */
export const IommuTestCmdCheckIotlb = defineStruct('iommu_test_cmd.check_iotlb', 72, {
  ...header,
  iotlbId: u32(16),
  iotlb: u32(20),
  last,
});
export type IommuTestCmdCheckIotlb = Decoded<typeof IommuTestCmdCheckIotlb>;

export const IommuTestCmdTriggerIopf = defineStruct('iommu_test_cmd.trigger_iopf', 72, {
  ...header,
  devId: u32(16),
  pasid: u32(20),
  grpid: u32(24),
  perm: u32(28),
  addr: u64(32),
  last,
});
export type IommuTestCmdTriggerIopf = Decoded<typeof IommuTestCmdTriggerIopf>;

/** Kernel union member name → its view, for tests and traces. */
export const TEST_CMD_MEMBERS = {
  add_reserved: IommuTestCmdAddReserved,
  mock_domain: IommuTestCmdMockDomain,
  mock_domain_flags: IommuTestCmdMockDomainFlags,
  mock_domain_replace: IommuTestCmdMockDomainReplace,
  check_map: IommuTestCmdCheckMap,
  check_refs: IommuTestCmdCheckRefs,
  create_access: IommuTestCmdCreateAccess,
  destroy_access_pages: IommuTestCmdDestroyAccessPages,
  access_pages: IommuTestCmdAccessPages,
  access_rw: IommuTestCmdAccessRw,
  memory_limit: IommuTestCmdMemoryLimit,
  access_replace_ioas: IommuTestCmdAccessReplaceIoas,
  dirty: IommuTestCmdDirty,
  check_iotlb: IommuTestCmdCheckIotlb,
  trigger_iopf: IommuTestCmdTriggerIopf,
} as const;

/** Which union member each op reads (MOCK_DOMAIN and MOCK_DOMAIN_FLAGS share the first three). */
export const TEST_CMD_BY_OP = {
  [IOMMU_TEST_OP_ADD_RESERVED]: IommuTestCmdAddReserved,
  [IOMMU_TEST_OP_MOCK_DOMAIN]: IommuTestCmdMockDomain,
  [IOMMU_TEST_OP_MD_CHECK_MAP]: IommuTestCmdCheckMap,
  [IOMMU_TEST_OP_MD_CHECK_REFS]: IommuTestCmdCheckRefs,
  [IOMMU_TEST_OP_CREATE_ACCESS]: IommuTestCmdCreateAccess,
  [IOMMU_TEST_OP_DESTROY_ACCESS_PAGES]: IommuTestCmdDestroyAccessPages,
  [IOMMU_TEST_OP_ACCESS_PAGES]: IommuTestCmdAccessPages,
  [IOMMU_TEST_OP_ACCESS_RW]: IommuTestCmdAccessRw,
  [IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT]: IommuTestCmdMemoryLimit,
  [IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE]: IommuTestCmdMockDomainReplace,
  [IOMMU_TEST_OP_ACCESS_REPLACE_IOAS]: IommuTestCmdAccessReplaceIoas,
  [IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS]: IommuTestCmdMockDomainFlags,
  [IOMMU_TEST_OP_DIRTY]: IommuTestCmdDirty,
  [IOMMU_TEST_OP_MD_CHECK_IOTLB]: IommuTestCmdCheckIotlb,
  [IOMMU_TEST_OP_TRIGGER_IOPF]: IommuTestCmdTriggerIopf,
} as const;

export const TEST_CMD_OP_NAMES: Readonly<Record<number, string>> = {
  [IOMMU_TEST_OP_ADD_RESERVED]: 'ADD_RESERVED',
  [IOMMU_TEST_OP_MOCK_DOMAIN]: 'MOCK_DOMAIN',
  [IOMMU_TEST_OP_MD_CHECK_MAP]: 'MD_CHECK_MAP',
  [IOMMU_TEST_OP_MD_CHECK_REFS]: 'MD_CHECK_REFS',
  [IOMMU_TEST_OP_CREATE_ACCESS]: 'CREATE_ACCESS',
  [IOMMU_TEST_OP_DESTROY_ACCESS_PAGES]: 'DESTROY_ACCESS_PAGES',
  [IOMMU_TEST_OP_ACCESS_PAGES]: 'ACCESS_PAGES',
  [IOMMU_TEST_OP_ACCESS_RW]: 'ACCESS_RW',
  [IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT]: 'SET_TEMP_MEMORY_LIMIT',
  [IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE]: 'MOCK_DOMAIN_REPLACE',
  [IOMMU_TEST_OP_ACCESS_REPLACE_IOAS]: 'ACCESS_REPLACE_IOAS',
  [IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS]: 'MOCK_DOMAIN_FLAGS',
  [IOMMU_TEST_OP_DIRTY]: 'DIRTY',
  [IOMMU_TEST_OP_MD_CHECK_IOTLB]: 'MD_CHECK_IOTLB',
  [IOMMU_TEST_OP_TRIGGER_IOPF]: 'TRIGGER_IOPF',
};

// ---- The mock driver's hw_info, HWPT data and invalidation entries -------------------------------

export const IOMMU_HW_INFO_TYPE_SELFTEST = 0xfeedbeef;
export const IOMMU_HW_INFO_SELFTEST_REGVAL = 0xdeadbeef;

/** What GET_HW_INFO returns for a mock device. */
export const IommuTestHwInfo = defineStruct('iommu_test_hw_info', 8, {
  flags: u32(0),
  testReg: u32(4),
});
export type IommuTestHwInfo = Decoded<typeof IommuTestHwInfo>;

/** A data_type no real driver uses, so only the mock accepts it. */
export const IOMMU_HWPT_DATA_SELFTEST = 0xdead;
export const IOMMU_TEST_IOTLB_DEFAULT = 0xbadbeef;

/** HWPT_ALLOC user data for a mock nested domain: the initial value of its IOTLB slots. */
export const IommuHwptSelftest = defineStruct('iommu_hwpt_selftest', 4, { iotlb: u32(0) });
export type IommuHwptSelftest = Decoded<typeof IommuHwptSelftest>;

export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST = 0xdeadbeef;
export const IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID = 0xdadbeef;
export const IOMMU_TEST_INVALIDATE_FLAG_ALL = 1 << 0;

export const IommuHwptInvalidateSelftest = defineStruct('iommu_hwpt_invalidate_selftest', 8, {
  flags: u32(0),
  iotlbId: u32(4),
});
export type IommuHwptInvalidateSelftest = Decoded<typeof IommuHwptInvalidateSelftest>;
