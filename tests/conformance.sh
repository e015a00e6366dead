#!/bin/sh
# Runs tests/check_worker_conformance against the worker named by the test file:
# tests/worker-<name>.conformance (automake's CONFORMANCE_LOG_COMPILER), name being mock (the
# test-only plugin of tests/fixtures/mock_worker.c), cpu ($DUET_TEST_CPU_WORKER) or gpu
# ($DUET_TEST_GPU_WORKER). The program exits 77 (SKIP) when that plugin was not built, and for the
# GPU worker when no CUDA device is visible; this script, for the GPU worker under valgrind. $DUET_TEST_WRAPPER, when set, runs it
# (make check-valgrind: valgrind).
set -u
name=$(basename "$1" .conformance)
name=${name#worker-}
case $name in
mock) plugin=${DUET_TEST_PLUGIN_DIR:-tests/.libs}/duet_mock_worker.so ;;
cpu) plugin=${DUET_TEST_CPU_WORKER:-} ;;
gpu) plugin=${DUET_TEST_GPU_WORKER:-} ;;
*)
    echo "conformance.sh: no worker called '$name' ($1)"
    exit 99
    ;;
esac
# The CUDA runtime is not valgrind-clean (compute-sanitizer is its tool): loading the GPU worker
# under valgrind, even to read its name, reports errors in the CUDA libraries.
if [ "$name" = gpu ] && [ -n "${DUET_TEST_VALGRIND:-}" ]; then
    echo "conformance.sh: SKIP: the GPU worker is not run under valgrind (compute-sanitizer is its tool)"
    exit 77
fi
# shellcheck disable=SC2086 # the wrapper is a command line
exec ${DUET_TEST_WRAPPER:-} "${DUET_TEST_BUILDDIR:-.}/tests/check_worker_conformance" "$plugin"
