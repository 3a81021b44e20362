"""
Sample from a trained model: reads out_dir/ckpt_best.pt (or ckpt.pt), prints num_samples
continuations of a prompt, generated together as one batch with the key/value cache, then the
path of the run's loss curve (loss.png beside the checkpoint) when there is one. With a suffix, it
fills in the middle instead, as an editor asks at its cursor: --start is the text before the
cursor, --suffix the text after, and it prints the middle (a model trained with fill-in-the-middle,
tokenize_github_code.py --encoding=p50k_edit --fim_rate=...).

    python sample.py --out_dir=out-github-code-124m
    python sample.py --out_dir=out --start="FILE:prompt.py" --num_samples=5 --max_new_tokens=200
    python sample.py --out_dir=out --ckpt=latest --start="def fib(n):" --temperature=0 --stop='["\n\n\n"]'
    python sample.py --out_dir=out-fim --start="def area(r):\n    return " --suffix="\n\nprint(area(2))\n" --temperature=0
"""
import os
import time
from contextlib import nullcontext

import torch

from codegpt import fim
from codegpt.checkpoint import encoding_of, find_and_load
from codegpt.shards import EOT, get_encoding, text_vocab
from configurator import configure, die, setup_device
from model import GPT

# -----------------------------------------------------------------------------
out_dir = 'out'  # the training run's out_dir (or a checkpoint .pt file)
ckpt = 'best'  # 'best': ckpt_best.pt, or ckpt.pt when there is none; 'latest': ckpt.pt
start = ''  # the prompt, or FILE:path to read it from a file; '' samples a file from scratch
suffix = ''  # the text after the cursor, or FILE:path: with it the model fills in the middle between start and this
num_samples = 3  # samples, generated together as one batch
max_new_tokens = 500  # tokens generated per sample, at most
temperature = 0.8  # 1.0 = the model's distribution, < 1 more conservative, 0 = greedy
top_k = 200  # sample from the k most likely tokens only; 0 = off
top_p = 1.0  # nucleus sampling: the smallest set of tokens holding this much probability; 1.0 = off
stop = []  # stop strings: a sample ends at the first one, which is cut off (<|endoftext|> always stops)
seed = 1337  # torch RNG seed: the same seed and flags give the same samples
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu', 'cuda', 'cuda:1', 'mps', ...
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'  # weights and autocast: 'float32', 'bfloat16' or 'float16' (CUDA only)
compile = False  # torch.compile the one-token decode step: ~1 min to start, faster steps for long samples
config = configure(globals())
# -----------------------------------------------------------------------------

if num_samples < 1 or max_new_tokens < 1:
    die(f"num_samples ({num_samples}) and max_new_tokens ({max_new_tokens}) must be at least 1")
if temperature < 0:
    die(f"temperature={temperature} is negative; use 0 for greedy, 0.8 or 1.0 to sample")
if not all(isinstance(s, str) and s for s in stop):
    die(f"stop={stop!r} must be a list of non-empty strings, e.g. --stop='[\"\\n\\n\\n\"]'")

torch.manual_seed(seed)
torch.cuda.manual_seed(seed)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
device_type, ptdtype, ctx = setup_device(device, dtype)
if device_type == 'cpu':
    ptdtype, ctx = torch.float32, nullcontext()  # a CPU samples in float32

# --- the model ---
checkpoint, path = find_and_load(out_dir, ckpt, device)
model = GPT.from_checkpoint(checkpoint).to(device).eval()
print(f"loaded {path} (iter {checkpoint.get('iter_num')}, best val loss {checkpoint.get('best_val_loss', float('nan')):.4f}, "
      f"{model.num_params() / 1e6:.2f}M parameters)")
if device_type == 'cuda' and ptdtype != torch.float32:
    model = model.to(ptdtype)  # weights in the compute dtype: autocast would re-cast every matrix at every token

# --- the prompt ---
enc = get_encoding(encoding_of(checkpoint))  # the tokens the model was trained on


def read_text(value, key):
    """A text config value, or the contents of FILE:path."""
    if not value.startswith('FILE:'):
        return value
    path = value[len('FILE:'):]
    if not os.path.isfile(path):
        die(f"prompt file '{path}' not found (from --{key}=FILE:{path}); pass an existing file or the text itself")
    try:
        with open(path, encoding='utf-8') as f:
            return f.read()
    except UnicodeDecodeError as e:
        die(f"prompt file '{path}' is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8")


start, suffix = read_text(start, 'start'), read_text(suffix, 'suffix')
if suffix:
    if enc.name != fim.ENCODING:
        die(f"--suffix asks for the middle, which a model trained on {enc.name} tokens cannot give: it knows no FIM "
            f"sentinels; train on tokens made with --encoding={fim.ENCODING} --fim_rate=0.5 (tokenize_github_code.py)")
    ids = fim.infill_prompt(start, suffix, enc.encode_ordinary, EOT)
else:
    ids = enc.encode(start, allowed_special={'<|endoftext|>'})
    # every training document follows <|endoftext|>, so the prompt does too: it reads as the start of a file
    if ids[:1] != [EOT]:
        ids = [EOT] + ids
if len(ids) > model.config.block_size:
    print(f"note: the prompt is {len(ids)} tokens, longer than block_size {model.config.block_size}; "
          f"the model sees only its end")
x = torch.tensor(ids, dtype=torch.long, device=device)[None].repeat(num_samples, 1)  # (num_samples, t)


stop_bytes = [s.encode('utf-8') for s in stop]
window = max((len(s) for s in stop_bytes), default=0)  # a stop string spans at most this many tokens


def reached_stop(generated):
    # (b, n) tokens so far -> (b,) bool; a new stop string must end in the newest token,
    # so only the last `window` tokens need decoding
    tails = [enc.decode_bytes(row[-window:]) for row in generated.tolist()]
    return torch.tensor([any(s in tail for s in stop_bytes) for tail in tails])


# --- generate ---
t0 = time.time()
with torch.no_grad(), ctx:
    y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                       stop_tokens=(EOT,), stop_fn=reached_stop if stop else None, use_cache=True,
                       compile_step=compile, n_vocab=text_vocab(enc))
dt = time.time() - t0

n_tokens = num_samples * (y.size(1) - len(ids))  # generated, whether shown or cut
for row in y[:, len(ids):].tolist():
    if EOT in row:
        row = row[:row.index(EOT)]
    out = enc.decode_bytes(row)
    for s in stop_bytes:
        out = out.split(s, 1)[0]  # cut at the earliest of the stop strings
    print((out if suffix else start.encode() + out).decode('utf-8', errors='replace'))  # the middle alone, or all of it
    print('---------------')
print(f"sampled {num_samples} x up to {max_new_tokens} tokens from {path} in {dt:.2f}s "
      f"({n_tokens / dt:.0f} tokens/s, temperature {temperature}, top_k {top_k}, top_p {top_p})")
loss_png = os.path.join(os.path.dirname(path), 'loss.png')  # train.py draws it beside the checkpoints
if os.path.isfile(loss_png):
    print(f"loss curve: {loss_png}")
