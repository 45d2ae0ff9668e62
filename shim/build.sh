#!/bin/sh
# Builds shim/libiommufd-shim.so with the system C compiler (run by `npm ci` / `npm install`).
set -e
cd "$(dirname "$0")"
CC="${CC:-cc}"
if ! command -v "$CC" >/dev/null 2>&1; then
  echo "iommufd-ts: no C compiler ($CC): the preload shim was not built; 'iommufd-ts run' needs it" >&2
  exit 0
fi
# A private temporary name and an atomic rename: concurrent builds (parallel test files) are safe.
tmp="libiommufd-shim.so.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$CC" -shared -fPIC -O2 -Wall -U_FORTIFY_SOURCE -o "$tmp" iommufd-shim.c -ldl -lpthread
mv -f "$tmp" libiommufd-shim.so
