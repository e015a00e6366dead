#!/bin/sh
# duet-bench runs every benchmark (quick sizes) and prints JSON with a result per operation.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
out=$("$top_builddir/tools/duet-bench" --quick --repeats 1 block-manager) || {
    echo "FAIL: duet-bench exited $?"
    exit 1
}
results=$(printf '%s\n' "$out" | grep -c '"ops_per_s"')
for name in allocate_2048_prefix_caching_cold allocate_2048_prefix_caching_cached \
    decode_step_256_seqs decode_step_256_seqs_lookahead4 fork_2048 swap_out_2048 swap_in_2048; do
    printf '%s\n' "$out" | grep -q "\"name\": \"$name\"" || {
        echo "FAIL: no result named $name"
        printf '%s\n' "$out"
        exit 1
    }
done
[ "$results" -ge 12 ] || { echo "FAIL: $results results, want 12"; exit 1; }
out=$("$top_builddir/tools/duet-bench" --quick --repeats 1 scheduler) || {
    echo "FAIL: duet-bench scheduler exited $?"
    exit 1
}
for name in scheduler_decode_step_64_seqs scheduler_decode_step_256_seqs \
    scheduler_decode_step_1024_seqs scheduler_decode_step_4096_seqs \
    scheduler_decode_step_256_seqs_lookahead4 scheduler_burst_1000_prompts; do
    printf '%s\n' "$out" | grep -q "\"name\": \"$name\"" || {
        echo "FAIL: no result named $name"
        printf '%s\n' "$out"
        exit 1
    }
done
printf '%s\n' "$out" | grep -q '"step_ns"' || { echo "FAIL: no step_ns"; exit 1; }
"$top_builddir/tools/duet-bench" --quick nosuch >/dev/null 2>&1 && { echo "FAIL: unknown name"; exit 1; }
echo "1 passed, 0 failed"
