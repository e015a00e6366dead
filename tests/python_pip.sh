#!/bin/sh
# `pip install build/python` works: the staged package installs into a fresh virtual environment
# (Debian's setuptools, no network: --no-build-isolation --no-index) and, run from outside the
# build tree, generates with a model of its own. SKIP (77) without Python's venv or pip.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
python=${DUET_TEST_PYTHON:-python3}
[ -n "${DUET_TEST_CPU_WORKER:-}" ] && [ -f "$DUET_TEST_CPU_WORKER" ] ||
    { echo "SKIP: the CPU worker was not built"; exit 77; }
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
# The configured Python, else Debian's (python3-venv, -pip, -setuptools, -wheel): pip builds
# the wheel with them, offline.
venv_ok() {
    rm -rf "$tmp/venv"
    "$1" -m venv --system-site-packages "$tmp/venv" >"$tmp/venv.log" 2>&1 &&
        "$tmp/venv/bin/python" -m pip --version >/dev/null 2>&1 &&
        "$tmp/venv/bin/python" -c 'import setuptools, wheel' 2>>"$tmp/venv.log"
}
if ! venv_ok "$python" && ! { [ -x /usr/bin/python3 ] && venv_ok /usr/bin/python3; }; then
    echo "SKIP: no venv with pip, setuptools and wheel for $python or /usr/bin/python3"
    echo "(Debian: python3-venv python3-pip python3-setuptools python3-wheel)"
    tail -3 "$tmp/venv.log"
    exit 77
fi
cp -R "$top_builddir/python" "$tmp/src" && rm -rf "$tmp/src/build" "$tmp/src"/*.egg-info
if ! "$tmp/venv/bin/python" -m pip install --no-build-isolation --no-index --quiet \
    "$tmp/src" >"$tmp/pip.log" 2>&1; then
    echo "FAIL: pip install"
    cat "$tmp/pip.log"
    exit 1
fi
"$top_builddir/tools/duet-mkmodel" --out "$tmp/m" --arch llama --hidden 64 --layers 1 \
    --heads 4 --kv-heads 2 --intermediate 128 --vocab 256 >/dev/null || exit 99
cd "$tmp" || exit 99
unset PYTHONPATH
. "${DUET_TEST_SRCDIR:-.}/tests/sanitizer_preload.sh"
sanitizer_preload "$top_builddir/.libs/libduet.so"
if ! "$tmp/venv/bin/python" - "$tmp/m" <<'PY'
import sys
import duet
from duet import LLM, SamplingParams
assert duet.__file__.startswith(sys.prefix), duet.__file__
llm = LLM(sys.argv[1], skip_tokenizer_init=True, config={"cache.cpu_kv_space_gib": 0.05})
out = llm.generate({"prompt_token_ids": [1, 2, 3]}, SamplingParams(max_tokens=5,
                   ignore_eos=True), use_tqdm=False)
assert len(out[0].outputs[0].token_ids) == 5, out
print("pip-installed duet", duet.__version__, "from", duet.__file__, "generated",
      out[0].outputs[0].token_ids)
PY
then
    echo "FAIL: the pip-installed package"
    exit 1
fi
echo "PASS: pip install of the build tree's package"
