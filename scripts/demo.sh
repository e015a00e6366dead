#!/bin/sh
# The main job on a fresh Debian 12 machine: install what is needed, build, generate a
# llama-160m-shaped target and a derived 1-layer draft (duet-mkmodel), validate the draft
# (duet-model-info), then decode the same prompt on the CPU worker twice, with speculative
# decoding and without (duet-run --json; the greedy outputs are identical), and print the
# speed-up and the acceptance rate. Last, duet-bench times the CPU worker's prefill
# and decode of the llama-68m shape against the machine's memory bandwidth.
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
./tools/duet-model-info models/llama-160m-draft | sed -n '1,16p'
export DUET_PLUGIN_PATH="$PWD/cpu_worker/.libs"
prompts="1,450,4996,17354,1701,432,17204,975,278,17366,11203"
# tokens/s of a run: the summary line of duet-run --json (its last line).
rate() { sed -n 's/.*"tokens_per_s": \([0-9.]*\).*/\1/p' "$1" | tail -n 1; }
echo "== speculative decoding: llama-160m shape, a 1-layer draft proposing 4 tokens a step"
./tools/duet-run --config ../examples/cpu-llama-160m-speculative.cfg --prompt-ids "$prompts" \
    --max-tokens 128 --temperature 0 --ignore-eos --json | tee spec.json
echo "== the same target alone (--no-speculative)"
./tools/duet-run --config ../examples/cpu-llama-160m-speculative.cfg --no-speculative \
    --prompt-ids "$prompts" --max-tokens 128 --temperature 0 --ignore-eos --json | tee plain.json
same=no
ids() { sed -n '1s/.*"ids": \[\([^]]*\)\].*/\1/p' "$1"; }
[ -n "$(ids spec.json)" ] && [ "$(ids spec.json)" = "$(ids plain.json)" ] && same=yes
echo "speed-up of speculative decoding: $(awk -v s="$(rate spec.json)" -v p="$(rate plain.json)" \
    'BEGIN { printf "%.2f", s / p }')x, acceptance rate \
$(sed -n 's/.*"acceptance_rate": \([0-9.]*\).*/\1/p' spec.json), identical tokens: $same"
./tools/duet-bench --seconds 0.5 --repeats 3 --preset llama-68m --dtype f32 --batch 1,4 \
    --models models cpu-worker
