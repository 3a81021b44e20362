# exploration script of notes/throughput.md run 5; not part of the product.
# Where does train.py's step lose ~4% against the bare model step? Hypothesis: real code repeats a
# few tokens (spaces, newlines) thousands of times per batch, and inductor turns the embedding's
# backward into atomic adds that serialise on them; random tokens (the reference) barely repeat.
# usage (GPU, after `python bench.py --geometries="[]"` made data/bench/tokens):
#   python notes/explore_loop.py
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.getcwd())
import shards  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from notes.steptime import cuda_ms, time_steps  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
B, T, V = 32, 1024, 50304
_, tr, _ = shards.open_shards('data/bench/tokens')
cum = shards.window_starts(tr, T)
real = torch.from_numpy(np.stack([shards.get_batch(tr, cum, 1337, i, range(B), B, T) for i in range(8)])).pin_memory()
rand = torch.randint(0, 50257, real.shape).pin_memory()
for name, d in (('real', real), ('random', rand)):
    c = torch.bincount(d[0, :, :-1].flatten(), minlength=V)
    top = torch.topk(c, 3)
    print(f"{name} batch: {int((c > 0).sum())} distinct tokens; most frequent {top.indices.tolist()} x {top.values.tolist()} of {B * T}")


# --- 1. the embedding backward alone, (B*T, 768) fp32 gradient as under autocast ---------------
g = torch.randn(B * T, 768, device='cuda')
ebw = lambda g, i: torch.ops.aten.embedding_dense_backward(g, i, V, -1, False)
ebw_c = torch.compile(ebw)
for name, d in (('real', real), ('random', rand)):
    i = d[0, :, :-1].flatten().cuda()
    print(f"embedding backward, {name} tokens: aten (sort + segment sum) {cuda_ms(lambda: ebw(g, i)):.3f} ms, "
          f"inductor (atomic adds) {cuda_ms(lambda: ebw_c(g, i)):.3f} ms")


# --- 2. the whole training step ----------------------------------------------------------------
def step_time(data, contiguous=True, extras=False, eager_embedding=False, steps=30, profile=None):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT(GPTConfig()).cuda()
    if eager_embedding:
        model.transformer.wte.forward = torch.compiler.disable(model.transformer.wte.forward)
    opt, = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 'cuda')  # AdamW alone
    cm = torch.compile(model)
    first_bad = torch.full((), 2**62, dtype=torch.int64, device='cuda')

    def step(i):
        nonlocal first_bad
        xy = data[i % len(data)].cuda(non_blocking=True)
        x = xy[:, :-1].contiguous() if contiguous else xy[:, :-1]
        y = xy[:, 1:].contiguous()
        if extras:  # what train.py adds around the step
            for grp in opt.param_groups:
                grp['lr'] = 6e-4 * (i + 1) / 1000
            step_loss = torch.zeros((), device='cuda')
        with torch.autocast('cuda', dtype=torch.bfloat16):
            _, loss = cm(x, y)
        loss.backward()
        if extras:
            step_loss += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if extras:
            first_bad = torch.where(torch.isfinite(step_loss) | (first_bad != 2**62), first_bad, i)
        return loss

    tok_s, ms, _, _ = time_steps(step, B * T, steps, profile)
    return tok_s, ms


out = os.environ.get('OUT', '.')
for label, kw in [
    ('random tokens, contiguous x (= reference)', dict(data=rand, profile=f'{out}/prof_random.txt')),
    ('real tokens, contiguous x', dict(data=real, profile=f'{out}/prof_real.txt')),
    ('real tokens, x a strided slice (train.py)', dict(data=real, contiguous=False)),
    ('real tokens, train.py extras', dict(data=real, extras=True)),
    ('real tokens, embedding outside the graph', dict(data=real, eager_embedding=True, profile=f'{out}/prof_real_eager_emb.txt')),
    ('random tokens, embedding outside the graph', dict(data=rand, eager_embedding=True)),
]:
    tok_s, ms = step_time(**kw)
    print(f"{label:48s} {tok_s:10,.0f} tok/s {ms:7.2f} ms/step", flush=True)

# --- 3. the same with inductor's embedding-backward decomposition removed (aten kernel inside the graph)
from torch._inductor import decomposition as idec  # noqa: E402
for table in (idec.decompositions, idec.fast_random_decomps()):
    for op in (torch.ops.aten.embedding_dense_backward.default, torch.ops.aten.embedding_dense_backward.out):
        table.pop(op, None)
for label, kw in [
    ('real tokens, no decomposition', dict(data=real, profile=f'{out}/prof_real_nodecomp.txt')),
    ('random tokens, no decomposition', dict(data=rand)),
]:
    tok_s, ms = step_time(**kw)
    print(f"{label:48s} {tok_s:10,.0f} tok/s {ms:7.2f} ms/step", flush=True)
