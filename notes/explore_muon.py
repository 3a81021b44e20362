# exploration script of notes/throughput.md (2026-12-03, Muon's step); not part of the product.
# The fast recipe's Muon step on a GPT-2's block matrices: torch.optim.Muon (one matrix at a time)
# against model.Muon (stacks of one size), from the same parameters and gradients. Prints
# each one's ms per optimizer step and how far apart their parameters are after a few steps; then
# model.Muon with its Newton-Schulz iteration compiled (torch.compile), to see what fusing is left.
# usage (GPU): python notes/explore_muon.py [124m|350m|774m|1558m] [split_qkv]
import os
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
import model as model_py  # noqa: E402
from model import GPT, GPTConfig, Muon  # noqa: E402

torch.manual_seed(0)
torch.backends.cuda.matmul.allow_tf32 = True  # as train.py
sizes = {'124m': (12, 12, 768), '350m': (24, 16, 1024), '774m': (36, 20, 1280), '1558m': (48, 25, 1600)}
L, H, C = next((sizes[a] for a in sys.argv[1:] if a in sizes), sizes['124m'])
model = GPT(GPTConfig(n_layer=L, n_head=H, n_embd=C, split_qkv='split_qkv' in sys.argv[1:])).cuda()
_, opt = model.configure_optimizers(0.0, 1.8e-3, (0.9, 0.95), 'cuda', muon=dict(lr=0.02, momentum=0.95, weight_decay=0.0))
start = [p.detach().clone() for p in opt.param_groups[0]['params']]
grads = [[torch.randn_like(p) * 1e-3 for p in start] for _ in range(4)]  # four steps' gradients, reused in turn
print(f"{len(start)} matrices, {sum(p.numel() for p in start) / 1e6:.1f}M parameters, shapes "
      f"{sorted({tuple(p.shape) for p in start})}")


def run(cls, steps):
    """Parameters after `steps` steps of cls from `start`, the mean ms of steps 5.. (after warm-up), and
    the GiB a step allocates beyond what it starts with (its transient copies)."""
    params = [p.clone().requires_grad_() for p in start]
    o = cls(params, lr=0.02, momentum=0.95, weight_decay=0.0)
    times = []
    for i in range(steps):
        if i == 1:  # after the first step has made the momentum buffers
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        for p, g in zip(params, grads[i % len(grads)]):
            p.grad = g
        torch.cuda.synchronize()
        t = time.perf_counter()
        o.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    ms = sum(times[5:]) / max(1, len(times[5:])) * 1000
    return [p.detach() for p in params], ms, (torch.cuda.max_memory_allocated() - base) / 2**30


ref, _, _ = run(torch.optim.Muon, 4)
ours, _, _ = run(Muon, 4)
moved = max((r - s).abs().mean().item() for r, s in zip(ref, start))  # the mean change, largest over matrices
gap = max((r - o).abs().max().item() for r, o in zip(ref, ours))
print(f"after 4 steps: largest |difference| {gap:.3g} (bit-identical: {all(torch.equal(r, o) for r, o in zip(ref, ours))}); "
      f"mean |change| from the start {moved:.3g}")
_, ms_ref, gib_ref = run(torch.optim.Muon, 45)
_, ms_ours, gib_ours = run(Muon, 45)
model_py.orthogonalise = torch.compile(model_py.orthogonalise)
_, ms_compiled, _ = run(Muon, 45)
print(f"ms per optimizer step: torch.optim.Muon {ms_ref:.2f}, model.Muon {ms_ours:.2f} ({ms_ref / ms_ours:.2f}x), "
      f"model.Muon with orthogonalise compiled {ms_compiled:.2f} ({ms_ref / ms_compiled:.2f}x); "
      f"transient GiB a step: torch.optim.Muon {gib_ref:.2f}, model.Muon {gib_ours:.2f}")
