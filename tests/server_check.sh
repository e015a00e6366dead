#!/bin/sh
# duet-server end to end with curl: a tiny generated target and draft (speculative decoding on
# the CPU worker) with the byte-level fixture tokenizer, an API key, port 0. Health and models,
# greedy completions equal to duet-run's ids, SSE framing, usage, stop strings and stop token
# ids, several prompts, seeds, penalties and logit_bias, tokenize / detokenize, every error
# status, 16 concurrent streams, a client leaving mid-stream, chat (the tokenizer's error while
# templates are a placeholder, the rendered prompt's completion once they work) and SIGTERM.
# JSON is read with node; every curl has a timeout and the server is killed on any exit.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
server="$top_builddir/tools/duet-server"
run="$top_builddir/tools/duet-run"
mk="$top_builddir/tools/duet-mkmodel"
tokenize="$top_builddir/tools/duet-tokenize"
command -v curl >/dev/null || { echo "SKIP: curl is needed"; exit 77; }
command -v node >/dev/null || { echo "SKIP: node is needed to read JSON"; exit 77; }
[ -e "$top_builddir/cpu_worker/.libs/duet_cpu_worker.so" ] ||
    { echo "SKIP: the CPU worker was not built"; exit 77; }
tmp=$(mktemp -d) || exit 99
pid=
cleanup() {
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
export DUET_PLUGIN_PATH="$top_builddir/cpu_worker/.libs"
passed=0 failed=0
key=sekret

"$mk" --out "$tmp/t" --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 \
    --intermediate 128 --vocab 270 --max-positions 256 --dtype f32 >/dev/null &&
    "$mk" --out "$tmp/d" --draft-of "$tmp/t" --layers 1 --noise 0.05 >/dev/null || exit 99
cp "$srcdir/tests/fixtures/tokenizers/bytelevel/tokenizer.json" \
    "$srcdir/tests/fixtures/tokenizers/bytelevel/tokenizer_config.json" "$tmp/t/" || exit 99
# A chat template for when templates work (a placeholder returns an error meanwhile).
printf '%s' '{% for m in messages %}### {{ m.role }}
{{ m.content }}
{% endfor %}{% if add_generation_prompt %}### assistant
{% endif %}' >"$tmp/t/chat_template.jinja"
cat >"$tmp/spec.cfg" <<CFG
model = "$tmp/t";
target: { worker = "cpu"; threads = 1; };
speculative: { draft_model = "$tmp/d"; worker = "cpu"; threads = 1; num_tokens = 3; };
cache: { block_size = 16; cpu_kv_space_gib = 0.02; };
scheduler: { max_num_seqs = 32; };
server: { served_model_name = "tiny"; max_queue = 20; };
CFG

pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "FAIL: $*"
}

# js FILE EXPR: prints EXPR evaluated with d = the JSON of FILE
js() {
    node -e 'const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
             const v = eval(process.argv[2]);
             process.stdout.write(typeof v === "string" ? v : JSON.stringify(v));' "$1" "$2"
}

# post PATH BODY [CURL ARGS...]: the answer in $tmp/body, the status in $code
post() {
    p=$1 b=$2
    shift 2
    code=$(curl -s --max-time 60 -o "$tmp/body" -w '%{http_code}' -H "Authorization: Bearer $key" \
        -H 'Content-Type: application/json' --data-binary "$b" "$@" "$base$p")
}

# expect_error NAME STATUS PATTERN PATH BODY: an error object with STATUS whose message matches
expect_error() {
    name=$1 want=$2 pattern=$3
    post "$4" "$5"
    msg=$(js "$tmp/body" 'd.error.message + "|" + d.error.type + "|" + ("param" in d.error) + "|" + ("code" in d.error)' 2>&1)
    if [ "$code" = "$want" ] && printf '%s' "$msg" | grep -Eq -- "$pattern" &&
        printf '%s' "$msg" | grep -q '|true|true$'; then
        pass
    else
        fail "$name: status $code (want $want): $(cat "$tmp/body") (wanted /$pattern/)"
    fi
}

