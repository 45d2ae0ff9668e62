/*
 * Prints the ground truth of the iommufd uAPI as JSON: struct sizes, field offsets and sizes,
 * ioctl command values and constants, all taken from the real kernel headers by the C compiler.
 * test/uapi/layout-data.json is this program's output; the TypeScript codecs are tested
 * against it. Regenerate with tools/layout/gen.sh.
 */
#include <stddef.h>
#include <stdio.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include "iommufd_test.h"

#ifndef KERNEL_VERSION_STRING
#define KERNEL_VERSION_STRING "unknown"
#endif

static int first_struct = 1, first_field, first_item;

static void struct_begin(const char *name, size_t size)
{
	printf("%s\n    \"%s\": { \"size\": %zu, \"fields\": {", first_struct ? "" : ",", name, size);
	first_struct = 0;
	first_field = 1;
}

static void struct_end(void)
{
	printf("\n    } }");
}

static void field(const char *name, size_t offset, size_t size)
{
	printf("%s\n      \"%s\": { \"offset\": %zu, \"size\": %zu }", first_field ? "" : ",", name,
	       offset, size);
	first_field = 0;
}

static void item(const char *name, unsigned long long value)
{
	printf("%s\n    \"%s\": %llu", first_item ? "" : ",", name, value);
	first_item = 0;
}

#define S(T) struct_begin(#T, sizeof(struct T))
#define E() struct_end()
#define F(T, f) field(#f, offsetof(struct T, f), sizeof(((struct T *)0)->f))
/* Flexible array members have no sizeof; they occupy nothing in the struct. */
#define FLEX(T, f) field(#f, offsetof(struct T, f), 0)
/* Members of iommu_test_cmd's anonymous union, flattened as "member.field". */
#define U(m, f) field(#m "." #f, offsetof(struct iommu_test_cmd, m.f), \
		      sizeof(((struct iommu_test_cmd *)0)->m.f))
#define IOCTL(n) item(#n, (unsigned long long)(n))
#define C(n) item(#n, (unsigned long long)(n))

