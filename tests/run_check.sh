#!/bin/sh
# duet-run end to end: --check and generation against the mock plugin of this build, with
# overrides, prompts as ids and as text (a tokenizer of the mock's 97 ids), and the errors a user
# meets (bad config, missing plugin, plugin lacking a capability, bad flags, bad prompts, a missing
# or mismatched tokenizer), each with its exit status and message.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
run="$top_builddir/tools/duet-run"
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
export DUET_PLUGIN_PATH="$DUET_TEST_PLUGIN_DIR"
passed=0 failed=0

# expect NAME STATUS PATTERN ARGS...: duet-run ARGS exits with STATUS and prints PATTERN (grep -E)
expect() {
    name=$1 want=$2 pattern=$3
    shift 3
    "$run" "$@" >"$tmp/out" 2>&1
    judge $?
}

# expect_env NAME STATUS PATTERN VAR=VALUE ARGS...: expect, with VAR=VALUE in the environment
expect_env() {
    name=$1 want=$2 pattern=$3 var=$4
    shift 4
    env "$var" "$run" "$@" >"$tmp/out" 2>&1
    judge $?
}

# judge STATUS: the verdict on $tmp/out for name, want and pattern
judge() {
    got=$1
    if [ "$got" -eq "$want" ] && grep -Eq -- "$pattern" "$tmp/out"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $name: exit $got (want $want), output:"
        sed 's/^/    /' "$tmp/out"
        echo "    (wanted /$pattern/)"
    fi
}

mock="$srcdir/examples/mock.cfg"
spec="$srcdir/examples/mock-speculative.cfg"

expect "check prints the plugin" 0 "^  name: +mock$" --config "$mock" --check
expect "check prints the path" 0 "^  path: +$DUET_TEST_PLUGIN_DIR/duet_mock_worker.so$" \
    --config "$mock" --check
expect "check prints abi and caps" 0 "^  capabilities: target,draft,swap,f32,penalties$" --config "$mock" --check
expect "check prints the resolved config" 0 "block_size = 16;" --config "$mock" --check
expect "check ends with ok" 0 "^check: ok$" --config "$mock" --check
expect "override shows in the config" 0 "block_size = 64; +# --set" --config "$mock" --check \
    --set cache.block_size=64
expect "speculative config loads both" 0 "^draft: worker \"mock\"$" --config "$spec" --check
expect "bad override names the key" 1 "did you mean 'cache.block_size'" --config "$mock" \
    --check --set cache.block_sz=64
expect "bad config file names file and line" 1 "bad-unknown-key-in-group.cfg:[0-9]+: " \
    --config "$srcdir/tests/configs/bad-unknown-key-in-group.cfg" --check
expect "missing config file" 1 "nonexistent.cfg" --config "$tmp/nonexistent.cfg" --check
expect "missing plugin" 1 "target.worker: plugin 'nosuch': duet_nosuch_worker.so not found" \
    --config "$mock" --check --set target.worker=nosuch
expect "plugin lacking a capability" 1 "target.dtype: plugin .* cannot use dtype bf16" \
    --config "$mock" --check --set target.dtype=bf16
expect "broken plugin is refused" 1 "ABI major version mismatch: expected 1, found 2" \
    --config "$mock" --check --set target.worker=badmajor
# Generation end to end on the mock worker (deterministic: its tokens are a pure function of the
# cache contents and the seed).
expect "generates greedily" 0 "^request 0: prompt \[5,6,7\] -> \[57,26,29,92,65,37,24,87\] \(length, 8 tokens\)$" \
    --config "$mock" --prompt-ids 5,6,7 --max-tokens 8
expect "prints a summary" 0 "^1 requests, 8 tokens generated in .* 8 steps, 1.00 tokens per step$" \
    --config "$mock" --prompt-ids 5,6,7 --max-tokens 8
expect "json object per request" 0 \
    '^\{"request": 0, "prompt_ids": \[5, 6, 7\], "ids": \[57, 26, 29\], "finish_reason": "length"\}$' \
    --config "$mock" --prompt-ids 5,6,7 --max-tokens 3 --json
