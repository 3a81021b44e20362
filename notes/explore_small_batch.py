# exploration script of notes/throughput.md (2026-12-02, where the 4 x 8 step's time goes); not
# part of the product. At a forced micro-batch of 4 the CUDA-graph step is bound by the GPU (76 ms
# against 64 ms at 32 x 1). Is that kernel time (small matmuls, per-micro-step casts and gradient
# adds) or the gaps between ~1,000 kernels per micro-step? For each variant it prints ms/step, the
# GPU's summed kernel time per step, the kernel count per step, and the top kernels by time.
# usage (GPU): python notes/explore_small_batch.py [variant ...]   (default: all four)
#        COMBO=1 / CDT=1 / CA=1 python notes/explore_small_batch.py '4x8 graph'   (an inductor or dynamo setting)
import os
import sys
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.getcwd())
from model import GPT, GPTConfig  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = True
T = 1024
out = os.environ.get('OUT', '.')


def build(B, A, graph, whole=False):
    """step() -> loss for GPT-2 124M at micro-batch B x A accumulation, AdamW, clip 1.0, bf16
    autocast, random tokens already on the GPU. graph: each micro-step one CUDA graph (train.py's
    capture); whole: the entire step (A micro-steps, clipping, AdamW) one CUDA graph."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT(GPTConfig()).cuda()
    lr = torch.tensor(6e-4, device='cuda') if whole else 6e-4  # a tensor lr lets AdamW run in a graph
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': rest, 'weight_decay': 0.0}],
                            lr=lr, betas=(0.9, 0.95), fused=True, capturable=whole)
    cm = model if os.environ.get('CA') else torch.compile(model)
    data = torch.randint(0, 50257, (8, A, B, T + 1), device='cuda')  # (batches, micro, B, T + 1)
    ac = lambda: torch.autocast('cuda', dtype=torch.bfloat16)

    def micro(xy):
        with ac():
            _, loss = cm(xy[:, :-1], xy[:, 1:].contiguous())
            loss = loss / A
        loss.backward()
        return loss.detach()
    if os.environ.get('CA'):  # forward and backward in one compiled function: the gradient adds join the graph
        micro = torch.compile(micro)

    def eager_step(i):
        loss = sum(micro(data[i % 8, m]) for m in range(A))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=not (graph or whole))
        return loss

    if not (graph or whole):
        return eager_step
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    static = data[0].clone()  # (A, B, T + 1)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            eager_step(0) if whole else micro(static[0])
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        loss = eager_step(0) if whole else micro(static[0])
    for p in model.parameters():
        p.grad.zero_()

    if whole:
        def step(i):
            static.copy_(data[i % 8])
            g.replay()
            return loss
        return step

    def step(i):
        total = 0
        for m in range(A):
            static[0].copy_(data[i % 8, m])
            g.replay()
            total = total + loss
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        return total
    return step


def measure(name, step, steps=40):
    for i in range(5):
        step(i)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t) / steps * 1000
    from torch.profiler import ProfilerActivity, profile
    n = 3
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for i in range(n):
            step(i)
        torch.cuda.synchronize()
    by_name = defaultdict(lambda: [0.0, 0])  # kernel name -> [total us, count]
    for e in p.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and 'Memcpy' not in e.name and 'Memset' not in e.name:
            by_name[e.name][0] += e.device_time
            by_name[e.name][1] += 1
    busy = sum(v[0] for v in by_name.values()) / n / 1000
    count = sum(v[1] for v in by_name.values()) / n
    print(f"{name:40s} {ms:7.2f} ms/step, kernels busy {busy:6.2f} ms ({busy / ms * 100:4.1f}%), "
          f"{count:6.0f} kernels/step, {(ms - busy) / max(count, 1) * 1000:5.2f} us idle per kernel", flush=True)
    with open(os.path.join(out, f"kernels_{name.replace(' ', '_')}.txt"), 'w') as f:
        for k, (us, c) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:40]:
            f.write(f"{us / n / 1000:8.3f} ms {c / n:6.0f}x  {k[:150]}\n")


variants = {
    '32x1 eager': lambda: build(32, 1, graph=False),
    '4x8 eager': lambda: build(4, 8, graph=False),
    '4x8 graph': lambda: build(4, 8, graph=True),
    '4x8 whole-step graph': lambda: build(4, 8, graph=False, whole=True),
}
# inductor and dynamo settings, each in a process of its own (env COMBO / CDT / CA = 1):
import torch._inductor.config as ic  # noqa: E402
ic.combo_kernels = bool(os.environ.get('COMBO'))  # horizontal fusion of independent kernels
ic.coordinate_descent_tuning = bool(os.environ.get('CDT'))  # tune each Triton kernel's block sizes
torch._dynamo.config.compiled_autograd = bool(os.environ.get('CA'))  # the autograd engine's own work (gradient adds) compiled
tag = ''.join(f" {k.lower()}" for k in ('COMBO', 'CDT', 'CA') if os.environ.get(k))
for name in sys.argv[1:] or variants:
    measure(name + tag, variants[name]())
