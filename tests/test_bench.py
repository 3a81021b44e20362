"""bench/train_speed.py and bench/plain_nanogpt.py, the plain recipe it measures against: each runs, reports as
the other reads it, and sums up."""
import re

from conftest import run_script


def test_plain_recipe_trains_and_prints_its_rate():
    p = run_script('bench/plain_nanogpt.py', '--device=cpu', '--n_layer=1', '--n_head=2', '--n_embd=32',
                   '--block_size=32', '--micro_batch=2', '--grad_accum=2', '--steps=2')
    m = re.search(r'^reference tokens/s=(\d+) ms/step=([\d.]+) micro_batch=2 grad_accum=2 peak_gib=[\d.]+ loss=[\d.]+$', p.stdout, re.M)
    assert m and int(m.group(1)) > 0  # the figure bench.py parses
    ms = float(m.group(2))  # printed to 0.1 ms: the rate must lie within what that rounding allows
    assert 2 * 2 * 32 / (ms + 0.05) * 1000 - 1 <= int(m.group(1)) <= 2 * 2 * 32 / max(ms - 0.05, 1e-9) * 1000 + 1


def test_bench_refuses_a_missing_reference_in_one_line(tmp_path):
    p = run_script('bench/train_speed.py', '--reference=nope.py', f'--data_dir={tmp_path}', check=False)
    assert p.returncode != 0 and 'nope.py' in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_bench_runs_both_scripts_on_a_tiny_model_and_sums_up_the_ratios(tmp_path):
    from conftest import code_rows, make_token_dir
    make_token_dir(str(tmp_path / 'tokens'), code_rows(per_language=10))
    p = run_script('bench/train_speed.py', f'--data_dir={tmp_path / "tokens"}', '--geometries=[(2,2)]', '--steps=10', '--warmup=5',
                   "--variants=['', '--seed=1337', '--seed=7']",
                   '--model_args=--device=cpu --n_layer=1 --n_head=2 --n_embd=32 --block_size=32')
    rows = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r'^((?:reference|ours) 2x2[^\d]*?(?:--seed=\d+)?)\s+([\d,]+)\s+[\d.]+\s+\S+\s+\S+\s+\S+\s+([\d.]+)\s+(\S+)\s+(\d+)$',
        p.stdout, re.M)}
    assert list(rows) == ['reference 2x2', 'ours 2x2', 'ours 2x2 --seed=1337', 'ours 2x2 --seed=7'], p.stdout
    ref = int(rows['reference 2x2'][0].replace(',', ''))
    # the rows print tokens/s as whole tokens and ratios to 2 decimals: a ratio recomputed from the
    # printed rates may differ from the printed one by the rounding of each, and by no more
    slack = lambda rate, decimals: 0.5 * 10 ** -decimals + (rate / ref) * (0.5 / rate + 0.5 / ref)
    ratios = {}
    for name, (tok_s, ratio, dloss, seconds) in rows.items():
        assert int(seconds) >= 1  # a process that imports torch and trains takes a second at least
        rate = int(tok_s.replace(',', ''))
        ratios[name] = rate / ref
        assert abs(float(ratio) - ratios[name]) <= slack(rate, 2), (name, ratio)
    assert rows['ours 2x2 --seed=1337'][2] == '0.0000'  # the default seed spelled out: the same losses
    assert float(rows['ours 2x2 --seed=7'][2]) > 0  # another seed: other batches, other losses
    ours = {n: r for n, r in ratios.items() if n != 'reference 2x2'}
    last = p.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r'train_speed: 4 runs in [\d.]+ min; train\.py against the plain recipe: '
                     r'lowest ([\d.]+)x \((.+)\), highest ([\d.]+)x \((.+)\)', last)
    assert m and m.group(2) in ours and m.group(4) in ours, last
    lo, hi = (float(m.group(i)) for i in (1, 3))  # to 3 decimals, from the unrounded rates
    room = lambda name: slack(ratios[name] * ref, 3)
    assert abs(lo - ours[m.group(2)]) <= room(m.group(2)) and ours[m.group(2)] <= min(ours.values()) + room(m.group(2))
    assert abs(hi - ours[m.group(4)]) <= room(m.group(4)) and ours[m.group(4)] >= max(ours.values()) - room(m.group(4))


def test_compare_runs_lines_up_two_logs_and_names_the_largest_difference(tmp_path):
    import json
    for name, shift in (('a', 0.0), ('b', 0.25)):  # two runs' logs as train.py writes them; b's losses 0.25 higher from step 40
        (tmp_path / name).mkdir()
        events = [{'event': 'start', 'iter': 0}]
        events += [{'event': 'train', 'iter': i, 'loss': 10 - i / 10 + (shift if i >= 40 else 0), 'tokens_per_sec': 1000.0 + i,
                    'mfu': None, 'peak_mem_gib': None} for i in range(60)]
        events += [{'event': 'eval', 'iter': 50, 'val_loss': 5.0 + shift}]
        (tmp_path / name / 'log.jsonl').write_text(''.join(json.dumps(e) + '\n' for e in events))
    p = run_script('bench/compare_runs.py', f"--runs={tmp_path / 'a'},{tmp_path / 'b'}", '--every=20', '--after=31')
    rows = [line.split() for line in p.stdout.splitlines() if re.match(r'\s+\d+ ', line)]
    assert [r[0] for r in rows] == ['0', '20', '40'] and rows[2][1:] == ['6.0000', '6.2500']
    assert f"max |loss - {tmp_path / 'a'}| 0.2500 over 60 logged steps" in p.stdout
    assert '1,045 tok/s (steps >= 31)' in p.stdout  # the mean of steps 31-59
    assert p.stdout.strip().splitlines()[-1].endswith(f"the largest train-loss difference is 0.2500 ({tmp_path / 'b'})")
    p = run_script('bench/compare_runs.py', f"--runs={tmp_path / 'a'}", check=False)
    assert p.returncode == 2 and 'two or more' in p.stderr
