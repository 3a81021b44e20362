"""
Generation for model.GPT: sampling, stop rules, a key/value cache, and a one-token decode step with
fixed shapes that torch.compile compiles once and a CUDA graph replays.

GPT.generate(idx, max_new_tokens, ...) calls generate() here; sample.py, eval_humaneval.py and
bench_generate.py use it through that method.
"""
import contextlib

import torch
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
             stop_tokens=(), stop_fn=None, use_cache=True, cuda_graph=True, compile_step=False, n_vocab=None):
    """
    Continue each row of idx (b, t) by up to max_new_tokens tokens; returns (b, t + n).
    temperature 0 is greedy. A row is done once it emits one of stop_tokens
    or stop_fn(generated (b, n) tensor) marks it; later positions of a done row repeat its last
    token, and generation ends when all rows are done.
    With use_cache, keys and values are kept, so each new token costs one position, not the
    whole context. Past block_size the context is cut to its last half block and re-read.
    On CUDA with cuda_graph, each one-token step replays a captured CUDA graph: a 124M model's
    step is ~200 small kernels, and launching them one by one costs more than running them.
    n_vocab: ids at or past it (the embedding's padding rows, which no encoding can decode) are
    never sampled. compile_step torch.compiles that step first (fewer, fused kernels; tens of seconds to
    compile per batch size, so worth it for long jobs such as HumanEval, not for one sample).
    """
    b = idx.size(0)
    done = torch.zeros(b, dtype=torch.bool, device=idx.device)
    start = idx.size(1)
    # eager attention on CUDA avoids cuDNN's kernels: they build a plan for every new key length
    # (notes/generation.md), and a growing context is a new length at every token
    def eager_attn():  # a fresh context each time: sdpa_kernel's can be entered only once
        if not idx.is_cuda:
            return contextlib.nullcontext()
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
    fixed_step = use_cache and ((cuda_graph and idx.is_cuda) or compile_step)  # tensor pos, whole cache
    out = torch.empty(b, start + max_new_tokens, dtype=idx.dtype, device=idx.device)  # no cat per token
    out[:, :start] = idx
    cache, pos, step = None, 0, None
    for n in range(start, start + max_new_tokens):
        idx = out[:, :n]  # the sequence so far (b, n)
        if use_cache:
            if cache is None or pos + 1 > model.config.block_size:
                # (re)fill the cache from the prompt, or from the tail of a too-long context
                ctx = idx if n <= model.config.block_size else idx[:, -(model.config.block_size // 2):]
                cache = new_cache(model, b, idx.device)
                with eager_attn():
                    logits, _ = model(ctx, cache=cache, pos=0)
                pos, step = ctx.size(1), None
            elif fixed_step:
                if step is None:
                    step = decode_step(model, cache, idx[:, -1:], pos, cuda_graph and idx.is_cuda, compile_step)
                logits = step(idx[:, -1:], pos)
                pos += 1
            else:
                with eager_attn():
                    logits, _ = model(idx[:, -1:], cache=cache, pos=pos)
                pos += 1
        else:
            ctx = idx if n <= model.config.block_size else idx[:, -model.config.block_size:]
            with eager_attn():
                logits, _ = model(ctx)
        logits = logits[:, -1, :].float()  # (b, vocab_size)
        if n_vocab is not None:
            logits[:, n_vocab:] = -float('inf')
        next_tok = sample_next(logits, temperature, top_k, top_p)  # (b, 1)
        # rows already done (by a stop token or stop_fn) keep repeating their last token
        next_tok = torch.where(done[:, None], idx[:, -1:], next_tok)
        if stop_tokens:
            done |= torch.isin(next_tok[:, 0], torch.tensor(list(stop_tokens), device=idx.device))
        out[:, n:n + 1] = next_tok
        if stop_fn is not None:
            done |= stop_fn(out[:, start:n + 1]).to(done.device)
        if (stop_tokens or stop_fn is not None) and done.all():  # a host sync: only when rows can end
            return out[:, :n + 1]
    return out

def decode_step(model, cache, tok, pos, cuda_graph=True, compile=False):
    """A function step(tok (b, 1), pos int) -> logits (b, 1, vocab) for one cached token, with fixed
    shapes (the position as a tensor, the whole cache masked), so it can be compiled once and
    captured in a CUDA graph. Its first call must be for `tok` at `pos`."""
    fwd = model.forward
    if compile:
        if getattr(model, '_compiled_step', None) is None:
            model._compiled_step = torch.compile(model.forward, dynamic=False)  # recompiles per batch size
        fwd = model._compiled_step
    if cuda_graph:
        graph, g_tok, g_pos, g_logits = capture_decode_step(model, cache, tok, pos, fwd)
        at = [pos]  # where g_pos stands: each replay advances it by one itself

        def step(tok, pos):
            g_tok.copy_(tok)
            if pos != at[0]:
                g_pos.fill_(pos)
            graph.replay()
            at[0] = pos + 1
            return g_logits
        return step
    t_tok, t_pos = fresh(tok), torch.tensor(pos, device=tok.device)  # one stride: no recompiles

    def step(tok, pos):
        t_tok.copy_(tok)
        t_pos.fill_(pos)
        return fwd(t_tok, cache=cache, pos=t_pos)[0]
    return step

def new_cache(model, batch_size, device):
    """Per layer, preallocated keys and values: (B, nh, block_size, hs) each, in the model's dtype.
    Zeros, not empty: the graphed step masks the unused slots, and garbage there could be NaN."""
    cfg = model.config
    dtype = model.lm_head.weight.dtype
    if device.type == 'cuda' and torch.is_autocast_enabled('cuda'):
        dtype = torch.get_autocast_dtype('cuda')
    shape = (batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
    return [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(cfg.n_layer)]

def capture_decode_step(model, cache, tok, pos, fwd=None):
    """Capture one cached decode step in a CUDA graph: (graph, tok (b, 1), pos (), logits (b, 1, vocab)),
    the last three static tensors that each graph.replay() reads and writes: it reads tok at pos,
    writes float32 logits and advances pos by one. The warm-up run (which the capture needs)
    computes the step for `tok` at `pos`, the slot the first replay rewrites."""
    fwd = fwd or model.forward  # or a torch.compile'd forward: its kernels are captured the same way
    g_tok, g_pos = fresh(tok), torch.tensor(pos, device=tok.device)
    # autocast's cache of cast weights would be freed after capture, under the graph's feet
    amp = torch.is_autocast_enabled('cuda')
    ctx = torch.autocast('cuda', dtype=torch.get_autocast_dtype('cuda'), enabled=amp, cache_enabled=False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with ctx, torch.cuda.stream(side):
        fwd(g_tok, cache=cache, pos=g_pos)  # warm-up (and compile): workspaces and kernels chosen outside capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with ctx, torch.cuda.graph(graph):
        g_logits, _ = fwd(g_tok, cache=cache, pos=g_pos)
        g_logits = g_logits.float()  # sampling's dtype, cast inside the graph: one launch less per token
        g_pos.add_(1)  # the next token's slot, without a fill launched per token
    return graph, g_tok, g_pos, g_logits


def fresh(t):
    """A contiguous copy with fresh strides. clone() keeps a (1, 1) view's row stride, which differs
    between generate calls and would make torch.compile recompile the decode step each time."""
    return torch.empty(t.shape, dtype=t.dtype, device=t.device).copy_(t)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None):
    """One token per row from (b, vocab) logits: greedy at temperature 0, else top-k / nucleus sampling."""
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k > 0:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float('inf')
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token once the tokens ranked above it already hold top_p of the mass (>=: the
        # smallest such set); the most likely token always stays, so top_p=0 is greedy, not an error
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p
        drop[:, 0] = False
        sorted_logits[drop] = -float('inf')
        logits = torch.full_like(logits, -float('inf')).scatter(1, sorted_idx, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1)
