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

# cpu-worker: a tiny generated model through the mock plugin (the harness: bandwidth probe, model
# generation and reuse, prefill, decode, the bandwidth model), then through the real CPU worker
# when it was built.
models=$(mktemp -d "${TMPDIR:-/tmp}/duet-bench-models.XXXXXX") || exit 1
trap 'rm -rf "$models"' EXIT
cpu_worker_run() { # PLUGIN DTYPES
    "$top_builddir/tools/duet-bench" --quick --repeats 1 --plugin "$1" --models "$models" \
        --preset tiny --dtype "$2" --batch 1,4 cpu-worker
}
cpu_worker_check() { # OUTPUT DTYPE...
    o=$1
    shift
    for name in memory_read_bandwidth; do
        printf '%s\n' "$o" | grep -q "\"name\": \"$name\"" || {
            echo "FAIL: no result named $name"
            printf '%s\n' "$o"
            exit 1
        }
    done
    for dtype in "$@"; do
        for name in tiny_${dtype}_prefill_64 tiny_${dtype}_decode_batch_1 \
            tiny_${dtype}_decode_batch_4; do
            printf '%s\n' "$o" | grep -q "\"name\": \"$name\"" || {
                echo "FAIL: no result named $name"
                printf '%s\n' "$o"
                exit 1
            }
        done
    done
    for field in gb_per_s_best tokens_per_s limit_tokens_per_s fraction_of_limit; do
        printf '%s\n' "$o" | grep -q "\"$field\"" || { echo "FAIL: no $field"; exit 1; }
    done
}
mock=${DUET_TEST_PLUGIN_DIR:-$top_builddir/tests/.libs}/duet_mock_worker.so
if [ -f "$mock" ]; then
    out=$(cpu_worker_run "$mock" f32) || { echo "FAIL: cpu-worker with the mock exited $?"; exit 1; }
    cpu_worker_check "$out" f32
    [ -f "$models/tiny-bf16/config.json" ] || { echo "FAIL: no generated model"; exit 1; }
    # the second run reuses the generated model
    cpu_worker_run "$mock" f32 2>&1 >/dev/null | grep -q generating && {
        echo "FAIL: the model was generated again"
        exit 1
    }
    cpu_worker_run "$mock" bf16 >/dev/null 2>&1 && { echo "FAIL: mock accepted bf16"; exit 1; }
else
    echo "SKIP: cpu-worker with the mock: $mock not built"
fi
if [ -n "${DUET_TEST_CPU_WORKER:-}" ] && [ -f "$DUET_TEST_CPU_WORKER" ]; then
    out=$(cpu_worker_run "$DUET_TEST_CPU_WORKER" f32,bf16,f16,int8,int4) || {
        echo "FAIL: cpu-worker with $DUET_TEST_CPU_WORKER exited $?"
        exit 1
    }
    cpu_worker_check "$out" f32 bf16 f16 int8 int4
    printf '%s\n' "$out" | grep -q '"weight_bytes_source": "format"' || {
        echo "FAIL: no bytes-per-step model"
        exit 1
    }
    printf '%s\n' "$out" | grep -q '"plugin_details": "GEMV kernels ' || {
        echo "FAIL: the results do not name the GEMV kernels"
        exit 1
    }
else
    echo "SKIP: cpu-worker with the CPU worker: not built (DUET_TEST_CPU_WORKER)"
fi

# spec: a tiny target and its 1-layer draft through the engine with the CPU worker, plain and at
# one k: tokens/s, the acceptance rate and the cost model.
if [ -n "${DUET_TEST_CPU_WORKER:-}" ] && [ -f "$DUET_TEST_CPU_WORKER" ]; then
    out=$("$top_builddir/tools/duet-bench" --quick --repeats 1 --plugin "$DUET_TEST_CPU_WORKER" \
        --models "$models" --threads 1 spec) || {
        echo "FAIL: spec with $DUET_TEST_CPU_WORKER exited $?"
        exit 1
    }
    for name in tiny_bf16_batch_1_plain tiny_bf16_batch_1_spec_k2 \
        tiny_bf16_batch_1_plain_after; do
        printf '%s\n' "$out" | grep -q "\"name\": \"$name\"" || {
            echo "FAIL: no result named $name"
            printf '%s\n' "$out"
            exit 1
        }
    done
    for field in acceptance_rate acceptance_per_position c_draft c_verify theoretical_speedup \
        achieved_fraction achieved_fraction_of_measured mean_tokens_per_step; do
        printf '%s\n' "$out" | grep -q "\"$field\"" || { echo "FAIL: no $field"; exit 1; }
    done
    "$top_builddir/tools/duet-bench" --quick --k 0 spec >/dev/null 2>&1 && {
        echo "FAIL: spec accepted k 0"
        exit 1
    }
