#!/bin/sh
# Run the GPU worker's own code on the CPU (`make check-gpu-emu`, tools/gpu-emu/local.mk; see the
# comment in emu_rt.cc and docs/gpu-worker.md, "Host emulation").
#
# In $builddir/tools/gpu-emu: builds libemu_cuda.so (cudart / cuBLAS mocks, fibers), copies
# $srcdir/gpu_worker into src/, rewrites kernels.cu and sample.cu into C++ (rewrite.py), builds
# the plugin duet_gpu_worker.so from them against the emulation (without NCCL), relinks the
# objects make built for tests/check_gpu_worker, check_gpu_kernels and check_gpu_sampler against
# it, then runs every case of the worker conformance suite (make's tests/check_worker_conformance,
# which links no CUDA, given the emulated plugin) and of the GPU worker's own suite in a process
# of its own, the kernel tests and the sampler tests, with asynchronous streams (EMU_ASYNC=1),
# fibers in reverse or random order (EMU_ORDER) and unwritten cache entries poisoned
# (EMU_POISON_MEMSET=1). Exits non-zero on any failure. Also a stress test (make_stress.py). The
# source tree is only read.
#
# The make rule passes: srcdir builddir (absolute top directories), CC CXX CUDA_CPPFLAGS
# CHECK_LIBS JANSSON_LIBS PYTHON STRESS_CFLAGS, and the test objects W_OBJS K_OBJS S_OBJS
# (relative to builddir).
set -eu
: "${srcdir:?}" "${builddir:?}" "${PYTHON:=python3}"
E=$srcdir/tools/gpu-emu
O=$builddir/tools/gpu-emu
B=$builddir
mkdir -p "$O/cfg" "$O/logs"
cd "$O"
say() { printf '%s\n' "$*"; }

