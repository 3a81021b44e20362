"""The quickstart: the four stage scripts with config/quickstart_*.py, run end to end through their
command lines at a smaller size (three stdlib packages, a 2-layer model, 20 steps); and the README
held to what the code does: its first command is these four stages, its test command is CI's, and
its config tables are the scripts' config blocks.

    python tests/test_quickstart.py      # print the README's config tables from the scripts
"""
import ast
import json
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import ROOT, STDLIB, after_config_line, run_script  # noqa: E402

STAGES = [  # (script, config file): the README's first command runs these in this order
    ('download_github_code.py', 'config/quickstart_download.py'),
    ('tokenize_github_code.py', 'config/quickstart_tokenize.py'),
    ('train.py', 'config/quickstart_train.py'),
    ('sample.py', 'config/quickstart_sample.py'),
]
# a CPU machine's install: the CPU build of torch first, so requirements.txt pulls no CUDA build
INSTALL = ['pip install torch --index-url https://download.pytorch.org/whl/cpu', 'pip install -r requirements.txt']
DEV_INSTALL = 'pip install -r requirements-dev.txt'  # what the tests add; .ci/run installs it too
TEST_COMMAND = 'python -m pytest -q -n auto --dist loadfile tests'
# scripts whose config block CONFIG.md lists, in its order
CONFIG_SCRIPTS = ['download_github_code.py', 'tokenize_github_code.py', 'train.py', 'sample.py',
                  'eval_humaneval.py', 'eval_bpb.py', 'export_hf.py', 'dedup_datatrove.py', 'bench/train_speed.py', 'bench/tokenize_speed.py',
                  'bench/generate_speed.py', 'bench/recipe.py', 'bench/compare_runs.py']
# repositories json, email and email/mime, logging: at the quickstart's val_fraction (0.15) the
# repository hash holds out 'email' (the email package's top-level modules), so Python gets a val set
LOCAL_PATHS = ','.join(os.path.join(STDLIB, p) for p in ('json', 'email', 'logging'))
SMALL_TRAIN = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=64', '--batch_size=4',
               '--max_iters=20', '--lr_decay_iters=20', '--warmup_iters=2', '--eval_interval=10',
               '--eval_iters=2', '--log_interval=5']


# --- the four stages, once for the module ------------------------------------------------------

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """Each stage's output folder and stdout, after the four stages ran in a row."""
    d = tmp_path_factory.mktemp('quickstart')
    parquet, tokens, out = d / 'parquet', d / 'tokens', d / 'out'
    small = {
        'download_github_code.py': [f'--out_dir={parquet}', f'--local_paths={LOCAL_PATHS}'],
        'tokenize_github_code.py': [f'--in_dir={parquet}', f'--out_dir={tokens}', '--shard_tokens=30_000'],
        'train.py': [f'--data_dir={tokens}', f'--out_dir={out}', *SMALL_TRAIN],
        'sample.py': [f'--out_dir={out}', '--num_samples=2', '--max_new_tokens=24'],
    }
    stdout = {}
    for script, config_file in STAGES:
        p = run_script(script, config_file, *small[script], env={'PYTHONIOENCODING': 'utf-8'})
        stdout[script] = p.stdout
    return dict(parquet=parquet, tokens=tokens, out=out, stdout=stdout)


def test_download_writes_local_parquet_shards_and_manifest(run):
    m = json.loads((run['parquet'] / 'manifest.json').read_text())
    assert m['source'] == 'local' and m['files']
    for f in m['files']:
        assert (run['parquet'] / f['name']).stat().st_size == f['size'] and f['rows'] > 0
    assert m['languages'].get('Python', 0) > 20


def test_tokenize_writes_train_shards_and_a_held_out_python_val_set(run):
    import numpy as np
    m = json.loads((run['tokens'] / 'manifest.json').read_text())
    assert m['encoding'] == 'p50k_base'  # runs of spaces are one token
    assert len(m['train']) >= 2  # shard_tokens=30_000 splits the ~65k train tokens
    for e in m['train'] + m['val']:
        assert len(np.load(run['tokens'] / e['file'], mmap_mode='r')) == e['tokens']
    val = {e['language']: e for e in m['val']}
    assert 'Python' in val and val['Python']['tokens'] > 1000
    assert (run['tokens'] / 'val_python.npy').is_file()


