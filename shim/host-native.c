/*
 * iommufd-ts-host.node — the daemon's one native helper (Node-API, plain C).
 *
 * Node cannot map memory. The fast channel (src/host/channel.ts) is a memfd shared with a client
 * process; mapping it lets the daemon poll and answer it with plain loads and stores instead of
 * a pread/pwrite system call each. Optional: without this module the daemon uses pread/pwrite.
 *
 *   map(fd, length) -> ArrayBuffer   MAP_SHARED of [0, length) of fd; unmapped when collected
 *   ready(fds) -> number             how many of the fds (an Int32Array) have input, a hangup or an
 *                                    error pending right now (poll with a zero timeout); -1 if
 *                                    poll failed. The daemon answers a channel request at once
 *                                    only while its sockets are quiet (so a close() a client made
 *                                    before its call is always released first).
 *   watch(fds) -> epfd | -errno      the same question, cheaper when asked per request: an epoll
 *   watchReady(epfd) -> number       instance watching the fds for input, asked with a zero
 *   unwatch(epfd)                    timeout (one system call whatever the number of fds; poll
 *                                    visits every one, about 1-1.5 us for 3-7 sockets).
 *   pread(fd, u8, pos) -> number     pread of u8.length bytes at pos into the Uint8Array u8:
 *   pwrite(fd, u8, pos) -> number    the byte count, or -errno. No fs layer in between: the
 *                                    daemon reads and writes client memory (/proc/<pid>/mem, a
 *                                    shared object's fd) several times per ioctl.
 *   objMap(fd, length, writable)     map [0, length) of a client's shared memory object (its fd
 *     -> handle | -errno             from /proc/<pid>/map_files) and return a small handle; the
 *   objUnmap(handle)                 daemon then copies to and from it with objRead/objWrite
 *   objRead(handle, off, u8) -> 0|-errno    instead of a /proc/<pid>/mem access per copy. The
 *   objWrite(handle, off, u8) -> 0|-errno   copies are bounds-checked here and guarded against
 *                                    SIGBUS (a page past the object's end, a file truncated
 *                                    behind our back): that is -EFAULT, never a crash. JavaScript
 *                                    never sees these mappings.
 *   yield() -> 0                     sched_yield: the daemon polls its clients' channels with
 *                                    nothing to do; a client that the scheduler put on the
 *                                    same CPU (a socket wake-up places the woken daemon on its
 *                                    waker's CPU) then runs instead of waiting for our slice.
 */
#include <node_api.h>
#include <stdint.h>
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- shared memory objects of clients ---------------------------------------------------------- */

#define OBJ_MAX 64
static struct obj {
	uint8_t *base;
	size_t len;
	int writable;
} objs[OBJ_MAX];

static sigjmp_buf copy_jmp;
static volatile sig_atomic_t in_copy;
static struct sigaction old_bus;
static int bus_installed;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	if (in_copy) {
		in_copy = 0;
		siglongjmp(copy_jmp, 1);
	}
	/* Not ours: whatever was there before. */
	if (old_bus.sa_flags & SA_SIGINFO) {
		if (old_bus.sa_sigaction) {
			old_bus.sa_sigaction(sig, si, uc);
			return;
		}
	} else if (old_bus.sa_handler != SIG_DFL && old_bus.sa_handler != SIG_IGN) {
		old_bus.sa_handler(sig);
		return;
	}
	signal(SIGBUS, SIG_DFL);
	raise(SIGBUS);
}

static int install_bus(void)
{
	if (bus_installed)
		return 0;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &old_bus) != 0)
		return -errno;
	bus_installed = 1;
	return 0;
}

/* memcpy that turns a SIGBUS into -EFAULT. */
static int guarded_copy(void *dst, const void *src, size_t n)
{
	/* No mask to save: the handler runs with SA_NODEFER, so SIGBUS is not blocked when it jumps back. */
	if (sigsetjmp(copy_jmp, 0)) {
		in_copy = 0;
		return -EFAULT;
	}
	in_copy = 1;
	memcpy(dst, src, n);
	in_copy = 0;
	return 0;
}

static napi_value ret_int(napi_env env, int64_t v)
{
	napi_value out;
	napi_create_int64(env, v, &out);
	return out;
}

