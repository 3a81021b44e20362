"""Nothing lost: one run per out_dir at a time, a scratch run never replaces a run's checkpoints
unasked, and ckpt_best.pt is never older than the best step ckpt.pt records."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, STDLIB, code_rows, make_token_dir, one_line_error, run_script, write_parquet

TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--gradient_accumulation_steps=1', '--eval_iters=1', '--log_interval=1', '--compile=False',
        '--device=cpu', '--dtype=float32', '--warmup_iters=2']
ENV = {'OMP_NUM_THREADS': '1'}


@pytest.fixture(scope='module')
def token_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('tok') / 'tokens')
    make_token_dir(path, code_rows())
    return path


def read_log(out):
    with open(os.path.join(out, 'log.jsonl')) as f:
        return [json.loads(line) for line in f]


def snapshot(d):
    """Every file under d (its lock aside) and its bytes."""
    return {os.path.relpath(os.path.join(root, n), d): open(os.path.join(root, n), 'rb').read()
            for root, _, names in os.walk(d) for n in sorted(names) if n != '.lock'}


def test_a_second_train_run_into_the_same_out_dir_is_refused_naming_the_first(token_dir, tmp_path):
    out = tmp_path / 'out'
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), *TINY, f'--data_dir={token_dir}', f'--out_dir={out}',
           '--max_iters=100000', '--eval_interval=100000']
    first = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, **ENV})
    try:
        while first.poll() is None and not (out / 'log.jsonl').exists():
            time.sleep(0.05)
        second = run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--max_iters=2',
                            '--overwrite=True', check=False, env=ENV)
        one_line_error(second, str(out), f'pid {first.pid}')
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0
    starts = [e for e in read_log(out) if e['event'] == 'start']
    assert len(starts) == 1  # the refused run wrote nothing into the first one's log
    # the first run is gone: its lock goes with it, and a resume takes the folder over
    p = run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--eval_interval=100000',
                   '--init_from=resume', f'--max_iters={read_log(out)[-1]["iter"] + 1}', env=ENV)
    assert 'resuming' in p.stdout


def test_tokenize_and_download_refuse_a_folder_another_run_holds(tmp_path):
    parquet, tokens = tmp_path / 'parquet', tmp_path / 'tokens'
    write_parquet(str(parquet / 'part-0.parquet'), code_rows(per_language=3))
    for folder in (parquet, tokens):
        holder = subprocess.Popen([sys.executable, '-c', f"import sys, time; sys.path.insert(0, {ROOT!r}); "
                                   f"from codegpt.atomic import lock_dir; f = lock_dir({str(folder)!r}, 'test'); "
                                   f"print('held', flush=True); time.sleep(60)"],
                                  stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == 'held'
        try:
            if folder == parquet:
                p = run_script('download_github_code.py', '--source=local', f'--local_paths={STDLIB}/json',
                               f'--out_dir={parquet}', check=False)
            else:
                p = run_script('tokenize_github_code.py', f'--in_dir={parquet}', f'--out_dir={tokens}', check=False)
            one_line_error(p, str(folder), f'pid {holder.pid}', 'in use')
        finally:
            holder.kill()
            holder.wait()
    assert sorted(os.listdir(parquet)) == ['.lock', 'part-0.parquet']  # the download touched nothing
    assert os.listdir(tokens) == ['.lock']
    # the holder was killed (-9): its lock is free, and both stages run
    run_script('tokenize_github_code.py', f'--in_dir={parquet}', f'--out_dir={tokens}', '--val_fraction=0.5')
    assert os.path.isfile(tokens / 'manifest.json')


def test_a_scratch_run_over_a_finished_run_is_refused_until_asked(token_dir, tmp_path):
    out = tmp_path / 'out'
    run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--max_iters=4', '--eval_interval=2',
               env=ENV)
    before = snapshot(out)
    p = run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--max_iters=4', check=False, env=ENV)
    one_line_error(p, str(out / 'ckpt.pt'), '--init_from=resume', '--out_dir', '--overwrite=True')
    assert snapshot(out) == before  # checkpoints, log and plot untouched
    p = run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--max_iters=2', '--eval_interval=2',
                   '--overwrite=True', env=ENV)
    log = read_log(out)
    assert [e['event'] for e in log].count('start') == 1 and log[-1]['iter'] == 2  # a new run, a new log


def test_ckpt_best_is_written_before_ckpt_at_an_improving_eval(token_dir, tmp_path):
    """ckpt.pt records the new best step: were a kill to land between the two writes, the files left
    must be an old ckpt.pt (its resume redoes the eval) and a new ckpt_best.pt, never the reverse."""
    out = tmp_path / 'out'
    run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--max_iters=6', '--eval_interval=2',
               '--learning_rate=3e-3', env=ENV)
    writes = {}
    for e in read_log(out):
        if e['event'] == 'checkpoint':
            writes.setdefault(e['iter'], []).append(os.path.basename(e['path']))
    best_steps = [it for it, paths in writes.items() if 'ckpt_best.pt' in paths]
    assert best_steps and all(writes[it] == ['ckpt_best.pt', 'ckpt.pt'] for it in best_steps)


def damaged_copy(token_dir, dest, name, how):
    """A copy of token_dir whose file `name` is damaged in one way."""
    import shutil
    import numpy as np
    shutil.copytree(token_dir, dest)
    path = os.path.join(dest, name)
    tokens = np.load(path)
    if how == 'truncated':
        data = open(path, 'rb').read()
        open(path, 'wb').write(data[:len(data) // 2])
    elif how == 'random_bytes':
        open(path, 'wb').write(np.random.default_rng(0).bytes(4096))
    elif how == 'float64':
        np.save(path, tokens.astype(np.float64))
    elif how == '2d':
        np.save(path, tokens[:len(tokens) // 2 * 2].reshape(-1, 2))
    elif how == 'ids_beyond_vocab':
        np.save(path, np.full_like(tokens, 60000))
    elif how == 'count_mismatch':
        m = json.load(open(os.path.join(dest, 'manifest.json')))
        for e in m['train'] + m['val']:
            if e['file'] == name:
                e['tokens'] += 1
        json.dump(m, open(os.path.join(dest, 'manifest.json'), 'w'))
    return dest


@pytest.mark.parametrize('how, needle', [('truncated', 'not a readable .npy'), ('random_bytes', 'not a readable .npy'),
                                         ('float64', 'float64'), ('2d', 'shape'),
                                         ('ids_beyond_vocab', 'token id 60000'), ('count_mismatch', 'manifest.json says')])
def test_a_damaged_token_folder_is_one_line_naming_the_file_in_train_and_eval_bpb(token_dir, tmp_path, how, needle):
    from conftest import tiny_checkpoint
    bad = damaged_copy(token_dir, tmp_path / 'train_damaged', 'train_000000.npy', how)
    p = run_script('train.py', *TINY, f'--data_dir={bad}', f'--out_dir={tmp_path / "out"}', '--max_iters=2',
                   check=False, env=ENV)
    one_line_error(p, needle, 'train_000000.npy' if how != 'ids_beyond_vocab' else 'train shard 0', 'tokenize_github_code.py')
    assert not os.path.exists(tmp_path / 'out' / 'ckpt.pt')
    # eval_bpb reads the val files: the same damage there
    bad = damaged_copy(token_dir, tmp_path / 'val_damaged', 'val_python.npy', how)
    tiny_checkpoint(tmp_path / 'ckpt.pt')
    p = run_script('eval_bpb.py', f'--out_dir={tmp_path / "ckpt.pt"}', f'--data_dir={bad}', '--device=cpu',
                   '--max_tokens=500', check=False, env=ENV)
    one_line_error(p, 'val_python.npy', 'tokenize_github_code.py')


# --- a stage never writes into what is not its own ----------------------------------------------

def test_a_scratch_run_over_a_folder_holding_only_ckpt_best_is_refused(token_dir, tmp_path):
    out = tmp_path / 'out'
    run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--max_iters=2', '--eval_interval=2',
               env=ENV)
    os.remove(out / 'ckpt.pt')  # the best model alone, say the one a user kept
    best = (out / 'ckpt_best.pt').read_bytes()
    p = run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--max_iters=2', check=False, env=ENV)
    one_line_error(p, str(out / 'ckpt_best.pt'), '--overwrite=True')
    assert (out / 'ckpt_best.pt').read_bytes() == best


def test_export_replaces_only_its_own_export_and_clears_a_killed_ones_leftovers(tmp_path):
    pytest.importorskip('transformers')
    from conftest import tiny_checkpoint
    tiny_checkpoint(tmp_path / 'ckpt.pt')
    args = [f'--out_dir={tmp_path / "ckpt.pt"}', '--verify=False', '--tokenizer=False']
    mine = tmp_path / 'mine'  # a user's folder with a config.json: not an export
    mine.mkdir()
    (mine / 'config.json').write_text('{}')
    (mine / 'important.txt').write_text('x\n')
    one_line_error(run_script('export_hf.py', *args, f'--export_dir={mine}', check=False), str(mine), 'not an earlier export')
    assert sorted(os.listdir(mine)) == ['config.json', 'important.txt']
    # an export is replaced; an export with a user's file added is not
    hf = tmp_path / 'hf'
    run_script('export_hf.py', *args, f'--export_dir={hf}')
    assert json.load(open(hf / 'export.json'))['made_by'] == 'export_hf.py'
    run_script('export_hf.py', *args, f'--export_dir={hf}')
    (hf / 'notes.md').write_text('mine\n')
    one_line_error(run_script('export_hf.py', *args, f'--export_dir={hf}', check=False), 'notes.md', 'no export writes')
    assert (hf / 'notes.md').read_text() == 'mine\n'
    # what a kill -9 mid-export leaves beside the folder goes with the next run, and nothing else does
    os.remove(hf / 'notes.md')
    for junk in ('hf.tmp4242', 'hf.old4243'):
        (tmp_path / junk).mkdir()
        (tmp_path / junk / 'model.safetensors').write_bytes(b'half')
    (tmp_path / 'hf.tmpx').mkdir()  # not a name an export makes
    run_script('export_hf.py', *args, f'--export_dir={hf}')
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pt', 'hf', 'hf.tmpx', 'mine']


def test_each_stage_refuses_another_stages_folder_and_names_it(token_dir, tmp_path):
    parquet = tmp_path / 'parquet'
    run_script('download_github_code.py', '--source=local', f'--local_paths={STDLIB}/json', f'--out_dir={parquet}')
    tokens = tmp_path / 'tokens'
    run_script('tokenize_github_code.py', f'--in_dir={parquet}', f'--out_dir={tokens}', '--val_fraction=0.5')
    before = {d: snapshot(d) for d in (parquet, tokens)}
    one_line_error(run_script('download_github_code.py', '--source=local', f'--local_paths={STDLIB}/json',
                              f'--out_dir={tokens}', check=False), str(tokens), 'tokenize_github_code.py')
    p = run_script('tokenize_github_code.py', f'--in_dir={parquet}', f'--out_dir={parquet}', check=False)
    line = one_line_error(p, str(parquet), 'download_github_code.py')
    assert 'delete' not in line  # never advice that would destroy a download
    one_line_error(run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={tokens}', '--max_iters=1',
                              check=False, env=ENV), str(tokens), 'tokenize_github_code.py')
    assert {d: snapshot(d) for d in (parquet, tokens)} == before
