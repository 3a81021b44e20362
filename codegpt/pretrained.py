"""
Our GPT in Hugging Face's layout, both ways: train.py's init_from reads OpenAI's four GPT-2 sizes
from the hub, or any local GPT2LMHeadModel or NanoChatForCausalLM folder (one export_hf.py wrote,
say), into model.py's GPT; export_hf.py writes ours out with hf_model: arch='gpt2' as
GPT2LMHeadModel, arch='modern' as NanoChatForCausalLM, whose math is the modern block's in every
detail (rotary with the same pairing, sense and base, weightless RMSNorm with eps 1e-6 after the
embedding, in each block and at the end, RMS-normed q and k after the rotation, ReLU², no biases,
the tanh softcap).

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
- the padding rows (never an input or a target) and special tokens the model lacks (p50k_edit's
  fill-in-the-middle tokens) start as the mean of all rows, whose logit is the average logit.
  Zeros would not do: GPT-2's logits are mostly far below zero, so rows at zero would take most
  of the probability.
A NanoChat folder's q_proj, k_proj and v_proj are stacked into our c_attn, and its fc1, fc2, o_proj
are our c_fc, c_proj, attn.c_proj; nothing is transposed.
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
NANOCHAT = {'attn.c_proj': 'self_attn.o_proj', 'mlp.c_fc': 'mlp.fc1', 'mlp.c_proj': 'mlp.fc2'}  # ours -> NanoChat's


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
    """(config dict, HF state dict) of a GPT2LMHeadModel or NanoChatForCausalLM folder, checked to be one
    model.py's GPT can hold: its settings ours, and every tensor the shape its config.json says."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    for filename in FILES:
        if not os.path.isfile(os.path.join(folder, filename)):
            raise UserError(f"{folder} has no {filename}: a model folder needs config.json and model.safetensors "
                            f"(save_pretrained(folder) writes both)")
    path = os.path.join(folder, 'config.json')
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not JSON ({e}); pass a GPT-2 or NanoChat folder")
    kind = cfg.get('model_type') if isinstance(cfg, dict) else None
    if kind not in ('gpt2', 'nanochat'):
        raise UserError(f"{path} describes a {kind!r} model, not GPT-2 or NanoChat (model_type 'gpt2' or 'nanochat'); "
                        f"pass a GPT2LMHeadModel or NanoChatForCausalLM folder")
    C = cfg.get('n_embd' if kind == 'gpt2' else 'hidden_size', 768)
    rope = cfg.get('rope_parameters') or {}
    rules = [
        ('activation_function', lambda v: v in ('gelu', 'gelu_new', 'gelu_pytorch_tanh')),
        ('n_inner', lambda v: v in (None, 4 * C)),
        ('layer_norm_epsilon', lambda v: v == 1e-5),
        ('scale_attn_by_inverse_layer_idx', lambda v: not v), ('scale_attn_weights', bool),
    ] if kind == 'gpt2' else [
        ('hidden_act', lambda v: v == 'relu2'), ('intermediate_size', lambda v: v == 4 * C),
        ('num_key_value_heads', lambda v: v in (None, cfg.get('num_attention_heads'))),
        ('rms_norm_eps', lambda v: v == 1e-6), ('attention_bias', lambda v: not v),
        ('rope_parameters', lambda v: rope.get('rope_type', 'default') == 'default' and rope.get('rope_theta', 1e4) == 1e4),
    ]
    unsupported = [f"{k}={cfg[k]!r}" for k, ok in rules if k in cfg and not ok(cfg[k])]
    if unsupported:
        raise UserError(f"{path} sets {', '.join(unsupported)}, which model.py's GPT does not have; "
                        f"pass a plain {'GPT-2' if kind == 'gpt2' else 'NanoChat'} folder")
    n_layer = cfg.get('n_layer' if kind == 'gpt2' else 'num_hidden_layers', 12)
    n_head = cfg.get('n_head' if kind == 'gpt2' else 'num_attention_heads', 12)
    if not isinstance(n_head, int) or n_head < 1 or C % n_head or (kind == 'nanochat' and (C // n_head) % 2):
        raise UserError(f"{path} sets {n_head} attention heads for a width of {C}, which they do not divide "
                        f"{'(into even head sizes) ' if kind == 'nanochat' else ''}; fix config.json")
    try:
        sd = load_file(os.path.join(folder, 'model.safetensors'))
    except (SafetensorError, OSError) as e:
        raise UserError(f"cannot read {os.path.join(folder, 'model.safetensors')} ({e}); it is damaged: fetch it again")
    sd = {k.removeprefix('transformer.'): v for k, v in sd.items()}
    prefix = 'h.' if kind == 'gpt2' else 'model.layers.'
    stored = {int(k[len(prefix):].split('.')[0]) for k in sd if k.startswith(prefix)}
    if stored != set(range(n_layer)):
        raise UserError(f"{path} says {n_layer} layers but model.safetensors holds {len(stored)} "
                        f"({', '.join(map(str, sorted(stored)[:8]))}{', ...' if len(stored) > 8 else ''}); "
                        f"fix n_layer in config.json or pass the folder that matches")
    if not cfg.get('tie_word_embeddings', kind == 'gpt2') and 'lm_head.weight' not in sd:
        raise UserError(f"{path} unties the head but model.safetensors has no lm_head.weight: not a whole state dict")
    for name, shape in expected_shapes(kind, cfg, C, n_layer, sd).items():
        if name not in sd:
            raise UserError(f"{folder}/model.safetensors has no {name} for its {n_layer} layers: not a "
                            f"{'GPT-2' if kind == 'gpt2' else 'NanoChat'} state dict")
        if tuple(sd[name].shape) != shape:
            raise UserError(f"{folder}/model.safetensors holds {name} of shape {tuple(sd[name].shape)}, but config.json "
                            f"({C} wide, {n_head} heads) makes it {shape}; fix config.json or pass the folder that matches")
    return cfg, sd


def expected_shapes(kind, cfg, C, n_layer, sd):
    """{tensor name: shape} that a folder's config.json implies (names without 'transformer.')."""
    embed = 'wte.weight' if kind == 'gpt2' else 'model.embed_tokens.weight'
    rows = sd[embed].shape[0] if embed in sd else cfg.get('vocab_size', 50257)
    shapes = {embed: (rows, C)}
    if kind == 'gpt2':
        shapes['wpe.weight'] = (cfg.get('n_positions', 1024), C)
        shapes.update({'ln_f.weight': (C,), 'ln_f.bias': (C,)})
        for i in range(n_layer):  # Conv1D: (in, out)
            shapes.update({f'h.{i}.attn.c_attn.weight': (C, 3 * C), f'h.{i}.attn.c_attn.bias': (3 * C,),
                           f'h.{i}.attn.c_proj.weight': (C, C), f'h.{i}.attn.c_proj.bias': (C,),
                           f'h.{i}.mlp.c_fc.weight': (C, 4 * C), f'h.{i}.mlp.c_fc.bias': (4 * C,),
                           f'h.{i}.mlp.c_proj.weight': (4 * C, C), f'h.{i}.mlp.c_proj.bias': (C,)})
            shapes.update({f'h.{i}.{n}.{w}': (C,) for n in NORMS for w in ('weight', 'bias')})
    else:
        for i in range(n_layer):  # nn.Linear: (out, in)
            layer = f'model.layers.{i}'
            shapes.update({f'{layer}.self_attn.{p}_proj.weight': (C, C) for p in 'qkvo'})
            shapes.update({f'{layer}.mlp.fc1.weight': (4 * C, C), f'{layer}.mlp.fc2.weight': (C, 4 * C)})
    tied = cfg.get('tie_word_embeddings', kind == 'gpt2')
    if not tied:
        shapes['lm_head.weight'] = (rows, C)
    return shapes


def load(init_from, block_size, vocab_size, encoding):
    """A hub size or a local folder -> (its model args: arch, n_layer, n_head, n_embd, bias, gelu,
    tie_head, softcap; our state dict at block_size and vocab_size for `encoding`'s tokens)."""
    if init_from in HUB:
        folder = fetch(init_from)
    elif os.path.isdir(init_from):
        folder = init_from
    else:
        raise UserError(f"init_from='{init_from}' is not 'scratch', 'resume', one of {', '.join(HUB)} or a folder")
    cfg, sd = read_folder(folder)
    sd = {k: v.float() for k, v in sd.items() if not k.endswith(('.attn.bias', '.attn.masked_bias'))}  # GPT-2's causal masks
    modern = cfg['model_type'] == 'nanochat'
    n_pos = cfg.get('max_position_embeddings' if modern else 'n_positions', 1024)
    if block_size > n_pos and not modern:  # learned positions end there; rotary ones go on
        raise UserError(f"block_size {block_size} is longer than {init_from}'s {n_pos} positions; "
                        f"pass --block_size={n_pos} or less")
    tied = cfg.get('tie_word_embeddings', not modern)
    if modern:
        n_layer, n_embd = cfg.get('num_hidden_layers', 12), cfg.get('hidden_size', 768)
        ours = {'transformer.wte.weight': embeddings(sd['model.embed_tokens.weight'], vocab_size, encoding, init_from)}
        for i in range(n_layer):
            layer = f'model.layers.{i}'
            ours[f'transformer.h.{i}.attn.c_attn.weight'] = torch.cat([sd[f'{layer}.self_attn.{p}_proj.weight'] for p in 'qkv'])
            for name, theirs in NANOCHAT.items():
                ours[f'transformer.h.{i}.{name}.weight'] = sd[f'{layer}.{theirs}.weight']
        softcap = cfg.get('final_logit_softcapping')
        args = dict(arch='modern', n_layer=n_layer, n_head=cfg.get('num_attention_heads', 6), n_embd=n_embd, bias=False,
                    tie_head=tied, softcap=float(softcap or 0.0))
    else:
        n_layer = cfg.get('n_layer', 12)
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
        tanh = cfg.get('activation_function', 'gelu_new') != 'gelu'
        args = dict(arch='gpt2', n_layer=n_layer, n_head=cfg.get('n_head', 12), n_embd=cfg.get('n_embd', 768), bias=True,
                    gelu='tanh' if tanh else 'none', tie_head=tied, softcap=0.0)
    ours['lm_head.weight'] = ours['transformer.wte.weight'] if tied else \
        embeddings(sd['lm_head.weight'], vocab_size, encoding, init_from)  # (vocab_size, C), rows as for wte
    return args, ours


def embeddings(wte, vocab_size, encoding, init_from):
    """wte (rows, C) -> (vocab_size, C): the model's rows, then the encoding's missing ids, then padding."""
    enc = get_encoding(encoding)
    rows, C = wte.shape
    if vocab_size < max(rows, enc.n_vocab):
        raise UserError(f"vocab_size {vocab_size} is smaller than {init_from}'s {rows} rows or {encoding}'s "
                        f"{enc.n_vocab} ids; pass --vocab_size={-(-max(rows, enc.n_vocab) // 64) * 64}")
    out = wte.mean(0).repeat(vocab_size, 1)  # (vocab_size, C): padding rows (and special tokens) at the mean row
    out[:rows] = wte
    special = set(enc._special_tokens.values())
    spelled = [i for i in range(rows, enc.n_vocab) if i not in special]
    if spelled:
        if rows != get_encoding('r50k_base').n_vocab:
            raise UserError(f"{init_from} has {rows} token rows, not GPT-2's 50257, so {encoding}'s ids beyond it "
                            f"cannot be spelled")
        r50k = get_encoding('r50k_base')
        for i in spelled:
            out[i] = wte[r50k.encode_ordinary(enc.decode([i]))].mean(0)
    return out


def to_hf(sd, n_layer, n_embd, n_vocab):
    """Our arch='gpt2' state dict -> GPT2LMHeadModel's: crop the vocab, transpose Conv1D weights, zero missing biases."""
    sd = stacked_qkv(sd, n_layer)
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


def to_nanochat(sd, n_layer, n_embd, n_vocab):
    """Our arch='modern' state dict -> NanoChatForCausalLM's: crop the vocab, split c_attn into q, k, v."""
    sd = stacked_qkv(sd, n_layer)
    out = {'model.embed_tokens.weight': sd['transformer.wte.weight'][:n_vocab],
           'lm_head.weight': sd['lm_head.weight'][:n_vocab]}
    for i in range(n_layer):
        ours, layer = f'transformer.h.{i}', f'model.layers.{i}'
        q, k, v = sd[f'{ours}.attn.c_attn.weight'].split(n_embd)  # (n_embd, n_embd) each
        out.update({f'{layer}.self_attn.q_proj.weight': q, f'{layer}.self_attn.k_proj.weight': k,
                    f'{layer}.self_attn.v_proj.weight': v})
        for name, theirs in NANOCHAT.items():
            out[f'{layer}.{theirs}.weight'] = sd[f'{ours}.{name}.weight']
    return out


def stacked_qkv(sd, n_layer):
    """The state dict in float32 without torch.compile's prefix, split_qkv's c_q, c_k, c_v stacked as one c_attn."""
    sd = {k.removeprefix('_orig_mod.'): v.float() for k, v in sd.items()}
    for i in range(n_layer):
        attn = f'transformer.h.{i}.attn'
        for kind in ('weight', 'bias'):
            if f'{attn}.c_q.{kind}' in sd:
                sd[f'{attn}.c_attn.{kind}'] = torch.cat([sd.pop(f'{attn}.c_{part}.{kind}') for part in 'qkv'])
    return sd


def hf_model(model, n_vocab, eot):
    """Our GPT as the transformers model of its arch, with its weights (cropped to n_vocab rows): GPT-2's
    GPT2LMHeadModel or NanoChatForCausalLM. A model transformers' class cannot express is one line."""
    cfg = model.config
    if cfg.arch == 'gpt2' and cfg.softcap:
        raise UserError(f"a GPT-2 block with softcap={cfg.softcap} has no transformers class (GPT2LMHeadModel has no "
                        f"logit cap); train arch='modern' for NanoChat's, or softcap=0")
    if cfg.arch == 'gpt2':
        from transformers import GPT2Config, GPT2LMHeadModel
        hf_config = GPT2Config(vocab_size=n_vocab, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                               n_head=cfg.n_head, n_inner=4 * cfg.n_embd,
                               activation_function='gelu_new' if cfg.gelu == 'tanh' else 'gelu',
                               resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                               layer_norm_epsilon=1e-5, bos_token_id=eot, eos_token_id=eot,
                               tie_word_embeddings=cfg.tie_head, architectures=['GPT2LMHeadModel'])
        hf, sd = GPT2LMHeadModel(hf_config), to_hf(model.state_dict(), cfg.n_layer, cfg.n_embd, n_vocab)
    else:
        from transformers import NanoChatConfig, NanoChatForCausalLM
        hf_config = NanoChatConfig(vocab_size=n_vocab, hidden_size=cfg.n_embd, intermediate_size=4 * cfg.n_embd,
                                   num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                                   num_key_value_heads=cfg.n_head, max_position_embeddings=cfg.block_size,
                                   hidden_act='relu2', rms_norm_eps=1e-6, attention_dropout=cfg.dropout,
                                   rope_parameters={'rope_type': 'default', 'rope_theta': cfg.rope_theta},
                                   final_logit_softcapping=cfg.softcap or None, attention_bias=False,
                                   bos_token_id=eot, eos_token_id=eot, pad_token_id=None,
                                   tie_word_embeddings=cfg.tie_head, architectures=['NanoChatForCausalLM'])
        hf, sd = NanoChatForCausalLM(hf_config), to_nanochat(model.state_dict(), cfg.n_layer, cfg.n_embd, n_vocab)
    hf.load_state_dict(sd, strict=True)  # every key, every shape
    hf.tie_weights()
    return hf
