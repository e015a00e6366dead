#!/bin/sh
# GGUF files end to end: duet-mkmodel --gguf writes them, duet-model-info reads them (shape,
# types, a malformed file's message), and duet-run serves them: a Q4_0 GGUF draft for a
# safetensors target of the same vocabulary gives, greedy, exactly the target's plain output
# (requests sorted: they may finish in another order);
# an F32 GGUF target gives the output of the folder it was written from (Llama, Qwen2, Qwen3,
# written as general.architecture llama / qwen2 / qwen3); a text prompt uses the tokenizer.json
# beside a GGUF file.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
run="$top_builddir/tools/duet-run"
mk="$top_builddir/tools/duet-mkmodel"
info="$top_builddir/tools/duet-model-info"
[ -e "$top_builddir/cpu_worker/.libs/duet_cpu_worker.so" ] ||
    { echo "gguf_check: SKIP without the CPU worker"; exit 77; }
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
export DUET_PLUGIN_PATH="$top_builddir/cpu_worker/.libs"
fail() { echo "gguf_check: FAIL: $*"; exit 1; }

"$mk" --out "$tmp/t" --arch llama --hidden 64 --layers 3 --heads 4 --kv-heads 2 \
    --intermediate 128 --vocab 300 --max-positions 256 --dtype f32 --gguf f32 --quiet &&
    "$mk" --out "$tmp/d" --draft-of "$tmp/t" --layers 2 --noise 0.02 --gguf q4_0 --quiet ||
    exit 99

"$info" "$tmp/d/model.gguf" >"$tmp/info" || fail "duet-model-info refused the Q4_0 draft"
grep -q "^layers: *2$" "$tmp/info" && grep -q "self_attn.q_proj.weight *Q4_0" "$tmp/info" &&
    grep -q "model.norm.weight *F32" "$tmp/info" || fail "duet-model-info: $(cat "$tmp/info")"
head -c 1000 "$tmp/d/model.gguf" >"$tmp/cut.gguf"
"$info" "$tmp/cut.gguf" >/dev/null 2>"$tmp/err" && fail "a truncated GGUF file was accepted"
grep -q "cut.gguf: .*truncated" "$tmp/err" || fail "truncated: $(cat "$tmp/err")"
"$mk" --out "$tmp/x" --arch llama --hidden 64 --layers 1 --heads 4 --intermediate 128 \
    --vocab 300 --gguf q5_1 --quiet 2>/dev/null
[ $? -eq 2 ] || fail "--gguf q5_1 is not a usage error"

printf '1,5,9,33,70\n3,40,90,7,8,9,10\n' >"$tmp/prompts"
serve() { # config lines, then the output file
    printf '%s\n' "$1" >"$tmp/c.cfg"
    "$run" --config "$tmp/c.cfg" --prompts "$tmp/prompts" --max-tokens 24 --ignore-eos --json \
        2>"$tmp/err" | grep '"ids"' |
        sed 's/.*"request": \([0-9]*\),.*"ids": \(\[[^]]*\]\).*/\1 \2/' | sort -n >"$2" ||
        fail "duet-run: $(cat "$tmp/err")"
    [ -s "$2" ] || fail "duet-run printed no ids: $(cat "$tmp/err")"
}
serve "model = \"$tmp/t\"; target: { worker = \"cpu\"; threads = 2; };" "$tmp/plain"
serve "model = \"$tmp/t\"; target: { worker = \"cpu\"; threads = 2; };
speculative: { draft_model = \"$tmp/d/model.gguf\"; worker = \"cpu\"; num_tokens = 4; };" \
    "$tmp/spec"
cmp -s "$tmp/plain" "$tmp/spec" || fail "Q4_0 GGUF draft changed the greedy output"
serve "model = \"$tmp/t/model.gguf\"; target: { worker = \"cpu\"; threads = 2; };" "$tmp/gguf"
cmp -s "$tmp/plain" "$tmp/gguf" || fail "the F32 GGUF target differs from its folder"
# qwen2 / qwen3: written under their own architecture, served as their folders
for a in qwen2 qwen3; do
    "$mk" --out "$tmp/$a" --arch $a --hidden 64 --layers 2 --heads 4 --kv-heads 2 \
        --intermediate 128 --vocab 300 --max-positions 256 --dtype f32 --gguf f32 --quiet ||
        fail "duet-mkmodel --arch $a --gguf f32"
    "$info" "$tmp/$a/model.gguf" >"$tmp/info" || fail "duet-model-info refused the $a file"
    grep -q "^architecture: *Qwen${a#qwen}ForCausalLM" "$tmp/info" ||
        fail "$a: $(head -3 "$tmp/info")"
    serve "model = \"$tmp/$a\"; target: { worker = \"cpu\"; threads = 2; };" "$tmp/$a.plain"
    serve "model = \"$tmp/$a/model.gguf\"; target: { worker = \"cpu\"; threads = 2; };" \
        "$tmp/$a.gguf"
    cmp -s "$tmp/$a.plain" "$tmp/$a.gguf" || fail "the F32 $a GGUF target differs from its folder"
done
"$mk" --out "$tmp/w" --arch qwen2 --hidden 64 --layers 1 --heads 4 --intermediate 128 \
    --vocab 300 --sliding-window 8 --gguf f32 --quiet 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "sliding window" "$tmp/err" ||
    fail "a windowed qwen2 written as GGUF: $(cat "$tmp/err")"
# text: the tokenizer.json beside a GGUF file is the model's tokenizer
tok="${DUET_TEST_SRCDIR:-.}/tests/fixtures/tokenizers/bytelevel"
[ -f "$tok/tokenizer.json" ] || fail "no tokenizer fixture at $tok"
"$mk" --out "$tmp/tk" --arch llama --hidden 64 --layers 1 --heads 4 --intermediate 128 \
    --tokenizer "$tok" --dtype f32 --gguf q8_0 --quiet || exit 99
printf '%s\n' "model = \"$tmp/tk/model.gguf\"; target: { worker = \"cpu\"; threads = 2; };" \
    >"$tmp/c.cfg"
"$run" --config "$tmp/c.cfg" --prompt "Hello world" --max-tokens 4 --ignore-eos --json \
    >"$tmp/out" 2>"$tmp/err" || fail "a text prompt on a GGUF file: $(cat "$tmp/err")"
grep -q '"text": ' "$tmp/out" || fail "no text for a GGUF file: $(cat "$tmp/out")"
echo "gguf_check: PASS ($(wc -l <"$tmp/plain") requests, speculative and GGUF outputs identical," \
    "qwen2 / qwen3 GGUF outputs identical)"
