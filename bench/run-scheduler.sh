#!/bin/sh
# Records the scheduler benchmark: runs duet-bench with the budgets docs/performance.md quotes
# and writes bench/results/scheduler-DATE.json. Run from a build directory:
#   sh ../bench/run-scheduler.sh
set -eu
srcdir=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$srcdir/bench/results"
out="$srcdir/bench/results/scheduler-$(date +%Y%m%d).json"
./tools/duet-bench --seconds 2 --repeats 7 scheduler >"$out" ||
    { echo "duet-bench failed (exit $?); partial output in $out" >&2; exit 1; }
cat "$out"
echo "written: $out" >&2
