"""
The training loss's head as one pass over the logits: HeadLoss computes F.cross_entropy of the
head's logits and makes their gradients in the forward, with a Triton kernel (head_loss_rows) on
CUDA and torch ops elsewhere. model.GPT uses it for the training forward; notes/throughput.md
has its measurements.
"""
import torch
from torch.nn import functional as F

try:  # triton comes with torch's CUDA builds
    import triton
    import triton.language as tl
except ImportError:
    triton = None


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
    (notes/throughput.md, 2026-12-04). Same math: float32 log-sum-exp, the logits'
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
            # in place where it can be: each (n, vocab) temporary is a large allocation (and, on a CPU,
            # fresh pages to fault in); the logits are not needed once their gradient is made
            z, t = logits.float(), targets.clamp(min=0)[:, None]  # (n, vocab), (n, 1); z is logits when fp32
            lse = torch.logsumexp(z, dim=-1, keepdim=True)  # (n, 1)
            rows = (lse - z.gather(1, t))[:, 0] * keep
            dz = z.sub_(lse).exp_().scatter_add_(1, t, -torch.ones_like(lse))  # softmax - onehot
            dz = dz.mul_(keep[:, None]).to(logits.dtype)
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


