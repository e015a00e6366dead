#!/bin/sh
# The main job on a fresh Debian 12 machine: install what is needed, build, and run duet-run on
# an example configuration. This version of duet has no engine yet, so the job is
# `duet-run --check` (load and validate the configuration, load the worker plugins — the test
# mock worker, which needs no model files — and print what would run), after generating a
# llama-68m-shaped target and a derived 1-layer draft with duet-mkmodel and validating them with
# duet-model-info; then the CPU worker runs the llama-68m shape for real: duet-bench times its
# prefill and decode against the machine's memory bandwidth.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh
[ -x configure ] || ./autogen.sh
mkdir -p build
cd build
[ -f Makefile ] || ../configure
make -j"$(nproc)"
make -j"$(nproc)" tests/duet_mock_worker.la
mkdir -p models
./tools/duet-mkmodel --preset llama-68m --tail-from 1 --tail-scale 0.0625 --out models/llama-68m
./tools/duet-mkmodel --draft-of models/llama-68m --layers 1 --noise 0.02 --out models/llama-68m-draft
./tools/duet-model-info models/llama-68m-draft | sed -n '1,16p'
DUET_PLUGIN_PATH="$PWD/tests/.libs" ./tools/duet-run --config ../examples/mock-speculative.cfg --check
./tools/duet-bench --seconds 0.5 --repeats 3 --preset llama-68m --dtype f32 --batch 1,4 \
    --models models cpu-worker