static void structs(void)
{
	/* include/uapi/linux/iommufd.h */
	S(iommu_destroy); F(iommu_destroy, size); F(iommu_destroy, id); E();
	S(iommu_ioas_alloc); F(iommu_ioas_alloc, size); F(iommu_ioas_alloc, flags);
	F(iommu_ioas_alloc, out_ioas_id); E();
	S(iommu_iova_range); F(iommu_iova_range, start); F(iommu_iova_range, last); E();
	S(iommu_ioas_iova_ranges); F(iommu_ioas_iova_ranges, size); F(iommu_ioas_iova_ranges, ioas_id);
	F(iommu_ioas_iova_ranges, num_iovas); F(iommu_ioas_iova_ranges, __reserved);
	F(iommu_ioas_iova_ranges, allowed_iovas); F(iommu_ioas_iova_ranges, out_iova_alignment); E();
	S(iommu_ioas_allow_iovas); F(iommu_ioas_allow_iovas, size); F(iommu_ioas_allow_iovas, ioas_id);
	F(iommu_ioas_allow_iovas, num_iovas); F(iommu_ioas_allow_iovas, __reserved);
	F(iommu_ioas_allow_iovas, allowed_iovas); E();
	S(iommu_ioas_map); F(iommu_ioas_map, size); F(iommu_ioas_map, flags); F(iommu_ioas_map, ioas_id);
	F(iommu_ioas_map, __reserved); F(iommu_ioas_map, user_va); F(iommu_ioas_map, length);
	F(iommu_ioas_map, iova); E();
	S(iommu_ioas_copy); F(iommu_ioas_copy, size); F(iommu_ioas_copy, flags);
	F(iommu_ioas_copy, dst_ioas_id); F(iommu_ioas_copy, src_ioas_id); F(iommu_ioas_copy, length);
	F(iommu_ioas_copy, dst_iova); F(iommu_ioas_copy, src_iova); E();
	S(iommu_ioas_unmap); F(iommu_ioas_unmap, size); F(iommu_ioas_unmap, ioas_id);
	F(iommu_ioas_unmap, iova); F(iommu_ioas_unmap, length); E();
	S(iommu_option); F(iommu_option, size); F(iommu_option, option_id); F(iommu_option, op);
	F(iommu_option, __reserved); F(iommu_option, object_id); F(iommu_option, val64); E();
	S(iommu_vfio_ioas); F(iommu_vfio_ioas, size); F(iommu_vfio_ioas, ioas_id); F(iommu_vfio_ioas, op);
	F(iommu_vfio_ioas, __reserved); E();
	S(iommu_hwpt_vtd_s1); F(iommu_hwpt_vtd_s1, flags); F(iommu_hwpt_vtd_s1, pgtbl_addr);
	F(iommu_hwpt_vtd_s1, addr_width); F(iommu_hwpt_vtd_s1, __reserved); E();
	S(iommu_hwpt_alloc); F(iommu_hwpt_alloc, size); F(iommu_hwpt_alloc, flags);
	F(iommu_hwpt_alloc, dev_id); F(iommu_hwpt_alloc, pt_id); F(iommu_hwpt_alloc, out_hwpt_id);
	F(iommu_hwpt_alloc, __reserved); F(iommu_hwpt_alloc, data_type); F(iommu_hwpt_alloc, data_len);
	F(iommu_hwpt_alloc, data_uptr); F(iommu_hwpt_alloc, fault_id); F(iommu_hwpt_alloc, __reserved2);
	E();
	S(iommu_hw_info_vtd); F(iommu_hw_info_vtd, flags); F(iommu_hw_info_vtd, __reserved);
	F(iommu_hw_info_vtd, cap_reg); F(iommu_hw_info_vtd, ecap_reg); E();
	S(iommu_hw_info); F(iommu_hw_info, size); F(iommu_hw_info, flags); F(iommu_hw_info, dev_id);
	F(iommu_hw_info, data_len); F(iommu_hw_info, data_uptr); F(iommu_hw_info, out_data_type);
	F(iommu_hw_info, out_max_pasid_log2); F(iommu_hw_info, __reserved);
	F(iommu_hw_info, out_capabilities); E();
	S(iommu_hwpt_set_dirty_tracking); F(iommu_hwpt_set_dirty_tracking, size);
	F(iommu_hwpt_set_dirty_tracking, flags); F(iommu_hwpt_set_dirty_tracking, hwpt_id);
	F(iommu_hwpt_set_dirty_tracking, __reserved); E();
	S(iommu_hwpt_get_dirty_bitmap); F(iommu_hwpt_get_dirty_bitmap, size);
	F(iommu_hwpt_get_dirty_bitmap, hwpt_id); F(iommu_hwpt_get_dirty_bitmap, flags);
	F(iommu_hwpt_get_dirty_bitmap, __reserved); F(iommu_hwpt_get_dirty_bitmap, iova);
	F(iommu_hwpt_get_dirty_bitmap, length); F(iommu_hwpt_get_dirty_bitmap, page_size);
	F(iommu_hwpt_get_dirty_bitmap, data); E();
	S(iommu_hwpt_vtd_s1_invalidate); F(iommu_hwpt_vtd_s1_invalidate, addr);
	F(iommu_hwpt_vtd_s1_invalidate, npages); F(iommu_hwpt_vtd_s1_invalidate, flags);
	F(iommu_hwpt_vtd_s1_invalidate, __reserved); E();
	S(iommu_hwpt_invalidate); F(iommu_hwpt_invalidate, size); F(iommu_hwpt_invalidate, hwpt_id);
	F(iommu_hwpt_invalidate, data_uptr); F(iommu_hwpt_invalidate, data_type);
	F(iommu_hwpt_invalidate, entry_len); F(iommu_hwpt_invalidate, entry_num);
	F(iommu_hwpt_invalidate, __reserved); E();
	S(iommu_hwpt_pgfault); F(iommu_hwpt_pgfault, flags); F(iommu_hwpt_pgfault, dev_id);
	F(iommu_hwpt_pgfault, pasid); F(iommu_hwpt_pgfault, grpid); F(iommu_hwpt_pgfault, perm);
	F(iommu_hwpt_pgfault, __reserved); F(iommu_hwpt_pgfault, addr); F(iommu_hwpt_pgfault, length);
	F(iommu_hwpt_pgfault, cookie); E();
	S(iommu_hwpt_page_response); F(iommu_hwpt_page_response, cookie);
	F(iommu_hwpt_page_response, code); E();
	S(iommu_fault_alloc); F(iommu_fault_alloc, size); F(iommu_fault_alloc, flags);
	F(iommu_fault_alloc, out_fault_id); F(iommu_fault_alloc, out_fault_fd); E();

	/* drivers/iommu/iommufd/iommufd_test.h */
	S(iommu_test_cmd); F(iommu_test_cmd, size); F(iommu_test_cmd, op); F(iommu_test_cmd, id);
	F(iommu_test_cmd, __reserved);
	U(add_reserved, start); U(add_reserved, length);
	U(mock_domain, out_stdev_id); U(mock_domain, out_hwpt_id); U(mock_domain, out_idev_id);
	U(mock_domain_flags, out_stdev_id); U(mock_domain_flags, out_hwpt_id);
	U(mock_domain_flags, out_idev_id); U(mock_domain_flags, dev_flags);
	U(mock_domain_replace, pt_id);
	U(check_map, iova); U(check_map, length); U(check_map, uptr);
	U(check_refs, length); U(check_refs, uptr); U(check_refs, refs);
	U(create_access, out_access_fd); U(create_access, flags);
	U(destroy_access_pages, access_pages_id);
	U(access_pages, flags); U(access_pages, out_access_pages_id); U(access_pages, iova);
	U(access_pages, length); U(access_pages, uptr);
	U(access_rw, iova); U(access_rw, length); U(access_rw, uptr); U(access_rw, flags);
	U(memory_limit, limit);
	U(access_replace_ioas, ioas_id);
	U(dirty, flags); U(dirty, iova); U(dirty, length); U(dirty, page_size); U(dirty, uptr);
	U(dirty, out_nr_dirty);
	U(check_iotlb, id); U(check_iotlb, iotlb);
	U(trigger_iopf, dev_id); U(trigger_iopf, pasid); U(trigger_iopf, grpid);
	U(trigger_iopf, perm); U(trigger_iopf, addr);
	F(iommu_test_cmd, last); E();
	S(iommu_test_hw_info); F(iommu_test_hw_info, flags); F(iommu_test_hw_info, test_reg); E();
	S(iommu_hwpt_selftest); F(iommu_hwpt_selftest, iotlb); E();
	S(iommu_hwpt_invalidate_selftest); F(iommu_hwpt_invalidate_selftest, flags);
	F(iommu_hwpt_invalidate_selftest, iotlb_id); E();

	/* include/uapi/linux/vfio.h: the type1 container part served by iommufd */
	S(vfio_info_cap_header); F(vfio_info_cap_header, id); F(vfio_info_cap_header, version);
	F(vfio_info_cap_header, next); E();
	S(vfio_iommu_type1_info); F(vfio_iommu_type1_info, argsz); F(vfio_iommu_type1_info, flags);
	F(vfio_iommu_type1_info, iova_pgsizes); F(vfio_iommu_type1_info, cap_offset);
	F(vfio_iommu_type1_info, pad); E();
	S(vfio_iova_range); F(vfio_iova_range, start); F(vfio_iova_range, end); E();
	S(vfio_iommu_type1_info_cap_iova_range); F(vfio_iommu_type1_info_cap_iova_range, header);
	F(vfio_iommu_type1_info_cap_iova_range, nr_iovas);
	F(vfio_iommu_type1_info_cap_iova_range, reserved);
	FLEX(vfio_iommu_type1_info_cap_iova_range, iova_ranges); E();
	S(vfio_iommu_type1_info_dma_avail); F(vfio_iommu_type1_info_dma_avail, header);
	F(vfio_iommu_type1_info_dma_avail, avail); E();
	S(vfio_iommu_type1_dma_map); F(vfio_iommu_type1_dma_map, argsz);
	F(vfio_iommu_type1_dma_map, flags); F(vfio_iommu_type1_dma_map, vaddr);
	F(vfio_iommu_type1_dma_map, iova); F(vfio_iommu_type1_dma_map, size); E();
	S(vfio_iommu_type1_dma_unmap); F(vfio_iommu_type1_dma_unmap, argsz);
	F(vfio_iommu_type1_dma_unmap, flags); F(vfio_iommu_type1_dma_unmap, iova);
	F(vfio_iommu_type1_dma_unmap, size); FLEX(vfio_iommu_type1_dma_unmap, data); E();
}

