#!/usr/bin/env bash
# Run oracle scenarios on the real kernel and store their transcripts.
#
#   tools/oracle/run.sh [-j N] [--keep] [--check] SCENARIO...   (names or paths; default: all)
#
# For each scenario: tools/oracle/gen-c.ts writes a C program, the oracle's run-in-vm.sh compiles
# and runs it in a fresh 6.12 VM, and its output becomes test/oracle/transcripts/<name>.txt, whose
# first line records the kernel, the date and the command. Runs go in parallel (-j, default 4).
# --check: do not write; diff the new output against the stored transcript (exit 1 on a change).
# --keep: keep the generated C files and raw outputs in .tmp/oracle/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
oracle=${IOMMUFD_ORACLE_SCRIPTS:-$repo/../shared/oracle}
[ -x "$oracle/run-in-vm.sh" ] || oracle=/work/shared/oracle
jobs=4 keep=0 check=0
names=()
while [ $# -gt 0 ]; do
  case "$1" in
    -j) jobs=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --check) check=1; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) names+=("$1"); shift ;;
  esac
done
if [ ${#names[@]} -eq 0 ]; then
  for f in "$repo"/test/oracle/scenarios/*.json; do names+=("$f"); done
fi
work=$repo/.tmp/oracle
mkdir -p "$work"
cd "$repo"

run_one() {
  local arg=$1 name path
  name=$(basename "$arg" .json)
  path=test/oracle/scenarios/$name.json
  [ -f "$path" ] || { echo "$name: no $path" >&2; return 1; }
  local c=$work/$name.c out=$work/$name.out err=$work/$name.err
  npx --no-install tsx tools/oracle/gen-c.ts "$path" > "$c" 2> "$work/$name.gen.err" || { echo "$name: gen-c failed" >&2; cat "$work/$name.gen.err" >&2; return 1; }
  local rc=0 try
  # exit 125 = the VM ended without a status (e.g. an early boot panic of TCG under load): retry
  for try in 1 2 3; do
    rc=0
    "$oracle/run-in-vm.sh" "$c" > "$out" 2> "$err" || rc=$?
    [ $rc -eq 125 ] || break
    echo "$name: VM gave no status (attempt $try), retrying" >&2
  done
  if [ $rc -ne 0 ]; then
    echo "$name: run-in-vm.sh exit $rc" >&2; cat "$err" >&2; return 1
  fi
  local warn
  warn=$(sed -n 's/.*kernel_warnings=\([0-9]*\).*/\1/p' "$err" | tail -1)
  if [ "${warn:-0}" != 0 ]; then echo "$name: kernel_warnings=$warn" >&2; cat "$err" >&2; fi
  local kernel
  kernel=$(sed -n 's/^# kernel: //p' "$out" | head -1)
  local tx=test/oracle/transcripts/$name.txt new=$work/$name.txt
  {
    echo "# oracle: $kernel, $(date -u +%Y-%m-%dT%H:%M:%SZ), command: tools/oracle/run.sh $path (= npx tsx tools/oracle/gen-c.ts $path > $name.c && run-in-vm.sh $name.c)"
    grep -v '^# kernel: ' "$out"
  } > "$new"
  if [ $check -eq 1 ]; then
    if diff <(grep -v '^#' "$tx") <(grep -v '^#' "$new") > "$work/$name.diff"; then echo "$name: same"
    else echo "$name: CHANGED"; cat "$work/$name.diff"; return 1; fi
  else
    cp "$new" "$tx"
    echo "$name: $(grep -vc '^#' "$tx") lines"
  fi
  [ $keep -eq 1 ] || rm -f "$c" "$out" "$err" "$new" "$work/$name.gen.err"
}

rm -f "$work"/*.failed
for n in "${names[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  ( run_one "$n" || touch "$work/$(basename "$n" .json).failed" ) &
done
wait
if ls "$work"/*.failed > /dev/null 2>&1; then
  echo "failed: $(cd "$work" && ls *.failed | sed 's/\.failed$//' | tr '\n' ' ')" >&2
  exit 1
fi
