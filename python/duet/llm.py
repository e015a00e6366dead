"""LLM: vLLM's offline interface over libduet's engine (docs/python.md).

    llm = LLM(model="models/llama-160m", speculative_model="models/llama-68m",
              num_speculative_tokens=4, cpu_draft_worker=True)
    outputs = llm.generate(["Hello, my name is"], SamplingParams(temperature=0.8, top_p=0.95))

The keywords are vLLM's, mapped to duet's configuration keys (_KEYWORDS); config= takes a
libconfig file (or a dict of dotted keys) for everything else. generate() queues every prompt,
steps the engine until all finished and returns them in order. Text comes from each sequence's
incremental detokenizer; stop strings are matched on it here, as vLLM's stop checker does, and a
request whose every sequence stopped is aborted in the engine. One LLM runs one generate() at a
time (a lock; the engine is not thread-safe); ctypes lets other Python threads run while a step
computes.
"""

import ctypes
import itertools
import json
import os
import random
import sys
import threading
import time
import warnings

from ctypes import c_bool, c_double, c_float, c_int32, c_int64, c_uint32, c_uint64, c_void_p

from . import _lib
from .outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from .sampling_params import SamplingParams
from .tokenizer import Detokenizer, Tokenizer

_UNSET = object()

# vLLM keywords with a duet configuration key: keyword -> (key, convert). A keyword given
# explicitly overrides the config file; one left at its default leaves the file's value.
_KEYWORDS = {
    "max_model_len": ("scheduler.max_model_len", int),
    "max_num_seqs": ("scheduler.max_num_seqs", int),
    "max_num_batched_tokens": ("scheduler.max_num_batched_tokens", int),
    "enable_chunked_prefill": ("scheduler.chunked_prefill", bool),
    "preemption_mode": ("scheduler.preemption", str),
    "scheduling_policy": ("scheduler.policy", str),
    "block_size": ("cache.block_size", int),
    "gpu_memory_utilization": ("cache.memory_fraction", float),
    "swap_space": ("cache.swap_space_gib", float),
    "enable_prefix_caching": ("cache.prefix_caching", bool),
    "tensor_parallel_size": ("target.tensor_parallel", int),
}

# vLLM keywords that mean nothing here: accepted, with a warning when not at vLLM's default.
_IGNORED = {
    "use_v2_block_manager": None, "trust_remote_code": False, "enforce_eager": None,
    "max_seq_len_to_capture": 8192, "max_context_len_to_capture": None,
    "disable_custom_all_reduce": False, "disable_async_output_proc": False, "revision": None,
    "tokenizer_revision": None, "code_revision": None, "download_dir": None,
    "tokenizer_mode": "auto", "worker_use_ray": False, "distributed_executor_backend": None,
    "num_scheduler_steps": 1, "multi_step_stream_outputs": True, "tokenizer_pool_size": 0,
    "max_logprobs": 20, "speculative_max_model_len": None, "served_model_name": None,
    "compilation_config": None, "max_cpu_loras": None, "disable_sliding_window": False,
    "quantization_param_path": None, "hf_token": None,
}
# vLLM keywords whose other values would change the results: only these values are accepted.
_ALLOWED = {
    "enable_lora": (False,), "cpu_offload_gb": (0,), "pipeline_parallel_size": (1,),
    "quantization": (None,), "ngram_prompt_lookup_max": (None,),
    "ngram_prompt_lookup_min": (None,), "hf_overrides": (None,), "mm_processor_kwargs": (None,),
    "limit_mm_per_prompt": (None,), "kv_cache_dtype": ("auto",), "task": ("auto", "generate"),
    "load_format": ("auto", "safetensors"),
}
# vLLM keywords read by LLM itself.
_HANDLED = {"spec_decoding_acceptance_method", "speculative_config", "device",
            "skip_tokenizer_init", "tokenizer", "disable_log_stats",
            "speculative_draft_tensor_parallel_size", "speculative_disable_by_batch_size",
            "typical_acceptance_sampler_posterior_threshold",
            "typical_acceptance_sampler_posterior_alpha"}

_DTYPES = {"auto": "auto", "bfloat16": "bf16", "bf16": "bf16", "float16": "f16", "half": "f16",
           "f16": "f16", "float32": "f32", "float": "f32", "f32": "f32"}
_ACCEPTANCE = {"rejection_sampler": "rejection", "typical_acceptance_sampler": "typical"}
_FINISH = {_lib.FINISH_STOP: "stop", _lib.FINISH_LENGTH: "length",
           _lib.FINISH_IGNORED: "length", _lib.FINISH_ABORT: "abort"}


