"""Shared test setup: offline tiktoken, the repo on sys.path, and fixtures made from real local code."""
import os
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# GPT-2's BPE file ships beside the checkout in our CI; elsewhere tiktoken downloads it as usual
_BPE_CACHE = os.path.join(ROOT, '..', 'shared', 'tiktoken_cache')
if os.path.isdir(_BPE_CACHE):
    os.environ.setdefault('TIKTOKEN_CACHE_DIR', os.path.abspath(_BPE_CACHE))
os.environ.setdefault('WANDB_MODE', 'offline')
STDLIB = sysconfig.get_paths()['stdlib']


def run_script(script, *args, cwd=ROOT, check=True, env=None, timeout=600):
    """Run one of the stage scripts as a user would; returns the CompletedProcess."""
    cmd = [sys.executable, os.path.join(ROOT, script), *map(str, args)]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{script} {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def code_rows(roots=(STDLIB, '/usr/include'), per_language=30, max_bytes=40_000):
    """Real source files from this machine as github-code rows, a few per language, in a fixed order.

    repo_name is '<root>/<top-level folder>', so several files share a repository.
    """
    from github_code import language_of
    rows, counts = [], {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in ('__pycache__', 'site-packages'))
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                lang = language_of(name)
                if lang is None or counts.get(lang, 0) >= per_language or os.path.islink(path):
                    continue
                try:
                    data = open(path, 'rb').read()
                    text = data.decode('utf-8')
                except (OSError, UnicodeDecodeError):
                    continue
                if not text.strip() or len(data) > max_bytes:
                    continue
                rel = os.path.relpath(path, root)
                top = rel.split(os.sep)[0] if os.sep in rel else '_top'
                rows.append(dict(content=text, repo_name=f"{os.path.basename(root)}/{top}", path=rel,
                                 license='mit', size=len(data)))
                counts[lang] = counts.get(lang, 0) + 1
    return rows


def write_parquet(path, rows, row_group_size=64):
    """Write rows in the dataset's raw schema (content, repo_name, path, license, size)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    table = pa.table({
        'content': pa.array([r['content'] for r in rows], pa.string()),
        'repo_name': pa.array([r['repo_name'] for r in rows], pa.string()),
        'path': pa.array([r['path'] for r in rows], pa.string()),
        'license': pa.array([r['license'] for r in rows], pa.string()),
        'size': pa.array([r['size'] for r in rows], pa.int64()),
    })
    pq.write_table(table, path, row_group_size=row_group_size)
