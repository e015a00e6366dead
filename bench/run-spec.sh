#!/bin/sh
# Records the speculative decoding benchmark: runs duet-bench with the budgets
# docs/performance.md quotes and writes bench/results/spec-DATE.json. Run from a build directory
# where the CPU worker is built (make cpu_worker/duet_cpu_worker.la); the target (llama-160m with
# its layers from 1 on scaled by 1/64, about 330 MB) and its 1-layer draft are generated once into
# ./bench-models and reused:
#   sh ../bench/run-spec.sh
# One worker thread: on the shared 2-core machine a second thread waits for CPU time the other
# jobs hold, and the step times swing by ten times (docs/performance.md).
# Other machines or loads give other numbers: compare the figures of one run only.
set -eu
srcdir=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$srcdir/bench/results"
out="$srcdir/bench/results/spec-$(date +%Y%m%d).json"
./tools/duet-bench --seconds 6 --repeats 3 --threads 1 spec >"$out" ||
    { echo "duet-bench failed (exit $?); partial output in $out" >&2; exit 1; }
cat "$out"
echo "written: $out" >&2
