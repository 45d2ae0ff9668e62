/*
 * libiommufd-shim.so — LD_PRELOAD library that serves /dev/iommu (and /dev/vfio/vfio) from the
 * iommufd-ts daemon.
 *
 * Every emulated file is a real fd: a connected AF_UNIX stream socket to the daemon, one
 * connection per file. The kernel's socket refcounting then gives dup, fork, close-on-exec and
 * release-at-exit the semantics of the kernel's struct file: the daemon releases the file when the
 * last copy is closed (EOF). Emulated fds are recognised through the kernel (getpeername() equals
 * the daemon's socket path), never through a table of our own that fork or dup would desync.
 *
 * Wire format (little-endian), both directions: u32 payload length, u32 type, payload.
 *   client -> daemon: HELLO (first frame of every connection), IOCTL, READ, WRITE, POLL
 *   daemon -> client: ACK (answers HELLO), RESULT (answers the others), WAKE (asynchronous: the
 *                     file became readable; skipped by the reader)
 * Requests carry the caller's pid and a per-process random secret together with its address:
 * the daemon reads that address through /proc/<pid>/mem to verify who is asking.
 *
 * The first bytes of an ioctl's struct (its `size`/`argsz`, then up to INLINE_MAX bytes) travel
 * inline with the request, read here with process_vm_readv on ourselves (EFAULT-safe) and probed
 * for writability; the daemon answers with the bytes it wrote back, which we apply. So does one
 * small buffer a few ioctls point to (the window: IOMMU_TEST_OP_ACCESS_RW's uptr): its bytes
 * travel inline when the daemon reads it, its new bytes come back when the daemon writes it. Other
 * pointers are followed by the daemon itself through /proc/<pid>/mem.
 *
 * Everything else goes to libc (dlsym(RTLD_NEXT)). errno is preserved on success and set last on
 * failure. RPCs are serialised per process by one mutex (reset in a fork child).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SHIM_EXPORT __attribute__((visibility("default")))

enum {
	FR_HELLO = 1,
	FR_IOCTL = 2,
	FR_READ = 3,
	FR_WRITE = 4,
	FR_POLL = 5,
	FR_CHANNEL = 6,
	FR_DOORBELL = 7,
	FR_ACK = 0x81,
	FR_RESULT = 0x82,
	FR_WAKE = 0x83,
	FR_DONE = 0x84,
};

enum { KIND_IOMMU = 0, KIND_VFIO = 1, KIND_SPARE = 2, KIND_ATTACH = 3 };

#define HELLO_MAGIC 0x464d4f49u /* "IOMF" */
#define PROTO_VERSION 5u
/* Client sockets are bound to "\0iommufd-ts/<pid>/<random>": the pid tells which process connected it. */
#define CLIENT_NAME_PREFIX "iommufd-ts/"
#define INLINE_MAX 4096
#define WIN_MAX 2048 /* largest pointed-to buffer that travels inline (the window) */
#define PAGE_SZ 4096ul
#define IOMMU_FAULT_QUEUE_ALLOC_CMD 0x3b8eul
#define IOMMU_TEST_CMD_CMD 0x3ba0ul
#define IOMMU_TEST_OP_ACCESS_RW 8u
#define IOMMU_TEST_OP_CREATE_ACCESS 5u

struct frame_hdr {
	uint32_t len;
	uint32_t type;
};

struct auth {
	uint32_t pid;
	uint32_t pad;
	uint64_t secret_addr;
	uint8_t secret[16];
};

struct hello {
	uint32_t magic;
	uint32_t version;
	uint32_t kind;
	uint32_t pid;
	uint32_t uid;
	int32_t fd;
	uint64_t ino;
	uint64_t secret_addr;
	uint8_t secret[16];
	uint64_t token; /* SPARE: the token; ATTACH: the inode of the socket to join */
	int32_t attach_fd; /* ATTACH: the fd holding that socket */
	uint32_t pad;
};

struct ioctl_req {
	struct auth auth;
	uint32_t cmd;
	uint32_t id_ino; /* IOMMU_TEST_CMD naming an access fd in `id`: that fd's socket inode (a hint) */
	uint64_t arg;
	uint64_t spare_token;
	int32_t spare_fd;
	uint32_t inline_len;
	uint32_t writable_len;
	uint32_t pad;
	uint64_t win_addr; /* the window: a buffer the ioctl points to, or 0 */
	uint32_t win_size; /* its size */
	uint32_t win_len; /* how many of its first bytes follow the inline struct (what we could read) */
	uint32_t win_writable; /* the daemon may stage writes there; we apply them */
	uint32_t pad2;
};

struct rw_req {
	struct auth auth;
	uint64_t addr;
	uint64_t count;
};

struct poll_req {
	struct auth auth;
	uint32_t events;
	uint32_t pad;
};

struct ack {
	int32_t status;
	uint32_t pad;
};

struct result {
	int64_t ret;
	uint32_t dirty_off;
	uint32_t dirty_len;
	int32_t new_fd;
	uint32_t new_fd_cloexec;
	uint32_t win_dirty_off; /* bytes the daemon wrote into the window: they follow the struct's */
	uint32_t win_dirty_len;
};

/*
 * The fast channel: one shared page set per process (a memfd we map and the daemon opens through
 * /proc/<pid>/fd), so that an ioctl costs no socket round trip while the daemon is busy serving us:
 * we store the request and its sequence number, the daemon (polling the channels of recently
 * active processes between its event-loop rounds) stores the RESULT frame and the same number.
 * When the daemon says it is not polling (state 0), or the answer takes long, we ring the doorbell
 * (a DOORBELL frame on the file's socket) and block until its DONE; the answer is then in the
 * channel. Only IOCTL travels here; READ/WRITE/POLL stay on the socket (they drain WAKE frames).
 */
#define CHAN_MAGIC 0x4e414843u /* "CHAN" */
#define CHAN_SIZE 16384u
#define CHAN_REQ_OFF 64u
#define CHAN_RESP_OFF 8192u

struct chan_hdr {
	uint32_t magic;
	uint32_t version;
	uint32_t req_seq; /* client: the request in the request area is number req_seq */
	uint32_t resp_seq; /* daemon: the RESULT in the response area answers request resp_seq */
	uint32_t state; /* daemon: 1 while it polls this channel between event-loop rounds */
	uint32_t busy; /* daemon: how many channels it has polled recently (a hint for spinning) */
	uint32_t seen; /* daemon: the request it has picked up (it is running and working on it) */
};

struct chan_req {
	uint64_t ino; /* the socket inode of the fd the call is made on */
	uint32_t type; /* FR_IOCTL */
	uint32_t len; /* payload bytes that follow */
	int32_t fd; /* the fd number (checked through /proc when the connection is not ours) */
	uint32_t pad;
};

struct channel_open {
	struct auth auth;
	int32_t memfd;
	uint32_t size;
	int32_t sock_fd; /* the fd this frame travels on (checked through /proc when the connection is not ours) */
	uint32_t pad;
};

struct doorbell {
	struct auth auth;
	uint32_t seq;
	uint32_t flags; /* DB_NOPOLL: we ring for every call for a while, polling us is wasted */
};
#define DB_NOPOLL 1u

struct done {
	int32_t status;
	uint32_t seq;
};

static struct {
	int (*open)(const char *, int, ...);
	int (*open64)(const char *, int, ...);
	int (*openat)(int, const char *, int, ...);
	int (*openat64)(int, const char *, int, ...);
	int (*ioctl)(int, unsigned long, ...);
	ssize_t (*read)(int, void *, size_t);
	ssize_t (*write)(int, const void *, size_t);
	int (*poll)(struct pollfd *, nfds_t, int);
	int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
	int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
} real;

