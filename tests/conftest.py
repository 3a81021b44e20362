"""Shared test setup: offline tiktoken, the repo on sys.path, and fixtures made from real local code."""
import os
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# GPT-2's BPE file ships beside the checkout; tiktoken would otherwise download it
os.environ.setdefault('TIKTOKEN_CACHE_DIR', os.path.join(ROOT, '..', 'shared', 'tiktoken_cache'))
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
