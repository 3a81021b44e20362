"""
What train.py's loop does for speed alone, each piece with its state passed in: none changes the
math of a step (the tests check each against the plain way).

- Loader: batches straight into a ring of pinned host buffers, copied to the GPU while it works.
- largest_micro_batch: auto_batch's fit of the biggest micro-batch the GPU holds.
- capture_micro_step: a small micro-batch's forward + backward as one CUDA graph.
- NonFinite: the first step with a non-finite loss, kept on the GPU (no host sync per step).
- LogLine: a log step's numbers copied to the host behind its kernels, read one step later.
"""
import time

import torch

from codegpt import shards

NO_BAD_STEP = 2**62  # NonFinite's "none yet"


class Loader:
    """Train batches of (seed, step) on this rank's device: loader.get(step, first_row, rows) -> (x, y),
    each (rows, T). On CUDA the rows are written into one of a few reused pinned buffers and copied
    asynchronously, so the copy overlaps the GPU's work. data_time sums the host seconds spent."""

    def __init__(self, train_shards, cum_starts, step_rows, block_size, device, n_vocab, sampling, tiles, seed):
        self.args = (train_shards, cum_starts)
        self.step_rows, self.block_size, self.device = step_rows, block_size, device
        self.n_vocab, self.sampling, self.tiles, self.seed = n_vocab, sampling, tiles, seed
        self.cuda = torch.device(device).type == 'cuda'
        self.ring = {}  # rows -> [(pinned buffer, event of its last copy)]
        self.data_time = 0.0

    def get(self, step, first_row, rows, seed=None):
        seed = self.seed if seed is None else seed
        args = (*self.args, seed, step, range(first_row, first_row + rows), self.step_rows, self.block_size)
        kw = dict(n_vocab=self.n_vocab, sampling=self.sampling, tiles=self.tiles)
        if self.cuda:
            # a fresh pinned tensor per batch costs a page-locked allocation each time; reuse a few,
            # waiting (rarely) only until the GPU has copied out of the one we overwrite
            ring = self.ring.setdefault(rows, [])
            if len(ring) < 4:
                buf, done = torch.empty((rows, self.block_size + 1), dtype=torch.int64).pin_memory(), torch.cuda.Event()
            else:
                buf, done = ring.pop(0)
                done.synchronize()
            t = time.time()
            shards.get_batch(*args, out=buf.numpy(), **kw)  # straight into pinned memory
            self.data_time += time.time() - t
            xy = buf.to(self.device, non_blocking=True)  # the copy overlaps the GPU's work
            done.record()
            ring.append((buf, done))
        else:
            t = time.time()
            xy = torch.from_numpy(shards.get_batch(*args, **kw)).to(self.device)
            self.data_time += time.time() - t
        return xy[:, :-1], xy[:, 1:].contiguous()  # (B, T) inputs, (B, T) targets


def fits(model, rows, block_size, device, autocast):
    """Does one forward/backward of `rows` sequences fit the GPU? Eager mode uses more memory than
    compiled, so what fits here fits in training. The RNG states are put back: the trial draws nothing."""
    rng = torch.cuda.get_rng_state(), torch.get_rng_state()
    loss = idx = None
    try:
        idx = torch.zeros(rows, block_size, dtype=torch.long, device=device)
        with autocast:
            _, loss = model(idx, idx)
        loss.backward()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        loss = idx = None
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        torch.cuda.set_rng_state(rng[0])
        torch.set_rng_state(rng[1])


def largest_micro_batch(model, micro_batch, accum, block_size, device, autocast):
    """auto_batch: (micro_batch * k, accum // k) for the largest k dividing accum whose micro-batch fits.
    Small micro-batches leave a big GPU waiting on kernel launches; a step's gradient is the mean over
    the same sequences however they are split, so only the speed changes."""
    for k in sorted((k for k in range(1, accum + 1) if accum % k == 0), reverse=True):
        if k == 1 or fits(model, micro_batch * k, block_size, device, autocast):
            break
    torch.cuda.reset_peak_memory_stats()  # report training's peak, not the trial's
    return micro_batch * k, accum // k


def capture_micro_step(model, params, x, y, accum, autocast):
    """One micro-step (forward, loss / accum, backward) recorded as a CUDA graph over copies of x, y.
    Each replay adds its gradient into the same .grad tensors, so they are made here and only ever
    zeroed, never set to None. Returns micro_step(x, y) -> the micro-step's loss / accum (a 0-d tensor)."""
    static_x, static_y = x.clone(), y.clone()  # (B, T) each: replays read their inputs from here
    for p in params:
        p.grad = torch.zeros_like(p)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (compiles, sets up cuBLAS) on a side stream, as capture wants
        for _ in range(2):
            with autocast:
                _, loss = model(static_x, static_y)
            (loss / accum).backward()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.empty_cache()  # the warm-up's blocks go back before the graph takes its own pool
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        with autocast:
            _, loss = model(static_x, static_y)
            loss = loss / accum
        loss.backward()
    for p in params:
        p.grad.zero_()  # the warm-up's gradients; capturing ran nothing

    def micro_step(x, y):
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        return loss.detach()
    return micro_step


class NonFinite:
    """The first step whose loss was not finite, kept as a 0-d tensor on the device: update() costs no
    host sync, so the loop reads it only where it syncs anyway (log lines, evals, checkpoints)."""

    def __init__(self, device, all_reduce=None):
        self.first = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=device)
        self.all_reduce = all_reduce  # DDP: (tensor, 'min') -> reduces in place over the ranks

    def update(self, step_loss, step):
        self.first = torch.where(torch.isfinite(step_loss) | (self.first != NO_BAD_STEP), self.first, step)

    def agreed(self):
        """The earliest bad step over all ranks, a 0-d tensor on the device (NO_BAD_STEP: none)."""
        bad = self.first.clone()
        if self.all_reduce is not None:
            self.all_reduce(bad, 'min')
        return bad


class LogLine:
    """A log step's loss, grad norm and first bad step, copied off the GPU behind the step's kernels
    (into pinned memory on CUDA, no wait), and read with read() once the next step is queued, so
    the GPU does not idle while the host writes the line. fields: what the line needs besides."""

    def __init__(self, loss, grad_norm, first_bad, **fields):
        cuda = loss.is_cuda
        self.values = torch.stack([loss.float(), grad_norm.float()]).to('cpu', non_blocking=cuda)
        self.bad = first_bad.to('cpu', non_blocking=cuda)
        self.copied = torch.cuda.Event() if cuda else None
        if cuda:
            self.copied.record()
        self.fields = fields

    def read(self):
        """(loss, grad norm, first bad step): waits for the log step to end on the GPU, so the clock
        read right after is that step's end."""
        if self.copied is not None:
            self.copied.synchronize()
        loss, norm = self.values.tolist()
        return loss, norm, int(self.bad)


def keep_freed_memory():
    """On a CPU with glibc: keep large freed blocks in the heap for the next step instead of returning
    them to the system. Every step makes the head's (tokens, vocab) temporaries anew; above glibc's
    mmap threshold each is a fresh mapping whose every page faults in zeroed, which doubles a small
    model's step (notes/throughput.md). Returns whether it took."""
    import ctypes
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:  # not glibc (macOS, musl): their allocators keep their own counsel
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
