"""
Time to a target bits per byte: the fast recipe against the reference recipe, on one GPU, in one call.

Builds one corpus from local code (by default this Python's site-packages, each package a
"repository", so val is held out by package), tokenizes it with both encodings, keeping the same
val documents for both (a val cap in bytes, not tokens), then trains each recipe for the same budget of
training seconds (train.py --max_seconds: the schedule is fitted to the budget, evals at fixed
shares of it and the compiling first step are not counted). Every eval scores the whole val set, and
the overall figure is total bits over total bytes, so runs on different encodings compare.

    python bench_recipe.py                                        # reference vs fast, 150 s each
    python bench_recipe.py --budget=90 --ablate="['p50k_base', 'r50k_base --optimizer=muon']"
    python bench_recipe.py --budget=30 --fast='' --ablate="['r50k_base --zero_init_proj=True']"  # ablations only
    python bench_recipe.py --budget=45 --ablate="['fast --learning_rate=6e-4']"    # the fast recipe with one part changed

Prints the curves as a table, writes them to a PNG, and ends with: target = the reference's final
overall val bpb, the time each run takes to reach it, and the speedup = the reference's
training seconds at its final eval (the budget, give or take a step) / that time.
"""
import json
import os
import subprocess
import sys
import sysconfig
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from configurator import configure, die  # noqa: E402

# -----------------------------------------------------------------------------
budget = 150.0  # training seconds per run
evals = 10  # evals per run, at fixed shares of the budget
reference = 'config/train_github_code_124m.py'  # the reference recipe (AdamW 6e-4, warmup, cosine), on r50k_base
fast = 'config/train_github_code_124m_fast.py'  # the fast recipe, on p50k_base; '' = only the reference and the ablations
ablate = []  # extra runs: '<encoding> [train.py flags]' on the reference recipe (e.g. 'r50k_base --optimizer=muon'), or 'fast <flags>' on the fast one (e.g. 'fast --learning_rate=6e-4')
local_paths = [sysconfig.get_paths()['purelib']]  # the corpus: these source trees, each top folder a repository
work_dir = 'data/bench-recipe'  # parquet/, tokens-<encoding>/, runs/<name>/
val_fraction = 0.05  # share of repositories (packages) held out
val_max_bytes = 300_000  # val UTF-8 bytes per language: the same documents for both encodings
micro_batch = 32  # sequences per forward for every run; accumulation makes up each recipe's 32 x 1024 tokens a step
extra = ''  # train.py flags for every run, e.g. '--compile=False --device=cpu' for a smoke test
png = 'recipe.png'  # the curves, in work_dir
config = configure(globals())
# -----------------------------------------------------------------------------

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root: scripts and configs
t_start = time.time()
if budget <= 0 or evals < 1:
    die(f"budget={budget} and evals={evals} must be positive")


