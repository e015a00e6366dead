#!/bin/sh
# Records the CPU worker benchmark: runs duet-bench with the budgets docs/performance.md quotes
# and writes bench/results/cpu-worker-DATE.json. Run from a build directory where the CPU worker
# is built (make cpu_worker/duet_cpu_worker.la); the models are generated once into
# ./bench-models (about 2.4 GB: llama-68m and tinyllama-1.1b in bf16) and reused:
#   sh ../bench/run-cpu-worker.sh
# Other machines or loads give other numbers: compare the figures of one run only.
set -eu
srcdir=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$srcdir/bench/results"
out="$srcdir/bench/results/cpu-worker-$(date +%Y%m%d).json"
./tools/duet-bench --seconds 4 --repeats 5 cpu-worker >"$out" ||
    { echo "duet-bench failed (exit $?); partial output in $out" >&2; exit 1; }
cat "$out"
echo "written: $out" >&2
