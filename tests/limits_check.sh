#!/bin/sh
# duet-run under address-space limits (ulimit -v): from too small to load to enough to serve,
# every run either serves every request (exit 0) or stops with a message (exit 1) before the
# first one, and none dies of a signal. oneDNN's JIT crashes instead of failing when an mmap is
# refused; the CPU worker creates every primitive when its cache is set up, after checking the
# room, so a limit ends the run at load where nothing is lost. Plain and speculative decoding on
# tiny generated models. Below what libgomp needs for its threads it exits 1 itself, with its
# message, at load. Skipped under AddressSanitizer (its shadow memory needs no limit).
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
run="$top_builddir/tools/duet-run"
mk="$top_builddir/tools/duet-mkmodel"
if ldd "$top_builddir/.libs/libduet.so" 2>/dev/null | grep -q libasan; then
    echo "limits_check: SKIP under AddressSanitizer"
    exit 77
fi
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
export DUET_PLUGIN_PATH="$top_builddir/cpu_worker/.libs"
"$mk" --out "$tmp/t" --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 \
    --intermediate 128 --vocab 300 --max-positions 256 --dtype f32 >/dev/null &&
    "$mk" --out "$tmp/d" --draft-of "$tmp/t" --layers 1 >/dev/null || exit 99
cat >"$tmp/spec.cfg" <<CFG
model = "$tmp/t";
target: { worker = "cpu"; threads = 2; };
speculative: { draft_model = "$tmp/d"; worker = "cpu"; num_tokens = 4; };
cache: { block_size = 16; cpu_kv_space_gib = 0.01; };
CFG
i=0
while [ $i -lt 40 ]; do
    echo "$((3 + i)),$((40 + i)),$((90 + i)),7,8,9,10,11,12,13,$((200 + i))"
    i=$((i + 1))
done >"$tmp/prompts"
passed=0 failed=0
for mode in spec plain; do
    served=0 refused=0
    [ "$mode" = plain ] && extra=--no-speculative || extra=
    for kib in 50000 100000 150000 200000 250000 300000 350000 400000 450000 500000 600000 \
        800000 1200000 2000000; do
        (
            ulimit -v "$kib" &&
                exec "$run" --config "$tmp/spec.cfg" $extra --prompts "$tmp/prompts" \
                    --max-tokens 20 --ignore-eos
        ) >"$tmp/out" 2>"$tmp/err"
        rc=$?
        lines=$(grep -c '^request ' "$tmp/out")
        if [ "$rc" -eq 0 ] && [ "$lines" -eq 40 ]; then
            served=$((served + 1))
        elif [ "$rc" -eq 1 ] && [ "$lines" -eq 0 ] && grep -Eq "^(duet-run|libgomp): ." "$tmp/err"; then
            refused=$((refused + 1))
        else
            failed=$((failed + 1))
            echo "FAIL: $mode, ulimit -v $kib: exit $rc, $lines of 40 requests printed:"
            tail -n 3 "$tmp/err" | sed 's/^/    /'
        fi
    done
    echo "limits_check: $mode: $served limits served every request, $refused refused at load"
    if [ "$served" -gt 0 ] && [ "$refused" -gt 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $mode: the scan should cover both a refused load and a full run"
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
