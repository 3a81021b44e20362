"""
The token shard format: how the tokenize stage hands tokens to train.py, sample.py and the evals.

A token directory holds
    train_000000.npy, train_000001.npy, ...   1-D uint16 arrays (np.save), documents of every language
    val_<language>.npy                        1-D uint16, one per language, e.g. val_python.npy
    manifest.json                             what is in the files (see below)
Every document is preceded by <|endoftext|> (50256), so a window never starts mid-nothing and
the model learns where files begin. The manifest holds at least:
    {"encoding": "r50k_base", "eot": 50256, "vocab_size": 50257, "dtype": "uint16",
     "train": [{"file": "train_000000.npy", "tokens": N}, ...],
     "val": [{"file": "val_python.npy", "language": "Python", "tokens": N, "bytes": B}, ...]}
where a val entry's bytes are the UTF-8 bytes of its documents (for bits per byte).

The encoding is tiktoken's r50k_base (GPT-2's BPE) or p50k_base (Codex's: the same BPE plus 24
tokens for runs of 2 to 25 spaces, ids 50257-50280). Both keep <|endoftext|> at 50256 and fit
uint16 and the 50304-row padded embedding. The manifest says which; every later stage reads it
from there (train.py) or from the checkpoint's 'encoding' key (sample, evals, export).
"""
import json
import math
import os

import numpy as np

from atomic import atomic_path

ENCODINGS = ('r50k_base', 'p50k_base')  # tiktoken's names: GPT-2's BPE, and Codex's with runs of spaces
DEFAULT_ENCODING = 'r50k_base'  # the reference run's, and that of every file made before the key existed
EOT = 50256  # <|endoftext|> in both
DTYPE = np.uint16


def get_encoding(name):
    if name not in ENCODINGS:
        raise SystemExit(f"error: encoding '{name}' is not one of {', '.join(ENCODINGS)}")
    import tiktoken  # imported late: train.py's workers never need it
    return tiktoken.get_encoding(name)


def token_byte_lengths(enc):
    """(n_vocab,) int64: the UTF-8 bytes each token stands for; <|endoftext|> separates documents
    and is no byte of them (for bits per byte)."""
    return np.array([0 if i == EOT else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)],
                    dtype=np.int64)


def train_name(index):
    return f"train_{index:06d}.npy"


def val_name(slug):
    return f"val_{slug}.npy"


def save_shard(path, tokens):
    tokens = np.asarray(tokens)
    assert tokens.dtype == DTYPE and tokens.ndim == 1, (tokens.dtype, tokens.shape)
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            np.save(f, tokens)


def load_manifest(data_dir):
    path = os.path.join(data_dir, 'manifest.json')
    if not os.path.isdir(data_dir):
        raise SystemExit(f"error: data_dir '{data_dir}' does not exist; make it with tokenize_github_code.py "
                         f"(--out_dir={data_dir}) or pass --data_dir=<a token directory>")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path} is missing; '{data_dir}' is not a finished token directory "
                         f"(rerun tokenize_github_code.py --out_dir={data_dir})")
    with open(path) as f:
        m = json.load(f)
    for key in ('encoding', 'eot', 'train', 'val'):
        if key not in m:
            raise SystemExit(f"error: {path} has no '{key}' entry; remake it with tokenize_github_code.py")
    return m


def open_shards(data_dir):
    """Memory-map every shard once: (manifest, [train arrays], {language: val array})."""
    m = load_manifest(data_dir)
    def mmap(name):
        p = os.path.join(data_dir, name)
        if not os.path.isfile(p):
            raise SystemExit(f"error: {p} is listed in manifest.json but missing; rerun tokenize_github_code.py")
        # a plain ndarray view of the memory map: slicing a np.memmap builds a memmap object per
        # slice, which made get_batch ~2.5x slower on the host
        return np.load(p, mmap_mode='r').view(np.ndarray)
    train = [mmap(e['file']) for e in m['train']]
    val = {e['language']: mmap(e['file']) for e in m['val']}
    return m, train, val


def window_starts(shards, block_size):
    """Cumulative count of valid window starts per shard (a window is block_size+1 tokens)."""
    counts = np.array([max(len(s) - block_size, 0) for s in shards], dtype=np.int64)
    return np.cumsum(counts)


def get_batch(shards, cum_starts, seed, step, rows, step_rows, block_size, out=None):
    """Rows `rows` (a range) of step `step`'s batch of `step_rows` windows: (len(rows), block_size+1) int64,
    written into `out` when given (train.py passes a pinned buffer, saving a copy).

    Every start position in every shard is equally likely, so shards are drawn in proportion
    to their length. The generator is keyed by (seed, step) alone and always draws the whole
    step's batch, so a step sees the same windows however it is split into micro-batches and
    DDP ranks (4 x 8 on one GPU, 32 x 1, or 2 ranks x 16), and a resumed run draws exactly
    the batches the uninterrupted run would.
    """
    rng = np.random.default_rng([seed, step])
    g = rng.integers(0, cum_starts[-1], size=step_rows)[rows.start:rows.stop]  # global start ids
    which = np.searchsorted(cum_starts, g, side='right')  # shard of each start
    local = g - np.concatenate(([0], cum_starts[:-1]))[which]
    if out is None:
        out = np.empty((len(g), block_size + 1), dtype=np.int64)
    assert out.shape == (len(g), block_size + 1), (out.shape, len(g), block_size)
    for b in range(len(g)):
        out[b] = shards[which[b]][local[b]:local[b] + block_size + 1]
    return out


def val_windows(tokens, block_size, max_windows):
    """The fixed, non-overlapping, evenly spaced windows of one val set: (n, block_size+1) int64."""
    n = min(max_windows, len(tokens) // (block_size + 1))
    if n == 0:
        return np.empty((0, block_size + 1), dtype=np.int64)
    stride = len(tokens) // n  # >= block_size+1, so windows never overlap
    return np.stack([np.asarray(tokens[i * stride:i * stride + block_size + 1], dtype=np.int64) for i in range(n)])


def bits_per_byte(loss, tokens, nbytes):
    """Mean loss in nats per token -> bits per UTF-8 byte of text (tokenizer-independent)."""
    return loss * tokens / nbytes / math.log(2)
