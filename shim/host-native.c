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
 *   pread(fd, u8, pos) -> number     pread of u8.length bytes at pos into the Uint8Array u8:
 *   pwrite(fd, u8, pos) -> number    the byte count, or -errno. No fs layer in between: the
 *                                    daemon reads and writes client memory (/proc/<pid>/mem, a
 *                                    shared object's fd) several times per ioctl.
 */
#include <node_api.h>
#include <stdint.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

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

static napi_value ready(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	napi_typedarray_type type;
	size_t n = 0;
	void *data = NULL;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
	    napi_get_typedarray_info(env, argv[0], &type, &n, &data, NULL, NULL) != napi_ok || type != napi_int32_array) {
		napi_throw_type_error(env, NULL, "ready(Int32Array of fds)");
		return NULL;
	}
	struct pollfd stack[READY_STACK], *p = stack;
	if (n > READY_STACK && !(p = calloc(n, sizeof(*p)))) {
		napi_throw_error(env, NULL, "ready: out of memory");
		return NULL;
	}
	const int32_t *fds = data;
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

static int export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb)
{
	napi_value fn;
	return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
	       napi_set_named_property(env, exports, name, fn) == napi_ok;
}

NAPI_MODULE_INIT()
{
	if (!export_fn(env, exports, "map", map_fd) || !export_fn(env, exports, "ready", ready) ||
	    !export_fn(env, exports, "pread", do_pread) || !export_fn(env, exports, "pwrite", do_pwrite))
		return NULL;
	return exports;
}
