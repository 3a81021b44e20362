"""
The command-line backbone of every script: config, one error format, the device.

A script declares its config as plain module globals, each with a short comment, then calls

    config = configure(globals())

Positional arguments are config files, exec'd over those globals in order; then
`--key=value` arguments override single keys. Values are parsed with
ast.literal_eval and fall back to the raw string, so `--out_dir=out` and
`--lr=3e-4` both work. Unlike nanoGPT's exec'd snippet:
- values may contain '=' (`--start=a=b` sets start to 'a=b');
- an unknown key (in a file or on the command line) exits naming the closest known keys;
- the type must match the default's: an int is accepted for a float, anything for a None
  default, and a comma-separated string for a list or tuple (`--local_paths=/a,/b`);
- a missing config file, or one that does not run, is a one-line error with its file:line;
- `--help` (or `-h`) prints the config block (key, default, comment) and exits 0;
- the keys that differ from the defaults are echoed in one 'config:' line, as nanoGPT's
  "Overriding:" lines do.
Returns the final {key: value} dict of the config keys, for logging and checkpoints; `given`
then holds the keys a config file changed or the command line set.

Errors: die() prints one 'error: ...' line to stderr and exits 2 (bad input); an OSError that
reaches the top (a full disk, a read-only folder, a file where a folder should be) is printed as
one line too, exit 1. Every stage writes atomically, so earlier output is intact either way.
"""
import ast
import copy
import difflib
import errno
import multiprocessing
import os
import re
import sys
import traceback

CONFIG_TYPES = (int, float, bool, str, list, tuple, dict, type(None))
DTYPES = ('float32', 'bfloat16', 'float16')


def die(msg):
    """Bad input: one line naming the key, value or file and what to do; exit code 2."""
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


# advice for an OSError by errno: the file system, not a bug of ours
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space or write elsewhere",
    errno.EFBIG: "the file grew past this process's file size limit (ulimit -f): raise it or write elsewhere",
    errno.EACCES: "this user may not write (or read) there: fix the permissions or choose another folder",
    errno.EPERM: "this user may not write (or read) there: fix the permissions or choose another folder",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.ENOTDIR: "a file stands where a folder is needed: choose another path",
    errno.EISDIR: "a folder stands where a file is needed: choose another path",
    errno.EEXIST: "something already stands at that path: choose another one",
    errno.ENOENT: "a folder on that path does not exist: create it or choose another path",
}


_out_dir = None  # the script's out_dir, named when an OSError names no file


def os_error_line(e):
    """An OSError as one line: what failed, on which path, and what to do."""
    where = f": {e.filename}" if getattr(e, 'filename', None) else f" (writing into {_out_dir})" if _out_dir else ''
    what = e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0]
    advice = _OS_ADVICE.get(e.errno, "check the folder and the disk")
    return f"error: {what}{where}; {advice}. Files finished before this are intact; rerun to continue"


def _excepthook(kind, value, tb):
    if issubclass(kind, OSError) and not issubclass(kind, ConnectionError):
        print(os_error_line(value), file=sys.stderr, flush=True)
    else:
        sys.__excepthook__(kind, value, tb)


def config_keys(g):
    # the script's config: its simple-typed globals that are neither private nor CONSTANTS (such as
    # an imported EOT or LATEST)
    return [k for k, v in g.items() if not k.startswith('_') and not k.isupper() and isinstance(v, CONFIG_TYPES)]


def check_key(key, known, where):
    if key not in known:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(sorted(known))}"
        die(f"unknown config key '{key}' ({where}){hint}")


def coerce(key, value, default, where):
    if default is None:
        return value
    if isinstance(default, bool):  # bool is an int subclass: check it first and strictly
        if isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif isinstance(default, (list, tuple)):
        if isinstance(value, str):  # --local_paths=/a,/b
            value = [v for v in value.split(',') if v]
        if isinstance(value, (list, tuple)):
            return type(default)(value)
    elif type(value) is type(default):
        return value
    die(f"config key '{key}' ({where}) expects {type(default).__name__} like {default!r}, got {value!r}")


def print_help(g, known):
    """The script's docstring, then each config key's line of its config block: key = default  # comment."""
    path = g.get('__file__', '')
    doc = (g.get('__doc__') or '').strip()
    if doc:
        print(doc + '\n')
    print("config keys (set them in a config file or as --key=value):")
    lines = open(path).read().splitlines() if os.path.isfile(path) else []
    for key in known:
        line = next((s for s in lines if re.match(rf'{key}\s*=', s)), None)
        print(f"  {line}" if line else f"  {key} = {g[key]!r}")