expect "json summary" 0 '^\{"requests": 1, "generated_tokens": 3, "elapsed_s": [0-9.]+, "tokens_per_s": [0-9.]+, "acceptance_rate": null, "mean_tokens_per_step": 1\.000000' \
    --config "$mock" --prompt-ids 5,6,7 --max-tokens 3 --json
expect "json logprobs" 0 '"logprobs": \[\{"57": -[0-9.]+, "58": -[0-9.]+\}, \{' \
    --config "$mock" --prompt-ids 5,6,7 --max-tokens 3 --json --logprobs 2
# The mock computes no prompt log-probabilities: every entry stays unknown (null).
expect "json prompt logprobs" 0 '"prompt_logprobs": \[null, null, null\]\}$' \
    --config "$mock" --prompt-ids 5,6,7 --max-tokens 2 --json --prompt-logprobs 2
expect "eos stops a request" 0 '"ids": \[7, 75, 2\], "finish_reason": "stop"' \
    --config "$mock" --prompt-ids 5,6,7 --max-tokens 4 --json --temperature 0.8 --seed 3
expect "ignore-eos goes on" 0 '"ids": \[7, 75, 2, [0-9]+\], "finish_reason": "length"' \
    --config "$mock" --prompt-ids 5,6,7 --max-tokens 4 --json --temperature 0.8 --seed 3 \
    --ignore-eos
expect "n sequences, each printed" 0 '^\{"request": 0, "sequence": 2, "prompt_ids": \[5, 6, 7\], "ids": \[[0-9]+, [0-9]+, [0-9]+\], "finish_reason": "length"\}$' \
    --config "$mock" --prompt-ids 5,6,7 --max-tokens 3 --json --temperature 0.8 --seed 3 --n 3 \
    --ignore-eos
expect "sequence 0 draws as the request alone" 0 '^\{"request": 0, "sequence": 0, "prompt_ids": \[5, 6, 7\], "ids": \[7, 75, 2, [0-9]+\]' \
    --config "$mock" --prompt-ids 5,6,7 --max-tokens 4 --json --temperature 0.8 --seed 3 --n 2 \
    --ignore-eos
expect "n of 0 is bad usage" 2 "--n" --config "$mock" --prompt-ids 5,6,7 --n 0
printf '1,2,3\n\n4,5\n' >"$tmp/prompts"
expect "prompts file, one request a line" 0 "^request 1: prompt \[4,5\] -> " \
    --config "$mock" --prompts "$tmp/prompts" --max-tokens 5
printf '1,2\n1,,2\n' >"$tmp/bad-prompts"
expect "bad prompts file names the line" 1 "bad-prompts:2: not a comma-separated list" \
    --config "$mock" --prompts "$tmp/bad-prompts"
expect "prompt outside the vocabulary is refused" 1 \
    "prompt 0: prompt token 1 is 600, outside the vocabulary \[0, 97\)" \
    --config "$mock" --prompt-ids 5,600
expect "prompt longer than max_model_len is refused" 1 \
    "prompt has 4 tokens, more than max_model_len \(3\)" \
    --config "$mock" --prompt-ids 5,6,7,8 --set scheduler.max_model_len=3 \
    --set scheduler.max_num_batched_tokens=64
expect "no prompt" 2 "no prompt: give --prompt-ids LIST, --prompts FILE, --prompt TEXT" \
    --config "$mock"
expect "speculative config generates" 0 "^request 0: prompt \[5,6,7\] -> \[57,26,29,92\] " \
    --config "$spec" --prompt-ids 5,6,7 --max-tokens 4 --set cache.prefix_caching=false
expect "speculative summary has the acceptance rate" 0 \
    '"acceptance_rate": 1\.000000, "mean_tokens_per_step": [2-5]\.[0-9]+' \
    --config "$spec" --prompt-ids 5,6,7 --max-tokens 12 --json --ignore-eos \
    --set cache.prefix_caching=false
expect "speculative decoding with logprobs and sampling" 0 \
    '^\{"request": 1, "prompt_ids": \[4, 5\], "ids": \[[0-9, ]+\], "finish_reason": "(length|stop)", "logprobs": \[\{' \
    --config "$spec" --prompts "$tmp/prompts" --max-tokens 12 --json --logprobs 3 \
    --temperature 0.7 --set cache.prefix_caching=false