static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static size_t sock_path_len;
static int debug;
/* How long to poll for an answer before blocking (spin_until_readable). */
static int64_t spin_ns = 30000;
/*
 * The same for the ACK of a HELLO or CHANNEL frame, once per file and per process: the daemon
 * takes a few hundred microseconds over them (it reads /proc and maps the channel), longer than
 * it then keeps polling that fresh channel if this thread is slow to wake up (in a VM): the first
 * call would ring. IOMMUFD_TS_ACK_SPIN_US.
 */
static int64_t ack_spin_ns = 2000000;
/*
 * Waiting on the fast channel: until the daemon has picked the request up (it is running and
 * polling us) at most chan_pick_ns, then for the answer at most chan_spin_ns, yielding the CPU
 * as we go; past either, or when other clients are busy too, we ring the doorbell and block.
 */
static int64_t chan_pick_ns = 30000;
static int64_t chan_spin_ns = 300000;
/*
 * After ringing: how long to wait for the answer in the channel before blocking on the socket. A
 * thread blocked in recv takes hundreds of microseconds to wake up in a VM, longer than the daemon
 * keeps polling a channel after its last request: every later call would then find it not polling
 * and ring again. Not in the ring-right-away mode below, nor while the daemon serves other clients
 * (the CPUs are busy: spinning takes them). 3 ms covers the daemon's garbage collections (up to
 * about 2 ms), the commonest reason for a missed pick-up.
 */
static int64_t chan_ring_spin_ns = 3000000;
/*
 * When the daemon repeatedly fails to pick our requests up in time, the CPUs are busy with other
 * work and spinning only takes CPU from the daemon: then ring the doorbell right away for the
 * next CHAN_BLOCK_CALLS calls, and try spinning again after that. A few misses in a row are
 * normal (a garbage collection or compilation in the daemon) and cheap (a doorbell); blocking
 * for 512 calls is not (each one then waits for a thread to wake up), so it takes 16.
 */
#define CHAN_MISSES_TO_BLOCK 16
#define CHAN_BLOCK_CALLS 512
static unsigned g_chan_misses, g_chan_block_left;
static int chan_enabled = 1;
static int stack_shortcut = 1; /* on_live_stack(); IOMMUFD_TS_STACK=0 turns it off */
static volatile uint8_t *g_chan; /* this process's channel, or NULL */
static pid_t g_chan_pid; /* the process g_chan (or its failure) belongs to */
static uint32_t g_chan_seq;
static pthread_mutex_t rpc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/*
 * The per-process identity the daemon verifies by reading it back from our memory, followed by
 * the state generation (below), so that one read of 20 bytes through /proc/<pid>/mem tells the
 * daemon both that this process (this mm) is still there and whether its mappings may have
 * changed, even while it is not the one making requests (a harness parent that mapped a buffer).
 */
static struct {
	volatile uint8_t secret[16];
	uint32_t gen;
} g_ident __attribute__((aligned(32)));
#define g_secret g_ident.secret
#define g_state_gen g_ident.gen
static pid_t g_secret_pid;
/* getpid() cached: the hot path asks for it several times per call; reset in a fork child. */
static pid_t g_pid;

static pid_t my_pid(void)
{
	pid_t p = __atomic_load_n(&g_pid, __ATOMIC_RELAXED);
	if (!p) {
		p = getpid();
		__atomic_store_n(&g_pid, p, __ATOMIC_RELAXED);
	}
	return p;
}
static pid_t g_ptracer_pid;

static void resolve(void)
{
	real.open = dlsym(RTLD_NEXT, "open");
	real.open64 = dlsym(RTLD_NEXT, "open64");
	real.openat = dlsym(RTLD_NEXT, "openat");
	real.openat64 = dlsym(RTLD_NEXT, "openat64");
	real.ioctl = dlsym(RTLD_NEXT, "ioctl");
	real.read = dlsym(RTLD_NEXT, "read");
	real.write = dlsym(RTLD_NEXT, "write");
	real.poll = dlsym(RTLD_NEXT, "poll");
	real.ppoll = dlsym(RTLD_NEXT, "ppoll");
	real.select = dlsym(RTLD_NEXT, "select");
}

static void atfork_prepare(void) { pthread_mutex_lock(&rpc_lock); }
static void atfork_parent(void) { pthread_mutex_unlock(&rpc_lock); }
static void atfork_child(void)
{
	pthread_mutex_init(&rpc_lock, NULL);
	g_secret_pid = 0; /* a new process: new secret on first use */
	g_pid = 0;
	g_ptracer_pid = 0;
	g_chan = NULL; /* not mapped here (MADV_DONTFORK): the child opens its own */
	g_chan_pid = 0;
	g_chan_seq = 0;
	g_chan_misses = g_chan_block_left = 0;
}

/* A duration in microseconds from the environment, into *ns; unset or empty leaves it. */
static void env_us(const char *name, int64_t *ns)
{
	const char *v = getenv(name);
	if (v && *v)
		*ns = (int64_t)atoi(v) * 1000;
}

static void init(void)
{
	int saved = errno;
	resolve();
	const char *p = getenv("IOMMUFD_TS_SOCKET");
	if (p && *p && strlen(p) < sizeof(sock_path)) {
		strcpy(sock_path, p);
		sock_path_len = strlen(p);
	}
	const char *d = getenv("IOMMUFD_TS_SHIM_DEBUG");
	debug = d && *d && *d != '0';
	env_us("IOMMUFD_TS_SPIN_US", &spin_ns);
	env_us("IOMMUFD_TS_ACK_SPIN_US", &ack_spin_ns);
	env_us("IOMMUFD_TS_CHANNEL_SPIN_US", &chan_spin_ns);
	env_us("IOMMUFD_TS_CHANNEL_PICK_US", &chan_pick_ns);
	env_us("IOMMUFD_TS_CHANNEL_RING_SPIN_US", &chan_ring_spin_ns);
	const char *ch = getenv("IOMMUFD_TS_CHANNEL");
	chan_enabled = !(ch && *ch == '0');
	const char *st = getenv("IOMMUFD_TS_STACK");
	stack_shortcut = !(st && *st == '0');
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		chan_pick_ns = chan_spin_ns = chan_ring_spin_ns = 0; /* spinning would only keep the daemon off the one CPU */
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
	errno = saved;
}

__attribute__((constructor)) static void shim_ctor(void) { pthread_once(&init_once, init); }

static inline void ensure_init(void)
{
	if (!real.ioctl)
		pthread_once(&init_once, init);
}

static void dbg(const char *fmt, ...)
{
	if (!debug)
		return;
	int saved = errno;
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > 0) {
		if (n > (int)sizeof(buf))
			n = sizeof(buf);
		ssize_t w = real.write(2, buf, (size_t)n);
		(void)w;
	}
	errno = saved;
}

/* ---- identity ------------------------------------------------------------------------------ */

static void ensure_identity(void)
{
	pid_t pid = my_pid();
	if (g_secret_pid == pid)
		return;
	uint8_t tmp[16];
	size_t got = 0;
	while (got < sizeof(tmp)) {
		ssize_t r = getrandom(tmp + got, sizeof(tmp) - got, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			/* Weak fallback; the daemon still checks our memory. */
			uint64_t x = (uint64_t)pid * 0x9e3779b97f4a7c15ull ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&tmp;
			for (size_t i = got; i < sizeof(tmp); i++) {
				x ^= x << 13; x ^= x >> 7; x ^= x << 17;
				tmp[i] = (uint8_t)x;
			}
			break;
		}
		got += (size_t)r;
	}
	for (size_t i = 0; i < sizeof(tmp); i++)
		g_secret[i] = tmp[i];
	g_secret_pid = pid;
}

/*
 * Bumped by every call that can change our mappings, credentials or rlimits. It rides in each
 * request so the daemon can keep /proc/<pid>/maps (and friends) cached between requests and
 * re-read them only when this changed. Calls glibc makes internally (malloc's mmap) are not
 * seen; the daemon re-reads on a cache miss, which covers new mappings.
 */
