#!/bin/sh
# duet-mkmodel and duet-model-info end to end: flags, exit codes and messages, a model written,
# sharded, derived, inspected and corrupted. Models go to a mktemp folder, removed at the end.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
mk="$top_builddir/tools/duet-mkmodel"
info="$top_builddir/tools/duet-model-info"
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

# expect NAME STATUS PATTERN COMMAND ARGS...: COMMAND exits with STATUS, prints PATTERN (grep -E)
expect() {
    name=$1 want=$2 pattern=$3
    shift 3
    "$@" >"$tmp/out" 2>&1
    got=$?
    if [ "$got" -eq "$want" ] && { [ -z "$pattern" ] || grep -Eq -- "$pattern" "$tmp/out"; }; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $name: exit $got (want $want), output:"
        sed 's/^/    /' "$tmp/out"
        echo "    (wanted /$pattern/)"
    fi
}

tiny="--arch llama --hidden 16 --layers 3 --heads 4 --kv-heads 2 --intermediate 24 --vocab 64"

expect "mkmodel help" 0 "^Usage: duet-mkmodel" "$mk" --help
expect "mkmodel version" 0 "^duet-mkmodel [0-9]" "$mk" --version
expect "mkmodel lists presets" 0 "^llama-2-7b +meta-llama/Llama-2-7b-hf" "$mk" --list-presets
expect "mkmodel needs --out" 2 "--out DIR is required" "$mk" --preset llama-68m
expect "mkmodel unknown preset" 2 "invalid value for --preset: 'llama-1t'" \
    "$mk" --preset llama-1t --out "$tmp/x"
expect "mkmodel unknown flag" 2 "Try 'duet-mkmodel --help'" "$mk" --frobnicate
expect "mkmodel needs a model" 2 "give --preset NAME, --arch with shapes, or --draft-of DIR" \
    "$mk" --out "$tmp/x"
expect "mkmodel explicit shapes incomplete" 2 "explicit shapes need --hidden" \
    "$mk" --arch llama --hidden 16 --out "$tmp/x"
expect "mkmodel tail scale power of two" 2 "invalid value for --tail-scale: '0.3'" \
    "$mk" $tiny --tail-from 1 --tail-scale 0.3 --out "$tmp/x"
expect "mkmodel tail flags go together" 2 "--tail-from N and --tail-scale S go together" \
    "$mk" $tiny --tail-from 1 --out "$tmp/x"
expect "mkmodel bad dtype" 2 "invalid value for --dtype: 'f8'" "$mk" $tiny --dtype f8 --out "$tmp/x"
expect "mkmodel bad shape" 2 "num_attention_heads 4 must be a non-zero multiple of" \
    "$mk" $tiny --kv-heads 3 --out "$tmp/x"
expect "mkmodel tail past the last layer" 2 "the tail starts at layer 3, past the last layer \(2\)" \
    "$mk" $tiny --tail-from 3 --tail-scale 0.5 --out "$tmp/x"
expect "mkmodel hidden not a multiple of heads" 2 "hidden size must be a multiple" \
    "$mk" $tiny --heads 5 --kv-heads 5 --out "$tmp/x"
expect "mkmodel noise needs a target" 2 "--noise and --draft-layers need --draft-of" \
    "$mk" $tiny --noise 0.1 --out "$tmp/x"

expect "mkmodel unknown arch" 2 "invalid value for --arch: 'gemma'" "$mk" --arch gemma --out "$tmp/x"
expect "mkmodel window needs a windowed arch" 2 "--sliding-window needs --arch mistral, qwen2 or qwen3" \
    "$mk" $tiny --sliding-window 8 --out "$tmp/x"
expect "mkmodel lists the qwen presets" 0 "^qwen3-0.6b +Qwen/Qwen3-0.6B +0.60B params  qwen3, 28 layers" \
    "$mk" --list-presets
qwen="--hidden 16 --layers 2 --heads 4 --kv-heads 2 --intermediate 24 --vocab 64"
expect "mkmodel writes qwen2" 0 "wrote $tmp/q2: Qwen2ForCausalLM, 2 layers, 27 tensors" \
    "$mk" --arch qwen2 $qwen --sliding-window 8 --out "$tmp/q2"
