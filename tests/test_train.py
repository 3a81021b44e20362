"""train.py through its command line, on a token directory made here from real local code."""
import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_VAL_LANGUAGE, VAL_LANGUAGES, code_rows, make_token_dir, one_line_error, run_script

from codegpt import shards

# a model small enough for a 2-core CPU: the 50304-row embedding is most of it
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--gradient_accumulation_steps=2', '--eval_iters=2', '--log_interval=1', '--compile=False',
        '--device=cpu', '--dtype=float32', '--warmup_iters=2', '--learning_rate=3e-3', '--min_lr=3e-4']


@pytest.fixture(scope='session')
def token_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('tokens') / 'tokens')
    make_token_dir(path, code_rows())
    return path


def train(token_dir, out_dir, *args, check=True, env=None):
    return run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out_dir}', *args,
                      check=check, env=env)


def read_log(out_dir):
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        return [json.loads(line) for line in f]


def train_losses(events):
    return {e['iter']: e['loss'] for e in events if e['event'] == 'train'}  # a resumed step's entry wins


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


# --- the batch sampler -----------------------------------------------------------------------------
def test_get_batch_is_split_invariant_reads_real_windows_and_fills_out(token_dir):
    _, train_shards, _ = shards.open_shards(token_dir)
    assert all(type(s) is np.ndarray for s in train_shards)  # plain views of the memory maps
    T = 32
    cum = shards.window_starts(train_shards, T)
    whole = shards.get_batch(train_shards, cum, 7, 3, range(0, 8), 8, T)  # (8, T+1)
    assert whole.shape == (8, T + 1) and whole.dtype == np.int64
    halves = [shards.get_batch(train_shards, cum, 7, 3, range(a, a + 4), 8, T) for a in (0, 4)]
    assert np.array_equal(np.concatenate(halves), whole)  # 2 x 4 rows = 8 x 1: same windows
    out = np.full((4, T + 1), -1, dtype=np.int64)
    assert shards.get_batch(train_shards, cum, 7, 3, range(4, 8), 8, T, out) is out
    assert np.array_equal(out, whole[4:])
    # every row is a contiguous run of some shard
    text = [s.tobytes() for s in train_shards]
    for row in whole:
        assert any(row.astype(shards.DTYPE).tobytes() in t for t in text)
    assert not np.array_equal(whole, shards.get_batch(train_shards, cum, 7, 4, range(0, 8), 8, T))


