# Sourced by the duet-server tests (tests/server_check.sh, tests/server_load.sh) and bench/run-server.sh: builds a tiny
# generated target and draft with the byte-level fixture tokenizer, starts duet-server on a free
# port and waits until it serves. The caller sets top_builddir and srcdir and kills $pid on exit.

# server_lib_models DIR: DIR/t (target, 270-token vocabulary) and DIR/d (its one-layer draft)
server_lib_models() {
    "$top_builddir/tools/duet-mkmodel" --out "$1/t" --arch llama --hidden 64 --layers 2 \
        --heads 4 --kv-heads 2 --intermediate 128 --vocab 270 --max-positions 256 \
        --dtype f32 >/dev/null &&
        "$top_builddir/tools/duet-mkmodel" --out "$1/d" --draft-of "$1/t" --layers 1 \
            --noise 0.05 >/dev/null &&
        cp "$srcdir/tests/fixtures/tokenizers/bytelevel/tokenizer.json" \
            "$srcdir/tests/fixtures/tokenizers/bytelevel/tokenizer_config.json" "$1/t/"
}

# server_lib_start LOG CONFIG [ARGS...]: starts duet-server on port 0, its output in LOG; sets
# pid, port and base (http://127.0.0.1:PORT) and returns once /health answers 200 (1 if it
# never does: the log tells why).
server_lib_start() {
    log=$1
    shift
    "$top_builddir/tools/duet-server" --config "$@" --port 0 >"$log" 2>&1 &
    pid=$!
    port=
    for _ in $(seq 1 100); do
        port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$log" 2>/dev/null)
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || return 1
    base="http://127.0.0.1:$port"
    for _ in $(seq 1 600); do
        case $(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$base/health") in
        200) return 0 ;;
        503 | 000) sleep 0.1 ;;
        *) return 1 ;;
        esac
    done
    return 1
}

# server_lib_rss_kib PID: the resident set of PID in KiB (/proc/PID/status VmRSS)
server_lib_rss_kib() {
    sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB$/\1/p' "/proc/$1/status"
}
