/*
 * Scenarios for the host tests (test/host), one per argv[1]. Each prints "ok <what>"
 * lines and exits 0 when everything matched the kernel's behaviour; a mismatch prints
 * "FAIL <file>:<line>: <expr> ..." and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include "uapi.h"

#define CHECK(cond, ...)                                                                            \
	do {                                                                                        \
		if (!(cond)) {                                                                      \
			int e_ = errno;                                                             \
			printf("FAIL %s:%d: %s (errno %d %s) ", __FILE__, __LINE__, #cond, e_, strerror(e_)); \
			printf(__VA_ARGS__);                                                        \
			printf("\n");                                                               \
			fflush(stdout);                                                             \
			exit(1);                                                                    \
		}                                                                                   \
	} while (0)
#define EXPECT_ERR(call, err) \
	do { errno = 0; int r_ = (call); CHECK(r_ == -1 && errno == (err), "%s = %d, want -1 %s", #call, r_, strerror(err)); } while (0)
#define OK(what) do { printf("ok %s\n", what); fflush(stdout); } while (0)

static const size_t PAGE = 4096;
/* An unmapped address the compiler cannot see through. */
static volatile uintptr_t bad_addr = 8;
#define BAD ((void *)bad_addr)

static int open_iommu(void)
{
	int fd = open("/dev/iommu", O_RDWR);
	CHECK(fd >= 0, "open /dev/iommu");
	return fd;
}

static uint32_t ioas_alloc(int fd)
{
	struct iommu_ioas_alloc a = { .size = sizeof(a) };
	CHECK(ioctl(fd, IOMMU_IOAS_ALLOC, &a) == 0, "IOAS_ALLOC");
	return a.out_ioas_id;
}

static int ioas_map(int fd, uint32_t ioas, void *va, size_t len, uint32_t flags, uint64_t *iova)
{
	struct iommu_ioas_map m = { .size = sizeof(m), .flags = flags, .ioas_id = ioas, .user_va = (uintptr_t)va, .length = len, .iova = iova ? *iova : 0 };
	int r = ioctl(fd, IOMMU_IOAS_MAP, &m);
	if (r == 0 && iova)
		*iova = m.iova;
	return r;
}

static int destroy(int fd, uint32_t id)
{
	struct iommu_destroy d = { .size = sizeof(d), .id = id };
	return ioctl(fd, IOMMU_DESTROY, &d);
}

static int mock_domain(int fd, uint32_t ioas, uint32_t *stdev, uint32_t *hwpt, uint32_t *idev)
{
	struct iommu_test_cmd c = { .size = sizeof(c), .op = IOMMU_TEST_OP_MOCK_DOMAIN, .id = ioas };
	int r = ioctl(fd, IOMMU_TEST_CMD, &c);
	if (r == 0) {
		if (stdev) *stdev = c.mock_domain.out_stdev_id;
		if (hwpt) *hwpt = c.mock_domain.out_hwpt_id;
		if (idev) *idev = c.mock_domain.out_idev_id;
	}
	return r;
}

static int check_map(int fd, uint32_t hwpt, uint64_t iova, void *va, size_t len)
{
	struct iommu_test_cmd c = { .size = sizeof(c), .op = IOMMU_TEST_OP_MD_CHECK_MAP, .id = hwpt,
				    .check_map = { .iova = iova, .length = len, .uptr = (uintptr_t)va } };
	return ioctl(fd, IOMMU_TEST_CMD, &c);
}

static int check_refs(int fd, void *va, size_t len, uint32_t refs)
{
	struct iommu_test_cmd c = { .size = sizeof(c), .op = IOMMU_TEST_OP_MD_CHECK_REFS,
				    .check_refs = { .length = len, .uptr = (uintptr_t)va, .refs = refs } };
	return ioctl(fd, IOMMU_TEST_CMD, &c);
}

static int lowest_free_fd(void)
{
	int p = dup(0);
	close(p);
	return p;
}

static void *shared_buf(size_t len)
{
	void *b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(b != MAP_FAILED, "mmap");
	return b;
}

/* ---- scenarios ------------------------------------------------------------------------------ */

static int t_basic(void)
{
	int fd = open_iommu();
	CHECK(fcntl(fd, F_GETFD) == 0, "no FD_CLOEXEC without O_CLOEXEC");
	uint32_t ioas = ioas_alloc(fd);
	CHECK(ioas == 1, "first IOAS is 1, got %u", ioas);
	void *buf = shared_buf(16 * PAGE);
	uint64_t iova = 0;
	CHECK(ioas_map(fd, ioas, buf, 16 * PAGE, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, &iova) == 0, "map");
	CHECK(iova != 0, "auto IOVA");
	struct iommu_iova_range ranges[4];
	struct iommu_ioas_iova_ranges rr = { .size = sizeof(rr), .ioas_id = ioas, .num_iovas = 4, .allowed_iovas = (uintptr_t)ranges };
	CHECK(ioctl(fd, IOMMU_IOAS_IOVA_RANGES, &rr) == 0, "IOVA_RANGES");
	CHECK(rr.num_iovas == 1 && ranges[0].start == 0 && ranges[0].last == UINT64_MAX, "one full range: %u [%llx,%llx]",
	      rr.num_iovas, (unsigned long long)ranges[0].start, (unsigned long long)ranges[0].last);
	CHECK(rr.out_iova_alignment == 1, "alignment 1 without domains, got %llu", (unsigned long long)rr.out_iova_alignment);
	EXPECT_ERR(destroy(fd, 99), ENOENT);
	CHECK(ioctl(fd, VFIO_GET_API_VERSION) == 0, "VFIO_GET_API_VERSION = 0");
	EXPECT_ERR(ioctl(fd, TCGETS, &rr), ENOTTY);
	char c;
	EXPECT_ERR((int)read(fd, &c, 1), EINVAL);
	EXPECT_ERR((int)write(fd, &c, 1), EINVAL);
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLOUT };
	CHECK(poll(&p, 1, 0) == 1 && p.revents == (POLLIN | POLLOUT), "poll on /dev/iommu: default mask, got 0x%x", p.revents);
	errno = 1234;
	CHECK(destroy(fd, ioas) == 0, "destroy");
	CHECK(errno == 1234, "errno untouched by a successful ioctl");
	CHECK(close(fd) == 0, "close");
	int fd2 = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	CHECK(fd2 == fd, "the fd number is reused: %d", fd2);
	CHECK(fcntl(fd2, F_GETFD) == FD_CLOEXEC, "O_CLOEXEC honoured");
	CHECK(ioas_alloc(fd2) == 1, "a new context starts at id 1");
	int vfd = open("/dev/vfio/vfio", O_RDWR);
	CHECK(vfd >= 0, "open /dev/vfio/vfio");
	CHECK(ioctl(vfd, VFIO_CHECK_EXTENSION, 1) == 1, "VFIO_TYPE1_IOMMU supported");
	OK("basic");
	return 0;
}