def run(cmd, what):
    t0 = time.time()
    p = subprocess.run([sys.executable, *cmd], cwd=here, capture_output=True, text=True)
    if p.returncode != 0:
        die(f"{what} failed ({' '.join(cmd)}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    lines = p.stdout.strip().splitlines()
    print(f"{what}: {time.time() - t0:.0f}s | {lines[-1] if lines else ''}", flush=True)
    return p.stdout


# --- the runs, checked before any work: (name, config file, encoding, train.py flags) ----------
runs = [('reference', reference, 'r50k_base', '')] + ([('fast', fast, 'p50k_base', '')] if fast else [])
for v in ablate:
    head, flags = (v.split() or [''])[0], ' '.join(v.split()[1:])
    if head == 'fast' and not fast:
        die(f"ablate entry '{v}' runs the fast recipe, but fast=''; pass --fast=<its config file>")
    runs.append((f"fast {flags}", fast, 'p50k_base', flags) if head == 'fast' else (f"ref + {v}", reference, head, flags))
for name, cfg, enc, _ in runs:
    if enc not in ('r50k_base', 'p50k_base'):
        die(f"ablate entry '{name}': '{enc}' is not r50k_base, p50k_base or fast; start each entry with one of them")

# --- the corpus, once per encoding -------------------------------------------------------------
parquet = os.path.join(work_dir, 'parquet')
tokens = {enc: os.path.join(work_dir, f'tokens-{enc}') for enc in ('r50k_base', 'p50k_base')}
if not os.path.isfile(os.path.join(parquet, 'manifest.json')):
    run(['download_github_code.py', '--source=local', f'--local_paths={",".join(local_paths)}', f'--out_dir={parquet}'],
        'corpus')
for enc, path in tokens.items():
    run(['tokenize_github_code.py', f'--in_dir={parquet}', f'--out_dir={path}', f'--encoding={enc}',
         f'--val_fraction={val_fraction}', '--val_max_tokens=0', f'--val_max_bytes={val_max_bytes}',
         '--shard_tokens=20_000_000'], f'tokenize {enc}')


# --- the runs ----------------------------------------------------------------------------------
def max_iters_of(config_file):
    """The recipe's nominal length (train.py's default, the reference's, unless the file sets it)."""
    scope = {}
    with open(os.path.join(here, config_file)) as f:
        exec(f.read(), scope)
    return scope.get('max_iters', 427000)


curves, ends = {}, {}
for i, (name, cfg, enc, flags) in enumerate(runs):
    out = os.path.join(work_dir, 'runs', name.replace(' ', '').replace('+', '_').replace('-', ''))
    iters = max_iters_of(cfg)
    accum = 32 // micro_batch  # both recipes take 32 x 1024 tokens a step
    run(['train.py', cfg, f'--data_dir={tokens[enc]}', f'--out_dir={out}', '--overwrite=True', f'--max_seconds={budget}',
         f'--eval_interval={max(1, iters // evals)}', '--eval_iters=8', f'--batch_size={micro_batch}',
         f'--gradient_accumulation_steps={accum}', '--log_interval=50', '--wandb_log=False',
         *flags.split(), *extra.split()], f"run {i + 1}/{len(runs)} {name}")
    with open(os.path.join(out, 'log.jsonl')) as f:
        log = [json.loads(line) for line in f]
    curves[name] = [(e['train_seconds'], e['val_bpb'], e['val'].get('Python', {}).get('bpb')) for e in log
                    if e['event'] == 'eval']
    print(f"  {name}: " + ', '.join(f"{t:.0f}s {b:.4f}" for t, b, _ in curves[name]), flush=True)
    ends[name] = next(e for e in reversed(log) if e['event'] == 'end')


def time_to(curve, target):
    """Training seconds at which the curve first reaches target (linear between evals), or None.
    0.0 when even the untrained model is there (possible on tiny runs: an encoding of more bytes per
    token starts at fewer bits per byte)."""
    for (t0, b0, _), (t1, b1, _) in zip(curve, curve[1:]):
        if b1 <= target:
            return t0 + (t1 - t0) * (b0 - target) / (b0 - b1) if b0 > target else t0
    return None


# --- report ------------------------------------------------------------------------------------
t_ref, target = curves['reference'][-1][:2]  # where the reference ended, in training seconds and bpb
names = list(curves)
print("\nval bits per byte (all languages) at each eval: training seconds / bpb")
print(f"{'eval':>4s} " + ' '.join(f"{n:>22s}" for n in names))
for k in range(max(len(c) for c in curves.values())):
    cells = [f"{c[k][0]:7.1f}s {c[k][1]:7.4f}" if k < len(c) else '' for c in curves.values()]
    print(f"{k:>4d} " + ' '.join(f"{c:>22s}" for c in cells))

import matplotlib  # noqa: E402 (only needed here, after the runs)
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from codegpt.atomic import atomic_path  # noqa: E402
fig, ax = plt.subplots(figsize=(8, 5))
for n, c in curves.items():
    ax.plot([p[0] for p in c[1:]], [p[1] for p in c[1:]], 'o-', label=n)  # step 0 (untrained) left out
ax.axhline(target, color='gray', ls='--', lw=0.8, label=f'target {target:.4f}')
ax.set_xlabel('training seconds')
ax.set_ylabel('val bits per byte (all languages)')
ax.grid(alpha=0.3)
ax.legend()
png_path = os.path.join(work_dir, png)
with atomic_path(png_path) as tmp:
    fig.savefig(tmp, format='png', dpi=100)

print(f"\n{'run':24s} {'final bpb':>9s} {'Python':>7s} {'tok/s':>9s} {'steps':>6s} {'to target':>9s} {'speedup':>7s}")
for n, c in curves.items():
    t = time_to(c, target)
    py = f"{c[-1][2]:7.4f}" if c[-1][2] is not None else '      -'
    print(f"{n:24s} {c[-1][1]:9.4f} {py} {ends[n]['tokens_per_sec']:9,.0f} {ends[n]['iter']:6d} "
          f"{(f'{t:8.1f}s' if t is not None else '      - '):>9s} {(f'{t_ref / t:6.2f}x' if t else '     -'):>7s}")
if fast:
    t_fast = time_to(curves['fast'], target)
    speedup = "not reached" if t_fast is None else f"{t_ref / t_fast:.2f}x" if t_fast > 0 else "at the start"
    verdict = (f"fast reaches it in {f'{t_fast:.1f}s' if t_fast is not None else '-'}: speedup {speedup}; "
               f"fast final {curves['fast'][-1][1]:.4f} bpb")
else:
    verdict = f"{len(runs) - 1} ablation run(s), speedups above"
print(f"bench_recipe: target {target:.4f} bpb (reference, {budget:.0f}s); {verdict} | {png_path} | "
      f"{time.time() - t_start:.0f}s in all")
