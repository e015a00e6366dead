#!/bin/sh
# duet-server end to end with curl: a tiny generated target and draft (speculative decoding on
# the CPU worker) with the byte-level fixture tokenizer, an API key, port 0. Health and models,
# greedy completions equal to duet-run's ids, SSE framing, usage, stop strings and stop token
# ids, several prompts, seeds, n choices, logprobs and echo, priorities, penalties and logit_bias,
# tokenize / detokenize, every error status, 16 concurrent streams, a client leaving mid-stream,
# /metrics (strict exposition format, counters and histograms moved by exactly the requests
# served, vLLM's per-request metrics.speculative_decoding), chat (the rendered prompt's
# completion) and SIGTERM. JSON is read with node; every curl has a timeout and the server is
# killed on any exit.
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

. "$srcdir/tests/server_lib.sh"
server_lib_models "$tmp" || exit 99
# The chat template (the fixture tokenizer has none).
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

# prom NAME: GET /metrics into $tmp/NAME.prom, read strictly by prom_check.mjs (exposition
# format, cumulative buckets, +Inf = _count), its samples as JSON in $tmp/NAME.json
prom() {
    curl -s --max-time 10 -o "$tmp/$1.prom" "$base/metrics" &&
        node "$srcdir/tests/prom_check.mjs" "$tmp/$1.prom" >"$tmp/$1.json"
}

# mexpr A B EXPR: EXPR with a, b = the samples of prom A and B, and m(x, name) = sample NAME of
# x labelled only with model_name="tiny" (duet: prefixed)
mexpr() {
    node -e 'const r = f => JSON.parse(require("fs").readFileSync(f, "utf8"));
             const a = r(process.argv[1]), b = r(process.argv[2]);
             const m = (x, n, l = "") => x[`duet:${n}{model_name="tiny"${l}}`];
             process.stdout.write(String(eval(process.argv[3])));' "$tmp/$1.json" "$tmp/$2.json" "$3"
}

# ---- start ----------------------------------------------------------------------------------
"$server" --config "$tmp/spec.cfg" --port 0 --api-key "$key" --set server.max_body_bytes=4096 \
    --per-request-spec-decode-metrics summary >"$tmp/server.log" 2>&1 &
pid=$!
port=
for _ in $(seq 1 100); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$tmp/server.log" 2>/dev/null)
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { echo "FAIL: no 'listening on' line"; cat "$tmp/server.log"; exit 1; }
base="http://127.0.0.1:$port"
# Prefix caching is on for the server unless the configuration says otherwise (below: off).
grep -q '^duet-server: prefix caching on$' "$tmp/server.log" && pass ||
    fail "prefix caching is not on by default: $(cat "$tmp/server.log")"
health=
for _ in $(seq 1 600); do
    health=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$base/health")
    [ "$health" = 200 ] && break
    [ "$health" = 503 ] || [ "$health" = 000 ] || break
    sleep 0.1
done
[ "$health" = 200 ] && pass || { fail "health: $health"; cat "$tmp/server.log"; exit 1; }
# A fresh server's metrics: well formed, every counter and histogram at 0.
prom m0 && [ "$(mexpr m0 m0 '[m(a, "e2e_request_latency_seconds_count"), m(a, "time_to_first_token_seconds_count"), m(a, "generation_tokens_total"), m(a, "spec_decode_num_drafts_total"), m(a, "spec_decode_num_accepted_tokens_per_pos_total", ",position=\"2\"")]')" = 0,0,0,0,0 ] &&
    pass || fail "metrics of a fresh server: $(cat "$tmp/m0.prom")"

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
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.choices.map(c => c.index).join(",") + " " + d.usage.prompt_tokens + " " + ("metrics" in d)')" = "0,1 7 false" ] &&
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