def _config_value(value):
    """value in libconfig syntax for duet_config_set."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} is not a finite number")
        return repr(value)
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cuda_devices():
    """CUDA devices the driver sees (0 without a driver), without starting the runtime's
    context: cuInit and cuDeviceGetCount of libcuda."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int()
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    except (OSError, AttributeError):
        return 0


def _check_folder(what, path):
    if os.path.exists(path):
        return os.path.abspath(path)
    hub = "/" in path and not path.startswith((".", "/")) and path.count("/") == 1
    hint = (" duet does not download from the Hugging Face hub: download the model first "
            f"(huggingface-cli download {path} --local-dir DIR) and pass that folder."
            if hub else "")
    raise _lib.DuetOSError(f"{what} {path!r} is not a local folder or file.{hint}",
                           "NOT_FOUND", -6)


class _Seq:
    """One sequence of a request being generated."""

    __slots__ = ("detok", "text", "ids", "n_seen", "finish", "stop_reason", "logprobs",
                 "cumulative", "done")

    def __init__(self, detok, want_logprobs):
        self.detok = detok
        self.text = ""
        self.ids = []
        self.n_seen = 0          # engine tokens taken (the engine may run past a stop string)
        self.finish = None
        self.stop_reason = None
        self.logprobs = [] if want_logprobs else None
        self.cumulative = 0.0 if want_logprobs else None
        self.done = False


class _Request:
    """A request of one generate() call: its prompt, parameters and sequences."""

    def __init__(self, index, request_id, prompt, prompt_ids, params, stop_ids):
        self.index = index
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_ids = prompt_ids
        self.params = params
        self.stop_ids = stop_ids          # the user's stop_token_ids, for stop_reason
        self.engine_stops = set()         # every id that ends a sequence in the engine
        self.engine_id = None
        self.seqs = []
        self.prompt_logprobs = None
        self.metrics = RequestMetrics(time.time())
        self.error = None
        self.finished = False


