"""
Export a checkpoint as a Hugging Face transformers folder that anyone can load with
    AutoModelForCausalLM.from_pretrained(folder) and AutoTokenizer.from_pretrained(folder)
arch='gpt2' as GPT2LMHeadModel, arch='modern' as NanoChatForCausalLM (the stock class whose math
the modern block is; codegpt/pretrained.py gives the mapping and why it is exact).

Reads a checkpoint (out_dir/ckpt_best.pt by default). Writes export_dir with config.json,
model.safetensors, generation_config.json and the tokenizer of the checkpoint's encoding
(tokenizer.json, tokenizer_config.json), made offline from tiktoken's ranks by transformers'
tiktoken converter; it encodes exactly as tiktoken does, for r50k_base, p50k_base and p50k_edit
(whose fill-in-the-middle tokens it knows as special tokens at tiktoken's ids). The folder is
written beside its final name and swapped in, so it is never seen half written. export.json in
it says what it came from and marks it as an export: an existing export_dir is replaced only when
it holds one and nothing an export does not write; a killed export's leftovers beside it are
removed by the next run.

The vocab padded to 50304 is cropped back to the encoding's ids (the pad rows are never a
target). GPT-2: our (out, in) Linear weights are transposed to HF's Conv1D (in, out); a model
trained with bias=False gets zero biases (LayerNorm without bias == LayerNorm with a zero bias);
'gelu' is the exact erf GELU of our nn.GELU() ('gelu_new', the tanh one, for a model started from
OpenAI's weights); layer_norm_epsilon 1e-5 is nn.LayerNorm's default.

    python export_hf.py --out_dir=out                       # -> out/hf
    python export_hf.py --out_dir=out/ckpt.pt --export_dir=hf/gpt2-code --dtype=bfloat16
"""
import errno
import fcntl
import json
import os
import re
import shutil
import time

import torch

from codegpt.atomic import made_by
from codegpt.checkpoint import encoding_of, find_and_load
from codegpt.pretrained import hf_model
from codegpt.shards import EOT, get_encoding
from configurator import configure, die
from model import GPT

# -----------------------------------------------------------------------------
out_dir = 'out'  # checkpoint folder (or a .pt file)
ckpt = 'best'  # 'best' (ckpt_best.pt, else ckpt.pt) or 'latest' (ckpt.pt)
export_dir = ''  # the HF folder to write; '' = <checkpoint folder>/hf
dtype = 'float32'  # weights in model.safetensors: 'float32', 'bfloat16' or 'float16'
tokenizer = True  # also write the encoding's tokenizer files
verify = True  # reload the folder with transformers and compare its logits with ours on real code
config = configure(globals())
# -----------------------------------------------------------------------------

# what an export holds: a folder with any other file is the user's, never replaced
EXPORT_FILES = {'export.json', 'config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json',
                'tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja'}


def write_tokenizer(folder, enc, block_size):
    """tokenizer.json and tokenizer_config.json for the encoding, by transformers' own tiktoken
    converter (vocab and merges from tiktoken's ranks, the same split pattern, byte-level decoding,
    the special tokens at their tiktoken ids)."""
    from transformers import GPT2TokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter
    specials = enc._special_tokens  # {'<|endoftext|>': 50256, and p50k_edit's '<|fim_prefix|>': 50281, ...}

    class FromRanks(TikTokenConverter):
        def load_tiktoken_bpe(self, _):  # the ranks tiktoken already loaded, instead of reading a file
            return {**enc._mergeable_ranks, **{t.encode(): i for t, i in specials.items()}}

    eot = '<|endoftext|>'
    converted = FromRanks(pattern=enc._pat_str, extra_special_tokens=sorted(specials, key=specials.get)).converted()
    tok = GPT2TokenizerFast(tokenizer_object=converted, bos_token=eot, eos_token=eot, unk_token=eot,
                            model_max_length=block_size, add_prefix_space=False,
                            additional_special_tokens=[t for t in sorted(specials, key=specials.get) if t != eot])
    tok.save_pretrained(folder)


t_start = time.time()
try:
    import transformers  # noqa: F401 (the export's classes come from it)
except ImportError:
    die("export_hf.py needs transformers and safetensors: pip install transformers safetensors")
if dtype not in ('float32', 'bfloat16', 'float16'):
    die(f"dtype='{dtype}' is not 'float32', 'bfloat16' or 'float16'")

# ----------------------------------------------------------------------------- our model
ck, ckpt_path = find_and_load(out_dir, ckpt, 'cpu')
model = GPT.from_checkpoint(ck).eval()
cfg = model.config
enc = get_encoding(encoding_of(ck))  # the tokens it was trained on
n_vocab = enc.n_vocab  # 50257, 50281 or 50284: the padding rows are cropped
if cfg.vocab_size < n_vocab:
    die(f"{ckpt_path} has vocab_size {cfg.vocab_size} < {enc.name}'s {n_vocab}; it was not trained on those tokens")

