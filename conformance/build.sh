#!/usr/bin/env bash
# Build the upstream iommufd selftest, dynamically linked, for the conformance run.
#
#   conformance/build.sh            build, or bring up to date (about a second when cached)
#
# Source: Debian's linux-source-6.12 (/usr/src/linux-source-6.12.tar.xz), installed with
# apt-get when missing, together with the few tools this needs (gcc make libc6-dev
# xz-utils patch rsync); `apt-get update` runs only when apt has no candidate for one of
# them or the install fails. Only what the selftest needs is extracted from the tarball
# (its Makefile, scripts/, the uapi headers and what `make headers_install` builds, the
# selftest directory, kselftest*.h and drivers/iommu/iommufd/iommufd_test.h); nothing of
# the kernel is copied into the repository.
#
# Output, all under $CONFORMANCE_BUILD (default: <repo>/build/conformance, git-ignored):
#   linux-source-6.12/    the extracted subset        (redone when the tarball changes)
#   hdr/include/          make headers_install        (redone when the tarball changes)
#   selftest-src/         the selftest with the compat patch applied
#   bin/iommufd           the selftest + ../shared/oracle/selftest-6.12.y-compat.patch
#   bin/iommufd.asis      the selftest as Debian ships it, made to compile with the same
#                         -D shims as the oracle (no behaviour change)
#   build-info.json       source version and the time each step took in this run
#                         (0 and "cached" when it was not redone)
#
# Both binaries are dynamically linked: LD_PRELOAD (the emulator's shim) does nothing
# for a static binary. iommufd_fail_nth is not built: see conformance/README.md.
#
# Env: CONFORMANCE_BUILD (output directory), IOMMUFD_COMPAT_PATCH (the compat patch;
#      default <repo>/../shared/oracle/selftest-6.12.y-compat.patch).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=${CONFORMANCE_BUILD:-$REPO/build/conformance}
PKG=linux-source-6.12
TARBALL=${CONFORMANCE_TARBALL:-/usr/src/$PKG.tar.xz}
PATCH_FILE=${IOMMUFD_COMPAT_PATCH:-$REPO/../shared/oracle/selftest-6.12.y-compat.patch}

