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

The encoding is tiktoken's r50k_base (GPT-2's BPE), p50k_base (Codex's: the same BPE plus 24
tokens for runs of 2 to 25 spaces, ids 50257-50280) or p50k_edit (p50k_base plus the three
fill-in-the-middle sentinels, 50281-50283; ordinary text encodes as in p50k_base). All keep
<|endoftext|> at 50256 and fit uint16 and the 50304-row padded embedding. The manifest says which;
every later stage reads it from there (train.py) or from the checkpoint's 'encoding' key (sample,
evals, export).
"""
import functools
import json
import math
import os

import numpy as np

from codegpt.atomic import atomic_path
from codegpt.errors import NetworkError, UserError

ENCODINGS = ('r50k_base', 'p50k_base', 'p50k_edit')  # tiktoken's: GPT-2's BPE, Codex's with runs of spaces, and that with FIM sentinels
DEFAULT_ENCODING = 'r50k_base'  # the reference run's, and that of every file made before the key existed
EOT = 50256  # <|endoftext|> in both
DTYPE = np.uint16


def get_encoding(name):
    if name not in ENCODINGS:
        raise UserError(f"encoding '{name}' is not one of {', '.join(ENCODINGS)}")
    import tiktoken  # imported late: train.py's workers never need it
    try:
        return tiktoken.get_encoding(name)
    except OSError as e:  # tiktoken fetches its BPE file on first use; offline that is a requests error
        if type(e).__module__.split('.')[0] not in ('requests', 'urllib3'):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise NetworkError(f"tiktoken cannot download the {name} BPE file ({type(e).__name__}: {first}); connect once "
                           f"(it is cached after), or set TIKTOKEN_CACHE_DIR to a folder that holds the file") from e


def token_byte_lengths(enc):
    """(n_vocab,) int64: the UTF-8 bytes each token stands for; special tokens (<|endoftext|>, which
    separates documents, and the FIM sentinels) are no byte of the text (for bits per byte)."""
    special = set(enc._special_tokens.values())
    return np.array([0 if i in special else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)],
                    dtype=np.int64)


def text_vocab(enc):
    """How many ids a sampler may emit: those below the first special token after <|endoftext|> (the
    FIM sentinels of p50k_edit are control tokens, never text), else the encoding's whole vocabulary."""
    return min([i for i in enc._special_tokens.values() if i > EOT], default=enc.n_vocab)


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
        raise UserError(f"data_dir '{data_dir}' does not exist; make it with tokenize_github_code.py "
                        f"(--out_dir={data_dir}) or pass --data_dir=<a token directory>")
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing; '{data_dir}' is not a finished token directory "
                        f"(rerun tokenize_github_code.py --out_dir={data_dir})")
    fix = f"remake the folder with tokenize_github_code.py --out_dir={data_dir}"
    try:
        with open(path, encoding='utf-8') as f:
            m = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not JSON ({str(e).splitlines()[0][:100]}); {fix}")
    if not isinstance(m, dict):
        raise UserError(f"{path} holds a {type(m).__name__}, not a token manifest; {fix}")
    for key in ('encoding', 'eot', 'train', 'val'):
        if key not in m:
            raise UserError(f"{path} has no '{key}' entry; {fix}")
    # every entry as train.py and the evals read it: a list of {file, tokens[, language, bytes]}
    fields = {'train': {'file': str, 'tokens': int}, 'val': {'file': str, 'tokens': int, 'language': str, 'bytes': int}}
    for split, need in fields.items():
        if not isinstance(m[split], list):
            raise UserError(f"{path}: '{split}' is {json.dumps(m[split])[:40]}, not a list of files; {fix}")
        for i, e in enumerate(m[split]):
            bad = [k for k, t in need.items() if not isinstance(e, dict) or not isinstance(e.get(k), t)
                   or isinstance(e.get(k), bool)]
            if bad:
                raise UserError(f"{path}: {split} entry {i} has no {bad[0]!r} of type {need[bad[0]].__name__} "
                                f"({json.dumps(e)[:60]}); {fix}")
    return m


def open_shards(data_dir):
    """Memory-map every shard once: (manifest, [train arrays], {language: val array}).

    What is cheap is checked here, so a damaged folder is one line naming the file: each shard is
    a readable .npy, 1-D uint16, as long as the manifest says; the val sets (small) hold no id
    beyond the encoding's vocabulary. train.py checks each train batch's ids as it draws it."""
    m = load_manifest(data_dir)
    fix = f"remake the folder with tokenize_github_code.py --out_dir={data_dir}"
    def mmap(entry):
        p = os.path.join(data_dir, entry['file'])
        if not os.path.isfile(p):
            raise UserError(f"{p} is listed in manifest.json but missing; {fix}")
        try:
            # a plain ndarray view of the memory map: slicing a np.memmap builds a memmap object
            # per slice, which made get_batch several times slower on the host
            a = np.load(p, mmap_mode='r').view(np.ndarray)
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{p} is not a readable .npy shard ({type(e).__name__}: {str(e).splitlines()[0][:120]}); {fix}")
        if a.dtype != DTYPE or a.ndim != 1:
            raise UserError(f"{p} holds a {a.dtype} array of shape {a.shape}, not 1-D {np.dtype(DTYPE).name} tokens; {fix}")
        if len(a) != entry['tokens']:
            raise UserError(f"{p} has {len(a):,} tokens but manifest.json says {entry['tokens']:,}; {fix}")
        return a
    train = [mmap(e) for e in m['train']]
    val = {e['language']: mmap(e) for e in m['val']}
    n_vocab = m.get('vocab_size') or get_encoding(m['encoding']).n_vocab
    for e in m['val']:
        top = int(val[e['language']].max(initial=0))
        if top >= n_vocab:
            raise UserError(f"{os.path.join(data_dir, e['file'])} holds token id {top}, beyond {m['encoding']}'s {n_vocab}; {fix}")
    return m, train, val