expect "speculative summary has the metrics" 0 \
    '"emitted": 15, "system_efficiency": 1\.000000, "num_spec_tokens": 4, "adaptive": false, .*"accepted_per_position": \[3, 3, 3, 3\], "target_s": ' \
    --config "$spec" --prompt-ids 5,6,7 --max-tokens 12 --json --ignore-eos \
    --set cache.prefix_caching=false
expect "summary names the acceptance method" 0 \
    '"overlap_steps": [0-9]+, "acceptance": "rejection", "synthetic_rate": null\}$' \
    --config "$spec" --prompt-ids 5,6,7 --max-tokens 12 --json --ignore-eos \
    --set cache.prefix_caching=false
expect "synthetic acceptance is said in the JSON summary" 0 \
    '"acceptance": "synthetic", "synthetic_rate": 0\.500000\}$' \
    --config "$spec" --prompt-ids 5,6,7 --max-tokens 40 --json --ignore-eos \
    --set cache.prefix_caching=false --set 'speculative.acceptance="synthetic"' \
    --set speculative.synthetic_rate=0.5
expect "synthetic acceptance is said in the text summary" 0 \
    'acceptance rate 0\.[0-9]+ \(synthetic acceptance at 0\.5: not the models.\)' \
    --config "$spec" --prompt-ids 5,6,7 --max-tokens 40 --ignore-eos \
    --set cache.prefix_caching=false --set 'speculative.acceptance="synthetic"' \
    --set speculative.synthetic_rate=0.5
expect "synthetic rate without synthetic acceptance is refused" 1 \
    '^duet-run: --set speculative.synthetic_rate=0.5: speculative.synthetic_rate: only applies with speculative.acceptance = "synthetic" \(it is "rejection"\)$' \
    --config "$spec" --prompt-ids 5,6,7 --set speculative.synthetic_rate=0.5
expect "a CPU list this machine lacks is refused" 1 \
    '^duet-run: --set target.cpus=0-9999: target.cpus: bad CPU list "0-9999" at "0-9999"' \
    --config "$spec" --prompt-ids 5,6,7 --set target.cpus=0-9999
expect "speculative text summary has accepted per position" 0 "^accepted per position: 3/3 3/3 3/3 3/3$" \
    --config "$spec" --prompt-ids 5,6,7 --max-tokens 12 --ignore-eos \
    --set cache.prefix_caching=false
expect "no-speculative runs the same config without the draft" 0 \
    '^\{"requests": 1, "generated_tokens": 12, .*"acceptance_rate": null, "mean_tokens_per_step": 1\.000000' \
    --config "$spec" --prompt-ids 5,6,7 --max-tokens 12 --json --ignore-eos --no-speculative \
    --set cache.prefix_caching=false
expect "no-speculative gives the same greedy tokens" 0 \
    "^request 0: prompt \[5,6,7\] -> \[57,26,29,92\] " \
    --config "$spec" --prompt-ids 5,6,7 --max-tokens 4 --no-speculative \
    --set cache.prefix_caching=false
expect "no-speculative check loads only the target" 0 "^check: ok$" --config "$spec" --check \
    --no-speculative
if grep -Eq '^draft:|^speculative:' "$tmp/out"; then
    failed=$((failed + 1))
    echo "FAIL: no-speculative check still shows the draft:"
    sed 's/^/    /' "$tmp/out"
else
    passed=$((passed + 1))
fi
expect "prefix caching needs the capability" 1 "cache.prefix_caching: plugin 'mock' cannot" \
    --config "$spec" --prompt-ids 5,6,7 --max-tokens 4
# A prompt file must be a file of text lines.
printf '1,2\n3,\0004\n' >"$tmp/nul-prompts"
expect "a NUL byte in a prompts line names the line" 1 "nul-prompts:2: a NUL byte in the line" \
    --config "$mock" --prompts "$tmp/nul-prompts"
expect "a directory as --prompts is refused" 1 "--prompts $tmp: is a directory" \
    --config "$mock" --prompts "$tmp"
# A full disk: the write that failed is named.
"$run" --config "$mock" --prompt-ids 5,6,7 --max-tokens 3 >/dev/full 2>"$tmp/out"
got=$?
want=1 name="a full disk is reported" pattern="writing the results to standard output: No space left"
judge $got
# One request's non-finite logits fail that request alone, with the reason; the run exits 1.
expect_env "non-finite logits fail one request" 1 \
    '"finish_reason": "error", "error": "the target model models/mock gave non-finite logits' \
    DUET_MOCK_NONFINITE_TOKEN=3 --config "$mock" --prompts "$tmp/prompts" --max-tokens 5 --json
