"""Shared test setup: offline tiktoken, the repo on sys.path, and fixtures made from real local code."""
import json
import os
import re
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# GPT-2's BPE file ships beside the checkout in our CI; elsewhere tiktoken downloads it as usual
_BPE_CACHE = os.path.join(ROOT, '..', 'shared', 'tiktoken_cache')
if os.path.isdir(_BPE_CACHE):
    os.environ.setdefault('TIKTOKEN_CACHE_DIR', os.path.abspath(_BPE_CACHE))
os.environ.setdefault('WANDB_MODE', 'offline')
# one thread per process: the suite runs a process per core (pytest-xdist) and tiny models gain nothing
# from a second thread, so threads would only contend; and kernels then split work the same way in
# every run, so resumed runs match bit for bit however busy the machine is
os.environ.setdefault('OMP_NUM_THREADS', '1')
STDLIB = sysconfig.get_paths()['stdlib']


def run_script(script, *args, cwd=ROOT, check=True, env=None, timeout=600):
    """Run one of the stage scripts as a user would; returns the CompletedProcess."""
    cmd = [sys.executable, os.path.join(ROOT, script), *map(str, args)]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def one_line_error(p, *needles):
    """A bad input's answer: non-zero exit, no traceback, one 'error:' line on stderr (tqdm's bars aside)
    holding every needle. Returns that line."""
    assert p.returncode != 0, p.stdout + p.stderr
    lines = [s for s in p.stderr.replace('\r', '\n').splitlines() if s.strip() and not re.match(r'[\w ]+: +\d+%\|', s)]
    assert len(lines) == 1 and lines[0].startswith('error:') and 'Traceback' not in p.stderr, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def after_config_line(stdout):
    """A script's stdout without the 'config: ...' line that echoes its overrides first."""
    return stdout.split('\n', 1)[1] if stdout.startswith('config: ') else stdout


TINY_ARGS = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50304, bias=False, dropout=0.0)


def tiny_checkpoint(path, seed=0, iter_num=7, best_val_loss=1e9, std=None, **fields):
    """A checkpoint file of a 2-layer, 32-wide GPT with seeded random weights; returns the model.
    std: re-draw the matrices at this scale (0.3 makes greedy output follow the prompt)."""
    import torch
    from codegpt.checkpoint import save_checkpoint
    from model import GPT, GPTConfig
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**TINY_ARGS))
    if std is not None:
        for p in model.parameters():
            if p.dim() >= 2:
                torch.nn.init.normal_(p, std=std)
    save_checkpoint({'model': model.state_dict(), 'model_args': TINY_ARGS, 'iter_num': iter_num,
                     'best_val_loss': best_val_loss, 'config': {}, **fields}, str(path))
    return model.eval()


def code_rows(roots=(STDLIB, '/usr/include'), per_language=30, max_bytes=40_000):
    """Real source files from this machine as github-code rows, a few per language, in a fixed order.

    repo_name is '<root>/<top-level folder>', so several files share a repository."""
    from codegpt.github_code import language_of
    from codegpt.local_source import walk_files
    rows, counts = [], {}
    for root in roots:
        for _, repo_name, _, path in walk_files(root, exclude=('__pycache__', 'site-packages')):
            lang = language_of(os.path.basename(path))
            if lang is None or counts.get(lang, 0) >= per_language or os.path.islink(path):
                continue
            try:
                data = open(path, 'rb').read()
                text = data.decode('utf-8')
            except (OSError, UnicodeDecodeError):
                continue
            if not text.strip() or len(data) > max_bytes:
                continue
            rel = os.path.relpath(path, root)
            rows.append(dict(content=text, repo_name=repo_name if os.sep in rel else f"{repo_name}/_top", path=rel,
                             license='mit', size=len(data)))
            counts[lang] = counts.get(lang, 0) + 1
    return rows


def write_parquet(path, rows, row_group_size=64):
    """Write rows in the dataset's raw schema (content, repo_name, path, license, size)."""
    from codegpt import github_code
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    github_code.write_parquet(path, rows, row_group_size=row_group_size)


VAL_LANGUAGES = ['Python', 'C', 'C++']  # each keeps its last documents for val
TINY_VAL_LANGUAGE = 'Shell'  # one short script: fewer tokens than block_size+1 at 1024


def make_token_dir(path, rows, encoding='r50k_base'):
    """A token directory in shards.py's format: 2 train shards, val files for a few languages."""
    import numpy as np
    from codegpt import shards
    from codegpt.github_code import language_of, language_slug
    enc = shards.get_encoding(encoding)
    os.makedirs(path)
    by_lang = {}
    for r in rows:
        by_lang.setdefault(language_of(r['path']), []).append(r['content'])
    train_docs, val_docs = [], {}
    for lang, docs in by_lang.items():
        if lang in VAL_LANGUAGES:
            train_docs += docs[:-4]
            val_docs[lang] = docs[-4:]
        elif lang == TINY_VAL_LANGUAGE:
            val_docs[lang] = docs
        else:
            train_docs += docs

    def encode(docs):
        out = []
        for d in docs:
            out += [shards.EOT] + enc.encode_ordinary(d)
        return np.array(out, dtype=shards.DTYPE)

    half = len(train_docs) // 2
    train = []
    for i, docs in enumerate([train_docs[:half], train_docs[half:]]):
        tokens = encode(docs)
        shards.save_shard(os.path.join(path, shards.train_name(i)), tokens)
        train.append({'file': shards.train_name(i), 'tokens': len(tokens)})
    val = []
    for lang, docs in val_docs.items():
        tokens = encode(docs)
        name = shards.val_name(language_slug(lang))
        shards.save_shard(os.path.join(path, name), tokens)
        val.append({'file': name, 'language': lang, 'tokens': len(tokens),
                    'bytes': sum(len(d.encode()) for d in docs), 'documents': len(docs)})
    manifest = {'encoding': encoding, 'eot': shards.EOT, 'vocab_size': enc.n_vocab,
                'dtype': 'uint16', 'train': train, 'val': val}
    with open(os.path.join(path, 'manifest.json'), 'w') as f:
        json.dump(manifest, f)
    return manifest


@pytest.fixture(scope='session')
def p50k_dir(tmp_path_factory):
    """A token directory of real local code in p50k_base tokens."""
    path = str(tmp_path_factory.mktemp('p50k') / 'tokens')
    make_token_dir(path, code_rows(), encoding='p50k_base')
    return path
