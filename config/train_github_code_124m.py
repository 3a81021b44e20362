# GPT-2 124M on codeparrot/github-code, the reference run: one GPU, ~14B tokens.
# python train.py config/train_github_code_124m.py
# torchrun --standalone --nproc_per_node=8 train.py config/train_github_code_124m.py

out_dir = 'out-github-code-124m'
data_dir = 'data/github-code/tokens'
wandb_log = False
wandb_project = 'github-code'
wandb_run_name = 'gpt2-124m'

# 4 sequences x 1024 tokens x 8 micro-steps = 32,768 tokens per step (on any number of GPUs
# dividing 8); 427,000 steps = ~14B tokens
batch_size = 4
block_size = 1024
gradient_accumulation_steps = 8
max_iters = 427000

# GPT-2 small
n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False

learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 2000
lr_decay_iters = 427000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

eval_interval = 1000
eval_iters = 20  # 80 fixed val windows per language
log_interval = 10
early_stop_patience = 0  # off: the schedule decides when to stop
