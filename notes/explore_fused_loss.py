# exploration script of notes/throughput.md, 2026-11-25 (fused linear + cross-entropy, inductor
# options); not part of the product. Times the bare training step (compiled model, fused AdamW,
# clipping) on real code tokens at 32x1, one variant after another on the same GPU.
# usage (GPU, after `python bench.py --geometries="[]"` made data/bench/tokens):
#   python notes/explore_fused_loss.py
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.getcwd())
import shards  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from notes.steptime import plain_step, time_steps  # noqa: E402

# --- the fused loss tried here (measured, not kept: see notes/throughput.md, 2026-11-25) -----------
class LinearCrossEntropy(torch.autograd.Function):
    """loss = cross_entropy(x @ weight.T, targets), mean over targets != -1, with the logits'
    gradient computed in the forward, in the same pass over the logits as the loss (under
    torch.compile one fused kernel reads each row and writes its gradient). Autograd's version
    reads the (N, vocab) logits again in the backward: ~3.3 GB per 32x1024 micro-batch in bf16.
    Same math: float32 log-sum-exp, the gradient in the logits' dtype for the two matmuls."""

    @staticmethod
    def forward(ctx, x, weight, targets):  # x (N, C), weight (V, C), targets (N,)
        logits = x @ weight.t()  # (N, V)
        lse = torch.logsumexp(logits.float(), dim=1)  # (N,)
        keep = targets != -1  # ignore_index=-1, as F.cross_entropy is called elsewhere
        tgt = torch.where(keep, targets, 0)
        n = keep.sum().clamp(min=1).float()  # the mean's divisor (0/0 = 0 here, not NaN)
        loss = ((lse - logits.gather(1, tgt[:, None])[:, 0].float()) * keep).sum() / n
        # d loss / d logits = (softmax - one_hot(target)) / n on kept rows, zero on ignored ones
        onehot = torch.arange(logits.size(1), device=x.device) == tgt[:, None]  # (N, V), fused away
        grad = (torch.exp(logits.float() - lse[:, None]) - onehot.float()) * (keep.float() / n)[:, None]
        ctx.save_for_backward(x, weight, grad.to(logits.dtype))
        return loss

    @staticmethod
    def backward(ctx, g):
        x, weight, grad = ctx.saved_tensors
        # the upstream scalar (1/grad_accum) scales the small results, not the (N, V) gradient
        return (grad @ weight) * g, (grad.t() @ x) * g, None


class FusedGPT(GPT):
    """model.py's GPT whose training loss (grad enabled, targets given) goes through LinearCrossEntropy."""
    fused_loss = True

    def forward(self, idx, targets=None):
        if targets is None or not self.fused_loss or not torch.is_grad_enabled():
            return super().forward(idx, targets)
        b, t = idx.size()
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(torch.arange(t, device=idx.device)))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)  # (b, t, n_embd)
        dtype = torch.get_autocast_dtype('cuda') if torch.is_autocast_enabled('cuda') else x.dtype
        return None, LinearCrossEntropy.apply(x.to(dtype).reshape(b * t, -1), self.lm_head.weight.to(dtype),
                                              targets.reshape(-1))


torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
B, T = 32, 1024
_, tr, _ = shards.open_shards('data/bench/tokens')
cum = shards.window_starts(tr, T)
data = torch.from_numpy(np.stack([shards.get_batch(tr, cum, 1337, i, range(B), B, T) for i in range(8)])).pin_memory()
out = os.environ.get('OUT', '.')
only = sys.argv[1:]  # variant names to run (default: all)

# --- 1. same numbers? one bf16 micro-batch, fused vs autograd's cross-entropy, eager ------------------
torch.manual_seed(0)
model = FusedGPT(GPTConfig()).cuda()
xy = data[0].cuda()
res = {}
for fused in (False, True):
    model.fused_loss = fused
    model.zero_grad(set_to_none=True)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        _, loss = model(xy[:, :-1], xy[:, 1:])
    loss.backward()
    res[fused] = (loss.item(), {n: p.grad.float().clone() for n, p in model.named_parameters()})
rel = max(((res[True][1][n] - g).norm() / g.norm()).item() for n, g in res[False][1].items())
print(f"bf16 loss fused {res[True][0]:.6f} vs autograd {res[False][0]:.6f}; largest relative grad difference "
      f"over parameters {rel:.2e}", flush=True)
del model, res


def step_time(fused=True, cdt=False, mode=None, steps=30, profile=None):
    import torch._inductor.config as ic
    ic.coordinate_descent_tuning = cdt
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = FusedGPT(GPTConfig()).cuda()
    model.fused_loss = fused
    return time_steps(plain_step(model, data, mode), B * T, steps, profile)


for name, kw in [
    ('autograd loss', dict(fused=False, profile=f'{out}/prof_autograd.txt')),
    ('fused loss', dict(fused=True, profile=f'{out}/prof_fused.txt')),
    ('fused loss, coordinate descent', dict(fused=True, cdt=True, profile=f'{out}/prof_fused_cdt.txt')),
    ('fused loss, reduce-overhead', dict(fused=True, mode='reduce-overhead')),
    ('autograd loss again', dict(fused=False)),
    ('fused loss again', dict(fused=True)),
    ('autograd loss, coordinate descent', dict(fused=False, cdt=True)),
]:
    if only and name not in only:
        continue
    try:
        tok_s, ms, mem, cs = step_time(**kw)
        print(f"{name:40s} {tok_s:10,.0f} tok/s {ms:7.2f} ms/step peak {mem:5.1f} GiB (warm-up {cs:.0f} s)", flush=True)
    except Exception as e:  # noqa: BLE001 - an exploration: report and go on
        print(f"{name:40s} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
