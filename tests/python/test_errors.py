"""Errors reach Python as exceptions carrying libduet's message, and nothing a caller does
crashes the interpreter: bad configurations, models, prompts, types and values, a closed LLM,
an interrupted generate(), threads, and a storm of random arguments."""

import os
import random
import shutil
import threading
import unittest
import warnings

import duet
from duet import LLM, SamplingParams
import models


def setUpModule():
    global M
    M = models.Models(None)   # vocabulary 512, no tokenizer: prompts as ids


def tearDownModule():
    if "M" in globals():
        M.close()


def llm(**kw):
    return LLM(M.target, config=M.config, skip_tokenizer_init=True, **kw)


class ConfigurationErrorsTest(unittest.TestCase):
    def test_bad_config_file_names_file_line_and_key(self):
        path = os.path.join(M.dir, "bad.cfg")
        with open(path, "w") as f:
            f.write('model = "x";\ncache: { block_size = 12; };\n')
        with self.assertRaises(duet.DuetValueError) as cm:
            LLM(M.target, config=path)
        self.assertEqual(cm.exception.status, "BAD_CONFIG")
        self.assertIn("bad.cfg:2", str(cm.exception))
        self.assertIn("cache.block_size", str(cm.exception))
        self.assertIsInstance(cm.exception, ValueError)

    def test_missing_config_file(self):
        with self.assertRaises(OSError):
            LLM(M.target, config=os.path.join(M.dir, "nope.cfg"))

    def test_bad_dict_key_and_value(self):
        with self.assertRaises(ValueError) as cm:
            llm(max_num_seqs=0)
        self.assertIn("scheduler.max_num_seqs", str(cm.exception))
        with self.assertRaises(ValueError) as cm:
            LLM(M.target, config={"cache.blok_size": 16})
        self.assertIn("cache.blok_size", str(cm.exception))

    def test_unknown_keyword_is_a_type_error(self):
        with self.assertRaises(TypeError) as cm:
            LLM(M.target, speculative_modle=M.draft)
        self.assertIn("speculative_modle", str(cm.exception))

    def test_meaningless_vllm_keywords_warn(self):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            llm(enforce_eager=True, trust_remote_code=True, disable_log_stats=True).close()
        text = " ".join(str(x.message) for x in w)
        self.assertIn("enforce_eager", text)
        self.assertIn("trust_remote_code", text)

    def test_keywords_that_would_change_results_are_refused(self):
        for kw in ({"quantization": "awq"}, {"enable_lora": True},
                   {"pipeline_parallel_size": 2}, {"kv_cache_dtype": "fp8"}):
            with self.assertRaises(ValueError):
                llm(**kw)

    def test_hub_names_say_there_is_no_download(self):
        with self.assertRaises(OSError) as cm:
            LLM("meta-llama/Llama-2-7b-chat-hf")
        self.assertIn("does not download", str(cm.exception))
        self.assertIn("huggingface-cli download", str(cm.exception))

    def test_speculative_keywords_go_together(self):
        with self.assertRaises(ValueError) as cm:
            LLM(M.target, speculative_model=M.draft)
        self.assertIn("num_speculative_tokens", str(cm.exception))
        with self.assertRaises(ValueError):
            LLM(M.target, speculative_config={"model": M.draft, "num_speculative_tokens": 2,
                                              "method": "ngram"})

    def test_broken_model_names_the_tensor(self):
        broken = os.path.join(M.dir, "broken")
        shutil.copytree(M.target, broken)
        weights = os.path.join(broken, "model.safetensors")
        size = os.path.getsize(weights)
        with open(weights, "r+b") as f:
            f.truncate(size - 1000)
        with self.assertRaises(duet.DuetError) as cm:
            LLM(broken, config={"cache.cpu_kv_space_gib": 0.05}, skip_tokenizer_init=True)
        self.assertIn("model.safetensors", str(cm.exception))

    def test_no_tokenizer_says_how_to_go_on(self):
        with self.assertRaises(OSError) as cm:
            LLM(M.target, config=M.config)
        self.assertIn("skip_tokenizer_init", str(cm.exception))


class RequestErrorsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.llm = llm()

    @classmethod
    def tearDownClass(cls):
        cls.llm.close()

    def gen(self, prompts, **sp):
        return self.llm.generate(prompts, SamplingParams(**sp) if sp else None, use_tqdm=False)

    def test_token_id_prompts_run(self):
        out = self.gen({"prompt_token_ids": [1, 2, 3]}, temperature=0, max_tokens=4,
                       ignore_eos=True)[0]
        self.assertEqual(len(out.outputs[0].token_ids), 4)
        self.assertEqual(out.outputs[0].text, "")

    def test_bad_prompts(self):
        with self.assertRaises(ValueError):
            self.gen({"prompt_token_ids": [1, 512]})
        with self.assertRaises(ValueError):
            self.gen({"prompt_token_ids": [-1]})
        with self.assertRaises(ValueError):
            self.gen({"prompt_token_ids": [2**40]})
        with self.assertRaises(ValueError) as cm:
            self.gen({"prompt_token_ids": [1] * 600})
        self.assertIn("maximum model length", str(cm.exception))
        with self.assertRaises(ValueError):
            self.gen({"prompt_token_ids": []})
        with self.assertRaises(TypeError):
            self.gen({"prompt_token_ids": [1.5]})
        with self.assertRaises(TypeError):
            self.gen(123)
        with self.assertRaises(ValueError):
            self.gen("text needs a tokenizer")
        with self.assertRaises(ValueError):
            self.gen({"prompt_token_ids": [1], "multi_modal_data": {}})
        with self.assertRaises(ValueError):
            self.llm.generate()
        with self.assertRaises(RuntimeError):
            self.llm.get_tokenizer()

    def test_a_bad_prompt_leaves_nothing_queued(self):
        with self.assertRaises(ValueError):
            self.gen([{"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [9999]}])
        out = self.gen({"prompt_token_ids": [1, 2]}, max_tokens=2)
        self.assertEqual(len(out), 1)

    def test_engine_refusals_become_value_errors(self):
        with self.assertRaises(ValueError) as cm:
            self.gen({"prompt_token_ids": [1]}, n=10**6)
        self.assertIn("max_num_seqs", str(cm.exception))
        with self.assertRaises(ValueError):
            self.gen({"prompt_token_ids": [1]}, logprobs=10**6)
        with self.assertRaises(ValueError):
            self.gen({"prompt_token_ids": [1]}, logit_bias={10**6: 1.0})
        with self.assertRaises(ValueError):
            self.llm.generate({"prompt_token_ids": [1]}, priority=[1])
        self.assertEqual(len(self.gen({"prompt_token_ids": [1]}, max_tokens=1)), 1)

    def test_interrupted_generate_leaves_the_llm_usable(self):
        class Interrupt:
            def __init__(self, **kw):
                pass

            def update(self, n):
                raise KeyboardInterrupt

            def set_postfix_str(self, *a, **kw):
                pass

            def close(self):
                pass

        import sys
        isatty = sys.stderr.isatty
        sys.stderr.isatty = lambda: True
        try:
            with self.assertRaises(KeyboardInterrupt):
                self.llm.generate([{"prompt_token_ids": [1, 2, 3]}] * 4,
                                  SamplingParams(max_tokens=20, ignore_eos=True),
                                  use_tqdm=Interrupt)
        finally:
            sys.stderr.isatty = isatty
        m = self.llm.get_metrics()
        self.assertEqual(m["num_free_blocks"], m["num_total_blocks"])
        self.assertEqual(len(self.gen({"prompt_token_ids": [1]}, max_tokens=2)), 1)

    def test_threads_share_one_llm(self):
        results, errors = [], []

        def work(seed):
            try:
                out = self.gen({"prompt_token_ids": [1, 2, seed]}, temperature=1.0, seed=seed,
                               max_tokens=6, ignore_eos=True)
                results.append(out[0].outputs[0].token_ids)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 4)

    def test_random_arguments_never_crash(self):
        rng = random.Random(2026)
        junk = [None, -1, 0, 1, 2**31, 2**63, -2**63, 1.5, float("nan"), float("inf"), "", "x",
                b"\x00", [], [None], [1, "a"], {}, {"prompt": None}, {"prompt_token_ids": None},
                {"prompt_token_ids": [2**31]}, object(), [[1, 2]], True]
        fields = ["n", "temperature", "top_p", "top_k", "min_p", "seed", "max_tokens",
                  "logprobs", "prompt_logprobs", "presence_penalty", "repetition_penalty",
                  "stop", "stop_token_ids", "logit_bias", "truncate_prompt_tokens"]
        ran = 0
        for _ in range(300):
            kwargs = {f: rng.choice(junk) for f in rng.sample(fields, 2)}
            prompt = rng.choice(junk + [{"prompt_token_ids": [1, 2]}] * 5)
            try:
                sp = SamplingParams(**kwargs)
                sp.max_tokens = min(sp.max_tokens or 4, 4) if isinstance(
                    sp.max_tokens, int) else 4
                self.llm.generate(prompt, sp, use_tqdm=False)
                ran += 1
            except (ValueError, TypeError, OverflowError, RuntimeError, OSError):
                pass
        self.assertGreater(ran, 0)
        self.assertEqual(len(self.gen({"prompt_token_ids": [1]}, max_tokens=1)), 1)


class LifetimeTest(unittest.TestCase):
    def test_closed_llm_refuses_and_its_tokenizer_lives_on(self):
        tok_dir = None
        try:
            tok_dir = models.tokenizer("llama2")
        except unittest.SkipTest:
            pass
        if tok_dir:
            m = models.Models(tok_dir)
            try:
                a = LLM(m.target, config=m.config)
                tok = a.get_tokenizer()
                a.close()
                del a
                self.assertEqual(tok.decode(tok.encode("hello world"), skip_special_tokens=True),
                                 "hello world")
                with self.assertRaises(ValueError):
                    tok.decode([10**7])
                with self.assertRaises(TypeError):
                    tok.encode(None)
                with self.assertRaises(ValueError):
                    tok.apply_chat_template([{"role": "user", "content": "x"}],
                                            chat_template="{% for %}")
            finally:
                m.close()
        b = llm()
        b.close()
        b.close()
        with self.assertRaises(RuntimeError):
            b.generate({"prompt_token_ids": [1]})
        with self.assertRaises(RuntimeError):
            b.get_metrics()

    def test_context_manager(self):
        with llm() as c:
            self.assertEqual(len(c.generate({"prompt_token_ids": [1]}, use_tqdm=False)), 1)
        with self.assertRaises(RuntimeError):
            c.generate({"prompt_token_ids": [1]})


if __name__ == "__main__":
    unittest.main()
