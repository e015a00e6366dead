#!/usr/bin/env python3
"""PyTorch eager baseline for duet-bench gpu-worker (docs/performance.md, "GPU worker").

Loads a generated Llama model folder (config.json + *.safetensors, as duet-bench writes into
--models), runs a plain eager Llama forward (RMSNorm, RoPE rotate_half with rope_theta, GQA,
SwiGLU; no fused kernels, no torch.compile) with a preallocated contiguous KV cache, and times
with torch.cuda.synchronize:

  - prefill: one sequence of --prompt-len tokens in one forward;
  - decode at each --batch: every sequence holds the same --context-token prompt (prefilled
    untimed), then greedy steps of one token per sequence at positions context .. context + 63,
    starting over at context (as duet-bench's cpu-worker / gpu-worker do).

Prints one JSON object per line, shaped like duet-bench's results. Exits 77 (skip) when torch
is missing or the device is CUDA and none is available.

  python3 bench/torch_llama.py --model bench-models/llama-2-7b-bf16 [--batch 1,8,32]
"""
import argparse
import glob
import json
import os
import struct
import sys
import time

WINDOW = 64  # decode positions before starting again at --context


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model folder: config.json + *.safetensors")
    p.add_argument("--preset", default=None, help="name used in the results (default: folder)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--batch", default="1,8,32", help="decode batch sizes, comma-separated")
    p.add_argument("--prompt-len", type=int, default=512, help="prefill tokens")
    p.add_argument("--context", type=int, default=128, help="decode context")
    p.add_argument("--seconds", type=float, default=4.0, help="budget of one measurement")
    p.add_argument("--repeats", type=int, default=5, help="repetitions; the median is reported")
    return p.parse_args()


def skip(msg):
    print("torch_llama.py: %s (skipped)" % msg, file=sys.stderr)
    sys.exit(77)


try:
    import torch
except ImportError:
    torch = None

DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def read_safetensors(path, device, dtype):
    """The tensors of one .safetensors file, read without the safetensors package."""
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        for name, meta in header.items():
            if name == "__metadata__":
                continue
            if meta["dtype"] not in DTYPES:
                raise SystemExit("%s: %s: dtype %s not supported" % (path, name, meta["dtype"]))
            start, end = meta["data_offsets"]
            f.seek(base + start)
            buf = bytearray(f.read(end - start))
            t = torch.frombuffer(buf, dtype=getattr(torch, DTYPES[meta["dtype"]]))
            out[name] = t.reshape(meta["shape"]).to(device=device, dtype=dtype)
    return out


def load_weights(folder, device, dtype):
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise SystemExit("torch_llama.py: no .safetensors in %s" % folder)
    w = {}
    for path in files:
        try:
            from safetensors.torch import load_file

            w.update({k: v.to(device=device, dtype=dtype) for k, v in load_file(path).items()})
        except ImportError:
            w.update(read_safetensors(path, device, dtype))
    return w


