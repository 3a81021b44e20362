"""
Time to a target bits per byte: the fast recipe against two baselines, on one GPU, at several
training budgets, with repeats, over as many calls as it takes.

The baselines: the reference recipe (the reference run's AdamW 6e-4 -> 6e-5 cosine, fitted to the
budget), and what a careful user would pick instead: the reference with warmup-stable-decay at a
tuned AdamW peak rate, the best of `tuned_rates` at each budget. Every run gets the same warmup
rule: whatever share of the budget its schedule gives the warmup, it lasts at least
`warmup_floor` steps (train.py's min_warmup_iters), so no baseline is handicapped by a warmup the
budget squeezed to a handful of steps.

The corpus is built from local code (by default this Python's site-packages, each package a
"repository", so val is held out by package) and tokenized once per encoding (and per tokenize
flags an ablation asks for), keeping the same val documents for every encoding (a val cap in
bytes). Every eval scores the whole val set, and the overall figure is total bits over total bytes,
so runs on different encodings compare. A run's curve (val bpb at each eval) is kept in
work_dir/curves.jsonl as soon as the run ends: a rerun skips finished runs, --runs trains a subset,
--report prints the table from the saved curves alone, so one benchmark can span several shorter
calls, on one machine or on fresh ones that rebuild the same corpus (the curves name it by a hash;
a saved curve made with other flags or on another corpus is refused, never mixed).

    python bench/recipe.py                                            # the default: 150 s, fast vs both baselines
    python bench/recipe.py --budgets="[60,150,450]" --repeats=2 --runs="['*@60s*']"   # one call's share
    python bench/recipe.py --budgets="[60,150,450]" --repeats=2 --report=True          # the table, from curves.jsonl
    python bench/recipe.py --ablate="['fast --arch=modern --tie_head=False --softcap=15']"
    python bench/recipe.py --ablate="['fast tok:--dedup=False']"                       # the fast recipe without dedup
    python bench/recipe.py --unit=steps --budgets="[300]" --extra="--device=cpu --compile=False"  # a CPU check

Speedup = the baseline's training time at its final eval / the time the run takes to reach the
baseline's final bpb (linear between evals; a run already below it at its first eval gives a bound,
'>='). Prints the curves, a table per budget (mean and range over the repeats) and a summary line;
writes work_dir/recipe.png (curves) and work_dir/recipe_speedup.png (speedup against budget).
"""
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root
from codegpt.atomic import atomic_path, lock_dir  # noqa: E402
from configurator import configure, die  # noqa: E402

# -----------------------------------------------------------------------------
budgets = [150.0]  # each run's training budget in `unit`s; every recipe runs at each
unit = 'seconds'  # 'seconds' (train.py --max_seconds: GPU time, the yardstick) or 'steps' (optimizer steps: the same curves on any machine)
evals = 20  # evals per run, at fixed shares of the budget (the time to a target is interpolated between them)
repeats = 1  # runs of each recipe at each budget, seeded seed, seed + 1, ...
seed = 1337  # the first repeat's seed (model init and batch order)
warmup_floor = 40  # every run's warmup lasts at least this many steps: 2 / (1 - beta2) for AdamW's beta2 0.95 (Ma & Yarats 2021)
reference = 'config/train_github_code_124m.py'  # the reference recipe (AdamW 6e-4, warmup, cosine), on r50k_base
tuned_rates = [6e-4, 1.2e-3, 2.4e-3]  # the tuned baseline: the reference with WSD at each of these AdamW peak rates, the best per budget; [] = none
fast = 'config/train_github_code_124m_fast.py'  # the fast recipe, on p50k_base; '' = none
ablate = []  # more runs: 'fast <train.py flags>' on the fast recipe, or '<encoding> <flags>' on the reference; 'tok:--key=value' flags go to the tokenize stage
runs = []  # the runs this call trains: shell patterns over run names ('reference@*', '*@150s#1'); [] = every unfinished one
report = False  # only print the report from work_dir/curves.jsonl, training nothing
local_paths = [sysconfig.get_paths()['purelib']]  # the corpus: these source trees, each top folder a repository
work_dir = 'data/bench-recipe'  # parquet/, tokens-<encoding>[-<tokenize flags>]/, runs/<run>/, curves.jsonl
val_fraction = 0.05  # share of repositories (packages) held out
val_max_bytes = 300_000  # val UTF-8 bytes per language: the same documents for every encoding
micro_batch = 32  # sequences per forward for every run; accumulation makes up each recipe's 32 x 1024 tokens a step
extra = ''  # train.py flags for every run, e.g. '--compile=False --device=cpu' for a CPU check
png = 'recipe.png'  # the curves, in work_dir (and recipe_speedup.png beside it)
config = configure(globals())
# -----------------------------------------------------------------------------

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root: scripts and configs
t_start = time.time()
if unit not in ('seconds', 'steps'):
    die(f"unit='{unit}' is not 'seconds' or 'steps'")
