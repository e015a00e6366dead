#!/bin/sh
# duet-tokenize end to end on the hand-written fixtures (tests/fixtures/tokenizers/): encoding,
# decoding, --chat with its options, --jsonl answering every line, bad input and bad usage with their exit statuses and
# messages. The comparison with Hugging Face on real tokenizers is tests/tokenizer_ref.sh.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
tool="$top_builddir/tools/duet-tokenize"
bl="$srcdir/tests/fixtures/tokenizers/bytelevel"
sp="$srcdir/tests/fixtures/tokenizers/sentencepiece"
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

# expect NAME STATUS PATTERN INPUT ARGS...: printf INPUT | duet-tokenize ARGS exits with STATUS
# and prints (stdout and stderr) something matching PATTERN (grep -E).
expect() {
    name=$1 want=$2 pattern=$3 input=$4
    shift 4
    printf "$input" | "$tool" "$@" >"$tmp/out" 2>&1
    got=$?
    if [ "$got" -eq "$want" ] && grep -Eq -- "$pattern" "$tmp/out"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $name: exit $got (want $want), output:"
        sed 's/^/    /' "$tmp/out"
        echo "    (wanted /$pattern/)"
    fi
}

expect "encodes text with BOS" 0 '^\{"ids":\[266,259,264\]\}$' 'hello world' --model "$bl"
expect "--no-special adds no BOS" 0 '^\{"ids":\[259,264\]\}$' 'hello world' -m "$bl" --no-special
expect "empty input" 0 '^\{"ids":\[266\]\}$' '' -m "$bl"
expect "invalid UTF-8 becomes U+FFFD" 0 '^\{"ids":\[97,239,191,189,98\]\}$' 'a\377b' -m "$bl" \
    --no-special
expect "a NUL byte is a character" 0 '^\{"ids":\[97,0,98\]\}$' 'a\000b' -m "$bl" --no-special
expect "decodes ids" 0 '^\{"text":"<\|bos\|>hello world"\}$' '[266, 259, 264]' -m "$bl" --decode
expect "--skip-special" 0 '^\{"text":"hello world"\}$' '[266,259,264]' -m "$bl" -d --skip-special
expect "SentencePiece decode" 0 '^\{"text":"<s> hello w"\}$' '[1,268,259,269]' -m "$sp" -d
expect "an id past the vocabulary" 1 'ids\[1\] is not a token id below 270' '[1, 270]' -m "$bl" -d
expect "decode input not an array" 1 'expected a JSON array of ids' '"hi"' -m "$bl" -d
expect "decode input not JSON" 1 'input is not JSON' '[1,' -m "$bl" -d
expect "--jsonl answers every line" 0 '^\{"ids":\[259\]\}$' '"hello"\n"world"\n' -m "$bl" --jsonl \
    --no-special
[ "$(printf '"a"\n\n"b"\n' | "$tool" -m "$bl" --jsonl | wc -l)" -eq 3 ] &&
    passed=$((passed + 1)) || { failed=$((failed + 1)); echo "FAIL: --jsonl line count"; }
expect "--jsonl bad line: an error line, exit 1" 1 '^\{"error":"expected a JSON string"\}$' \
    '"hello"\n42\n' -m "$bl" --jsonl
expect "--jsonl decode" 0 '^\{"text":"hello"\}$' '[259]\n' -m "$bl" --jsonl --decode
printf '{{ bos_token }}{%% for m in messages %%}{{ m.content }}{%% endfor %%}' >"$tmp/t.jinja"
printf '{{ x }}{%% if add_generation_prompt %%} G{%% endif %%}' >"$tmp/kw.jinja"
printf '{{ raise_exception("roles must alternate") }}' >"$tmp/raise.jinja"
user='[{"role": "user", "content": "hello world"}]'
expect "--chat without a template" 1 'no chat template' "$user" -m "$bl" --chat
expect "--chat: the prompt and its ids without added BOS" 0 \
    '^\{"prompt":"<\|bos\|>hello world","ids":\[266,259,264\]\}$' "$user" -m "$bl" --chat \
    --chat-template "$tmp/t.jinja"
expect "--chat-kwargs and the generation prompt" 0 '^\{"prompt":"hello G","ids":' "$user" -m "$bl" \
    --chat --chat-template "$tmp/kw.jinja" --chat-kwargs '{"x": "hello"}'
expect "--no-generation-prompt" 0 '^\{"prompt":"hello","ids":\[259\]\}$' "$user" -m "$bl" --chat \
    --chat-template "$tmp/kw.jinja" --chat-kwargs '{"x": "hello"}' --no-generation-prompt
expect "--chat --jsonl answers every line" 0 '^\{"prompt":"<\|bos\|>world","ids":\[266,[0-9,]*\]\}$' \
    "$user\n"'[{"role": "user", "content": "world"}]\n' -m "$bl" --chat --jsonl \
    --chat-template "$tmp/t.jinja"
expect "--chat: messages not an array" 1 'messages: not a JSON array' '{"role": "user"}' -m "$bl" \
    --chat --chat-template "$tmp/t.jinja"
expect "--chat: the template's raise_exception" 1 'chat template line 1: roles must alternate' \
    "$user" -m "$bl" --chat --chat-template "$tmp/raise.jinja"
expect "--chat-template missing" 1 'cannot read' "$user" -m "$bl" --chat --chat-template /nonexistent
expect "--chat with --decode" 2 'do not go together' "$user" -m "$bl" --chat --decode
# 10 MB inputs (the issue's bound) through Llama 3's split regex: random bytes (invalid UTF-8,
# NULs), one whitespace run, one word, one run of digits; each must encode whole.
split="$srcdir/tests/fixtures/tokenizers/split"
big() {
    name=$1 gen=$2
    sh -c "$gen" | head -c 10000000 >"$tmp/big"
    if "$tool" -m "$split" --no-special <"$tmp/big" >"$tmp/out" 2>&1 && grep -q '^{"ids":\[[0-9]' "$tmp/out"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: 10 MB of $name:"
        head -c 300 "$tmp/out" | sed 's/^/    /'
    fi
}
big "random bytes" 'head -c 10000000 /dev/urandom'
big "spaces" "yes ' ' | tr -d '\n'"
big "one letter" "yes a | tr -d '\n'"
big "digits" "yes 7 | tr -d '\n'"
# A regex that backtracks without bound still stops, with an error, not a hang.
mkdir "$tmp/catastrophic"
cat >"$tmp/catastrophic/tokenizer.json" <<'JSON'
{"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a|a)+[^a]"}, "behavior": "Isolated",
 "invert": false}, "model": {"type": "BPE", "vocab": {"a": 0, "c": 1}, "merges": []}}
JSON
expect "a runaway regex is an error" 1 'regex gave up' 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' \
    -m "$tmp/catastrophic"
expect "--model is required" 2 'model DIR is required' ''
expect "unknown option" 2 'Usage' '' -m "$bl" --frobnicate
expect "missing folder" 1 '/nonexistent/tokenizer.json' '' -m /nonexistent
expect "--help" 0 'Usage: duet-tokenize' '' --help

echo "tokenize_tool: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
