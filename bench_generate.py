"""
Generation speed: model.generate with the key/value cache against full recomputation of the
context for every new token, at max_new_tokens new tokens, for a few batch sizes.

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


def timed_generate(idx, use_cache):
    """(generated tokens (b, max_new_tokens), seconds)."""
    sync()
    t0 = time.perf_counter()
    with autocast:
        y = model.generate(idx, max_new_tokens, temperature=0, use_cache=use_cache)
    sync()
    return y[:, idx.size(1):], time.perf_counter() - t0


# ----------------------------------------------------------------------------- measure
rows = []
for b in batches:
    idx = torch.randint(0, 50257, (b, prompt_len), device=device)  # (b, prompt_len)
    with autocast:  # warm up both paths at this shape
        model.generate(idx, warmup_tokens, temperature=0, use_cache=True)
        model.generate(idx, warmup_tokens, temperature=0, use_cache=False)
    y_cache, t_cache = timed_generate(idx, True)
    y_full, t_full = timed_generate(idx, False)
    same = (y_cache == y_full).float().mean().item()
    tps_cache, tps_full = b * max_new_tokens / t_cache, b * max_new_tokens / t_full
    rows.append((b, tps_cache, tps_full))
    print(f"batch {b:>3}: kv cache {tps_cache:>10,.0f} tok/s ({t_cache * 1e3 / max_new_tokens:6.2f} ms/step) | "
          f"full recompute {tps_full:>10,.0f} tok/s ({t_full * 1e3 / max_new_tokens:7.2f} ms/step) | "
          f"speedup {tps_cache / tps_full:5.1f}x | same tokens {same:.0%}")

# ----------------------------------------------------------------------------- summary
summary = ', '.join(f"batch {b}: {c / f:.1f}x ({c:,.0f} vs {f:,.0f} tok/s)" for b, c, f in rows)
print(f"bench_generate: kv cache vs full recompute at {max_new_tokens} new tokens after a {prompt_len}-token prompt, "
      f"{model.num_params() / 1e6:.0f}M params on {name}{' (compiled)' if compile else ''}: {summary}")
