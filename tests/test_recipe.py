"""The fast recipe (config/train_github_code_124m_fast.py) at a tiny size: Muon + AdamW, the
warmup-stable-decay schedule, zero-initialised projections (an option) and the training-seconds budget keep
what train.py promises (exact resume, DDP equivalence, export)."""
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from codegpt.checkpoint import load_checkpoint
from conftest import ROOT, one_line_error, run_script

FAST = os.path.join(ROOT, 'config', 'train_github_code_124m_fast.py')
# the fast config with the model and batch shrunk for a 2-core CPU; its optimizer and schedule stay
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--gradient_accumulation_steps=2', '--eval_iters=2', '--log_interval=1', '--compile=False',
        '--device=cpu', '--dtype=float32', '--warmup_iters=2', '--wandb_log=False']
ENV = {'OMP_NUM_THREADS': '1', 'PYTHONIOENCODING': 'utf-8'}


def fast(data, out, *args, check=True):
    return run_script('train.py', FAST, *TINY, f'--data_dir={data}', f'--out_dir={out}', *args, check=check, env=ENV)


def read_log(out):
    with open(os.path.join(out, 'log.jsonl')) as f:
        return [json.loads(line) for line in f]


def test_fast_config_trains_resumes_bit_identically_and_exports(p50k_dir, tmp_path):
    whole, split = tmp_path / 'whole', tmp_path / 'split'
    args = ['--max_iters=20', '--eval_interval=10', '--dropout=0.1']
    fast(p50k_dir, whole, *args)
    ck = load_checkpoint(whole / 'ckpt.pt')
    assert ck['config']['optimizer'] == 'muon' and ck['muon'] is not None and ck['encoding'] == 'p50k_base'
    evals = [e for e in read_log(whole) if e['event'] == 'eval']
    assert evals[-1]['val_loss'] < evals[0]['val_loss']
    # the schedule depends on max_iters, so interrupt a run of the same length: SIGTERM mid-run
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), FAST, *TINY, f'--data_dir={p50k_dir}', f'--out_dir={split}', *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **ENV})
    log = split / 'log.jsonl'
    while proc.poll() is None and not (log.exists() and any(e['event'] == 'train' for e in read_log(split))):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    stopped = [e for e in read_log(split) if e['event'] == 'stopped']
    assert stopped and 0 < stopped[0]['iter'] < 20
    fast(p50k_dir, split, *args, '--init_from=resume')
    resumed = load_checkpoint(split / 'ckpt.pt')
    assert all(torch.equal(ck['model'][k], resumed['model'][k]) for k in ck['model'])
    # Muon's momentum buffers came back too: the next step would match as well
    a, b = ck['muon']['state'], resumed['muon']['state']
    assert a.keys() == b.keys() and all(torch.equal(a[k]['momentum_buffer'], b[k]['momentum_buffer']) for k in a)
    pytest.importorskip('transformers')
    p = run_script('export_hf.py', f'--out_dir={whole}', '--ckpt=latest', env=ENV)
    assert 'logits match ours' in p.stdout


def test_zero_init_projections_start_each_block_as_the_identity(p50k_dir, tmp_path):
    fast(p50k_dir, tmp_path / 'o', '--max_iters=0', '--zero_init_proj=True')
    sd = load_checkpoint(tmp_path / 'o' / 'ckpt.pt')['model']
    proj = [k for k in sd if k.endswith('c_proj.weight')]
    assert len(proj) == 4 and all(not sd[k].any() for k in proj)
    assert sd['transformer.h.0.attn.c_attn.weight'].std() > 0.01


def test_doc_mask_trains_and_a_resume_keeps_it_from_the_checkpoint(p50k_dir, tmp_path):
    out = tmp_path / 'o'
    fast(p50k_dir, out, '--max_iters=4', '--eval_interval=2', '--doc_mask=True')
    first = load_checkpoint(out / 'ckpt.pt')
    assert first['model_args']['doc_mask'] is True and first['iter_num'] == 4
    fast(p50k_dir, out, '--max_iters=6', '--eval_interval=2', '--init_from=resume')  # doc_mask not passed again
    again = load_checkpoint(out / 'ckpt.pt')
    assert again['model_args']['doc_mask'] is True and again['iter_num'] == 6
    evals = [e for e in read_log(out) if e['event'] == 'eval']
    assert all(math.isfinite(e['val_loss']) for e in evals) and evals[-1]['val_loss'] < evals[0]['val_loss']
    one_line_error(fast(p50k_dir, out, '--init_from=resume', '--max_iters=8', '--doc_mask=False', check=False),
                   'another shape', 'doc_mask=True (config: False)')
    one_line_error(fast(p50k_dir, tmp_path / 'd', '--doc_mask=True', '--dropout=0.1', check=False), 'doc_mask', 'dropout')


