"""SamplingParams: vLLM's defaults, normalisation and validation messages."""

import unittest
import warnings

from duet import SamplingParams


class DefaultsTest(unittest.TestCase):
    def test_defaults_are_vllms(self):
        p = SamplingParams()
        self.assertEqual((p.n, p.temperature, p.top_p, p.top_k, p.min_p), (1, 1.0, 1.0, -1, 0.0))
        self.assertEqual((p.presence_penalty, p.frequency_penalty, p.repetition_penalty),
                         (0.0, 0.0, 1.0))
        self.assertEqual((p.max_tokens, p.seed, p.stop, p.stop_token_ids, p.ignore_eos),
                         (16, None, [], [], False))
        self.assertEqual((p.logprobs, p.prompt_logprobs, p.skip_special_tokens,
                          p.include_stop_str_in_output), (None, None, True, False))

    def test_stop_string_becomes_a_list(self):
        self.assertEqual(SamplingParams(stop="\n").stop, ["\n"])
        self.assertEqual(SamplingParams(stop=("a", "b")).stop, ["a", "b"])

    def test_greedy_drops_the_filters(self):
        p = SamplingParams(temperature=0, top_p=0.5, top_k=3, min_p=0.2)
        self.assertEqual((p.top_p, p.top_k, p.min_p), (1.0, -1, 0.0))
        self.assertEqual(p.sampling_type, "greedy")
        self.assertEqual(SamplingParams(seed=3).sampling_type, "random_seed")

    def test_tiny_temperature_is_raised_with_a_warning(self):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            p = SamplingParams(temperature=0.001)
        self.assertEqual(p.temperature, 0.01)
        self.assertTrue(any("maxed it out" in str(x.message) for x in w))

    def test_seed_minus_one_is_none(self):
        self.assertIsNone(SamplingParams(seed=-1).seed)

    def test_from_optional_and_clone(self):
        p = SamplingParams.from_optional(temperature=None, top_p=0.9, stop=["x"])
        self.assertEqual((p.temperature, p.top_p), (1.0, 0.9))
        q = p.clone()
        q.stop.append("y")
        self.assertEqual(p.stop, ["x"])
        self.assertEqual(p, SamplingParams(top_p=0.9, stop=["x"]))


class ValidationTest(unittest.TestCase):
    def refused(self, message, **kwargs):
        with self.assertRaises(ValueError) as cm:
            SamplingParams(**kwargs)
        self.assertEqual(str(cm.exception), message)

    def test_vllm_messages(self):
        self.refused("n must be at least 1, got 0.", n=0)
        self.refused("presence_penalty must be in [-2, 2], got 3.", presence_penalty=3)
        self.refused("frequency_penalty must be in [-2, 2], got -2.5.", frequency_penalty=-2.5)
        self.refused("repetition_penalty must be greater than zero, got 0.",
                     repetition_penalty=0)
        self.refused("temperature must be non-negative, got -1.", temperature=-1)
        self.refused("top_p must be in (0, 1], got 0.", top_p=0)
        self.refused("top_p must be in (0, 1], got 1.5.", top_p=1.5)
        self.refused("top_k must be -1 (disable), or at least 1, got -2.", top_k=-2)
        self.refused("min_p must be in [0, 1], got 1.5.", min_p=1.5)
        self.refused("max_tokens must be at least 1, got 0.", max_tokens=0)
        self.refused("logprobs must be non-negative, got -1.", logprobs=-1)
        self.refused("prompt_logprobs must be non-negative, got -1.", prompt_logprobs=-1)
        self.refused("stop cannot contain an empty string.", stop=["a", ""])
        self.refused("stop strings are only supported when detokenize is True. Set "
                     "detokenize=True to use stop.", stop="x", detokenize=False)
        self.refused("logit_bias values must be in [-100, 100], got 200 for token 3.",
                     logit_bias={3: 200})

    def test_nan_is_refused(self):
        for name in ("temperature", "top_p", "min_p", "presence_penalty"):
            with self.assertRaises(ValueError):
                SamplingParams(**{name: float("nan")})
        with self.assertRaises(ValueError):
            SamplingParams(temperature=float("inf"))

    def test_types(self):
        with self.assertRaises(TypeError):
            SamplingParams(n=1.5)
        with self.assertRaises(TypeError):
            SamplingParams(top_k=2.0)
        with self.assertRaises(TypeError):
            SamplingParams(temperature="hot")
        with self.assertRaises(TypeError):
            SamplingParams(stop=[1])
        with self.assertRaises(TypeError):
            SamplingParams(max_tokens="16")
        with self.assertRaises(TypeError):
            SamplingParams(n=True)

    def test_unknown_keyword_is_a_type_error(self):
        with self.assertRaises(TypeError) as cm:
            SamplingParams(temprature=0.5)
        self.assertIn("temprature", str(cm.exception))

    def test_unsupported_fields_only_at_their_neutral_value(self):
        SamplingParams(min_tokens=0, best_of=None, logits_processors=None)
        SamplingParams(n=2, best_of=2)
        for kwargs in ({"min_tokens": 3}, {"best_of": 3}, {"logits_processors": [print]},
                       {"allowed_token_ids": [1]}, {"use_beam_search": True}):
            with self.assertRaises(ValueError) as cm:
                SamplingParams(**kwargs)
            self.assertIn("not supported by duet", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