# ----------------------------------------------------------------------------- the folder: ours to replace?
export_dir = (export_dir or os.path.join(os.path.dirname(ckpt_path), 'hf')).rstrip('/')
if os.path.lexists(export_dir) and not os.path.isdir(export_dir):
    die(f"export_dir '{export_dir}' is a file, not an export folder; pass --export_dir=<a new or export folder>")
held = sorted(os.listdir(export_dir)) if os.path.isdir(export_dir) else []
other = made_by(export_dir) if held else None
if held and other != 'export_hf.py':
    if other:
        die(f"export_dir '{export_dir}' holds the output of {other}; pass --export_dir=<a new or export folder>")
    die(f"export_dir '{export_dir}' holds files but no export.json, so it is not an earlier export of this script; "
        f"pass --export_dir=<a new or export folder>")
extra = [name for name in held if name not in EXPORT_FILES]
if extra:
    die(f"export_dir '{export_dir}' holds {extra[0]}{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}, which "
        f"no export writes, so it is not ours to replace; move them out or pass another --export_dir")
parent = os.path.dirname(os.path.abspath(export_dir))
os.makedirs(parent, exist_ok=True)
lock = os.open(parent, os.O_RDONLY)  # held until the process ends: one export at a time beside this folder
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    die(f"another export_hf.py run is writing into {parent}; wait for it to finish")
leftover = re.compile(re.escape(os.path.basename(export_dir)) + r'\.(tmp|old)\d+')
for name in os.listdir(parent):  # a killed export's half-written or displaced folder (we hold the lock)
    if leftover.fullmatch(name) and os.path.isdir(os.path.join(parent, name)):
        shutil.rmtree(os.path.join(parent, name))

# ----------------------------------------------------------------------------- write, then swap in
hf = hf_model(model, n_vocab, EOT).to(getattr(torch, dtype)).eval()
tmp = f"{export_dir}.tmp{os.getpid()}"
os.makedirs(tmp)
try:
    try:
        hf.save_pretrained(tmp, safe_serialization=True)
        if tokenizer:
            write_tokenizer(tmp, enc, cfg.block_size)
        with open(os.path.join(tmp, 'export.json'), 'w') as f:  # what this folder is, and what it came from
            json.dump(dict(made_by='export_hf.py', checkpoint=os.path.abspath(ckpt_path), iter_num=ck.get('iter_num'),
                           arch=cfg.arch, encoding=enc.name, dtype=dtype, transformers_class=type(hf).__name__), f, indent=1)
    except Exception as e:  # safetensors reports a full disk as its own error type
        if isinstance(e, OSError) or 'I/O error' not in str(e):
            raise
        raise OSError(errno.EIO, f"writing the export failed ({str(e).splitlines()[0][:100]})", tmp) from e
    if os.path.exists(export_dir):
        old = f"{export_dir}.old{os.getpid()}"
        os.replace(export_dir, old)
        os.replace(tmp, export_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp, export_dir)
finally:
    shutil.rmtree(tmp, ignore_errors=True)

# ----------------------------------------------------------------------------- check
check = ''
if verify:
    from transformers import AutoModelForCausalLM
    with open(os.path.abspath(__file__)) as f:  # some real code: this very file
        ids = [EOT] + enc.encode_ordinary(f.read())[:cfg.block_size - 1]
    x = torch.tensor([ids])
    loaded = AutoModelForCausalLM.from_pretrained(export_dir).float().eval()
    # ours with the weights rounded as they were saved, so any difference is the mapping's, not dtype's
    model.load_state_dict({k: v.to(getattr(torch, dtype)).float() for k, v in model.state_dict().items()})
    with torch.no_grad():
        theirs = loaded(x).logits  # (1, t, n_vocab)
        ours, _ = model.float()(x, targets=x, return_logits=True)  # every position's logits
    diff = (ours[..., :n_vocab] - theirs).abs().max().item()
    if diff > 1e-3:
        die(f"the exported model's logits differ from ours by {diff:.3g} on {len(ids)} tokens; "
            f"the export is wrong, please report it")
    check = f" | logits match ours to {diff:.1e} on {len(ids)} tokens"

if cfg.doc_mask:  # transformers' classes have no such mask; the first document of an input is the same either way
    print(f"note: the model was trained with doc_mask; transformers' {type(hf).__name__} attends across <|endoftext|>, "
          f"so its logits are ours one document at a time (pass one document per input)")
size = os.path.getsize(os.path.join(export_dir, 'model.safetensors'))
files = ', '.join(sorted(os.listdir(export_dir)))
print(f"export: {ckpt_path} iter {ck.get('iter_num')} ({model.num_params() / 1e6:.1f}M params, {dtype}, "
      f"{size / 1e6:.0f} MB) -> {export_dir} as {type(hf).__name__} [{files}]{check} | {time.time() - t_start:.1f}s")