log() { printf '[conformance/build] %s\n' "$*" >&2; }
die() { printf '[conformance/build] error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec 9>>"$OUT/.lock"
flock 9 # one build at a time per output directory

# ---- 0. packages -----------------------------------------------------------------
pkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
apt_install() {
	local sudo=() p upd=0 alog=$OUT/apt.log
	[ $# -gt 0 ] || return 0
	command -v apt-get >/dev/null 2>&1 || die "missing: $*; install them (no apt-get on this system)"
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null 2>&1 || die "missing: $*; run as root or: apt-get install $*"
		sudo=(sudo)
	fi
	apt_get() {
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$alog" 2>&1 ||
			{ tail -n 30 "$alog" >&2; return 1; }
	}
	: >"$alog"
	for p; do
		case "$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: *//p')" in
		"" | "(none)") upd=1 ;;
		esac
	done
	if [ "$upd" = 1 ]; then
		log "apt-get update (log: $alog)"
		apt_get update || die "apt-get update failed"
	fi
	log "apt-get install -y --no-install-recommends $* (log: $alog)"
	if ! apt_get install -y --no-install-recommends "$@"; then
		[ "$upd" = 0 ] || die "apt-get install failed"
		log "apt-get install failed; retrying after apt-get update"
		apt_get update || die "apt-get update failed"
		apt_get install -y --no-install-recommends "$@" || die "apt-get install failed"
	fi
}
t=$(now)
t_packages=0
need=()
if command -v dpkg-query >/dev/null 2>&1; then
	# gcc make libc6-dev: compile; xz-utils: the tarball; patch: the compat patch;
	# rsync: make headers_install.
	for p in gcc make libc6-dev xz-utils patch rsync; do
		pkg_installed "$p" || need+=("$p")
	done
	[ -f "$TARBALL" ] || need+=("$PKG")
	if [ ${#need[@]} -gt 0 ]; then
		apt_install "${need[@]}"
		t_packages=$(since "$t")
	fi
else
	log "note: not a Debian system; assuming gcc, make, xz, patch, rsync and $TARBALL are present"
fi
[ -f "$TARBALL" ] || die "$TARBALL missing (apt-get install $PKG)"
[ -f "$PATCH_FILE" ] || die "compat patch not found: $PATCH_FILE (set IOMMUFD_COMPAT_PATCH)"

# ---- 1. extract the subset the selftest needs --------------------------------------------
# The cache key is the package version and the tarball's size and mtime.
tar_id="$(dpkg-query -W -f='${Version}' "$PKG" 2>/dev/null || echo unknown) $(stat -c '%s %Y' "$TARBALL")"
SRC=$OUT/$PKG
HDR=$OUT/hdr
t_extract=0 t_headers=0 t_compile=0
if [ "$(cat "$OUT/source.id" 2>/dev/null)" != "$tar_id" ] || [ ! -f "$SRC/Makefile" ]; then
	log "extracting the selftest, kselftest headers, iommufd_test.h and what headers_install needs"
	log "  from $TARBALL ($tar_id); xz must decompress the whole 150 MB tarball, ~20 s, once"
	t=$(now)
	rm -rf "$SRC" "$HDR" "$OUT/kobj" "$OUT/source.id" "$OUT/.extract"
	mkdir "$OUT/.extract"
	tar -C "$OUT/.extract" -xJf "$TARBALL" --wildcards \
		"$PKG/Makefile" "$PKG/scripts" "$PKG/include/uapi" \
		"$PKG/arch/x86/Makefile*" "$PKG/arch/x86/include/uapi" \
		"$PKG/arch/x86/entry/syscalls" "$PKG/arch/x86/tools" \
		"$PKG/tools/include" "$PKG/tools/arch/x86/include" \
		"$PKG/tools/testing/selftests/iommu" "$PKG/tools/testing/selftests/kselftest*" \
		"$PKG/drivers/iommu/iommufd/iommufd_test.h"
	[ -f "$OUT/.extract/$PKG/Makefile" ] || die "$TARBALL has no $PKG/Makefile"
	mv "$OUT/.extract/$PKG" "$SRC"
	rmdir "$OUT/.extract"
	echo "$tar_id" >"$OUT/source.id"
	t_extract=$(since "$t")
	log "extracted in ${t_extract} s ($(du -sh "$SRC" | cut -f1))"
fi
KVER=$(make -s -C "$SRC" kernelversion 2>/dev/null || echo unknown)

# ---- 2. uapi headers ------------------------------------------------------------------
if [ "$(cat "$HDR/.id" 2>/dev/null)" != "$tar_id" ] || [ ! -f "$HDR/include/linux/iommufd.h" ]; then
	log "make headers_install ($KVER)"
	t=$(now)
	rm -rf "$HDR" "$OUT/kobj"
	if ! make -s -C "$SRC" O="$OUT/kobj" INSTALL_HDR_PATH="$HDR" headers_install >"$OUT/headers.log" 2>&1; then
		tail -n 30 "$OUT/headers.log" >&2
		die "make headers_install failed (log: $OUT/headers.log)"
	fi
	[ -f "$HDR/include/linux/iommufd.h" ] || die "headers_install produced no linux/iommufd.h"
	echo "$tar_id" >"$HDR/.id"
	t_headers=$(since "$t")
	log "headers installed in ${t_headers} s"
fi

# ---- 3. selftest sources (the oracle's layout: iommufd_utils.h includes
#         ../../../../drivers/iommu/iommufd/iommufd_test.h) ---------------------------------
ST=$OUT/selftest-src
NEW=$OUT/.selftest-src.new
rm -rf "$NEW"
mkdir -p "$NEW/tools/testing/selftests/iommu" "$NEW/drivers/iommu/iommufd"
cp "$SRC"/tools/testing/selftests/{kselftest_harness.h,kselftest.h} "$NEW/tools/testing/selftests/"
cp "$SRC"/tools/testing/selftests/iommu/* "$NEW/tools/testing/selftests/iommu/"
cp "$SRC/drivers/iommu/iommufd/iommufd_test.h" "$NEW/drivers/iommu/iommufd/"
skew=0
if grep -q IOMMU_HW_INFO_FLAG_INPUT_TYPE "$NEW/tools/testing/selftests/iommu/iommufd_utils.h" &&
	! grep -q IOMMU_HW_INFO_FLAG_INPUT_TYPE "$HDR/include/linux/iommufd.h"; then
	skew=1
	patch -s -d "$NEW" -p1 <"$PATCH_FILE" || die "$PATCH_FILE does not apply to $SRC"
fi
if [ -d "$ST" ] && diff -rq "$ST" "$NEW" >/dev/null 2>&1; then
	rm -rf "$NEW"
else
	rm -rf "$ST"
	mv "$NEW" "$ST"
fi

# ---- 4. compile (dynamically linked) ------------------------------------------------------
CFLAGS=(-Wall -O2 -Wno-unused-function -D_GNU_SOURCE= -isystem "$HDR/include")
ASIS_FLAGS=(-Din_data_type=out_data_type -DIOMMU_HW_INFO_TYPE_DEFAULT=0
	-DIOMMU_HW_INFO_FLAG_INPUT_TYPE=1 -DMOCK_FLAGS_DEVICE_PASID=4 -DMOCK_PASID_WIDTH=20)
BIN=$OUT/bin
st_id=$({
	echo "${CFLAGS[*]} ${ASIS_FLAGS[*]} skew=$skew"
	gcc -dumpfullversion
	find "$ST" "$HDR/include" "$SRC/tools/testing/selftests/iommu" -type f -print0 |
		LC_ALL=C sort -z | xargs -0 sha256sum
} | sha256sum | cut -d' ' -f1)
cached_compile=1
if [ "$(cat "$BIN/.inputs" 2>/dev/null)" != "$st_id" ] || [ ! -x "$BIN/iommufd" ] || [ ! -x "$BIN/iommufd.asis" ]; then
	cached_compile=0
	log "compiling iommufd and iommufd.asis (dynamically linked)"
	t=$(now)
	mkdir -p "$BIN"
	rm -f "$BIN/.inputs"
	gcc "${CFLAGS[@]}" "$ST/tools/testing/selftests/iommu/iommufd.c" -o "$BIN/.iommufd.tmp"
	if [ "$skew" = 1 ]; then
		# The as-is source has to be next to the unpatched headers it includes.
		gcc "${CFLAGS[@]}" "${ASIS_FLAGS[@]}" "$SRC/tools/testing/selftests/iommu/iommufd.c" \
			-o "$BIN/.iommufd.asis.tmp"
	else
		cp "$BIN/.iommufd.tmp" "$BIN/.iommufd.asis.tmp" # nothing to patch: the same program
	fi
	for b in iommufd iommufd.asis; do
		# LD_PRELOAD needs a dynamic executable (one with a program interpreter).
		LC_ALL=C readelf -l "$BIN/.$b.tmp" | grep -q 'Requesting program interpreter' ||
			die "$b is not dynamically linked"
		mv -f "$BIN/.$b.tmp" "$BIN/$b"
	done
	echo "$st_id" >"$BIN/.inputs"
	t_compile=$(since "$t")
	log "compiled in ${t_compile} s"
fi

cat >"$OUT/build-info.json" <<EOF
{
  "kernel": "$KVER",
  "source": "$PKG $tar_id",
  "compatPatchApplied": $([ "$skew" = 1 ] && echo true || echo false),
  "seconds": { "packages": $t_packages, "extract": $t_extract, "headers": $t_headers, "compile": $t_compile },
  "cached": { "extract": $([ "$t_extract" = 0 ] && echo true || echo false), "headers": $([ "$t_headers" = 0 ] && echo true || echo false), "compile": $([ "$cached_compile" = 1 ] && echo true || echo false) },
  "binaries": { "iommufd": "$BIN/iommufd", "iommufd.asis": "$BIN/iommufd.asis" }
}
EOF
log "Linux $KVER selftest ready: $BIN/iommufd, $BIN/iommufd.asis"