class LLM:
    """vLLM's LLM over duet (see the module's text and docs/python.md)."""

    def __init__(self, model, speculative_model=None, num_speculative_tokens=None,
                 cpu_draft_worker=False, dtype="auto", tensor_parallel_size=_UNSET,
                 gpu_memory_utilization=_UNSET, swap_space=_UNSET, max_model_len=None,
                 enable_prefix_caching=None, seed=0, config=None, **overrides):
        self._lock = threading.RLock()
        self._engine = None
        self._cfg = None
        self._lib = _lib.lib()
        self._counter = itertools.count()
        unknown = [k for k in overrides
                   if k not in _KEYWORDS and k not in _IGNORED and k not in _ALLOWED and
                   k not in _HANDLED]
        if unknown:
            raise TypeError(f"LLM.__init__() got an unexpected keyword argument '{unknown[0]}'")
        if seed is None:
            seed = 0
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self._rng = random.Random(seed)
        self._warn_ignored(overrides)

        model = _check_folder("model", os.fspath(model))
        spec = self._speculative(speculative_model, num_speculative_tokens, overrides)
        device = overrides.get("device", "auto")
        if device not in ("auto", "cuda", "gpu", "cpu"):
            raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', got {device!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype {dtype!r} is not supported: one of "
                             f"{', '.join(sorted(_DTYPES))}")

        cfg = c_void_p()
        st = self._lib.duet_config_create(ctypes.byref(cfg))
        if st:
            raise _lib.error(st, "cannot create a configuration")
        self._cfg = cfg.value
        sets = self._load_config(config)
        sets.append(("model", model))
        target = self._target_worker(device)
        if target:
            sets.append(("target.worker", target))
        if dtype != "auto" or not self._is_set("target.dtype"):
            sets.append(("target.dtype", _DTYPES[dtype]))
        explicit = {"tensor_parallel_size": tensor_parallel_size,
                    "gpu_memory_utilization": gpu_memory_utilization, "swap_space": swap_space,
                    "max_model_len": max_model_len, "enable_prefix_caching":
                    enable_prefix_caching}
        explicit.update({k: v for k, v in overrides.items() if k in _KEYWORDS})
        for kw, value in explicit.items():
            if value is _UNSET or value is None:
                continue
            key, conv = _KEYWORDS[kw]
            if isinstance(value, bool) and conv is not bool:
                raise TypeError(f"{kw} must be a number, got bool")
            sets.append((key, conv(value)))
        # Prefix caching is on unless asked otherwise (vLLM V1's default).
        if enable_prefix_caching is None and not self._is_set("cache.prefix_caching"):
            sets.append(("cache.prefix_caching", True))
        if spec:
            sets.append(("speculative.draft_model", spec["model"]))
            sets.append(("speculative.num_tokens", spec["num_tokens"]))
            for key in ("tensor_parallel", "disable_by_batch_size", "acceptance",
                        "typical_posterior_threshold", "typical_posterior_alpha"):
                if key in spec:
                    sets.append((f"speculative.{key}", spec[key]))
            if cpu_draft_worker:
                sets.append(("speculative.worker", self._find_worker("cpu") or "cpu"))
            elif not self._is_set("speculative.worker"):
                sets.append(("speculative.worker", target or self._get_string("target.worker")))
            if dtype != "auto":
                sets.append(("speculative.dtype", _DTYPES[dtype]))
        elif cpu_draft_worker:
            warnings.warn("cpu_draft_worker=True without speculative_model: there is no draft",
                          stacklevel=2)
        for key, value in sets:
            self._set(f"{key}={_config_value(value)}")
        st = self._lib.duet_config_validate(self._cfg)
        if st:
            raise _lib.error(st, self._lib.duet_config_error(self._cfg))

        self._tokenizer = None
        if not overrides.get("skip_tokenizer_init", False):
            folder = overrides.get("tokenizer") or model
            folder = _check_folder("tokenizer", os.fspath(folder))
            gguf = folder if os.path.isfile(folder) else None
            if gguf:
                folder = os.path.dirname(folder) or "."
            if os.path.exists(os.path.join(folder, "tokenizer.json")):
                self._tokenizer = Tokenizer(folder)
            elif gguf:  # the tokenizer the GGUF file embeds (tokenizer.ggml.*)
                self._tokenizer = Tokenizer(gguf)
            else:
                raise _lib.DuetOSError(
                    f"{folder}: no tokenizer.json (pass tokenizer=FOLDER, or "
                    "skip_tokenizer_init=True to give prompts as token ids)", "NOT_FOUND", -6)

        engine = c_void_p()
        err = ctypes.create_string_buffer(_lib.ERR_SIZE)
        st = self._lib.duet_engine_create(self._cfg, ctypes.byref(engine), err, _lib.ERR_SIZE)
        if st:
            raise _lib.error(st, err.value)
        self._engine = engine.value
        self._vocab = int(self._metric("vocab_size"))
        self._max_model_len = int(self._metric("max_model_len"))
        if self._tokenizer and self._tokenizer.vocab_size > self._vocab:
            self.close()
            raise _lib.DuetValueError(
                f"the tokenizer has {self._tokenizer.vocab_size} ids, more than the model's "
                f"vocabulary ({self._vocab})", "INVALID_ARGUMENT", -1)

    # ---- configuration -----------------------------------------------------------------------

    @staticmethod
    def _warn_ignored(overrides):
        for name, value in overrides.items():
            if name in _ALLOWED and value not in _ALLOWED[name]:
                raise ValueError(f"{name}={value!r} is not supported by duet")
            if name in _IGNORED and value != _IGNORED[name]:
                warnings.warn(f"duet: {name}={value!r} has no meaning here and is ignored",
                              stacklevel=3)

    def _speculative(self, model, num_tokens, overrides):
        """The draft's settings from vLLM's speculative keywords, or None."""
        spec = {}
        sc = overrides.get("speculative_config")
        if sc is not None:
            if not isinstance(sc, dict):
                raise TypeError("speculative_config must be a dict")
            names = {"model": "model", "num_speculative_tokens": "num_tokens",
                     "draft_tensor_parallel_size": "tensor_parallel",
                     "disable_by_batch_size": "disable_by_batch_size",
                     "acceptance_method": "acceptance",
                     "posterior_threshold": "typical_posterior_threshold",
                     "posterior_alpha": "typical_posterior_alpha", "method": None}
            for k, v in sc.items():
                if k not in names:
                    raise ValueError(f"speculative_config: unknown key {k!r}")
                if k == "method" and v not in ("draft_model", None):
                    raise ValueError(f"speculative_config: method {v!r} is not supported by duet "
                                     "(a draft model only)")
                if names[k]:
                    spec[names[k]] = v
        if model is not None:
            spec["model"] = model
        if num_tokens is not None:
            spec["num_tokens"] = num_tokens
        for kw, key in (("speculative_draft_tensor_parallel_size", "tensor_parallel"),
                        ("speculative_disable_by_batch_size", "disable_by_batch_size"),
                        ("spec_decoding_acceptance_method", "acceptance"),
                        ("typical_acceptance_sampler_posterior_threshold",
                         "typical_posterior_threshold"),
                        ("typical_acceptance_sampler_posterior_alpha",
                         "typical_posterior_alpha")):
            if overrides.get(kw) is not None:
                spec[key] = overrides[kw]
        if not spec:
            return None
        if spec.get("model") is None or spec.get("num_tokens") is None:
            raise ValueError("Expected both speculative_model and num_speculative_tokens to be "
                             f"provided, but found speculative_model={spec.get('model')!r} and "
                             f"num_speculative_tokens={spec.get('num_tokens')!r}.")
        if "acceptance" in spec:
            if spec["acceptance"] not in _ACCEPTANCE:
                raise ValueError("spec_decoding_acceptance_method must be one of "
                                 f"{', '.join(_ACCEPTANCE)}, got {spec['acceptance']!r}")
            spec["acceptance"] = _ACCEPTANCE[spec["acceptance"]]
        if isinstance(spec["num_tokens"], bool) or not isinstance(spec["num_tokens"], int):
            raise TypeError("num_speculative_tokens must be an int")
        spec["model"] = _check_folder("speculative_model", os.fspath(spec["model"]))
        return spec

    def _target_worker(self, device):
        """The target's worker: the GPU worker when a CUDA device is visible and the plugin is
        there (device "auto"), else the CPU worker; None when the config file chose."""
        if device == "auto" and self._is_set("target.worker"):
            return None
        if device == "cpu":
            return "cpu"
        gpu = self._find_worker("gpu")
        if gpu and _cuda_devices() > 0:
            return gpu
        if device in ("cuda", "gpu"):
            raise _lib.DuetRuntimeError(
                "device='cuda': " + ("no CUDA device is visible" if gpu else
                                     "this duet was built without the GPU worker"),
                "UNSUPPORTED", -8)
        return self._find_worker("cpu") or "cpu"

    def _find_worker(self, name):
        """The worker plugin's name when libduet finds it ($DUET_PLUGIN_PATH, its install
        folder), its path in the build tree the package runs from, or None."""
        path = c_void_p()
        err = ctypes.create_string_buffer(_lib.ERR_SIZE)
        if self._lib.duet_plugin_find(name.encode(), None, ctypes.byref(path), err,
                                      _lib.ERR_SIZE) == 0:
            _lib.free(path)
            return name
        for folder in _lib.plugin_dirs():
            candidate = os.path.join(folder, f"duet_{name}_worker.so")
            if os.path.exists(candidate):
                return candidate
        return None

    def _load_config(self, config):
        """Loads config (a file, or a dict of dotted keys); returns the dict's assignments."""
        if config is None:
            return []
        if isinstance(config, dict):
            return [(str(k), v) for k, v in config.items()]
        st = self._lib.duet_config_load_file(self._cfg, os.fsencode(config))
        if st:
            raise _lib.error(st, self._lib.duet_config_error(self._cfg))
        return []

    def _set(self, assignment):
        st = self._lib.duet_config_set(self._cfg, assignment.encode("utf-8"))
        if st:
            raise _lib.error(st, self._lib.duet_config_error(self._cfg))

    def _is_set(self, key):
        return bool(self._lib.duet_config_is_set(self._cfg, key.encode()))

    def _get_string(self, key):
        out = ctypes.c_char_p()
        st = self._lib.duet_config_get_string(self._cfg, key.encode(), ctypes.byref(out))
        return None if st else out.value.decode()

    def _metric(self, name):
        v = c_double()
        st = self._lib.duet_engine_metric(self._engine, name.encode(), ctypes.byref(v))
        if st:
            raise _lib.error(st, f"no metric {name}")
        return v.value

    # ---- lifetime ----------------------------------------------------------------------------

    def close(self):
        """Releases the engine (its models and KV cache) now; the LLM is unusable after. A
        tokenizer from get_tokenizer() stays usable."""
        with self._lock:
            if self._engine:
                self._lib.duet_engine_destroy(self._engine)
                self._engine = None
            if self._cfg:
                self._lib.duet_config_destroy(self._cfg)
                self._cfg = None

    def __del__(self):
        if getattr(self, "_lib", None) is not None and getattr(self, "_lock", None) is not None:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_open(self):
        if not self._engine:
            raise RuntimeError("this LLM was closed")

    def get_tokenizer(self):
        """The model's tokenizer (encode, decode, apply_chat_template, ...)."""
        if self._tokenizer is None:
            raise RuntimeError("the LLM was created with skip_tokenizer_init=True")
        return self._tokenizer

    def get_metrics(self):
        """The engine's counters since creation (duet_engine_metrics, by name)."""
        with self._lock:
            self._check_open()
            names = []
            for i in itertools.count():
                name = self._lib.duet_engine_metric_name(i)
                if name is None:
                    break
                names.append(name.decode())
            return {n: self._metric(n) for n in names}

    # ---- generation --------------------------------------------------------------------------

    def generate(self, prompts=None, sampling_params=None, prompt_token_ids=None, use_tqdm=True,
                 lora_request=None, priority=None):
        """Generates for every prompt (a string, a list of strings, {"prompt": str} or
        {"prompt_token_ids": [...]} dicts, or lists of those) and returns a RequestOutput per
        prompt, in order. sampling_params: one SamplingParams for all, or a list of one per
        prompt; None: SamplingParams()."""
        if lora_request is not None:
            raise ValueError("LoRA is not supported by duet")
        inputs = self._inputs(prompts, prompt_token_ids)
        return self._run(inputs, sampling_params, use_tqdm, priority)

    def chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None,
             chat_template=None, add_generation_prompt=True, continue_final_message=False,
             tools=None, chat_template_kwargs=None):
        """Generates a reply to a conversation (a list of {"role", "content"} messages), or to
        each of a list of conversations, rendered with the model's chat template (or
        chat_template) and encoded without special tokens."""
        if lora_request is not None:
            raise ValueError("LoRA is not supported by duet")
        if continue_final_message:
            raise ValueError("continue_final_message is not supported by duet")
        tok = self.get_tokenizer()
        if not isinstance(messages, (list, tuple)):
            raise TypeError("messages must be a list of messages or a list of conversations")
        batch = messages and isinstance(messages[0], (list, tuple))
        conversations = list(messages) if batch else [messages]
        kwargs = dict(chat_template_kwargs or {})
        if tools is not None:
            kwargs["tools"] = tools
        inputs = []
        for conv in conversations:
            text = tok.render_chat(conv, add_generation_prompt, chat_template, kwargs)
            inputs.append((text, tok.encode(text, add_special_tokens=False)))
        return self._run(inputs, sampling_params, use_tqdm, None)

    def _inputs(self, prompts, prompt_token_ids):
        """[(prompt text or None, prompt ids or None)] from generate()'s arguments."""
        if prompts is None and prompt_token_ids is None:
            raise ValueError("Either prompts or prompt_token_ids must be provided.")
        if prompts is not None and prompt_token_ids is not None:
            raise ValueError("Give prompts or prompt_token_ids, not both.")
        if prompt_token_ids is not None:
            if prompt_token_ids and isinstance(prompt_token_ids[0], int):
                prompt_token_ids = [prompt_token_ids]
            return [(None, list(ids)) for ids in prompt_token_ids]
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        inputs = []
        for p in prompts:
            if isinstance(p, str):
                inputs.append((p, None))
            elif isinstance(p, dict):
                extra = set(p) - {"prompt", "prompt_token_ids"}
                if extra:
                    raise ValueError(f"prompt field {sorted(extra)[0]!r} is not supported by "
                                     "duet")
                if "prompt_token_ids" in p:
                    ids = p["prompt_token_ids"]
                    if not isinstance(ids, (list, tuple)):
                        raise TypeError("prompt_token_ids must be a list of ints")
                    inputs.append((p.get("prompt"), list(ids)))
                elif "prompt" in p:
                    if not isinstance(p["prompt"], str):
                        raise TypeError("prompt must be a str")
                    inputs.append((p["prompt"], None))
                else:
                    raise ValueError("a prompt dict needs 'prompt' or 'prompt_token_ids'")
            else:
                raise TypeError(f"a prompt must be a str or a dict, got {type(p).__name__}")
        return inputs

    def _run(self, inputs, sampling_params, use_tqdm, priority):
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(inputs)
        else:
            params = list(sampling_params)
            if len(params) != len(inputs):
                raise ValueError("The lengths of prompts and sampling_params must be the same.")
            for p in params:
                if not isinstance(p, SamplingParams):
                    raise TypeError("sampling_params must hold SamplingParams, got "
                                    f"{type(p).__name__}")
        if priority is not None and len(priority) != len(inputs):
            raise ValueError("The lengths of prompts and priority must be the same.")
        with self._lock:
            self._check_open()
            requests = [self._prepare(i, text, ids, params[i])
                        for i, (text, ids) in enumerate(inputs)]
            live = {}
            try:
                for r in requests:
                    self._add(r, None if priority is None else priority[r.index])
                    live[r.engine_id] = r
                self._loop(live, requests, use_tqdm)
            except BaseException:
                self._abort(live)
                raise
        failed = [r for r in requests if r.error]
        outputs = [self._output(r) for r in requests]
        if failed:
            e = _lib.DuetRuntimeError(f"request {failed[0].request_id} failed: "
                                      f"{failed[0].error}", "DEVICE", -9)
            e.outputs = outputs
            raise e
        return outputs

    def _prepare(self, index, text, ids, sp):
        if ids is None:
            if self._tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer (skip_tokenizer_init=True): "
                                 "give prompt_token_ids")
            ids = self._tokenizer.encode(text, add_special_tokens=True)
        ids = list(ids)
        if sp.truncate_prompt_tokens is not None:
            ids = ids[-sp.truncate_prompt_tokens:]
        if not ids:
            raise ValueError("The decoder prompt cannot be empty")
        if len(ids) > self._max_model_len:
            raise ValueError(f"The decoder prompt (length {len(ids)}) is longer than the maximum "
                             f"model length of {self._max_model_len}. Make sure that "
                             "`max_model_len` is no smaller than the number of text tokens.")
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, int):
                raise TypeError(f"prompt_token_ids must hold ints, got {type(t).__name__}")
            if not 0 <= t < self._vocab:
                raise ValueError(f"Token id {t} is out of vocabulary (size {self._vocab})")
        r = _Request(index, str(next(self._counter)), text, ids, sp, set(sp.stop_token_ids))
        return r

    def _add(self, r, priority):
        sp = r.params
        lib = self._lib
        req = c_void_p()
        st = lib.duet_request_create(ctypes.byref(req))
        if st:
            raise _lib.error(st, "cannot create a request")
        try:
            def set_int(field, v):
                s = lib.duet_request_set_int(req, field.encode(), v)
                if s:
                    raise _lib.error(s, f"{field}={v} is out of range")

            def set_float(field, v):
                s = lib.duet_request_set_float(req, field.encode(), float(v))
                if s:
                    raise _lib.error(s, f"{field}={v} is out of range")

            prompt = _lib.int32_array(r.prompt_ids, "prompt_token_ids")
            lib.duet_request_set_tokens(req, b"prompt", prompt, len(prompt))
            stop = list(sp.stop_token_ids)
            if self._tokenizer is not None and not sp.ignore_eos:
                stop += [t for t in self._tokenizer.eos_token_ids if t not in stop]
            r.engine_stops = set(stop)
            stop_arr = _lib.int32_array(stop, "stop_token_ids")
            lib.duet_request_set_tokens(req, b"stop_token_ids", stop_arr, len(stop_arr))
            max_tokens = sp.max_tokens
            if max_tokens is None:
                max_tokens = self._max_model_len - len(r.prompt_ids)
            set_int("max_tokens", max(1, min(max_tokens, 2**32 - 1)))
            set_int("n", sp.n)
            set_float("temperature", sp.temperature)
            set_float("top_p", sp.top_p)
            set_int("top_k", max(sp.top_k, 0) if sp.top_k < 2**31 else 0)
            set_float("min_p", sp.min_p)
            seed = sp.seed if sp.seed is not None else self._rng.getrandbits(63)
            set_int("seed", seed & (2**63 - 1) if seed >= 0 else -((-seed) & (2**63 - 1)))
            # logprobs=0 still reports the sampled token's: ask the engine for one.
            if sp.logprobs is not None:
                set_int("logprobs", min(max(sp.logprobs, 1), 2**31))
            if sp.prompt_logprobs is not None:
                set_int("prompt_logprobs", min(max(sp.prompt_logprobs, 1), 2**31))
            set_int("ignore_eos", int(bool(sp.ignore_eos)))
            set_float("presence_penalty", sp.presence_penalty)
            set_float("frequency_penalty", sp.frequency_penalty)
            set_float("repetition_penalty", sp.repetition_penalty)
            if sp.logit_bias:
                ids = _lib.int32_array(sp.logit_bias.keys(), "logit_bias")
                bias = (c_float * len(ids))(*[float(b) for b in sp.logit_bias.values()])
                lib.duet_request_set_logit_bias(req, ids, bias, len(ids))
            if priority is not None:
                if isinstance(priority, bool) or not isinstance(priority, int) or \
                        not -2**31 <= priority < 2**31:
                    raise TypeError("priority must hold ints")
                set_int("priority", priority)
            rid = c_uint64()
            st = lib.duet_engine_add(self._engine, req, ctypes.byref(rid))
            if st:
                raise _lib.error(st, lib.duet_engine_error(self._engine))
            r.engine_id = rid.value
        finally:
            lib.duet_request_destroy(req)
        want_lp = sp.logprobs is not None
        for _ in range(sp.n):
            detok = None
            if self._tokenizer is not None and sp.detokenize:
                detok = Detokenizer(self._tokenizer, sp.skip_special_tokens)
            r.seqs.append(_Seq(detok, want_lp))

    def _abort(self, live):
        """Aborts what is still running and steps until the engine has reported it."""
        if not self._engine:
            return
        for eid in list(live):
            self._lib.duet_engine_abort(self._engine, eid)
        out = c_void_p()
        while self._lib.duet_engine_has_unfinished(self._engine):
            if self._lib.duet_engine_step(self._engine, ctypes.byref(out)):
                break

    def _loop(self, live, requests, use_tqdm):
        bar = _Progress(len(requests), use_tqdm)
        out = c_void_p()
        lib = self._lib
        try:
            while live:
                st = lib.duet_engine_step(self._engine, ctypes.byref(out))
                if st:
                    msg = lib.duet_engine_error(self._engine)
                    self.close()  # a failed step leaves the engine unusable
                    raise _lib.error(st, msg)
                for i in range(lib.duet_step_output_count(out)):
                    ro = lib.duet_step_output_request(out, i)
                    eid = self._out_int(ro, "request_id")
                    r = live.get(eid)
                    if r is None:
                        continue
                    if self._take(r, ro):
                        del live[eid]
                        r.finished = True
                        r.metrics.finished_time = time.time()
                        bar.update(r)
                    elif all(s.done for s in r.seqs):
                        lib.duet_engine_abort(self._engine, eid)  # stop strings ended them all
        finally:
            bar.close()

    def _out_int(self, ro, field):
        v = c_int64()
        st = self._lib.duet_request_output_int(ro, field.encode(), ctypes.byref(v))
        if st:
            raise _lib.error(st, f"no output field {field}")
        return v.value

    def _seq_int(self, ro, seq, field):
        v = c_int64()
        st = self._lib.duet_request_output_seq_int(ro, seq, field.encode(), ctypes.byref(v))
        if st:
            raise _lib.error(st, f"no sequence field {field}")
        return v.value

    def _take(self, r, ro):
        """Takes one step's output of request r; True when the engine finished it."""
        lib = self._lib
        sp = r.params
        now = time.time()
        finish = self._out_int(ro, "finish")
        m = r.metrics
        if sp.prompt_logprobs is not None and r.prompt_logprobs is None:
            self._take_prompt_logprobs(r, ro)
        nl = self._out_int(ro, "logprobs")
        n_out = self._out_int(ro, "n_outputs")
        for k in range(min(n_out, len(r.seqs))):
            s = r.seqs[k]
            n_ids = self._seq_int(ro, k, "n_ids")
            if s.done or n_ids <= s.n_seen:
                s.n_seen = max(s.n_seen, n_ids)
            else:
                n = n_ids - s.n_seen
                ids = (c_int32 * n)()
                lps = tops = topv = None
                if nl and s.logprobs is not None:
                    lps = (c_float * n)()
                    tops = (c_int32 * (n * nl))()
                    topv = (c_float * (n * nl))()
                st = lib.duet_request_output_tokens(ro, k, s.n_seen, n, ids, lps, tops, topv)
                if st:
                    raise _lib.error(st, "cannot read the output tokens")
                s.n_seen = n_ids
                if m.first_token_time is None:
                    m.first_token_time = now
                m.last_token_time = now
                seq_finish = self._seq_int(ro, k, "finish") if finish else 0
                for j in range(n):
                    # A stop id the engine emitted is always its sequence's last token.
                    stop = ids[j] in r.engine_stops or (
                        j == n - 1 and seq_finish == _lib.FINISH_STOP)
                    if self._push(r, s, ids[j], j, lps, tops, topv, nl, stop):
                        break
            if finish and not s.done:
                self._finish_seq(s, _FINISH.get(self._seq_int(ro, k, "finish") or finish,
                                                 "abort"))
        if finish == _lib.FINISH_ERROR:
            err = lib.duet_request_output_error(ro)
            r.error = err.decode("utf-8", "replace") if err else "the model failed the request"
        if finish:  # the request's counters, once (they are final now)
            m.num_drafts = self._out_int(ro, "num_drafts")
            m.num_draft_tokens = self._out_int(ro, "num_proposed")
            m.num_accepted_tokens = self._out_int(ro, "num_accepted")
            m.num_preemptions = self._out_int(ro, "num_preemptions")
            counts = (c_uint32 * _lib.MAX_SPEC_TOKENS)()
            got = lib.duet_request_output_accepted_at(ro, counts, _lib.MAX_SPEC_TOKENS)
            if got and m.num_drafts:
                k = max((i + 1 for i in range(got) if counts[i]), default=0)
                m.spec_token_acceptance_counts = [m.num_drafts] + [counts[i] for i in range(k)]
        return finish != _lib.FINISH_NONE

    def _push(self, r, s, token, j, lps, tops, topv, nl, is_stop_token):
        """Appends one generated token to s: text, logprobs, stop strings. True when s ends."""
        sp = r.params
        s.ids.append(token)
        if s.logprobs is not None:
            lp = lps[j] if lps is not None else float("nan")
            s.cumulative += lp
            entry = {}
            want = sp.logprobs
            for q in range(nl if want else 0):
                t = tops[j * nl + q]
                if t < 0 or len(entry) >= want:
                    break
                entry[t] = Logprob(topv[j * nl + q], q + 1, self._token_text(t))
            if token not in entry:
                rank = None
                for q in range(nl):
                    if tops[j * nl + q] == token:
                        rank = q + 1
                entry[token] = Logprob(lp, rank, self._token_text(token))
                # the sampled token first, as vLLM orders the dict
                entry = {token: entry.pop(token), **entry}
            s.logprobs.append(entry)
        if is_stop_token:
            # An EOS or stop token ends the sequence; its text is not shown unless asked.
            s.stop_reason = token if token in r.stop_ids else None
            if sp.include_stop_str_in_output and s.detok is not None:
                s.text += s.detok.push(token)
            return False
        if s.detok is None:
            return False
        new = s.detok.push(token)
        if not new:
            return False
        before = len(s.text)
        s.text += new
        if sp.stop:
            longest = max(len(x) for x in sp.stop)
            start = max(0, before - longest + 1)
            best = None
            for x in sp.stop:
                at = s.text.find(x, start)
                if at >= 0 and (best is None or at < best[0]):
                    best = (at, x)
            if best:
                at, x = best
                s.text = s.text[:at + len(x)] if sp.include_stop_str_in_output else s.text[:at]
                s.stop_reason = x
                self._finish_seq(s, "stop", flush=False)
                return True
        return False

    def _finish_seq(self, s, reason, flush=True):
        if flush and s.detok is not None and s.finish is None:
            s.text += s.detok.finish()
        s.finish = reason
        s.done = True
        s.detok = None

    def _token_text(self, token):
        return None if self._tokenizer is None else self._tokenizer.token_text(token)

    def _take_prompt_logprobs(self, r, ro):
        n = len(r.prompt_ids)
        P = self._out_int(ro, "prompt_logprobs")
        if not P:
            return
        vals = (c_float * n)()
        tops = (c_int32 * (n * P))()
        topv = (c_float * (n * P))()
        if self._lib.duet_request_output_prompt_logprobs(ro, vals, tops, topv):
            return
        want = r.params.prompt_logprobs
        result = [None]
        for t in range(1, n):
            token = r.prompt_ids[t]
            entry = {token: Logprob(vals[t], None, self._token_text(token))}
            for q in range(P):
                tid = tops[t * P + q]
                if tid == token:
                    entry[token].rank = q + 1
                if tid >= 0 and q < want and tid not in entry:
                    entry[tid] = Logprob(topv[t * P + q], q + 1, self._token_text(tid))
            result.append(entry)
        r.prompt_logprobs = result

    def _output(self, r):
        outs = []
        for k, s in enumerate(r.seqs):
            if not s.done and s.detok is not None:
                s.text += s.detok.finish()
            outs.append(CompletionOutput(k, s.text, list(s.ids), s.cumulative, s.logprobs,
                                         s.finish, s.stop_reason))
        return RequestOutput(r.request_id, r.prompt, list(r.prompt_ids), r.prompt_logprobs,
                             outs, r.finished, r.metrics)


class _Progress:
    """vLLM's "Processed prompts" bar: tqdm when use_tqdm and stderr is a terminal, a plain
    line when tqdm is missing."""

    def __init__(self, total, use_tqdm):
        self.bar = None
        self.plain = False
        self.total = total
        self.done = 0
        self.start = time.time()
        self.out_tokens = 0
        if not use_tqdm or not sys.stderr.isatty():
            return
        if callable(use_tqdm) and use_tqdm is not True:
            self.bar = use_tqdm(total=total, desc="Processed prompts", dynamic_ncols=True)
            return
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc="Processed prompts", dynamic_ncols=True)
        except ImportError:
            self.plain = True

    def update(self, r):
        self.done += 1
        self.out_tokens += sum(len(s.ids) for s in r.seqs)
        rate = self.out_tokens / max(time.time() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix_str(f"output: {rate:.2f} toks/s", refresh=False)
            self.bar.update(1)
        elif self.plain:
            sys.stderr.write(f"\rProcessed prompts: {self.done}/{self.total} "
                             f"({rate:.2f} output toks/s)")
            sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.plain:
            sys.stderr.write("\n")
            sys.stderr.flush()
