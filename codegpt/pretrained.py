"""
GPT-2 weights in Hugging Face's layout, both ways: train.py's init_from reads OpenAI's four sizes
from the hub or any local GPT2LMHeadModel folder (one export_hf.py wrote, say) into model.py's GPT,
and export_hf.py writes ours out with to_hf.

From the hub only config.json and model.safetensors are fetched, by huggingface_hub into its usual
cache (HF_HOME, HF_ENDPOINT as usual; an interrupted download resumes), and each file is checked
against the hash the hub gave for it. A fine-tune resumes from its ckpt.pt, never from the hub.

The mapping: HF's Conv1D weights are (in, out), our nn.Linear's (out, in), so they are transposed;
the causal-mask buffers are dropped; the head is tied to wte in both (unless tie_head=False: then
config.json says tie_word_embeddings=false and lm_head.weight is stored); a model with split_qkv
writes its c_q, c_k and c_v stacked as c_attn. OpenAI's weights were trained
with the tanh approximation of GELU ('gelu_new'), which our MLP then uses too (gelu='tanh'). The
vocabulary is padded to vocab_size, and rows the model lacks start as follows:
- p50k_base's 24 runs of 2-25 spaces (ids 50257-50280) start as the mean of the rows of the r50k_base
  tokens that spell the same text. r50k_base spells every run of spaces as single spaces, so each
  starts as GPT-2's space row (220): read as input, the model sees whitespace where it used to. As
  outputs, whitespace starts with up to 25x the probability it had, which the first steps correct;
- the padding rows (never an input or a target) start as the mean of all rows, whose logit is the
  average logit. Zeros would not do: GPT-2's logits are mostly far below zero, so rows at zero
  would take most of the probability.
"""
import hashlib
import json
import os

import torch

from codegpt.errors import NetworkError, UserError
from codegpt.shards import get_encoding