class Llama:
    """A plain eager Llama forward over a preallocated KV cache [layer][batch, kv_head, pos, d]."""

    def __init__(self, cfg, w, device, dtype):
        self.cfg, self.w, self.device, self.dtype = cfg, w, device, dtype
        self.n_layers = cfg["num_hidden_layers"]
        self.n_heads = cfg["num_attention_heads"]
        self.n_kv = cfg.get("num_key_value_heads", self.n_heads)
        self.hidden = cfg["hidden_size"]
        self.head_dim = cfg.get("head_dim") or self.hidden // self.n_heads
        self.eps = cfg.get("rms_norm_eps", 1e-5)
        theta = cfg.get("rope_theta", 10000.0)
        inv = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
        pos = torch.arange(cfg.get("max_position_embeddings", 4096), device=device).float()
        freqs = torch.outer(pos, inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos, self.sin = emb.cos().to(dtype), emb.sin().to(dtype)
        self.lm_head = w.get("lm_head.weight", w["model.embed_tokens.weight"])

    def alloc_cache(self, batch, length):
        shape = (batch, self.n_kv, length, self.head_dim)
        self.k = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(self.n_layers)]
        self.v = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(self.n_layers)]

    def rms_norm(self, x, weight):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(self.dtype) * weight

    @staticmethod
    def rotate_half(x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    def rope(self, x, pos):  # x [B, heads, T, D], pos: the first position of T
        t = x.shape[2]
        cos, sin = self.cos[pos : pos + t], self.sin[pos : pos + t]
        return x * cos + self.rotate_half(x) * sin

    def attention(self, i, x, pos):
        b, t, _ = x.shape
        p = "model.layers.%d.self_attn." % i
        q = (x @ self.w[p + "q_proj.weight"].T).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = (x @ self.w[p + "k_proj.weight"].T).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = (x @ self.w[p + "v_proj.weight"].T).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = self.rope(q, pos), self.rope(k, pos)
        self.k[i][:b, :, pos : pos + t] = k
        self.v[i][:b, :, pos : pos + t] = v
        keys, values = self.k[i][:b, :, : pos + t], self.v[i][:b, :, : pos + t]
        group = self.n_heads // self.n_kv
        if group > 1:
            keys = keys.repeat_interleave(group, dim=1)
            values = values.repeat_interleave(group, dim=1)
        scores = (q @ keys.transpose(-1, -2)).float() / (self.head_dim ** 0.5)
        if t > 1:
            mask = torch.full((t, pos + t), float("-inf"), device=self.device).triu(pos + 1)
            scores = scores + mask
        probs = torch.softmax(scores, dim=-1).to(self.dtype)
        out = (probs @ values).transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)
        return out @ self.w[p + "o_proj.weight"].T

    def mlp(self, i, x):
        p = "model.layers.%d.mlp." % i
        gate = torch.nn.functional.silu(x @ self.w[p + "gate_proj.weight"].T)
        return (gate * (x @ self.w[p + "up_proj.weight"].T)) @ self.w[p + "down_proj.weight"].T

    def forward(self, tokens, pos):
        """tokens [B, T] at positions pos..; the greedy next token of each sequence's last one."""
        x = self.w["model.embed_tokens.weight"][tokens]
        for i in range(self.n_layers):
            p = "model.layers.%d." % i
            x = x + self.attention(i, self.rms_norm(x, self.w[p + "input_layernorm.weight"]), pos)
            x = x + self.mlp(i, self.rms_norm(x, self.w[p + "post_attention_layernorm.weight"]))
        x = self.rms_norm(x[:, -1:], self.w["model.norm.weight"])
        return (x @ self.lm_head.T).argmax(-1)  # [B, 1]


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn, args, device):
    """Per repetition (seconds / repeats each, at least one call): seconds per call."""
    samples = []
    for _ in range(args.repeats):
        n, start = 0, time.perf_counter()
        end = start + args.seconds / args.repeats
        while True:
            fn()
            n += 1
            sync(device)
            if time.perf_counter() >= end:
                break
        samples.append((time.perf_counter() - start) / n)
    samples.sort()
    mid = len(samples) // 2
    med = samples[mid] if len(samples) % 2 else (samples[mid - 1] + samples[mid]) / 2
    return med, samples[0]


def tokens(n, vocab, salt, batch=1):
    row = [3 + (i * 2654435761 + salt * 40503) % max(vocab - 3, 1) for i in range(n)]
    return torch.tensor([row] * batch, dtype=torch.long)


def main():
    args = parse_args()
    if torch is None:
        skip("no torch")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        skip("no CUDA device")
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    preset = args.preset or os.path.basename(os.path.normpath(args.model))
    if args.device.startswith("cuda"):
        dev_index = torch.device(args.device).index or 0
        device_name = torch.cuda.get_device_name(dev_index)
        torch.cuda.set_device(dev_index)
    else:
        device_name = "cpu"
    base = {"impl": "pytorch-eager", "preset": preset, "dtype": args.dtype,
            "device": args.device, "device_name": device_name, "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda}
    batches = [int(b) for b in args.batch.split(",") if b]
    with torch.inference_mode():
        model = Llama(cfg, load_weights(args.model, args.device, dtype), args.device, dtype)
        vocab = cfg["vocab_size"]
        model.alloc_cache(max(batches + [1]), max(args.prompt_len, args.context + WINDOW))

        prompt = tokens(args.prompt_len, vocab, 1).to(args.device)
        model.forward(prompt, 0)  # warm-up
        sync(args.device)
        med, best = measure(lambda: model.forward(prompt, 0), args, args.device)
        print(json.dumps(dict(base, name="%s_%s_prefill_%d" % (preset, args.dtype, args.prompt_len),
                              phase="prefill", tokens=args.prompt_len,
                              tokens_per_s=args.prompt_len / med,
                              tokens_per_s_best=args.prompt_len / best)), flush=True)

        for b in batches:
            ctx = tokens(args.context, vocab, 2, b).to(args.device)
            state = {"tok": model.forward(ctx, 0), "step": 0}

            def step():
                state["tok"] = model.forward(state["tok"], args.context + state["step"])
                state["step"] = (state["step"] + 1) % WINDOW

            step()  # warm-up
            sync(args.device)
            med, best = measure(step, args, args.device)
            print(json.dumps(dict(base, name="%s_%s_decode_batch_%d" % (preset, args.dtype, b),
                                  phase="decode", batch=b, prompt_context=args.context,
                                  tokens_per_s=b / med, tokens_per_s_best=b / best)), flush=True)


if __name__ == "__main__":
    main()
