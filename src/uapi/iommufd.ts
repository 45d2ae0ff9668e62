/**
 * include/uapi/linux/iommufd.h (Linux 6.12.117): struct layouts and constants.
 * Field names are the kernel's, camelCased, with leading underscores dropped
 * (`out_ioas_id` → outIoasId, `__reserved2` → reserved2). Every offset is checked against the
 * compiled header by test/uapi.
 */
import { bytes, defineStruct, u16, u32, u64, u8, type Decoded } from './struct.js';

// ---- IOMMU_DESTROY ----------------------------------------------------------------------------

export const IommuDestroy = defineStruct('iommu_destroy', 8, { size: u32(0), id: u32(4) });
export type IommuDestroy = Decoded<typeof IommuDestroy>;

// ---- IOMMU_IOAS_ALLOC -------------------------------------------------------------------------

export const IommuIoasAlloc = defineStruct('iommu_ioas_alloc', 12, {
  size: u32(0),
  flags: u32(4),
  outIoasId: u32(8),
});
export type IommuIoasAlloc = Decoded<typeof IommuIoasAlloc>;

// ---- IOVA ranges (IOMMU_IOAS_IOVA_RANGES, IOMMU_IOAS_ALLOW_IOVAS) -----------------------------

/** One element of the user arrays behind `allowed_iovas`; `last` is inclusive. */
export const IommuIovaRange = defineStruct('iommu_iova_range', 16, { start: u64(0), last: u64(8) });
export type IommuIovaRange = Decoded<typeof IommuIovaRange>;

export const IommuIoasIovaRanges = defineStruct('iommu_ioas_iova_ranges', 32, {
  size: u32(0),
  ioasId: u32(4),
  numIovas: u32(8),
  reserved: u32(12),
  allowedIovas: u64(16),
  outIovaAlignment: u64(24),
});
export type IommuIoasIovaRanges = Decoded<typeof IommuIoasIovaRanges>;

export const IommuIoasAllowIovas = defineStruct('iommu_ioas_allow_iovas', 24, {
  size: u32(0),
  ioasId: u32(4),
  numIovas: u32(8),
  reserved: u32(12),
  allowedIovas: u64(16),
});
export type IommuIoasAllowIovas = Decoded<typeof IommuIoasAllowIovas>;

// ---- IOMMU_IOAS_MAP / COPY / UNMAP -------------------------------------------------------------

export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;

export const IommuIoasMap = defineStruct('iommu_ioas_map', 40, {
  size: u32(0),
  flags: u32(4),
  ioasId: u32(8),
  reserved: u32(12),
  userVa: u64(16),
  length: u64(24),
  iova: u64(32),
});
export type IommuIoasMap = Decoded<typeof IommuIoasMap>;

/** Same flag values as MAP; note there is no __reserved field. */
export const IommuIoasCopy = defineStruct('iommu_ioas_copy', 40, {
  size: u32(0),
  flags: u32(4),
  dstIoasId: u32(8),
  srcIoasId: u32(12),
  length: u64(16),
  dstIova: u64(24),
  srcIova: u64(32),
});
export type IommuIoasCopy = Decoded<typeof IommuIoasCopy>;

export const IommuIoasUnmap = defineStruct('iommu_ioas_unmap', 24, {
  size: u32(0),
  ioasId: u32(4),
  iova: u64(8),
  length: u64(16),
});
export type IommuIoasUnmap = Decoded<typeof IommuIoasUnmap>;

// ---- IOMMU_OPTION ------------------------------------------------------------------------------

export const IOMMU_OPTION_RLIMIT_MODE = 0;
export const IOMMU_OPTION_HUGE_PAGES = 1;
export const IOMMU_OPTION_OP_SET = 0;
export const IOMMU_OPTION_OP_GET = 1;

export const IommuOption = defineStruct('iommu_option', 24, {
  size: u32(0),
  optionId: u32(4),
  op: u16(8),
  reserved: u16(10),
  objectId: u32(12),
  val64: u64(16),
});
export type IommuOption = Decoded<typeof IommuOption>;

// ---- IOMMU_VFIO_IOAS ---------------------------------------------------------------------------

export const IOMMU_VFIO_IOAS_GET = 0;
export const IOMMU_VFIO_IOAS_SET = 1;
export const IOMMU_VFIO_IOAS_CLEAR = 2;

export const IommuVfioIoas = defineStruct('iommu_vfio_ioas', 12, {
  size: u32(0),
  ioasId: u32(4),
  op: u16(8),
  reserved: u16(10),
});
export type IommuVfioIoas = Decoded<typeof IommuVfioIoas>;

// ---- IOMMU_HWPT_ALLOC --------------------------------------------------------------------------

export const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0;
export const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1;
export const IOMMU_HWPT_FAULT_ID_VALID = 1 << 2;

export const IOMMU_VTD_S1_SRE = 1 << 0;
export const IOMMU_VTD_S1_EAFE = 1 << 1;
export const IOMMU_VTD_S1_WPE = 1 << 2;

/** Intel VT-d stage-1 page table description (data_type IOMMU_HWPT_DATA_VTD_S1). */
export const IommuHwptVtdS1 = defineStruct('iommu_hwpt_vtd_s1', 24, {
  flags: u64(0),
  pgtblAddr: u64(8),
  addrWidth: u32(16),
  reserved: u32(20),
});
export type IommuHwptVtdS1 = Decoded<typeof IommuHwptVtdS1>;

export const IOMMU_HWPT_DATA_NONE = 0;
export const IOMMU_HWPT_DATA_VTD_S1 = 1;

