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