def window_starts(shards, block_size):
    """Cumulative count of valid window starts per shard (a window is block_size+1 tokens)."""
    counts = np.array([max(len(s) - block_size, 0) for s in shards], dtype=np.int64)
    return np.cumsum(counts)


def epoch_windows(cum_starts, block_size):
    """sampling='epoch': cumulative count of the windows each shard is cut into (at 0, T, 2T, ...)."""
    return np.cumsum(-(-np.diff(cum_starts, prepend=0) // block_size))  # ceil(starts / T) per shard


def doc_tiles(shards, block_size):
    """sampling='doc': (cum, starts), the windows every shard is cut into: one at each document's
    <|endoftext|>, then one every block_size tokens on through a document longer than a window, so a
    document's first window sees it from its start and every token is an input at least once an
    epoch (but a shard's last few, where a whole window no longer fits). starts (n,) int64 holds the windows' offsets in their shards, shard by shard; cum
    (n_shards,) their cumulative count per shard."""
    cum, starts = [], []
    for s in shards:
        d = np.flatnonzero(s == EOT)  # (docs,) every document opens with one
        d = d if len(d) and d[0] == 0 else np.concatenate(([0], d))  # text before a shard's first EOT, if any
        n = -(-np.diff(d, append=len(s)) // block_size)  # (docs,) windows per document
        first = np.repeat(np.cumsum(n) - n, n)  # (windows,) index of its document's first window
        w = np.repeat(d, n) + block_size * (np.arange(n.sum()) - first)
        starts.append(w[w + block_size + 1 <= len(s)])  # a window is block_size+1 tokens
        cum.append(len(starts[-1]))
    return np.cumsum(cum), np.concatenate(starts).astype(np.int64)


@functools.lru_cache(maxsize=4)  # a step may straddle two epochs; train.py's train-loss estimate has a stream too
def epoch_order(seed, epoch, n):
    """The order in which epoch `epoch` visits its n windows: a permutation keyed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch, n]).permutation(n).astype(np.int32 if n < 2**31 else np.int64)


def get_batch(shards, cum_starts, seed, step, rows, step_rows, block_size, out=None, n_vocab=None, sampling='random',
              tiles=None):
    """Rows `rows` (a range) of step `step`'s batch of `step_rows` windows: (len(rows), block_size+1) int64,
    written into `out` when given (train.py passes a pinned buffer, saving a copy). With n_vocab, an id
    at or beyond it (a damaged shard) exits naming the shard instead of failing inside torch.

    sampling='random' (nanoGPT's): every start position in every shard is equally likely, so shards
    are drawn in proportion to their length, with replacement. sampling='epoch': each shard is cut
    into windows at 0, block_size, 2*block_size, ... (each token an input once), and the run walks
    through all of them in one order per epoch, so no window comes twice before every one has come.
    sampling='doc': the same walk over doc_tiles' windows (`tiles`, made once by the caller), which
    start at documents' starts instead of at multiples of block_size.
    Either way the draw depends on (seed, step) alone and covers the whole step's batch, so a step
    sees the same windows however it is split into micro-batches and DDP ranks (4 x 8 on one GPU,
    32 x 1, or 2 ranks x 16), and a resumed run draws exactly the batches the uninterrupted run would.
    """
    if sampling in ('epoch', 'doc'):
        cum_windows = epoch_windows(cum_starts, block_size) if sampling == 'epoch' else tiles[0]
        n = int(cum_windows[-1])
        pos = step * step_rows + np.arange(rows.start, rows.stop)  # places in the run's sequence of windows
        w = np.array([epoch_order(seed, int(e), n)[p] for e, p in zip(pos // n, pos % n)], dtype=np.int64)
        which = np.searchsorted(cum_windows, w, side='right')  # shard of each window
        if sampling == 'epoch':
            local = (w - np.concatenate(([0], cum_windows[:-1]))[which]) * block_size
        else:
            local = tiles[1][w]
    else:
        rng = np.random.default_rng([seed, step])
        g = rng.integers(0, cum_starts[-1], size=step_rows)[rows.start:rows.stop]  # global start ids
        which = np.searchsorted(cum_starts, g, side='right')  # shard of each start
        local = g - np.concatenate(([0], cum_starts[:-1]))[which]
    if out is None:
        out = np.empty((len(which), block_size + 1), dtype=np.int64)
    assert out.shape == (len(which), block_size + 1), (out.shape, len(which), block_size)
    for b in range(len(which)):
        out[b] = shards[which[b]][local[b]:local[b] + block_size + 1]
    if n_vocab is not None and out.max(initial=0) >= n_vocab:  # ~10 us a micro-batch
        b = int(np.argmax(out.max(axis=1) >= n_vocab))
        raise UserError(f"train shard {which[b]} ({train_name(which[b])}) holds token id {int(out[b].max())} at position "
                        f"{local[b]}, beyond the vocabulary's {n_vocab}: the file is damaged; remake the token folder "
                        f"with tokenize_github_code.py")
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