static void bump_state(void)
{
	__atomic_add_fetch(&g_state_gen, 1, __ATOMIC_RELAXED);
}

static void fill_auth(struct auth *a)
{
	a->pid = (uint32_t)g_secret_pid;
	a->pad = __atomic_load_n(&g_state_gen, __ATOMIC_RELAXED);
	a->secret_addr = (uint64_t)(uintptr_t)g_secret;
	for (size_t i = 0; i < sizeof(a->secret); i++)
		a->secret[i] = g_secret[i];
}

/* Yama (ptrace_scope 1): let the daemon read our memory even when it is not our ancestor. */
static void allow_daemon_ptrace(int s)
{
	pid_t pid = my_pid();
	if (g_ptracer_pid == pid)
		return;
	struct ucred cr;
	socklen_t len = sizeof(cr);
	if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && cr.pid > 0)
		prctl(PR_SET_PTRACER, (unsigned long)cr.pid, 0, 0, 0);
	g_ptracer_pid = pid;
}

/* ---- self memory, EFAULT-safe -------------------------------------------------------------- */

/*
 * This thread's stack, [lo, hi) (pthread_getattr_np, once per thread). Memory between our own
 * frame and its top is the live frames of our callers: mapped, readable and writable. Most ioctl
 * structs (and ACCESS_RW's buffer in the selftest) are locals there, and copying them needs no
 * fault-safe system call.
 */
static __thread uintptr_t t_stack_lo, t_stack_hi;
static __thread int t_stack_state; /* 0 unknown, 1 known, -1 unavailable */

static __attribute__((noinline)) int on_live_stack(uint64_t addr, size_t n)
{
	if (!t_stack_state) {
		t_stack_state = -1;
		if (!stack_shortcut)
			return 0;
		pthread_attr_t a;
		void *base;
		size_t size;
		if (pthread_getattr_np(pthread_self(), &a) == 0) {
			if (pthread_attr_getstack(&a, &base, &size) == 0 && size) {
				t_stack_lo = (uintptr_t)base;
				t_stack_hi = (uintptr_t)base + size;
				t_stack_state = 1;
			}
			pthread_attr_destroy(&a);
		}
	}
	if (t_stack_state != 1)
		return 0;
	uintptr_t fp = (uintptr_t)__builtin_frame_address(0);
	/* Not running on the thread's own stack (a coroutine's, a signal stack): no shortcut. */
	if (fp < t_stack_lo || fp >= t_stack_hi)
		return 0;
	return addr >= fp && addr + n >= addr && addr + n <= t_stack_hi;
}

/* Copy up to n bytes from our own address `addr`; stops at the first inaccessible page. */
static size_t self_rw(int write, void *local, uint64_t addr, size_t n)
{
	if (n && on_live_stack(addr, n)) {
		if (write)
			memcpy((void *)(uintptr_t)addr, local, n);
		else
			memcpy(local, (const void *)(uintptr_t)addr, n);
		return n;
	}
	enum { MAXV = INLINE_MAX / PAGE_SZ + 2 };
	struct iovec l, r[MAXV];
	size_t nv = 0, off = 0;
	if (!n || addr == 0)
		return 0;
	while (off < n && nv < MAXV) {
		uint64_t a = addr + off;
		if (a < addr)
			break; /* wrapped */
		size_t chunk = PAGE_SZ - (size_t)(a & (PAGE_SZ - 1));
		if (chunk > n - off)
			chunk = n - off;
		r[nv].iov_base = (void *)(uintptr_t)a;
		r[nv].iov_len = chunk;
		nv++;
		off += chunk;
	}
	l.iov_base = local;
	l.iov_len = off;
	ssize_t got = write ? process_vm_writev(my_pid(), &l, 1, r, nv, 0) : process_vm_readv(my_pid(), &l, 1, r, nv, 0);
	return got < 0 ? 0 : (size_t)got;
}

/* ---- emulated fd recognition ---------------------------------------------------------------- */

static int have_daemon(void)
{
	ensure_init();
	return sock_path_len != 0;
}

static pid_t socket_owner(int fd);

/*
 * What we learnt about fds below FDC_SIZE when we found them emulated: the socket's inode and the
 * pid its name carries. A later call on the same fd costs one fstat: the same inode is the same
 * socket (socket inodes are not reused while the socket lives), anything else is looked at afresh.
 */
#define FDC_SIZE 4096
static uint64_t g_fdc_ino[FDC_SIZE];
static pid_t g_fdc_owner[FDC_SIZE];

static void fdc_forget(int fd)
{
	if (fd >= 0 && fd < FDC_SIZE)
		__atomic_store_n(&g_fdc_ino[fd], 0, __ATOMIC_RELAXED);
}

/* The socket inode of emulated fd `fd`, or 0 if it is not one of ours. errno is preserved. */
static uint64_t emulated_ino(int fd)
{
	if (!have_daemon() || fd < 0)
		return 0;
	int saved = errno;
	struct stat st;
	int r = fstat(fd, &st);
	errno = saved;
	if (r != 0 || !S_ISSOCK(st.st_mode) || st.st_ino == 0)
		return 0;
	uint64_t ino = (uint64_t)st.st_ino;
	if (fd < FDC_SIZE && __atomic_load_n(&g_fdc_ino[fd], __ATOMIC_RELAXED) == ino)
		return ino;
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	r = getpeername(fd, (struct sockaddr *)&sa, &len);
	errno = saved;
	if (r != 0 || sa.sun_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path))
		return 0;
	size_t pl = len - offsetof(struct sockaddr_un, sun_path);
	if (pl > sizeof(sa.sun_path))
		pl = sizeof(sa.sun_path);
	if (pl < sock_path_len || memcmp(sa.sun_path, sock_path, sock_path_len) != 0)
		return 0;
	if (!(pl == sock_path_len || sa.sun_path[sock_path_len] == 0))
		return 0;
	if (fd < FDC_SIZE) {
		__atomic_store_n(&g_fdc_owner[fd], socket_owner(fd), __ATOMIC_RELAXED);
		__atomic_store_n(&g_fdc_ino[fd], ino, __ATOMIC_RELEASE);
	}
	errno = saved;
	return ino;
}

static int is_emulated(int fd)
{
	return emulated_ino(fd) != 0;
}

/* ---- framing ---------------------------------------------------------------------------------- */

static int wait_fd(int fd, short ev)
{
	struct pollfd p = { .fd = fd, .events = ev };
	for (;;) {
		int r = real.poll(&p, 1, -1);
		if (r >= 0 || errno != EINTR)
			return r;
	}
}

