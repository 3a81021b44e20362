"""
The GPT, in one file, nanoGPT style. Two blocks share it:

- arch='gpt2' (the default, and what OpenAI's weights load into): learned positions, pre-LayerNorm
  blocks, causal self-attention through F.scaled_dot_product_attention (flash kernels on GPU), a
  GELU MLP, the head tied to the token embedding.
- arch='modern': the block of transformers' NanoChatForCausalLM, so that it exports to that stock
  class: rotary positions (no wpe), weightless RMSNorm (also right after the token embedding),
  each head's q and k RMS-normed after the rotation, a ReLU² MLP, no biases.

Either may untie its head (tie_head=False) and cap its logits at softcap * tanh(logits / softcap).
With doc_mask, attention stops at <|endoftext|> (FlexAttention on CUDA). The training loss goes
through codegpt.kernels.HeadLoss; the optimizers are AdamW and codegpt.optim.Muon; generate()
hands over to codegpt.decode.
"""
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from codegpt.kernels import HeadLoss
from codegpt.optim import Muon

try:  # FlexAttention (torch >= 2.5), for doc_mask on CUDA
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:
    create_block_mask = flex_attention = None

ARCHS = ('gpt2', 'modern')


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for faster matmuls
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False  # bias in Linears and LayerNorms (gpt2 only); False is a little better and faster
    gelu: str = 'none'  # gpt2's MLP: 'none' = exact (erf) GELU; 'tanh' = its approximation, which OpenAI's weights use
    tie_head: bool = True  # the output head is the token embedding; False: a matrix of its own
    split_qkv: bool = False  # q, k and v as three (n_embd, n_embd) matrices, so Muon orthogonalises each on its own
    doc_mask: bool = False  # a position attends only to its own document (from its <|endoftext|> on), not across
    arch: str = 'gpt2'  # 'gpt2' or 'modern' (see the docstring); a checkpoint without the key is gpt2
    softcap: float = 0.0  # > 0: logits = softcap * tanh(logits / softcap) (NanoChat's 15); 0 = none
    rope_theta: float = 10000.0  # modern: the base of the rotary frequencies
    eot: int = 50256  # the <|endoftext|> id that opens every document (doc_mask's boundary)


def rms_norm(x, eps=1e-6):
    """Weightless RMSNorm over the last dim, computed in float32 as transformers' NanoChat does."""
    return F.rms_norm(x.float(), (x.size(-1),), eps=eps).type_as(x)


class RMSNorm(nn.Module):
    """modern's norm: no gain, no bias, so nothing to learn and nothing to export."""

    def forward(self, x):
        return rms_norm(x)


def rotary_tables(block_size, head_size, theta):
    """cos and sin of every position's rotation angles, (block_size, head_size) each in float32:
    pair i of a head (dims i and i + hs/2) turns at frequency theta^(-2i/hs), as transformers does."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size))  # (hs/2,)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (block_size, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (block_size, hs)
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    """Rotary embedding of x (B, nh, T, hs) with cos, sin (T, hs): the halves (x1, x2) become
    (x1 cos + x2 sin, x2 cos - x1 sin), each pair turned by minus its angle, as NanoChat turns them."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((x2, -x1), dim=-1) * sin


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        bias = config.bias and config.arch == 'gpt2'
        if config.split_qkv:  # three parameters, still one matmul (qkv below); GPT-2's c_attn is their stack
            self.c_q, self.c_k, self.c_v = (nn.Linear(config.n_embd, config.n_embd, bias=bias) for _ in range(3))
        else:
            self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.split_qkv = config.split_qkv
        self.modern = config.arch == 'modern'

    def qkv(self, x):
        """(B, T, 3 * n_embd): q, k and v side by side, from c_attn or from the stack of c_q, c_k, c_v."""
        if not self.split_qkv:
            return self.c_attn(x)
        parts = (self.c_q, self.c_k, self.c_v)
        bias = torch.cat([m.bias for m in parts]) if parts[0].bias is not None else None
        return F.linear(x, torch.cat([m.weight for m in parts]), bias)  # (3 * n_embd, n_embd) weight

    def forward(self, x, cache=None, pos=0, mask=None, rope=None):
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if self.modern:  # rotate, then RMS-norm each head's q and k (the norm does not undo the rotation)
            cos, sin = rope  # (T, hs) each
            q, k = rms_norm(rotate(q, cos, sin)), rms_norm(rotate(k, cos, sin))
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