static void ioctls(void)
{
	IOCTL(IOMMU_DESTROY);
	IOCTL(IOMMU_IOAS_ALLOC);
	IOCTL(IOMMU_IOAS_ALLOW_IOVAS);
	IOCTL(IOMMU_IOAS_COPY);
	IOCTL(IOMMU_IOAS_IOVA_RANGES);
	IOCTL(IOMMU_IOAS_MAP);
	IOCTL(IOMMU_IOAS_UNMAP);
	IOCTL(IOMMU_OPTION);
	IOCTL(IOMMU_VFIO_IOAS);
	IOCTL(IOMMU_HWPT_ALLOC);
	IOCTL(IOMMU_GET_HW_INFO);
	IOCTL(IOMMU_HWPT_SET_DIRTY_TRACKING);
	IOCTL(IOMMU_HWPT_GET_DIRTY_BITMAP);
	IOCTL(IOMMU_HWPT_INVALIDATE);
	IOCTL(IOMMU_FAULT_QUEUE_ALLOC);
	IOCTL(IOMMU_TEST_CMD);
	IOCTL(VFIO_GET_API_VERSION);
	IOCTL(VFIO_CHECK_EXTENSION);
	IOCTL(VFIO_SET_IOMMU);
	IOCTL(VFIO_IOMMU_GET_INFO);
	IOCTL(VFIO_IOMMU_MAP_DMA);
	IOCTL(VFIO_IOMMU_UNMAP_DMA);
	IOCTL(VFIO_IOMMU_ENABLE);
	IOCTL(VFIO_IOMMU_DISABLE);
	IOCTL(VFIO_IOMMU_DIRTY_PAGES);
}