def test_train_writes_checkpoints_log_and_loss_curve(run):
    out = run['out']
    for name in ('ckpt.pt', 'ckpt_best.pt', 'log.jsonl', 'loss.png'):
        assert (out / name).stat().st_size > 0, name
    events = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
    evals = [e for e in events if e['event'] == 'eval']
    assert [e['iter'] for e in evals] == [0, 10, 20] and 'Python' in evals[-1]['val']
    assert events[-1]['event'] == 'end' and events[-1]['iter'] == 20
    assert (out / 'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_sample_prints_samples_from_the_best_checkpoint_then_the_loss_curve(run):
    text = run['stdout']['sample.py']
    loaded, body = after_config_line(text).split('\n', 1)
    assert loaded.startswith(f"loaded {run['out'] / 'ckpt_best.pt'}")
    *samples, tail = body.split('\n---------------\n')
    assert len(samples) == 2
    assert all(s.startswith('import os\n') for s in samples)  # the quickstart's prompt
    assert any(len(s) > len('import os\n') for s in samples)  # and something generated after it
    assert tail.strip().splitlines()[-1] == f"loss curve: {run['out'] / 'loss.png'}"


# --- the README --------------------------------------------------------------------------------

def readme():
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        return f.read()


def test_readme_opens_with_the_quickstart_and_the_test_command():
    text = readme()
    first_block = re.search(r'```\w*\n(.*?)```', text, re.S).group(1)
    assert text.find('\n## ') == -1 or text.index('```') < text.index('\n## ')  # before the first section
    lines = [line for line in first_block.splitlines() if line.strip() and not line.startswith('#')]
    assert lines == INSTALL + [f'python {s} {c}' for s, c in STAGES] + [DEV_INSTALL, TEST_COMMAND]
    with open(os.path.join(ROOT, '.ci', 'run')) as f:
        ci = f.read()
    assert re.search('^python3? ' + re.escape(TEST_COMMAND.split(' ', 1)[1]) + '$', ci, re.M), "CI runs another test command than the README"
    assert 'requirements-dev.txt' in ci, "CI installs other requirements than the README's test command"


def config_block(script):
    """[(key, default source, comment)] of a script's config block: the assignments between the
    first `# -----` banner and `configure(globals())` or the next banner."""
    with open(os.path.join(ROOT, script), encoding='utf-8') as f:
        src = f.read()
    lines = src.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('# ------'))
    end = next(i for i in range(start + 1, len(lines))
               if lines[i].startswith('# ------') or 'configure(globals())' in lines[i])
    rows = []
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and start < node.lineno - 1 < end and isinstance(node.targets[0], ast.Name):
            key = node.targets[0].id
            if key.startswith('_'):
                continue
            line = lines[node.end_lineno - 1]
            comment = line[node.end_col_offset:].strip()
            rows.append((key, ast.get_source_segment(src, node.value), comment[1:].strip() if comment.startswith('#') else ''))
    return rows


def config_table(script):
    esc = lambda s: s.replace('|', '\\|')
    out = [f'<!-- config: {script} -->', '| key | default | what |', '|---|---|---|']
    out += [f'| `{k}` | `{esc(v)}` | {esc(c)} |' for k, v, c in config_block(script)]
    return '\n'.join(out)


def test_config_md_tables_are_the_scripts_config_blocks():
    with open(os.path.join(ROOT, 'CONFIG.md'), encoding='utf-8') as f:
        text = f.read()
    for script in CONFIG_SCRIPTS:
        m = re.search(rf'^<!-- config: {re.escape(script)} -->\n(?:.+\n?)+', text, re.M)
        assert m, f"CONFIG.md has no config table for {script}; update it with: python tests/test_quickstart.py"
        assert m.group(0).strip() == config_table(script), \
            f"CONFIG.md's config table for {script} is out of date; update it with: python tests/test_quickstart.py"


if __name__ == '__main__':  # rewrite CONFIG.md's tables from the scripts' config blocks
    path = os.path.join(ROOT, 'CONFIG.md')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    for script in CONFIG_SCRIPTS:
        text = re.sub(rf'^<!-- config: {re.escape(script)} -->\n(?:.+\n?)+', lambda m: config_table(script) + '\n',
                      text, flags=re.M)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)


def test_readme_file_map_names_every_top_level_script_and_only_real_files():
    text = readme()
    section = text[text.index('## The files'):text.index('\n## ', text.index('## The files') + 1)]
    named = set(re.findall(r'`([\w/]+\.py)`', section))
    present = {f for f in os.listdir(ROOT) if f.endswith('.py')}
    assert present <= named, f"the README's file map lacks {sorted(present - named)}"
    library = {f for f in os.listdir(os.path.join(ROOT, 'codegpt')) if f.endswith('.py') and f != '__init__.py'}
    assert library <= named, f"the README's file map lacks the library's {sorted(library - named)}"
    missing = [f for f in named if not any(os.path.isfile(os.path.join(ROOT, d, f)) for d in ('', 'codegpt'))]
    assert not missing, f"the README's file map names missing files {missing}"
    for script in CONFIG_SCRIPTS:  # and every script with a config table exists
        assert os.path.isfile(os.path.join(ROOT, script)), script


def test_the_library_imports_nothing_above_it():
    # the scripts import codegpt and model.py; codegpt imports neither a script nor model.py nor
    # configurator (it raises, the scripts print), and model.py imports no script
    top = {f[:-3] for f in os.listdir(ROOT) if f.endswith('.py')}

    def imported(path):
        tree = ast.parse(open(path, encoding='utf-8').read())
        names = {a.name.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        return names | {n.module.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}

    lib = os.path.join(ROOT, 'codegpt')
    for name in sorted(os.listdir(lib)):
        if name.endswith('.py'):
            up = imported(os.path.join(lib, name)) & top
            assert not up, f"codegpt/{name} imports {sorted(up)} from above it"
    assert not imported(os.path.join(ROOT, 'model.py')) & (top - {'model'}), "model.py imports a script"
