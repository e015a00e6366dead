#!/bin/sh
# Records the scoring cost curve: runs duet-bench score with the budgets docs/performance.md
# quotes ("Scoring cost curve") and writes bench/results/score-DATE.json (a line per precision
# goes to stderr). Run from a build directory where the CPU worker is built, with the generated
# models in bench-models (made on first use):
#   sh ../bench/run-score.sh
# One thread: on a shared 2-core machine a 2-thread step waits at every barrier for whichever
# thread the neighbours preempted. Compare the ratios of one run only.
set -eu
srcdir=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$srcdir/bench/results"
out="$srcdir/bench/results/score-$(date +%Y%m%d).json"
./tools/duet-bench --seconds 1 --repeats 5 --threads 1 --preset tinyllama-1.1b,llama-68m \
    --dtype f32,bf16,f16,int8,int4 score >"$out" ||
    { echo "duet-bench failed (exit $?); partial output in $out" >&2; exit 1; }
cat "$out"
echo "written: $out" >&2
