"""configurator.py: config files, then --key=value overrides, with nanoGPT's sharp edges filed off."""
import ast
import os
import subprocess
import sys

import pytest

from configurator import configure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = f'''
import os, sys
sys.path.insert(0, {ROOT!r})
from configurator import configure
out_dir = 'out'  # a str
batch_size = 12  # an int
learning_rate = 6e-4  # a float
compile = True  # a bool
wandb_run_name = 'run'
start = '\\n'
peak_tflops = None  # None: any type goes
stop = []  # a list
betas = (0.9, 0.95)  # a tuple
max_iters = 100
lr_decay_iters = 100
_private = 1  # not config: underscore
config = configure(globals())
print(repr(config))
'''


def run(tmp_path, *args):
    script = tmp_path / 'script.py'
    script.write_text(SCRIPT)
    return subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True)


def config_of(tmp_path, *args):
    p = run(tmp_path, *args)
    assert p.returncode == 0, p.stderr
    return ast.literal_eval(p.stdout.strip().splitlines()[-1])


def fails(tmp_path, *args):
    """The one-line error of a bad command line: exit 2, no traceback."""
    p = run(tmp_path, *args)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert 'Traceback' not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr


def test_defaults_come_back_as_the_config_dict(tmp_path):
    cfg = config_of(tmp_path)
    assert cfg == dict(out_dir='out', batch_size=12, learning_rate=6e-4, compile=True, wandb_run_name='run',
                       start='\n', peak_tflops=None, stop=[], betas=(0.9, 0.95), max_iters=100, lr_decay_iters=100)


def test_config_files_apply_in_order_then_overrides(tmp_path):
    (tmp_path / 'a.py').write_text("import math\nbatch_size = 32\nout_dir = 'out-a'\n_helper = math.pi\n")
    (tmp_path / 'b.py').write_text("batch_size = 64\n")
    cfg = config_of(tmp_path, 'a.py', 'b.py', '--out_dir=out-cli')
    assert cfg['batch_size'] == 64 and cfg['out_dir'] == 'out-cli'


def test_config_file_can_read_current_values(tmp_path):
    (tmp_path / 'c.py').write_text("max_iters = 2 * max_iters\nlr_decay_iters = max_iters\n")
    cfg = config_of(tmp_path, '--max_iters=50', 'c.py')
    assert cfg['max_iters'] == 100 and cfg['lr_decay_iters'] == 100


def test_values_are_literals_with_raw_string_fallback(tmp_path):
    cfg = config_of(tmp_path, '--batch_size=32', '--learning_rate=3e-4', '--compile=False', '--out_dir=out/x-1')
    assert (cfg['batch_size'], cfg['learning_rate'], cfg['compile'], cfg['out_dir']) == (32, 3e-4, False, 'out/x-1')


def test_value_containing_equals_is_kept_whole(tmp_path):
    assert config_of(tmp_path, '--start=a=b==c')['start'] == 'a=b==c'
    assert config_of(tmp_path, '--start=')['start'] == ''


def test_unknown_key_exits_naming_it_and_closest_keys(tmp_path):
    err = fails(tmp_path, '--batch_sise=3')
    assert 'batch_sise' in err and 'batch_size' in err
    (tmp_path / 'bad.py').write_text("learning_rat = 1e-3\n")
    err = fails(tmp_path, 'bad.py')
    assert 'learning_rat' in err and 'bad.py' in err and 'learning_rate' in err


def test_type_mismatch_is_an_error(tmp_path):
    err = fails(tmp_path, '--batch_size=0.5')
    assert 'batch_size' in err and '0.5' in err
    assert 'compile' in fails(tmp_path, '--compile=1')  # not a bool
    assert 'learning_rate' in fails(tmp_path, '--learning_rate=fast')
    (tmp_path / 'bad.py').write_text("max_iters = '100'\n")
    assert 'max_iters' in fails(tmp_path, 'bad.py')


def test_int_is_accepted_for_float(tmp_path):
    cfg = config_of(tmp_path, '--learning_rate=1')
    assert cfg['learning_rate'] == 1.0 and isinstance(cfg['learning_rate'], float)