else
    echo "SKIP: spec with the CPU worker: not built (DUET_TEST_CPU_WORKER)"
fi
# score: the scoring cost curve of the CPU worker on the tiny model, k = 0..8, in two precisions.
if [ -n "${DUET_TEST_CPU_WORKER:-}" ] && [ -f "$DUET_TEST_CPU_WORKER" ]; then
    out=$("$top_builddir/tools/duet-bench" --quick --repeats 2 --seconds 0.01 \
        --plugin "$DUET_TEST_CPU_WORKER" --models "$models" --threads 1 --dtype bf16,int4 \
        score 2>/dev/null) || {
        echo "FAIL: score with $DUET_TEST_CPU_WORKER exited $?"
        exit 1
    }
    for name in tiny_bf16_score_decode tiny_bf16_score_k0 tiny_bf16_score_k8 \
        tiny_int4_score_k4; do
        printf '%s\n' "$out" | grep -q "\"name\": \"$name\"" || {
            echo "FAIL: no result named $name"
            printf '%s\n' "$out"
            exit 1
        }
    done
    printf '%s\n' "$out" | grep -q '"ratio_to_decode": [0-9]' || {
        echo "FAIL: score reports no ratio_to_decode"
        exit 1
    }
else
    echo "SKIP: score with the CPU worker: not built (DUET_TEST_CPU_WORKER)"
fi
# overlap: the modelled GPU target (bench/duet_modelled_worker.so over the CPU worker) and a tiny
# CPU draft, batches 1 and 2, k 2, plain, serial and overlapped; with synthetic acceptance (the
# default, at --alpha), real acceptance, and tokens/s projected at --alpha.
modelled=$top_builddir/bench/.libs/duet_modelled_worker.so
if [ -n "${DUET_TEST_CPU_WORKER:-}" ] && [ -f "$DUET_TEST_CPU_WORKER" ] && [ -f "$modelled" ]; then
    for acceptance in synthetic real projected; do
        out=$("$top_builddir/tools/duet-bench" --quick --repeats 1 --models "$models" \
            --acceptance $acceptance overlap) || {
            echo "FAIL: overlap --acceptance $acceptance exited $?"
            exit 1
        }
        for name in overlap_batch_1_plain overlap_batch_1_k2_serial overlap_batch_1_k2_overlap \
            overlap_batch_2_plain overlap_batch_2_k2_serial overlap_batch_2_k2_overlap \
            overlap_batch_2_summary; do
            printf '%s\n' "$out" | grep -q "\"name\": \"$name\"" || {
                echo "FAIL: overlap: no result named $name"
                printf '%s\n' "$out"
                exit 1
            }
        done
        for field in hidden_draft_share target_idle_share draft_idle_share ideal_speedup \
            ideal_speedup_measured projected_tokens_per_s target_excess_share \
            mean_tokens_per_step best_k_overlap projected_best_speedup_overlap; do
            printf '%s\n' "$out" | grep -q "\"$field\"" || {
                echo "FAIL: overlap: no $field"
                exit 1
            }
        done
        # batch 2 splits into two halves of one sequence: the engine overlaps them
        printf '%s\n' "$out" | grep -q '"overlap_steps": [1-9]' || {
            echo "FAIL: overlap: no step overlapped"
            printf '%s\n' "$out"
            exit 1
        }
    done
    "$top_builddir/tools/duet-bench" --quick --alpha 2 overlap >/dev/null 2>&1 && {
        echo "FAIL: overlap accepted alpha 2"
        exit 1
    }
    "$top_builddir/tools/duet-bench" --quick --repeats 1 --models "$models" --acceptance real \
        --modelled "$models/none.so" overlap >/dev/null 2>&1 && {
        echo "FAIL: overlap ran without its target plugin"
        exit 1
    }
