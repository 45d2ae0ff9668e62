/**
 * The VFIO type1 container uAPI (include/uapi/linux/vfio.h, Linux 6.12.117) that iommufd
 * answers on its own fd, so /dev/vfio/vfio can be a link to /dev/iommu. All of these ioctls
 * share iommufd's type ';' and sit below its table (nr 0x64..0x75), which is how the dispatcher
 * tells them apart.
 */
import { _IO } from './ioctl.js';
import { defineStruct, struct, u16, u32, u64, type Decoded } from './struct.js';

export const VFIO_API_VERSION = 0;
export const VFIO_TYPE = 0x3b; // ';'
export const VFIO_BASE = 100;

// CHECK_EXTENSION / SET_IOMMU arguments.
export const VFIO_TYPE1_IOMMU = 1;
export const VFIO_SPAPR_TCE_IOMMU = 2;
export const VFIO_TYPE1v2_IOMMU = 3;
export const VFIO_DMA_CC_IOMMU = 4;
export const VFIO_TYPE1_NESTING_IOMMU = 6;
export const VFIO_SPAPR_TCE_v2_IOMMU = 7;
export const VFIO_NOIOMMU_IOMMU = 8;
export const VFIO_UNMAP_ALL = 9;
export const VFIO_UPDATE_VADDR = 10;

// All VFIO ioctls are _IO(): direction and size bits are zero, the struct carries its own argsz.
export const VFIO_GET_API_VERSION = _IO(VFIO_TYPE, VFIO_BASE + 0);
export const VFIO_CHECK_EXTENSION = _IO(VFIO_TYPE, VFIO_BASE + 1);
export const VFIO_SET_IOMMU = _IO(VFIO_TYPE, VFIO_BASE + 2);
export const VFIO_IOMMU_GET_INFO = _IO(VFIO_TYPE, VFIO_BASE + 12);
export const VFIO_IOMMU_MAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 13);
export const VFIO_IOMMU_UNMAP_DMA = _IO(VFIO_TYPE, VFIO_BASE + 14);
/** The following are not served by iommufd (ENOTTY) but are named so traces can. */
export const VFIO_IOMMU_ENABLE = _IO(VFIO_TYPE, VFIO_BASE + 15);
export const VFIO_IOMMU_DISABLE = _IO(VFIO_TYPE, VFIO_BASE + 16);
export const VFIO_IOMMU_DIRTY_PAGES = _IO(VFIO_TYPE, VFIO_BASE + 17);

export const VFIO_IOCTL_NAMES: Readonly<Record<number, string>> = {
  [VFIO_GET_API_VERSION]: 'VFIO_GET_API_VERSION',
  [VFIO_CHECK_EXTENSION]: 'VFIO_CHECK_EXTENSION',
  [VFIO_SET_IOMMU]: 'VFIO_SET_IOMMU',
  [VFIO_IOMMU_GET_INFO]: 'VFIO_IOMMU_GET_INFO',
  [VFIO_IOMMU_MAP_DMA]: 'VFIO_IOMMU_MAP_DMA',
  [VFIO_IOMMU_UNMAP_DMA]: 'VFIO_IOMMU_UNMAP_DMA',
  [VFIO_IOMMU_ENABLE]: 'VFIO_IOMMU_ENABLE',
  [VFIO_IOMMU_DISABLE]: 'VFIO_IOMMU_DISABLE',
  [VFIO_IOMMU_DIRTY_PAGES]: 'VFIO_IOMMU_DIRTY_PAGES',
};

// ---- VFIO_IOMMU_GET_INFO -----------------------------------------------------------------------

/** Capability chain element header; `next` is an offset from the start of the info buffer. */
export const VfioInfoCapHeader = defineStruct('vfio_info_cap_header', 8, {
  id: u16(0),
  version: u16(2),
  next: u32(4),
});
export type VfioInfoCapHeader = Decoded<typeof VfioInfoCapHeader>;

export const VFIO_IOMMU_INFO_PGSIZES = 1 << 0;
export const VFIO_IOMMU_INFO_CAPS = 1 << 1;

export const VfioIommuType1Info = defineStruct('vfio_iommu_type1_info', 24, {
  argsz: u32(0),
  flags: u32(4),
  iovaPgsizes: u64(8),
  capOffset: u32(16),
  pad: u32(20),
});
export type VfioIommuType1Info = Decoded<typeof VfioIommuType1Info>;

export const VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1;
export const VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2;
export const VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3;

/** `end` is inclusive, like iommu_iova_range.last. */
export const VfioIovaRange = defineStruct('vfio_iova_range', 16, { start: u64(0), end: u64(8) });
export type VfioIovaRange = Decoded<typeof VfioIovaRange>;

/** Followed by `nrIovas` VfioIovaRange entries (the flexible `iova_ranges[]` at offset 16). */
export const VfioIommuType1InfoCapIovaRange = defineStruct('vfio_iommu_type1_info_cap_iova_range', 16, {
  header: struct(0, VfioInfoCapHeader),
  nrIovas: u32(8),
  reserved: u32(12),
});
export type VfioIommuType1InfoCapIovaRange = Decoded<typeof VfioIommuType1InfoCapIovaRange>;
/** Offset of the flexible `iova_ranges[]` array. */
export const VFIO_CAP_IOVA_RANGE_ENTRIES_OFFSET = 16;

/** sizeof is 12; the capability chain pads each element to 8 bytes, so it occupies 16. */
export const VfioIommuType1InfoDmaAvail = defineStruct('vfio_iommu_type1_info_dma_avail', 12, {
  header: struct(0, VfioInfoCapHeader),
  avail: u32(8),
});
export type VfioIommuType1InfoDmaAvail = Decoded<typeof VfioIommuType1InfoDmaAvail>;

// ---- VFIO_IOMMU_MAP_DMA / UNMAP_DMA ------------------------------------------------------------

export const VFIO_DMA_MAP_FLAG_READ = 1 << 0;
export const VFIO_DMA_MAP_FLAG_WRITE = 1 << 1;
export const VFIO_DMA_MAP_FLAG_VADDR = 1 << 2;

export const VfioIommuType1DmaMap = defineStruct('vfio_iommu_type1_dma_map', 32, {
  argsz: u32(0),
  flags: u32(4),
  vaddr: u64(8),
  iova: u64(16),
  size: u64(24),
});
export type VfioIommuType1DmaMap = Decoded<typeof VfioIommuType1DmaMap>;

export const VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0;
export const VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1;
export const VFIO_DMA_UNMAP_FLAG_VADDR = 1 << 2;

/** Followed by a flexible `data[]` (dirty bitmap, rejected by iommufd) at offset 24. */
export const VfioIommuType1DmaUnmap = defineStruct('vfio_iommu_type1_dma_unmap', 24, {
  argsz: u32(0),
  flags: u32(4),
  iova: u64(8),
  size: u64(16),
});
export type VfioIommuType1DmaUnmap = Decoded<typeof VfioIommuType1DmaUnmap>;

export const VFIO_IOMMU_DIRTY_PAGES_FLAG_START = 1 << 0;
export const VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP = 1 << 1;
export const VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP = 1 << 2;
