# exploration script of notes/throughput.md, 2026-12-04 (the head's loss in one Triton pass); not
# part of the product. 1. the loss and its logits' gradient alone, on a 32x1024 micro-batch's bf16
# logits: compiled autograd cross-entropy (forward + backward) against model.head_loss_rows.
# 2. the bare training step at 32x1 (notes/steptime.py, random ids), model.py's HeadLoss against
# autograd's cross-entropy, alternating.
# usage (CUDA GPU): python notes/explore_head_loss.py
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.getcwd())
import model as M  # noqa: E402
from notes.steptime import cuda_ms, plain_step, time_steps  # noqa: E402


class AutogradLoss:  # stands in for M.HeadLoss: the loss as model.py's eval path computes it
    apply = staticmethod(lambda x, w, t: F.cross_entropy(F.linear(x, w).float(), t, ignore_index=-1))


torch.manual_seed(0)
N, V = 32 * 1024, 50304
z0 = torch.randn(N, V, device='cuda', dtype=torch.bfloat16) * 3  # (N, V) logits
t = torch.randint(0, 50257, (N,), device='cuda')
t[::97] = -1  # some ignored rows

# --- 1. the loss and the logits' gradient alone -----------------------------------------------------
zg = z0.clone().requires_grad_()
ce = torch.compile(lambda z: F.cross_entropy(z.float(), t, ignore_index=-1))
def autograd_ce():
    zg.grad = None
    ce(zg).backward()
z = z0.clone()
rows = torch.empty(N, device='cuda', dtype=torch.float32)
def triton_ce():
    M.head_loss_rows[(N,)](z, t, rows, V, z.stride(0), BLOCK=8192, num_warps=16)
print(f"loss + logits' gradient, {N}x{V} bf16: compiled autograd {cuda_ms(autograd_ce):.3f} ms, "
      f"head_loss_rows {cuda_ms(triton_ce):.3f} ms", flush=True)
z.copy_(z0)
triton_ce()
keep = (t != -1).sum()
autograd_ce()
print(f"loss {rows.sum().item() / keep.item():.6f} vs {ce(zg).item():.6f}; largest difference of softmax - onehot "
      f"{(z.float() - zg.grad.float() * keep).abs().max().item():.2e}", flush=True)
del z0, z, zg, rows

# --- 2. the bare step at 32x1 --------------------------------------------------------------------
data = torch.randint(0, 50257, (8, 32, 1025)).pin_memory()
head_loss = M.HeadLoss
for name, cls in [('autograd cross-entropy', AutogradLoss), ('HeadLoss', head_loss)] * 2:
    M.HeadLoss = cls
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = M.GPT(M.GPTConfig()).cuda()
    tok_s, step_ms, mem, warm = time_steps(plain_step(model, data), 32 * 1024, 50)
    print(f"step {name:24s} {tok_s:10,.0f} tok/s {step_ms:7.2f} ms peak {mem:5.1f} GiB (warm-up {warm:.0f} s)",
          flush=True)
    del model
    torch.cuda.empty_cache()
