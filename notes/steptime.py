# shared by the notes/explore_*.py scripts (not part of the product): the bare training step of
# GPT-2 124M at a fixed batch, and its timers.
import time

import torch


def plain_step(model, data, mode=None):
    """train.py's step without its loader: compiled forward under bf16 autocast, backward, clipping
    at 1.0, fused AdamW. data: pinned (n, B, T + 1) token batches, used in turn."""
    opt, = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 'cuda')  # AdamW alone
    cm = torch.compile(model, mode=mode)

    def step(i):
        xy = data[i % len(data)].cuda(non_blocking=True)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            _, loss = cm(xy[:, :-1], xy[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def time_steps(step, tokens, steps=30, profile=None):
    """step(i) -> loss, timed over `steps` calls after 5 warm-up calls (compilation); with profile, 3
    more calls under torch.profiler, its kernel table written to that path.
    Returns (tokens/s, ms/step, peak GiB after warm-up, warm-up seconds)."""
    t0 = time.time()
    for i in range(5):
        step(i).item()
    warmup_s = time.time() - t0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    loss.item()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof
        with prof(activities=[ProfilerActivity.CUDA]) as p:
            for i in range(3):
                step(i)
            torch.cuda.synchronize()
        with open(profile, 'w') as f:
            f.write(p.key_averages().table(sort_by='self_cuda_time_total', row_limit=30, max_name_column_width=100))
    return tokens / dt, dt * 1000, torch.cuda.max_memory_allocated() / 2**30, warmup_s


def cuda_ms(fn, n=20):
    """ms per call of fn() on the GPU, over n calls after 3 warm-up calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1000
