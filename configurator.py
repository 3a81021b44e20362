"""
Config for the stage scripts, nanoGPT style, with its sharp edges filed off.

A script declares its config as plain module globals, then calls

    config = configure(globals())

Positional arguments are config files, exec'd over those globals in order; then
`--key=value` arguments override single keys. Values are parsed with
ast.literal_eval and fall back to the raw string, so `--out_dir=out` and
`--lr=3e-4` both work. Unlike nanoGPT's exec'd snippet:
- values may contain '=' (`--start=a=b` sets start to 'a=b');
- an unknown key (in a file or on the command line) exits naming the closest known keys;
- the type must match the default's: an int is accepted for a float, anything for a None
  default, and a comma-separated string for a list or tuple (`--local_paths=/a,/b`);
- a missing config file is a clear one-line error.
Returns the final {key: value} dict of the config keys, for logging and checkpoints.
"""
import ast
import copy
import difflib
import os
import sys

CONFIG_TYPES = (int, float, bool, str, list, tuple, dict, type(None))


def config_keys(g):
    # the script's config: its simple-typed globals that are not private
    return [k for k, v in g.items() if not k.startswith('_') and isinstance(v, CONFIG_TYPES)]


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


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


def configure(g, argv=None):
    argv = sys.argv[1:] if argv is None else argv
    known = config_keys(g)
    defaults = {k: g[k] for k in known}
    for arg in argv:
        if not arg.startswith('--'):
            # a config file: exec it, then check what it set
            if not os.path.isfile(arg):
                die(f"config file '{arg}' not found; pass an existing file such as config/train_tiny.py")
            # start from the current values, as nanoGPT's exec over globals does, so a file may
            # read them (lr_decay_iters = max_iters); copies, so in-place edits are checked too
            scope = copy.deepcopy({k: g[k] for k in known})
            with open(arg) as f:
                exec(compile(f.read(), arg, 'exec'), scope)
            for k, v in scope.items():
                if k.startswith('_') or not isinstance(v, CONFIG_TYPES):
                    continue  # imports and helpers inside a config file are fine
                check_key(k, known, arg)
                g[k] = coerce(k, v, defaults[k], arg)
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
    return {k: g[k] for k in known}