def test_epoch_sampling_serves_every_tile_once_per_epoch_in_a_new_order_each_epoch(token_dir):
    _, train_shards, _ = shards.open_shards(token_dir)
    T, step_rows = 32, 8
    cum = shards.window_starts(train_shards, T)
    n = int(shards.epoch_windows(cum, T)[-1])
    steps = 2 * n // step_rows + 1  # two epochs and a bit
    seen = np.concatenate([shards.get_batch(train_shards, cum, 7, s, range(step_rows), step_rows, T, sampling='epoch')
                           for s in range(steps)])  # (steps * step_rows, T+1)
    tiles = sorted(s[k * T:k * T + T + 1].astype(np.int64).tobytes() for s in train_shards
                   for k in range(-(-(len(s) - T) // T)))  # every shard cut at 0, T, 2T, ...
    assert len(tiles) == n and all(len(t) == (T + 1) * 8 for t in tiles)
    first, second = seen[:n], seen[n:2 * n]
    assert sorted(r.tobytes() for r in first) == tiles  # each tile exactly once in the first epoch
    assert sorted(r.tobytes() for r in second) == tiles  # and again in the second
    assert not np.array_equal(first, second)  # in another order
    # a step that straddles the two epochs splits into micro-batches like any other
    s = n // step_rows
    whole = shards.get_batch(train_shards, cum, 7, s, range(step_rows), step_rows, T, sampling='epoch')
    halves = [shards.get_batch(train_shards, cum, 7, s, range(a, a + 4), step_rows, T, sampling='epoch') for a in (0, 4)]
    assert np.array_equal(np.concatenate(halves), whole)
    assert not np.array_equal(first, shards.get_batch(train_shards, cum, 8, 0, range(n), n, T, sampling='epoch'))


def test_doc_sampling_starts_windows_at_documents_and_serves_each_once_per_epoch(token_dir):
    _, train_shards, _ = shards.open_shards(token_dir)
    T, step_rows = 32, 8
    cum_tiles, starts = shards.doc_tiles(train_shards, T)
    n = int(cum_tiles[-1])
    edges = np.concatenate(([0], cum_tiles))
    for i, s in enumerate(train_shards):
        local = starts[edges[i]:edges[i + 1]]
        assert np.all(np.diff(local) > 0) and local[-1] + T + 1 <= len(s)
        eot = s[local] == shards.EOT  # a window opens each document at its <|endoftext|> ...
        opens = np.flatnonzero(s[:len(s) - T] == shards.EOT)
        assert len(opens) > 10 and local[0] == 0 and np.array_equal(local[eot], opens)
        for w in local[~eot]:  # ... or carries on one longer than a window, with no document start between
            assert w - T in set(local.tolist()) and not np.any(s[w - T + 1:w + 1] == shards.EOT)
        # every token that a full window can reach is an input once
        covered = np.zeros(len(s), dtype=bool)
        for w in local:
            covered[w:w + T] = True
        assert covered[:len(s) - 2 * T].all()
    cum = shards.window_starts(train_shards, T)
    seen = np.concatenate([shards.get_batch(train_shards, cum, 7, k, range(step_rows), step_rows, T, sampling='doc',
                                            tiles=(cum_tiles, starts)) for k in range(-(-n // step_rows))])[:n]
    which = np.searchsorted(cum_tiles, np.arange(n), side='right')
    tiles = sorted(train_shards[i][w:w + T + 1].astype(np.int64).tobytes() for i, w in zip(which, starts))
    assert sorted(r.tobytes() for r in seen) == tiles  # each window once in the first epoch
    assert not np.array_equal(seen, shards.get_batch(train_shards, cum, 7, 0, range(n), n, T, sampling='epoch'))


# --- the first eval, logs and plots ----------------------------------------------------------------

def test_init_loss_is_ln_vocab_and_logs_and_plot_are_written(token_dir, tmp_path):
    out = tmp_path / 'out'
    # narrow, because with tied embeddings an input token's own logit starts near 0.02*n_embd/sqrt(2):
    # on code, where a token often repeats, a wide model's init loss dips below ln(vocab)
    p = train(token_dir, out, '--max_iters=3', '--eval_interval=3', '--n_embd=16')
    assert 'M total' in p.stdout and 'non-embedding' in p.stdout
    events = read_log(out)
    evals = [e for e in events if e['event'] == 'eval']
    assert [e['iter'] for e in evals] == [0, 3]
    init = evals[0]
    assert abs(init['val_loss'] - math.log(50304)) < 0.1, init
    assert abs(init['train_loss'] - math.log(50304)) < 0.1, init
    # every val language is scored (the short one has 33 tokens at block 32), with bits per byte
    assert set(init['val']) == set(VAL_LANGUAGES) | {TINY_VAL_LANGUAGE} and 'skipping' not in p.stdout
    assert all(0 < v['bpb'] < 10 for v in init['val'].values())
    # the overall loss weights each language by its val token count
    m = json.load(open(os.path.join(token_dir, 'manifest.json')))
    w = {e['language']: e['tokens'] for e in m['val']}
    assert math.isclose(init['val_loss'], sum(init['val'][k]['loss'] * w[k] for k in w) / sum(w.values()))
    assert sorted(train_losses(events)) == [0, 1, 2]
    assert [e['event'] for e in events][0] == 'start' and events[-1]['event'] == 'end'
    end = events[-1]
    assert end['tokens'] == 3 * 2 * 4 * 32 and end['flops'] > 0 and end['best_iter'] is not None
    png = (out / 'loss.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    ckpt = load(out / 'ckpt.pt')
    assert ckpt['iter_num'] == 3 and not any(k.startswith(('_orig_mod.', 'module.')) for k in ckpt['model'])
    assert 'done' in p.stdout and 'FLOPs' in p.stdout


def test_a_line_for_each_log_step_in_order_with_the_evals(token_dir, tmp_path):
    # a step's line is written once the next step is queued: none may go missing or come after a later eval
    out = tmp_path / 'out'
    p = train(token_dir, out, '--max_iters=10', '--log_interval=3', '--eval_interval=5')
    events = read_log(out)
    order = [(e['event'], e['iter']) for e in events if e['event'] in ('train', 'eval')]
    assert order == [('eval', 0), ('train', 0), ('train', 3), ('eval', 5), ('train', 6), ('train', 9), ('eval', 10)]
    lines = [e for e in events if e['event'] == 'train']
    assert all(e['ms'] > 0 and math.isfinite(e['loss']) and e['grad_norm'] > 0 for e in lines)
    assert [line.split(':')[0] for line in p.stdout.splitlines() if line.startswith('step ')] == \
        ['step 0/10', 'step 3/10', 'step 6/10', 'step 9/10']


def test_short_val_language_is_skipped_with_one_note(token_dir, tmp_path):
    m = json.load(open(os.path.join(token_dir, 'manifest.json')))
    short = next(e for e in m['val'] if e['language'] == TINY_VAL_LANGUAGE)['tokens']
    block = short + 10  # longer than the short val file, shorter than the train shards
    p = train(token_dir, tmp_path / 'out', '--max_iters=0', f'--block_size={block}', '--batch_size=1',
              '--n_embd=16', '--eval_iters=1')
    assert p.stdout.count(f'skipping val language {TINY_VAL_LANGUAGE}') == 1
    ev = next(e for e in read_log(tmp_path / 'out') if e['event'] == 'eval')
    assert TINY_VAL_LANGUAGE not in ev['val'] and set(ev['val']) == set(VAL_LANGUAGES)


# --- resume, best checkpoint, early stop ----------------------------------------------------------

@pytest.mark.parametrize('flags', [[], ['--sampling=doc', '--tie_head=False'],
                                   ['--arch=modern', '--tie_head=False', '--softcap=15']],
                         ids=['default', 'doc-untied', 'modern'])
def test_resume_is_bit_identical_to_an_uninterrupted_run(token_dir, tmp_path, flags):
    # dropout on, so the resumed run must also restore the RNG
    common = ['--eval_interval=4', '--dropout=0.1', *flags]
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    train(token_dir, straight, '--max_iters=8', *common)
    train(token_dir, split, '--max_iters=4', *common)
    p = train(token_dir, split, '--max_iters=8', '--init_from=resume',  # the model's shape comes from ckpt.pt
              *[f for f in common if not f.startswith(('--tie_head', '--arch', '--softcap'))])
    assert 'resuming' in p.stdout
    a, b = train_losses(read_log(straight)), train_losses(read_log(split))
    assert sorted(a) == list(range(8)) and a == b  # floats compared exactly
    ca, cb = load(straight / 'ckpt.pt'), load(split / 'ckpt.pt')
    assert ca['iter_num'] == cb['iter_num'] == 8 and ca['tokens_seen'] == cb['tokens_seen']
    assert ca['model'].keys() == cb['model'].keys()
    assert all(torch.equal(ca['model'][k], cb['model'][k]) for k in ca['model'])
    sa, sb = ca['optimizer']['state'], cb['optimizer']['state']
    assert all(torch.equal(sa[i]['exp_avg_sq'], sb[i]['exp_avg_sq']) for i in sa)
    assert [e['event'] for e in read_log(split)].count('start') == 2  # the log is appended
    untied = '--tie_head=False' in flags  # the resumed model took the checkpoint's head, not the default
    assert cb['model_args']['tie_head'] is not untied and cb['model_args']['arch'] == ('modern' if 'modern' in str(flags) else 'gpt2')
    assert torch.equal(cb['model']['lm_head.weight'], cb['model']['transformer.wte.weight']) is not untied


def test_best_checkpoint_is_lowest_val_loss_and_early_stop_after_patience(token_dir, tmp_path):
    # a learning rate far too high after a short warmup: val loss soon rises and stays up
    out = tmp_path / 'out'
    p = train(token_dir, out, '--max_iters=200', '--eval_interval=2', '--early_stop_patience=3',
              '--learning_rate=0.5', '--warmup_iters=4', '--lr_decay_iters=200', '--min_lr=0.5')
    events = read_log(out)
    evals = [e for e in events if e['event'] == 'eval']
    losses = [e['val_loss'] for e in evals]
    best = int(np.argmin(losses))
    assert len(evals) - 1 - best == 3, losses  # stopped at the 3rd eval without a new best
    assert all(v >= losses[best] for v in losses[best:])
    stop = [e for e in events if e['event'] == 'early_stop']
    assert len(stop) == 1 and stop[0]['best_iter'] == evals[best]['iter'] and stop[0]['iter'] == evals[-1]['iter']
    assert 'early stop' in p.stdout and events[-1]['reason'] == 'early_stop'
    ck_best = load(out / 'ckpt_best.pt')
    assert ck_best['iter_num'] == evals[best]['iter'] and ck_best['best_val_loss'] == losses[best]
    assert load(out / 'ckpt.pt')['iter_num'] == evals[-1]['iter']


# --- stopping: signals and non-finite losses -------------------------------------------------------

def test_sigterm_writes_checkpoint_and_exits_zero(token_dir, tmp_path):
    out = tmp_path / 'out'
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), *TINY, f'--data_dir={token_dir}', f'--out_dir={out}',
           '--max_iters=100000', '--eval_interval=100000']
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith('step '):
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert 'stopped by signal' in stdout
    ck = load(out / 'ckpt.pt')
    assert ck['iter_num'] > 0
    assert read_log(out)[-1]['reason'] == 'signal'
    # and it resumes from there
    p = train(token_dir, out, '--init_from=resume', f'--max_iters={ck["iter_num"] + 1}', '--eval_interval=100000')
    assert load(out / 'ckpt.pt')['iter_num'] == ck['iter_num'] + 1, p.stdout


def test_nonfinite_loss_stops_naming_the_step_and_keeps_last_checkpoint(token_dir, tmp_path):
    out = tmp_path / 'out'
    train(token_dir, out, '--max_iters=2', '--eval_interval=2')
    before = load(out / 'ckpt.pt')
    # weight decay at lr 1e9 multiplies every matrix by -1e8 per step: float32 overflows within a few steps
    p = train(token_dir, out, '--init_from=resume', '--max_iters=40', '--eval_interval=20', '--log_interval=10',
              '--learning_rate=1e9', '--min_lr=1e9', check=False)
    one_line_error(p, 'non-finite loss at step', 'ckpt.pt (step 2)')
    step = int(p.stderr.split('non-finite loss at step ')[1].split(';')[0])
    assert 2 <= step < 10
    after = load(out / 'ckpt.pt')
    assert after['iter_num'] == 2 and all(torch.equal(before['model'][k], after['model'][k]) for k in before['model'])


# --- DDP ------------------------------------------------------------------------------------------

def torchrun(*args):
    """train.py on 2 gloo ranks (CPU processes) through torchrun; fails the test if it fails."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           os.path.join(ROOT, 'train.py'), *args]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.mark.parametrize('arch', ['gpt2', 'modern'])
def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(token_dir, tmp_path, arch):
    args = [*TINY, f'--data_dir={token_dir}', '--max_iters=4', '--eval_interval=4', '--gradient_accumulation_steps=4',
            f'--arch={arch}']
    one, two = tmp_path / 'one', tmp_path / 'two'
    run_script('train.py', *args, f'--out_dir={one}')
    p = torchrun(*args, f'--out_dir={two}')
    assert '2 rank(s) x 2 micro-batches' in p.stdout
    a, b = train_losses(read_log(one)), train_losses(read_log(two))
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    assert np.allclose([a[i] for i in a], [b[i] for i in a], rtol=1e-5, atol=1e-6), (a, b)
    ea = [e for e in read_log(one) if e['event'] == 'eval']
    eb = [e for e in read_log(two) if e['event'] == 'eval']
    assert np.allclose([e['val_loss'] for e in ea], [e['val_loss'] for e in eb], rtol=1e-5)
    ca, cb = load(one / 'ckpt.pt'), load(two / 'ckpt.pt')
    # float sums in another order (gloo's all-reduce): ~1e-6 apart after 4 steps
    assert all(torch.allclose(ca['model'][k], cb['model'][k], rtol=1e-4, atol=2e-5) for k in ca['model'])
    assert len(cb['rng']) == 2  # each rank's RNG state, for exact resume


def test_two_gloo_ranks_resume_bit_identically(token_dir, tmp_path):
    # a 2-rank run stopped at step 3 and resumed (each rank restores its own RNG and batch position)
    # gives the same losses and weights as the 2-rank run that never stopped
    args = [*TINY, f'--data_dir={token_dir}', '--eval_interval=3', '--gradient_accumulation_steps=4', '--dropout=0.1']
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    torchrun(*args, f'--out_dir={straight}', '--max_iters=6')
    torchrun(*args, f'--out_dir={split}', '--max_iters=3')
    assert 'resuming' in torchrun(*args, f'--out_dir={split}', '--max_iters=6', '--init_from=resume').stdout
    a, b = train_losses(read_log(straight)), train_losses(read_log(split))
    assert sorted(a) == list(range(6)) and a == b  # floats compared exactly
    ca, cb = load(straight / 'ckpt.pt'), load(split / 'ckpt.pt')
    assert ca['iter_num'] == cb['iter_num'] == 6
    assert all(torch.equal(ca['model'][k], cb['model'][k]) for k in ca['model'])


def test_micro_batch_split_does_not_change_the_math(token_dir, tmp_path):
    # 2 x 4 accumulated and 8 x 1 see the same 8 sequences per step (what auto_batch relies on on a GPU)
    base = [*TINY, f'--data_dir={token_dir}', '--max_iters=4', '--eval_interval=4']
    small, big = tmp_path / 'small', tmp_path / 'big'
    run_script('train.py', *base, '--batch_size=2', '--gradient_accumulation_steps=4', f'--out_dir={small}')
    run_script('train.py', *base, '--batch_size=8', '--gradient_accumulation_steps=1', f'--out_dir={big}')
    a, b = train_losses(read_log(small)), train_losses(read_log(big))
    assert sorted(a) == sorted(b) == [0, 1, 2, 3]
    assert np.allclose([a[i] for i in a], [b[i] for i in a], rtol=1e-5, atol=1e-6), (a, b)
    ca, cb = load(small / 'ckpt.pt'), load(big / 'ckpt.pt')
    # float sums in another order (gloo's all-reduce): ~1e-6 apart after 4 steps
    assert all(torch.allclose(ca['model'][k], cb['model'][k], rtol=1e-4, atol=2e-5) for k in ca['model'])


# --- wandb --------------------------------------------------------------------------------------------

def test_wandb_offline_writes_a_run_dir(token_dir, tmp_path):
    pytest.importorskip('wandb')
    out = tmp_path / 'out'
    train(token_dir, out, '--max_iters=2', '--eval_interval=2', '--wandb_log=True', '--wandb_run_name=test',
          env={'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true'})
    runs = [d for d in os.listdir(out / 'wandb') if d.startswith('offline-run-')]
    assert runs, os.listdir(out / 'wandb')


# --- configs and bad inputs -------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['train_github_code_124m', 'train_github_code_124m_chinchilla', 'train_tiny'])
def test_config_files_are_valid(name, tmp_path):
    # every key is known to train.py, so the run gets as far as the missing data
    p = run_script('train.py', f'config/{name}.py', f'--data_dir={tmp_path / "none"}', check=False)
    one_line_error(p, 'does not exist')
    assert p.returncode == 2 and 'unknown config key' not in p.stderr


def test_config_values():
    def read(name):
        scope = {}
        exec(open(os.path.join(ROOT, 'config', f'{name}.py')).read(), scope)
        return scope
    ref = read('train_github_code_124m')
    chin = {**ref, **read('train_github_code_124m_chinchilla')}  # it sets only what differs from the reference
    assert len(read('train_github_code_124m_chinchilla')) - 1 <= 6  # (exec adds __builtins__)
    tokens_per_step = lambda c: c['batch_size'] * c['gradient_accumulation_steps'] * c['block_size']
    assert tokens_per_step(ref) == tokens_per_step(chin) == 32768
    assert (ref['n_layer'], ref['n_head'], ref['n_embd'], ref['max_iters']) == (12, 12, 768, 427000)
    assert chin['max_iters'] == chin['lr_decay_iters'] == 80000 and chin['early_stop_patience'] > 0
    assert 2.5e9 < chin['max_iters'] * tokens_per_step(chin) < 2.7e9
    assert ref['out_dir'] == 'out-github-code-124m' and chin['out_dir'] == 'out-github-code-124m-chinchilla'
    # the larger GPT-2 sizes: OpenAI's shapes, ~20 tokens per parameter of the model they build
    from model import GPT, GPTConfig
    for name, shape in [('350m', (24, 16, 1024)), ('774m', (36, 20, 1280)), ('1558m', (48, 25, 1600))]:
        c = {**ref, **read(f'train_github_code_{name}')}
        assert (c['n_layer'], c['n_head'], c['n_embd']) == shape and c['out_dir'] == f'out-github-code-{name}'
        with torch.device('meta'):  # the shape only, no memory
            params = GPT(GPTConfig(n_layer=c['n_layer'], n_head=c['n_head'], n_embd=c['n_embd'])).num_params()
        assert 19 < c['max_iters'] * tokens_per_step(c) / params < 21, name


def test_bad_inputs_give_one_line_errors(token_dir, tmp_path):
    p = train(tmp_path / 'missing', tmp_path / 'o1', '--max_iters=1', check=False)
    one_line_error(p, 'missing', 'does not exist')
    p = train(token_dir, tmp_path / 'o2', '--block_size=300000', check=False)
    one_line_error(p, 'block_size 300000 is larger than every train shard', 'longest', '--block_size')
    p = train(token_dir, tmp_path / 'o3', '--init_from=resume', check=False)
    one_line_error(p, 'ckpt.pt does not exist')
    p = train(token_dir, tmp_path / 'o4', '--max_itres=3', check=False)
    assert p.returncode == 2 and 'max_itres' in p.stderr and 'max_iters' in p.stderr
    nan_config = tmp_path / 'nan.py'
    nan_config.write_text("learning_rate = float('nan')\n")
    # (each number's own range is configurator's table: tests/test_configurator.py drives it through the scripts)
    for bad, needle in [(str(nan_config), 'learning_rate=nan'), ('--n_head=3', 'n_head=3'),
                        ('--optimizer=sgd', "optimizer='sgd'"), ('--lr_schedule=step', "lr_schedule='step'"),
                        ('--sampling=shuffle', "sampling='shuffle'")]:
        out = tmp_path / 'bad'
        p = train(token_dir, out, bad, check=False)
        one_line_error(p, needle)
        assert not (out / 'ckpt.pt').exists()
    # a checkpoint of another shape
    train(token_dir, tmp_path / 'o5', '--max_iters=0')
    p = train(token_dir, tmp_path / 'o5', '--init_from=resume', '--n_layer=3', '--n_embd=64', check=False)
    one_line_error(p, 'another shape', 'n_layer=2 (config: 3)', 'n_embd=32 (config: 64)')


# --- the CUDA-graph micro-step (a GPU only) --------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_steps_follow_the_eager_steps_and_resume(token_dir, tmp_path):
    # forced small micro-batches, the path the graph is for: 2 x 4 per step, bf16, compiled
    gpu = [a for a in TINY if not a.startswith(('--device', '--dtype', '--compile'))] + \
        ['--device=cuda', '--dtype=bfloat16', '--compile=True', '--auto_batch=False', '--eval_interval=10',
         '--batch_size=2', '--gradient_accumulation_steps=4']
    run = lambda out, *a: run_script('train.py', *gpu, f'--data_dir={token_dir}', f'--out_dir={out}', *a)
    run(tmp_path / 'eager', '--max_iters=30', '--cuda_graph_tokens=0')
    p = run(tmp_path / 'graph', '--max_iters=30')  # 2 x 32 tokens: under the default cuda_graph_tokens
    assert 'no CUDA graph' not in p.stdout
    eager, graph = train_losses(read_log(tmp_path / 'eager')), train_losses(read_log(tmp_path / 'graph'))
    assert sorted(eager) == sorted(graph) == list(range(30))
    assert max(abs(eager[i] - graph[i]) for i in eager) < 0.02 and eager[29] < eager[0] - 1  # it learns, alike
    run(tmp_path / 'split', '--max_iters=20')  # stopped at 20, resumed to 30
    run(tmp_path / 'split', '--max_iters=30', '--init_from=resume')
    split = train_losses(read_log(tmp_path / 'split'))
    assert max(abs(split[i] - graph[i]) for i in range(30)) < 0.02
    a, b = load(tmp_path / 'graph' / 'ckpt.pt')['model'], load(tmp_path / 'split' / 'ckpt.pt')['model']
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)