export const IommuHwptAlloc = defineStruct('iommu_hwpt_alloc', 48, {
  size: u32(0),
  flags: u32(4),
  devId: u32(8),
  ptId: u32(12),
  outHwptId: u32(16),
  reserved: u32(20),
  // Everything from here on is optional for the caller (min_size 24): a short struct reads as 0.
  dataType: u32(24),
  dataLen: u32(28),
  dataUptr: u64(32),
  faultId: u32(40),
  reserved2: u32(44),
});
export type IommuHwptAlloc = Decoded<typeof IommuHwptAlloc>;

// ---- IOMMU_GET_HW_INFO -------------------------------------------------------------------------

export const IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1 << 0;

export const IommuHwInfoVtd = defineStruct('iommu_hw_info_vtd', 24, {
  flags: u32(0),
  reserved: u32(4),
  capReg: u64(8),
  ecapReg: u64(16),
});
export type IommuHwInfoVtd = Decoded<typeof IommuHwInfoVtd>;

export const IOMMU_HW_INFO_TYPE_NONE = 0;
export const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;

export const IOMMU_HW_CAP_DIRTY_TRACKING = 1 << 0;
export const IOMMU_HW_CAP_PCI_PASID_EXEC = 1 << 1;
export const IOMMU_HW_CAP_PCI_PASID_PRIV = 1 << 2;

export const IommuHwInfo = defineStruct('iommu_hw_info', 40, {
  size: u32(0),
  flags: u32(4),
  devId: u32(8),
  dataLen: u32(12),
  dataUptr: u64(16),
  outDataType: u32(24),
  outMaxPasidLog2: u8(28),
  reserved: bytes(29, 3),
  // Optional (min_size 32): only written back when the caller's struct reaches it.
  outCapabilities: u64(32),
});
export type IommuHwInfo = Decoded<typeof IommuHwInfo>;

// ---- Dirty tracking ----------------------------------------------------------------------------

export const IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1;

export const IommuHwptSetDirtyTracking = defineStruct('iommu_hwpt_set_dirty_tracking', 16, {
  size: u32(0),
  flags: u32(4),
  hwptId: u32(8),
  reserved: u32(12),
});
export type IommuHwptSetDirtyTracking = Decoded<typeof IommuHwptSetDirtyTracking>;

export const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1;

export const IommuHwptGetDirtyBitmap = defineStruct('iommu_hwpt_get_dirty_bitmap', 48, {
  size: u32(0),
  hwptId: u32(4),
  flags: u32(8),
  reserved: u32(12),
  iova: u64(16),
  length: u64(24),
  pageSize: u64(32),
  data: u64(40),
});
export type IommuHwptGetDirtyBitmap = Decoded<typeof IommuHwptGetDirtyBitmap>;

// ---- IOMMU_HWPT_INVALIDATE ---------------------------------------------------------------------

export const IOMMU_HWPT_INVALIDATE_DATA_VTD_S1 = 0;
export const IOMMU_VTD_INV_FLAGS_LEAF = 1 << 0;

/** One VT-d stage-1 invalidation entry of the user array behind `data_uptr`. */
export const IommuHwptVtdS1Invalidate = defineStruct('iommu_hwpt_vtd_s1_invalidate', 24, {
  addr: u64(0),
  npages: u64(8),
  flags: u32(16),
  reserved: u32(20),
});
export type IommuHwptVtdS1Invalidate = Decoded<typeof IommuHwptVtdS1Invalidate>;

export const IommuHwptInvalidate = defineStruct('iommu_hwpt_invalidate', 32, {
  size: u32(0),
  hwptId: u32(4),
  dataUptr: u64(8),
  dataType: u32(16),
  entryLen: u32(20),
  entryNum: u32(24),
  reserved: u32(28),
});
export type IommuHwptInvalidate = Decoded<typeof IommuHwptInvalidate>;

// ---- Fault queue: the records read from / written to the fault fd ------------------------------

export const IOMMU_PGFAULT_FLAGS_PASID_VALID = 1 << 0;
export const IOMMU_PGFAULT_FLAGS_LAST_PAGE = 1 << 1;

export const IOMMU_PGFAULT_PERM_READ = 1 << 0;
export const IOMMU_PGFAULT_PERM_WRITE = 1 << 1;
export const IOMMU_PGFAULT_PERM_EXEC = 1 << 2;
export const IOMMU_PGFAULT_PERM_PRIV = 1 << 3;

export const IommuHwptPgfault = defineStruct('iommu_hwpt_pgfault', 40, {
  flags: u32(0),
  devId: u32(4),
  pasid: u32(8),
  grpid: u32(12),
  perm: u32(16),
  reserved: u32(20),
  addr: u64(24),
  length: u32(32),
  cookie: u32(36),
});
export type IommuHwptPgfault = Decoded<typeof IommuHwptPgfault>;

export const IOMMUFD_PAGE_RESP_SUCCESS = 0;
export const IOMMUFD_PAGE_RESP_INVALID = 1;

export const IommuHwptPageResponse = defineStruct('iommu_hwpt_page_response', 8, {
  cookie: u32(0),
  code: u32(4),
});
export type IommuHwptPageResponse = Decoded<typeof IommuHwptPageResponse>;

// ---- IOMMU_FAULT_QUEUE_ALLOC -------------------------------------------------------------------

export const IommuFaultAlloc = defineStruct('iommu_fault_alloc', 16, {
  size: u32(0),
  flags: u32(4),
  outFaultId: u32(8),
  outFaultFd: u32(12),
});
export type IommuFaultAlloc = Decoded<typeof IommuFaultAlloc>;
