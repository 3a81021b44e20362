"""
Generation speed: model.generate with the key/value cache, against full recomputation of the
context for every new token, at max_new_tokens new tokens, for a few batch sizes. The cache is
timed as generate() runs it on a GPU (the one-token step replayed as a CUDA graph, and that step
torch.compiled first, as eval_humaneval.py does) and with every kernel launched eagerly.

Random weights (speed does not depend on them); GPT-2 124M shape by default; on CUDA the weights
are cast to dtype and run under autocast, as sample.py and eval_humaneval.py do. Every path
decodes greedily from the same prompts, so they do the same work; the share of tokens identical
to full recomputation is printed as a sanity check (fp32 on CPU: 100%; bf16 may differ a little).
Expect the ratio to grow with the batch and the context: the cache saves FLOPs, so where one
step is bound by kernel launches (batch 1 on a big GPU) it saves less than where it is bound by
compute (larger batches, long prompts, CPUs).

    python bench/generate_speed.py --device=cuda                          # 124M, batches 1, 8, 64, 128, 512-token prompts
    python bench/generate_speed.py --device=cuda --prompt_len=64 --batch_sizes=1,8 --compile_step=False
    python bench/generate_speed.py --device=cpu --n_layer=2 --n_head=4 --n_embd=128 --batch_sizes=1,4 --prompt_len=128
prints one line per batch size and a summary line.
"""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from configurator import configure, die, setup_device  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

# -----------------------------------------------------------------------------
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cuda', 'cuda:1', 'cpu'
dtype = 'bfloat16'  # autocast dtype on cuda: 'bfloat16', 'float16' or 'float32'; the CPU runs float32
batch_sizes = '1,8,64,128'  # comma-separated: sequences generated together, one measurement each
prompt_len = 512  # tokens in each prompt
max_new_tokens = 256  # tokens generated per sequence
n_layer = 12  # model shape: GPT-2 124M by default
n_head = 12
n_embd = 768
block_size = 1024  # context length; prompt_len + max_new_tokens should fit, or both paths re-read a cut context
warmup_tokens = 8  # a short untimed generation first (CUDA kernels, allocator, compilation)
compile_step = torch.cuda.is_available()  # also time the cache with its decode step torch.compiled (~30 s per batch size)
seed = 1337  # the random weights and prompts follow from it
config = configure(globals())
# -----------------------------------------------------------------------------

torch.manual_seed(seed)
try:
    batches = [int(b) for b in str(batch_sizes).split(',') if b.strip()]
except ValueError:
    die(f"batch_sizes='{batch_sizes}' is not a comma-separated list of integers such as 1,8,64")
device_type, _, autocast = setup_device(device, dtype)
if prompt_len + max_new_tokens > block_size:
    print(f"note: prompt_len + max_new_tokens = {prompt_len + max_new_tokens} > block_size {block_size}: "
          f"past it both paths cut and re-read the context")
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
if device_type != 'cuda':
    autocast = torch.autocast(device_type, enabled=False)  # the CPU runs float32

model = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size)).to(device).eval()
if device_type == 'cuda':
    model = model.to(getattr(torch, dtype))  # as sample.py: autocast would re-cast every matrix at every token
name = torch.cuda.get_device_name() if device_type == 'cuda' else 'CPU'
print(f"model: {model.num_params() / 1e6:.1f}M params, {name}, {dtype if device_type == 'cuda' else 'float32'}, "
      f"prompt {prompt_len} + {max_new_tokens} new tokens, torch {torch.__version__}")


def sync():
    if device_type == 'cuda':
        torch.cuda.synchronize()


def timed_generate(idx, **kw):
    """(generated tokens (b, max_new_tokens), seconds)."""
    sync()
    t0 = time.perf_counter()
    with autocast:
        y = model.generate(idx, max_new_tokens, temperature=0, **kw)
    sync()
    return y[:, idx.size(1):], time.perf_counter() - t0


# ----------------------------------------------------------------------------- measure
paths = []  # (name, generate's keyword arguments); full recomputation last, the baseline
if compile_step:
    paths.append(('compiled step' + (' + CUDA graph' if device_type == 'cuda' else ''),
                  dict(use_cache=True, cuda_graph=True, compile_step=True)))
if device_type == 'cuda':
    paths.append(('CUDA graph', dict(use_cache=True, cuda_graph=True)))
paths += [('eager cache', dict(use_cache=True, cuda_graph=False)), ('full recompute', dict(use_cache=False))]
rows = []
for b in batches:
    idx = torch.randint(0, 50257, (b, prompt_len), device=device)  # (b, prompt_len)
    tps, outs = [], []
    for _, kw in paths:
        with autocast:  # warm up this path at this shape (and compile it)
            model.generate(idx, warmup_tokens, temperature=0, **kw)
        y, t = timed_generate(idx, **kw)
        tps.append(b * max_new_tokens / t)
        outs.append(y)
    same = (outs[0] == outs[-1]).float().mean().item()
    rows.append((b, tps))
    print(f"batch {b:>3}: " + " | ".join(f"{n} {v:>8,.0f} tok/s ({b * 1e3 / v:5.2f} ms/step, {v / tps[-1]:4.1f}x)"
                                         for (n, _), v in zip(paths, tps)) + f" | same tokens {same:.0%}")

# ----------------------------------------------------------------------------- summary
summary = ', '.join(f"batch {b}: {t[0] / t[-1]:.1f}x ({t[0]:,.0f} vs {t[-1]:,.0f} tok/s)" for b, t in rows)
print(f"generate_speed: kv cache ({paths[0][0]}) vs full recompute at {max_new_tokens} new tokens after a "
      f"{prompt_len}-token prompt, {model.num_params() / 1e6:.0f}M params on {name}: {summary}")