def test_wsd_schedule_decays_linearly_to_its_end_value_at_max_iters(p50k_dir, tmp_path):
    # 10 steps: 2 of warmup, flat, then the last half (steps 5..10) a straight line from 1e-3 to 0
    fast(p50k_dir, tmp_path / 'o', '--max_iters=10', '--eval_interval=100', '--learning_rate=1e-3',
         '--muon_lr=0.05', '--cooldown_frac=0.5', '--min_lr=0.0')
    trains = [e for e in read_log(tmp_path / 'o') if e['event'] == 'train']
    assert all(e['mfu'] is None for e in trains)  # no known peak on a CPU, whatever the schedule's names
    lrs = {e['iter']: e['lr'] for e in trains}
    expected = [1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3, 1e-3, 1e-3, 8e-4, 6e-4, 4e-4, 2e-4]  # and 0 at step 10
    assert np.allclose([lrs[i] for i in range(10)], expected, rtol=1e-9, atol=1e-15)
    ck = load_checkpoint(tmp_path / 'o' / 'ckpt.pt')
    # Muon follows the same shape at its own peak: the last step ran at 0.2 of it
    assert math.isclose(ck['muon']['param_groups'][0]['lr'], 0.05 * 0.2, rel_tol=1e-9)
    assert all(math.isclose(g['lr'], 2e-4, rel_tol=1e-9) for g in ck['optimizer']['param_groups'])


def test_cosine_schedule_reaches_min_lr_at_lr_decay_iters(p50k_dir, tmp_path):
    fast(p50k_dir, tmp_path / 'o', '--max_iters=8', '--eval_interval=100', '--lr_schedule=cosine', '--learning_rate=1e-3',
         '--min_lr=1e-4', '--lr_decay_iters=6', '--warmup_iters=1')
    lrs = {e['iter']: e['lr'] for e in read_log(tmp_path / 'o') if e['event'] == 'train'}
    assert math.isclose(lrs[1], 1e-3) and math.isclose(lrs[6], 1e-4) and math.isclose(lrs[7], 1e-4)
    assert math.isclose(lrs[3], 1e-4 + 0.5 * (1 + math.cos(math.pi * 2 / 5)) * 9e-4)


def test_two_gloo_ranks_with_muon_match_one_process(p50k_dir, tmp_path):
    args = [FAST, *TINY, f'--data_dir={p50k_dir}', '--max_iters=4', '--eval_interval=4', '--gradient_accumulation_steps=4']
    one, two = tmp_path / 'one', tmp_path / 'two'
    run_script('train.py', *args, f'--out_dir={one}', env=ENV)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           os.path.join(ROOT, 'train.py'), *args, f'--out_dir={two}']
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **ENV})
    assert p.returncode == 0, p.stdout + p.stderr
    la = {e['iter']: e['loss'] for e in read_log(one) if e['event'] == 'train'}
    lb = {e['iter']: e['loss'] for e in read_log(two) if e['event'] == 'train'}
    assert sorted(la) == sorted(lb) == [0, 1, 2, 3]
    assert np.allclose([la[i] for i in la], [lb[i] for i in la], rtol=1e-5, atol=1e-6), (la, lb)
    ca, cb = load_checkpoint(one / 'ckpt.pt'), load_checkpoint(two / 'ckpt.pt')
    # Muon orthogonalises in bfloat16 (8 mantissa bits): a gradient summed in another order (gloo) can
    # round the other way there, which moved these tiny matrices by up to 1.4% of their norm in 4
    # steps; one rank's half-batch gradient alone moves them by 23-48%. The rest (AdamW) stays ~1e-4
    for k in ca['model']:
        rel = ((ca['model'][k] - cb['model'][k]).norm() / ca['model'][k].norm()).item()
        assert rel < (0.04 if k.startswith('transformer.h.') and ca['model'][k].dim() == 2 else 1e-3), (k, rel)


def test_max_seconds_ends_the_run_on_its_budget_with_the_schedule_fitted_to_it(p50k_dir, tmp_path):
    out = tmp_path / 'o'
    p = fast(p50k_dir, out, '--max_seconds=4', '--max_iters=1000', '--eval_interval=500')
    log = read_log(out)
    end = next(e for e in log if e['event'] == 'end')
    assert end['reason'] == 'max_seconds' and 4 <= end['train_seconds'] < 6 and 'done (max_seconds)' in p.stdout
    evals = [e for e in log if e['event'] == 'eval']
    assert len(evals) == 3  # at 0, at half the budget, at its end
    assert evals[1]['train_seconds'] >= 2 and evals[-1]['train_seconds'] >= 4
    trains = [e for e in log if e['event'] == 'train']
    assert trains[-1]['lr'] < 0.25 * 1.8e-3  # the last step sits in the decay's last quarter (10% of the budget)
    p = fast(p50k_dir, tmp_path / 'd', '--max_seconds=4', check=False)
    assert p.returncode == 0  # a budget alone (no other change) is valid