def document_mask(idx, eot, flex=None):
    """doc_mask: what each position may attend to, made once per forward for all layers: the earlier
    positions of its own document, which begins at its <|endoftext|> (id eot). With flex (the default
    on CUDA) a FlexAttention BlockMask, whose kernel skips the blocks the mask empties; else a dense
    (B, 1, T, T) bool mask for SDPA, since FlexAttention's backward runs on CUDA only. The cached
    decode does not use it: a prompt is one document."""
    B, T = idx.size()
    docs = (idx == eot).cumsum(1)  # (B, T) document number of each position
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
        bias = config.bias and config.arch == 'gpt2'
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=bias)
        self.act = nn.GELU(approximate=config.gelu) if config.arch == 'gpt2' else None  # None: ReLU²
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)  # (B, T, 4 * n_embd)
        h = self.act(h) if self.act is not None else F.relu(h).square()
        return self.dropout(self.c_proj(h))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        norm = (lambda: nn.LayerNorm(config.n_embd, bias=config.bias)) if config.arch == 'gpt2' else RMSNorm
        self.ln_1 = norm()
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm()
        self.mlp = MLP(config)

    def forward(self, x, cache=None, pos=0, mask=None, rope=None):
        x = x + self.attn(self.ln_1(x), cache, pos, mask, rope)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        assert config.arch in ARCHS, config.arch
        self.config = config
        modern = config.arch == 'modern'
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            **({} if modern else dict(wpe=nn.Embedding(config.block_size, config.n_embd))),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=RMSNorm() if modern else nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        if modern:  # positions by rotation: tables, not weights (not in the state dict)
            cos, sin = rotary_tables(config.block_size, config.n_embd // config.n_head, config.rope_theta)
            self.register_buffer('rope_cos', cos, persistent=False)  # (block_size, hs)
            self.register_buffer('rope_sin', sin, persistent=False)  # (block_size, hs)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.doc_mask:
            # built outside torch.compile's graph: traced into a compiled model, create_block_mask's kernel
            # over a mask_mod that indexes a tensor hit an illegal memory access (torch 2.11, at the first
            # no_grad eval); built eagerly and handed to the compiled flex_attention, it is the common path.
            # (disable() imports dynamo, seconds at start: only a model that needs it pays for it)
            self.document_mask = torch.compiler.disable(document_mask)
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

    @classmethod
    def from_checkpoint(cls, ckpt):
        """The model of a train.py checkpoint dict (codegpt.checkpoint.find_and_load reads one);
        keys an older checkpoint's model_args lack take GPTConfig's defaults (arch: gpt2)."""
        model = cls(GPTConfig(**ckpt['model_args']))
        model.load_state_dict(ckpt['model'])
        return model

    def num_params(self, non_embedding=False):
        """Unique parameters (a tied wte/lm_head matrix counted once); non_embedding drops wte and wpe (an
        untied head stays: it is a matmul)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(self.transformer[k].weight.numel() for k in ('wte', 'wpe') if k in self.transformer)
        return n

    def forward(self, idx, targets=None, cache=None, pos=0, return_logits=False):
        """(logits, loss). With targets: (None, loss) unless return_logits. Under torch.compile every
        output that requires grad gets a gradient in the backward, zeros if unused: for (b, t, vocab)
        logits that is a 3.3 GB fill and read per 32x1024 micro-batch."""
        device = idx.device
        b, t = idx.size()
        if not torch.is_tensor(pos):  # a device-side pos (CUDA graph decode) is checked by generate
            assert pos + t <= self.config.block_size, f"sequence of {pos + t} tokens, block_size is {self.config.block_size}"
        positions = pos + torch.arange(t, dtype=torch.long, device=device)  # (t)
        x = self.transformer.wte(idx)  # (b, t, n_embd)
        rope = None
        if self.config.arch == 'modern':
            x = rms_norm(x)
            rope = self.rope_cos[positions].to(x.dtype), self.rope_sin[positions].to(x.dtype)  # (t, hs) each
        else:
            x = x + self.transformer.wpe(positions)
        x = self.transformer.drop(x)
        mask = None
        if cache is not None and torch.is_tensor(pos):
            # additive mask over the whole cache, made once for all layers: 0 up to pos, -inf after
            slots = torch.arange(self.config.block_size, device=device)
            mask = torch.zeros(1, 1, 1, slots.numel(), dtype=cache[0][0].dtype, device=device)
            mask = mask.masked_fill((slots > pos).view(1, 1, 1, -1), float('-inf'))  # (1, 1, 1, block_size)
        elif cache is None and self.config.doc_mask:
            mask = self.document_mask(idx, self.config.eot)
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if cache is None else cache[i], pos, mask, rope)
        x = self.transformer.ln_f(x)
        if targets is not None:
            if torch.is_grad_enabled() and not return_logits and not self.config.softcap:
                return None, HeadLoss.apply(x.view(b * t, -1), self.lm_head.weight, targets.reshape(-1))
            logits = self.capped(self.lm_head(x))  # (b, t, vocab_size)
            # the loss in float32 whatever the autocast dtype: bf16 log-softmax over 50k entries is coarse
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
            return (logits if return_logits else None), loss
        # inference: only the last position's logits are needed
        return self.capped(self.lm_head(x[:, -1:, :])), None  # (b, 1, vocab_size)

    def capped(self, logits):
        """softcap * tanh(logits / softcap), or the logits as they are when softcap is 0."""
        c = self.config.softcap
        return c * torch.tanh(logits / c) if c else logits

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
        """Training FLOPs per token (forward + backward): 6 per weight plus attention's 12*L*H*Q*T
        (PaLM). A tied wte counts once, as the head; an untied wte is a lookup, no matmul. modern has
        no wpe and no norm weights; its rotations, norms and softcap are elementwise, left out as
        GPT-2's LayerNorms and GELU are."""
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        lookup = 0 if cfg.tie_head else self.transformer.wte.weight.numel()
        return 6 * (self.num_params() - lookup) + 12 * L * H * Q * T

    def generate(self, idx, max_new_tokens, **kwargs):
        """Continue each row of idx (b, t) by up to max_new_tokens tokens: (b, t + n). Sampling, stop
        rules, the key/value cache and the CUDA-graph step are codegpt.decode.generate's (see its options)."""
        from codegpt import decode
        return decode.generate(self, idx, max_new_tokens, **kwargs)
