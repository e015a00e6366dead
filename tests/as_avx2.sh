#!/bin/sh
# Runs a test program as on an AVX2-only CPU (AMD Zen 2/3, Intel client parts): oneDNN held to
# AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, so its bf16 matmul answers `unimplemented`) and the CPU worker's
# own kernels to AVX2 (DUET_CPU_ISA=avx2), so dtype auto computes in f32. The test file
# tests/NAME_avx2.avx2 names the program tests/NAME, the conformance run tests/NAME.conformance
# (tests/conformance.sh) or the script tests/NAME.sh. On a CPU without AVX-512 the plain run of the
# program is already this one: SKIP (77).
set -u
name=$(basename "$1" .avx2)
name=${name%_avx2}
build=${DUET_TEST_BUILDDIR:-.}
if ! grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    echo "${name}_avx2: SKIP: this CPU has no AVX-512; the plain run of $name is the AVX2 run"
    exit 77
fi
export ONEDNN_MAX_CPU_ISA=AVX2 DUET_CPU_ISA=avx2
out=$(mktemp) || exit 99
trap 'rm -f "$out"' EXIT
src=${DUET_TEST_SRCDIR:-.}
if [ -f "$build/tests/$name" ]; then
    "$build/tests/$name" >"$out" 2>&1
elif [ -f "$src/tests/$name.conformance" ]; then
    sh "$src/tests/conformance.sh" "$src/tests/$name.conformance" >"$out" 2>&1
else
    sh "$src/tests/$name.sh" >"$out" 2>&1
fi
status=$?
cat "$out"
# The emulation must have taken: the CPU worker's suites note that bf16 compute is not run.
if { [ "$name" = check_cpu_worker ] || [ "$name" = worker-cpu ]; } && [ "$status" -eq 0 ] &&
    ! grep -q "bf16 compute not tested: .*AVX512-BF16" "$out"; then
    echo "${name}_avx2: FAIL: bf16 compute still ran under ONEDNN_MAX_CPU_ISA=AVX2"
    exit 1
fi
exit "$status"
