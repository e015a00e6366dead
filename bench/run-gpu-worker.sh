#!/bin/sh
# Records the GPU worker benchmark (docs/performance.md, "GPU worker"): builds nothing. Run from a
# build directory configured with CUDA where the GPU worker is built (make tools/duet-bench
# gpu_worker/duet_gpu_worker.la), on a machine with the GPU:
#   sh ../bench/run-gpu-worker.sh
# It prints nvidia-smi's device and driver line, runs duet-bench gpu-worker (llama-2-7b in bf16,
# decode at batch 1, 8, 32, a 512-token prefill, the device-to-device copy bandwidth before and
# after) on the model generated into ./bench-models/llama-2-7b-bf16 (13.5 GB, reused later), then
# bench/torch_llama.py (PyTorch eager) on the same folder and shapes, and writes all of it to
# bench/results/gpu-worker-DATE.json: {"nvidia_smi": ..., "duet": <duet-bench's JSON>, "torch":
# [<one object per result>], "torch_status": <exit status>}. Exits 77 when duet-bench skips (no
# CUDA build or no device).
# Environment: DUET_BENCH_MODELS (default bench-models), DUET_BENCH_ARGS (extra duet-bench
# options), PYTHON (default python3).
set -eu
srcdir=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$srcdir/bench/results"
out="$srcdir/bench/results/gpu-worker-$(date +%Y%m%d).json"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/duet-gpu-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
smi=$(nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id --format=csv,noheader \
    2>/dev/null || echo "nvidia-smi not available")
echo "nvidia-smi: $smi" >&2
models=${DUET_BENCH_MODELS:-bench-models}
status=0
# shellcheck disable=SC2086
./tools/duet-bench --seconds 4 --repeats 5 --models "$models" ${DUET_BENCH_ARGS:-} gpu-worker >"$tmp/duet.json" ||
    status=$?
if [ "$status" -ne 0 ]; then
    echo "duet-bench gpu-worker exited $status" >&2
    exit "$status"
fi
tstatus=0
"${PYTHON:-python3}" "$srcdir/bench/torch_llama.py" --model "$models/llama-2-7b-bf16" \
    --preset llama-2-7b --dtype bf16 --batch 1,8,32 --prompt-len 512 --context 128 \
    --seconds 4 --repeats 5 >"$tmp/torch.jsonl" || tstatus=$?
[ "$tstatus" -eq 0 ] || echo "torch_llama.py exited $tstatus" >&2
"${PYTHON:-python3}" - "$tmp/duet.json" "$tmp/torch.jsonl" "$tstatus" "$smi" >"$out" <<'PY'
import json, sys
duet = json.load(open(sys.argv[1]))
torch = [json.loads(l) for l in open(sys.argv[2]) if l.strip().startswith("{")]
json.dump({"nvidia_smi": sys.argv[4], "duet": duet, "torch": torch,
           "torch_status": int(sys.argv[3])}, sys.stdout, indent=2)
print()
PY
cat "$out"
echo "written: $out" >&2
