#!/bin/sh
# Records the overlap benchmark (a CPU draft beside a modelled GPU target): runs duet-bench with
# the settings docs/performance.md quotes, one batch group at a time under /work/bench.lock where
# that lock exists (each group under 3 minutes), and writes bench/results/overlap-DATE.json.
# Run from a build directory where the CPU worker and bench/duet_modelled_worker.la are built
# (make); the llama-68m draft and the 64-wide target are generated once into ./bench-models:
#   sh ../bench/run-overlap.sh [ACCEPTANCE]      (projected by default; synthetic, real)
# Other machines or loads give other numbers: compare the figures of one run only.
set -eu
srcdir=$(cd "$(dirname "$0")/.." && pwd)
acceptance=${1:-projected}
mkdir -p "$srcdir/bench/results"
out="$srcdir/bench/results/overlap-$(date +%Y%m%d).json"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-overlap.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
lock=
[ -w /work/bench.lock ] && lock="flock /work/bench.lock"
i=0
for b in 1,2 4,8 16 32; do
    i=$((i + 1))
    echo "batch $b: $(uptime)" >&2
    $lock ./tools/duet-bench --repeats 3 --max-tokens 32 --models bench-models \
        --acceptance "$acceptance" --batch "$b" overlap >"$tmp/$i.json" ||
        { echo "duet-bench failed (exit $?) at batch $b" >&2; exit 1; }
done
python3 - "$tmp"/*.json >"$out" <<'PY'
import json, sys
runs = [json.load(open(f)) for f in sys.argv[1:]]
merged = runs[0]
merged["results"] = [r for run in runs for r in run["results"]]
json.dump(merged, sys.stdout, indent=2)
print()
PY
echo "written: $out ($(uptime))" >&2
