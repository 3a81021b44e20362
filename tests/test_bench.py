"""bench/plain_nanogpt.py, the plain recipe bench.py measures against, runs and reports as bench.py reads it."""
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
    p = run_script('bench.py', '--reference=nope.py', f'--data_dir={tmp_path}', check=False)
    assert p.returncode != 0 and 'nope.py' in p.stderr and len(p.stderr.strip().splitlines()) == 1
