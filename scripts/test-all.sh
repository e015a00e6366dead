#!/bin/sh
# The whole test suite, from nothing, as CI runs it (.ci/run): packages, formatting, a -Werror
# build with `make check` and, when configure found CUDA, `make check-gpu-emu` (the GPU worker's
# code on the CPU under a host emulation of CUDA, tools/gpu-emu), `make distcheck`, the installed
# tree, the Check suites under valgrind, and the suite again under AddressSanitizer +
# UndefinedBehaviorSanitizer.
set -eu
cd "$(dirname "$0")/.."
top=$PWD
jobs=$(nproc)
step() { printf '\n==== %s\n' "$*"; }

step "packages"
sh scripts/install-deps.sh

step "format (clang-format --dry-run --Werror)"
git ls-files '*.c' '*.h' '*.cc' '*.cu' | xargs clang-format --dry-run --Werror
echo "format: clean"

step "autogen"
./autogen.sh

step "build with -Werror, make check"
rm -rf build-ci && mkdir build-ci && cd build-ci
../configure --enable-werror
make -j"$jobs"
make -j"$jobs" check || { cat tests/*.log; exit 1; }
# The ISA paths this run exercised: each GEMV kernel set (tests/gemv-<isa>.isa) and the CPU worker,
# engine and benchmark suites held to AVX2 (tests/*_avx2.avx2), PASS or SKIP (the CPU lacks it);
# read now, before check-valgrind runs the GEMV cases again on valgrind's CPU.
result() { sed -n 's/^:test-result: //p' "tests/$1.trs" 2>/dev/null | head -n 1; }
isa_paths="GEMV kernels generic $(result gemv-generic), avx2 $(result gemv-avx2), avx512\
 $(result gemv-avx512); as an AVX2-only CPU (ONEDNN_MAX_CPU_ISA=AVX2 DUET_CPU_ISA=avx2):\
 check_cpu_worker $(result check_cpu_worker_avx2), worker conformance (cpu)\
 $(result worker-cpu_avx2), check_engine $(result check_engine_avx2),\
 bench_smoke $(result bench_smoke_avx2)"

step "GPU worker under the host emulation of CUDA (make check-gpu-emu)"
# (the rule is commented out of the Makefile when configure found no CUDA or no Check)
if grep -q '^check-gpu-emu:' Makefile; then
    make check-gpu-emu
else
    echo "check-gpu-emu: SKIP (configure found no CUDA or no Check)"
fi

step "install to a staging tree and run the installed duet-run"
rm -rf "$top/build-ci/stage"
make install DESTDIR="$top/build-ci/stage"
make installcheck DESTDIR="$top/build-ci/stage"

step "Check suites under valgrind"
make check-valgrind || { cat tests/check_*.log; exit 1; }

step "make distcheck"
make -j"$jobs" distcheck DISTCHECK_CONFIGURE_FLAGS=--enable-werror
cd "$top"

step "AddressSanitizer + UndefinedBehaviorSanitizer build, make check"
rm -rf build-asan && mkdir build-asan && cd build-asan
../configure --enable-werror --enable-asan --enable-ubsan
make -j"$jobs"
make -j"$jobs" check || { cat tests/*.log; exit 1; }
cd "$top"

step "summary"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); AVX-512 flags:" \
    "$(grep -o 'avx512[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "ISA paths: $isa_paths"
count() { cat build-ci/tests/*.trs build-asan/tests/*.trs | grep -cE "^:test-result: ($1)" || true; }
echo "tests: $(count PASS) passed, $(count 'FAIL|ERROR|XPASS') failed, $(count SKIP) skipped"
