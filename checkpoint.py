"""
Checkpoint files in an out_dir, shared by train.py (writes) and sample.py / the evals / export (read).

    ckpt.pt       the latest state: model, optimizer, loader and RNG state, the tokens' 'encoding', ... (resume from it)
    ckpt_best.pt  the same dict at the step with the lowest overall val loss so far

State dicts carry no torch.compile '_orig_mod.' prefix, and every file loads with
torch.load(weights_only=True): plain tensors, numbers, strings, lists and dicts only.
"""
import os

import torch

from atomic import atomic_path
from model import GPT, GPTConfig
from shards import DEFAULT_ENCODING

LATEST, BEST = 'ckpt.pt', 'ckpt_best.pt'


def save_checkpoint(ckpt, path):
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def checkpoint_path(out_dir, which='best'):
    """'best' falls back to the latest when no best file exists; 'latest' is ckpt.pt; a file path is itself."""
    if os.path.isfile(out_dir):
        return out_dir
    if which not in ('best', 'latest'):
        raise SystemExit(f"error: ckpt='{which}' is not 'best' or 'latest'")
    best, latest = os.path.join(out_dir, BEST), os.path.join(out_dir, LATEST)
    if which == 'best' and os.path.isfile(best):
        return best
    if os.path.isfile(latest):
        return latest
    raise SystemExit(f"error: no checkpoint in '{out_dir}' ({BEST} or {LATEST}); train one with "
                     f"python train.py <config> --out_dir={out_dir}")


def load_checkpoint(path, device='cpu'):
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, not a pickle traceback
        raise SystemExit(f"error: cannot read checkpoint {path}: {type(e).__name__}: {e}")


def encoding_of(ckpt):
    """The tiktoken encoding the checkpoint's model was trained on; files without the key are r50k_base."""
    return ckpt.get('encoding', DEFAULT_ENCODING)


def load_model(out_dir, which='best', device='cpu'):
    """(model in eval mode, checkpoint dict, path) from an out_dir or a checkpoint file."""
    path = checkpoint_path(out_dir, which)
    ckpt = load_checkpoint(path, device)
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])
    return model.to(device).eval(), ckpt, path
