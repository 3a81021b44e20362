"""
GPT-2 in one file, nanoGPT style: pre-LayerNorm blocks, causal self-attention through
F.scaled_dot_product_attention (flash kernels on GPU), GELU MLP, lm_head tied to wte,
and generate() (the sampling and key/value-cache machinery lives in decode.py). The training loss
goes through HeadLoss, which makes the head's gradients in the forward (one Triton pass on CUDA).
With doc_mask, attention stops at <|endoftext|> (FlexAttention on CUDA). Muon is torch.optim.Muon's
update run on stacks of same-size matrices.
"""
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from shards import EOT  # <|endoftext|>, before every document

try:  # triton comes with torch's CUDA builds: the head's loss kernel (HeadLoss)
    import triton
    import triton.language as tl
except ImportError:
    triton = None
try:  # FlexAttention (torch >= 2.5), for doc_mask on CUDA
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:
    create_block_mask = flex_attention = None


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for faster matmuls
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False  # bias in Linears and LayerNorms; False is a little better and faster
    gelu: str = 'none'  # 'none': exact (erf) GELU; 'tanh': its approximation, which OpenAI's GPT-2 weights use
    tie_head: bool = True  # the output head is the token embedding (GPT-2); False: a matrix of its own
    split_qkv: bool = False  # q, k and v as three (n_embd, n_embd) matrices, so Muon orthogonalises each on its own
    doc_mask: bool = False  # a position attends only to its own document (from its <|endoftext|> on), not across


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        if config.split_qkv:  # three parameters, still one matmul (qkv below); GPT-2's c_attn is their stack
            self.c_q, self.c_k, self.c_v = (nn.Linear(config.n_embd, config.n_embd, bias=config.bias) for _ in range(3))
        else:
            self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.split_qkv = config.split_qkv

    def qkv(self, x):
        """(B, T, 3 * n_embd): q, k and v side by side, from c_attn or from the stack of c_q, c_k, c_v."""
        if not self.split_qkv:
            return self.c_attn(x)
        parts = (self.c_q, self.c_k, self.c_v)
        bias = torch.cat([m.bias for m in parts]) if parts[0].bias is not None else None
        return F.linear(x, torch.cat([m.weight for m in parts]), bias)  # (3 * n_embd, n_embd) weight

    def forward(self, x, cache=None, pos=0, mask=None):
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(self.n_embd, dim=2)
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
        if mask is not None and not torch.is_tensor(mask):  # doc_mask on CUDA: a FlexAttention BlockMask
            y = flex_attention(q, k, v, block_mask=mask)  # (B, nh, T, hs)
        else:  # mask: doc_mask elsewhere, (B, 1, T, T) bool
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0,
                                               is_causal=mask is None and T > 1)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


# built outside torch.compile's graph: traced into a compiled model, create_block_mask's kernel over a
# mask_mod that indexes a tensor hit an illegal memory access on an H200 (torch 2.11, at the first
# no_grad eval); built eagerly and handed to the compiled flex_attention, it is the common path
@torch.compiler.disable
def document_mask(idx, flex=None):
    """doc_mask: what each position may attend to, made once per forward for all layers: the earlier
    positions of its own document, which begins at its <|endoftext|>. With flex (the default on CUDA)
    a FlexAttention BlockMask, whose kernel skips the blocks the mask empties; else a dense
    (B, 1, T, T) bool mask for SDPA, since FlexAttention's backward runs on CUDA only. The cached
    decode does not use it: a prompt is one document."""
    B, T = idx.size()
    docs = (idx == EOT).cumsum(1)  # (B, T) document number of each position
    flex = idx.is_cuda if flex is None else flex
    if flex:
        def same_document(b, h, q, k):
            return (k <= q) & (docs[b, q] == docs[b, k])
        return create_block_mask(same_document, B, None, T, T, device=idx.device)
    causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
    return ((docs[:, :, None] == docs[:, None, :]) & causal)[:, None]  # (B, 1, T, T)


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=config.gelu)
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


def orthogonalise(X, coefficients, steps, eps):
    """Newton-Schulz on a stack of matrices at once, torch.optim.Muon's iteration (its coefficients, bf16):
    X (n, m, k) with m <= k -> (n, m, k), each matrix pushed towards U V^T of its own SVD."""
    a, b, c = coefficients
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm at most 1, per matrix
    for _ in range(steps):
        A = X @ X.mT  # (n, m, m)
        X = torch.baddbmm(X, torch.baddbmm(A, A, A, beta=b, alpha=c), X, beta=a)
    return X