static napi_value obj_map(napi_env env, napi_callback_info info)
{
	size_t argc = 3;
	napi_value argv[3];
	int32_t fd = -1;
	double len = 0;
	bool writable = false;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
	    napi_get_value_double(env, argv[1], &len) != napi_ok || napi_get_value_bool(env, argv[2], &writable) != napi_ok || fd < 0 ||
	    !(len > 0) || len > (double)(1ull << 40)) {
		napi_throw_type_error(env, NULL, "objMap(fd, length, writable)");
		return NULL;
	}
	int e = install_bus();
	if (e)
		return ret_int(env, e);
	int h = 0;
	while (h < OBJ_MAX && objs[h].base)
		h++;
	if (h == OBJ_MAX)
		return ret_int(env, -EMFILE);
	void *p = mmap(NULL, (size_t)len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return ret_int(env, -errno);
	objs[h].base = p;
	objs[h].len = (size_t)len;
	objs[h].writable = writable;
	return ret_int(env, h);
}

static struct obj *obj_arg(napi_env env, napi_value v)
{
	int32_t h = -1;
	if (napi_get_value_int32(env, v, &h) != napi_ok || h < 0 || h >= OBJ_MAX || !objs[h].base)
		return NULL;
	return &objs[h];
}

static napi_value obj_unmap(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	struct obj *o;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || !(o = obj_arg(env, argv[0])))
		return ret_int(env, -EBADF);
	munmap(o->base, o->len);
	o->base = NULL;
	o->len = 0;
	return ret_int(env, 0);
}

static napi_value obj_copy(napi_env env, napi_callback_info info, int write)
{
	size_t argc = 3;
	napi_value argv[3];
	double off = -1;
	napi_typedarray_type type;
	size_t n = 0;
	void *data = NULL;
	struct obj *o;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 || !(o = obj_arg(env, argv[0])) ||
	    napi_get_value_double(env, argv[1], &off) != napi_ok ||
	    napi_get_typedarray_info(env, argv[2], &type, &n, &data, NULL, NULL) != napi_ok || type != napi_uint8_array)
		return ret_int(env, -EINVAL);
	if (!(off >= 0) || off > (double)o->len || n > o->len - (size_t)off)
		return ret_int(env, -EFAULT);
	if (write && !o->writable)
		return ret_int(env, -EACCES);
	uint8_t *at = o->base + (size_t)off;
	return ret_int(env, write ? guarded_copy(at, data, n) : guarded_copy(data, at, n));
}

static napi_value obj_read(napi_env env, napi_callback_info info)
{
	return obj_copy(env, info, 0);
}

static napi_value obj_write(napi_env env, napi_callback_info info)
{
	return obj_copy(env, info, 1);
}

/* ---- the channel mapping -------------------------------------------------------------------------- */

static void unmap_cb(napi_env env, void *data, void *hint)
{
	(void)env;
	munmap(data, (size_t)(uintptr_t)hint);
}

static napi_value map_fd(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
		napi_throw_type_error(env, NULL, "map(fd, length)");
		return NULL;
	}
	int32_t fd = -1;
	int64_t len = 0;
	if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &len) != napi_ok || fd < 0 ||
	    len <= 0 || len > (1 << 20)) {
		napi_throw_range_error(env, NULL, "map: bad fd or length");
		return NULL;
	}
	void *p = mmap(NULL, (size_t)len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		napi_throw_error(env, NULL, "map: mmap failed");
		return NULL;
	}
	napi_value ab;
	if (napi_create_external_arraybuffer(env, p, (size_t)len, unmap_cb, (void *)(uintptr_t)len, &ab) != napi_ok) {
		munmap(p, (size_t)len);
		napi_throw_error(env, NULL, "map: external ArrayBuffers are not available");
		return NULL;
	}
	return ab;
}

#define READY_STACK 64

/* The one argument of ready() and watch(): an Int32Array of fds. 0, or -1 with a TypeError thrown. */
static int fds_arg(napi_env env, napi_callback_info info, const char *usage, const int32_t **fds, size_t *n)
{
	size_t argc = 1;
	napi_value argv[1];
	napi_typedarray_type type;
	void *data = NULL;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
	    napi_get_typedarray_info(env, argv[0], &type, n, &data, NULL, NULL) != napi_ok || type != napi_int32_array) {
		napi_throw_type_error(env, NULL, usage);
		return -1;
	}
	*fds = data;
	return 0;
}

