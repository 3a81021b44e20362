# Quickstart, stage 3 of 4: a tiny GPT (4 layers, 128 wide, 256 tokens of context, 7.3M
# parameters, most of them the 50304-row embedding) for 300 steps of 1,024 tokens.
# python train.py config/quickstart_train.py        (~4-6 min on a 2-core CPU, seconds on a GPU)
# The device is picked as in train.py: a GPU when there is one, else the CPU.

out_dir = 'out-quickstart'
data_dir = 'data/quickstart/tokens'
compile = False  # a 300-step run would spend longer compiling than training (compile is CUDA-only anyway)

n_layer = 4
n_head = 4
n_embd = 128
block_size = 256
dropout = 0.0

batch_size = 4
gradient_accumulation_steps = 1  # 1,024 tokens per step; 300 steps = 307k tokens
max_iters = 300
lr_decay_iters = 300
warmup_iters = 30
learning_rate = 2e-3  # small models take a higher rate
min_lr = 2e-4

eval_interval = 50  # 7 evals, each writes ckpt.pt (and ckpt_best.pt on a new best) and redraws loss.png
eval_iters = 5  # 20 fixed val windows per language
log_interval = 10