static int send_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				wait_fd(fd, POLLOUT);
				continue;
			}
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int sendv_all(int fd, struct iovec *iov, int cnt)
{
	/* Small frames: gather into one buffer so the frame is one send (atomic on a unix stream). */
	size_t total = 0;
	for (int i = 0; i < cnt; i++)
		total += iov[i].iov_len;
	char stackbuf[INLINE_MAX + WIN_MAX + 256];
	char *buf = total <= sizeof(stackbuf) ? stackbuf : malloc(total);
	if (!buf)
		return -1;
	size_t off = 0;
	for (int i = 0; i < cnt; i++) {
		memcpy(buf + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	int r = send_all(fd, buf, total);
	if (buf != stackbuf)
		free(buf);
	return r;
}

/*
 * Before blocking for the daemon's answer, poll for it for a little while (IOMMUFD_TS_SPIN_US,
 * default 30 µs): answers usually take about that long, and a CPU that went idle in between
 * takes tens of microseconds to wake up again (in a VM). The spin yields the CPU each round.
 */
static void spin_until_readable(int fd, int64_t limit_ns)
{
	if (limit_ns <= 0)
		return;
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		char c;
		ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
		if (r != -1 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			return;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000000000LL + (t.tv_nsec - t0.tv_nsec) > limit_ns)
			return;
		sched_yield();
	}
}

/* Returns 0, or -1 with errno (EIO at EOF). */
static int recv_all(int fd, void *buf, size_t n)
{
	char *p = buf;
	while (n) {
		ssize_t r = recv(fd, p, n, 0);
		if (r == 0) {
			errno = EIO;
			return -1;
		}
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				wait_fd(fd, POLLIN);
				continue;
			}
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int discard(int fd, size_t n)
{
	char tmp[256];
	while (n) {
		size_t c = n < sizeof(tmp) ? n : sizeof(tmp);
		if (recv_all(fd, tmp, c))
			return -1;
		n -= c;
	}
	return 0;
}

/*
 * Read frames until one of type `want` arrives; WAKE frames are skipped. The fixed part goes to
 * `fixed`; any rest of the payload goes to `extra` (up to extra_cap bytes, the remainder is
 * dropped). Returns the size of the rest, or -1 with errno.
 */
static ssize_t recv_frame(int fd, uint32_t want, void *fixed, size_t fixed_len, void *extra, size_t extra_cap)
{
	spin_until_readable(fd, want == FR_ACK ? ack_spin_ns : spin_ns);
	for (;;) {
		struct frame_hdr h;
		if (recv_all(fd, &h, sizeof(h)))
			return -1;
		if (h.type == FR_WAKE) {
			if (discard(fd, h.len))
				return -1;
			continue;
		}
		if (h.type != want || h.len < fixed_len) {
			discard(fd, h.len);
			errno = EPROTO;
			return -1;
		}
		if (recv_all(fd, fixed, fixed_len))
			return -1;
		size_t rest = h.len - fixed_len, take = rest < extra_cap ? rest : extra_cap;
		if (take && recv_all(fd, extra, take))
			return -1;
		if (rest > take && discard(fd, rest - take))
			return -1;
		return (ssize_t)take;
	}
}

/* ---- connections -------------------------------------------------------------------------------- */

/* Name a new client socket after this process (abstract namespace), so a copy of it in another process is recognisable. */
static void bind_client_name(int s)
{
	for (int attempt = 0; attempt < 4; attempt++) {
		uint64_t rnd = 0;
		if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
			rnd = ((uint64_t)time(NULL) << 20) ^ (uint64_t)(uintptr_t)&rnd ^ (uint64_t)attempt;
		struct sockaddr_un me;
		memset(&me, 0, sizeof(me));
		me.sun_family = AF_UNIX;
		int n = snprintf(me.sun_path + 1, sizeof(me.sun_path) - 1, CLIENT_NAME_PREFIX "%d/%016llx", (int)getpid(), (unsigned long long)rnd);
		if (bind(s, (struct sockaddr *)&me, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n)) == 0 || errno != EADDRINUSE)
			return;
	}
}

/*
 * The pid that connected emulated socket `fd` (from its name), or 0 if it has no such name. A
 * socket inherited through fork (or received with SCM_RIGHTS) names another process.
 */
static pid_t socket_owner(int fd)
{
	struct sockaddr_un me;
	socklen_t len = sizeof(me);
	if (getsockname(fd, (struct sockaddr *)&me, &len) != 0 || len <= offsetof(struct sockaddr_un, sun_path) + 1 || me.sun_path[0] != 0)
		return 0;
	size_t pl = len - offsetof(struct sockaddr_un, sun_path) - 1;
	const char *name = me.sun_path + 1;
	size_t plen = sizeof(CLIENT_NAME_PREFIX) - 1;
	if (pl <= plen || memcmp(name, CLIENT_NAME_PREFIX, plen) != 0)
		return 0;
	pid_t pid = 0;
	for (size_t i = plen; i < pl && name[i] >= '0' && name[i] <= '9'; i++)
		pid = pid * 10 + (name[i] - '0');
	return pid;
}

/* Connect a new emulated file; returns the fd or -1 with errno. Called with rpc_lock held. */
static int connect_daemon_ex(uint32_t kind, int cloexec, uint64_t token, int attach_fd)
{
	int s = socket(AF_UNIX, SOCK_STREAM | (cloexec ? SOCK_CLOEXEC : 0), 0);
	if (s < 0)
		return -1;
	bind_client_name(s);
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, sock_path, sock_path_len);
	socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sock_path_len + 1);
	int r;
	do
		r = connect(s, (struct sockaddr *)&sa, alen);
	while (r < 0 && errno == EINTR);
	if (r < 0 && errno != EISCONN) {
		int e = errno;
		dbg("iommufd-shim: connect %s: %s\n", sock_path, strerror(e));
		close(s);
		errno = (e == ENOENT || e == ECONNREFUSED) ? ENOENT : e;
		return -1;
	}
	allow_daemon_ptrace(s);
	struct stat st;
	uint64_t ino = fstat(s, &st) == 0 ? (uint64_t)st.st_ino : 0;
	struct hello h = {
		.magic = HELLO_MAGIC,
		.version = PROTO_VERSION,
		.kind = kind,
		.pid = (uint32_t)g_secret_pid,
		.uid = (uint32_t)geteuid(),
		.fd = s,
		.ino = ino,
		.secret_addr = (uint64_t)(uintptr_t)g_secret,
		.token = token,
		.attach_fd = attach_fd,
	};
	for (size_t i = 0; i < sizeof(h.secret); i++)
		h.secret[i] = g_secret[i];
	struct frame_hdr fh = { .len = sizeof(h), .type = FR_HELLO };
	struct iovec iov[2] = { { &fh, sizeof(fh) }, { &h, sizeof(h) } };
	struct ack a;
	if (sendv_all(s, iov, 2) || recv_frame(s, FR_ACK, &a, sizeof(a), NULL, 0) < 0) {
		int e = errno;
		close(s);
		errno = e == EIO ? ENODEV : e;
		return -1;
	}
	if (a.status < 0) {
		close(s);
		errno = -a.status;
		return -1;
	}
	return s;
}

static int connect_daemon(uint32_t kind, int cloexec, uint64_t token)
{
	return connect_daemon_ex(kind, cloexec, token, -1);
}

/*
 * Before a call on an emulated fd this process did not connect itself (inherited through fork,
 * received over a socket): give it a connection of its own to the same file, installed at the same
 * fd number with the same flags. Two processes sharing one file then never share one socket, so
 * their concurrent calls cannot interleave; the file is still released when the last connection
 * (the last copy in any process) is closed, as the kernel would. Called with rpc_lock held.
 */
