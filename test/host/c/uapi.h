/*
 * The parts of Linux 6.12's <linux/iommufd.h> and the selftest's iommufd_test.h that the host tests
 * use (the build machine's libc headers may predate iommufd). Layouts as in the kernel.
 */
#ifndef IOMMUFD_TS_TEST_UAPI_H
#define IOMMUFD_TS_TEST_UAPI_H
#include <stdint.h>
#include <sys/ioctl.h>

#define IOMMUFD_TYPE (';')
#define IOMMU_DESTROY _IO(IOMMUFD_TYPE, 0x80)
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)
#define IOMMU_IOAS_IOVA_RANGES _IO(IOMMUFD_TYPE, 0x84)
#define IOMMU_IOAS_MAP _IO(IOMMUFD_TYPE, 0x85)
#define IOMMU_IOAS_UNMAP _IO(IOMMUFD_TYPE, 0x86)
#define IOMMU_OPTION _IO(IOMMUFD_TYPE, 0x87)
#define IOMMU_HWPT_ALLOC _IO(IOMMUFD_TYPE, 0x89)
#define IOMMU_FAULT_QUEUE_ALLOC _IO(IOMMUFD_TYPE, 0x8e)
#define IOMMU_TEST_CMD _IO(IOMMUFD_TYPE, 0xa0)
#define VFIO_GET_API_VERSION _IO(IOMMUFD_TYPE, 100)
#define VFIO_CHECK_EXTENSION _IO(IOMMUFD_TYPE, 101)

struct iommu_destroy { uint32_t size; uint32_t id; };
struct iommu_ioas_alloc { uint32_t size; uint32_t flags; uint32_t out_ioas_id; };
#define IOMMU_IOAS_MAP_FIXED_IOVA (1 << 0)
#define IOMMU_IOAS_MAP_WRITEABLE (1 << 1)
#define IOMMU_IOAS_MAP_READABLE (1 << 2)
struct iommu_ioas_map {
	uint32_t size; uint32_t flags; uint32_t ioas_id; uint32_t __reserved;
	uint64_t user_va; uint64_t length; uint64_t iova;
};
struct iommu_ioas_unmap { uint32_t size; uint32_t ioas_id; uint64_t iova; uint64_t length; };
struct iommu_iova_range { uint64_t start; uint64_t last; };
struct iommu_ioas_iova_ranges {
	uint32_t size; uint32_t ioas_id; uint32_t num_iovas; uint32_t __reserved;
	uint64_t allowed_iovas; uint64_t out_iova_alignment;
};
#define IOMMU_HWPT_ALLOC_NEST_PARENT (1 << 0)
#define IOMMU_HWPT_FAULT_ID_VALID (1 << 2)
#define IOMMU_HWPT_DATA_SELFTEST 0xdead
struct iommu_hwpt_alloc {
	uint32_t size; uint32_t flags; uint32_t dev_id; uint32_t pt_id; uint32_t out_hwpt_id; uint32_t __reserved;
	uint32_t data_type; uint32_t data_len; uint64_t data_uptr; uint32_t fault_id; uint32_t __reserved2;
};
struct iommu_fault_alloc { uint32_t size; uint32_t flags; uint32_t out_fault_id; uint32_t out_fault_fd; };
struct iommu_hwpt_pgfault {
	uint32_t flags; uint32_t dev_id; uint32_t pasid; uint32_t grpid; uint32_t perm; uint32_t __reserved;
	uint64_t addr; uint32_t length; uint32_t cookie;
};
struct iommu_hwpt_page_response { uint32_t cookie; uint32_t code; };

enum {
	IOMMU_TEST_OP_ADD_RESERVED = 1,
	IOMMU_TEST_OP_MOCK_DOMAIN,
	IOMMU_TEST_OP_MD_CHECK_MAP,
	IOMMU_TEST_OP_MD_CHECK_REFS,
	IOMMU_TEST_OP_CREATE_ACCESS,
	IOMMU_TEST_OP_DESTROY_ACCESS_PAGES,
	IOMMU_TEST_OP_ACCESS_PAGES,
	IOMMU_TEST_OP_ACCESS_RW,
	IOMMU_TEST_OP_SET_TEMP_MEMORY_LIMIT,
	IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE,
	IOMMU_TEST_OP_ACCESS_REPLACE_IOAS,
	IOMMU_TEST_OP_MOCK_DOMAIN_FLAGS,
	IOMMU_TEST_OP_DIRTY,
	IOMMU_TEST_OP_MD_CHECK_IOTLB,
	IOMMU_TEST_OP_TRIGGER_IOPF,
};
#define MOCK_FLAGS_ACCESS_WRITE (1 << 0)
#define MOCK_FLAGS_ACCESS_SYZ (1 << 16)
#define MOCK_ACCESS_RW_WRITE (1 << 0)
#define MOCK_ACCESS_RW_SLOW_PATH (1 << 2)
#define MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES (1 << 0)

struct iommu_test_cmd {
	uint32_t size; uint32_t op; uint32_t id; uint32_t __reserved;
	union {
		struct { uint64_t start; uint64_t length; } add_reserved;
		struct { uint32_t out_stdev_id; uint32_t out_hwpt_id; uint32_t out_idev_id; } mock_domain;
		struct { uint64_t iova; uint64_t length; uint64_t uptr; } check_map;
		struct { uint64_t length; uint64_t uptr; uint32_t refs; } check_refs;
		struct { uint32_t out_access_fd; uint32_t flags; } create_access;
		struct { uint32_t access_pages_id; } destroy_access_pages;
		struct { uint32_t flags; uint32_t out_access_pages_id; uint64_t iova; uint64_t length; uint64_t uptr; } access_pages;
		struct { uint64_t iova; uint64_t length; uint64_t uptr; uint32_t flags; } access_rw;
		struct { uint32_t dev_id; uint32_t pasid; uint32_t grpid; uint32_t perm; uint64_t addr; } trigger_iopf;
		uint8_t pad[48];
	};
	uint32_t last;
};
_Static_assert(sizeof(struct iommu_test_cmd) == 72, "iommu_test_cmd");
_Static_assert(sizeof(struct iommu_hwpt_pgfault) == 40, "pgfault");
#endif