class Muon(torch.optim.Muon):
    """torch.optim.Muon's update with the matrices of one size orthogonalised together. torch steps its
    matrices one by one, 15 small matmuls each (~1,000 launches a step at 124M); stacked, an iteration is
    three batched matmuls per size. The same state and param groups as torch's, so a checkpoint's
    optimizer state loads into either."""
    stack_numel = 2**26  # numbers per stack at most: the stack's copies (~10 bytes a number) stay small beside the model

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            assert group['adjust_lr_fn'] in (None, 'original'), 'only the original shape scaling is batched'
            params = [p for p in group['params'] if p.grad is not None]
            for p in params:
                if 'momentum_buffer' not in self.state[p]:
                    self.state[p]['momentum_buffer'] = torch.zeros_like(p)
            if params:
                torch._foreach_lerp_([self.state[p]['momentum_buffer'] for p in params],
                                     [p.grad for p in params], 1 - group['momentum'])
            sizes = {}  # wide and tall matrices of the same two sizes share stacks: tall ones go in transposed
            for p in params:
                sizes.setdefault(tuple(sorted(p.shape)), []).append(p)
            for (short, long), same in sizes.items():
                per = max(1, self.stack_numel // (short * long))
                for k in range(0, len(same), per):
                    self._update(same[k:k + per], group)
        return loss

    def _update(self, params, group):
        """Orthogonalise the (Nesterov) momenta of same-size params as one stack and apply them."""
        bufs = [self.state[p]['momentum_buffer'] for p in params]
        updates = torch._foreach_lerp([p.grad for p in params], bufs, group['momentum']) if group['nesterov'] else bufs
        tall = [p.size(0) > p.size(1) for p in params]
        X = torch.stack([u.mT if t else u for u, t in zip(updates, tall)]).bfloat16()  # (n, short, long)
        X = orthogonalise(X, group['ns_coefficients'], group['ns_steps'], group['eps'])
        out = [o.mT if t else o for o, t in zip(X.unbind(0), tall)]
        lr = group['lr']
        if group['weight_decay']:
            torch._foreach_mul_(params, 1 - lr * group['weight_decay'])
        # torch's shape scaling, lr * sqrt(max(1, rows / cols)): 1 for wide and square, sqrt(long / short) for tall
        for is_tall, scale in ((False, 1.0), (True, math.sqrt(X.size(-1) / X.size(-2)))):
            pick = [i for i, t in enumerate(tall) if t == is_tall]
            if pick:
                torch._foreach_add_([params[i] for i in pick], [out[i] for i in pick], alpha=-lr * scale)


def clip_grad_norm(optimizers, max_norm, fold=True):
    """The global L2 norm of the optimizers' gradients (0-dim tensor), and the gradients clipped to
    max_norm (0: not clipped) as torch.nn.utils.clip_grad_norm_ clips them. An optimizer whose step
    divides by a grad_scale (fused AdamW) gets the clip as that divisor instead, so its kernel rescales
    each gradient in the pass that reads it anyway: one pass fewer over the fp32 gradients (0.5 GB at
    124M). fold=False under a GradScaler, which sets grad_scale itself."""
    params = [[p for g in opt.param_groups for p in g['params'] if p.grad is not None] for opt in optimizers]
    norm = torch.nn.utils.get_total_norm([p.grad for ps in params for p in ps])
    for opt, ps in zip(optimizers, params):
        if max_norm > 0 and fold and getattr(opt, '_step_supports_amp_scaling', False):
            opt.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0)  # 1 / clip_grad_norm_'s factor
        elif max_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(ps, max_norm, norm)
    return norm