say "gpu-emu: building the emulation in $O"
# build_config.h without NCCL: the emulation has one device and no NCCL.
grep -v DUET_HAVE_NCCL "$B/build_config.h" > cfg/build_config.h
rm -rf src && mkdir -p src/gw
cp "$srcdir"/gpu_worker/*.c "$srcdir"/gpu_worker/*.h "$srcdir"/gpu_worker/*.cu src/gw/
chmod u+w src/gw/*
"$PYTHON" "$E/rewrite.py" src/gw/kernels.cu src/kernels.cc
"$PYTHON" "$E/rewrite.py" src/gw/sample.cu src/sample.cc

INCS="-I$E/inc -I$O/cfg $CUDA_CPPFLAGS -I$O/src/gw -I$srcdir/sampling -I$srcdir/worker_kit \
    -I$srcdir/include -I$B -I$srcdir"
CXXF="-std=c++20 -O2 -g -fPIC"
CF="-DHAVE_CONFIG_H -std=gnu11 -O2 -g -fPIC -Wall -Wextra -Werror -pthread -fvisibility=hidden"
$CXX $CXXF $INCS -shared -o libemu_cuda.so "$E/emu_rt.cc" -pthread
$CXX $CXXF -include "$E/cuda_emu.h" $INCS -c src/kernels.cc -o src/kernels.o &
p1=$!
$CXX $CXXF -include "$E/cuda_emu.h" $INCS -c src/sample.cc -o src/sample.o &
p2=$!
for f in worker execute plan gemm ranks; do
    $CC $CF $INCS -c "src/gw/$f.c" -o "src/$f.o"
done
wait $p1
wait $p2
$CXX -shared -o duet_gpu_worker.so src/worker.o src/execute.o src/plan.o src/gemm.o src/ranks.o \
    src/kernels.o src/sample.o -Wl,--version-script="$srcdir/build-aux/plugin.map" \
    "$B/worker_kit/.libs/libduet_worker_kit.a" "$B/model/.libs/libduet_model.a" \
    "$B/sampling/.libs/libduet_sampling.a" \
    -L"$O" -lemu_cuda -Wl,-rpath,"$O" -pthread -lm

link() {
    out=$1
    shift
    $CXX -g -o "$out" "$@" -Wl,-rpath,"$B/.libs" -L"$O" -lemu_cuda -Wl,-rpath,"$O" \
        $CHECK_LIBS $JANSSON_LIBS -pthread
}
(cd "$B" && link "$O/check_gpu_worker" $W_OBJS model/.libs/libduet_model_gen.a \
    model/.libs/libduet_model.a .libs/libduet.so)
(cd "$B" && link "$O/check_gpu_kernels" $K_OBJS "$O/src/kernels.o" "$O/src/sample.o" \
    "$O/src/plan.o" sampling/.libs/libduet_sampling.a .libs/libduet.so)
(cd "$B" && link "$O/check_gpu_sampler" $S_OBJS "$O/src/kernels.o" "$O/src/sample.o" \
    "$O/src/plan.o" sampling/.libs/libduet_sampling.a .libs/libduet.so)

# The stress test: the worker suites with longer contexts (make_stress.py), their own objects:
# check_stress (the GPU worker's suite) and check_stress_conformance (the conformance suite).
mkdir -p src/stress
"$PYTHON" "$E/make_stress.py" "$srcdir/tests" src/stress
for f in worker_harness check_gpu_worker check_worker_conformance; do
    $CC -DHAVE_CONFIG_H -I"$srcdir/include" -I"$B" $CUDA_CPPFLAGS $STRESS_CFLAGS -I"$srcdir/tests" \
        -I"$srcdir" -DSTRESS_PROMPT=700 -DSTRESS_GEN=30 -pthread -g -O2 -c "src/stress/$f.c" \
        -o "src/stress/$f.o"
done
# (the objects of check_gpu_worker but its own sources: reference_forward)
ref_objs=$(for o in $W_OBJS; do case $o in *check_gpu_worker.* | *worker_harness.*) ;; *) echo "$o" ;; esac; done)
(cd "$B" && link "$O/check_stress" "$O/src/stress/check_gpu_worker.o" \
    "$O/src/stress/worker_harness.o" $ref_objs \
    model/.libs/libduet_model_gen.a model/.libs/libduet_model.a .libs/libduet.so)
(cd "$B" && link "$O/check_stress_conformance" "$O/src/stress/check_worker_conformance.o" \
    "$O/src/stress/worker_harness.o" $ref_objs \
    model/.libs/libduet_model_gen.a model/.libs/libduet_model.a .libs/libduet.so)

export CK_DEFAULT_TIMEOUT=100000 CK_FORK=no
export DUET_TEST_GPU_WORKER="$O/duet_gpu_worker.so"
export DUET_TEST_CPU_WORKER="$B/cpu_worker/.libs/duet_cpu_worker.so"
pass=0
fail=0
failed=
# run NAME LOG CMD...: one line per run; a run passes when it exits 0 and Check says 100% of at
# least one check.
run() {
    name=$1
    log=$2
    shift 2
    start=$(date +%s)
    rc=0
    "$@" > "$log" 2>&1 || rc=$?
    res=$(grep -oE '[0-9]+%: Checks.*' "$log" | tail -1 || true)
    # (Checks: 0: no case of that name ran)
    if [ "$rc" -eq 0 ] && [ -n "$res" ] && ! grep -q 'EMU FATAL' "$log" &&
        ! printf '%s' "$res" | grep -q 'Checks: 0,'; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        failed="$failed
  $name (rc=$rc, $log)"
    fi
    printf '  %-34s rc=%-3s %4ss  %s\n' "$name" "$rc" "$(($(date +%s) - start))" "$res"
}

# The case names of a suite (its tables of cases: the lines that open with a quoted name, from
# its "duet_test_case cases[] = {" or "conformance_case cases[] = {" up to the first
# duet_test_add_cases).
case_names() {
    sed -n '/\(duet_test\|conformance\)_case cases\[\] = {/,/duet_test_add_cases/s/^ *{"\([^"]*\)",.*/\1/p' \
        "$1"
}
# suite NAME FILE CMD...: every case of FILE, each in a run of CMD of its own.
suite() {
    sname=$1
    file=$2
    shift 2
    before=$pass
    case_names "$file" > "cases_$sname.txt"
    while IFS= read -r c; do
        run "$c" "logs/${sname}_$(printf '%s' "$c" | tr ' ' '_').log" \
            env EMU_ASYNC=1 EMU_ORDER=2 EMU_POISON_MEMSET=1 CK_RUN_CASE="$c" "$@"
    done < "cases_$sname.txt"
    if [ "$pass" -eq "$before" ]; then
        say "gpu-emu: no case of $file ran (case names not found?)"
        exit 1
    fi
}
say "gpu-emu: conformance suite (tests/check_worker_conformance.c), EMU_ASYNC=1 EMU_ORDER=2 EMU_POISON_MEMSET=1"
suite conformance "$srcdir/tests/check_worker_conformance.c" \
    "$B/tests/check_worker_conformance" "$DUET_TEST_GPU_WORKER"
say "gpu-emu: GPU worker suite (tests/check_gpu_worker.c), EMU_ASYNC=1 EMU_ORDER=2 EMU_POISON_MEMSET=1"
suite gpu_worker "$srcdir/tests/check_gpu_worker.c" ./check_gpu_worker
say "gpu-emu: stress (make_stress.py: 700-token prompt + 30 decodes; a failed cudaMalloc, then a step)"
run "stress: greedy as the cpu worker" "logs/stress_greedy_as_the_cpu_worker.log" \
    env EMU_ASYNC=1 EMU_ORDER=2 CK_RUN_CASE="greedy as the cpu worker" ./check_stress
run "stress: cache too large" "logs/stress_cache_too_large.log" \
    env EMU_ASYNC=1 EMU_ORDER=2 CK_RUN_CASE="cache too large" ./check_stress_conformance \
    "$DUET_TEST_GPU_WORKER"
say "gpu-emu: kernels (tests/check_gpu_kernels.c), EMU_ASYNC=1 EMU_ORDER=2"
run "check_gpu_kernels" logs/check_gpu_kernels.log env EMU_ASYNC=1 EMU_ORDER=2 ./check_gpu_kernels
say "gpu-emu: sampler (tests/check_gpu_sampler.c), EMU_ASYNC=1 EMU_ORDER=1"
run "check_gpu_sampler" logs/check_gpu_sampler.log env EMU_ASYNC=1 EMU_ORDER=1 ./check_gpu_sampler

say "gpu-emu: $pass passed, $fail failed"
if [ "$fail" -ne 0 ]; then
    say "failed:$failed"
    exit 1
fi
