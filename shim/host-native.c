/*
 * iommufd-ts-host.node — the daemon's one native helper (Node-API, plain C).
 *
 * Node cannot map memory. The fast channel (src/host/channel.ts) is a memfd shared with a client
 * process; mapping it lets the daemon poll and answer it with plain loads and stores instead of
 * a pread/pwrite system call each. Optional: without this module the daemon uses pread/pwrite.
 *
 *   map(fd, length) -> ArrayBuffer   MAP_SHARED of [0, length) of fd; unmapped when collected
 */
#include <node_api.h>
#include <stdint.h>
#include <sys/mman.h>

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

NAPI_MODULE_INIT()
{
	napi_value fn;
	if (napi_create_function(env, "map", NAPI_AUTO_LENGTH, map_fd, NULL, &fn) != napi_ok ||
	    napi_set_named_property(env, exports, "map", fn) != napi_ok)
		return NULL;
	return exports;
}
