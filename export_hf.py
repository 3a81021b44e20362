"""
Export a checkpoint as a Hugging Face transformers GPT2LMHeadModel folder, so that anyone can load it with
    GPT2LMHeadModel.from_pretrained(folder) and AutoTokenizer.from_pretrained(folder)

Reads a checkpoint (out_dir/ckpt_best.pt by default). Writes export_dir with config.json,
model.safetensors, generation_config.json and the tokenizer of the checkpoint's encoding
(tokenizer.json, tokenizer_config.json, special_tokens_map.json), made offline from tiktoken's
ranks by transformers' tiktoken converter; it encodes exactly as tiktoken does, for r50k_base and
p50k_base alike. The folder is written beside its final name and swapped in, so it is never seen
half written.

The mapping: our nn.Linear weights are (out, in), HF's Conv1D are (in, out), so they are
transposed; the vocab padded to 50304 is cropped back to the encoding's 50257 or 50281 (the pad
rows are never a target); lm_head is tied to wte as in ours (or stored apart for tie_head=False); a
model trained with bias=False gets zero biases (LayerNorm without bias == LayerNorm with a zero
bias); activation 'gelu' is the exact erf GELU
of our nn.GELU() ('gelu_new', the tanh one, for a model started from OpenAI's weights);
layer_norm_epsilon 1e-5 is nn.LayerNorm's default. The mapping is pretrained.to_hf.

    python export_hf.py --out_dir=out                       # -> out/hf
    python export_hf.py --out_dir=out/ckpt.pt --export_dir=hf/gpt2-code --dtype=bfloat16
"""
import errno
import os
import shutil
import time

import torch

from codegpt.checkpoint import encoding_of, find_and_load
from codegpt.pretrained import to_hf
from codegpt.shards import EOT, get_encoding
from configurator import configure, die
from model import GPT

# -----------------------------------------------------------------------------
out_dir = 'out'  # checkpoint folder (or a .pt file)
ckpt = 'best'  # 'best' (ckpt_best.pt, else ckpt.pt) or 'latest' (ckpt.pt)
export_dir = ''  # the HF folder to write; '' = <checkpoint folder>/hf
dtype = 'float32'  # weights in model.safetensors: 'float32', 'bfloat16' or 'float16'
tokenizer = True  # also write GPT-2's tokenizer files
verify = True  # reload the folder with transformers and compare its logits with ours on real code
config = configure(globals())
# -----------------------------------------------------------------------------


def write_tokenizer(folder, enc, block_size):
    """tokenizer.json and tokenizer_config.json for the encoding, by transformers' own tiktoken
    converter (vocab and merges from tiktoken's ranks, the same split pattern, byte-level decoding)."""
    from transformers import GPT2TokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class FromRanks(TikTokenConverter):
        def load_tiktoken_bpe(self, _):  # the ranks tiktoken already loaded, instead of reading a file
            return {**enc._mergeable_ranks, b'<|endoftext|>': EOT}  # EOT in the vocab at its own id

    eot = '<|endoftext|>'
    converted = FromRanks(pattern=enc._pat_str, extra_special_tokens=[eot]).converted()
    tok = GPT2TokenizerFast(tokenizer_object=converted, bos_token=eot, eos_token=eot, unk_token=eot,
                            model_max_length=block_size, add_prefix_space=False)
    tok.save_pretrained(folder)


t_start = time.time()
try:
    from transformers import GPT2Config, GPT2LMHeadModel
except ImportError:
    die("export_hf.py needs transformers and safetensors: pip install transformers safetensors")
if dtype not in ('float32', 'bfloat16', 'float16'):
    die(f"dtype='{dtype}' is not 'float32', 'bfloat16' or 'float16'")

# ----------------------------------------------------------------------------- our model
ck, ckpt_path = find_and_load(out_dir, ckpt, 'cpu')
model = GPT.from_checkpoint(ck).eval()
cfg = model.config
enc = get_encoding(encoding_of(ck))  # the tokens it was trained on
n_vocab = enc.n_vocab  # 50257 (r50k_base) or 50281 (p50k_base): the padding rows are cropped
if cfg.vocab_size < n_vocab:
    die(f"{ckpt_path} has vocab_size {cfg.vocab_size} < {enc.name}'s {n_vocab}; it was not trained on those tokens")
if not export_dir:
    export_dir = os.path.join(os.path.dirname(ckpt_path), 'hf')
export_dir = export_dir.rstrip('/')
# an earlier export is replaced whole; anything else at that path is the user's: never moved or deleted
if os.path.lexists(export_dir) and not os.path.isdir(export_dir):
    die(f"export_dir '{export_dir}' is a file, not an export folder; pass --export_dir=<a new or export folder>")
if os.path.isdir(export_dir) and os.listdir(export_dir) and not os.path.isfile(os.path.join(export_dir, 'config.json')):
    die(f"export_dir '{export_dir}' holds files but no config.json, so it is not an earlier export; "
        f"pass --export_dir=<a new or export folder>")

# ----------------------------------------------------------------------------- the HF model
hf_config = GPT2Config(vocab_size=n_vocab, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                       n_head=cfg.n_head, n_inner=4 * cfg.n_embd, activation_function='gelu_new' if cfg.gelu == 'tanh' else 'gelu',
                       resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                       layer_norm_epsilon=1e-5, bos_token_id=EOT, eos_token_id=EOT, tie_word_embeddings=cfg.tie_head,
                       architectures=['GPT2LMHeadModel'])
hf = GPT2LMHeadModel(hf_config)
hf.load_state_dict(to_hf(model.state_dict(), cfg.n_layer, cfg.n_embd, n_vocab), strict=True)  # every key, every shape
hf.tie_weights()
hf = hf.to(getattr(torch, dtype)).eval()

# ----------------------------------------------------------------------------- write, then swap in
tmp = f"{export_dir}.tmp{os.getpid()}"
shutil.rmtree(tmp, ignore_errors=True)
os.makedirs(tmp)
try:
    try:
        hf.save_pretrained(tmp, safe_serialization=True)
        if tokenizer:
            write_tokenizer(tmp, enc, cfg.block_size)
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
    with open(os.path.abspath(__file__)) as f:  # some real code: this very file
        ids = [EOT] + enc.encode_ordinary(f.read())[:cfg.block_size - 1]
    x = torch.tensor([ids])
    loaded = GPT2LMHeadModel.from_pretrained(export_dir).float().eval()
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

if cfg.doc_mask:  # GPT2LMHeadModel has no such mask; the first document of an input is the same either way
    print("note: the model was trained with doc_mask; transformers' GPT-2 attends across <|endoftext|>, so its "
          "logits are ours one document at a time (pass one document per input)")
size = os.path.getsize(os.path.join(export_dir, 'model.safetensors'))
files = ', '.join(sorted(os.listdir(export_dir)))
print(f"export: {ckpt_path} iter {ck.get('iter_num')} ({model.num_params() / 1e6:.1f}M params, {dtype}, "
      f"{size / 1e6:.0f} MB) -> {export_dir} [{files}]{check} | {time.time() - t_start:.1f}s")
