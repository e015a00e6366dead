#!/bin/sh
# The main job on a fresh Debian 12 machine: install what is needed, build, and run duet-run on
# an example configuration. This version of duet has no engine yet, so the job is
# `duet-run --check`: load and validate the configuration, load the worker plugins (the test
# mock worker, which needs no model files) and print what would run.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
[ -x configure ] || ./autogen.sh
mkdir -p build
cd build
[ -f Makefile ] || ../configure
make -j"$(nproc)"
make -j"$(nproc)" tests/duet_mock_worker.la
DUET_PLUGIN_PATH="$PWD/tests/.libs" ./tools/duet-run --config ../examples/mock-speculative.cfg --check