# sse FILE: checks the framing of an SSE answer and prints "TEXT<TAB>FINISH<TAB>USAGE_JSON"
sse() {
    node -e '
const raw = require("fs").readFileSync(process.argv[1], "utf8");
if (!raw.endsWith("data: [DONE]\n\n")) { console.error("no final [DONE]"); process.exit(1); }
const events = raw.slice(0, -2).split("\n\n");
let text = "", finish = null, usage = null, role = false;
events.forEach((e, i) => {
  if (!e.startsWith("data: ") || e.includes("\n")) { console.error("bad event " + JSON.stringify(e)); process.exit(1); }
  if (e === "data: [DONE]") { if (i !== events.length - 1) process.exit(1); return; }
  const d = JSON.parse(e.slice(6));
  if (d.choices.length === 0) { usage = d.usage; return; }
  const c = d.choices[0];
  if (d.object === "chat.completion.chunk") {
    if (i === 0) { role = c.delta.role === "assistant" && c.delta.content === ""; return; }
    text += c.delta.content || "";
  } else {
    if (d.object !== "text_completion") process.exit(1);
    text += c.text;
  }
  if (c.finish_reason) finish = c.finish_reason;
});
process.stdout.write(JSON.stringify([text, finish, usage, role]));' "$1"
}

# ---- start ----------------------------------------------------------------------------------
"$server" --config "$tmp/spec.cfg" --port 0 --api-key "$key" --set server.max_body_bytes=4096 \
    >"$tmp/server.log" 2>&1 &
pid=$!
port=
for _ in $(seq 1 100); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$tmp/server.log" 2>/dev/null)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "FAIL: no 'listening on' line"; cat "$tmp/server.log"; exit 1; }
base="http://127.0.0.1:$port"
health=
for _ in $(seq 1 600); do
    health=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$base/health")
    [ "$health" = 200 ] && break
    [ "$health" = 503 ] || [ "$health" = 000 ] || break
    sleep 0.1
done
[ "$health" = 200 ] && pass || { fail "health: $health"; cat "$tmp/server.log"; exit 1; }

code=$(curl -s --max-time 10 -o "$tmp/body" -w '%{http_code}' -H "Authorization: Bearer $key" \
    "$base/v1/models")
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.data[0].id + " " + d.data[0].max_model_len')" = "tiny 256" ] &&
    pass || fail "models: $code $(cat "$tmp/body")"

# ---- greedy completions equal duet-run ------------------------------------------------------
"$run" --config "$tmp/spec.cfg" --prompt-ids 5,6,7,8 --max-tokens 24 --temperature 0 \
    --ignore-eos --json >"$tmp/run.json" 2>"$tmp/run.err" || { cat "$tmp/run.err"; exit 99; }
head -n 1 "$tmp/run.json" >"$tmp/run1.json"
ids=$(js "$tmp/run1.json" 'd.ids')
echo "$ids" | "$tokenize" --model "$tmp/t" --decode --skip-special >"$tmp/want.json" || exit 99
greedy_text=$(js "$tmp/want.json" 'd.text')
greedy='"prompt": [5, 6, 7, 8], "max_tokens": 24, "temperature": 0, "ignore_eos": true'
post /v1/completions "{\"model\": \"tiny\", $greedy}"
got=$(js "$tmp/body" 'd.choices[0].text')
[ "$code" = 200 ] && [ "$got" = "$greedy_text" ] &&
    [ "$(js "$tmp/body" '[d.object, d.id.startsWith("cmpl-"), d.choices[0].index, d.choices[0].finish_reason, d.choices[0].logprobs, d.usage]')" = \
        '["text_completion",true,0,"length",null,{"prompt_tokens":4,"total_tokens":28,"completion_tokens":24}]' ] &&
    pass || fail "greedy completion: $code $(cat "$tmp/body") (want text $greedy_text)"
cp "$tmp/body" "$tmp/greedy.json"