expect_env "its neighbour finishes" 1 '^\{"request": 1, "prompt_ids": \[4, 5\], "ids": \[[0-9, ]+\], "finish_reason": "length"' \
    DUET_MOCK_NONFINITE_TOKEN=3 --config "$mock" --prompts "$tmp/prompts" --max-tokens 5 --json
expect_env "and the failure is counted" 1 "1 of 2 requests failed" \
    DUET_MOCK_NONFINITE_TOKEN=3 --config "$mock" --prompts "$tmp/prompts" --max-tokens 5 --json
# Results stream: a request is printed when it finishes, so the signal comes once one is out.
# SIGINT / SIGTERM then abort the rest, which are printed with their tokens, then the summary;
# the exit status is 128 + the signal.
i=0
while [ $i -lt 300 ]; do echo "$((5 + i % 80)),$((6 + i % 70)),7" && i=$((i + 1)); done >"$tmp/p300"
for sig in INT TERM; do
    DUET_MOCK_EXECUTE_US=3000 "$run" --config "$mock" --prompts "$tmp/p300" --max-tokens 100 \
        --ignore-eos >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    i=0
    while ! grep -q "(length" "$tmp/out" && [ $i -lt 600 ]; do sleep 0.05 && i=$((i + 1)); done
    kill -"$sig" $pid
    wait $pid
    got=$?
    [ "$sig" = INT ] && code=130 || code=143
    lines=$(grep -c '^request ' "$tmp/out")
    if [ "$got" -eq "$code" ] && [ "$lines" -eq 300 ] && grep -q "(length, 100 tokens)" "$tmp/out" &&
        grep -Eq "\(abort, [1-9][0-9]* tokens\)" "$tmp/out" && grep -q "^300 requests" "$tmp/out" &&
        grep -q "stopped by signal" "$tmp/err"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: SIG$sig: exit $got (want $code), $lines request lines (want 300):"
        tail -n 3 "$tmp/out" "$tmp/err" | sed 's/^/    /'
    fi
done
# ---- text ---------------------------------------------------------------------------------
# mock97 is a SentencePiece-style tokenizer of exactly the mock's 97 ids (<unk> 0, <s> 1, </s> 2,
# the mock's EOS); the mock's model folder does not exist, so it comes from --tokenizer, or from a
# model folder of our own (--set model=...: the mock reads no files).
tok="$srcdir/tests/fixtures/tokenizers/mock97"
tokenize="$top_builddir/tools/duet-tokenize"
expect "a text prompt is encoded with BOS" 0 \
    '^\{"request": 0, "prompt": "hello world", "prompt_ids": \[1, 73, 8, 15, 15, 18, 88, 18, 21, 15, 7\], "ids": \[30, 32, 96, 1, 47, 2\], "text": "ACanR", "finish_reason": "stop"\}$' \
    --config "$mock" --tokenizer "$tok" --prompt "hello world" --max-tokens 12 --json
expect "the text is printed" 0 '^  text:   "ACanRJ1 gvit"$' \
    --config "$mock" --tokenizer "$tok" --prompt "hello world" --max-tokens 12 --ignore-eos
expect "and the prompt's text" 0 '^  prompt: "hello world"$' \
    --config "$mock" --tokenizer "$tok" --prompt "hello world" --max-tokens 12 --ignore-eos
# "text" is duet-tokenize --decode --skip-special of "ids", byte for byte (the ids hold <s> and
# </s>, which it skips).
"$run" --config "$mock" --tokenizer "$tok" --prompt "hello world" --max-tokens 12 --json \
    --ignore-eos >"$tmp/out" 2>&1
ids=$(sed -n '1s/.*"ids": \(\[[^]]*\]\).*/\1/p' "$tmp/out")
text=$(sed -n '1s/.*"text": \(".*"\), "finish_reason".*/\1/p' "$tmp/out")
want=$(printf '%s' "$ids" | "$tokenize" --model "$tok" --decode --skip-special |
    sed -n 's/^{"text":\(.*\)}$/\1/p')
