"""
The plain nanoGPT recipe as a measuring stick for bench/train_speed.py: GPT-2 124M written out on its own (no
import from this project, so a slowdown of ours cannot hide in the reference too), trained the
classic way: torch.compile, bf16 autocast, SDPA flash attention, fused AdamW, tied head, vocab
padded to 50304, gradient clipping, random token batches already on the GPU.

    python bench/plain_nanogpt.py --micro_batch=4 --grad_accum=8 --steps=40
    python bench/plain_nanogpt.py --device=cpu --n_layer=2 --n_embd=64 --n_head=2 --block_size=64 --steps=3

prints one line: 'reference tokens/s=... ms/step=... micro_batch=... grad_accum=... peak_gib=... loss=...'
"""
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configurator import configure  # noqa: E402 (the command line only)

# -----------------------------------------------------------------------------
micro_batch = 32  # sequences per forward
grad_accum = 1  # forwards per optimizer step
steps = 40  # timed steps, after 5 untimed ones
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
vocab_size = 50304
device = 'cuda' if torch.cuda.is_available() else 'cpu'
memory_gb = 0.0  # CUDA: > 0 caps this process's GPU memory at this many GiB (a smaller card's room)
config = configure(globals())
# -----------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd, bias=False), nn.LayerNorm(n_embd, bias=False)
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd, bias=False)
        self.up, self.down = nn.Linear(n_embd, 4 * n_embd, bias=False), nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x):  # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, n_head, C // n_head).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block() for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):  # (B, T) each
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))  # (B, T, vocab)
        return F.cross_entropy(logits.float().view(-1, vocab_size), targets.reshape(-1))


torch.manual_seed(0)
torch.backends.cuda.matmul.allow_tf32 = True
cuda = device.startswith('cuda')
if cuda and memory_gb > 0:
    torch.cuda.set_per_process_memory_fraction(min(1.0, memory_gb * 2**30 / torch.cuda.get_device_properties(device).total_memory))
model = GPT().to(device)
opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=cuda)
step_model = torch.compile(model) if cuda else model
autocast = torch.autocast('cuda', dtype=torch.bfloat16) if cuda else torch.autocast('cpu', enabled=False)
data = torch.randint(0, 50257, (8, micro_batch, block_size + 1), device=device)  # a few batches, reused


def step(i):
    for micro in range(grad_accum):
        xy = data[(i * grad_accum + micro) % len(data)]
        with autocast:
            loss = step_model(xy[:, :-1], xy[:, 1:]) / grad_accum
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


for i in range(5):  # compile and warm up, untimed
    step(i)
if cuda:
    torch.cuda.synchronize()
t0 = time.time()
for i in range(steps):
    loss = step(i)
loss.item()  # waits for the GPU
dt = (time.time() - t0) / steps
tok = micro_batch * grad_accum * block_size / dt
mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
print(f"reference tokens/s={tok:.0f} ms/step={dt * 1000:.1f} micro_batch={micro_batch} grad_accum={grad_accum} "
      f"peak_gib={mem:.1f} loss={loss.item() * grad_accum:.4f}")