/* Returns 1 when fd now names a new socket of ours (its inode changed), else 0. */
static int own_connection(int fd)
{
	pid_t owner = fd < FDC_SIZE && __atomic_load_n(&g_fdc_ino[fd], __ATOMIC_ACQUIRE) ? __atomic_load_n(&g_fdc_owner[fd], __ATOMIC_RELAXED)
									       : socket_owner(fd);
	if (owner == 0 || owner == g_secret_pid)
		return 0;
	fdc_forget(fd); /* it is about to become another socket */
	struct stat st;
	int fdflags = fcntl(fd, F_GETFD), flflags = fcntl(fd, F_GETFL);
	if (fdflags < 0 || flflags < 0 || fstat(fd, &st) != 0)
		return 0;
	int k = connect_daemon_ex(KIND_ATTACH, 1, (uint64_t)st.st_ino, fd);
	if (k < 0) {
		dbg("iommufd-shim: pid %d cannot take over fd %d from pid %d: %s\n", (int)g_secret_pid, fd, (int)owner, strerror(errno));
		return 0;
	}
	if (flflags & O_NONBLOCK)
		fcntl(k, F_SETFL, fcntl(k, F_GETFL) | O_NONBLOCK);
	int moved = dup3(k, fd, (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0) >= 0;
	if (!moved)
		dbg("iommufd-shim: dup3: %s\n", strerror(errno));
	close(k);
	return moved;
}

/*
 * This process's fast channel, opened on first use through emulated fd `fd` (one this process
 * holds a connection of its own to). NULL when it is disabled or the daemon refused it; then every
 * call takes the socket. Called with rpc_lock held. The memfd is closed again before we return, so
 * the program's fd numbers are the ones it would get from the kernel.
 */
static volatile uint8_t *channel(int fd)
{
	pid_t pid = my_pid();
	if (g_chan_pid == pid)
		return g_chan;
	g_chan_pid = pid;
	g_chan = NULL;
	g_chan_seq = 0;
	if (!chan_enabled)
		return NULL;
	int mfd = memfd_create("iommufd-ts-channel", MFD_CLOEXEC);
	if (mfd < 0)
		return NULL;
	void *m = MAP_FAILED;
	if (ftruncate(mfd, CHAN_SIZE) == 0)
		m = (void *)syscall(SYS_mmap, NULL, (size_t)CHAN_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (m == MAP_FAILED) {
		close(mfd);
		return NULL;
	}
	bump_state();
	madvise(m, CHAN_SIZE, MADV_DONTFORK);
	struct chan_hdr *h = m;
	h->magic = CHAN_MAGIC;
	h->version = PROTO_VERSION;
	struct channel_open co = { .memfd = mfd, .size = CHAN_SIZE, .sock_fd = fd };
	fill_auth(&co.auth);
	struct frame_hdr fh = { .len = sizeof(co), .type = FR_CHANNEL };
	struct iovec iov[2] = { { &fh, sizeof(fh) }, { &co, sizeof(co) } };
	struct ack a;
	int ok = sendv_all(fd, iov, 2) == 0 && recv_frame(fd, FR_ACK, &a, sizeof(a), NULL, 0) >= 0 && a.status == 0;
	close(mfd);
	if (!ok) {
		dbg("iommufd-shim: pid %d: no fast channel, using the socket\n", (int)pid);
		syscall(SYS_munmap, m, (size_t)CHAN_SIZE);
		bump_state();
		return NULL;
	}
	g_chan = m;
	return g_chan;
}

/* The channel is unusable (the daemon dropped it): back to the socket for good. */
static void channel_broken(void)
{
	if (g_chan)
		syscall(SYS_munmap, (void *)g_chan, (size_t)CHAN_SIZE);
	bump_state();
	g_chan = NULL;
}

static inline int64_t mono_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/*
 * One request through the channel; the same contract as sendv_all + recv_frame(FR_RESULT) on the
 * socket (iov[0] is the frame header, which is not copied). Returns the size of the rest of the
 * answer, or -1 with errno. Called with rpc_lock held.
 */
static ssize_t channel_call(volatile uint8_t *ch, int fd, uint64_t ino, uint32_t type, struct iovec *iov, int cnt, void *fixed,
			    size_t fixed_len, void *extra, size_t extra_cap)
{
	volatile struct chan_hdr *h = (volatile struct chan_hdr *)ch;
	if (!ino) {
		errno = EBADF;
		return -1;
	}
	size_t len = 0;
	for (int i = 1; i < cnt; i++)
		len += iov[i].iov_len;
	if (CHAN_REQ_OFF + sizeof(struct chan_req) + len > CHAN_RESP_OFF) {
		errno = EMSGSIZE;
		return -1;
	}
	struct chan_req rq = { .ino = ino, .type = type, .len = (uint32_t)len, .fd = fd };
	/*
	 * req_seq 0 while we write: the daemon may still hold the number of a request we gave up on
	 * (a failed doorbell), and must not read it half overwritten by this one.
	 */
	__atomic_store_n(&h->req_seq, 0, __ATOMIC_SEQ_CST);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint8_t *p = (uint8_t *)ch + CHAN_REQ_OFF;
	memcpy(p, &rq, sizeof(rq));
	p += sizeof(rq);
	for (int i = 1; i < cnt; i++) {
		memcpy(p, iov[i].iov_base, iov[i].iov_len);
		p += iov[i].iov_len;
	}
	uint32_t seq = ++g_chan_seq;
	if (!seq)
		seq = ++g_chan_seq;
	__atomic_store_n(&h->req_seq, seq, __ATOMIC_RELEASE);
	/* Our store must be visible before we read the daemon's state (it stores state, then reads requests). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	int answered = 0;
	if (g_chan_block_left)
		g_chan_block_left--;
	else if (__atomic_load_n(&h->state, __ATOMIC_ACQUIRE) && __atomic_load_n(&h->busy, __ATOMIC_RELAXED) <= 1) {
		/* The daemon polls us and serves nobody else: wait for it without a system call. */
		int64_t t0 = mono_ns(), limit = chan_pick_ns;
		int picked = 0;
		for (unsigned i = 1;; i++) {
			if (__atomic_load_n(&h->resp_seq, __ATOMIC_ACQUIRE) == seq) {
				answered = picked = 1;
				break;
			}
			if (!picked && __atomic_load_n(&h->seen, __ATOMIC_ACQUIRE) == seq) {
				picked = 1; /* it runs and works on it: worth waiting a little longer */
				limit = chan_spin_ns;
			}
			if (!__atomic_load_n(&h->state, __ATOMIC_ACQUIRE))
				break;
			if ((i & 15) == 0) {
				if (mono_ns() - t0 > limit)
					break;
				/* Once picked up the daemon runs on another CPU: yield rarely, its answer is near. */
				if ((i & (picked ? 1023 : 127)) == 0)
					sched_yield();
			}
			__builtin_ia32_pause();
		}
		if (picked)
			g_chan_misses = 0;
		else if (++g_chan_misses >= CHAN_MISSES_TO_BLOCK) {
			g_chan_misses = 0;
			g_chan_block_left = CHAN_BLOCK_CALLS;
		}
	}
	if (!answered) {
		/* The daemon is not polling us (or is slow): wake it through the socket. */
		struct doorbell db = { .seq = seq, .flags = g_chan_block_left ? DB_NOPOLL : 0 };
		fill_auth(&db.auth);
		struct frame_hdr fh = { .len = sizeof(db), .type = FR_DOORBELL };
		struct iovec dv[2] = { { &fh, sizeof(fh) }, { &db, sizeof(db) } };
		struct done d;
		if (sendv_all(fd, dv, 2))
			return -1;
		if (!g_chan_block_left && chan_ring_spin_ns > 0 && __atomic_load_n(&h->busy, __ATOMIC_RELAXED) <= 1) {
			/*
			 * The answer is stored in the channel before its DONE is sent: wait for it awake, unless
			 * the daemon serves other clients too (their CPU time is the daemon's).
			 */
			int64_t t0 = mono_ns();
			for (unsigned i = 1; __atomic_load_n(&h->resp_seq, __ATOMIC_ACQUIRE) != seq; i++) {
				if ((i & 15) == 0) {
					if (mono_ns() - t0 > chan_ring_spin_ns)
						break;
					if ((i & 127) == 0)
						sched_yield();
				}
				__builtin_ia32_pause();
			}
		}
		if (recv_frame(fd, FR_DONE, &d, sizeof(d), NULL, 0) < 0)
			return -1;
		if (d.status == -ENXIO) {
			/* The daemon has no channel for us (it dropped it): nothing was run, use the socket. */
			channel_broken();
			errno = ENXIO;
			return -2;
		}
		if (d.status < 0 || d.seq != seq || __atomic_load_n(&h->resp_seq, __ATOMIC_ACQUIRE) != seq) {
			channel_broken();
			errno = EPROTO;
			return -1;
		}
	}
	struct frame_hdr rh;
	memcpy(&rh, (const uint8_t *)ch + CHAN_RESP_OFF, sizeof(rh));
	if (rh.type != FR_RESULT || rh.len < fixed_len || CHAN_RESP_OFF + sizeof(rh) + rh.len > CHAN_SIZE) {
		errno = EPROTO;
		return -1;
	}
	const uint8_t *body = (const uint8_t *)ch + CHAN_RESP_OFF + sizeof(rh);
	memcpy(fixed, body, fixed_len);
	size_t rest = rh.len - fixed_len, take = rest < extra_cap ? rest : extra_cap;
	if (take)
		memcpy(extra, body + fixed_len, take);
	return (ssize_t)take;
}

static int path_kind(const char *path)
{
	if (!path)
		return -1;
	if (strcmp(path, "/dev/iommu") == 0)
		return KIND_IOMMU;
	if (strcmp(path, "/dev/vfio/vfio") == 0)
		return KIND_VFIO;
	return -1;
}

static int emu_open(int kind, int flags)
{
	int saved = errno;
	if (flags & O_DIRECTORY) {
		errno = ENOTDIR;
		return -1;
	}
	pthread_mutex_lock(&rpc_lock);
	ensure_identity();
	int fd = connect_daemon((uint32_t)kind, (flags & O_CLOEXEC) != 0, 0);
	int e = errno;
	pthread_mutex_unlock(&rpc_lock);
	dbg("iommufd-shim: open(%s) = %d\n", kind == KIND_VFIO ? "/dev/vfio/vfio" : "/dev/iommu", fd);
	if (fd < 0) {
		errno = e;
		return -1;
	}
	if (flags & O_NONBLOCK) {
		int fl = fcntl(fd, F_GETFL);
		if (fl >= 0)
			fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	}
	errno = saved;
	return fd;
}

static mode_t open_mode(int flags, va_list ap)
{
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
		return (mode_t)va_arg(ap, int);
	return 0;
}

SHIM_EXPORT int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	int k = path_kind(path);
	if (k >= 0 && have_daemon())
		return emu_open(k, flags);
	ensure_init();
	return real.open(path, flags, mode);
}

