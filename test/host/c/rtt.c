/* Round-trip time of trivial ioctls through the shim: prints median/p90/p99 in ns per kind. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include "uapi.h"

struct iommu_option { uint32_t size; uint32_t option_id; uint16_t op; uint16_t __reserved; uint32_t object_id; uint64_t val64; };

static int64_t now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }
static int cmp(const void *a, const void *b) { int64_t x = *(const int64_t *)a, y = *(const int64_t *)b; return x < y ? -1 : x > y; }

static void report(const char *what, int64_t *t, int n) {
	qsort(t, n, sizeof(*t), cmp);
	printf("%s n=%d median_ns=%lld p90_ns=%lld p99_ns=%lld\n", what, n, (long long)t[n / 2], (long long)t[n * 9 / 10], (long long)t[n * 99 / 100]);
}

int main(int argc, char **argv) {
	int n = argc > 1 ? atoi(argv[1]) : 20000;
	int fd = open("/dev/iommu", O_RDWR);
	if (fd < 0) { perror("open"); return 1; }
	int64_t *t = malloc(sizeof(*t) * n);
	/* IOMMU_OPTION GET RLIMIT_MODE: struct in, val64 out. */
	for (int i = 0; i < n; i++) {
		struct iommu_option o = { .size = sizeof(o), .option_id = 0, .op = 1 };
		int64_t a = now();
		int r = ioctl(fd, IOMMU_OPTION, &o);
		t[i] = now() - a;
		if (r) { perror("IOMMU_OPTION"); return 1; }
	}
	report("IOMMU_OPTION(GET)", t, n);
	/* IOMMU_DESTROY of a missing id: ENOENT, no write-back. */
	for (int i = 0; i < n; i++) {
		struct iommu_destroy d = { .size = sizeof(d), .id = 1000 };
		int64_t a = now();
		int r = ioctl(fd, IOMMU_DESTROY, &d);
		t[i] = now() - a;
		if (r != -1 || errno != ENOENT) { fprintf(stderr, "destroy: %d %d\n", r, errno); return 1; }
	}
	report("IOMMU_DESTROY(ENOENT)", t, n);
	/* An ioctl on an ordinary fd, through the shim's pass-through path. */
	int null = open("/dev/null", O_RDONLY);
	for (int i = 0; i < n; i++) {
		int v;
		int64_t a = now();
		ioctl(null, FIONREAD, &v);
		t[i] = now() - a;
	}
	report("passthrough(FIONREAD /dev/null)", t, n);

	/*
	 * IOMMU_TEST_OP_ACCESS_RW of 16 bytes, alternately read and write, through an access on an
	 * IOAS mapping a shared buffer: the selftest's check_access_rw loop (its commonest call).
	 */
	struct iommu_ioas_alloc al = { .size = sizeof(al) };
	if (ioctl(fd, IOMMU_IOAS_ALLOC, &al)) { perror("IOMMU_IOAS_ALLOC"); return 1; }
	struct iommu_test_cmd ca = { .size = sizeof(ca), .op = IOMMU_TEST_OP_CREATE_ACCESS, .id = al.out_ioas_id };
	if (ioctl(fd, IOMMU_TEST_CMD, &ca)) { perror("CREATE_ACCESS"); return 1; }
	void *buf = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct iommu_ioas_map m = { .size = sizeof(m), .flags = IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
				    .ioas_id = al.out_ioas_id, .user_va = (uintptr_t)buf, .length = 2 * 4096 };
	if (buf == MAP_FAILED || ioctl(fd, IOMMU_IOAS_MAP, &m)) { perror("IOMMU_IOAS_MAP"); return 1; }
	unsigned char tmp[64];
	for (int i = 0; i < n; i++) {
		struct iommu_test_cmd rw = { .size = sizeof(rw), .op = IOMMU_TEST_OP_ACCESS_RW, .id = ca.create_access.out_access_fd,
					     .access_rw = { .iova = m.iova + 4096 - 8, .length = 16, .uptr = (uintptr_t)tmp,
							    .flags = (i & 1) ? MOCK_ACCESS_RW_WRITE : 0 } };
		int64_t a = now();
		int r = ioctl(fd, IOMMU_TEST_CMD, &rw);
		t[i] = now() - a;
		if (r) { perror("ACCESS_RW"); return 1; }
	}
	report("IOMMU_TEST_CMD(ACCESS_RW 16 bytes)", t, n);

	/*
	 * The selftest's check_access_rw loop, four times (plain and MOCK_ACCESS_RW_SLOW_PATH, twice):
	 * 1..63 bytes at 100 IOVAs around a page boundary, a read then a write each, checked. The mean
	 * per call is what the selftest's ACCESS_RW tests spend.
	 */
	uint16_t tmp16[32];
	long calls = 0;
	int64_t a0 = now();
	for (int round = 0; round < 4; round++) {
		struct iommu_test_cmd c = { .size = sizeof(c), .op = IOMMU_TEST_OP_ACCESS_RW, .id = ca.create_access.out_access_fd,
					    .access_rw = { .uptr = (uintptr_t)tmp16 } };
		unsigned def = (round & 1) ? MOCK_ACCESS_RW_SLOW_PATH : 0;
		for (c.access_rw.iova = m.iova + 4096 - 50; c.access_rw.iova < m.iova + 4096 + 50; c.access_rw.iova++) {
			for (c.access_rw.length = 1; c.access_rw.length < sizeof(tmp16); c.access_rw.length++) {
				unsigned char *at = (unsigned char *)buf + (c.access_rw.iova - m.iova);
				c.access_rw.flags = def;
				if (ioctl(fd, IOMMU_TEST_CMD, &c) || memcmp(at, tmp16, c.access_rw.length)) { perror("check_access_rw read"); return 1; }
				for (int i = 0; i < 32; i++)
					tmp16[i] = (uint16_t)rand();
				c.access_rw.flags = def | MOCK_ACCESS_RW_WRITE;
				if (ioctl(fd, IOMMU_TEST_CMD, &c) || memcmp(at, tmp16, c.access_rw.length)) { perror("check_access_rw write"); return 1; }
				calls += 2;
			}
		}
	}
	printf("check_access_rw loop n=%ld mean_ns=%lld\n", calls, (long long)((now() - a0) / calls));
	return 0;
}
