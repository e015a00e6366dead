"""duet: speculative decoding with a CPU draft, behind vLLM's offline interface.

    from duet import LLM, SamplingParams
    llm = LLM(model="models/llama-160m", speculative_model="models/llama-68m",
              num_speculative_tokens=4, cpu_draft_worker=True)
    for out in llm.generate(["Hello, my name is"], SamplingParams(temperature=0.8, top_p=0.95)):
        print(out.outputs[0].text)

A vLLM script changes its import line (from vllm import ...) and runs on duet: see
docs/python.md for every keyword and what it maps to. The package loads libduet.so through
ctypes; nothing is compiled for it.
"""

from ._lib import (DuetError, DuetMemoryError, DuetOSError, DuetRuntimeError,  # noqa: F401
                   DuetValueError)
from .llm import LLM
from .outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from .sampling_params import SamplingParams
from .tokenizer import Tokenizer

try:
    from ._paths import VERSION as __version__
except ImportError:  # the source tree, before configure
    __version__ = "0"

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput", "Logprob",
           "RequestMetrics", "Tokenizer", "DuetError", "DuetValueError", "DuetOSError",
           "DuetMemoryError", "DuetRuntimeError"]