SHIM_EXPORT int open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	int k = path_kind(path);
	if (k >= 0 && have_daemon())
		return emu_open(k, flags);
	ensure_init();
	return (real.open64 ? real.open64 : real.open)(path, flags, mode);
}

SHIM_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	int k = path_kind(path);
	if (k >= 0 && have_daemon())
		return emu_open(k, flags);
	ensure_init();
	return real.openat(dirfd, path, flags, mode);
}

SHIM_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	int k = path_kind(path);
	if (k >= 0 && have_daemon())
		return emu_open(k, flags);
	ensure_init();
	return (real.openat64 ? real.openat64 : real.openat)(dirfd, path, flags, mode);
}

/* _FORTIFY_SOURCE entry points (no mode argument: O_CREAT without a mode is a compile error). */
SHIM_EXPORT int __open_2(const char *path, int flags) { return open(path, flags); }
SHIM_EXPORT int __open64_2(const char *path, int flags) { return open64(path, flags); }
SHIM_EXPORT int __openat_2(int dirfd, const char *path, int flags) { return openat(dirfd, path, flags); }
SHIM_EXPORT int __openat64_2(int dirfd, const char *path, int flags) { return openat64(dirfd, path, flags); }

/* ---- ioctl ----------------------------------------------------------------------------------- */

/*
 * Whether the daemon must know in advance how much of the struct is writable: commands that create
 * or pin something and must undo it when the write-back faults. For every other command the write
 * back comes last and a fault there is simply EFAULT with the effect kept, which the shim can tell
 * by itself. IOMMU_TEST_CMD ops that respond: MOCK_DOMAIN(_FLAGS), MOCK_DOMAIN_REPLACE,
 * CREATE_ACCESS, ACCESS_PAGES, DIRTY.
 */
static int needs_write_probe(unsigned long req, const uint8_t *inl, size_t inl_len)
{
	unsigned nr = (unsigned)(req & 0xff);
	if ((req & ~0xffUL) != 0x3b00 || nr < 0x80)
		return 1; /* VFIO compat and anything unknown */
	switch (nr) {
	case 0x81: /* IOAS_ALLOC */
	case 0x89: /* HWPT_ALLOC */
	case 0x8e: /* FAULT_QUEUE_ALLOC */
		return 1;
	case 0xa0: {
		uint32_t op = 0;
		if (inl_len >= 8)
			memcpy(&op, inl + 4, 4);
		return op == 2 || op == 5 || op == 7 || op == 10 || op == 12 || op == 13;
	}
	default:
		return 0;
	}
}

/*
 * The window of an ioctl: IOMMU_TEST_OP_ACCESS_RW's uptr buffer when it is small and apart from the
 * struct. For a write op the daemon copies from it, so its bytes go along (as many as are
 * readable: the daemon faults on the rest itself); for a read op it copies into it, and we write
 * what it staged after the call (a fault then is the ioctl's EFAULT, as copy_to_user's would be).
 */
static int pick_window(unsigned long req, unsigned long arg, const uint8_t *inl, size_t inl_len, uint64_t *addr, uint32_t *size,
		       int *daemon_writes)
{
	if (req != IOMMU_TEST_CMD_CMD || inl_len < 48)
		return 0;
	uint32_t op, flags;
	uint64_t length, uptr;
	memcpy(&op, inl + 4, 4);
	memcpy(&length, inl + 24, 8);
	memcpy(&uptr, inl + 32, 8);
	memcpy(&flags, inl + 40, 4);
	if (op != IOMMU_TEST_OP_ACCESS_RW || length == 0 || length > WIN_MAX || !uptr || uptr + length < uptr)
		return 0;
	if (uptr < (uint64_t)arg + inl_len && (uint64_t)arg < uptr + length)
		return 0; /* it overlaps the struct: one copy of those bytes only */
	*addr = uptr;
	*size = (uint32_t)length;
	*daemon_writes = !(flags & 1); /* MOCK_ACCESS_RW_WRITE: the daemon reads the buffer */
	return 1;
}

