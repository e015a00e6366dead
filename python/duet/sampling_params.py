"""SamplingParams: vLLM's, with its defaults and its validation messages (docs/python.md)."""

import warnings

_MAX_TEMP = 1e-2       # vLLM raises temperatures in (0, 0.01) to 0.01, with a warning
_SAMPLING_EPS = 1e-5   # below this, temperature 0: greedy

# Fields vLLM has that duet does not run; accepted at their neutral value only.
_UNSUPPORTED = {
    "min_tokens": 0, "best_of": None, "logits_processors": None, "bad_words": None,
    "allowed_token_ids": None, "guided_decoding": None, "use_beam_search": False,
    "length_penalty": 1.0, "early_stopping": False,
}


class SamplingParams:
    """Sampling parameters for text generation, as vLLM's vllm.SamplingParams.

    n, presence_penalty, frequency_penalty, repetition_penalty, temperature, top_p, top_k,
    min_p, seed, stop, stop_token_ids, ignore_eos, max_tokens, logprobs, prompt_logprobs,
    detokenize, skip_special_tokens, spaces_between_special_tokens, include_stop_str_in_output,
    truncate_prompt_tokens, logit_bias. Fields duet does not run (min_tokens, best_of,
    logits_processors, bad_words, allowed_token_ids, guided_decoding, beam search) are refused
    unless neutral.
    """

    def __init__(self, n=1, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0,
                 temperature=1.0, top_p=1.0, top_k=-1, min_p=0.0, seed=None, stop=None,
                 stop_token_ids=None, ignore_eos=False, max_tokens=16, logprobs=None,
                 prompt_logprobs=None, detokenize=True, skip_special_tokens=True,
                 spaces_between_special_tokens=True, include_stop_str_in_output=False,
                 truncate_prompt_tokens=None, logit_bias=None, output_kind=None, **unsupported):
        for name in unsupported:
            if name not in _UNSUPPORTED:
                raise TypeError(f"SamplingParams.__init__() got an unexpected keyword argument "
                                f"'{name}'")
            if unsupported[name] != _UNSUPPORTED[name] and not (
                    name == "best_of" and unsupported[name] in (None, 1, n)):
                raise ValueError(f"{name}={unsupported[name]!r} is not supported by duet")
        self.n = n
        self.best_of = unsupported.get("best_of") or n
        self.presence_penalty = presence_penalty
        self.frequency_penalty = frequency_penalty
        self.repetition_penalty = repetition_penalty
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.min_p = min_p
        self.seed = None if seed == -1 else seed
        if stop is None:
            self.stop = []
        elif isinstance(stop, str):
            self.stop = [stop]
        else:
            self.stop = list(stop)
        self.stop_token_ids = [] if stop_token_ids is None else list(stop_token_ids)
        self.ignore_eos = ignore_eos
        self.max_tokens = max_tokens
        self.min_tokens = 0
        self.logprobs = 1 if logprobs is True else logprobs
        self.prompt_logprobs = 1 if prompt_logprobs is True else prompt_logprobs
        self.detokenize = detokenize
        self.skip_special_tokens = skip_special_tokens
        self.spaces_between_special_tokens = spaces_between_special_tokens
        self.include_stop_str_in_output = include_stop_str_in_output
        self.truncate_prompt_tokens = truncate_prompt_tokens
        self.logit_bias = None if logit_bias is None else dict(logit_bias)
        self.output_kind = output_kind
        self._verify_args()
        if 0 < self.temperature < _MAX_TEMP:
            warnings.warn(f"temperature {self.temperature} is less than {_MAX_TEMP}, which may "
                          f"cause numerical errors nan or inf in tensors. We have maxed it out "
                          f"to {_MAX_TEMP}.", stacklevel=2)
            self.temperature = max(self.temperature, _MAX_TEMP)
        if self.temperature < _SAMPLING_EPS:
            # Zero temperature means greedy sampling.
            self.top_p = 1.0
            self.top_k = -1
            self.min_p = 0.0

    @classmethod
    def from_optional(cls, **kwargs):
        """vLLM's constructor of the same name: None means the default."""
        return cls(**{k: v for k, v in kwargs.items() if v is not None})

    def _verify_args(self):
        def number(name, value, kind=(int, float)):
            if isinstance(value, bool) or not isinstance(value, kind):
                what = "an int" if kind is int else "a number"
                raise TypeError(f"{name} must be {what}, got {type(value).__name__}")

        number("n", self.n, int)
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        for name in ("presence_penalty", "frequency_penalty", "repetition_penalty",
                     "temperature", "top_p", "min_p"):
            number(name, getattr(self, name))
            if getattr(self, name) != getattr(self, name):
                raise ValueError(f"{name} must be a number, got nan.")
        if not -2.0 <= self.presence_penalty <= 2.0:
            raise ValueError(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}.")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            raise ValueError("frequency_penalty must be in [-2, 2], got "
                             f"{self.frequency_penalty}.")
        if not 0.0 < self.repetition_penalty < float("inf"):
            raise ValueError("repetition_penalty must be greater than zero, got "
                             f"{self.repetition_penalty}.")
        if not 0.0 <= self.temperature < float("inf"):
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        number("top_k", self.top_k, int)
        if self.top_k < -1:
            raise ValueError(f"top_k must be -1 (disable), or at least 1, got {self.top_k}.")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.seed is not None:
            number("seed", self.seed, int)
        if self.max_tokens is not None:
            number("max_tokens", self.max_tokens, int)
            if self.max_tokens < 1:
                raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None:
                number(name, value, int)
                if value < 0:
                    raise ValueError(f"{name} must be non-negative, got {value}.")
        if self.truncate_prompt_tokens is not None:
            number("truncate_prompt_tokens", self.truncate_prompt_tokens, int)
            if self.truncate_prompt_tokens < 1:
                raise ValueError("truncate_prompt_tokens must be >= 1, got "
                                 f"{self.truncate_prompt_tokens}")
        for s in self.stop:
            if not isinstance(s, str):
                raise TypeError(f"stop must hold strings, got {type(s).__name__}")
        if any(not s for s in self.stop):
            raise ValueError("stop cannot contain an empty string.")
        if self.stop and not self.detokenize:
            raise ValueError("stop strings are only supported when detokenize is True. "
                             "Set detokenize=True to use stop.")
        for t in self.stop_token_ids:
            number("stop_token_ids", t, int)
        if self.logit_bias is not None:
            for token, bias in self.logit_bias.items():
                number("logit_bias token", token, int)
                number("logit_bias value", bias)
                if not -100.0 <= bias <= 100.0:
                    raise ValueError(f"logit_bias values must be in [-100, 100], got {bias} for "
                                     f"token {token}.")

    @property
    def sampling_type(self):
        """"greedy", "random_seed" or "random" (vLLM's SamplingType names, lower case)."""
        if self.temperature < _SAMPLING_EPS:
            return "greedy"
        return "random" if self.seed is None else "random_seed"

    def clone(self):
        new = SamplingParams.__new__(SamplingParams)
        new.__dict__.update({k: (list(v) if isinstance(v, list) else
                                 dict(v) if isinstance(v, dict) else v)
                             for k, v in self.__dict__.items()})
        return new

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"SamplingParams({fields})"

    def __eq__(self, other):
        return isinstance(other, SamplingParams) and self.__dict__ == other.__dict__