static void constants(void)
{
	C(IOMMUFD_TYPE);
	C(IOMMUFD_CMD_BASE);
	C(IOMMUFD_CMD_DESTROY);
	C(IOMMUFD_CMD_IOAS_ALLOC);
	C(IOMMUFD_CMD_IOAS_ALLOW_IOVAS);
	C(IOMMUFD_CMD_IOAS_COPY);
	C(IOMMUFD_CMD_IOAS_IOVA_RANGES);
	C(IOMMUFD_CMD_IOAS_MAP);
	C(IOMMUFD_CMD_IOAS_UNMAP);
	C(IOMMUFD_CMD_OPTION);
	C(IOMMUFD_CMD_VFIO_IOAS);
	C(IOMMUFD_CMD_HWPT_ALLOC);
	C(IOMMUFD_CMD_GET_HW_INFO);
	C(IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING);
	C(IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP);
	C(IOMMUFD_CMD_HWPT_INVALIDATE);
	C(IOMMUFD_CMD_FAULT_QUEUE_ALLOC);
	C(IOMMU_IOAS_MAP_FIXED_IOVA);
	C(IOMMU_IOAS_MAP_WRITEABLE);
	C(IOMMU_IOAS_MAP_READABLE);
	C(IOMMU_OPTION_RLIMIT_MODE);
	C(IOMMU_OPTION_HUGE_PAGES);
	C(IOMMU_OPTION_OP_SET);
	C(IOMMU_OPTION_OP_GET);
	C(IOMMU_VFIO_IOAS_GET);
	C(IOMMU_VFIO_IOAS_SET);
	C(IOMMU_VFIO_IOAS_CLEAR);
	C(IOMMU_HWPT_ALLOC_NEST_PARENT);
	C(IOMMU_HWPT_ALLOC_DIRTY_TRACKING);
	C(IOMMU_HWPT_FAULT_ID_VALID);
	C(IOMMU_VTD_S1_SRE);
	C(IOMMU_VTD_S1_EAFE);
	C(IOMMU_VTD_S1_WPE);
	C(IOMMU_HWPT_DATA_NONE);
	C(IOMMU_HWPT_DATA_VTD_S1);
	C(IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17);
	C(IOMMU_HW_INFO_TYPE_NONE);
	C(IOMMU_HW_INFO_TYPE_INTEL_VTD);
	C(IOMMU_HW_CAP_DIRTY_TRACKING);
	C(IOMMU_HW_CAP_PCI_PASID_EXEC);
	C(IOMMU_HW_CAP_PCI_PASID_PRIV);
	C(IOMMU_HWPT_DIRTY_TRACKING_ENABLE);
	C(IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR);
	C(IOMMU_HWPT_INVALIDATE_DATA_VTD_S1);
	C(IOMMU_VTD_INV_FLAGS_LEAF);
	C(IOMMU_PGFAULT_FLAGS_PASID_VALID);
	C(IOMMU_PGFAULT_FLAGS_LAST_PAGE);
	C(IOMMU_PGFAULT_PERM_READ);
	C(IOMMU_PGFAULT_PERM_WRITE);
	C(IOMMU_PGFAULT_PERM_EXEC);
	C(IOMMU_PGFAULT_PERM_PRIV);
	C(IOMMUFD_PAGE_RESP_SUCCESS);
	C(IOMMUFD_PAGE_RESP_INVALID);

	C(IOMMU_TEST_OP_ADD_RESERVED);
	C(IOMMU_TEST_OP_MOCK_DOMAIN);
	C(IOMMU_TEST_OP_MD_CHECK_MAP);
	C(IOMMU_TEST_OP_MD_CHECK_REFS);
	C(IOMMU_TEST_OP_CREATE_ACCESS);
	C(IOMMU_TEST_OP_DESTROY_ACCESS_PAGES);
	C(IOMMU_TEST_OP_ACCESS_PAGES);
	C(IOMMU_TEST_OP_ACCESS_RW);
	C(IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT);
	C(IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE);
	C(IOMMU_TEST_OP_ACCESS_REPLACE_IOAS);
	C(IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS);
	C(IOMMU_TEST_OP_DIRTY);
	C(IOMMU_TEST_OP_MD_CHECK_IOTLB);
	C(IOMMU_TEST_OP_TRIGGER_IOPF);
	C(MOCK_APERTURE_START);
	C(MOCK_APERTURE_LAST);
	C(MOCK_FLAGS_ACCESS_WRITE);
	C(MOCK_FLAGS_ACCESS_SYZ);
	C(MOCK_ACCESS_RW_WRITE);
	C(MOCK_ACCESS_RW_SLOW_PATH);
	C(MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES);
	C(MOCK_FLAGS_DEVICE_NO_DIRTY);
	C(MOCK_FLAGS_DEVICE_HUGE_IOVA);
	C(MOCK_NESTED_DOMAIN_IOTLB_ID_MAX);
	C(MOCK_NESTED_DOMAIN_IOTLB_NUM);
	C(IOMMU_HW_INFO_TYPE_SELFTEST);
	C(IOMMU_HW_INFO_SELFTEST_REGVAL);
	C(IOMMU_HWPT_DATA_SELFTEST);
	C(IOMMU_TEST_IOTLB_DEFAULT);
	C(IOMMU_HWPT_INVALIDATE_DATA_SELFTEST);
	C(IOMMU_HWPT_INVALIDATE_DATA_SELFTEST_INVALID);
	C(IOMMU_TEST_INVALIDATE_FLAG_ALL);

	C(VFIO_API_VERSION);
	C(VFIO_TYPE);
	C(VFIO_BASE);
	C(VFIO_TYPE1_IOMMU);
	C(VFIO_SPAPR_TCE_IOMMU);
	C(VFIO_TYPE1v2_IOMMU);
	C(VFIO_DMA_CC_IOMMU);
	C(VFIO_TYPE1_NESTING_IOMMU);
	C(VFIO_SPAPR_TCE_v2_IOMMU);
	C(VFIO_NOIOMMU_IOMMU);
	C(VFIO_UNMAP_ALL);
	C(VFIO_UPDATE_VADDR);
	C(VFIO_IOMMU_INFO_PGSIZES);
	C(VFIO_IOMMU_INFO_CAPS);
	C(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE);
	C(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION);
	C(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL);
	C(VFIO_DMA_MAP_FLAG_READ);
	C(VFIO_DMA_MAP_FLAG_WRITE);
	C(VFIO_DMA_MAP_FLAG_VADDR);
	C(VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP);
	C(VFIO_DMA_UNMAP_FLAG_ALL);
	C(VFIO_DMA_UNMAP_FLAG_VADDR);
	C(VFIO_IOMMU_DIRTY_PAGES_FLAG_START);
	C(VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP);
	C(VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP);
}

int main(void)
{
	printf("{\n  \"kernel\": \"%s\",\n  \"structs\": {", KERNEL_VERSION_STRING);
	structs();
	printf("\n  },\n  \"ioctls\": {");
	first_item = 1;
	ioctls();
	printf("\n  },\n  \"constants\": {");
	first_item = 1;
	constants();
	printf("\n  }\n}\n");
	return 0;
}
