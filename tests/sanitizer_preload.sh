# Sourced by the tests that load libduet into a program not built with the sanitizers (Python:
# tests/python_run.sh, tests/python_pip.sh). A sanitizer build's libduet needs the ASan / UBSan
# runtimes loaded first, so they go into LD_PRELOAD; the host program's own allocations are not
# ours to judge, so leak checking is off. Nothing changes for an ordinary build.
# Usage: sanitizer_preload LIBDUET_SO
sanitizer_preload() {
    _runtimes=$(ldd "$1" 2>/dev/null | awk '/lib(asan|ubsan)\.so/ { printf "%s ", $3 }')
    if [ -n "$_runtimes" ]; then
        LD_PRELOAD="$_runtimes"
        ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
        export LD_PRELOAD ASAN_OPTIONS
    fi
}
