#!/bin/sh
# Records the block manager benchmark: runs duet-bench with the budgets docs/performance.md
# quotes and writes bench/results/block-manager-DATE.json. Run from a build directory:
#   sh ../bench/run-block-manager.sh
set -eu
srcdir=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$srcdir/bench/results"
out="$srcdir/bench/results/block-manager-$(date +%Y%m%d).json"
./tools/duet-bench --seconds 2 --repeats 7 block-manager >"$out" ||
    { echo "duet-bench failed (exit $?); partial output in $out" >&2; exit 1; }
cat "$out"
echo "written: $out" >&2
