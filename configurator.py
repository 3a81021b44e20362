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

- every numeric key, in every script, must lie in its range in RANGES below (one table for all
  scripts: a key means the same wherever it appears), and be finite.

Errors: die() prints one 'error: ...' line to stderr and exits 2 (bad input). configure() also
installs the hook that does the same for a codegpt.errors.UserError that reaches the top (the
library raises, the script prints), and prints an OSError that reaches the top (a full disk, a
read-only folder, a file where a folder should be) or a network failure as one line, exit 1.
Every stage writes atomically, so earlier output is intact either way.
"""
import ast
import copy
import difflib
import errno
import math
import multiprocessing
import os
import re
import socket
import sys
import traceback

from codegpt.errors import NetworkError, UserError

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


def is_network_error(e):
    """A failure of the network (no route, no DNS, a refused or dropped connection, an HTTP client's
    own error) rather than of the disk."""
    if isinstance(e, (ConnectionError, socket.gaierror, NetworkError)):
        return True
    module = type(e).__module__.split('.')[0]
    return isinstance(e, OSError) and module in ('requests', 'urllib3', 'httpx', 'httpcore', 'huggingface_hub')


def _excepthook(kind, value, tb):
    if issubclass(kind, UserError):  # the library's one line: the network's, or the input's
        print(f"error: {'network: ' if issubclass(kind, NetworkError) else ''}{value}", file=sys.stderr, flush=True)
        sys.exit(2)
    elif is_network_error(value):
        first = (str(value).strip().splitlines() or [kind.__name__])[0][:300]
        print(f"error: network: {first}; check the connection (or HF_ENDPOINT for the hub, TIKTOKEN_CACHE_DIR "
              f"for tiktoken's BPE files) and rerun", file=sys.stderr, flush=True)
    elif issubclass(kind, OSError):
        print(os_error_line(value), file=sys.stderr, flush=True)
    else:
        sys.__excepthook__(kind, value, tb)


# The valid values of numeric keys, for every script that has the key: an interval the value must lie
# in (finite, ints where the default is an int), and what the key is. 'script.py:key' sets a rule for
# one script where the same name means something else there.
RANGES = {
    # train.py
    'batch_size': ('[1, inf)', 'sequences per forward'),
    'gradient_accumulation_steps': ('[1, inf)', 'micro-batches per step'),
    'block_size': ('[1, inf)', 'tokens of context'),
    'eval_interval': ('[1, inf)', 'steps between evals'),
    'eval_iters': ('[1, inf)', 'eval batches'),
    'log_interval': ('[1, inf)', 'steps between log lines'),
    'early_stop_patience': ('[0, inf)', 'evals without a new best; 0 = off'),
    'seed': ('[0, 2**63)', 'a random seed'),
    'n_layer': ('[1, inf)', 'transformer blocks'),
    'n_head': ('[1, inf)', 'attention heads'),
    'n_embd': ('[1, inf)', 'the model width'),
    'dropout': ('[0, 1)', 'a probability'),
    'vocab_size': ('[1, 65536]', 'embedding rows (token ids are uint16)'),
    'softcap': ('[0, inf)', 'a logit cap; 0 = none'),
    'learning_rate': ('[0, inf)', 'a learning rate'),
    'max_iters': ('[0, inf)', 'optimizer steps'),
    'weight_decay': ('[0, inf)', 'a decay rate'),
    'beta1': ('[0, 1)', "AdamW's momentum"),
    'beta2': ('[0, 1)', "AdamW's second-moment decay"),
    'grad_clip': ('[0, inf)', 'a gradient norm; 0 = off'),
    'muon_lr': ('[0, inf)', 'a learning rate'),
    'muon_momentum': ('[0, 1)', "Muon's momentum"),
    'muon_weight_decay': ('[0, inf)', 'a decay rate'),
    'warmup_iters': ('[0, inf)', 'steps'),
    'min_warmup_iters': ('[0, inf)', 'steps'),
    'lr_decay_iters': ('[0, inf)', 'steps'),
    'cooldown_frac': ('[0, 1]', 'a share of max_iters'),
    'min_lr': ('[0, inf)', 'a learning rate'),
    'max_seconds': ('[0, inf)', 'seconds; 0 = no budget'),
    'ddp_bucket_mb': ('(0, inf)', 'megabytes'),
    'peak_tflops': ('(0, inf)', 'TFLOP/s'),
    'cuda_graph_tokens': ('[0, inf)', 'tokens; 0 = never'),
    'memory_gb': ('[0, inf)', 'GiB; 0 = no cap'),
    # tokenize_github_code.py
    'val_fraction': ('[0, 1)', 'a share of repositories'),
    'val_max_tokens': ('[0, inf)', 'tokens; 0 = no cap'),
    'val_max_bytes': ('[0, inf)', 'bytes; 0 = no cap'),
    'shard_tokens': ('[1, inf)', 'tokens per shard'),
    'min_chars': ('[0, inf)', 'characters'),
    'max_file_bytes': ('[1, inf)', 'bytes'),
    'max_line_length': ('[1, inf)', 'characters'),
    'workers': ('[1, inf)', 'processes or threads'),
    'batch_rows': ('[1, inf)', 'rows'),
    'dedup_threshold': ('(0, 1]', 'a Jaccard similarity'),
    'dedup_ngram': ('[1, inf)', 'words per shingle'),
    'dedup_permutations': ('[2, inf)', 'MinHash permutations'),
    'fim_rate': ('[0, 1]', 'a share of documents'),
    'spm_rate': ('[0, 1]', 'a share of FIM documents'),
    # dedup_datatrove.py
    'dedup_datatrove.py:workers': ('[0, inf)', 'tasks at once; 0 = one per CPU'),
    'tasks': ('[0, inf)', 'slices of the input files; 0 = one per file'),
    'n_grams': ('[1, inf)', 'words per shingle'),
    'num_buckets': ('[1, inf)', 'LSH bands'),
    'hashes_per_bucket': ('[1, inf)', 'MinHash values per band'),
    # download_github_code.py
    'num_shards': ('[1, inf)', 'shards'),
    'shard_start': ('[0, inf)', 'a shard index'),
    'local_shard_bytes': ('[1, inf)', 'bytes'),
    'local_max_file_bytes': ('[1, inf)', 'bytes'),
    # sample.py and the evals
    'num_samples': ('[1, inf)', 'samples'),
    'max_new_tokens': ('[1, inf)', 'tokens'),
    'eval_humaneval.py:max_new_tokens': ('[0, inf)', "tokens; 0 = the protocol's"),
    'eval_humaneval.py:batch_size': ('[0, inf)', "completions at once; 0 = the protocol's"),
    'temperature': ('[0, inf)', '0 = greedy'),
    'top_k': ('[0, inf)', 'tokens; 0 = off'),
    'top_p': ('[0, 1]', 'a probability mass'),
    'limit': ('[0, inf)', 'problems; 0 = all'),
    'n_samples': ('[1, inf)', 'completions per problem'),
    'timeout': ('(0, inf)', 'seconds'),
    'memory_mb': ('[64, inf)', 'MiB'),
    'max_procs': ('[1, inf)', 'processes'),
    'sandbox_uid': ('[-1, 2**31)', 'a uid; -1 = run as yourself'),
    'max_tokens': ('[1, inf)', 'tokens'),
    'eval_bpb.py:block_size': ('[0, inf)', "tokens; 0 = the model's"),
    # the benchmarks
    'evals': ('[1, inf)', 'evals per run'),
    'repeats': ('[1, inf)', 'runs per recipe'),
    'warmup_floor': ('[0, inf)', 'steps'),
    'micro_batch': ('[1, inf)', 'sequences per forward'),
    'grad_accum': ('[1, inf)', 'micro-batches per step'),
    'steps': ('[1, inf)', 'steps'),
    'warmup': ('[0, inf)', 'steps'),
    'prompt_len': ('[1, inf)', 'tokens'),
    'warmup_tokens': ('[0, inf)', 'tokens'),
    'corpus_mb': ('(0, inf)', 'megabytes'),
    'files': ('[1, inf)', 'files'),
    'every': ('[1, inf)', 'steps'),
    'after': ('[0, inf)', 'steps'),
}
PATH_KEYS = ('out_dir', 'data_dir', 'in_dir', 'work_dir')  # a folder each script needs: never ''


def in_range(value, interval):
    """Is value inside an interval written as '[a, b)' (ends as Python numbers or inf)?"""
    lo, hi = (eval(e, {'inf': math.inf}) for e in interval[1:-1].split(','))
    above = value >= lo if interval[0] == '[' else value > lo
    below = value <= hi if interval[-1] == ']' else value < hi
    return above and below


def check_ranges(g, known, script):
    """die() on the first numeric key outside its RANGES entry, naming the key, value and range."""
    for key in known:
        value = g[key]
        if key in PATH_KEYS and value == '':
            die(f"{key} is empty; pass a folder, e.g. --{key}=out")
        rule = RANGES.get(f"{script}:{key}") or RANGES.get(key)
        if rule is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        interval, what = rule
        if not math.isfinite(value) or not in_range(value, interval):
            die(f"{key}={value!r} is outside {interval} ({what}); pass a value in that range")


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
    check_ranges(g, known, os.path.basename(g.get('__file__', '')))
    changed = [f"{k}={g[k]!r}" for k in known if g[k] != defaults[k]]
    # DDP: rank 0 speaks for all; a spawned worker re-runs the script's top, silently
    if (files or changed) and os.environ.get('RANK', '0') == '0' and multiprocessing.current_process().name == 'MainProcess':
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