/* An ioctl on emulated fd `fd`, whose socket inode (an fstat just now) is `ino`. */
static int emu_ioctl(int fd, uint64_t ino, unsigned long req, unsigned long arg)
{
	int saved = errno;
	static __thread uint8_t inl[INLINE_MAX];
	static __thread uint8_t win[WIN_MAX];
	uint8_t dirty[INLINE_MAX + WIN_MAX];
	size_t inl_len = 0, wr_len = 0;
	int probed = 0;
	if (arg) {
		/* One read covers every iommufd struct (at most 72 bytes) unless it crosses a page. */
		size_t first = PAGE_SZ - (size_t)(arg & (PAGE_SZ - 1));
		if (first > 256)
			first = 256;
		size_t got0 = self_rw(0, inl, arg, first);
		if (got0 >= 4) {
			uint32_t size;
			memcpy(&size, inl, 4);
			size_t want = size < 4 ? 4 : size;
			if (want > INLINE_MAX)
				want = INLINE_MAX;
			inl_len = got0 < want ? got0 : want;
			if (got0 == first && want > first)
				inl_len = first + self_rw(0, inl + first, arg + first, want - first);
			if (needs_write_probe(req, inl, inl_len)) {
				/* Writability probe: write the same bytes back (the kernel would write the struct anyway). */
				wr_len = self_rw(1, inl, arg, inl_len);
				probed = 1;
			} else {
				/* Assume writable; a write-back that faults below is EFAULT, as copy_to_user's would be. */
				wr_len = inl_len;
			}
		}
	}

	pthread_mutex_lock(&rpc_lock);
	ensure_identity();
	if (own_connection(fd))
		ino = emulated_ino(fd); /* a socket of our own took its place */
	int spare = -1;
	uint64_t token = 0;
	if (req == IOMMU_FAULT_QUEUE_ALLOC_CMD ||
	    (req == IOMMU_TEST_CMD_CMD && inl_len >= 8 && *(uint32_t *)(inl + 4) == IOMMU_TEST_OP_CREATE_ACCESS)) {
		/* The handler installs a new file: have a connection ready at the lowest free fd. */
		while (!token)
			if (getrandom(&token, sizeof(token), 0) != sizeof(token))
				token = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&token;
		spare = connect_daemon(KIND_SPARE, 1, token);
		if (spare < 0)
			token = 0;
	}

	uint32_t id_ino = 0;
	if (req == IOMMU_TEST_CMD_CMD && inl_len >= 12) {
		/* Ops whose `id` is an access fd: tell the daemon which socket that fd is now. */
		uint32_t op = *(uint32_t *)(inl + 4);
		if (op == 6 || op == 7 || op == 8 || op == 11) {
			struct stat st;
			if (fstat((int)*(uint32_t *)(inl + 8), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino <= UINT32_MAX)
				id_ino = (uint32_t)st.st_ino;
		}
	}
	struct ioctl_req r = {
		.cmd = (uint32_t)req,
		.id_ino = id_ino,
		.arg = (uint64_t)arg,
		.spare_token = token,
		.spare_fd = spare,
		.inline_len = (uint32_t)inl_len,
		.writable_len = (uint32_t)wr_len,
	};
	int daemon_writes = 0;
	if (pick_window(req, arg, inl, inl_len, &r.win_addr, &r.win_size, &daemon_writes)) {
		r.win_writable = (uint32_t)daemon_writes;
		r.win_len = daemon_writes ? 0 : (uint32_t)self_rw(0, win, r.win_addr, r.win_size);
	}
	fill_auth(&r.auth);
	struct frame_hdr fh = { .len = (uint32_t)(sizeof(r) + inl_len + r.win_len), .type = FR_IOCTL };
	struct iovec iov[4] = { { &fh, sizeof(fh) }, { &r, sizeof(r) }, { inl, inl_len }, { win, r.win_len } };
	struct result res;
	ssize_t got = -1;
	volatile uint8_t *ch = channel(fd);
	if (ch)
		got = channel_call(ch, fd, ino, FR_IOCTL, iov, 4, &res, sizeof(res), dirty, sizeof(dirty));
	if ((!ch || got == -2) && sendv_all(fd, iov, 4) == 0)
		got = recv_frame(fd, FR_RESULT, &res, sizeof(res), dirty, sizeof(dirty));
	int e = errno;
	if (got >= 0) {
		if (res.dirty_len && (size_t)got >= res.dirty_len && res.dirty_off + (size_t)res.dirty_len <= wr_len) {
			size_t w = self_rw(1, dirty, arg + res.dirty_off, res.dirty_len);
			if (!probed && w < res.dirty_len)
				res.ret = -EFAULT;
		}
		if (res.win_dirty_len && r.win_writable && (size_t)got >= (size_t)res.dirty_len + res.win_dirty_len &&
		    res.win_dirty_off + (size_t)res.win_dirty_len <= r.win_size) {
			size_t w = self_rw(1, dirty + res.dirty_len, r.win_addr + res.win_dirty_off, res.win_dirty_len);
			if (w < res.win_dirty_len && res.ret >= 0)
				res.ret = -EFAULT;
		}
		if (spare >= 0 && res.new_fd == spare) {
			if (!res.new_fd_cloexec)
				fcntl(spare, F_SETFD, 0);
			spare = -1;
		}
	}
	if (spare >= 0)
		close(spare);
	pthread_mutex_unlock(&rpc_lock);

	if (got < 0) {
		dbg("iommufd-shim: ioctl(%d, 0x%lx) transport error: %s\n", fd, req, strerror(e));
		errno = EIO;
		return -1;
	}
	if (res.ret < 0) {
		errno = (int)-res.ret;
		return -1;
	}
	errno = saved;
	return (int)res.ret;
}

SHIM_EXPORT int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	unsigned long arg = va_arg(ap, unsigned long);
	va_end(ap);
	uint64_t ino = emulated_ino(fd);
	if (ino)
		return emu_ioctl(fd, ino, req, arg);
	return real.ioctl(fd, req, arg);
}

/* ---- read / write ------------------------------------------------------------------------------ */

static ssize_t emu_rw(int fd, uint32_t type, uint64_t addr, size_t count)
{
	int saved = errno;
	pthread_mutex_lock(&rpc_lock);
	ensure_identity();
	own_connection(fd);
	struct rw_req r = { .addr = addr, .count = count };
	fill_auth(&r.auth);
	struct frame_hdr fh = { .len = sizeof(r), .type = type };
	struct iovec iov[2] = { { &fh, sizeof(fh) }, { &r, sizeof(r) } };
	struct result res;
	ssize_t got = -1;
	if (sendv_all(fd, iov, 2) == 0)
		got = recv_frame(fd, FR_RESULT, &res, sizeof(res), NULL, 0);
	pthread_mutex_unlock(&rpc_lock);
	if (got < 0) {
		errno = EIO;
		return -1;
	}
	if (res.ret < 0) {
		errno = (int)-res.ret;
		return -1;
	}
	errno = saved;
	return (ssize_t)res.ret;
}

SHIM_EXPORT ssize_t read(int fd, void *buf, size_t count)
{
	if (is_emulated(fd))
		return emu_rw(fd, FR_READ, (uint64_t)(uintptr_t)buf, count);
	return real.read(fd, buf, count);
}

SHIM_EXPORT ssize_t __read_chk(int fd, void *buf, size_t count, size_t buflen)
{
	if (count > buflen) {
		extern void __chk_fail(void) __attribute__((noreturn));
		__chk_fail();
	}
	return read(fd, buf, count);
}

SHIM_EXPORT ssize_t write(int fd, const void *buf, size_t count)
{
	if (is_emulated(fd))
		return emu_rw(fd, FR_WRITE, (uint64_t)(uintptr_t)buf, count);
	ensure_init();
	return real.write(fd, buf, count);
}

/* ---- poll / ppoll / select ---------------------------------------------------------------------- */

/* The file's poll mask from the daemon; POLLERR|POLLHUP when the daemon is gone. */
static short emu_poll_mask(int fd, short events)
{
	int saved = errno;
	pthread_mutex_lock(&rpc_lock);
	ensure_identity();
	own_connection(fd);
	struct poll_req r = { .events = (uint16_t)events };
	fill_auth(&r.auth);
	struct frame_hdr fh = { .len = sizeof(r), .type = FR_POLL };
	struct iovec iov[2] = { { &fh, sizeof(fh) }, { &r, sizeof(r) } };
	struct result res;
	ssize_t got = -1;
	if (sendv_all(fd, iov, 2) == 0)
		got = recv_frame(fd, FR_RESULT, &res, sizeof(res), NULL, 0);
	pthread_mutex_unlock(&rpc_lock);
	errno = saved;
	if (got < 0 || res.ret < 0)
		return POLLERR | POLLHUP;
	return (short)res.ret;
}

static int64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/*
 * poll over a mix of emulated and ordinary fds. Emulated fds are asked for their mask; when none
 * is ready, the real ppoll waits on their sockets for POLLIN (the daemon sends a WAKE frame when a
 * file becomes readable), then they are asked again. timeout_ns < 0 waits forever.
 */