if [ -n "$text" ] && [ "$text" = "$want" ] && [ "$ids" != "${ids#*, 1, }" ]; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    echo "FAIL: text is the ids decoded without special tokens: ids $ids, text $text," \
        "duet-tokenize $want"
fi
expect "id prompts get text with a tokenizer" 0 \
    '^\{"request": 0, "prompt_ids": \[5, 6, 7\], "ids": \[57, 26, 29, 92\], "text": "1wzhe", "finish_reason": "length"\}$' \
    --config "$mock" --tokenizer "$tok" --prompt-ids 5,6,7 --max-tokens 4 --json
printf 'hello\n\n  \n"two\\nlines \\"quoted\\""\nworld\n' >"$tmp/text-prompts"
expect "prompts-text: one prompt a line" 0 '^\{"request": 2, "prompt": "world", "prompt_ids": \[1, 88, 18, 21, 15, 7\]' \
    --config "$mock" --tokenizer "$tok" --prompts-text "$tmp/text-prompts" --max-tokens 2 --json
expect "prompts-text: a JSON string line holds a newline" 0 \
    '^\{"request": 1, "prompt": "two\\nlines \\"quoted\\"", "prompt_ids": \[1, 85, 26, 18, 0, 15' \
    --config "$mock" --tokenizer "$tok" --prompts-text "$tmp/text-prompts" --max-tokens 2 --json
printf 'fine\n"not closed\n' >"$tmp/bad-text-prompts"
expect "prompts-text: a bad JSON line names the line" 1 \
    "bad-text-prompts:2: a line that starts with '\"' must be one JSON string" \
    --config "$mock" --tokenizer "$tok" --prompts-text "$tmp/bad-text-prompts"
