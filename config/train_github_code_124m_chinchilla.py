# GPT-2 124M, Chinchilla-sized: ~20 tokens per parameter = ~2.6B tokens. The reference run
# (train.py's defaults, spelled out in train_github_code_124m.py) with its cosine compressed to
# 80,000 steps of the same 32,768 tokens, and an early stop once val loss stops improving.
# Only what differs from the reference is set here.
# python train.py config/train_github_code_124m_chinchilla.py

out_dir = 'out-github-code-124m-chinchilla'
# p50k_base tokens (tokenize_github_code.py --encoding=p50k_base): the same recipe learns faster
# on them (notes/recipe.md)
data_dir = 'data/github-code/tokens-p50k'
wandb_run_name = 'gpt2-124m-chinchilla'

max_iters = 80000  # x 32,768 = 2.62B tokens
lr_decay_iters = 80000
early_stop_patience = 5  # 5 evals (5,000 steps) without a new best val loss ends the run
