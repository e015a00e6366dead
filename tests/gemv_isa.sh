#!/bin/sh
# Runs the GEMV kernel cases of tests/check_cpu_kernels for the ISA named by the test file:
# tests/gemv-<isa>.isa (automake's ISA_LOG_COMPILER). Exits 77 (SKIP) where this CPU lacks it.
set -u
isa=$(basename "$1" .isa)
isa=${isa#gemv-}
DUET_TEST_GEMV_ISA=$isa exec "${DUET_TEST_BUILDDIR:-.}/tests/check_cpu_kernels"