# The tokenizer's EOS ids stop a request as the model's do (vLLM's stop ids); mock97 with a
# generation_config.json naming 29, a token the mock's greedy output holds, which the mock's own
# EOS (2) is not.
mkdir "$tmp/eos-tok" && cp "$tok"/* "$tmp/eos-tok" || exit 99
printf '{"eos_token_id": [29]}\n' >"$tmp/eos-tok/generation_config.json"
expect "the tokenizer's EOS stops a request" 0 '"ids": \[57, 26, 29\], "text": "1wz", "finish_reason": "stop"' \
    --config "$mock" --tokenizer "$tmp/eos-tok" --prompt-ids 5,6,7 --max-tokens 8 --json
expect "ignore-eos ignores the tokenizer's EOS too" 0 \
    '"ids": \[57, 26, 29, 92, 65, 37, 24, 87\], "text": "[^"]*", "finish_reason": "length"' \
    --config "$mock" --tokenizer "$tmp/eos-tok" --prompt-ids 5,6,7 --max-tokens 8 --json --ignore-eos
# The tokenizer defaults to the target model's folder; runs on ids need none.
mkdir "$tmp/model" && cp "$tok"/* "$tmp/model" || exit 99
expect "the model folder's tokenizer is the default" 0 '"prompt": "hello world", .*"text": "ACanR", "finish_reason": "stop"' \
    --config "$mock" --set model="$tmp/model" --prompt "hello world" --max-tokens 12 --json
expect "text needs a tokenizer" 1 \
    "--prompt needs a tokenizer, and the target model's folder models/mock has no tokenizer.json: pass --tokenizer DIR, or generate the model with duet-mkmodel --tokenizer DIR" \
    --config "$mock" --prompt "hello"
expect "prompts-text needs a tokenizer" 1 "--prompts-text needs a tokenizer" \
    --config "$mock" --prompts-text "$tmp/text-prompts"
mkdir "$tmp/bad-model" && printf '{' >"$tmp/bad-model/tokenizer.json" || exit 99
expect "a broken tokenizer in the model folder leaves runs on ids alone" 0 \
    "warning: the target model's tokenizer is not used \(.*tokenizer.json.*\); the output has ids only" \
    --config "$mock" --set model="$tmp/bad-model" --prompt-ids 5,6,7 --max-tokens 2
expect "but text needs it" 1 "bad-model/tokenizer.json" \
    --config "$mock" --set model="$tmp/bad-model" --prompt "hello"
expect "a missing --tokenizer is an error" 1 "--tokenizer: .*nosuch/tokenizer.json" \
    --config "$mock" --tokenizer "$tmp/nosuch" --prompt-ids 5,6,7
expect "a tokenizer larger than the model's vocabulary is refused" 1 \
    "the tokenizer in .*sentencepiece has 270 token ids, more than the target model's vocabulary \(97\)" \
    --config "$mock" --tokenizer "$srcdir/tests/fixtures/tokenizers/sentencepiece" --prompt "hello"
expect "ids and text prompts do not mix" 2 "give prompts either as token ids .* or as text" \
    --config "$mock" --tokenizer "$tok" --prompt "hello" --prompt-ids 5,6
expect "chat takes no other prompt" 2 "--chat FILE is one conversation" \
    --config "$mock" --tokenizer "$tok" --chat "$tmp/chat.json" --prompts-text "$tmp/text-prompts"
# --chat: rendered with the tokenizer's chat template, then encoded without BOS (the template
# writes it).
printf '[{"role": "user", "content": "hello"}]\n' >"$tmp/chat.json"
mkdir "$tmp/chat-tok" && cp "$tok"/* "$tmp/chat-tok" || exit 99
printf '%s' '{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }} {% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}' \
    >"$tmp/chat-tok/chat_template.jinja"
expect "chat renders the template and adds no second BOS" 0 \
    '^\{"request": 0, "prompt": "<s>\[user\] hello \[assistant\]", "prompt_ids": \[1, [02-9][0-9]*, ' \
    --config "$mock" --tokenizer "$tmp/chat-tok" --chat "$tmp/chat.json" --max-tokens 2 --json
expect "chat without a template says so" 1 "the tokenizer in .*mock97 has no chat template" \
    --config "$mock" --tokenizer "$tok" --chat "$tmp/chat.json"
printf '{{ raise_exception("roles must alternate") }}' >"$tmp/chat-tok/chat_template.jinja"
expect "the template's raise_exception is the error" 1 "line 1: roles must alternate" \
    --config "$mock" --tokenizer "$tmp/chat-tok" --chat "$tmp/chat.json"
printf '{"role": "user"}\n' >"$tmp/bad-chat.json"
expect "chat needs an array of messages" 1 "--chat .*bad-chat.json: expected a non-empty JSON array" \
    --config "$mock" --tokenizer "$tok" --chat "$tmp/bad-chat.json"

expect "config is required" 2 "--config FILE is required" --check
expect "bad prompt ids" 2 "invalid value for --prompt-ids: '1,,2'" --config "$mock" \
    --prompt-ids 1,,2
expect "bad top-p" 2 "invalid value for --top-p" --config "$mock" --top-p 1.5
expect "bad repetition penalty" 2 "invalid value for --repetition-penalty" --config "$mock" \
    --repetition-penalty 0
expect "bad presence penalty" 2 "invalid value for --presence-penalty" --config "$mock" \
    --presence-penalty 2.5
# Penalties reach the workers: greedy ids change, and speculative equals plain with them.
pen="--prompt-ids 5,6,7 --max-tokens 24 --ignore-eos --json"
strong="--repetition-penalty 1.5 --frequency-penalty 2 --presence-penalty 1"
ids_of() { head -n 1 | sed -n 's/.*"ids": \(\[[0-9, ]*\]\).*/\1/p'; }
plain=$("$run" --config "$mock" $pen | ids_of)
penalised=$("$run" --config "$mock" $pen $strong | ids_of)
spec_penalised=$("$run" --config "$spec" --set cache.prefix_caching=false $pen $strong | ids_of)
if [ -n "$plain" ] && [ -n "$penalised" ] && [ "$plain" != "$penalised" ] &&
    [ "$penalised" = "$spec_penalised" ]; then
    passed=$((passed + 1))
else
    failed=$((failed + 1))
    echo "FAIL: penalties: plain $plain, penalised $penalised, speculative $spec_penalised"
fi
expect "unknown flag" 2 "Try 'duet-run --help'" --config "$mock" --bogus
expect "help" 0 "^Usage: duet-run --config FILE" --help
expect "version" 0 "^duet-run [0-9.]+ \\(plugin ABI 1\\.[0-9]+\\)$" --version

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