# ---- n choices per prompt ----------------------------------------------------------------------
# Choice p * n + i is sequence i of prompt p; greedy sequences all equal the prompt's greedy
# text; the prompt counts once in the usage.
post /v1/completions '{"prompt": [[5, 6, 7, 8], [9, 10, 11]], "n": 3, "max_tokens": 24, "temperature": 0, "ignore_eos": true}'
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.choices.map(c => c.index).join(",") + " " + JSON.stringify(d.usage)')" = \
    '0,1,2,3,4,5 {"prompt_tokens":7,"total_tokens":151,"completion_tokens":144}' ] &&
    [ "$(js "$tmp/body" 'd.choices.slice(0, 3).map(c => c.text).join("|")')" = "$greedy_text|$greedy_text|$greedy_text" ] &&
    [ "$(js "$tmp/body" 'new Set(d.choices.slice(3).map(c => c.text)).size')" = 1 ] &&
    pass || fail "n = 3 greedy: $(cat "$tmp/body")"
# Seeded: choice i draws as an n = 1 request seeded seed + i, reproducibly; the choices differ.
post /v1/completions "{$sampled, \"n\": 3}"
cp "$tmp/body" "$tmp/n3.json"
post /v1/completions "{$sampled, \"n\": 3}"
same=$(js "$tmp/body" 'JSON.stringify(d.choices)')
[ "$code" = 200 ] && [ "$same" = "$(js "$tmp/n3.json" 'JSON.stringify(d.choices)')" ] &&
    [ "$(js "$tmp/n3.json" 'new Set(d.choices.map(c => c.text)).size')" = 3 ] &&
    pass || fail "n = 3 seeded: $(cat "$tmp/n3.json") then $same"
solo=
for i in 0 1 2; do
    post /v1/completions "{$(echo "$sampled" | sed "s/\"seed\": 42/\"seed\": $((42 + i))/")}"
    solo="$solo$(js "$tmp/body" 'd.choices[0].text')|"
done
[ "$solo" = "$(js "$tmp/n3.json" 'd.choices.map(c => c.text + "|").join("")')" ] && pass ||
    fail "n = 3 seeded vs seeds 42..44 alone: $solo vs $(cat "$tmp/n3.json")"
