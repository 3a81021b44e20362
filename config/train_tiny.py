# A tiny GPT (4 layers, 128 wide, 128 tokens of context) that trains in a few minutes on a
# laptop CPU: a smoke test of the whole pipeline, not a useful model.
# python train.py config/train_tiny.py --data_dir=<a token directory>

out_dir = 'out-tiny'
device = 'cpu'
dtype = 'float32'
compile = False

n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
dropout = 0.0

batch_size = 8
gradient_accumulation_steps = 1  # 1,024 tokens per step
max_iters = 200  # ~1-2 s a step on 2 cores (most of it the 50304-way output layer): ~5 min
lr_decay_iters = 200
warmup_iters = 20
learning_rate = 1e-3  # small models take a higher rate
min_lr = 1e-4

eval_interval = 100
eval_iters = 2  # 16 val windows per language: 30 languages take a while on a CPU
log_interval = 10
