#!/usr/bin/env python3
"""vLLM's offline example with a CPU draft (TACO-LLM's cpu_draft_worker keyword), on duet.

    python3 examples/python/taco_llm.py TARGET_FOLDER DRAFT_FOLDER

A vLLM script differs only in its import line. The folders are Hugging Face model folders
(config.json, safetensors weights, tokenizer.json); scripts/demo.sh makes small random-weight
ones (their text is gibberish).
"""

import sys

from duet import LLM, SamplingParams  # vLLM: from vllm import LLM, SamplingParams

target = sys.argv[1] if len(sys.argv) > 1 else "meta-llama/Llama-2-7b-chat-hf"
draft = sys.argv[2] if len(sys.argv) > 2 else "Felladrin/Llama-68M-Chat-v1"

prompts = ["Hello, my name is", "The president of the United States is",
           "The capital of France is", "The future of AI is"]
sampling_params = SamplingParams(temperature=0.8, top_p=0.95)

llm = LLM(model=target, speculative_model=draft, num_speculative_tokens=2,
          use_v2_block_manager=True, cpu_draft_worker=True)
outputs = llm.generate(prompts, sampling_params)

for output in outputs:
    prompt = output.prompt
    generated_text = output.outputs[0].text
    print(f"Prompt: {prompt!r}, Generated text: {generated_text!r}")
m = outputs[0].metrics
print(f"speculative decoding: {m.num_accepted_tokens} of {m.num_draft_tokens} draft tokens "
      "accepted in the first request")
