#!/bin/sh
# Runs the GEMV kernel cases of tests/check_cpu_kernels for the ISA named by the test file:
# tests/gemv-<isa>.isa (automake's ISA_LOG_COMPILER). Exits 77 (SKIP) where this CPU lacks it.
# $DUET_TEST_WRAPPER, when set, runs it (make check-valgrind: valgrind).
set -u
isa=$(basename "$1" .isa)
isa=${isa#gemv-}
export DUET_TEST_GEMV_ISA="$isa"
# shellcheck disable=SC2086 # the wrapper is a command line
exec ${DUET_TEST_WRAPPER:-} "${DUET_TEST_BUILDDIR:-.}/tests/check_cpu_kernels"
