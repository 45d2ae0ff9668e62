#!/usr/bin/env bash
# Regenerate conformance/expected/*.verdicts from the real kernel (the oracle VM).
#
#   conformance/update-expected.sh [RESULTS_DIR]
#
# Runs ../shared/oracle/run-selftests.sh --asis RESULTS_DIR (Linux 6.12.117 in qemu, ~30 s
# after the oracle's one-time build) and writes, for iommufd, iommufd.asis and
# iommufd_fail_nth, the sorted verdict list with a header saying how it was produced. The
# header keeps the oracle's "[run-in-vm]" line: its vm_wall_s (boot to power-off) is what
# `npm run conformance` prints next to the emulator's wall time.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ORACLE_DIR=${IOMMUFD_ORACLE_SCRIPTS:-$REPO/../shared/oracle}
RES=${1:-$(mktemp -d)}
mkdir -p "$RES"
RES=$(cd "$RES" && pwd)

"$ORACLE_DIR/run-selftests.sh" --asis "$RES" >/dev/null ||
	{ echo "update-expected: run-selftests.sh failed (see $RES/summary.txt)" >&2; exit 1; }

version=$(cat "${IOMMUFD_ORACLE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/iommufd-oracle}/VERSION" 2>/dev/null || echo "Linux 6.12 (version file not found)")
mkdir -p "$HERE/expected"
for t in iommufd iommufd.asis iommufd_fail_nth; do
	case $t in
	iommufd) what="the upstream selftest with ../shared/oracle/selftest-6.12.y-compat.patch" ;;
	iommufd.asis) what="the upstream selftest as Debian ships it, compiled with the oracle's -D shims only" ;;
	iommufd_fail_nth) what="iommufd_fail_nth (kept for reference: not run under the emulator, see conformance/README.md)" ;;
	esac
	vm=$(sed -n 's/^\[run-in-vm\] //p' "$RES/$t.err" | tail -1)
	totals=$(grep -E '^# Totals:' "$RES/$t.tap" | tail -1)
	{
		echo "# Expected verdicts: $what,"
		echo "# on the real kernel: $version."
		echo "# Produced by conformance/update-expected.sh, i.e. ../shared/oracle/run-selftests.sh --asis DIR"
		echo "# (this is DIR/$t.verdicts) on $(date -u +%Y-%m-%d), $(nproc) host CPUs, qemu TCG guest with"
		echo "# 2 vCPUs, 2 GiB and 128 x 2 MiB huge pages. Do not edit by hand."
		echo "# oracle: $vm"
		echo "$totals"
		cat "$RES/$t.verdicts"
	} >"$HERE/expected/$t.verdicts"
	echo "expected/$t.verdicts: $totals ($vm)"
done
