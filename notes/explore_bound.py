# exploration script of notes/throughput.md (2026-11-26); not part of the product. An upper bound on
# what kernel work can give at 32x1: the bare training step (compiled model, fused AdamW, clipping)
# with LayerNorm and GELU made free (nn.Identity, so their kernels vanish: different math, on
# purpose) keeps every matmul, attention, the cross-entropy, the residual adds and the optimizer.
# If even that step is under 1.3x the reference, no fusion of LayerNorm or GELU into the matmuls
# reaches 1.3x at equal math.
# usage (GPU): python notes/explore_bound.py   (random tokens: earlier runs saw no difference from real ones)
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.getcwd())
from model import GPT, GPTConfig  # noqa: E402
from notes.steptime import plain_step, time_steps  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
B, T = 32, 1024
data = torch.randint(0, 50257, (8, B, T + 1)).pin_memory()


def step_time(free_ln=False, free_gelu=False, mode=None, steps=30):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT(GPTConfig()).cuda()
    for block in model.transformer.h:
        if free_ln:
            block.ln_1, block.ln_2 = nn.Identity(), nn.Identity()
        if free_gelu:
            block.mlp.gelu = nn.Identity()
    if free_ln:
        model.transformer.ln_f = nn.Identity()
    tok_s, ms, _, _ = time_steps(plain_step(model, data, mode), B * T, steps)
    return tok_s, ms


for name, kw in [
    ('model.py as is', dict()),
    ('LayerNorm free', dict(free_ln=True)),
    ('LayerNorm + GELU free', dict(free_ln=True, free_gelu=True)),
    ('LayerNorm + GELU free, CUDA graphs', dict(free_ln=True, free_gelu=True, mode='reduce-overhead')),
]:
    tok_s, ms = step_time(**kw)
    print(f"{name:40s} {tok_s:10,.0f} tok/s {ms:7.2f} ms/step", flush=True)