static int emu_poll(struct pollfd *fds, nfds_t n, int64_t timeout_ns, const sigset_t *sigmask)
{
	int saved = errno;
	int64_t deadline = timeout_ns >= 0 ? now_ns() + timeout_ns : -1;
	char emu_small[64];
	char *emu = n <= sizeof(emu_small) ? emu_small : malloc(n);
	struct pollfd tmp_small[64];
	struct pollfd *tmp = n <= 64 ? tmp_small : malloc(n * sizeof(*tmp));
	int ret = -1;
	if (!emu || !tmp) {
		errno = ENOMEM;
		goto out;
	}
	for (nfds_t i = 0; i < n; i++)
		emu[i] = fds[i].fd >= 0 && is_emulated(fds[i].fd);
	for (;;) {
		int ready = 0;
		for (nfds_t i = 0; i < n; i++) {
			if (!emu[i])
				continue;
			short m = emu_poll_mask(fds[i].fd, fds[i].events);
			fds[i].revents = m & (fds[i].events | POLLERR | POLLHUP | POLLNVAL);
			if (fds[i].revents)
				ready = 1;
		}
		int64_t wait_ns;
		if (ready)
			wait_ns = 0;
		else if (deadline < 0)
			wait_ns = -1;
		else {
			wait_ns = deadline - now_ns();
			if (wait_ns < 0)
				wait_ns = 0;
		}
		for (nfds_t i = 0; i < n; i++) {
			tmp[i] = fds[i];
			tmp[i].revents = 0;
			if (emu[i])
				tmp[i].events = (ready || !(fds[i].events & (POLLIN | POLLRDNORM))) ? 0 : POLLIN;
		}
		struct timespec ts, *tsp = NULL;
		if (wait_ns >= 0) {
			ts.tv_sec = wait_ns / 1000000000;
			ts.tv_nsec = wait_ns % 1000000000;
			tsp = &ts;
		}
		int r = real.ppoll(tmp, n, tsp, sigmask);
		if (r < 0) {
			saved = errno;
			goto out;
		}
		int others = 0, emu_woke = 0;
		for (nfds_t i = 0; i < n; i++) {
			if (emu[i]) {
				if (tmp[i].revents)
					emu_woke = 1;
				continue;
			}
			fds[i].revents = tmp[i].revents;
			if (tmp[i].revents)
				others++;
		}
		if (ready || others || (!emu_woke && r == 0)) {
			if (others && !ready) {
				/* Something else woke us: report the emulated fds' current state too. */
				for (nfds_t i = 0; i < n; i++)
					if (emu[i]) {
						short m = emu_poll_mask(fds[i].fd, fds[i].events);
						fds[i].revents = m & (fds[i].events | POLLERR | POLLHUP | POLLNVAL);
					}
			}
			ret = 0;
			for (nfds_t i = 0; i < n; i++)
				if (fds[i].revents)
					ret++;
			goto out;
		}
		/* Only an emulated socket woke us (WAKE frame or hangup): ask again. */
	}
out:
	if (emu && emu != emu_small)
		free(emu);
	if (tmp && tmp != tmp_small)
		free(tmp);
	errno = saved;
	return ret;
}

static int any_emulated(struct pollfd *fds, nfds_t n)
{
	if (!have_daemon())
		return 0;
	for (nfds_t i = 0; i < n; i++)
		if (fds[i].fd >= 0 && is_emulated(fds[i].fd))
			return 1;
	return 0;
}

SHIM_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	ensure_init();
	if (!any_emulated(fds, n))
		return real.poll(fds, n, timeout);
	return emu_poll(fds, n, timeout < 0 ? -1 : (int64_t)timeout * 1000000, NULL);
}

SHIM_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n) {
		extern void __chk_fail(void) __attribute__((noreturn));
		__chk_fail();
	}
	return poll(fds, n, timeout);
}

SHIM_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *sigmask)
{
	ensure_init();
	if (!any_emulated(fds, n))
		return real.ppoll(fds, n, ts, sigmask);
	if (ts && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000)) {
		errno = EINVAL;
		return -1;
	}
	return emu_poll(fds, n, ts ? (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec : -1, sigmask);
}

SHIM_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *sigmask, size_t fdslen)
{
	if (fdslen / sizeof(*fds) < n) {
		extern void __chk_fail(void) __attribute__((noreturn));
		__chk_fail();
	}
	return ppoll(fds, n, ts, sigmask);
}

SHIM_EXPORT int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
	ensure_init();
	int found = 0;
	if (have_daemon() && nfds > 0 && nfds <= FD_SETSIZE) {
		for (int fd = 0; fd < nfds && !found; fd++)
			if (((rd && FD_ISSET(fd, rd)) || (wr && FD_ISSET(fd, wr)) || (ex && FD_ISSET(fd, ex))) && is_emulated(fd))
				found = 1;
	}
	if (!found)
		return real.select(nfds, rd, wr, ex, tv);
	struct pollfd pf[FD_SETSIZE];
	nfds_t n = 0;
	for (int fd = 0; fd < nfds; fd++) {
		short ev = 0;
		if (rd && FD_ISSET(fd, rd))
			ev |= POLLIN;
		if (wr && FD_ISSET(fd, wr))
			ev |= POLLOUT;
		if (ex && FD_ISSET(fd, ex))
			ev |= POLLPRI;
		if (ev) {
			pf[n].fd = fd;
			pf[n].events = ev;
			pf[n].revents = 0;
			n++;
		}
	}
	int64_t tns = tv ? (int64_t)tv->tv_sec * 1000000000 + (int64_t)tv->tv_usec * 1000 : -1;
	int64_t start = now_ns();
	int r = emu_poll(pf, n, tns, NULL);
	if (r < 0)
		return -1;
	int saved = errno;
	if (rd)
		FD_ZERO(rd);
	if (wr)
		FD_ZERO(wr);
	if (ex)
		FD_ZERO(ex);
	int count = 0;
	for (nfds_t i = 0; i < n; i++) {
		if (pf[i].revents & POLLNVAL) {
			errno = EBADF;
			return -1;
		}
		if (rd && (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) && (pf[i].events & POLLIN)) {
			FD_SET(pf[i].fd, rd);
			count++;
		}
		if (wr && (pf[i].revents & (POLLOUT | POLLERR)) && (pf[i].events & POLLOUT)) {
			FD_SET(pf[i].fd, wr);
			count++;
		}
		if (ex && (pf[i].revents & POLLPRI)) {
			FD_SET(pf[i].fd, ex);
			count++;
		}
	}
	if (tv) {
		int64_t left = tns - (now_ns() - start);
		if (left < 0)
			left = 0;
		tv->tv_sec = left / 1000000000;
		tv->tv_usec = (left % 1000000000) / 1000;
	}
	errno = saved;
	return count;
}

/* ---- calls that change what the daemon caches about us ---------------------------------------- */

/* Raw system calls: dlsym() here could recurse through malloc into mmap. */
SHIM_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	long r = syscall(SYS_mmap, addr, len, prot, flags, fd, off);
	bump_state();
	return (void *)r;
}

SHIM_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}

SHIM_EXPORT int munmap(void *addr, size_t len)
{
	int r = (int)syscall(SYS_munmap, addr, len);
	bump_state();
	return r;
}

SHIM_EXPORT int mprotect(void *addr, size_t len, int prot)
{
	int r = (int)syscall(SYS_mprotect, addr, len, prot);
	bump_state();
	return r;
}

SHIM_EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *new_addr = NULL;
	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	long r = syscall(SYS_mremap, old, old_len, new_len, flags, new_addr);
	bump_state();
	return (void *)r;
}

SHIM_EXPORT int setrlimit(__rlimit_resource_t res, const struct rlimit *rl)
{
	int r = (int)syscall(SYS_setrlimit, res, rl);
	bump_state();
	return r;
}

SHIM_EXPORT int prlimit(pid_t pid, __rlimit_resource_t res, const struct rlimit *nl, struct rlimit *ol)
{
	int r = (int)syscall(SYS_prlimit64, pid, res, nl, ol);
	bump_state();
	return r;
}

SHIM_EXPORT int setuid(uid_t uid)
{
	int (*f)(uid_t) = (int (*)(uid_t))dlsym(RTLD_NEXT, "setuid");
	int r = f ? f(uid) : -1;
	bump_state();
	return r;
}

SHIM_EXPORT int seteuid(uid_t uid)
{
	int (*f)(uid_t) = (int (*)(uid_t))dlsym(RTLD_NEXT, "seteuid");
	int r = f ? f(uid) : -1;
	bump_state();
	return r;
}

SHIM_EXPORT int prctl(int option, ...)
{
	va_list ap;
	va_start(ap, option);
	unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
	unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
	va_end(ap);
	int r = (int)syscall(SYS_prctl, option, a2, a3, a4, a5);
	bump_state();
	return r;
}
