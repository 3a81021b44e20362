# GPT-2 124M, Chinchilla-sized: ~20 tokens per parameter = ~2.6B tokens.
# Same 32,768 tokens per step as the reference run; the cosine schedule is compressed to the
# 80,000 steps, and the run stops early once val loss stops improving.
# python train.py config/train_github_code_124m_chinchilla.py

out_dir = 'out-github-code-124m-chinchilla'
# p50k_base tokens (tokenize_github_code.py --encoding=p50k_base): the same recipe reached the
# reference's bpb 1.7x sooner on them (notes/recipe.md)
data_dir = 'data/github-code/tokens-p50k'
wandb_log = False
wandb_project = 'github-code'
wandb_run_name = 'gpt2-124m-chinchilla'

batch_size = 4
block_size = 1024
gradient_accumulation_steps = 8
max_iters = 80000  # x 32,768 = 2.62B tokens
lr_decay_iters = 80000

n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False

learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 2000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

eval_interval = 1000
eval_iters = 20
log_interval = 10
early_stop_patience = 5  # 5 evals (5,000 steps) without a new best val loss ends the run