expect "model-info shows qwen2's biases and window" 0 "^attention: +q/k/v biases, sliding window$" \
    "$info" --no-tensors "$tmp/q2"
expect "mkmodel writes qwen3 with its own head_dim" 0 "wrote $tmp/q3: Qwen3ForCausalLM, 2 layers, 25 tensors" \
    "$mk" --arch qwen3 $qwen --head-dim 8 --out "$tmp/q3"
expect "model-info shows qwen3's head norms" 0 "^  model.layers.1.self_attn.k_norm.weight +BF16 +\[8\]" \
    "$info" "$tmp/q3"
expect "mkmodel derives a qwen3 draft" 0 "Qwen3ForCausalLM, 1 layers" \
    "$mk" --draft-of "$tmp/q3" --layers 1 --out "$tmp/q3d"

expect "mkmodel writes a model" 0 "wrote $tmp/t: LlamaForCausalLM, 3 layers, 30 tensors" \
    "$mk" $tiny --dtype f16 --seed 3 --out "$tmp/t"
expect "model-info prints the architecture" 0 "^heads: +4 \(kv heads 2, head_dim 4\)$" "$info" "$tmp/t"
expect "model-info prints the tensor table" 0 \
    "^  model.layers.2.mlp.down_proj.weight +F16 +\[16, 24\] +768  \[[0-9]+, [0-9]+\)  model.safetensors$" \
    "$info" "$tmp/t"
expect "model-info checks values" 0 "^valid: yes \(every value finite\)$" \
    "$info" --check-values --quiet "$tmp/t"
expect "model-info without tensors" 0 "^torch_dtype: +F16$" "$info" --no-tensors "$tmp/t"
expect "mkmodel refuses to overwrite" 2 "already holds a model; use --force to replace it" \
    "$mk" $tiny --out "$tmp/t"
expect "mkmodel shards with --force" 0 "wrote $tmp/t" \
    "$mk" $tiny --force --shard-size 1K --out "$tmp/t"
expect "model-info reads the shards" 0 "model-00002-of-000[0-9]+\.safetensors$" "$info" "$tmp/t"
expect "stale single file is gone" 1 "" test -e "$tmp/t/model.safetensors"

expect "draft needs --layers" 2 "--draft-of needs --layers N" "$mk" --draft-of "$tmp/t" --out "$tmp/d"
expect "draft takes no shapes" 2 "--draft-of takes its shapes from the target" \
    "$mk" --draft-of "$tmp/t" --layers 1 --hidden 8 --out "$tmp/d"
expect "draft has too many layers" 2 "a draft keeps 1 .. 3 layers of this target, not 4" \
    "$mk" --draft-of "$tmp/t" --layers 4 --out "$tmp/d"
expect "draft of a missing target" 1 "$tmp/none/config.json" \
    "$mk" --draft-of "$tmp/none" --layers 1 --out "$tmp/d"
expect "draft is written" 0 "wrote $tmp/d: LlamaForCausalLM, 1 layers" \
    "$mk" --draft-of "$tmp/t" --layers 1 --noise 0.1 --draft-layers spread --out "$tmp/d"
expect "draft records its origin" 0 "\"draft_of\": \"$tmp/t\"" cat "$tmp/d/config.json"

# --tokenizer: the vocabulary and the special ids come from the tokenizer, its files are copied
# (generation_config.json merged into the generated one), and a draft takes its target's.
srcdir=${DUET_TEST_SRCDIR:-.}
sp="$srcdir/tests/fixtures/tokenizers/sentencepiece"
bl="$srcdir/tests/fixtures/tokenizers/bytelevel"
notiny="--arch llama --hidden 16 --layers 3 --heads 4 --kv-heads 2 --intermediate 24"
expect "mkmodel takes the vocabulary from the tokenizer" 0 '"vocab_size": 270,' \
    sh -c "\"$mk\" $notiny --quiet --tokenizer \"$sp\" --out \"$tmp/tk\" && cat \"$tmp/tk/config.json\""
expect "and its BOS" 0 '"bos_token_id": 1,' cat "$tmp/tk/config.json"
expect "and its EOS" 0 '"eos_token_id": 2' cat "$tmp/tk/generation_config.json"
expect "tokenizer.json is copied" 0 "" cmp "$sp/tokenizer.json" "$tmp/tk/tokenizer.json"
expect "tokenizer_config.json is copied" 0 "" cmp "$sp/tokenizer_config.json" \
    "$tmp/tk/tokenizer_config.json"
