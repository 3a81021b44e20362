"""
GPT-2 in one file, nanoGPT style: pre-LayerNorm blocks, causal self-attention through
F.scaled_dot_product_attention (flash kernels on GPU), GELU MLP, lm_head tied to wte,
and generation with a key/value cache.
"""
import contextlib
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for faster matmuls
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False  # bias in Linears and LayerNorms; False is a little better and faster


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x, cache=None, pos=0, mask=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None and torch.is_tensor(pos):
            # one token at a device-side position (the fixed-shape decode step): write slot pos and
            # attend over the whole cache through mask, which hides the slots after pos (they hold zeros)
            cache_k, cache_v = cache
            cache_k.index_copy_(2, pos.view(1), k)
            cache_v.index_copy_(2, pos.view(1), v)
            y = F.scaled_dot_product_attention(q, cache_k, cache_v, attn_mask=mask)  # (B, nh, 1, hs)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.c_proj(y))
        if cache is not None:
            # generation: keys/values of earlier positions come from the cache (B, nh, block_size, hs)
            cache_k, cache_v = cache
            cache_k[:, :, pos:pos + T] = k
            cache_v[:, :, pos:pos + T] = v
            k, v = cache_k[:, :, :pos + T], cache_v[:, :, :pos + T]
            # a prompt (pos == 0) needs the causal mask; one new token may see every cached one
            assert pos == 0 or T == 1, "the cache takes a prompt at pos 0, then one token at a time"
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0,
                                           is_causal=T > 1)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, pos=0, mask=None):
        x = x + self.attn(self.ln_1(x), cache, pos, mask)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: the output head reuses the token embedding (saves 38M params at 124M)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2*n_layer), two per block add to the stream
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=False):
        """Unique parameters (the tied wte/lm_head matrix counted once); non_embedding drops wte and wpe."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, cache=None, pos=0, return_logits=False):
        """(logits, loss). With targets: (None, loss) unless return_logits. Under torch.compile every
        output that requires grad gets a gradient in the backward, zeros if unused: for (b, t, vocab)
        logits that is a 3.3 GB fill and read per 32x1024 micro-batch, ~3% of a training step."""
        device = idx.device
        b, t = idx.size()
        if not torch.is_tensor(pos):  # a device-side pos (CUDA graph decode) is checked by generate
            assert pos + t <= self.config.block_size, f"sequence of {pos + t} tokens, block_size is {self.config.block_size}"
        positions = pos + torch.arange(t, dtype=torch.long, device=device)  # (t)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))  # (b, t, n_embd)
        mask = None
        if cache is not None and torch.is_tensor(pos):
            # additive mask over the whole cache, made once for all layers: 0 up to pos, -inf after
            slots = torch.arange(self.config.block_size, device=device)
            mask = torch.zeros(1, 1, 1, slots.numel(), dtype=cache[0][0].dtype, device=device)
            mask = mask.masked_fill((slots > pos).view(1, 1, 1, -1), float('-inf'))  # (1, 1, 1, block_size)
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if cache is None else cache[i], pos, mask)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)  # (b, t, vocab_size)
            # the loss in float32 whatever the autocast dtype: bf16 log-softmax over 50k entries is coarse
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            return (logits if return_logits else None), loss
        # inference: only the last position's logits are needed
        return self.lm_head(x[:, -1:, :]), None  # (b, 1, vocab_size)

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, muon=None):
        """[AdamW] over every parameter; or, with muon=dict(lr=, momentum=, weight_decay=), [AdamW, Muon]:
        Muon on the blocks' weight matrices (q/k/v, projections, MLP) and AdamW on the rest (the
        embeddings, wte being the head too, LayerNorm gains and biases), which Muon does not fit.
        The caller sets each group's 'lr' at every step (its schedule)."""
        hidden = [p for n, p in self.named_parameters() if muon and n.startswith('transformer.h.') and p.dim() == 2]
        rest = [p for p in self.parameters() if all(p is not h for h in hidden)]
        # AdamW decays every matrix (embeddings); not biases or LayerNorm gains
        groups = [{'params': [p for p in rest if p.dim() >= 2], 'weight_decay': weight_decay},
                  {'params': [p for p in rest if p.dim() < 2], 'weight_decay': 0.0}]
        fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        opts = [torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({'fused': True} if fused else {}))]
        if hidden:
            opts.append(torch.optim.Muon(hidden, lr=muon['lr'],
                                         momentum=muon['momentum'], weight_decay=muon['weight_decay']))
        return opts

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward): 6 per weight plus attention's 12*L*H*Q*T (PaLM)."""
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        return 6 * self.num_params() + 12 * L * H * Q * T

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
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
        # (~50 ms on an H100, torch 2.11), and a growing context is a new length at every token
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
                if cache is None or pos + 1 > self.config.block_size:
                    # (re)fill the cache from the prompt, or from the tail of a too-long context
                    ctx = idx if n <= self.config.block_size else idx[:, -(self.config.block_size // 2):]
                    cache = self.new_cache(b, idx.device)
                    with eager_attn():
                        logits, _ = self(ctx, cache=cache, pos=0)
                    pos, step = ctx.size(1), None
                elif fixed_step:
                    if step is None:
                        step = self.decode_step(cache, idx[:, -1:], pos, cuda_graph and idx.is_cuda, compile_step)
                    logits = step(idx[:, -1:], pos)
                    pos += 1
                else:
                    with eager_attn():
                        logits, _ = self(idx[:, -1:], cache=cache, pos=pos)
                    pos += 1
            else:
                ctx = idx if n <= self.config.block_size else idx[:, -self.config.block_size:]
                with eager_attn():
                    logits, _ = self(ctx)
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

    def decode_step(self, cache, tok, pos, cuda_graph=True, compile=False):
        """A function step(tok (b, 1), pos int) -> logits (b, 1, vocab) for one cached token, with fixed
        shapes (the position as a tensor, the whole cache masked), so it can be compiled once and
        captured in a CUDA graph. Its first call must be for `tok` at `pos`."""
        fwd = self.forward
        if compile:
            if getattr(self, '_compiled_step', None) is None:
                self._compiled_step = torch.compile(self.forward, dynamic=False)  # recompiles per batch size
            fwd = self._compiled_step
        if cuda_graph:
            graph, g_tok, g_pos, g_logits = self.capture_decode_step(cache, tok, pos, fwd)
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

    def new_cache(self, batch_size, device):
        """Per layer, preallocated keys and values: (B, nh, block_size, hs) each, in the model's dtype.
        Zeros, not empty: the graphed step masks the unused slots, and garbage there could be NaN."""
        cfg = self.config
        dtype = self.lm_head.weight.dtype
        if device.type == 'cuda' and torch.is_autocast_enabled('cuda'):
            dtype = torch.get_autocast_dtype('cuda')
        shape = (batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        return [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
                for _ in range(cfg.n_layer)]

    def capture_decode_step(self, cache, tok, pos, fwd=None):
        """Capture one cached decode step in a CUDA graph: (graph, tok (b, 1), pos (), logits (b, 1, vocab)),
        the last three static tensors that each graph.replay() reads and writes: it reads tok at pos,
        writes float32 logits and advances pos by one. The warm-up run (which the capture needs)
        computes the step for `tok` at `pos`, the slot the first replay rewrites."""
        fwd = fwd or self.forward  # or a torch.compile'd forward: its kernels are captured the same way
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


# bf16 dense tensor-core peak (TFLOP/s) of common cards, by a substring of torch's device name;
# first match wins, so the more specific names come first. Override with the peak_tflops config key.
PEAK_BF16_TFLOPS = [
    ('H100 PCIe', 756.0), ('H100 NVL', 835.0), ('H100', 989.0), ('H200', 989.0), ('GH200', 989.0),
    ('B200', 2250.0), ('A100', 312.0), ('A800', 312.0), ('L40S', 362.0), ('L40', 181.0), ('L4', 121.0),
    ('A10G', 70.0), ('A10', 125.0), ('A6000', 155.0), ('RTX 4090', 165.0), ('RTX 4080', 97.0),
    ('RTX 4070', 58.0), ('RTX 3090', 71.0), ('RTX 3080', 60.0),
]


def peak_flops(device_type, override_tflops=None):
    """The bf16 peak of the card in use in FLOP/s, or None when unknown (then MFU is not reported)."""
    if override_tflops:
        return override_tflops * 1e12
    if device_type != 'cuda' or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None
