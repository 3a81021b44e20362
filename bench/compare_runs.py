"""
Compare training runs from their log.jsonl files: the train loss of each at the steps they share,
how far each strays from the first run, their evals, and their speed. Use it to check that a change
meant to be faster (or a resume, or another GPU count) leaves the curve where it was.

    python bench/compare_runs.py --runs=out-a,out-b
    python bench/compare_runs.py --runs=out-a,out-b,out-c --every=50 --after=30

Prints a table of train losses (every `every` steps), then a line per run (mean tokens/s and MFU
after step `after`, peak memory, val loss at each eval, largest loss difference from the first
run), then a summary line.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from configurator import configure, die  # noqa: E402

# -----------------------------------------------------------------------------
runs = []  # out_dirs (or their log.jsonl files) to compare; the first is the one the others are measured against
every = 20  # print the train losses at every this many steps
after = 30  # leave steps before this out of the speed means (compile, warm-up)
config = configure(globals())
# -----------------------------------------------------------------------------

if len(runs) < 2:
    die(f"runs={runs!r} names {len(runs)} run(s); pass two or more out_dirs: --runs=out-a,out-b")


def events(run):
    path = run if run.endswith('.jsonl') else os.path.join(run, 'log.jsonl')
    if not os.path.isfile(path):
        die(f"{path} does not exist; pass the out_dir of a train.py run (or its log.jsonl)")
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except ValueError as e:
        die(f"{path} is not a train.py log (one JSON object per line): {e}; pass another run")


logs = {r: events(r) for r in runs}
train = {r: {e['iter']: e for e in log if e['event'] == 'train'} for r, log in logs.items()}  # a resumed step's line wins
if not all(train.values()):
    die(f"{next(r for r in runs if not train[r])} logged no train step; pass runs that trained")
width = max(10, *map(len, runs))
print(f"{'step':>6s} " + ' '.join(f"{r:>{width}s}" for r in runs))
for it in sorted(train[runs[0]]):
    if it % every == 0:
        print(f"{it:6d} " + ' '.join(f"{train[r][it]['loss']:{width}.4f}" if it in train[r] else f"{'-':>{width}s}"
                                    for r in runs))

base, worst = runs[0], []
for r in runs:
    timed = [e for i, e in train[r].items() if i >= after] or list(train[r].values())
    tok_s = sum(e['tokens_per_sec'] for e in timed) / len(timed)
    mfus = [e['mfu'] for e in timed if e.get('mfu')]
    mem = max((e.get('peak_mem_gib') or 0 for e in timed), default=0)
    evals = [(e['iter'], round(e['val_loss'], 4)) for e in logs[r] if e['event'] == 'eval']
    shared = [i for i in train[r] if i in train[base]]
    diff = max(abs(train[r][i]['loss'] - train[base][i]['loss']) for i in shared) if shared else None
    if r != base and diff is not None:
        worst.append((diff, r))
    print(f"{r}: {tok_s:,.0f} tok/s (steps >= {after})" + (f", MFU {sum(mfus) / len(mfus) * 100:.1f}%" if mfus else '') +
          (f", peak {mem:.1f} GiB" if mem else '') + f", evals {evals}" +
          (f", max |loss - {base}| {diff:.4f} over {len(shared)} logged steps" if r != base and diff is not None else ''))
diff, r = max(worst) if worst else (None, None)
print(f"compare_runs: {len(runs)} runs against {base}; " +
      (f"the largest train-loss difference is {diff:.4f} ({r})" if worst else "no logged step in common"))