expect "the model reads back" 0 "^vocab_size: +270$" "$info" --no-tensors "$tmp/tk"
mkdir "$tmp/bl" && cp "$bl"/* "$tmp/bl" || exit 99
printf '{"eos_token_id": [268, 267], "temperature": 0.25}\n' >"$tmp/bl/generation_config.json"
expect "a preset with a tokenizer" 0 "wrote $tmp/tb: LlamaForCausalLM, 2 layers" \
    "$mk" --preset llama-68m --hidden 64 --heads 4 --intermediate 96 --tokenizer "$tmp/bl" \
    --out "$tmp/tb"
expect "its EOS list" 0 '"eos_token_id": \[\s*268,\s*267\s*\]' \
    tr -d '\n' <"$tmp/tb/config.json"
expect "generation_config.json keeps the tokenizer's other keys" 0 '"temperature": 0.25' \
    cat "$tmp/tb/generation_config.json"
expect "and the generator's" 0 '"_from_model_config": true' cat "$tmp/tb/generation_config.json"
expect "a padded vocabulary with --vocab" 0 '"vocab_size": 300,' \
    sh -c "\"$mk\" $notiny --vocab 300 --quiet --tokenizer \"$sp\" --out \"$tmp/tp\" && cat \"$tmp/tp/config.json\""
expect "--vocab below the tokenizer's ids" 2 \
    "--vocab 100 is smaller than the 270 token ids of the tokenizer in .*sentencepiece" \
    "$mk" $notiny --vocab 100 --tokenizer "$sp" --out "$tmp/x"
expect "a tokenizer that does not load" 1 "--tokenizer $tmp/none: $tmp/none/tokenizer.json" \
    "$mk" $notiny --tokenizer "$tmp/none" --out "$tmp/x"
expect "nothing is written when it does not" 1 "" test -e "$tmp/x/config.json"
expect "a draft takes its target's tokenizer" 0 "" \
    "$mk" --draft-of "$tmp/tk" --layers 1 --quiet --out "$tmp/tkd"
expect "the draft's tokenizer.json" 0 "" cmp "$sp/tokenizer.json" "$tmp/tkd/tokenizer.json"
expect "the draft's tokenizer_config.json" 0 "" cmp "$sp/tokenizer_config.json" \
    "$tmp/tkd/tokenizer_config.json"
expect "the draft's vocabulary" 0 '"vocab_size": 270,' cat "$tmp/tkd/config.json"
expect "a draft gets no other tokenizer" 2 "--draft-of takes the target's tokenizer" \
    "$mk" --draft-of "$tmp/tk" --layers 1 --tokenizer "$bl" --out "$tmp/x"
expect "force replaces the tokenizer with the model" 0 "" \
    "$mk" $tiny --quiet --force --out "$tmp/tk"
expect "no stale tokenizer is left" 1 "" test -e "$tmp/tk/tokenizer.json"

expect "model-info needs one folder" 2 "give exactly one model folder" "$info"
expect "model-info on a missing folder" 1 "$tmp/none/config.json: No such file or directory" \
    "$info" "$tmp/none"

# Corrupt the dtype of model.norm.weight in the header: BF16 -> FF16.
"$mk" $tiny --quiet --out "$tmp/c"
offset=$(grep -boa '"model.norm.weight":{"dtype":"BF16"' "$tmp/c/model.safetensors" | cut -d: -f1)
printf 'F' | dd of="$tmp/c/model.safetensors" bs=1 seek=$((offset + 30)) conv=notrunc 2>/dev/null
expect "model-info names file and tensor" 1 \
    "$tmp/c/model.safetensors: tensor 'model.norm.weight': unknown dtype 'FF16'" "$info" "$tmp/c"
# Cut the file short: the header no longer fits.
head -c 100 "$tmp/d/model.safetensors" >"$tmp/short" && mv "$tmp/short" "$tmp/d/model.safetensors"
expect "model-info on a truncated file" 1 "model.safetensors: header length [0-9]+ is larger" \
    "$info" "$tmp/d"

echo "model tools: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
