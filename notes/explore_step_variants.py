# exploration script of notes/throughput.md run 1-2 (timing variants of the model step on random tokens); not part of the product
# exploration: time training-step variants of model.py on random tokens (not committed)
import sys, time, os, math, contextlib
import torch, torch.nn.functional as F
sys.path.insert(0, os.getcwd())
from model import GPT, GPTConfig
from torch.nn.attention import sdpa_kernel, SDPBackend

def run(B, A, steps=30, attn=None, loss_mode='float', mode=None, label='', nodrop=False, cdt=False):
    import torch._inductor.config as ic; ic.coordinate_descent_tuning = cdt
    torch.manual_seed(0)
    torch._dynamo.reset()
    model = GPT(GPTConfig()).cuda()
    if nodrop:
        for n, mod in list(model.named_modules()):
            for cn, c in list(mod.named_children()):
                if isinstance(c, torch.nn.Dropout): setattr(mod, cn, torch.nn.Identity())
    opt, = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 'cuda')  # AdamW alone
    if loss_mode == 'bf16':
        def fwd(x, y):
            with torch.autocast('cuda', dtype=torch.bfloat16):
                tr = model.transformer
                h = tr.wte(x) + tr.wpe(torch.arange(x.size(1), device=x.device))
                for blk in tr.h: h = blk(h)
                logits = model.lm_head(tr.ln_f(h))
                return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
    else:
        def fwd(x, y):
            with torch.autocast('cuda', dtype=torch.bfloat16):
                return model(x, y)[1]
    cf = torch.compile(fwd, mode=mode)
    data = torch.randint(0, 50257, (16, B, 1025)).pin_memory()
    ctx = (lambda: sdpa_kernel([attn])) if attn is not None else contextlib.nullcontext
    def step(i):
        for m in range(A):
            b = data[(i*A+m) % 16]
            x = b[:, :-1].cuda(non_blocking=True); y = b[:, 1:].cuda(non_blocking=True)
            with ctx():
                loss = cf(x, y) / A
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
        return loss
    try:
        for i in range(4): step(i).item()
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        for i in range(steps): l = step(i)
        l.item(); torch.cuda.synchronize()
        dt = (time.perf_counter() - t) / steps
        print(f"{label:40s} B={B} A={A} tok/s={B*A*1024/dt:9.0f} ms/step={dt*1000:7.1f} peak={torch.cuda.max_memory_allocated()/2**30:5.1f}GiB", flush=True)
    except Exception as e:
        print(f"{label} FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)

C=SDPBackend.CUDNN_ATTENTION
run(32, 1, attn=C, label='ours cudnn')
run(32, 1, attn=C, nodrop=True, label='ours cudnn nodrop')
run(4, 8, nodrop=True, label='ours flash nodrop 4x8')
run(4, 8, attn=C, nodrop=True, label='ours cudnn nodrop 4x8')
run(32, 1, attn=C, nodrop=True, cdt=True, label='ours cudnn nodrop coord-descent')
run(32, 1, attn=C, nodrop=True, mode='max-autotune-no-cudagraphs', label='ours cudnn nodrop max-autotune')