def test_anything_is_accepted_for_none_default(tmp_path):
    assert config_of(tmp_path, '--peak_tflops=312')['peak_tflops'] == 312
    assert config_of(tmp_path, '--peak_tflops=[1, 2]')['peak_tflops'] == [1, 2]
    assert config_of(tmp_path, '--peak_tflops=abc')['peak_tflops'] == 'abc'


def test_comma_string_becomes_list_for_list_default(tmp_path):
    cfg = config_of(tmp_path, '--stop=foo,bar', '--betas=0.8,0.99')
    assert cfg['stop'] == ['foo', 'bar'] and cfg['betas'] == (0.8, 0.99)
    assert config_of(tmp_path, '--stop=["\\n\\n", "a,b"]')['stop'] == ['\n\n', 'a,b']


def test_string_default_keeps_raw_string(tmp_path):
    cfg = config_of(tmp_path, '--wandb_run_name=2024', '--out_dir=None', '--start=[1]')
    assert cfg['wandb_run_name'] == '2024' and cfg['out_dir'] == 'None' and cfg['start'] == '[1]'


def test_missing_config_file_is_a_clear_error(tmp_path):
    err = fails(tmp_path, 'config/nope.py')
    assert 'config/nope.py' in err and 'not found' in err


def test_key_without_value_is_an_error(tmp_path):
    err = fails(tmp_path, '--compile')
    assert '--compile' in err and '--key=value' in err


# in-process: configure(globals_dict, argv)

def test_in_process_configure_updates_globals_and_returns_config():
    import math
    g = dict(batch_size=12, learning_rate=6e-4, stop=[], math=math, _private=1, helper=lambda: 0)
    cfg = configure(g, ['--batch_size=8', '--learning_rate=1', '--stop=x'])
    assert cfg == dict(batch_size=8, learning_rate=1.0, stop=['x'])
    assert g['batch_size'] == 8 and g['stop'] == ['x'] and g['_private'] == 1


