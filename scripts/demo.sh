#!/bin/sh
# The main job on a fresh Debian 12 machine: install what is needed, build, generate a
# llama-160m-shaped target and a derived 1-layer draft (duet-mkmodel), validate the draft
# (duet-model-info), then decode the same prompt on the CPU worker twice, with speculative
# decoding and without (duet-run --json; the greedy outputs are identical), and print the
# speed-up and the acceptance rate. Last, duet-bench times the CPU worker's prefill
# and decode of the llama-68m shape, f32 and bf16 weights, against the machine's memory
# bandwidth. Every step that fails ends the script with a non-zero status, and so do
# greedy outputs that differ.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
[ -x configure ] || ./autogen.sh
mkdir -p build
cd build
[ -f Makefile ] || ../configure
make -j"$(nproc)"
mkdir -p models
[ -f models/llama-160m/config.json ] ||
    ./tools/duet-mkmodel --preset llama-160m --tail-from 1 --tail-scale 0.0625 --out models/llama-160m
[ -f models/llama-160m-draft/config.json ] ||
    ./tools/duet-mkmodel --draft-of models/llama-160m --layers 1 --noise 0.02 \
    --out models/llama-160m-draft
fail() { echo "demo: $*" >&2; exit 1; }
./tools/duet-model-info models/llama-160m-draft >model-info.txt || fail "duet-model-info failed"
sed -n '1,16p' model-info.txt
export DUET_PLUGIN_PATH="$PWD/cpu_worker/.libs"
prompts="1,450,4996,17354,1701,432,17204,975,278,17366,11203"
cfg=../examples/cpu-llama-160m-speculative.cfg
# The configuration leaves dtype and weights at "auto": what the CPU worker picks here (bf16
# compute with AVX512-BF16 or AMX, bf16 weights computed in f32 elsewhere) is in --check.
./tools/duet-run --config "$cfg" --check >check.txt || { cat check.txt; fail "duet-run --check failed"; }
grep -E '^  details:' check.txt | head -n 1
# run NAME ARGS...: duet-run --json into NAME.json, shown; a failure ends the demo.
run() {
    name=$1
    shift
    ./tools/duet-run --config "$cfg" --prompt-ids "$prompts" --max-tokens 128 --temperature 0 \
        --ignore-eos --json "$@" >"$name.json" || fail "duet-run ($name) failed"
    cat "$name.json"
}
# field FILE KEY: a number of the summary line of duet-run --json (its last line).
field() { tail -n 1 "$1" | sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p"; }
ids() { sed -n '1s/.*"ids": \[\([^]]*\)\].*/\1/p' "$1"; }
echo "== speculative decoding: llama-160m shape, a 1-layer draft proposing 4 tokens a step"
run spec
echo "== the same target alone (--no-speculative)"
run plain --no-speculative
spec_rate=$(field spec.json tokens_per_s)
plain_rate=$(field plain.json tokens_per_s)
acceptance=$(field spec.json acceptance_rate)
[ -n "$spec_rate" ] && [ -n "$plain_rate" ] && [ -n "$acceptance" ] ||
    fail "no tokens_per_s or acceptance_rate in duet-run's summary"
[ -n "$(ids spec.json)" ] || fail "no generated ids"
same=no
[ "$(ids spec.json)" = "$(ids plain.json)" ] && same=yes
echo "speed-up of speculative decoding: $(awk -v s="$spec_rate" -v p="$plain_rate" \
    'BEGIN { printf "%.2f", s / p }')x, acceptance rate $acceptance, identical tokens: $same"
[ "$same" = yes ] || fail "greedy speculative decoding gave other tokens than the target alone"
./tools/duet-bench --seconds 0.5 --repeats 3 --preset llama-68m --dtype f32,bf16 --batch 1,4 \
    --models models cpu-worker
