#!/bin/sh
# Builds shim/libiommufd-shim.so (the preload library) and shim/iommufd-ts-host.node (the
# daemon's optional native helper) with the system C compiler (run by `npm ci` / `npm install`).
set -e
cd "$(dirname "$0")"
CC="${CC:-cc}"
if ! command -v "$CC" >/dev/null 2>&1; then
  echo "iommufd-ts: no C compiler ($CC): the preload shim was not built; 'iommufd-ts run' needs it" >&2
  exit 0
fi
# Private temporary names and atomic renames: concurrent builds (parallel test files) are safe.
tmp="libiommufd-shim.so.tmp.$$"
tmpn="iommufd-ts-host.node.tmp.$$"
trap 'rm -f "$tmp" "$tmpn"' EXIT
"$CC" -shared -fPIC -O2 -Wall -U_FORTIFY_SOURCE -o "$tmp" iommufd-shim.c -ldl -lpthread
mv -f "$tmp" libiommufd-shim.so
# The native helper needs Node's headers (node_api.h, shipped with Node); without them the
# daemon reads its fast channels with pread/pwrite instead.
inc="$(node -p "require('path').resolve(process.execPath, '../../include/node')" 2>/dev/null || true)"
if [ -n "$inc" ] && [ -f "$inc/node_api.h" ]; then
  if "$CC" -shared -fPIC -O2 -Wall -I"$inc" -o "$tmpn" host-native.c 2>/dev/null; then
    mv -f "$tmpn" iommufd-ts-host.node
  else
    echo "iommufd-ts: the native helper did not build; the daemon will use pread/pwrite for its channels" >&2
  fi
fi
