#!/bin/sh
# Runs tests/check_worker_conformance against the worker named by the test file:
# tests/worker-<name>.conformance (automake's CONFORMANCE_LOG_COMPILER), name being mock (the
# test-only plugin of tests/fixtures/mock_worker.c), cpu ($DUET_TEST_CPU_WORKER) or gpu
# ($DUET_TEST_GPU_WORKER). The program exits 77 (SKIP) when that plugin was not built, and for the
# GPU worker when no CUDA device is visible. $DUET_TEST_WRAPPER, when set, runs it
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
# shellcheck disable=SC2086 # the wrapper is a command line
exec ${DUET_TEST_WRAPPER:-} "${DUET_TEST_BUILDDIR:-.}/tests/check_worker_conformance" "$plugin"