def exec_config_file(path, scope):
    """Run one config file in `scope`; any error is one line with the file and line number."""
    if not os.path.isfile(path):
        die(f"config file '{path}' not found; pass an existing file such as config/train_tiny.py")
    try:
        with open(path) as f:
            code = compile(f.read(), path, 'exec')
        exec(code, scope)
    except SyntaxError as e:
        die(f"config file {path}:{e.lineno}: {e.msg}; fix that line")
    except Exception as e:
        frames = [fr for fr in traceback.extract_tb(e.__traceback__) if fr.filename == path]
        line = frames[-1].lineno if frames else '?'
        die(f"config file {path}:{line} raised {type(e).__name__}: {e}; fix that line")


given = set()  # the keys a config file changed or the command line set, once configure() has run


def configure(g, argv=None):
    global _out_dir
    sys.excepthook = _excepthook
    argv = sys.argv[1:] if argv is None else argv
    known = config_keys(g)
    defaults = {k: g[k] for k in known}
    if '--help' in argv or '-h' in argv:
        print_help(g, known)
        sys.exit(0)
    files = []
    for arg in argv:
        if not arg.startswith('--'):
            # a config file: exec it, then check what it set. It starts from the current values, as
            # nanoGPT's exec over globals does, so a file may read them (lr_decay_iters = max_iters);
            # copies, so in-place edits are checked too
            scope = copy.deepcopy({k: g[k] for k in known})
            exec_config_file(arg, scope)
            for k, v in scope.items():
                if k.startswith('_') or not isinstance(v, CONFIG_TYPES):
                    continue  # imports and helpers inside a config file are fine
                check_key(k, known, arg)
                if v != g[k]:
                    given.add(k)
                g[k] = coerce(k, v, defaults[k], arg)
            files.append(arg)
        else:
            if '=' not in arg:
                die(f"argument '{arg}' needs a value: write --key=value")
            key, val = arg[2:].split('=', 1)
            check_key(key, known, 'command line')
            try:
                attempt = ast.literal_eval(val)
            except (SyntaxError, ValueError):
                attempt = val  # a plain string such as --out_dir=out
            if isinstance(defaults[key], str) and not isinstance(attempt, str):
                attempt = val  # --wandb_run_name=2024 is still a string
            g[key] = coerce(key, attempt, defaults[key], 'command line')
            given.add(key)
    _out_dir = g.get('out_dir') if isinstance(g.get('out_dir'), str) else None
    changed = [f"{k}={g[k]!r}" for k in known if g[k] != defaults[k]]
    # DDP: rank 0 speaks for all; a spawned worker re-runs the script's top, silently
    if (files or changed) and os.environ.get('RANK', '0') == '0' and multiprocessing.parent_process() is None:
        print(f"config: {', '.join(files + changed)}", flush=True)
    return {k: g[k] for k in known}


def setup_device(device, dtype):
    """Check device and dtype, then (device_type, torch dtype, autocast context) for them:
    'cuda'/'cuda:N' needs that GPU to be visible; float32 runs without autocast."""
    from contextlib import nullcontext
    import torch
    if dtype not in DTYPES:
        die(f"dtype='{dtype}' is not one of {', '.join(DTYPES)}")
    device_type = device.split(':')[0]
    if device_type == 'cuda':
        if not torch.cuda.is_available():
            die(f"device='{device}' but CUDA is not available here; pass --device=cpu")
        index = int(device.split(':')[1]) if ':' in device else 0
        if index >= torch.cuda.device_count():
            die(f"device='{device}' but this machine has {torch.cuda.device_count()} GPU(s); pass --device=cuda:0")
    elif device_type == 'mps' and not torch.backends.mps.is_available():
        die(f"device='{device}' but MPS is not available here; pass --device=cpu")
    elif device_type not in ('cpu', 'cuda', 'mps'):
        die(f"device='{device}' is not 'cpu', 'cuda', 'cuda:N' or 'mps'")
    ptdtype = getattr(torch, dtype)
    autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(device_type, dtype=ptdtype)
    return device_type, ptdtype, autocast