# Streamed: every chunk names its choice; the texts, finishes and usage equal the answer above.
post /v1/completions "{$sampled, \"n\": 3, \"stream\": true, \"stream_options\": {\"include_usage\": true}}" -N
got=$(node -e '
const raw = require("fs").readFileSync(process.argv[1], "utf8");
const t = [], f = []; let usage = null;
raw.split("\n\n").filter(e => e && e !== "data: [DONE]").forEach(e => {
  const d = JSON.parse(e.slice(6));
  if (!d.choices.length) { usage = d.usage; return; }
  if (d.choices.length !== 1) process.exit(1);
  const c = d.choices[0];
  t[c.index] = (t[c.index] || "") + c.text;
  if (c.finish_reason) f[c.index] = c.finish_reason;
});
process.stdout.write(JSON.stringify([t, f, usage]));' "$tmp/body")
[ "$got" = "$(js "$tmp/n3.json" 'JSON.stringify([d.choices.map(c => c.text), d.choices.map(c => c.finish_reason), d.usage])')" ] &&
    pass || fail "n = 3 streamed: $got vs $(cat "$tmp/n3.json")"
# Chat: n messages; streamed, each choice opens with its role.
post /v1/chat/completions '{"messages": [{"role": "user", "content": "Hi"}], "n": 2, "max_tokens": 6, "temperature": 0, "ignore_eos": true, "stream": true}' -N
[ "$(node -e '
const raw = require("fs").readFileSync(process.argv[1], "utf8");
const r = [], t = [];
raw.split("\n\n").filter(e => e && e !== "data: [DONE]").forEach(e => {
  const c = JSON.parse(e.slice(6)).choices[0];
  if (c.delta.role) r.push(c.index); else t[c.index] = (t[c.index] || "") + (c.delta.content || "");
});
process.stdout.write(r.join(",") + " " + (t.length === 2 && t[0] === t[1] && t[0].length > 0));' "$tmp/body")" = "0,1 true" ] &&
    pass || fail "chat n = 2 streamed: $(head -c 800 "$tmp/body")"
# A stop string ends only its own choice; the others run on.
post /v1/completions "{$greedy, \"n\": 2, \"stop\": [$stopjson]}"
[ "$(js "$tmp/body" 'd.choices.map(c => c.finish_reason + ":" + c.text).join("|")')" = "stop:$wantstop|stop:$wantstop" ] &&
    pass || fail "n = 2 with a stop string: $(cat "$tmp/body")"
expect_error "n = 0" 400 "'n' must be in" /v1/completions '{"prompt": "x", "n": 0}'
expect_error "priority without the priority policy" 400 "Priority scheduling is not enabled" /v1/completions '{"prompt": "x", "priority": 1}'

# ---- logprobs and echo ------------------------------------------------------------------------
msgs='"messages": [{"role": "user", "content": "Hi"}]'
# The values are the engine's, as duet-run --json prints them (6 digits).
"$run" --config "$tmp/spec.cfg" --prompt-ids 5,6,7,8 --max-tokens 24 --temperature 0 \
    --ignore-eos --logprobs 3 --prompt-logprobs 3 --json 2>"$tmp/run.err" | head -n 1 >"$tmp/runlp.json" ||
    { cat "$tmp/run.err"; exit 99; }
# lp_equal RUN_JSON ANSWER_JSON: the answer's completions logprobs (with echo when the first
# token_logprob is null) against duet-run's ids, logprobs and prompt_logprobs
lp_equal() {
    node -e '
const fs = require("fs");
const r = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
const d = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const lp = d.choices[0].logprobs, near = (a, b) => Math.abs(a - b) <= 1e-4 * Math.max(1, Math.abs(b));
const echo = lp.token_logprobs[0] === null;
const ids = echo ? r.prompt_ids.concat(r.ids) : r.ids;
const maps = echo ? r.prompt_logprobs.concat(r.logprobs) : r.logprobs;
const ok = lp.tokens.length === ids.length && lp.token_logprobs.length === ids.length &&
  lp.top_logprobs.length === ids.length && lp.text_offset.length === ids.length &&
  lp.text_offset.every((o, t) => t === 0 ? o === 0 : o === lp.text_offset[t - 1] + [...lp.tokens[t - 1]].length) &&
  ids.every((id, t) => {
    if (maps[t] === null) return lp.token_logprobs[t] === null && lp.top_logprobs[t] === null;
    /* tokens that decode alike share a key (as in vLLM): every value is one of the engine values, the
       most likely one among them */
    const top = Object.values(lp.top_logprobs[t]).sort((a, b) => b - a);
    const want = Object.values(maps[t]).sort((a, b) => b - a);
    return near(lp.token_logprobs[t], maps[t][id]) && top.length >= 1 && top.length <= 4 &&
      near(top[0], want[0]) && top.every(v => want.some(w => near(v, w)));
  });
process.stdout.write(ok ? "ok" : "differ");' "$1" "$2"
}
post /v1/completions "{$greedy, \"logprobs\": 3}"
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.choices[0].text')" = "$greedy_text" ] &&
    [ "$(lp_equal "$tmp/runlp.json" "$tmp/body")" = ok ] && pass ||
    fail "logprobs 3: $(cat "$tmp/body") vs $(cat "$tmp/runlp.json")"
cp "$tmp/body" "$tmp/lp3.json"
post /v1/completions "{$greedy, \"logprobs\": 0}"
[ "$(js "$tmp/body" 'd.choices[0].logprobs.top_logprobs.every(m => Object.keys(m).length === 1) && JSON.stringify(d.choices[0].logprobs.token_logprobs)')" = \
    "$(js "$tmp/lp3.json" 'JSON.stringify(d.choices[0].logprobs.token_logprobs)')" ] && pass ||
    fail "logprobs 0: $(cat "$tmp/body")"
# echo: the prompt's text leads, and with logprobs its tokens (the first one null).
post /v1/completions "{$greedy, \"logprobs\": 3, \"echo\": true}"
prompt_text=$(echo '[5, 6, 7, 8]' | "$tokenize" --model "$tmp/t" --decode | node -e 'let s="";process.stdin.on("data",c=>s+=c).on("end",()=>process.stdout.write(JSON.parse(s).text))')
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.choices[0].text')" = "$prompt_text$greedy_text" ] &&
    [ "$(lp_equal "$tmp/runlp.json" "$tmp/body")" = ok ] && pass ||
    fail "echo with logprobs: $(cat "$tmp/body") vs $(cat "$tmp/runlp.json")"
post /v1/completions '{"prompt": "Hello", "max_tokens": 5, "temperature": 0, "echo": true}'
cp "$tmp/body" "$tmp/echo.json"
post /v1/completions '{"prompt": "Hello", "max_tokens": 5, "temperature": 0}'
[ "$(js "$tmp/echo.json" '[d.choices[0].text, d.choices[0].logprobs, d.usage]')" = \
    "$(js "$tmp/body" '["Hello" + d.choices[0].text, null, d.usage]')" ] && pass ||
    fail "echo: $(cat "$tmp/echo.json") vs $(cat "$tmp/body")"
# Streamed, the chunks' logprobs add up to the answer's (echo and n included).
post /v1/completions "{$greedy, \"logprobs\": 3, \"echo\": true, \"n\": 2}"
cp "$tmp/body" "$tmp/lpn.json"
post /v1/completions "{$greedy, \"logprobs\": 3, \"echo\": true, \"n\": 2, \"stream\": true}" -N
got=$(node -e '
const raw = require("fs").readFileSync(process.argv[1], "utf8");
const c = [];
raw.split("\n\n").filter(e => e && e !== "data: [DONE]").forEach(e => {
  const x = JSON.parse(e.slice(6)).choices[0];
  const o = c[x.index] = c[x.index] || {text: "", logprobs: {tokens: [], token_logprobs: [], top_logprobs: [], text_offset: []}};
  o.text += x.text;
  for (const k in o.logprobs) o.logprobs[k].push(...x.logprobs[k]);
});
process.stdout.write(JSON.stringify(c));' "$tmp/body")
[ "$got" = "$(js "$tmp/lpn.json" 'JSON.stringify(d.choices.map(c => ({text: c.text, logprobs: c.logprobs})))')" ] &&
    pass || fail "logprobs streamed: $got vs $(cat "$tmp/lpn.json")"
# Chat: logprobs true with top_logprobs N; the values are the completion's of the rendered prompt.
post /v1/chat/completions "{$msgs, \"max_tokens\": 12, \"temperature\": 0, \"ignore_eos\": true, \"logprobs\": true, \"top_logprobs\": 2}"
cp "$tmp/body" "$tmp/chatlp.json"
post /v1/completions "{\"prompt\": \"### user\\nHi\\n### assistant\\n\", \"add_special_tokens\": false, \"max_tokens\": 12, \"temperature\": 0, \"ignore_eos\": true, \"logprobs\": 2}"
[ "$(js "$tmp/chatlp.json" 'const c = d.choices[0].logprobs.content; JSON.stringify([c.map(e => e.token), c.map(e => e.logprob), c.every(e => e.top_logprobs.length === 2 && JSON.stringify(e.bytes) === JSON.stringify([...Buffer.from(e.token)]) && e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob)])')" = \
    "$(js "$tmp/body" 'const l = d.choices[0].logprobs; JSON.stringify([l.tokens, l.token_logprobs, true])')" ] &&
    pass || fail "chat logprobs: $(cat "$tmp/chatlp.json") vs $(cat "$tmp/body")"
post /v1/chat/completions "{$msgs, \"max_tokens\": 4, \"logprobs\": true, \"stream\": true}" -N
[ "$(node -e '
const raw = require("fs").readFileSync(process.argv[1], "utf8");
let n = 0;
raw.split("\n\n").filter(e => e && e !== "data: [DONE]").forEach(e => {
  const c = JSON.parse(e.slice(6)).choices[0];
  if (c.logprobs) n += c.logprobs.content.filter(x => x.top_logprobs.length === 0).length;
});
process.stdout.write(String(n));' "$tmp/body")" = 4 ] && pass || fail "chat logprobs streamed: $(head -c 800 "$tmp/body")"
expect_error "top_logprobs without logprobs" 400 "'logprobs' must be set to true" /v1/chat/completions "{$msgs, \"top_logprobs\": 2}"
expect_error "logprobs above 20" 400 "'logprobs' must be in" /v1/completions '{"prompt": "x", "logprobs": 21}'
expect_error "chat echo" 400 "'echo' is not supported yet" /v1/chat/completions "{$msgs, \"echo\": true}"

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
expect_error "best_of" 400 "'best_of' is not supported yet" /v1/completions '{"prompt": "x", "best_of": 2}'
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
    grep -q '^duet:num_requests_running{model_name="tiny"} 0$' "$tmp/metrics" && break
    sleep 0.1
done
grep -q '^duet:num_requests_running{model_name="tiny"} 0$' "$tmp/metrics" &&
    grep -q '^duet:num_requests_waiting{model_name="tiny"} 0$' "$tmp/metrics" &&
    grep -q '^duet:gpu_cache_usage_perc{model_name="tiny"} 0$' "$tmp/metrics" &&
    grep -q '^# TYPE duet:generation_tokens counter$' "$tmp/metrics" &&
    grep -Eq '^duet:generation_tokens_total\{model_name="tiny"\} [1-9][0-9]*$' "$tmp/metrics" &&
    grep -Eq '^duet:spec_decode_num_draft_tokens_total\{model_name="tiny"\} [1-9][0-9]*$' "$tmp/metrics" &&
    grep -q '^duet:spec_decode_synthetic_acceptance{model_name="tiny"} 0$' "$tmp/metrics" &&
    grep -q '^duet:time_to_first_token_seconds_bucket{le="0.001",model_name="tiny"} ' "$tmp/metrics" &&
    grep -q '^duet:e2e_request_latency_seconds_bucket{le="7680",model_name="tiny"} ' "$tmp/metrics" &&
    pass || fail "metrics after the clients left: $(cat "$tmp/metrics")"

# Three requests on a quiet server move the counters by exactly their own counts: one finished
# request and one first token each in the histograms, their tokens, and their speculative counts
# as each answer's metrics.speculative_decoding reports them (vLLM's per-request "summary",
# asked for with --per-request-spec-decode-metrics; in a stream, in the usage chunk).
prom m1 || fail "metrics before three requests: $(cat "$tmp/m1.prom")"
post /v1/completions "{$greedy}"
js "$tmp/body" 'd.metrics.speculative_decoding' >"$tmp/sd1.json"
[ "$(js "$tmp/body" 'd.choices[0].text')" = "$greedy_text" ] && pass ||
    fail "metrics changed the text: $(cat "$tmp/body")"
post /v1/completions "{$greedy, \"stream\": true, \"stream_options\": {\"include_usage\": true}}" -N
node -e 'const ev = require("fs").readFileSync(process.argv[1], "utf8").split("\n\n")
        .filter(e => e.startsWith("data: {")).map(e => JSON.parse(e.slice(6)));
    const u = ev.filter(d => d.choices.length === 0), m = ev.filter(d => "metrics" in d);
    if (u.length !== 1 || m.length !== 1 || m[0] !== u[0]) process.exit(1);
    process.stdout.write(JSON.stringify(u[0].metrics.speculative_decoding));' "$tmp/body" \
    >"$tmp/sd2.json" || fail "metrics streamed not in the usage chunk alone: $(cat "$tmp/body")"
post /v1/chat/completions "{$msgs, \"max_tokens\": 12, \"temperature\": 0, \"ignore_eos\": true}"
js "$tmp/body" 'd.metrics.speculative_decoding' >"$tmp/sd3.json"
prom m2 || fail "metrics after three requests: $(cat "$tmp/m2.prom")"
# sd: the three metrics.speculative_decoding objects
sd=$(node -e 'const r = f => JSON.parse(require("fs").readFileSync(f, "utf8"));
    process.stdout.write(JSON.stringify(process.argv.slice(1).map(r)))' \
    "$tmp/sd1.json" "$tmp/sd2.json" "$tmp/sd3.json")
[ "$(node -e 'const s = JSON.parse(process.argv[1]), near = (x, y) => Math.abs(x - y) < 1e-9;
    process.stdout.write(String(s.every(x => x.num_spec_tokens === 3 && x.acceptance_histogram.length === 4 &&
        x.acceptance_histogram.reduce((p, q) => p + q, 0) === x.num_spec_steps &&
        x.acceptance_histogram.reduce((p, q, j) => p + j * q, 0) === x.num_accepted_draft_tokens &&
        x.num_spec_steps > 0 && x.num_draft_tokens <= 3 * x.num_spec_steps &&
        near(x.mean_acceptance_length, 1 + x.num_accepted_draft_tokens / x.num_spec_steps) &&
        near(x.draft_acceptance_rate, x.num_accepted_draft_tokens / x.num_draft_tokens))))' "$sd")" = true ] &&
    pass || fail "metrics.speculative_decoding: $sd"
want=$(node -e 'const s = JSON.parse(process.argv[1]), t = k => s.reduce((p, x) => p + x[k], 0);
    const at = j => s.reduce((p, x) => p + x.acceptance_histogram.slice(j + 1).reduce((a, b) => a + b, 0), 0);
    process.stdout.write([3, 3, 60, t("num_spec_steps"), t("num_draft_tokens"),
        t("num_accepted_draft_tokens"), [0, 1, 2].map(at).join(":"), true, 0, 0].join(","))' "$sd")
got=$(mexpr m1 m2 'const d = n => m(b, n) - m(a, n), pos = j => `,position="${j}"`;
    [d("e2e_request_latency_seconds_count"), d("time_to_first_token_seconds_count"),
     d("generation_tokens_total"), d("spec_decode_num_drafts_total"),
     d("spec_decode_num_draft_tokens_total"), d("spec_decode_num_accepted_tokens_total"),
     [0, 1, 2].map(j => m(b, "spec_decode_num_accepted_tokens_per_pos_total", pos(j)) -
                        m(a, "spec_decode_num_accepted_tokens_per_pos_total", pos(j))).join(":"),
     d("prompt_tokens_total") >= 8 && d("e2e_request_latency_seconds_sum") > 0 &&
         d("time_to_first_token_seconds_sum") > 0 && d("engine_steps_total") >= 20 &&
         d("engine_step_seconds_total") > 0,
     m(b, "num_requests_running"), m(b, "gpu_cache_usage_perc")].join(",")')
[ -n "$want" ] && [ "$got" = "$want" ] && pass ||
    fail "metrics moved by three requests: $got (want $want)"
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
"$server" --config "$tmp/long.cfg" --set 'scheduler.policy="priority"' --set scheduler.max_num_seqs=4 \
    --set cache.prefix_caching=false >"$tmp/long.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    grep -q 'ready$' "$tmp/long.log" 2>/dev/null && break
    sleep 0.1
done
base="http://127.0.0.1:$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$tmp/long.log")"
grep -q '^duet-server: prefix caching off$' "$tmp/long.log" && pass ||
    fail "--set cache.prefix_caching=false: $(cat "$tmp/long.log")"
post /v1/completions '{"prompt": [5], "max_tokens": 16000, "ignore_eos": true}'
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.choices[0].finish_reason + " " + (d.usage.completion_tokens < 16000)')" = "abort true" ] &&
    pass || fail "request_timeout_s: $code $(head -c 300 "$tmp/body")"
# Under the priority policy a priority is accepted.
post /v1/completions '{"prompt": [5], "max_tokens": 4, "ignore_eos": true, "priority": -3}'
[ "$code" = 200 ] && [ "$(js "$tmp/body" 'd.usage.completion_tokens')" = 4 ] && pass ||
    fail "priority under the priority policy: $code $(cat "$tmp/body")"
expect_error "n above max_num_seqs" 400 "max_num_seqs" /v1/completions '{"prompt": [5], "n": 5}'
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[ "$rc" = 0 ] && pass || fail "second server: exit $rc"

echo "server_check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