static napi_value ready(napi_env env, napi_callback_info info)
{
	const int32_t *fds;
	size_t n = 0;
	if (fds_arg(env, info, "ready(Int32Array of fds)", &fds, &n))
		return NULL;
	struct pollfd stack[READY_STACK], *p = stack;
	if (n > READY_STACK && !(p = calloc(n, sizeof(*p)))) {
		napi_throw_error(env, NULL, "ready: out of memory");
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		p[i].fd = fds[i];
		p[i].events = POLLIN;
		p[i].revents = 0;
	}
	int r;
	do
		r = poll(p, (nfds_t)n, 0);
	while (r < 0 && errno == EINTR);
	if (p != stack)
		free(p);
	napi_value out;
	napi_create_int32(env, r, &out);
	return out;
}

static napi_value watch(napi_env env, napi_callback_info info)
{
	const int32_t *fds;
	size_t n = 0;
	if (fds_arg(env, info, "watch(Int32Array of fds)", &fds, &n))
		return NULL;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return ret_int(env, -errno);
	for (size_t i = 0; i < n; i++) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0) {
			int e = errno;
			close(ep);
			return ret_int(env, -e);
		}
	}
	return ret_int(env, ep);
}

static napi_value watch_ready(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	int32_t ep = -1;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &ep) != napi_ok)
		return ret_int(env, -EINVAL);
	struct epoll_event ev;
	int r;
	do
		r = epoll_wait(ep, &ev, 1, 0);
	while (r < 0 && errno == EINTR);
	return ret_int(env, r < 0 ? -errno : r);
}

static napi_value unwatch(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	int32_t ep = -1;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &ep) != napi_ok || ep < 0)
		return ret_int(env, -EINVAL);
	return ret_int(env, close(ep) == 0 ? 0 : -errno);
}

/* pread/pwrite(fd, Uint8Array, pos): shared argument handling. */
static napi_value fd_io(napi_env env, napi_callback_info info, int write)
{
	size_t argc = 3;
	napi_value argv[3];
	napi_typedarray_type type;
	size_t n = 0;
	void *data = NULL;
	int32_t fd = -1;
	double pos = -1;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
	    napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
	    napi_get_typedarray_info(env, argv[1], &type, &n, &data, NULL, NULL) != napi_ok || type != napi_uint8_array ||
	    napi_get_value_double(env, argv[2], &pos) != napi_ok || !(pos >= 0) || pos > 9007199254740991.0) {
		napi_throw_type_error(env, NULL, write ? "pwrite(fd, Uint8Array, pos)" : "pread(fd, Uint8Array, pos)");
		return NULL;
	}
	ssize_t r;
	do
		r = write ? pwrite(fd, data, n, (off_t)pos) : pread(fd, data, n, (off_t)pos);
	while (r < 0 && errno == EINTR);
	napi_value out;
	napi_create_int64(env, r < 0 ? -(int64_t)errno : (int64_t)r, &out);
	return out;
}

static napi_value do_pread(napi_env env, napi_callback_info info)
{
	return fd_io(env, info, 0);
}

static napi_value do_pwrite(napi_env env, napi_callback_info info)
{
	return fd_io(env, info, 1);
}

static napi_value do_yield(napi_env env, napi_callback_info info)
{
	(void)info;
	napi_value out;
	napi_create_int32(env, sched_yield(), &out);
	return out;
}

static int export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb)
{
	napi_value fn;
	return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
	       napi_set_named_property(env, exports, name, fn) == napi_ok;
}

NAPI_MODULE_INIT()
{
	if (!export_fn(env, exports, "map", map_fd) || !export_fn(env, exports, "ready", ready) ||
	    !export_fn(env, exports, "pread", do_pread) || !export_fn(env, exports, "pwrite", do_pwrite) ||
	    !export_fn(env, exports, "objMap", obj_map) || !export_fn(env, exports, "objUnmap", obj_unmap) ||
	    !export_fn(env, exports, "objRead", obj_read) || !export_fn(env, exports, "objWrite", obj_write) ||
	    !export_fn(env, exports, "yield", do_yield) || !export_fn(env, exports, "watch", watch) ||
	    !export_fn(env, exports, "watchReady", watch_ready) || !export_fn(env, exports, "unwatch", unwatch))
		return NULL;
	return exports;
}