# ---- streaming ------------------------------------------------------------------------------
post /v1/completions "{$greedy, \"stream\": true, \"stream_options\": {\"include_usage\": true}}" -N
s=$(sse "$tmp/body") && [ "$code" = 200 ] &&
    [ "$s" = "$(node -e 'process.stdout.write(JSON.stringify([process.argv[1], "length", {prompt_tokens: 4, total_tokens: 28, completion_tokens: 24}, false]))' "$greedy_text")" ] &&
    pass || fail "stream: $code $s $(head -c 600 "$tmp/body")"
post /v1/completions "{$greedy, \"stream\": true}" -N
s=$(sse "$tmp/body") && ! grep -q '"usage"' "$tmp/body" && pass || fail "stream without usage: $s"

# ---- stop strings and stop token ids --------------------------------------------------------
stop=$(js "$tmp/greedy.json" 'd.choices[0].text.slice(5, 7)')
wantstop=$(js "$tmp/greedy.json" 'd.choices[0].text.slice(0, d.choices[0].text.indexOf(d.choices[0].text.slice(5, 7)))')
stopjson=$(node -e 'process.stdout.write(JSON.stringify(process.argv[1]))' "$stop")
post /v1/completions "{$greedy, \"stop\": [\"zzzz\", $stopjson]}"
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.choices[0].text')" = "$wantstop" ] &&
    [ "$(js "$tmp/body" 'd.choices[0].finish_reason')" = stop ] && pass ||
    fail "stop string $stopjson: $(cat "$tmp/body") (want $wantstop)"
post /v1/completions "{$greedy, \"stop\": $stopjson, \"stream\": true}" -N
s=$(sse "$tmp/body") &&
    [ "$s" = "$(node -e 'process.stdout.write(JSON.stringify([process.argv[1], "stop", null, false]))' "$wantstop")" ] &&
    pass || fail "stop string streamed: $s (want $wantstop)"
stoptok=$(js "$tmp/run1.json" 'd.ids[6]')
first=$(js "$tmp/run1.json" "d.ids.indexOf($stoptok)")
js "$tmp/run1.json" "d.ids.slice(0, $first)" | "$tokenize" --model "$tmp/t" --decode --skip-special \
    >"$tmp/want.json"
