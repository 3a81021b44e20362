"""
Training throughput: this project's train.py against the plain nanoGPT recipe, on the same card
in the same call, at the same tokens per step and the same model math (GPT-2 124M, AdamW, bf16).

It times the real thing: train.py itself (real loader over real token shards on disk, optimizer,
clipping, logging) run as a subprocess, read back from its log.jsonl, with the plain recipe
(bench/plain_nanogpt.py, a GPT-2 of its own) run at each geometry just before it.
Token shards are made from the local standard library when data_dir has none.

    python bench/train_speed.py                               # 32x1 16x2 8x4 4x8: tens of minutes on an empty compile cache (kernel tuning), less on a rerun
    python bench/train_speed.py --geometries="[(32,1)]" --variants="['', '--sdpa_backend=cudnn']"
    python bench/train_speed.py --memory_gb=12 --geometries="[(4,8)]"      # a 12 GB card's room on a big one
    python bench/train_speed.py --model_args="--n_layer=24 --n_head=16 --n_embd=1024" --geometries="[(8,4)]"  # GPT-2 350M in both

prints one row per run as it ends: tokens/s, ms/step, MFU, share of the step fetching data, peak
memory, the ratio to the reference at the same geometry, how far its logged losses stray from the
first variant's at that geometry (the same seed and batches, so a faster path must not move them),
and the run's wall seconds, compile included; then a summary line with the lowest and highest ratio.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from configurator import configure, die  # noqa: E402

# -----------------------------------------------------------------------------
data_dir = 'data/bench/tokens'  # token shards for train.py; made from the local stdlib when missing
reference = os.path.join('bench', 'plain_nanogpt.py')  # the plain recipe, run with --micro_batch/--grad_accum/--steps and model_args; '' to skip it
geometries = [(32, 1), (16, 2), (8, 4), (4, 8)]  # (micro-batch, grad accum) pairs; tokens/step = B * A * block_size
model_args = ''  # flags for both scripts, so both do the same math elsewhere: e.g. '--n_layer=24 --n_head=16 --n_embd=1024', or a tiny model with '--device=cpu'
variants = ['', '--auto_batch=False', '--auto_batch=False --cuda_graph_tokens=0']  # extra train.py flags, one run per geometry each
steps = 60  # timed optimizer steps per run (after warmup)
warmup = 10  # steps left out of the timing (compilation, allocator warm-up)
memory_gb = 0.0  # > 0: cap every run's GPU memory at this many GiB (torch's per-process fraction), e.g. 12 for a 12 GB card
config = configure(globals())
# -----------------------------------------------------------------------------

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root: scripts and configs


def run(cmd):
    global wall
    t0 = time.time()
    p = subprocess.run(cmd, cwd=here, capture_output=True, text=True)
    wall = time.time() - t0  # the last run's seconds, for its row
    if p.returncode != 0:
        die(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout


if reference and not os.path.isfile(os.path.join(here, reference)):
    die(f"reference={reference!r} is not a file (relative to {here}); pass --reference='' to skip it")

# --- token shards from local code, once --------------------------------------------------------
if not os.path.isfile(os.path.join(data_dir, 'manifest.json')):
    parquet = os.path.join(os.path.dirname(data_dir.rstrip('/')), 'parquet')
    run([sys.executable, 'download_github_code.py', '--source=local', f'--out_dir={parquet}'])
    run([sys.executable, 'tokenize_github_code.py', f'--in_dir={parquet}', f'--out_dir={data_dir}',
         '--val_fraction=0.1', '--shard_tokens=5_000_000'])

# --- runs ---------------------------------------------------------------------------------------
both = [f'--memory_gb={memory_gb}'] if memory_gb else []
both += model_args.split()
print(f"{'run':48s} {'tokens/s':>10s} {'ms/step':>8s} {'MFU':>6s} {'data':>6s} {'peak GiB':>8s} {'x ref':>6s} {'dloss':>7s} "
      f"{'s':>5s}", flush=True)
t_start, ratios = time.time(), []  # ratios: (train.py over the reference, row name)


def row(name, tok_s, ms, mfu=None, data=None, mem=None, ratio=None, dloss=None):
    f = lambda v, fmt: format(v, fmt) if v is not None else '-'
    print(f"{name:48s} {tok_s:10,.0f} {ms:8.1f} {f(mfu and mfu * 100, '5.1f'):>6s} {f(data and data * 100, '5.2f'):>6s} "
          f"{f(mem, '8.1f'):>8s} {f(ratio, '6.2f'):>6s} {f(dloss, '7.4f'):>7s} {wall:5.0f}", flush=True)


for B, A in geometries:
    ref, first_losses = None, None
    if reference:
        out = run([sys.executable, reference, f'--micro_batch={B}', f'--grad_accum={A}', f'--steps={steps}', *both])
        ref = float(re.search(r'tokens/s=(\d+)', out).group(1))
        row(f"reference {B}x{A}", ref, float(re.search(r'ms/step=([\d.]+)', out).group(1)),
            mem=float(re.search(r'peak_gib=([\d.]+)', out).group(1)), ratio=1.0)
    for extra in variants:
        with tempfile.TemporaryDirectory() as out_dir:
            log_interval = 5
            run([sys.executable, 'train.py', f'--data_dir={data_dir}', f'--out_dir={out_dir}',
                 f'--batch_size={B}', f'--gradient_accumulation_steps={A}', f'--max_iters={warmup + steps}',
                 '--eval_interval=1000000', '--eval_iters=1', f'--log_interval={log_interval}', *both,
                 *extra.split()])
            with open(os.path.join(out_dir, 'log.jsonl')) as f:
                events = [json.loads(line) for line in f]
        start = next(e for e in events if e['event'] == 'start')
        losses = {e['iter']: e['loss'] for e in events if e['event'] == 'train'}
        timed = [e for e in events if e['event'] == 'train' and e['iter'] > warmup]
        if not timed:
            die(f"no train log line after warmup; raise --steps above {log_interval}")
        ms = sum(e['ms'] for e in timed) / len(timed)  # each row is the mean of log_interval steps
        tok_s = start['tokens_per_iter'] / ms * 1000
        data = sum(e['data_share'] for e in timed) / len(timed)
        mem = max((e['peak_mem_gib'] for e in timed if e['peak_mem_gib'] is not None), default=None)
        first_losses = first_losses or losses
        dloss = max(abs(losses[i] - first_losses[i]) for i in losses if i in first_losses)
        name = f"ours {B}x{A}" + (f" -> {start['micro_batch']}x{start['accum']}" if start['micro_batch'] != B else "")
        name = f"{name} {extra}".strip()
        row(name, tok_s, ms, timed[-1]['mfu'], data, mem, tok_s / ref if ref else None, dloss)
        if ref:
            ratios.append((tok_s / ref, name))

runs = len(geometries) * (len(variants) + bool(reference))
lo, hi = min(ratios, default=None), max(ratios, default=None)
print(f"train_speed: {runs} runs in {(time.time() - t_start) / 60:.1f} min" +
      (f"; train.py against the plain recipe: lowest {lo[0]:.3f}x ({lo[1]}), highest {hi[0]:.3f}x ({hi[1]})" if ratios else ''),
      flush=True)
