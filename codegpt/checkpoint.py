"""
Checkpoint files in an out_dir, shared by train.py (writes) and sample.py / the evals / export (read).

    ckpt.pt       the latest state: model, optimizer, loader and RNG state, the tokens' 'encoding', ... (resume from it)
    ckpt_best.pt  the same dict at the step with the lowest overall val loss so far

State dicts carry no torch.compile '_orig_mod.' prefix, and every file loads with
torch.load(weights_only=True): plain tensors, numbers, strings, lists and dicts only.
"""
import os
import pickle

import torch

from codegpt.atomic import atomic_path, write_error
from codegpt.errors import UserError
from codegpt.shards import DEFAULT_ENCODING

LATEST, BEST = 'ckpt.pt', 'ckpt_best.pt'


def save_checkpoint(ckpt, path):
    with atomic_path(path) as tmp:
        try:
            torch.save(ckpt, tmp)
        except RuntimeError as e:  # torch reports a short write (a full disk) as "unexpected pos"
            raise write_error(e, path, 'writing the checkpoint') from e


def checkpoint_path(out_dir, which='best'):
    """'best' falls back to the latest when no best file exists; 'latest' is ckpt.pt; a file path is itself."""
    if os.path.isfile(out_dir):
        return out_dir
    if which not in ('best', 'latest'):
        raise UserError(f"ckpt='{which}' is not 'best' or 'latest'")
    best, latest = os.path.join(out_dir, BEST), os.path.join(out_dir, LATEST)
    if which == 'best' and os.path.isfile(best):
        return best
    if os.path.isfile(latest):
        return latest
    raise UserError(f"no checkpoint in '{out_dir}' ({BEST} or {LATEST}); train one with "
                    f"python train.py <config> --out_dir={out_dir}")


def load_checkpoint(path, device='cpu'):
    """The checkpoint dict; a file that is not one of train.py's is one line, never unsafe advice."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own text here suggests weights_only=False: unsafe advice for an unknown file
        if 'Unsupported global' not in str(e):
            raise UserError(f"cannot read checkpoint {path} (not a pickle that torch can read); it is damaged or not a "
                            f"torch file: pass another checkpoint or retrain")
        raise UserError(f"cannot read checkpoint {path}: it holds Python objects beyond tensors and plain data, so it is "
                        f"not a checkpoint of train.py (which are loaded with weights_only=True); pass a train.py checkpoint")
    except Exception as e:  # a truncated or random file: say which, not a pickle traceback
        first = (str(e).strip().splitlines() or [''])[0][:150]
        raise UserError(f"cannot read checkpoint {path} ({type(e).__name__}: {first}); it is damaged or not a torch file: "
                        f"pass another checkpoint or retrain")
    missing = [k for k in ('model', 'model_args') if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UserError(f"{path} is a torch file but not a checkpoint of train.py (no {', '.join(map(repr, missing))}); "
                        f"pass a train.py checkpoint (out_dir/ckpt.pt or ckpt_best.pt)")
    return ckpt


def encoding_of(ckpt):
    """The tiktoken encoding the checkpoint's model was trained on; files without the key are r50k_base."""
    return ckpt.get('encoding', DEFAULT_ENCODING)


def find_and_load(out_dir, which='best', device='cpu'):
    """(checkpoint dict, path) from an out_dir (its best or latest file) or a checkpoint file;
    model.GPT.from_checkpoint(ckpt) makes the model."""
    path = checkpoint_path(out_dir, which)
    return load_checkpoint(path, device), path