else
    echo "SKIP: overlap: the CPU worker or bench/duet_modelled_worker.so not built"
fi
# gemv: the CPU worker's GEMV kernels on tiny shapes, every ISA this CPU runs (generic included
# with --quick), when duet-bench was built with them (with the CPU worker).
if "$top_builddir/tools/duet-bench" --list | grep -qx gemv; then
    out=$("$top_builddir/tools/duet-bench" --quick --repeats 1 --seconds 0.002 --threads 1 \
        gemv 2>/dev/null) || {
        echo "FAIL: gemv exited $?"
        exit 1
    }
    for name in memory_read_bandwidth gemv_generic_bf16_tiny_qkv_m1 gemv_generic_int8_tiny_down_m8 \
        gemv_generic_int8_tiny_o_m32 gemv_generic_int4_tiny_gate_up_m4; do
        printf '%s\n' "$out" | grep -q "\"name\": \"$name\"" || {
            echo "FAIL: no result named $name"
            printf '%s\n' "$out"
            exit 1
        }
    done
    for field in gb_per_s fraction_of_bandwidth gmac_per_s weight_bytes; do
        printf '%s\n' "$out" | grep -q "\"$field\"" || { echo "FAIL: no $field"; exit 1; }
    done
    "$top_builddir/tools/duet-bench" --quick --group 48 gemv >/dev/null 2>&1 && {
        echo "FAIL: gemv accepted group 48"
        exit 1
    }
else
    echo "SKIP: gemv: duet-bench was built without the CPU worker's kernels"
fi
# gpu-worker: the tiny model through the GPU worker; exit 77 (built without CUDA, or no CUDA
# device) is a skip of this part, anything else but 0 a failure.
gstatus=0
out=$("$top_builddir/tools/duet-bench" --quick --repeats 1 --models "$models" --batch 1,4 \
    gpu-worker 2>"$models/gpu.err") || gstatus=$?
case $gstatus in
0)
    for name in gpu_device device_copy_bandwidth tiny_bf16_prefill_64 tiny_bf16_decode_batch_1 \
        tiny_bf16_decode_batch_4; do
        printf '%s\n' "$out" | grep -q "\"name\": \"$name\"" || {
            echo "FAIL: gpu-worker: no result named $name"
            printf '%s\n' "$out"
            exit 1
        }
    done
    printf '%s\n' "$out" | grep -q '"fraction_of_limit"' || { echo "FAIL: no fraction"; exit 1; }
    ;;
77) echo "SKIP: gpu-worker: $(cat "$models/gpu.err")" ;;
*)
    echo "FAIL: gpu-worker exited $gstatus"
    cat "$models/gpu.err"
    exit 1
    ;;
esac
"$top_builddir/tools/duet-bench" --quick --dtype int8 gpu-worker >/dev/null 2>&1
case $? in 0) echo "FAIL: gpu-worker accepted int8"; exit 1 ;; esac
# tokenizer: the hand-written byte-level fixture (exit 77 without --tokenizer).
srcdir=${DUET_TEST_SRCDIR:-.}
out=$("$top_builddir/tools/duet-bench" --quick --repeats 1 \
    --tokenizer "$srcdir/tests/fixtures/tokenizers/bytelevel" tokenizer) || {
    echo "FAIL: duet-bench tokenizer exited $?"
    exit 1
}
for name in tokenizer_load tokenizer_encode tokenizer_decode tokenizer_stream; do
    printf '%s\n' "$out" | grep -q "\"name\": \"$name\"" || {
        echo "FAIL: no result named $name"
        printf '%s\n' "$out"
        exit 1
    }
done
"$top_builddir/tools/duet-bench" --quick tokenizer >/dev/null 2>&1
case $? in 77) ;; *) echo "FAIL: tokenizer without --tokenizer is not a skip"; exit 1 ;; esac
echo "1 passed, 0 failed"