static int t_efault(void)
{
	int fd = open_iommu();
	EXPECT_ERR(ioctl(fd, IOMMU_IOAS_ALLOC, NULL), EFAULT);
	/* Below mmap_min_addr: never mapped. */
	char *gone = (char *)0x2000;
	EXPECT_ERR(ioctl(fd, IOMMU_IOAS_ALLOC, gone), EFAULT);
	OK("NULL and unmapped struct: EFAULT");

	/* A read-only struct: the IOAS is created, the response faults, creation is undone. */
	struct iommu_ioas_alloc *ro = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ro->size = sizeof(*ro);
	mprotect(ro, PAGE, PROT_READ);
	EXPECT_ERR(ioctl(fd, IOMMU_IOAS_ALLOC, ro), EFAULT);
	CHECK(ro->out_ioas_id == 0, "nothing written");
	CHECK(ioas_alloc(fd) == 1, "the aborted IOAS's id 1 is free again");
	OK("read-only struct for the write-back: EFAULT, object aborted");

	/* size readable, the rest of the struct on an unmapped page. */
	char *two = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(two + PAGE, PAGE);
	uint32_t *sz = (uint32_t *)(two + PAGE - 8);
	sz[0] = sizeof(struct iommu_ioas_map);
	EXPECT_ERR(ioctl(fd, IOMMU_IOAS_MAP, sz), EFAULT);
	/* PROT_NONE */
	char *none = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	EXPECT_ERR(ioctl(fd, IOMMU_IOAS_ALLOC, none), EFAULT);
	/* Kernel address. */
	EXPECT_ERR(ioctl(fd, IOMMU_IOAS_ALLOC, (void *)0xffff888000000000ul), EFAULT);
	OK("struct straddling a hole, PROT_NONE, kernel address: EFAULT");

	/* A pointer inside the struct: IOVA_RANGES writes the ranges to an unmapped array. */
	struct iommu_ioas_iova_ranges rr = { .size = sizeof(rr), .ioas_id = 1, .num_iovas = 1, .allowed_iovas = (uintptr_t)gone };
	EXPECT_ERR(ioctl(fd, IOMMU_IOAS_IOVA_RANGES, &rr), EFAULT);
	OK("pointer inside the struct: EFAULT");

	/* Pinning: a mock domain pins at map time. */
	uint32_t hwpt;
	CHECK(mock_domain(fd, 1, NULL, &hwpt, NULL) == 0, "mock domain");
	char *rob = mmap(NULL, 4 * PAGE, PROT_READ, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t iova = 0;
	EXPECT_ERR(ioas_map(fd, 1, rob, 4 * PAGE, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, &iova), EFAULT);
	CHECK(ioas_map(fd, 1, rob, 4 * PAGE, IOMMU_IOAS_MAP_READABLE, &iova) == 0, "read-only pin of read-only memory");
	EXPECT_ERR(ioas_map(fd, 1, gone, PAGE, IOMMU_IOAS_MAP_READABLE, &iova), EFAULT);
	char *half = shared_buf(4 * PAGE);
	munmap(half + 2 * PAGE, 2 * PAGE);
	EXPECT_ERR(ioas_map(fd, 1, half, 4 * PAGE, IOMMU_IOAS_MAP_READABLE, &iova), EFAULT);
	OK("pins: write pin of read-only memory, hole, half-unmapped buffer: EFAULT");

	/* The pinned pages are the caller's: MD_CHECK_MAP and MD_CHECK_REFS agree. */
	char *buf = shared_buf(8 * PAGE);
	iova = 0;
	CHECK(ioas_map(fd, 1, buf, 8 * PAGE, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, &iova) == 0, "map");
	CHECK(check_map(fd, hwpt, iova, buf, 8 * PAGE) == 0, "MD_CHECK_MAP");
	CHECK(check_refs(fd, buf, 8 * PAGE, 1) == 0, "MD_CHECK_REFS 1");
	EXPECT_ERR(check_map(fd, hwpt, iova, buf + PAGE, 4 * PAGE), EINVAL);
	/* A second mapping of the same shmem pages in this process names the same frames. */
	void *alias = mremap(buf, 8 * PAGE, 8 * PAGE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	(void)alias;
	int memfd = memfd_create("t", 0);
	CHECK(ftruncate(memfd, 4 * PAGE) == 0, "ftruncate");
	char *m1 = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	char *m2 = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	iova = 0;
	CHECK(ioas_map(fd, 1, m1, 4 * PAGE, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, &iova) == 0, "map memfd");
	CHECK(check_map(fd, hwpt, iova, m2, 4 * PAGE) == 0, "two mappings of one memfd page: one frame");
	CHECK(check_refs(fd, m2, 4 * PAGE, 1) == 0, "refs seen through the other mapping");
	/* Private memory is per address space: the same VA range of an anonymous private mapping differs. */
	char *priv = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *priv2 = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	iova = 0;
	CHECK(ioas_map(fd, 1, priv, 2 * PAGE, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, &iova) == 0, "map private");
	CHECK(check_map(fd, hwpt, iova, priv, 2 * PAGE) == 0, "private: same VA same frame");
	EXPECT_ERR(check_map(fd, hwpt, iova, priv2, 2 * PAGE), EINVAL);
	OK("page identity: MD_CHECK_MAP/MD_CHECK_REFS on shmem, memfd aliases, private memory");
	return 0;
}

static uint32_t fault_setup(int fd, int *fault_fd, uint32_t *stdev_out, uint32_t *idev_out, uint32_t *fault_id_out)
{
	uint32_t ioas = ioas_alloc(fd), stdev, hwpt, idev;
	CHECK(mock_domain(fd, ioas, &stdev, &hwpt, &idev) == 0, "mock domain");
	int want = lowest_free_fd();
	struct iommu_fault_alloc fa = { .size = sizeof(fa) };
	CHECK(ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, &fa) == 0, "FAULT_QUEUE_ALLOC");
	CHECK((int)fa.out_fault_fd == want, "fault fd is the lowest free fd %d, got %u", want, fa.out_fault_fd);
	CHECK(fcntl(fa.out_fault_fd, F_GETFD) == FD_CLOEXEC, "fault fd is O_CLOEXEC");
	struct iommu_hwpt_alloc pa = { .size = sizeof(pa), .flags = IOMMU_HWPT_ALLOC_NEST_PARENT, .dev_id = idev, .pt_id = ioas };
	CHECK(ioctl(fd, IOMMU_HWPT_ALLOC, &pa) == 0, "NEST_PARENT");
	uint32_t data = 1;
	struct iommu_hwpt_alloc na = { .size = sizeof(na), .flags = IOMMU_HWPT_FAULT_ID_VALID, .dev_id = idev, .pt_id = pa.out_hwpt_id,
				       .data_type = IOMMU_HWPT_DATA_SELFTEST, .data_len = 4, .data_uptr = (uintptr_t)&data, .fault_id = fa.out_fault_id };
	CHECK(ioctl(fd, IOMMU_HWPT_ALLOC, &na) == 0, "nested HWPT with the fault queue");
	struct iommu_test_cmd rep = { .size = sizeof(rep), .op = IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE, .id = stdev };
	*(uint32_t *)rep.pad = na.out_hwpt_id;
	CHECK(ioctl(fd, IOMMU_TEST_CMD, &rep) == 0, "replace onto the fault HWPT");
	*fault_fd = (int)fa.out_fault_fd;
	if (stdev_out) *stdev_out = stdev;
	if (idev_out) *idev_out = idev;
	if (fault_id_out) *fault_id_out = fa.out_fault_id;
	return ioas;
}

static int trigger(int fd, uint32_t idev, uint32_t grpid)
{
	struct iommu_test_cmd t = { .size = sizeof(t), .op = IOMMU_TEST_OP_TRIGGER_IOPF,
				    .trigger_iopf = { .dev_id = idev, .pasid = 1, .grpid = grpid, .perm = 3, .addr = 0xdeadbeaf } };
	return ioctl(fd, IOMMU_TEST_CMD, &t);
}

static int t_fault(void)
{
	int fd = open_iommu(), ffd;
	uint32_t idev, fault_id;
	fault_setup(fd, &ffd, NULL, &idev, &fault_id);
	struct pollfd p = { .fd = ffd, .events = POLLIN | POLLOUT };
	CHECK(poll(&p, 1, 0) == 1 && p.revents == POLLOUT, "empty queue: writable only, 0x%x", p.revents);
	struct iommu_hwpt_pgfault rec[2];
	CHECK(read(ffd, rec, sizeof(rec[0])) == 0, "empty read: 0");
	CHECK(trigger(fd, idev, 2) == 0, "TRIGGER_IOPF");
	CHECK(poll(&p, 1, 0) == 1 && p.revents == (POLLIN | POLLOUT), "readable after a fault, 0x%x", p.revents);
	p.events = POLLIN;
	struct timespec ts = { 0, 0 };
	CHECK(ppoll(&p, 1, &ts, NULL) == 1 && p.revents == POLLIN, "ppoll");
	fd_set rs;
	FD_ZERO(&rs);
	FD_SET(ffd, &rs);
	struct timeval tv = { 0, 0 };
	CHECK(select(ffd + 1, &rs, NULL, NULL, &tv) == 1 && FD_ISSET(ffd, &rs), "select");
	EXPECT_ERR((int)read(ffd, rec, 39), ESPIPE);
	CHECK(read(ffd, rec, sizeof(rec)) == sizeof(rec[0]), "one record");
	CHECK(rec[0].grpid == 2 && rec[0].dev_id == idev && rec[0].pasid == 1 && rec[0].addr == 0xdeadbeaf && rec[0].cookie == 1,
	      "record grpid %u dev %u pasid %u cookie %u", rec[0].grpid, rec[0].dev_id, rec[0].pasid, rec[0].cookie);
	OK("fault fd: FAULT_QUEUE_ALLOC gives the lowest free O_CLOEXEC fd; poll, ppoll, select, read");
	return 0;
}

static int t_fault_rw(void)
{
	int fd = open_iommu(), ffd;
	uint32_t idev, fault_id;
	fault_setup(fd, &ffd, NULL, &idev, &fault_id);
	struct iommu_hwpt_pgfault rec;
	CHECK(trigger(fd, idev, 2) == 0, "TRIGGER_IOPF");
	EXPECT_ERR((int)read(ffd, BAD, sizeof(rec)), EFAULT);
	struct pollfd p = { .fd = ffd, .events = POLLIN };
	CHECK(poll(&p, 1, 0) == 1, "the group is back after the faulting read");
	CHECK(read(ffd, &rec, sizeof(rec)) == sizeof(rec) && rec.cookie == 1, "read");
	struct iommu_hwpt_page_response resp = { .cookie = rec.cookie, .code = 0 };
	EXPECT_ERR((int)write(ffd, &resp, 7), ESPIPE);
	CHECK(write(ffd, &resp, sizeof(resp)) == sizeof(resp), "response");
	EXPECT_ERR((int)write(ffd, &resp, sizeof(resp)), EINVAL);
	EXPECT_ERR((int)write(ffd, BAD, sizeof(resp)), EFAULT);
	CHECK(poll(&p, 1, 0) == 0, "nothing readable");
	OK("fault fd: read/write errnos, EFAULT puts the group back, responses");

	/* A blocking poll wakes up when another process raises a fault (WAKE frame). */
	pid_t child = fork();
	if (child == 0) {
		usleep(150 * 1000);
		CHECK(trigger(fd, idev, 3) == 0, "child TRIGGER_IOPF");
		_exit(0);
	}
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	p.revents = 0;
	int r = poll(&p, 1, 5000);
	clock_gettime(CLOCK_MONOTONIC, &b);
	long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	CHECK(r == 1 && p.revents == POLLIN, "poll woke with POLLIN: r=%d revents=0x%x", r, p.revents);
	CHECK(ms >= 100 && ms < 4000, "woke when the fault came, after %ld ms", ms);
	int st;
	waitpid(child, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child");
	/* Timeout path. */
	CHECK(read(ffd, &rec, sizeof(rec)) == sizeof(rec) && rec.grpid == 3, "read the child's fault");
	p.revents = 0;
	CHECK(poll(&p, 1, 100) == 0, "poll times out on an empty queue");
	OK("blocking poll on the fault fd wakes on a fault from another process, times out otherwise");

	/* The fault fd holds the FAULT object: DESTROY is EBUSY until it is closed. */
	EXPECT_ERR(destroy(fd, fault_id), EBUSY);
	CHECK(close(ffd) == 0, "close fault fd");
	OK("fault fd close");

	/* Ordering: a close() is processed before any later request (teardown does close, then DESTROY). */
	for (int i = 0; i < 300; i++) {
		struct iommu_fault_alloc fa = { .size = sizeof(fa) };
		CHECK(ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, &fa) == 0, "FAULT_QUEUE_ALLOC");
		EXPECT_ERR(destroy(fd, fa.out_fault_id), EBUSY);
		CHECK(close((int)fa.out_fault_fd) == 0, "close");
		CHECK(destroy(fd, fa.out_fault_id) == 0, "DESTROY right after close(), round %d", i);
	}
	OK("close() then DESTROY: the release always comes first (300 rounds)");
	return 0;
}

static int t_access(void)
{
	int fd = open_iommu();
	uint32_t ioas = ioas_alloc(fd);
	char *buf = shared_buf(4 * PAGE);
	memset(buf, 0xab, 4 * PAGE);
	uint64_t iova = 0;
	CHECK(ioas_map(fd, ioas, buf, 4 * PAGE, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, &iova) == 0, "map");
	int want = lowest_free_fd();
	struct iommu_test_cmd ca = { .size = sizeof(ca), .op = IOMMU_TEST_OP_CREATE_ACCESS, .id = ioas,
				     .create_access = { .flags = MOCK_FLAGS_ACCESS_CREATE_NEEDS_PIN_PAGES } };
	CHECK(ioctl(fd, IOMMU_TEST_CMD, &ca) == 0, "CREATE_ACCESS");
	int afd = (int)ca.create_access.out_access_fd;
	CHECK(afd == want, "access fd %d is the lowest free %d", afd, want);
	CHECK(fcntl(afd, F_GETFD) == FD_CLOEXEC, "access fd O_CLOEXEC");

	/* ACCESS_RW both ways, fast and slow path. */
	char tmp[64];
	for (int slow = 0; slow < 2; slow++) {
		memset(tmp, 0, sizeof(tmp));
		struct iommu_test_cmd rw = { .size = sizeof(rw), .op = IOMMU_TEST_OP_ACCESS_RW, .id = (uint32_t)afd,
					     .access_rw = { .iova = iova + 100, .length = sizeof(tmp), .uptr = (uintptr_t)tmp, .flags = slow ? MOCK_ACCESS_RW_SLOW_PATH : 0 } };
		CHECK(ioctl(fd, IOMMU_TEST_CMD, &rw) == 0, "ACCESS_RW read");
		CHECK((unsigned char)tmp[0] == 0xab && (unsigned char)tmp[63] == 0xab, "read the buffer's bytes");
		memset(tmp, slow ? 0x22 : 0x11, sizeof(tmp));
		rw.access_rw.flags |= MOCK_ACCESS_RW_WRITE;
		rw.access_rw.iova = iova + PAGE - 32; /* across a page boundary */
		CHECK(ioctl(fd, IOMMU_TEST_CMD, &rw) == 0, "ACCESS_RW write");
		CHECK(buf[PAGE - 32] == (slow ? 0x22 : 0x11) && buf[PAGE + 31] == (slow ? 0x22 : 0x11), "the write landed in our buffer");
	}
	/*
	 * ACCESS_RW's uptr buffer travels with the call (the shim's window): a read into read-only or
	 * partly read-only memory and a write from partly unreadable memory are EFAULT, the latter with
	 * nothing written; a uptr inside the command struct itself gets the bytes.
	 */
	char *ro = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(ro != MAP_FAILED, "mmap");
	memset(ro, 0x77, 2 * PAGE);
	CHECK(mprotect(ro + PAGE, PAGE, PROT_READ) == 0, "mprotect read-only");
	struct iommu_test_cmd w = { .size = sizeof(w), .op = IOMMU_TEST_OP_ACCESS_RW, .id = (uint32_t)afd,
				    .access_rw = { .iova = iova, .length = 64, .uptr = (uintptr_t)(ro + PAGE) } };
	EXPECT_ERR(ioctl(fd, IOMMU_TEST_CMD, &w), EFAULT);
	CHECK((unsigned char)ro[PAGE] == 0x77 && (unsigned char)ro[PAGE + 63] == 0x77, "nothing landed in the read-only page");
	w.access_rw.uptr = (uintptr_t)(ro + PAGE - 32);
	EXPECT_ERR(ioctl(fd, IOMMU_TEST_CMD, &w), EFAULT);
	CHECK(mprotect(ro + PAGE, PAGE, PROT_NONE) == 0, "mprotect none");
	unsigned char before[64];
	memcpy(before, buf, sizeof(before));
	w.access_rw.flags = MOCK_ACCESS_RW_WRITE;
	EXPECT_ERR(ioctl(fd, IOMMU_TEST_CMD, &w), EFAULT);
	CHECK(memcmp(before, buf, sizeof(before)) == 0, "a write from unreadable memory changes nothing");
	w.access_rw.uptr = (uintptr_t)ro;
	CHECK(ioctl(fd, IOMMU_TEST_CMD, &w) == 0 && (unsigned char)buf[0] == 0x77 && (unsigned char)buf[63] == 0x77, "a write from readable memory");
	memset(buf, 0xab, 64);
	struct iommu_test_cmd self = { .size = sizeof(self), .op = IOMMU_TEST_OP_ACCESS_RW, .id = (uint32_t)afd,
				       .access_rw = { .iova = iova, .length = 8 } };
	self.access_rw.uptr = (uintptr_t)&self.access_rw.iova;
	CHECK(ioctl(fd, IOMMU_TEST_CMD, &self) == 0, "ACCESS_RW into its own struct");
	CHECK(self.access_rw.iova == 0xababababababababull, "the struct got the bytes: 0x%llx", (unsigned long long)self.access_rw.iova);
	munmap(ro, 2 * PAGE);
	OK("ACCESS_RW's buffer: EFAULT both ways, nothing written from unreadable memory, a uptr inside the struct");

	/* ACCESS_PAGES compares the pinned pages with the ones our uptr maps. */
	struct iommu_test_cmd ap = { .size = sizeof(ap), .op = IOMMU_TEST_OP_ACCESS_PAGES, .id = (uint32_t)afd,
				     .access_pages = { .iova = iova, .length = 2 * PAGE, .uptr = (uintptr_t)buf } };
	CHECK(ioctl(fd, IOMMU_TEST_CMD, &ap) == 0, "ACCESS_PAGES");
	struct iommu_test_cmd ap2 = ap;
	ap2.access_pages.uptr = (uintptr_t)(buf + PAGE);
	EXPECT_ERR(ioctl(fd, IOMMU_TEST_CMD, &ap2), EBADE);
	/* The access fd is the object id: a closed fd or a non-access fd is EBADFD. */
	struct iommu_test_cmd bad = { .size = sizeof(bad), .op = IOMMU_TEST_OP_ACCESS_RW, .id = (uint32_t)fd,
				      .access_rw = { .iova = iova, .length = 8, .uptr = (uintptr_t)tmp } };
	EXPECT_ERR(ioctl(fd, IOMMU_TEST_CMD, &bad), EBADFD);
	bad.id = 0;
	EXPECT_ERR(ioctl(fd, IOMMU_TEST_CMD, &bad), EBADFD);
	/* Pinned by the access: unmap calls back and unpins; then close the access. */
	struct iommu_ioas_unmap um = { .size = sizeof(um), .ioas_id = ioas, .iova = iova, .length = 4 * PAGE };
	CHECK(ioctl(fd, IOMMU_IOAS_UNMAP, &um) == 0, "unmap with an access pin");
	CHECK(close(afd) == 0, "close access fd");
	bad.id = (uint32_t)afd;
	EXPECT_ERR(ioctl(fd, IOMMU_TEST_CMD, &bad), EBADFD);
	OK("access fd: CREATE_ACCESS, ACCESS_RW, ACCESS_PAGES, EBADFD, close");
	return 0;
}

/* fork_gone / fork_present: pages mapped by a child, pinned later. */
static int t_fork(void)
{
	int fd = open_iommu();
	uint32_t ioas = ioas_alloc(fd);
	char *buf = shared_buf(8 * PAGE);
	memset(buf, 0x5a, 8 * PAGE);
	int ev[2];
	CHECK(pipe(ev) == 0, "pipe");

	/* fork_gone: the child maps and exits; pinning from its mm later is EFAULT. */
	pid_t c = fork();
	if (c == 0) {
		uint64_t iova = 0x1000000;
		CHECK(ioas_map(fd, ioas, buf, 8 * PAGE, IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, &iova) == 0, "child map");
		CHECK(ioas_alloc(fd) == 2, "the child uses the inherited fd: IOAS 2");
		_exit(0);
	}
	int st;
	waitpid(c, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child ok");
	CHECK(ioas_alloc(fd) == 3, "the parent continues: IOAS 3");
	EXPECT_ERR(mock_domain(fd, ioas, NULL, NULL, NULL), EFAULT);
	OK("fork_gone: the mapping mm is gone, pinning is EFAULT");

	/* fork_present: the child maps and stays; the parent's domain pins the child's pages. */
	uint32_t ioas2 = ioas_alloc(fd);
	c = fork();
	if (c == 0) {
		uint64_t iova = 0x1000000;
		CHECK(ioas_map(fd, ioas2, buf, 8 * PAGE, IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, &iova) == 0, "child map");
		char x = 1;
		CHECK(write(ev[1], &x, 1) == 1, "signal");
		pause();
		_exit(0);
	}
	char x;
	CHECK(read(ev[0], &x, 1) == 1, "wait for the child");
	uint32_t hwpt;
	CHECK(mock_domain(fd, ioas2, NULL, &hwpt, NULL) == 0, "the child's pages are pinned");
	CHECK(check_map(fd, hwpt, 0x1000000, buf, 8 * PAGE) == 0, "and they are our shared pages");
	CHECK(check_refs(fd, buf, 8 * PAGE, 1) == 0, "one pin each");
	kill(c, SIGKILL);
	waitpid(c, &st, 0);
	CHECK(check_map(fd, hwpt, 0x1000000, buf, 8 * PAGE) == 0, "still ours after the child died");
	/* Content through an access after the child is gone (pages pinned by the domain). */
	struct iommu_test_cmd ca = { .size = sizeof(ca), .op = IOMMU_TEST_OP_CREATE_ACCESS, .id = ioas2 };
	CHECK(ioctl(fd, IOMMU_TEST_CMD, &ca) == 0, "CREATE_ACCESS");
	char tmp[16] = { 0 };
	struct iommu_test_cmd rw = { .size = sizeof(rw), .op = IOMMU_TEST_OP_ACCESS_RW, .id = ca.create_access.out_access_fd,
				     .access_rw = { .iova = 0x1000000 + 10, .length = sizeof(tmp), .uptr = (uintptr_t)tmp } };
	CHECK(ioctl(fd, IOMMU_TEST_CMD, &rw) == 0, "ACCESS_RW after the mapping process died");
	CHECK(tmp[0] == 0x5a && tmp[15] == 0x5a, "content of the shared pages");
	OK("fork_present: pages pinned from the child's mm are the parent's shared pages");
	return 0;
}

static int t_dup(void)
{
	int fd = open_iommu();
	uint32_t ioas = ioas_alloc(fd);
	int fd2 = dup(fd);
	int fd3 = fcntl(fd, F_DUPFD_CLOEXEC, 20);
	CHECK(fd2 >= 0 && fd3 == 20, "dup");
	CHECK(close(fd) == 0, "close the original");
	CHECK(ioas_alloc(fd2) == ioas + 1, "same context through the dup");
	CHECK(close(fd2) == 0, "close");
	CHECK(ioas_alloc(fd3) == ioas + 2, "still alive through the third copy");
	printf("release-after-this\n");
	fflush(stdout);
	CHECK(close(fd3) == 0, "close the last copy");
	OK("dup");
	return 0;
}

static int t_exec(int argc, char **argv)
{
	if (argc > 2) {
		/* The exec'd image: fd argv[2] must be closed (cloexec), fd argv[3] still the context. */
		int gone = atoi(argv[2]), kept = atoi(argv[3]);
		errno = 0;
		CHECK(fcntl(gone, F_GETFD) == -1 && errno == EBADF, "the O_CLOEXEC fd was closed by exec");
		CHECK(ioas_alloc(kept) == 2, "the inherited context survives exec: IOAS 2");
		OK("exec");
		return 0;
	}
	int ce = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	int kept = open_iommu();
	CHECK(ioas_alloc(kept) == 1, "IOAS 1");
	CHECK(ioas_alloc(ce) == 1, "IOAS 1 in the other context");
	char a[16], b[16];
	snprintf(a, sizeof(a), "%d", ce);
	snprintf(b, sizeof(b), "%d", kept);
	execl("/proc/self/exe", argv[0], "exec", a, b, (char *)NULL);
	CHECK(0, "execl");
	return 1;
}

static int t_noclose(void)
{
	int fd = open_iommu();
	uint32_t ioas = ioas_alloc(fd);
	uint32_t hwpt;
	CHECK(mock_domain(fd, ioas, NULL, &hwpt, NULL) == 0, "mock domain");
	char *buf = shared_buf(4 * PAGE);
	uint64_t iova = 0;
	CHECK(ioas_map(fd, ioas, buf, 4 * PAGE, IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE, &iova) == 0, "map (pins)");
	int ffd;
	struct iommu_fault_alloc fa = { .size = sizeof(fa) };
	CHECK(ioctl(fd, IOMMU_FAULT_QUEUE_ALLOC, &fa) == 0, "fault queue");
	ffd = (int)fa.out_fault_fd;
	(void)ffd;
	OK("exiting without close");
	_exit(0);
}

/* Flood ioctls forever (the test kills us). */
static int t_spin(void)
{
	int fd = open_iommu();
	uint32_t ioas = ioas_alloc(fd);
	char *buf = shared_buf(4 * PAGE);
	OK("spinning");
	for (;;) {
		uint64_t iova = 0;
		CHECK(ioas_map(fd, ioas, buf, 4 * PAGE, IOMMU_IOAS_MAP_READABLE, &iova) == 0, "map");
		struct iommu_ioas_unmap um = { .size = sizeof(um), .ioas_id = ioas, .iova = iova, .length = 4 * PAGE };
		CHECK(ioctl(fd, IOMMU_IOAS_UNMAP, &um) == 0, "unmap");
	}
}

/* The load test's client: N ioctls of a fixed mix; every result must be what it is alone. */
static int t_load(int argc, char **argv)
{
	int n = argc > 2 ? atoi(argv[2]) : 10000;
	int fd = open_iommu();
	uint32_t ioas = ioas_alloc(fd);
	char *buf = shared_buf(4 * PAGE);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	int calls = 0;
	for (int i = 0; calls < n; i++) {
		switch (i % 4) {
		case 0: {
			uint64_t iova = 0;
			CHECK(ioas_map(fd, ioas, buf, 4 * PAGE, IOMMU_IOAS_MAP_READABLE, &iova) == 0, "map");
			struct iommu_ioas_unmap um = { .size = sizeof(um), .ioas_id = ioas, .iova = iova, .length = 4 * PAGE };
			CHECK(ioctl(fd, IOMMU_IOAS_UNMAP, &um) == 0 && um.length == 4 * PAGE, "unmap");
			calls += 2;
			break;
		}
		case 1: {
			uint32_t id = ioas_alloc(fd);
			CHECK(id == ioas + 1, "ids are per context: %u", id);
			CHECK(destroy(fd, id) == 0, "destroy");
			calls += 2;
			break;
		}
		case 2:
			EXPECT_ERR(destroy(fd, 1000), ENOENT);
			calls++;
			break;
		case 3:
			EXPECT_ERR(ioctl(fd, IOMMU_IOAS_ALLOC, NULL), EFAULT);
			calls++;
			break;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	long long ns = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
	printf("load ok calls=%d ns=%lld\n", calls, ns);
	return 0;
}

/* Processes sharing one inherited fd, all calling at once; then a child outliving the parent's close. */
static void shared_rounds(int fd, int rounds)
{
	for (int i = 0; i < rounds; i++) {
		struct iommu_ioas_alloc a = { .size = sizeof(a) };
		CHECK(ioctl(fd, IOMMU_IOAS_ALLOC, &a) == 0 && a.out_ioas_id > 1, "alloc");
		CHECK(destroy(fd, a.out_ioas_id) == 0, "destroy %u", a.out_ioas_id);
		EXPECT_ERR(destroy(fd, 100000), ENOENT);
		struct iommu_iova_range r[2];
		struct iommu_ioas_iova_ranges rr = { .size = sizeof(rr), .ioas_id = 1, .num_iovas = 2, .allowed_iovas = (uintptr_t)r };
		CHECK(ioctl(fd, IOMMU_IOAS_IOVA_RANGES, &rr) == 0 && rr.num_iovas == 1 && r[0].last == UINT64_MAX, "ranges");
	}
}

static int t_shared(void)
{
	int fd = open_iommu();
	CHECK(ioas_alloc(fd) == 1, "IOAS 1");
	pid_t kids[4];
	for (int k = 0; k < 4; k++) {
		kids[k] = fork();
		if (kids[k] == 0) {
			shared_rounds(fd, 2000);
			_exit(0);
		}
	}
	shared_rounds(fd, 2000);
	for (int k = 0; k < 4; k++) {
		int st;
		waitpid(kids[k], &st, 0);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d", k);
	}
	OK("5 processes calling at once on one inherited fd");

	int go[2];
	CHECK(pipe(go) == 0, "pipe");
	pid_t c = fork();
	if (c == 0) {
		char x;
		CHECK(read(go[0], &x, 1) == 1, "wait");
		shared_rounds(fd, 10);
		CHECK(close(fd) == 0, "child close");
		_exit(0);
	}
	CHECK(close(fd) == 0, "parent close");
	printf("parent-closed\n");
	fflush(stdout);
	usleep(100 * 1000);
	CHECK(write(go[1], "x", 1) == 1, "go");
	int st;
	waitpid(c, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child after the parent's close");
	OK("the context lives on in the child after the parent's close");
	return 0;
}

/* Threads sharing one fd: the shim serialises their calls. */
static int g_fd;
static void *thread_fn(void *arg)
{
	(void)arg;
	for (int i = 0; i < 2000; i++) {
		struct iommu_ioas_alloc a = { .size = sizeof(a) };
		CHECK(ioctl(g_fd, IOMMU_IOAS_ALLOC, &a) == 0, "alloc");
		CHECK(destroy(g_fd, a.out_ioas_id) == 0, "destroy %u", a.out_ioas_id);
		EXPECT_ERR(destroy(g_fd, 5000), ENOENT);
	}
	return NULL;
}

/*
 * Calls from a coroutine (its stack on the heap, not the thread's) and from a signal handler on
 * an alternate stack: the shim's shortcut for structs on the live stack must not apply there.
 */
static ucontext_t co_main, co_ctx;
static int co_fd, co_ok;
static void co_body(void)
{
	struct iommu_ioas_alloc a = { .size = sizeof(a) };
	int r = ioctl(co_fd, IOMMU_IOAS_ALLOC, &a);
	struct iommu_destroy d = { .size = sizeof(d), .id = a.out_ioas_id };
	co_ok = r == 0 && a.out_ioas_id != 0 && ioctl(co_fd, IOMMU_DESTROY, &d) == 0 && ioctl(co_fd, IOMMU_DESTROY, &d) == -1 && errno == ENOENT;
	co_ok = co_ok && ioctl(co_fd, IOMMU_IOAS_ALLOC, (void *)8) == -1 && errno == EFAULT;
	/* An unmapped page between this (low, heap) stack and the thread's stack: EFAULT, not a crash. */
	void *gone = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(gone, 4096);
	co_ok = co_ok && (uintptr_t)gone > (uintptr_t)&a && ioctl(co_fd, IOMMU_IOAS_ALLOC, gone) == -1 && errno == EFAULT;
}
static volatile int sig_ok;
static void on_usr1(int sig)
{
	(void)sig;
	struct iommu_ioas_alloc a = { .size = sizeof(a) };
	sig_ok = ioctl(co_fd, IOMMU_IOAS_ALLOC, &a) == 0 && a.out_ioas_id != 0;
}
static int t_stacks(void)
{
	co_fd = open_iommu();
	size_t sz = 64 * 1024; /* below malloc's mmap threshold: on the brk heap, under every mapping */
	char *stack = malloc(sz);
	CHECK(stack && getcontext(&co_ctx) == 0, "getcontext");
	co_ctx.uc_stack.ss_sp = stack;
	co_ctx.uc_stack.ss_size = sz;
	co_ctx.uc_link = &co_main;
	makecontext(&co_ctx, co_body, 0);
	CHECK(swapcontext(&co_main, &co_ctx) == 0, "swapcontext");
	CHECK(co_ok, "ioctls with their structs on a coroutine's heap stack");
	free(stack);
	stack_t ss = { .ss_sp = malloc(SIGSTKSZ * 4), .ss_size = SIGSTKSZ * 4 };
	CHECK(ss.ss_sp && sigaltstack(&ss, NULL) == 0, "sigaltstack");
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_ONSTACK };
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
	raise(SIGUSR1);
	CHECK(sig_ok, "an ioctl from a handler on an alternate signal stack");
	OK("structs on a coroutine stack and an alternate signal stack");
	return 0;
}

static int t_threads(void)
{
	g_fd = open_iommu();
	pthread_t th[8];
	for (int i = 0; i < 8; i++)
		pthread_create(&th[i], NULL, thread_fn, NULL);
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	OK("8 threads x 2000 rounds on one fd");
	return 0;
}

/* Garbage on our own emulated file's socket: the daemon drops that file only. */
static int t_garbage(void)
{
	int other = open_iommu();
	CHECK(ioas_alloc(other) == 1, "other context");
	/* Rounds: a daemon polling our channel at that moment, or not, must give the same results. */
	for (int round = 0; round < 20; round++) {
		int victim = open_iommu();
		char junk[64];
		memset(junk, 0xee, sizeof(junk));
		CHECK(send(victim, junk, sizeof(junk), MSG_NOSIGNAL) == sizeof(junk), "send garbage");
		struct iommu_ioas_alloc va = { .size = sizeof(va) };
		EXPECT_ERR(ioctl(victim, IOMMU_IOAS_ALLOC, &va), EIO);
		EXPECT_ERR(ioctl(victim, IOMMU_IOAS_ALLOC, &va), EIO);
		uint32_t id = ioas_alloc(other);
		CHECK(id == 2 + (uint32_t)round, "the other context is unaffected: id %u in round %d", id, round);
		close(victim);
	}
	OK("garbage drops only the sender's file");
	return 0;
}

/* Hand-made HELLO frames: the daemon checks the claimed uid, pid and socket. */
struct hello {
	uint32_t magic, version, kind, pid, uid;
	int32_t fd;
	uint64_t ino, secret_addr;
	uint8_t secret[16];
	uint64_t token;
	int32_t attach_fd;
	uint32_t pad;
};
static uint8_t my_secret[16] = "0123456789abcdef";

static int raw_hello(uint32_t pid, uint32_t uid, int fd_override, int32_t *status)
{
	const char *path = getenv("IOMMUFD_TS_SOCKET");
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
	CHECK(connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0, "connect");
	struct stat st;
	fstat(s, &st);
	struct { uint32_t len, type; struct hello h; } f = { sizeof(struct hello), 1,
		{ 0x464d4f49, 5, 0, pid, uid, fd_override >= 0 ? fd_override : s, st.st_ino, (uintptr_t)my_secret, { 0 }, 0, -1, 0 } };
	memcpy(f.h.secret, my_secret, 16);
	CHECK(send(s, &f, sizeof(f), MSG_NOSIGNAL) == sizeof(f), "send hello");
	struct { uint32_t len, type; int32_t status, pad; } ack;
	ssize_t r = recv(s, &ack, sizeof(ack), MSG_WAITALL);
	*status = r == sizeof(ack) ? ack.status : -9999;
	return s;
}

static int t_spoof(void)
{
	int32_t st;
	close(raw_hello(getpid(), geteuid(), -1, &st));
	CHECK(st == 0, "an honest hand-made HELLO is accepted: %d", st);
	close(raw_hello(getpid(), geteuid() + 1000, -1, &st));
	CHECK(st == -EACCES, "claiming another uid: EACCES, got %d", st);
	close(raw_hello(1, geteuid(), -1, &st));
	CHECK(st == -EPERM || st == -EACCES, "claiming another pid: refused, got %d", st);
	close(raw_hello(getpid(), geteuid(), 0, &st));
	CHECK(st == -EPERM, "naming an fd that is not this socket: EPERM, got %d", st);
	OK("spoofed HELLOs are refused");
	return 0;
}

/* Run as another uid than the daemon's: the socket directory keeps us out. */
static int t_otheruid(void)
{
	if (setgid(65534) || setuid(65534)) {
		printf("skip cannot setuid\n");
		return 0;
	}
	errno = 0;
	int fd = open("/dev/iommu", O_RDWR);
	CHECK(fd == -1 && errno == EACCES, "another uid cannot connect: %d", fd);
	OK("other uid refused");
	return 0;
}


/* ---- the fast channel (src/host/channel.ts) ---------------------------------------------------- */

/* Calls with pauses longer than the daemon polls: each one rings the doorbell, results unchanged. */
static int t_idle(void)
{
	int fd = open_iommu();
	for (int i = 0; i < 20; i++) {
		uint32_t id = ioas_alloc(fd);
		CHECK(id == 1, "id %u", id);
		CHECK(destroy(fd, id) == 0, "destroy");
		EXPECT_ERR(destroy(fd, id), ENOENT);
		usleep(20000);
	}
	OK("idle calls through the doorbell");
	return 0;
}

/* One call in a fresh process: the first call, which creates the fast channel. */
static int t_one(void)
{
	int fd = open_iommu();
	CHECK(ioas_alloc(fd) == 1, "ioas_alloc");
	OK("one call");
	return 0;
}

/* This process's channel mapping, found in /proc/self/maps. */
static volatile uint8_t *find_channel(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	CHECK(f != NULL, "maps");
	char line[512];
	uintptr_t lo = 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "/memfd:iommufd-ts-channel")) {
			sscanf(line, "%lx-", &lo);
			break;
		}
	fclose(f);
	return (volatile uint8_t *)lo;
}

struct raw_chan_req {
	uint64_t ino;
	uint32_t type, len;
	int32_t fd;
	uint32_t pad;
};

/* Post a raw request in our own channel and wait for its answer (ringing the doorbell on `via`). */
static int64_t raw_channel_call(volatile uint8_t *ch, int wait_ms, const struct raw_chan_req *rq, const void *payload)
{
	volatile uint32_t *w = (volatile uint32_t *)ch;
	memcpy((void *)(ch + 64), rq, sizeof(*rq));
	if (rq->len && payload)
		memcpy((void *)(ch + 64 + sizeof(*rq)), payload, rq->len);
	uint32_t seq = w[2] + 1000;
	__atomic_store_n(&w[2], seq, __ATOMIC_SEQ_CST);
	/* Doorbell: auth (pid, gen, secret address, secret) is not ours to forge; the shim's own
	 * DOORBELL would carry it. Instead wait: the daemon polls a channel it has recently seen. */
	for (int i = 0; i < wait_ms && __atomic_load_n(&w[3], __ATOMIC_SEQ_CST) != seq; i++)
		usleep(1000);
	if (__atomic_load_n(&w[3], __ATOMIC_SEQ_CST) != seq)
		return -99999;
	int64_t ret;
	memcpy(&ret, (const void *)(ch + 8192 + 8), sizeof(ret));
	return ret;
}

/*
 * A request in our channel naming another process's file (its socket inode, an fd we do not
 * hold): EBADF, and the other process's file is untouched. Then garbage in our channel: the daemon
 * drops the channel, our next calls go through the socket, the other process is unaffected.
 */
static int t_chanspoof(void)
{
	int pfd[2], back[2];
	CHECK(pipe(pfd) == 0 && pipe(back) == 0, "pipes");
	pid_t kid = fork();
	CHECK(kid >= 0, "fork");
	if (!kid) {
		close(pfd[0]);
		close(back[1]);
		int fd = open_iommu();
		CHECK(ioas_alloc(fd) == 1, "child's IOAS");
		struct stat st;
		fstat(fd, &st);
		uint64_t ino = st.st_ino;
		CHECK(write(pfd[1], &ino, sizeof(ino)) == sizeof(ino), "send ino");
		char c;
		CHECK(read(back[0], &c, 1) == 1, "wait");
		/* Our file still has exactly IOAS 1: nothing was allocated in it by the other process. */
		CHECK(ioas_alloc(fd) == 2, "the next id in the child's context is 2");
		exit(0);
	}
	close(pfd[1]);
	close(back[0]);
	uint64_t other;
	CHECK(read(pfd[0], &other, sizeof(other)) == sizeof(other), "child's inode");
	int fd = open_iommu();
	CHECK(ioas_alloc(fd) == 1, "our IOAS");
	volatile uint8_t *ch = find_channel();
	CHECK(ch != NULL, "we have a channel");
	struct raw_chan_req rq = { .ino = other, .type = 2, .len = 0, .fd = 77 };
	/* Keep the daemon polling us: make calls right before. */
	ioas_alloc(fd);
	int64_t r = raw_channel_call(ch, 3000, &rq, NULL);
	CHECK(r == -EBADF, "a request naming the child's file is EBADF, got %lld", (long long)r);
	OK("a channel request naming another process's file is refused");
	/* Garbage: an impossible payload length. */
	struct raw_chan_req bad = { .ino = 0, .type = 2, .len = 0xfffffff0u, .fd = fd };
	ioas_alloc(fd);
	r = raw_channel_call(ch, 300, &bad, NULL);
	CHECK(r == -99999, "no answer to garbage, got %lld", (long long)r);
	uint32_t id = ioas_alloc(fd);
	CHECK(id >= 4, "calls still work (through the socket): %u", id);
	char c = 'x';
	CHECK(write(back[1], &c, 1) == 1, "release child");
	int stc;
	CHECK(waitpid(kid, &stc, 0) == kid && WIFEXITED(stc) && WEXITSTATUS(stc) == 0, "child ok");
	OK("garbage in a channel drops only that channel");
	return 0;
}

/* IOMMU_OPTION_RLIMIT_MODE needs CAP_SYS_RESOURCE: argv[2] "granted" or "refused" says which to expect. */
struct iommu_option_s { uint32_t size, option_id; uint16_t op, reserved; uint32_t object_id; uint64_t val64; };
static int t_rlimit_mode(int argc, char **argv)
{
	int granted = argc > 2 && !strcmp(argv[2], "granted");
	int fd = open_iommu();
	struct iommu_option_s o = { .size = sizeof(o), .option_id = 0 /* RLIMIT_MODE */, .op = 0 /* SET */, .val64 = 1 };
	int r = ioctl(fd, IOMMU_OPTION, &o);
	if (granted) {
		CHECK(r == 0, "set RLIMIT_MODE with CAP_SYS_RESOURCE");
		struct iommu_option_s g = { .size = sizeof(g), .option_id = 0, .op = 1 /* GET */ };
		CHECK(ioctl(fd, IOMMU_OPTION, &g) == 0 && g.val64 == 1, "get RLIMIT_MODE = %llu", (unsigned long long)g.val64);
		OK("RLIMIT_MODE set with the capability");
	} else {
		CHECK(r == -1 && errno == EPERM, "set RLIMIT_MODE without CAP_SYS_RESOURCE: EPERM");
		OK("RLIMIT_MODE refused without the capability");
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "abort")) {
		int fd = open_iommu();
		(void)fd;
		abort();
	}
	if (argc > 1 && !strcmp(argv[1], "exit")) {
		int fd = open_iommu();
		ioas_alloc(fd);
		return argc > 2 ? atoi(argv[2]) : 0;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	const char *m = argc > 1 ? argv[1] : "basic";
	if (!strcmp(m, "basic")) return t_basic();
	if (!strcmp(m, "efault")) return t_efault();
	if (!strcmp(m, "fault")) return t_fault();
	if (!strcmp(m, "fault-rw")) return t_fault_rw();
	if (!strcmp(m, "access")) return t_access();
	if (!strcmp(m, "fork")) return t_fork();
	if (!strcmp(m, "dup")) return t_dup();
	if (!strcmp(m, "exec")) return t_exec(argc, argv);
	if (!strcmp(m, "noclose")) return t_noclose();
	if (!strcmp(m, "spin")) return t_spin();
	if (!strcmp(m, "load")) return t_load(argc, argv);
	if (!strcmp(m, "threads")) return t_threads();
	if (!strcmp(m, "stacks")) return t_stacks();
	if (!strcmp(m, "shared")) return t_shared();
	if (!strcmp(m, "garbage")) return t_garbage();
	if (!strcmp(m, "spoof")) return t_spoof();
	if (!strcmp(m, "otheruid")) return t_otheruid();
	if (!strcmp(m, "idle")) return t_idle();
	if (!strcmp(m, "one")) return t_one();
	if (!strcmp(m, "rlimit-mode")) return t_rlimit_mode(argc, argv);
	if (!strcmp(m, "chanspoof")) return t_chanspoof();
	fprintf(stderr, "unknown scenario %s\n", m);
	return 2;
}
