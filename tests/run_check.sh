#!/bin/sh
# duet-run end to end: --check against the mock plugin of this build, with overrides, and the
# errors a user meets (bad config, missing plugin, plugin lacking a capability, bad flags), each
# with its exit status and message.
set -u
top_builddir=${DUET_TEST_BUILDDIR:-.}
srcdir=${DUET_TEST_SRCDIR:-.}
run="$top_builddir/tools/duet-run"
tmp=$(mktemp -d) || exit 99
trap 'rm -rf "$tmp"' EXIT
export DUET_PLUGIN_PATH="$DUET_TEST_PLUGIN_DIR"
passed=0 failed=0

# expect NAME STATUS PATTERN ARGS...: duet-run ARGS exits with STATUS and prints PATTERN (grep -E)
expect() {
    name=$1 want=$2 pattern=$3
    shift 3
    "$run" "$@" >"$tmp/out" 2>&1
    got=$?
    if [ "$got" -eq "$want" ] && grep -Eq -- "$pattern" "$tmp/out"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL: $name: exit $got (want $want), output:"
        sed 's/^/    /' "$tmp/out"
        echo "    (wanted /$pattern/)"
    fi
}

mock="$srcdir/examples/mock.cfg"
spec="$srcdir/examples/mock-speculative.cfg"

expect "check prints the plugin" 0 "^  name: +mock$" --config "$mock" --check
expect "check prints the path" 0 "^  path: +$DUET_TEST_PLUGIN_DIR/duet_mock_worker.so$" \
    --config "$mock" --check
expect "check prints abi and caps" 0 "^  capabilities: target,draft,swap,f32$" --config "$mock" --check
expect "check prints the resolved config" 0 "block_size = 16;" --config "$mock" --check
expect "check ends with ok" 0 "^check: ok$" --config "$mock" --check
expect "override shows in the config" 0 "block_size = 64; +# --set" --config "$mock" --check \
    --set cache.block_size=64
expect "speculative config loads both" 0 "^draft: worker \"mock\"$" --config "$spec" --check
expect "bad override names the key" 1 "did you mean 'cache.block_size'" --config "$mock" \
    --check --set cache.block_sz=64
expect "bad config file names file and line" 1 "bad-unknown-key-in-group.cfg:[0-9]+: " \
    --config "$srcdir/tests/configs/bad-unknown-key-in-group.cfg" --check
expect "missing config file" 1 "nonexistent.cfg" --config "$tmp/nonexistent.cfg" --check
expect "missing plugin" 1 "target.worker: plugin 'nosuch': duet_nosuch_worker.so not found" \
    --config "$mock" --check --set target.worker=nosuch
expect "plugin lacking a capability" 1 "target.dtype: plugin .* cannot use dtype bf16" \
    --config "$mock" --check --set target.dtype=bf16
expect "broken plugin is refused" 1 "ABI major version mismatch: expected 1, found 2" \
    --config "$mock" --check --set target.worker=badmajor
expect "generation is not in this version" 2 "generation needs the duet engine" \
    --config "$mock" --prompt-ids 1,2,3
expect "config is required" 2 "--config FILE is required" --check
expect "bad prompt ids" 2 "invalid value for --prompt-ids: '1,,2'" --config "$mock" \
    --prompt-ids 1,,2
expect "bad top-p" 2 "invalid value for --top-p" --config "$mock" --top-p 1.5
expect "unknown flag" 2 "Try 'duet-run --help'" --config "$mock" --bogus
expect "help" 0 "^Usage: duet-run --config FILE" --help
expect "version" 0 "^duet-run [0-9.]+ \\(plugin ABI 1\\.[0-9]+\\)$" --version

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