post /v1/completions "{$greedy, \"stop_token_ids\": [$stoptok]}"
[ "$(js "$tmp/body" '[d.choices[0].finish_reason, d.usage.completion_tokens, d.choices[0].text]')" = \
    "$(js "$tmp/want.json" "[\"stop\", $first + 1, d.text]")" ] && pass ||
    fail "stop_token_ids [$stoptok]: $(cat "$tmp/body")"
post /v1/completions '{"prompt": [5, 6, 7, 8], "max_tokens": 3, "temperature": 0}'
[ "$(js "$tmp/body" '[d.choices[0].finish_reason, d.usage.completion_tokens]')" = '["length",3]' ] &&
    pass || fail "max_tokens 3: $(cat "$tmp/body")"

# ---- several prompts, seeds -----------------------------------------------------------------
post /v1/completions '{"prompt": [[5, 6, 7, 8], [9, 10, 11]], "max_tokens": 24, "temperature": 0, "ignore_eos": true}'
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.choices.map(c => c.index).join(",") + " " + d.usage.prompt_tokens')" = "0,1 7" ] &&
    [ "$(js "$tmp/body" 'd.choices[0].text')" = "$greedy_text" ] && pass ||
    fail "two prompts: $(cat "$tmp/body")"
post /v1/completions '{"prompt": ["Hello", "world"], "max_tokens": 4}'
[ "$(js "$tmp/body" 'd.choices.length')" = 2 ] && pass || fail "two text prompts: $(cat "$tmp/body")"
sampled='"prompt": "Hello world", "max_tokens": 16, "temperature": 1, "seed": 42, "ignore_eos": true'
post /v1/completions "{$sampled}"
a=$(js "$tmp/body" 'd.choices[0].text')
post /v1/completions "{$sampled}"
b=$(js "$tmp/body" 'd.choices[0].text')
[ "$code" = 200 ] && [ -n "$a" ] && [ "$a" = "$b" ] && pass || fail "seed: '$a' then '$b'"

# ---- penalties and logit bias ---------------------------------------------------------------
# A bias of 100 forces its token at every position, greedy and sampled.
printf '[65, 65, 65, 65, 65, 65, 65, 65]' | "$tokenize" --model "$tmp/t" --decode --skip-special \
    >"$tmp/want.json" || exit 99
forced=$(js "$tmp/want.json" 'd.text')
for t in 0 1; do
    post /v1/completions "{\"prompt\": [5, 6, 7, 8], \"max_tokens\": 8, \"temperature\": $t, \"ignore_eos\": true, \"logit_bias\": {\"65\": 100}}"
    [ "$code" = 200 ] && [ -n "$forced" ] && [ "$(js "$tmp/body" 'd.choices[0].text')" = "$forced" ] &&
        pass || fail "logit_bias at temperature $t: $code $(cat "$tmp/body") (want '$forced')"
done
# Penalties change greedy output, and the server's equals duet-run's with the same flags.
"$run" --config "$tmp/spec.cfg" --prompt-ids 5,6,7,8 --max-tokens 24 --temperature 0 --ignore-eos \
    --json --repetition-penalty 1.3 --frequency-penalty 0.5 --presence-penalty 0.5 \
    >"$tmp/runpen.json" 2>"$tmp/run.err" || { cat "$tmp/run.err"; exit 99; }
head -n 1 "$tmp/runpen.json" >"$tmp/runpen1.json"
js "$tmp/runpen1.json" 'd.ids' | "$tokenize" --model "$tmp/t" --decode --skip-special \
    >"$tmp/want.json" || exit 99
pen_text=$(js "$tmp/want.json" 'd.text')
post /v1/completions "{$greedy, \"repetition_penalty\": 1.3, \"frequency_penalty\": 0.5, \"presence_penalty\": 0.5}"
got=$(js "$tmp/body" 'd.choices[0].text')
[ "$code" = 200 ] && [ "$got" = "$pen_text" ] && [ "$got" != "$greedy_text" ] && pass ||
    fail "penalties: $code '$got' (duet-run '$pen_text', without penalties '$greedy_text')"
post /v1/chat/completions '{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "presence_penalty": 0.5, "logit_bias": {"65": 100}}'
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.choices[0].message.content')" = "$(printf '%s' "$forced" | head -c 4)" ] && pass ||
    fail "chat with logit_bias: $code $(cat "$tmp/body")"

# ---- tokenize / detokenize ------------------------------------------------------------------
post /tokenize '{"prompt": "Hello world", "add_special_tokens": false}'
toks=$(js "$tmp/body" 'd.tokens')
[ "$(js "$tmp/body" 'd.count + " " + d.max_model_len')" = "$(echo "$toks" | node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>process.stdout.write(JSON.parse(s).length + " 256"))')" ] &&
    pass || fail "tokenize: $(cat "$tmp/body")"
post /detokenize "{\"tokens\": $toks}"
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.prompt')" = "Hello world" ] && pass ||
    fail "detokenize: $(cat "$tmp/body")"
post /tokenize '{"prompt": "Hi"}'
[ "$(js "$tmp/body" 'd.tokens[0]')" = 266 ] && pass || fail "tokenize adds BOS: $(cat "$tmp/body")"

# ---- errors ---------------------------------------------------------------------------------
expect_error "malformed JSON" 400 "invalid JSON" /v1/completions '{"prompt": "x",'
expect_error "wrong type" 400 "'max_tokens' must be an integer" /v1/completions '{"prompt": "x", "max_tokens": "8"}'
expect_error "out of range" 400 "'top_p' must be in" /v1/completions '{"prompt": "x", "top_p": 2}'
expect_error "n > 1" 400 "'n' is not supported yet" /v1/completions '{"prompt": "x", "n": 2}'
expect_error "logprobs" 400 "'logprobs' is not supported yet" /v1/completions '{"prompt": "x", "logprobs": 2}'
expect_error "penalty out of range" 400 "'presence_penalty' must be in \\[-2, 2\\]" /v1/chat/completions '{"messages": [{"role": "user", "content": "x"}], "presence_penalty": 2.5}'
expect_error "repetition penalty 0" 400 "'repetition_penalty' must be > 0" /v1/completions '{"prompt": "x", "repetition_penalty": 0}'
expect_error "logit_bias not an object" 400 "'logit_bias' must be an object" /v1/completions '{"prompt": "x", "logit_bias": [1]}'
expect_error "logit_bias outside the vocabulary" 400 "token id 300 is out of vocabulary" /v1/completions '{"prompt": "x", "logit_bias": {"300": 5}}'
expect_error "unknown field" 400 "unknown field 'frobnicate'" /v1/completions '{"prompt": "x", "frobnicate": 1}'
expect_error "no prompt" 400 "'prompt' is required" /v1/completions '{"max_tokens": 3}'
expect_error "out of vocabulary" 400 "token id 300 is out of vocabulary" /v1/completions '{"prompt": [1, 300]}'
long=$(seq -s, 1 257 | sed 's/,/, /g')
expect_error "prompt too long" 400 "maximum context length is 256 tokens.*257" /v1/completions "{\"prompt\": [$long]}"
expect_error "prompt + max_tokens too long" 400 "256 tokens.*260 tokens \(250 in the prompt, 10 in the completion\)" \
    /v1/completions "{\"prompt\": [$(seq -s, 1 250)], \"max_tokens\": 10}"
expect_error "unknown model" 404 "The model \`gpt-4\` does not exist" /v1/completions '{"model": "gpt-4", "prompt": "x"}'
[ "$(js "$tmp/body" 'd.error.code')" = model_not_found ] && pass || fail "model_not_found code"
expect_error "unknown path" 404 "no such path" /v1/nope '{}'
expect_error "a path that is not UTF-8" 404 "no such path: /v1/\\?x" /v1/%ffx '{}'
code=$(curl -s --max-time 10 -o "$tmp/body" -w '%{http_code}' -H "Authorization: Bearer $key" "$base/v1/completions")
[ "$code" = 405 ] && grep -q '"error"' "$tmp/body" && pass || fail "GET completions: $code"
big=$(head -c 5000 /dev/zero | tr '\0' a)
expect_error "body too large" 413 "max_body_bytes" /v1/completions "{\"prompt\": \"$big\"}"
many=$(node -e 'process.stdout.write(JSON.stringify(Array(21).fill("x")))')
expect_error "queue full" 429 "too many requests" /v1/completions "{\"prompt\": $many}"
key=wrong expect_error "wrong key" 401 "API key" /v1/completions '{"prompt": "x"}'
code=$(curl -s --max-time 10 -o "$tmp/body" -w '%{http_code}' "$base/v1/models")
[ "$code" = 401 ] && pass || fail "no key: $code"
code=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$base/health")
[ "$code" = 200 ] && pass || fail "health needs no key: $code"
expect_error "stream_options without stream" 400 "stream_options" /v1/completions '{"prompt": "x", "stream_options": {"include_usage": true}}'

# ---- chat -----------------------------------------------------------------------------------
# The chat completion equals the completion of the rendered prompt (without added BOS), streamed
# or not, and /tokenize with messages gives the rendered prompt's ids.
msgs='"messages": [{"role": "user", "content": "Hi"}]'
post /v1/chat/completions "{$msgs, \"max_tokens\": 12, \"temperature\": 0, \"ignore_eos\": true}"
cp "$tmp/body" "$tmp/chat.json"
post /v1/completions "{\"prompt\": \"### user\\nHi\\n### assistant\\n\", \"add_special_tokens\": false, \"max_tokens\": 12, \"temperature\": 0, \"ignore_eos\": true}"
[ "$(js "$tmp/chat.json" '[d.object, d.id.startsWith("chatcmpl-"), d.choices[0].message.role, d.choices[0].message.content, d.usage]')" = \
    "$(js "$tmp/body" '["chat.completion", true, "assistant", d.choices[0].text, d.usage]')" ] &&
    pass || fail "chat: $(cat "$tmp/chat.json") vs $(cat "$tmp/body")"
post /v1/chat/completions "{$msgs, \"max_tokens\": 12, \"temperature\": 0, \"ignore_eos\": true, \"stream\": true}" -N
s=$(sse "$tmp/body") &&
    [ "$(node -e 'const s = JSON.parse(process.argv[1]); process.stdout.write(s[0] + "|" + s[1] + "|" + s[3])' "$s")" = \
        "$(js "$tmp/chat.json" 'd.choices[0].message.content + "|length|true"')" ] &&
    pass || fail "chat stream: $s"
post /tokenize "{$msgs}"
cp "$tmp/body" "$tmp/chat_tokens.json"
post /tokenize '{"prompt": "### user\nHi\n### assistant\n", "add_special_tokens": false}'
[ "$(js "$tmp/chat_tokens.json" 'd.tokens')" = "$(js "$tmp/body" 'd.tokens')" ] && pass ||
    fail "tokenize messages: $(cat "$tmp/chat_tokens.json") vs $(cat "$tmp/body")"

# ---- concurrency and disconnects ------------------------------------------------------------
pids=
for i in $(seq 1 16); do
    curl -s -N --max-time 60 -H "Authorization: Bearer $key" \
        --data-binary "{$greedy, \"stream\": true}" -o "$tmp/par$i" "$base/v1/completions" &
    pids="$pids $!"
done
for p in $pids; do
    wait "$p"
done
wait_ok=0
for i in $(seq 1 16); do
    s=$(sse "$tmp/par$i") && [ "$(node -e 'process.stdout.write(JSON.parse(process.argv[1])[0])' "$s")" = "$greedy_text" ] &&
        wait_ok=$((wait_ok + 1))
done
[ "$wait_ok" = 16 ] && pass || fail "16 parallel streams: $wait_ok equal to the prompt served alone"
# A client that leaves after the first bytes of a long stream; the server goes on serving.
curl -s -N --max-time 60 -H "Authorization: Bearer $key" --data-binary \
    '{"prompt": [5], "max_tokens": 250, "ignore_eos": true, "stream": true}' "$base/v1/completions" |
    head -c 200 >/dev/null
curl -s --max-time 0.5 -H "Authorization: Bearer $key" --data-binary \
    '{"prompt": [5], "max_tokens": 250, "ignore_eos": true}' "$base/v1/completions" >/dev/null
post /v1/completions "{$greedy}"
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.choices[0].text')" = "$greedy_text" ] && pass ||
    fail "serving after clients left: $code"

# /metrics: once every client is gone nothing runs and every KV block is free again (the
# disconnected requests were aborted), tokens were generated and the draft proposed some.
for _ in $(seq 1 100); do
    curl -s --max-time 10 -o "$tmp/metrics" "$base/metrics"
    grep -q '^vllm:num_requests_running{model_name="tiny"} 0$' "$tmp/metrics" && break
    sleep 0.1
done
grep -q '^vllm:num_requests_running{model_name="tiny"} 0$' "$tmp/metrics" &&
    grep -q '^vllm:num_requests_waiting{model_name="tiny"} 0$' "$tmp/metrics" &&
    grep -q '^vllm:gpu_cache_usage_perc{model_name="tiny"} 0$' "$tmp/metrics" &&
    grep -q '^# TYPE vllm:generation_tokens_total counter$' "$tmp/metrics" &&
    grep -Eq '^vllm:generation_tokens_total\{model_name="tiny"\} [1-9][0-9]*$' "$tmp/metrics" &&
    grep -Eq '^vllm:spec_decode_num_draft_tokens_total\{model_name="tiny"\} [1-9][0-9]*$' "$tmp/metrics" &&
    pass || fail "metrics after the clients left: $(cat "$tmp/metrics")"
code=$(curl -s --max-time 10 -o "$tmp/body" -w '%{http_code}' --data-binary '{"prompt": "x"}' "$base/tokenize")
[ "$code" = 200 ] && pass || fail "tokenize needs no key (only /v1/ paths do, as vLLM): $code"

# ---- SIGTERM --------------------------------------------------------------------------------
curl -s -N --max-time 60 -H "Authorization: Bearer $key" --data-binary \
    '{"prompt": [5], "max_tokens": 250, "ignore_eos": true, "stream": true}' -o "$tmp/last" \
    "$base/v1/completions" &
last=$!
sleep 0.2
kill -TERM "$pid"
t0=$(date +%s)
rc=
for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid"; rc=$?; break; }
    sleep 0.1
done
pid=
[ "$rc" = 0 ] && [ $(($(date +%s) - t0)) -le 10 ] && pass || fail "SIGTERM: exit '$rc'"
wait "$last"
grep -q 'stopping' "$tmp/server.log" && pass || fail "no stop message: $(cat "$tmp/server.log")"

# A model folder that cannot load: listening first, then exit 1 with the message.
sed "s|model = \"$tmp/t\";|model = \"$tmp/none\";|" "$tmp/spec.cfg" >"$tmp/bad.cfg"
timeout 60 "$server" --config "$tmp/bad.cfg" --port 0 >"$tmp/bad.log" 2>&1
rc=$?
[ "$rc" = 1 ] && grep -q 'listening on' "$tmp/bad.log" && grep -q "$tmp/none" "$tmp/bad.log" &&
    pass || fail "failed load: exit $rc: $(cat "$tmp/bad.log")"

# Loading is visible: a tokenizer.json that is a FIFO holds the load until it is written, and
# meanwhile the server listens and answers 503.
mkdir "$tmp/fifo" && cp "$tmp/t/tokenizer_config.json" "$tmp/fifo/" &&
    mkfifo "$tmp/fifo/tokenizer.json" || exit 99
"$server" --config "$tmp/spec.cfg" --port 0 --tokenizer "$tmp/fifo" >"$tmp/fifo.log" 2>&1 &
pid=$!
port=
for _ in $(seq 1 100); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$tmp/fifo.log" 2>/dev/null)
    [ -n "$port" ] && break
    sleep 0.1
done
base="http://127.0.0.1:$port"
health=$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$base/health")
post /v1/completions '{"prompt": "x"}'
[ "$health" = 503 ] && [ "$code" = 503 ] && [ "$(js "$tmp/body" 'd.error.message')" = "the model is still loading" ] &&
    pass || fail "while loading: $code $(cat "$tmp/body")"
timeout 10 cat "$tmp/t/tokenizer.json" >"$tmp/fifo/tokenizer.json" 2>/dev/null
kill -TERM "$pid"
wait "$pid"
pid=

# server.request_timeout_s: a request that would run for seconds is aborted after one.
"$mk" --out "$tmp/long" --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 \
    --intermediate 128 --vocab 270 --max-positions 16384 --dtype f32 >/dev/null || exit 99
cp "$tmp/t/tokenizer.json" "$tmp/t/tokenizer_config.json" "$tmp/long/" || exit 99
cat >"$tmp/long.cfg" <<CFG
model = "$tmp/long";
target: { worker = "cpu"; threads = 1; };
cache: { block_size = 16; cpu_kv_space_gib = 0.05; };
server: { port = 0; request_timeout_s = 1; };
CFG
"$server" --config "$tmp/long.cfg" >"$tmp/long.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    grep -q 'ready$' "$tmp/long.log" 2>/dev/null && break
    sleep 0.1
done
base="http://127.0.0.1:$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$tmp/long.log")"
post /v1/completions '{"prompt": [5], "max_tokens": 16000, "ignore_eos": true}'
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.choices[0].finish_reason + " " + (d.usage.completion_tokens < 16000)')" = "abort true" ] &&
    pass || fail "request_timeout_s: $code $(head -c 300 "$tmp/body")"
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ "$rc" = 0 ] && pass || fail "second server: exit $rc"

echo "server_check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
