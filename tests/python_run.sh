#!/bin/sh
# Runs one Python unittest file (tests/python/test_*.py) against this build tree: the package
# staged in $DUET_TEST_BUILDDIR/python, its libduet and workers. Usage (make check's
# PY_LOG_COMPILER): python_run.sh PYTHON FILE. Under a sanitizer build the runtimes are
# preloaded (tests/sanitizer_preload.sh).
set -u
python=$1
file=$2
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
PYTHONPATH="$top_builddir/python:$srcdir/tests/python${PYTHONPATH:+:$PYTHONPATH}"
PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH PYTHONDONTWRITEBYTECODE
unset DUET_LIBRARY
. "$srcdir/tests/sanitizer_preload.sh"
sanitizer_preload "$top_builddir/.libs/libduet.so"
exec "$python" "$file" -v