HUB = {name: f'openai-community/{name}' for name in ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')}
FILES = ('config.json', 'model.safetensors')
LINEARS = ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj')  # HF Conv1D (in, out); ours Linear (out, in)
NORMS = ('ln_1', 'ln_2')


def fetch(name):
    """The local folder holding the hub model's FILES, downloaded once into huggingface_hub's cache."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    from huggingface_hub.utils import logging
    logging.set_verbosity_error()  # its retries would print a line each; the outcome is one line below
    repo = HUB[name]
    local = "or pass a local GPT-2 folder: --init_from=<folder with config.json and model.safetensors>"
    for filename in FILES:
        try:
            path = hf_hub_download(repo, filename)
        except LocalEntryNotFoundError as e:  # the hub did not answer (an EntryNotFoundError too, so first)
            cause = e.__cause__ or e.__context__ or e
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:120]
            raise NetworkError(f"cannot reach {constants.ENDPOINT} for {repo}/{filename} ({first}), and it is not in the cache; "
                               f"check the network or HF_ENDPOINT, {local}")
        except EntryNotFoundError:
            raise UserError(f"{repo} on {constants.ENDPOINT} has no {filename}; {local}")
        except RepositoryNotFoundError:
            raise UserError(f"{repo} is not on {constants.ENDPOINT} (or needs a token); check HF_ENDPOINT, {local}")
        except (HfHubHTTPError, OSError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            raise NetworkError(f"cannot fetch {repo}/{filename} from {constants.ENDPOINT} ({first}); {local}")
        verify(path)
    return os.path.dirname(path)


def verify(path):
    """huggingface_hub names each cached file by the hub's hash of it: sha256 for LFS files, the git
    blob sha1 for the others. A cache without symlinks keeps no hash in the name: nothing to check."""
    blob = os.path.realpath(path)
    want = os.path.basename(blob)
    if len(want) not in (40, 64) or any(c not in '0123456789abcdef' for c in want):
        return
    h = hashlib.sha256() if len(want) == 64 else hashlib.sha1(b'blob %d\0' % os.path.getsize(blob))
    with open(blob, 'rb') as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    if h.hexdigest() != want:
        raise UserError(f"{path} does not match the hub's hash {want[:12]}...: the download is damaged; "
                        f"delete {blob} and run again")


def read_folder(folder):
    """(config dict, HF state dict) of a GPT2LMHeadModel folder, checked to be a GPT-2 we can map."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    for filename in FILES:
        if not os.path.isfile(os.path.join(folder, filename)):
            raise UserError(f"{folder} has no {filename}: a GPT-2 folder needs config.json and model.safetensors "
                            f"(save_pretrained(folder) writes both)")
    path = os.path.join(folder, 'config.json')
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not JSON ({e}); pass a GPT-2 folder")
    if not isinstance(cfg, dict) or cfg.get('model_type') != 'gpt2':
        kind = cfg.get('model_type') if isinstance(cfg, dict) else None
        raise UserError(f"{path} describes a {kind!r} model, not GPT-2 (model_type 'gpt2'); pass a GPT2LMHeadModel folder")
    unsupported = [f"{k}={cfg[k]!r}" for k, ok in [
        ('activation_function', lambda v: v in ('gelu', 'gelu_new', 'gelu_pytorch_tanh')),
        ('n_inner', lambda v: v in (None, 4 * cfg.get('n_embd', 768))),
        ('layer_norm_epsilon', lambda v: v == 1e-5),
        ('scale_attn_by_inverse_layer_idx', lambda v: not v), ('scale_attn_weights', bool)] if k in cfg and not ok(cfg[k])]
    if unsupported:
        raise UserError(f"{path} sets {', '.join(unsupported)}, which model.py's GPT does not have; pass a plain GPT-2 folder")
    try:
        sd = load_file(os.path.join(folder, 'model.safetensors'))
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read {os.path.join(folder, 'model.safetensors')} ({e}); it is damaged: fetch it again")
    return cfg, sd


def load(init_from, block_size, vocab_size, encoding):
    """A hub size or a local folder -> (its model args: n_layer, n_head, n_embd, bias, gelu; our state
    dict at block_size and vocab_size for `encoding`'s tokens)."""
    if init_from in HUB:
        folder = fetch(init_from)
    elif os.path.isdir(init_from):
        folder = init_from
    else:
        raise UserError(f"init_from='{init_from}' is not 'scratch', 'resume', one of {', '.join(HUB)} or a folder")
    cfg, sd = read_folder(folder)
    sd = {k.removeprefix('transformer.'): v.float() for k, v in sd.items()
          if not k.endswith(('.attn.bias', '.attn.masked_bias'))}  # the causal masks, not weights
    n_layer, n_embd, n_pos = cfg.get('n_layer', 12), cfg.get('n_embd', 768), cfg.get('n_positions', 1024)
    if block_size > n_pos:
        raise UserError(f"block_size {block_size} is longer than {init_from}'s {n_pos} positions; pass --block_size={n_pos} or less")
    try:
        ours = {'transformer.wte.weight': embeddings(sd['wte.weight'], vocab_size, encoding, init_from),
                'transformer.wpe.weight': sd['wpe.weight'][:block_size]}
        for i in range(n_layer):
            for name in LINEARS:
                ours[f'transformer.h.{i}.{name}.weight'] = sd[f'h.{i}.{name}.weight'].t().contiguous()
            for name in LINEARS + NORMS:
                ours[f'transformer.h.{i}.{name}.bias'] = sd[f'h.{i}.{name}.bias']
            for name in NORMS:
                ours[f'transformer.h.{i}.{name}.weight'] = sd[f'h.{i}.{name}.weight']
        ours['transformer.ln_f.weight'], ours['transformer.ln_f.bias'] = sd['ln_f.weight'], sd['ln_f.bias']
    except KeyError as e:
        raise UserError(f"{folder}/model.safetensors has no {e.args[0]} for its {n_layer} layers: not a GPT-2 state dict")
    tied = cfg.get('tie_word_embeddings', True)  # OpenAI's are; an export of an untied model is not
    if not tied and 'lm_head.weight' not in sd:
        raise UserError(f"{folder}/config.json unties the head but model.safetensors has no lm_head.weight: not a GPT-2 state dict")
    ours['lm_head.weight'] = ours['transformer.wte.weight'] if tied else \
        embeddings(sd['lm_head.weight'], vocab_size, encoding, init_from)  # (vocab_size, C), rows as for wte
    tanh = cfg.get('activation_function', 'gelu_new') != 'gelu'
    args = dict(n_layer=n_layer, n_head=cfg.get('n_head', 12), n_embd=n_embd, bias=True, gelu='tanh' if tanh else 'none',
                tie_head=tied)
    return args, ours


def embeddings(wte, vocab_size, encoding, init_from):
    """wte (rows, C) -> (vocab_size, C): the model's rows, then the encoding's missing ids, then padding."""
    enc = get_encoding(encoding)
    rows, C = wte.shape
    if vocab_size < max(rows, enc.n_vocab):
        raise UserError(f"vocab_size {vocab_size} is smaller than {init_from}'s {rows} rows or {encoding}'s {enc.n_vocab} ids; "
                        f"pass --vocab_size={-(-max(rows, enc.n_vocab) // 64) * 64}")
    out = wte.mean(0).repeat(vocab_size, 1)  # (vocab_size, C): padding rows at the mean row
    out[:rows] = wte
    if enc.n_vocab > rows:
        if rows != get_encoding('r50k_base').n_vocab:
            raise UserError(f"{init_from} has {rows} token rows, not GPT-2's 50257, so {encoding}'s ids beyond it cannot be spelled")
        r50k = get_encoding('r50k_base')
        for i in range(rows, enc.n_vocab):
            out[i] = wte[r50k.encode_ordinary(enc.decode([i]))].mean(0)
    return out


def to_hf(sd, n_layer, n_embd, n_vocab):
    """Our GPT state dict -> GPT2LMHeadModel's: crop the vocab, transpose Conv1D weights, zero missing biases."""
    sd = {k.removeprefix('_orig_mod.'): v.float() for k, v in sd.items()}
    for i in range(n_layer):  # split_qkv: GPT-2 keeps q, k and v stacked in one c_attn
        attn = f'transformer.h.{i}.attn'
        for kind in ('weight', 'bias'):
            if f'{attn}.c_q.{kind}' in sd:
                sd[f'{attn}.c_attn.{kind}'] = torch.cat([sd.pop(f'{attn}.c_{part}.{kind}') for part in 'qkv'])
    wte = sd['transformer.wte.weight'][:n_vocab]  # (n_vocab, n_embd)
    out = {'transformer.wte.weight': wte, 'transformer.wpe.weight': sd['transformer.wpe.weight']}
    widths = {'ln_1': n_embd, 'attn.c_attn': 3 * n_embd, 'attn.c_proj': n_embd, 'ln_2': n_embd,
              'mlp.c_fc': 4 * n_embd, 'mlp.c_proj': n_embd}
    for i in range(n_layer):
        for name, width in widths.items():
            key = f'transformer.h.{i}.{name}'
            w = sd[f'{key}.weight']
            out[f'{key}.weight'] = w if name in NORMS else w.t().contiguous()
            out[f'{key}.bias'] = sd.get(f'{key}.bias', torch.zeros(width))
    out['transformer.ln_f.weight'] = sd['transformer.ln_f.weight']
    out['transformer.ln_f.bias'] = sd.get('transformer.ln_f.bias', torch.zeros(n_embd))
    out['lm_head.weight'] = sd['lm_head.weight'][:n_vocab]  # wte itself when tied, as in ours
    return out
