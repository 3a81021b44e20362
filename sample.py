"""
Sample from a trained model: reads out_dir/ckpt_best.pt (or ckpt.pt), prints num_samples
continuations of a prompt, generated together as one batch with the key/value cache, then the
path of the run's loss curve (loss.png beside the checkpoint) when there is one.

    python sample.py --out_dir=out-github-code-124m
    python sample.py --out_dir=out --start="FILE:prompt.py" --num_samples=5 --max_new_tokens=200
    python sample.py --out_dir=out --ckpt=latest --start="def fib(n):" --temperature=0 --stop='["\n\n\n"]'
"""
import os
import time
from contextlib import nullcontext

import torch

from codegpt.checkpoint import encoding_of, find_and_load
from codegpt.shards import EOT, get_encoding, text_vocab
from configurator import configure, die, setup_device
from model import GPT

# -----------------------------------------------------------------------------
out_dir = 'out'  # the training run's out_dir (or a checkpoint .pt file)
ckpt = 'best'  # 'best': ckpt_best.pt, or ckpt.pt when there is none; 'latest': ckpt.pt
start = ''  # the prompt, or FILE:path to read it from a file; '' samples a file from scratch
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
if start.startswith('FILE:'):
    prompt_file = start[len('FILE:'):]
    if not os.path.isfile(prompt_file):
        die(f"prompt file '{prompt_file}' not found (from --start=FILE:{prompt_file}); "
            f"pass an existing file or the prompt text itself")
    try:
        with open(prompt_file, encoding='utf-8') as f:
            start = f.read()
    except UnicodeDecodeError as e:
        die(f"prompt file '{prompt_file}' is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8")
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
    print(start + out.decode('utf-8', errors='replace'))
    print('---------------')
print(f"sampled {num_samples} x up to {max_new_tokens} tokens from {path} in {dt:.2f}s "
      f"({n_tokens / dt:.0f} tokens/s, temperature {temperature}, top_k {top_k}, top_p {top_p})")
loss_png = os.path.join(os.path.dirname(path), 'loss.png')  # train.py draws it beside the checkpoints
if os.path.isfile(loss_png):
    print(f"loss curve: {loss_png}")