def bench(work, *args, check=True):
    """bench/recipe.py on three stdlib packages ('email' held out for val), a 2-layer model, in steps:
    on a CPU the same flags give the same curves, so calls can be compared."""
    from conftest import STDLIB
    local = ','.join(os.path.join(STDLIB, p) for p in ('json', 'email', 'logging'))
    return run_script('bench/recipe.py', '--unit=steps', '--budgets=[6]', '--evals=2', '--warmup_floor=2',
                      '--tuned_rates=[1.2e-3]', f'--local_paths={local}', f'--work_dir={work}', '--val_fraction=0.15',
                      '--micro_batch=4', '--extra=--compile=False --device=cpu --dtype=float32 --n_layer=2 --n_head=2 '
                      '--n_embd=32 --block_size=32', *args, check=check, env=ENV)


def report_lines(stdout):
    """The report, from its first budget header on, with the rate column (the one timing figure) blanked."""
    lines = stdout[stdout.index('budget '):].splitlines()[:-1]  # the last line holds the call's seconds
    return [re.sub(r' [\d,]+ (\d+) ', r' - \1 ', ' '.join(line.split())) for line in lines]


def test_bench_recipe_split_over_calls_reports_as_one_call_and_never_mixes_runs(tmp_path):
    one, split = tmp_path / 'one', tmp_path / 'split'
    p = bench(one)
    assert '3 runs in all: 0 finished or left to another call, 3 to run now' in p.stdout
    whole = report_lines(p.stdout)
    # the same benchmark in two calls, the corpus carried over as a fresh machine rebuilds it
    for corpus in ('parquet', 'tokens-r50k_base', 'tokens-p50k_base'):
        shutil.copytree(one / corpus, split / corpus)
    p1 = bench(split, "--runs=['reference@*', 'wsd*']")
    assert '2 to run now' in p1.stdout and '2/3 runs measured (1 to go' in p1.stdout.splitlines()[-1]
    p2 = bench(split)
    assert '2 finished or left to another call, 1 to run now' in p2.stdout and 'run 1/1 fast@6 steps#0' in p2.stdout
    assert report_lines(p2.stdout) == whole
    # a third call trains nothing, and --report prints the same table from the saved curves
    p3 = bench(split, '--report=True')
    assert 'run 1/' not in p3.stdout and report_lines(p3.stdout) == whole
    saved = [json.loads(l) for l in open(split / 'curves.jsonl')]
    assert sorted(c['name'] for c in saved) == ['fast@6 steps#0', 'reference@6 steps#0', 'wsd-0.0012@6 steps#0']
    assert all(len(c['curve']) == 3 and c['device'] == 'cpu' for c in saved)  # step 0, half the budget, the end
    ref = next(c for c in saved if c['recipe'] == 'reference')
    assert '--min_warmup_iters=2' in ref['flags'] and '--max_iters=6' in ref['flags']
    fast_row = next(l for l in whole if l.startswith('fast '))
    assert fast_row.split()[-2].endswith('x') and fast_row.split()[-1].endswith('x')  # vs both baselines
    assert next(l for l in whole if l.startswith('reference ')).split()[-2] == '1.00x'  # itself, at its end
    assert (split / 'recipe.png').stat().st_size > 1000 and (split / 'recipe_speedup.png').stat().st_size > 1000
    # a saved run asked for again with other flags is refused, not mixed
    before = (split / 'curves.jsonl').read_bytes()
    p = bench(split, '--warmup_floor=3', check=False)
    one_line_error_in(p, "reference@6 steps#0", 'other train.py flags', '--work_dir')
    assert (split / 'curves.jsonl').read_bytes() == before


def one_line_error_in(p, *needles):
    assert p.returncode != 0, p.stdout
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith('error:') and all(n in lines[0] for n in needles), p.stderr


def test_bench_recipe_refuses_bad_runs_before_any_work(tmp_path):
    for bad, needle in ((["--fast=", "--ablate=['fast --zero_init_proj=False']"], "pass --fast="),
                        (["--ablate=['cl100k_base']"], "'cl100k_base' is not"), (['--budgets=[]'], 'budgets=[]'),
                        (['--unit=hours'], "unit='hours'")):
        p = run_script('bench/recipe.py', f'--work_dir={tmp_path / "never"}', *bad, check=False)
        one_line_error_in(p, needle)
        assert not (tmp_path / 'never').exists()


def test_the_warmup_is_never_shorter_than_min_warmup_iters_steps(p50k_dir, tmp_path):
    # a budget of 20 steps on a schedule whose warmup is 1% of it: the floor stretches the warmup to 8 steps
    fast(p50k_dir, tmp_path / 'o', '--max_iters=20', '--warmup_iters=0', '--min_warmup_iters=8', '--eval_interval=20')
    lrs = [e['lr'] for e in read_log(tmp_path / 'o') if e['event'] == 'train']
    assert lrs[:8] == pytest.approx([1.8e-3 * (i + 1) / 9 for i in range(8)])  # a straight line over 8 steps
    assert lrs[8] == pytest.approx(1.8e-3)  # then the schedule's own rate