if triton is not None:
    @triton.jit
    def head_loss_rows(z_ptr, t_ptr, loss_ptr, n_cols, stride, BLOCK: tl.constexpr):
        """One program per row of the logits z: its loss lse - z[t] (0 where t == -1), and z overwritten
        with the loss's gradient softmax - onehot (0 where t == -1): two reads of the row, the second
        mostly from L2, and one write."""
        row = tl.program_id(0).to(tl.int64)
        z_row = z_ptr + row * stride
        t = tl.load(t_ptr + row)
        m, s = -float('inf'), 0.0  # running max and sum of exp(z - max): the log-sum-exp in one read
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(z_row + cols, mask=cols < n_cols, other=-float('inf')).to(tl.float32)
            m_new = tl.maximum(m, tl.max(z, 0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
            m = m_new
        lse = m + tl.log(s)
        keep = (t != -1).to(tl.float32)
        z_t = tl.load(z_row + tl.maximum(t, 0)).to(tl.float32)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(z_row + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
            g = (tl.exp(z - lse) - (cols == t).to(tl.float32)) * keep
            tl.store(z_row + cols, g.to(z_ptr.dtype.element_ty), mask=cols < n_cols)
        tl.store(loss_ptr + row, (lse - z_t) * keep)


class HeadLoss(torch.autograd.Function):
    """F.cross_entropy(F.linear(x, w).float(), targets, ignore_index=-1) with its gradients made in the
    forward. Autograd's way reads the (n, vocab) logits in the forward, then reads them again and
    writes their gradient in the backward (3.3 GB each pass for a 32x1024 micro-batch in bf16); on
    CUDA head_loss_rows does the loss and the gradient in one pass, the gradient in the logits' place
    (4.3 -> 2.7 ms a 32x1024 micro-batch on an H200). Same math: float32 log-sum-exp, the logits'
    gradient in their dtype for the two matmuls, whose results take the 1/count of the mean and the
    upstream gradient."""

    @staticmethod
    def forward(ctx, x, w, targets):  # x (n, d), w (vocab, d), targets (n) with -1 for none
        logits = F.linear(x, w)  # (n, vocab), bf16 under autocast
        keep = targets != -1  # (n)
        if triton is not None and logits.is_cuda:
            rows = torch.empty(logits.size(0), device=logits.device, dtype=torch.float32)  # (n)
            block = min(8192, triton.next_power_of_2(logits.size(1)))
            head_loss_rows[(logits.size(0),)](logits, targets, rows, logits.size(1), logits.stride(0),
                                              BLOCK=block, num_warps=16)
            dz = logits  # (n, vocab), now softmax - onehot
        else:
            z, t = logits.float(), targets.clamp(min=0)[:, None]  # (n, vocab), (n, 1)
            lse = torch.logsumexp(z, dim=-1, keepdim=True)  # (n, 1)
            rows = (lse - z.gather(1, t))[:, 0] * keep
            dz = torch.exp(z - lse).scatter_add_(1, t, -torch.ones_like(lse))  # softmax - onehot
            dz = (dz * keep[:, None]).to(logits.dtype)
        count = keep.sum()
        dx, dw = dz @ w.to(dz.dtype), dz.t() @ x.to(dz.dtype)  # as F.linear's backward: (n, d), (vocab, d)
        ctx.save_for_backward(dx, dw, count)
        ctx.dtypes = x.dtype, w.dtype
        return rows.sum() / count

    @staticmethod
    def backward(ctx, grad_loss):
        dx, dw, count = ctx.saved_tensors
        scale = grad_loss / count  # upcast before scaling: a GradScaler's factor would overflow fp16
        return dx.to(ctx.dtypes[0]) * scale, dw.to(ctx.dtypes[1]) * scale, None


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
        if config.tie_head:  # weight tying: the output head reuses the token embedding (saves 38M params at 124M)
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
        """Unique parameters (a tied wte/lm_head matrix counted once); non_embedding drops wte and wpe (an
        untied head stays: it is a matmul)."""
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
        elif cache is None and self.config.doc_mask:
            mask = document_mask(idx)
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if cache is None else cache[i], pos, mask)
        x = self.transformer.ln_f(x)
        if targets is not None:
            if torch.is_grad_enabled() and not return_logits:
                return None, HeadLoss.apply(x.view(b * t, -1), self.lm_head.weight, targets.reshape(-1))
            logits = self.lm_head(x)  # (b, t, vocab_size)
            # the loss in float32 whatever the autocast dtype: bf16 log-softmax over 50k entries is coarse
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            return (logits if return_logits else None), loss
        # inference: only the last position's logits are needed
        return self.lm_head(x[:, -1:, :]), None  # (b, 1, vocab_size)

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, muon=None):
        """[AdamW] over every parameter; or, with muon=dict(lr=, momentum=, weight_decay=), [AdamW, Muon]:
        Muon on the blocks' weight matrices (q/k/v, projections, MLP) and AdamW on the rest (the
        embeddings and the head, tied or not, LayerNorm gains and biases), which Muon does not fit.
        The caller sets each group's 'lr' at every step (its schedule)."""
        hidden = [p for n, p in self.named_parameters() if muon and n.startswith('transformer.h.') and p.dim() == 2]
        rest = [p for p in self.parameters() if all(p is not h for h in hidden)]
        # AdamW decays every matrix (embeddings); not biases or LayerNorm gains
        groups = [{'params': [p for p in rest if p.dim() >= 2], 'weight_decay': weight_decay},
                  {'params': [p for p in rest if p.dim() < 2], 'weight_decay': 0.0}]
        fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        opts = [torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({'fused': True} if fused else {}))]
        if hidden:
            opts.append(Muon(hidden, lr=muon['lr'], momentum=muon['momentum'], weight_decay=muon['weight_decay']))
        return opts

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward): 6 per matmul weight plus attention's 12*L*H*Q*T
        (PaLM). A tied wte counts once, as the head; an untied wte is a lookup, no matmul."""
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        lookup = 0 if cfg.tie_head else self.transformer.wte.weight.numel()
        return 6 * (self.num_params() - lookup) + 12 * L * H * Q * T

    def generate(self, idx, max_new_tokens, **kwargs):
        """Continue each row of idx (b, t) by up to max_new_tokens tokens: (b, t + n). Sampling, stop
        rules, the key/value cache and the CUDA-graph step are decode.generate's (see its options)."""
        import decode
        return decode.generate(self, idx, max_new_tokens, **kwargs)
