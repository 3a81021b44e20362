"""
Optimizer pieces beside torch's: Muon with same-size matrices orthogonalised as one stack, and the
global gradient clip folded into fused AdamW's step. model.GPT.configure_optimizers builds the
optimizers; train.py clips with clip_grad_norm.
"""
import math

import torch


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


