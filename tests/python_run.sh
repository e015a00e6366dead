#!/bin/sh
# Runs one Python unittest file (tests/python/test_*.py) against this build tree: the package
# staged in $DUET_TEST_BUILDDIR/python, its libduet and workers. Usage (make check's
# PY_LOG_COMPILER): python_run.sh PYTHON FILE. Under a sanitizer build, libduet needs the
# sanitizer runtimes loaded first (LD_PRELOAD); Python's own allocations are not ours to judge,
# so leak checking is off there.
set -u
python=$1
file=$2
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
PYTHONPATH="$top_builddir/python:$srcdir/tests/python${PYTHONPATH:+:$PYTHONPATH}"
PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH PYTHONDONTWRITEBYTECODE
unset DUET_LIBRARY
runtimes=$(ldd "$top_builddir/.libs/libduet.so" 2>/dev/null |
    awk '/lib(asan|ubsan)\.so/ { printf "%s ", $3 }')
if [ -n "$runtimes" ]; then
    LD_PRELOAD="$runtimes"
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
    export LD_PRELOAD ASAN_OPTIONS
fi
exec "$python" "$file" -v
