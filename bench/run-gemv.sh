#!/bin/sh
# Records the GEMV kernel benchmark: runs duet-bench gemv with the budgets docs/performance.md
# quotes and writes bench/results/gemv-DATE.json (the human table goes to stderr). Run from a
# build directory where the CPU worker is built:
#   sh ../bench/run-gemv.sh
# Other machines or loads give other numbers: compare the figures of one run only.
set -eu
srcdir=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$srcdir/bench/results"
out="$srcdir/bench/results/gemv-$(date +%Y%m%d).json"
./tools/duet-bench --seconds 0.3 --repeats 7 gemv >"$out" ||
    { echo "duet-bench failed (exit $?); partial output in $out" >&2; exit 1; }
cat "$out"
echo "written: $out" >&2