def test_in_process_errors_exit_2_with_message(capsys):
    for argv, words in [(['--batch_sise=1'], ['batch_sise', 'batch_size']),
                        (['--batch_size=1.5'], ['batch_size', '1.5']),
                        (['missing_config.py'], ['missing_config.py'])]:
        with pytest.raises(SystemExit) as e:
            configure(dict(batch_size=12), argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert all(w in err for w in words), err


def test_help_prints_the_config_block_with_comments_and_exits_0(tmp_path):
    p = run(tmp_path, '--batch_size=3', '--help')
    assert p.returncode == 0 and p.stderr == ''
    lines = p.stdout.splitlines()
    assert "  batch_size = 12  # an int" in lines and "  peak_tflops = None  # None: any type goes" in lines
    assert not any(line.startswith('{') for line in lines)  # it stopped before the script ran


def test_the_changed_keys_are_echoed_in_one_line(tmp_path):
    (tmp_path / 'b.py').write_text("batch_size = 64\nmax_iters = 100\n")  # max_iters as the default: not echoed
    p = run(tmp_path, 'b.py', '--out_dir=x')
    assert p.stdout.splitlines()[0] == "config: b.py, out_dir='x', batch_size=64"
    assert not run(tmp_path).stdout.startswith('config:')  # nothing changed, nothing echoed


def test_a_config_file_that_does_not_run_is_one_line_with_its_line_number(tmp_path):
    (tmp_path / 'syntax.py').write_text("batch_size = 32\nmax_iters = (\n")
    err = fails(tmp_path, 'syntax.py')
    assert 'syntax.py:2' in err
    (tmp_path / 'raises.py').write_text("batch_size = 32\n\nmax_iters = 10 // 0\n")
    err = fails(tmp_path, 'raises.py')
    assert 'raises.py:3' in err and 'ZeroDivisionError' in err


def test_an_os_error_at_the_top_is_one_line_naming_the_path(tmp_path):
    script = tmp_path / 'writes.py'
    script.write_text(SCRIPT + "open(os.path.join(out_dir, 'f.txt'), 'w')\n")
    p = subprocess.run([sys.executable, str(script), f'--out_dir={tmp_path / "no" / "such"}'], capture_output=True, text=True)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith('error: No such file or directory: ') and str(tmp_path / 'no' / 'such') in p.stderr


@pytest.mark.skipif(__import__('torch').cuda.is_available(), reason='checks a machine without CUDA')
def test_device_cuda_without_a_gpu_is_one_line():
    from configurator import setup_device
    with pytest.raises(SystemExit) as e:
        setup_device('cuda', 'bfloat16')
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        setup_device('tpu', 'float32')
    assert setup_device('cpu', 'float32')[0] == 'cpu'


def test_constants_are_not_config_keys():
    g = dict(batch_size=12, EOT=50256, LATEST='ckpt.pt')
    assert configure(g, []) == dict(batch_size=12)
    with pytest.raises(SystemExit):
        configure(g, ['--EOT=1'])


# --- every numeric key's range, from one table ------------------------------------------------------

def test_every_numeric_key_of_every_script_has_a_range_and_every_range_a_key():
    from configurator import RANGES, in_range
    from test_quickstart import config_block
    import glob
    scripts = [os.path.relpath(p, ROOT) for p in sorted(glob.glob(os.path.join(ROOT, '*.py')) + glob.glob(os.path.join(ROOT, 'bench', '*.py')))
               if 'configure(globals())' in open(p).read() and not p.endswith('configurator.py')]
    numeric = set()
    for script in scripts:
        for key, default, _ in config_block(script):
            try:
                value = ast.literal_eval(default)
            except ValueError:
                continue  # computed defaults (os.cpu_count(), torch.cuda...) are checked when the script runs
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                numeric.add(key)
                rule = RANGES.get(f"{os.path.basename(script)}:{key}") or RANGES.get(key)
                assert rule, f"{script}: numeric key {key} has no entry in configurator.RANGES"
                assert in_range(value, rule[0]), f"{script}: {key}'s default {value} lies outside its own range {rule[0]}"
    unused = [k for k in RANGES if k.split(':')[-1] not in numeric | {'workers', 'peak_tflops'}]
    assert not unused, f"configurator.RANGES has entries no script has: {unused}"


@pytest.mark.parametrize('script, args, needle', [
    ('train.py', ['--min_lr=-0.01'], 'min_lr=-0.01 is outside [0, inf)'),
    ('train.py', ['--max_seconds=-5'], 'max_seconds=-5.0'),
    ('train.py', ['--weight_decay=-0.1'], 'weight_decay=-0.1'),
    ('train.py', ['--muon_momentum=1.5'], 'muon_momentum=1.5 is outside [0, 1)'),
    ('train.py', ['--n_head=0'], 'n_head=0'),
    ('train.py', ['--n_embd=-8'], 'n_embd=-8'),
    ('train.py', ['--dropout=1.0'], 'dropout=1.0'),
    ('train.py', ['--beta2=1.5'], 'beta2=1.5'),
    ('train.py', ['--seed=-1'], 'seed=-1'),
    ('train.py', ['--out_dir='], 'out_dir is empty'),
    ('train.py', ['NAN_CONFIG'], 'max_seconds=nan'),
    ('tokenize_github_code.py', ['--val_max_tokens=-1'], 'val_max_tokens=-1'),
    ('eval_humaneval.py', ['--temperature=-0.5'], 'temperature=-0.5'),
    ('eval_humaneval.py', ['--max_new_tokens=-1'], 'max_new_tokens=-1'),
    ('sample.py', ['--top_p=1.5'], 'top_p=1.5'),
])
def test_a_number_outside_its_range_is_one_line_before_any_work(script, args, needle, tmp_path):
    from conftest import one_line_error, run_script
    if args == ['NAN_CONFIG']:  # a config file can hold what the command line cannot spell
        (tmp_path / 'nan.py').write_text("max_seconds = float('nan')\n")
        args = [str(tmp_path / 'nan.py')]
    folder = {'train.py': 'data_dir', 'tokenize_github_code.py': 'in_dir'}.get(script, 'out_dir')
    extra = [] if args == ['--out_dir='] else [f'--{folder}={tmp_path / "never"}']
    p = run_script(script, *args, *extra, check=False, cwd=str(tmp_path))
    one_line_error(p, needle, 'pass a value in that range' if 'empty' not in needle else '--out_dir=')
    assert not (tmp_path / 'never').exists() and not (tmp_path / 'out').exists()
