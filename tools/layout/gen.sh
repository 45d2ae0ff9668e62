#!/bin/sh
# Regenerates test/uapi/layout-data.json from the kernel's own uAPI headers.
# Prefers the oracle build's installed headers (make headers_install); falls back to the raw
# source tree, whose uapi headers compile with the host's <asm/...>.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
oracle=${IOMMUFD_ORACLE:-/root/.cache/iommufd-oracle}
src=${KERNEL_SRC:-$oracle/linux-source-6.12}
kver=${KERNEL_VERSION:-6.12.117}
out=${1:-$repo/test/uapi/layout-data.json}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -f "$oracle/hdr/usr/include/linux/iommufd.h" ]; then
	uapi="$oracle/hdr/usr/include"
else
	# The raw uapi tree's linux/types.h and stddef.h expect a kernel build; take only the two
	# headers we measure and let the host provide the basic types.
	uapi="$tmp/include"
	mkdir -p "$uapi/linux"
	cp "$src/include/uapi/linux/iommufd.h" "$src/include/uapi/linux/vfio.h" "$uapi/linux/"
fi
if [ -f "$oracle/selftest-src/drivers/iommu/iommufd/iommufd_test.h" ]; then
	testdir="$oracle/selftest-src/drivers/iommu/iommufd"
else
	testdir="$src/drivers/iommu/iommufd"
fi

bin="$tmp/layout"
# -I (not -isystem) so these headers win over the host's linux-libc-dev copies; __user is
# only stripped by headers_install, so the raw-tree fallback needs it defined away.
gcc -std=gnu11 -Wall -Werror -D__user= -DKERNEL_VERSION_STRING="\"$kver\"" \
	-I "$uapi" -I "$testdir" -o "$bin" "$here/layout.c"
"$bin" >"$out.tmp"
node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out (headers: $uapi, $testdir)"
