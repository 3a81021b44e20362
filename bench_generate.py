"""
Generation speed: model.generate with the key/value cache (on a GPU, its decode step replayed
as a CUDA graph; and without the graph) against full recomputation of the context for every new
token, at max_new_tokens new tokens, for a few batch sizes.

Random weights (speed does not depend on them); GPT-2 124M shape by default; bf16 autocast on
CUDA. Both paths decode greedily from the same prompts, so they do the same work and the share
of identical tokens is printed as a sanity check (fp32 on CPU: 100%; bf16 may differ a little).
Expect the ratio to grow with the batch and the context: the cache saves FLOPs, so where one
step is bound by kernel launches (batch 1 on a big GPU) it saves less than where it is bound by
compute (larger batches, long prompts, CPUs).

    python bench_generate.py --device=cuda                          # 124M, batches 1, 8, 64, 512-token prompts
    python bench_generate.py --device=cuda --prompt_len=64 --batch_sizes=1,8 --compile=True
    python bench_generate.py --device=cpu --n_layer=2 --n_head=4 --n_embd=128 --batch_sizes=1,4 --prompt_len=128
prints one line per batch size and a summary line.
"""
import time

import torch

from configurator import configure
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cuda', 'cuda:1', 'cpu'
dtype = 'bfloat16'  # autocast dtype on cuda: 'bfloat16', 'float16' or 'float32'; the CPU runs float32
batch_sizes = '1,8,64'  # comma-separated: sequences generated together, one measurement each
prompt_len = 512  # tokens in each prompt
max_new_tokens = 256  # tokens generated per sequence
n_layer = 12  # model shape: GPT-2 124M by default
n_head = 12
n_embd = 768
block_size = 1024  # context length; prompt_len + max_new_tokens should fit, or both paths re-read a cut context
warmup_tokens = 8  # a short untimed generation first (CUDA kernels, allocator)
compile = False  # torch.compile the forward (dynamic shapes) for both paths: fewer, fused kernels per step
cudnn_sdpa = False  # allow cuDNN attention: it builds a plan per new shape (~50 ms on an H100, torch 2.11), and a growing context is a new shape every token
seed = 1337
config = configure(globals())
# -----------------------------------------------------------------------------

torch.manual_seed(seed)
try:
    batches = [int(b) for b in str(batch_sizes).split(',') if b.strip()]
except ValueError:
    raise SystemExit(f"error: batch_sizes='{batch_sizes}' is not a comma-separated list of integers such as 1,8,64")
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
if device_type == 'cuda' and not torch.cuda.is_available():
    raise SystemExit(f"error: device='{device}' but CUDA is not available here; pass --device=cpu")
if prompt_len + max_new_tokens > block_size:
    print(f"note: prompt_len + max_new_tokens = {prompt_len + max_new_tokens} > block_size {block_size}: "
          f"past it both paths cut and re-read the context")
if device_type == 'cuda':
    torch.backends.cuda.enable_cudnn_sdp(cudnn_sdpa)  # off: flash / memory-efficient kernels, no per-shape plans
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
autocast = (torch.autocast('cuda', dtype=getattr(torch, dtype)) if device_type == 'cuda' and dtype != 'float32'
            else torch.autocast(device_type, enabled=False))

model = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size)).to(device).eval()
if compile:
    # generate() calls self(...), so compile the bound forward rather than wrap the module
    model.forward = torch.compile(model.forward, dynamic=True)
name = torch.cuda.get_device_name() if device_type == 'cuda' else 'CPU'
print(f"model: {model.num_params() / 1e6:.1f}M params, {name}, {dtype if device_type == 'cuda' else 'float32'}"
      f"{', compiled' if compile else ''}, prompt {prompt_len} + {max_new_tokens} new tokens")


def sync():
    if device_type == 'cuda':
        torch.cuda.synchronize()


def timed_generate(idx, use_cache, cuda_graph=False):
    """(generated tokens (b, max_new_tokens), seconds)."""
    sync()
    t0 = time.perf_counter()
    with autocast:
        y = model.generate(idx, max_new_tokens, temperature=0, use_cache=use_cache, cuda_graph=cuda_graph)
    sync()
    return y[:, idx.size(1):], time.perf_counter() - t0


# ----------------------------------------------------------------------------- measure
# the cache path as generate() runs it (CUDA graph decode on a GPU), the cache path launching
# every kernel eagerly, and full recomputation of the context for every token
paths = [('kv cache + CUDA graph', True, True)] if device_type == 'cuda' else []
paths += [('kv cache', True, False), ('full recompute', False, False)]
rows = []
for b in batches:
    idx = torch.randint(0, 50257, (b, prompt_len), device=device)  # (b, prompt_len)
    tps, outs = [], []
    for name_, use_cache, graph in paths:
        with autocast:  # warm up this path at this shape
            model.generate(idx, warmup_tokens, temperature=0, use_cache=use_cache, cuda_graph=graph)
        y, t = timed_generate(idx, use_cache, graph)
        tps.append(b * max_new_tokens / t)
        outs.append(y)
    same = (outs[0] == outs[-1]).float().mean().item()
    rows.append((b, tps))
    print(f"batch {b:>3}: " + " | ".join(f"{n} {v:>9,.0f} tok/s ({b * 1e3 / v:6.2f} ms/step)" for (n, _, _), v in zip(paths, tps)) +
          f" | speedup {tps[0] / tps[-1]:5.1f}x | same tokens {same:.0%}")

# ----------------------------------------------------------------------------- summary
summary = ', '.join(f"batch {b}: {t[0] / t[-1]:.1f}x ({t[0]:,.0f} vs {t[-1]:,.0f} tok/s)" for b, t in rows)
print(f"bench_generate: {paths[0][0]} vs full recompute at {max_new_tokens} new tokens after a {prompt_len}-token prompt, "
      f"{model.num_params() / 1e6:.0f}M params on {name}{' (compiled)' if compile else ''}: {summary}")