if not budgets or any(not isinstance(b, (int, float)) or isinstance(b, bool) or b <= 0 for b in budgets):
    die(f"budgets={budgets!r} must be a list of positive numbers, e.g. --budgets=[60,150,450]")
if any(r <= 0 for r in tuned_rates):
    die(f"tuned_rates={tuned_rates!r} must be positive learning rates")
curves_path = os.path.join(work_dir, 'curves.jsonl')


def run(cmd, what):
    t0 = time.time()
    p = subprocess.run([sys.executable, *cmd], cwd=here, capture_output=True, text=True)
    if p.returncode != 0:
        die(f"{what} failed ({' '.join(cmd)}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    lines = p.stdout.strip().splitlines()
    print(f"{what}: {time.time() - t0:.0f}s | {lines[-1] if lines else ''}", flush=True)
    return p.stdout


def nominal(config_file):
    """A recipe's nominal schedule: (max_iters, warmup_iters) as its config file sets them (else train.py's defaults)."""
    scope = {}
    with open(os.path.join(here, config_file)) as f:
        exec(f.read(), scope)
    return scope.get('max_iters', 427000), scope.get('warmup_iters', 2000)


# --- the recipes, checked before any work: (name, config file, encoding, train.py flags, tokenize flags) --
recipes = [('reference', reference, 'r50k_base', [], [])]
recipes += [(f"wsd-{r:g}", reference, 'r50k_base', ['--lr_schedule=wsd', '--min_lr=0', f'--learning_rate={r}'], [])
            for r in tuned_rates]
recipes += [('fast', fast, 'p50k_base', [], [])] if fast else []
for v in ablate:
    head, *flags = v.split() or ['']
    tok = [f[4:] for f in flags if f.startswith('tok:')]
    flags = [f for f in flags if not f.startswith('tok:')]
    if head == 'fast' and not fast:
        die(f"ablate entry '{v}' runs the fast recipe, but fast=''; pass --fast=<its config file>")
    encoding = next((f.split('=', 1)[1] for f in tok if f.startswith('--encoding=')), 'p50k_base' if head == 'fast' else head)
    if encoding not in ('r50k_base', 'p50k_base', 'p50k_edit'):
        die(f"ablate entry '{v}': '{head}' is not r50k_base, p50k_base, p50k_edit or fast; start each entry with one of them")
    recipes.append((v, fast if head == 'fast' else reference, encoding, flags, [f for f in tok if not f.startswith('--encoding=')]))
names = [r[0] for r in recipes]
if len(set(names)) != len(names):
    die(f"two runs share a name ({next(n for n in names if names.count(n) > 1)!r}); give each ablation its own flags")
for name, cfg, *_ in recipes:
    if not os.path.isfile(os.path.join(here, cfg)):
        die(f"the config file of '{name}' ({cfg}) does not exist; pass an existing one")
suffix = 's' if unit == 'seconds' else ' steps'
plan = [(f"{name}@{b:g}{suffix}#{k}", recipe, b, seed + k)  # every run: recipe x budget x repeat
        for b in budgets for recipe in recipes for k, name in [(k, recipe[0]) for k in range(repeats)]]


def slug(text):
    return re.sub(r'[^A-Za-z0-9=.@#+-]+', '_', text.replace('--', '')).strip('_')


def load_curves():
    if not os.path.isfile(curves_path):
        return {}
    saved = {}
    with open(curves_path) as f:
        for line_no, line in enumerate(f, 1):
            try:
                c = json.loads(line)
                saved[c['name']] = c
            except (ValueError, KeyError, TypeError):
                die(f"{curves_path}:{line_no} is not a saved curve; bring the file back whole, or delete it to rerun every run")
    return saved


# --- the corpus: once per encoding and tokenize flags ------------------------------------------
parquet = os.path.join(work_dir, 'parquet')
token_dirs = {}  # (encoding, tokenize flags) -> folder
for *_, encoding, _, tok in recipes:
    token_dirs.setdefault((encoding, tuple(tok)), os.path.join(work_dir, f"tokens-{encoding}" + ('-' + slug('-'.join(tok)) if tok else '')))
os.makedirs(work_dir, exist_ok=True)
lock = lock_dir(work_dir, 'bench/recipe.py')  # one call at a time appends to curves.jsonl
if not report:
    if not os.path.isfile(os.path.join(parquet, 'manifest.json')):
        run(['download_github_code.py', '--source=local', f'--local_paths={",".join(local_paths)}', f'--out_dir={parquet}'],
            'corpus')
    for (encoding, tok), path in token_dirs.items():
        run(['tokenize_github_code.py', f'--in_dir={parquet}', f'--out_dir={path}', f'--encoding={encoding}',
             f'--val_fraction={val_fraction}', '--val_max_tokens=0', f'--val_max_bytes={val_max_bytes}',
             '--shard_tokens=20_000_000', *tok], f"tokenize {encoding} {' '.join(tok)}".strip())


def corpus_id(path):
    """What a curve was measured on, by content: a hash of the token folder's manifest (its val documents,
    token counts, config and input files), the same on any machine that rebuilt the same corpus."""
    with open(os.path.join(path, 'manifest.json')) as f:
        m = json.load(f)
    key = {k: m.get(k) for k in ('val', 'tokens', 'documents', 'config', 'dedup', 'fim')}
    key['sources'] = [(s['size'], s['sha256']) for s in m.get('sources', [])]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def flags_of(recipe, budget, run_seed):
    """train.py's flags for a run (besides --data_dir and --out_dir): the budget, evals, warmup rule, seed."""
    name, cfg, encoding, flags, tok = recipe
    iters, warmup = nominal(cfg)
    if unit == 'seconds':  # train.py fits the schedule and the evals to the budget
        fit = [f'--max_seconds={budget}', f'--eval_interval={max(1, iters // evals)}']
    else:  # the schedule's shares, in steps
        steps = int(budget)
        fit = [f'--max_iters={steps}', f'--lr_decay_iters={steps}', f'--warmup_iters={round(warmup * steps / iters)}',
               f'--eval_interval={max(1, steps // evals)}']
    return [cfg, *fit, f'--min_warmup_iters={warmup_floor}', f'--seed={run_seed}', '--eval_iters=8',
            f'--batch_size={micro_batch}', f'--gradient_accumulation_steps={32 // micro_batch}', '--log_interval=50',
            '--wandb_log=False', *flags, *extra.split()]


# --- the runs: those asked for and not yet finished ------------------------------------------------
saved = load_curves()
todo = []
for name, recipe, budget, run_seed in plan:
    tokens = token_dirs[(recipe[2], tuple(recipe[4]))]
    flags = flags_of(recipe, budget, run_seed)
    have = saved.get(name)
    if have is not None and not report:
        corpus = corpus_id(tokens)
        if have['flags'] != flags or have['corpus'] != corpus:
            what = 'other train.py flags' if have['flags'] != flags else 'another corpus'
            die(f"{curves_path} holds '{name}' measured with {what} ({' '.join(have['flags'])} on corpus {have['corpus']}; "
                f"now {' '.join(flags)} on {corpus}); pass another --work_dir, or delete its line to run it again")
    elif have is None and not report and (not runs or any(fnmatch.fnmatch(name, p) for p in runs)):
        todo.append((name, recipe, budget, run_seed, flags, tokens))
if not report:
    print(f"{len(plan)} runs in all: {len(plan) - len(todo)} finished or left to another call, {len(todo)} to run now", flush=True)
for i, (name, recipe, budget, run_seed, flags, tokens) in enumerate(todo):
    out = os.path.join(work_dir, 'runs', slug(name))
    run(['train.py', *flags[:1], f'--data_dir={tokens}', f'--out_dir={out}', '--overwrite=True', *flags[1:]],
        f"run {i + 1}/{len(todo)} {name}")
    with open(os.path.join(out, 'log.jsonl')) as f:
        log = [json.loads(line) for line in f]
    x = 'train_seconds' if unit == 'seconds' else 'iter'
    curve = [(e[x], e['val_bpb'], e['val'].get('Python', {}).get('bpb')) for e in log if e['event'] == 'eval']
    end = next(e for e in reversed(log) if e['event'] == 'end')
    start = next(e for e in log if e['event'] == 'start')
    saved[name] = dict(name=name, recipe=recipe[0], budget=budget, unit=unit, seed=run_seed, flags=flags, corpus=corpus_id(tokens), curve=curve, tokens_per_sec=end['tokens_per_sec'],
                       steps=end['iter'], params=start['params'], device=start.get('device'),
                       date=time.strftime('%Y-%m-%d'))
    with atomic_path(curves_path) as tmp:  # the whole file rewritten: a kill never leaves half a line
        with open(tmp, 'w') as f:
            f.writelines(json.dumps(c) + '\n' for c in saved.values())
    print(f"  {name}: " + ', '.join(f"{t:.0f} {b:.4f}" for t, b, _ in curve), flush=True)


# --- report: from the saved curves alone -----------------------------------------------------------
def time_to(curve, target):
    """(time at which the curve first reaches target, linear between evals, or None; whether that is a
    bound: the curve is already below the target at its first eval after step 0)."""
    for i, ((t0, b0, _), (t1, b1, _)) in enumerate(zip(curve, curve[1:])):
        if b1 <= target:
            return (t0 + (t1 - t0) * (b0 - target) / (b0 - b1) if b0 > target else t0), i == 0
    return None, False


def spread(values, fmt):
    """'mean' or 'mean (min-max)' over the repeats."""
    if not values:
        return '-'
    mean = sum(values) / len(values)
    return format(mean, fmt) + (f" ({format(min(values), fmt)}-{format(max(values), fmt)})" if len(values) > 1 else '')


def speedups(c_runs, base_runs):
    """The run's speedups over a baseline, one per repeat: (value, 'bound' | 'short' | None)."""
    t_base = sum(c['curve'][-1][0] for c in base_runs) / len(base_runs)  # the baseline's time at its end
    target = sum(c['curve'][-1][1] for c in base_runs) / len(base_runs)  # and its final bpb
    out = []
    for c in c_runs:
        t, bound = time_to(c['curve'], target)
        if t is None:
            out.append((t_base / c['curve'][-1][0], 'short'))  # not reached: below this
        elif bound:
            out.append((t_base / c['curve'][1][0], 'bound'))  # reached by its first eval: at least this
        else:
            out.append((t_base / t if t > 0 else float('inf'), None))
    return out, target


def shown(values):
    """Speedups as text: mean (range); '>=' when any repeat is a bound, '<' when any fell short."""
    if not values:
        return '-'
    mark = '>=' if any(k == 'bound' for _, k in values) else '<' if any(k == 'short' for _, k in values) else ''
    return mark + spread([v for v, _ in values], '.2f') + 'x'


by_name = {}
for name, recipe, budget, _ in plan:
    if name in saved:
        by_name.setdefault((recipe[0], budget), []).append(saved[name])
x_name = 'training seconds' if unit == 'seconds' else 'steps'
summary, points = [], {}  # points: baseline -> [(budget, mean speedup, lo, hi)] for the plot
for budget in budgets:
    done = {r: by_name[(r, budget)] for r in names if (r, budget) in by_name}
    if not done:
        print(f"\nbudget {budget:g}{suffix}: no finished run yet")
        continue
    print(f"\nbudget {budget:g}{suffix}: val bits per byte (all languages) at each eval, {x_name} / bpb, first repeat")
    print(f"{'eval':>4s} " + ' '.join(f"{n[:24]:>24s}" for n in done))
    for k in range(max(len(cs[0]['curve']) for cs in done.values())):
        cells = [f"{cs[0]['curve'][k][0]:9.1f} {cs[0]['curve'][k][1]:7.4f}" if k < len(cs[0]['curve']) else '' for cs in done.values()]
        print(f"{k:>4d} " + ' '.join(f"{c:>24s}" for c in cells))
    baselines = {}
    if 'reference' in done:
        baselines['reference'] = done['reference']
    tuned = [r for r in done if r.startswith('wsd-')]
    if tuned:  # the tuned baseline: the rate with the lowest mean final bpb at this budget
        best = min(tuned, key=lambda r: sum(c['curve'][-1][1] for c in done[r]) / len(done[r]))
        baselines['tuned'] = done[best]
        print(f"tuned AdamW at this budget: {best}, the lowest final bpb of {len(tuned)} rate(s)")
    print(f"\n{'run':34s} {'repeats':>7s} {'final bpb':>22s} {'tok/s':>10s} {'steps':>6s} " +
          ' '.join(f"{'vs ' + b:>20s}" for b in baselines))
    for r, cs in done.items():
        cells = []
        for b, base in baselines.items():
            v, target = speedups(cs, base)
            cells.append(shown(v))
            if r == 'fast':
                points.setdefault(b, []).append((budget, v))
        print(f"{r[:34]:34s} {len(cs):>7d} {spread([c['curve'][-1][1] for c in cs], '.4f'):>22s} "
              f"{sum(c['tokens_per_sec'] for c in cs) / len(cs):>10,.0f} {round(sum(c['steps'] for c in cs) / len(cs)):>6d} " +
              ' '.join(f"{c:>20s}" for c in cells))
    if 'fast' in done:
        summary.append(f"{budget:g}{suffix}: " + ', '.join(f"{shown(speedups(done['fast'], base)[0])} vs {b}"
                                                          for b, base in baselines.items()))

missing = [name for name, *_ in plan if name not in saved]
if saved:
    import matplotlib  # noqa: E402 (only needed for the report)
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # noqa: E402
    fig, axes = plt.subplots(1, len(budgets), figsize=(6 * len(budgets), 4.5), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for r in names:
            for k, c in enumerate(by_name.get((r, budget), [])):
                ax.plot([p[0] for p in c['curve'][1:]], [p[1] for p in c['curve'][1:]], 'o-' if k == 0 else '.:',
                        color=f"C{names.index(r) % 10}", label=r if k == 0 else None, ms=3)  # step 0 left out
        ax.set_title(f"budget {budget:g}{suffix}")
        ax.set_xlabel(x_name)
        ax.set_ylabel('val bits per byte')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    with atomic_path(os.path.join(work_dir, png)) as tmp:
        fig.savefig(tmp, format='png', dpi=100, bbox_inches='tight')
    if points:
        fig, ax = plt.subplots(figsize=(6, 4))
        for b, pts in points.items():
            xs = [p[0] for p in pts]
            means = [sum(v for v, _ in p[1]) / len(p[1]) for p in pts]
            lo = [m - min(v for v, _ in p[1]) for m, p in zip(means, pts)]
            hi = [max(v for v, _ in p[1]) - m for m, p in zip(means, pts)]
            ax.errorbar(xs, means, yerr=[lo, hi], fmt='o-', capsize=3, label=f"fast vs {b}")
        ax.set_xscale('log')
        ax.set_xlabel(f"budget ({x_name})")
        ax.set_ylabel('speedup to the baseline\'s final bpb')
        ax.axhline(1, color='gray', lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend()
        with atomic_path(os.path.join(work_dir, png.replace('.png', '_speedup.png'))) as tmp:
            fig.savefig(tmp, format='png', dpi=100, bbox_inches='tight')
print(f"\nrecipe: {len(plan) - len(missing)}/{len(plan)} runs measured" +
      (f" ({len(missing)} to go: {', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})" if missing else '') +
      (f"; fast {'; '.join(summary)}" if summary else '') + f" | {curves_path} | {time.time() - t_start:.0f}s")
