# GPT-2 124M on codeparrot/github-code, the fast recipe: the reference run's model and 32,768
# tokens per step, trained so that each GPU-hour learns more:
#   - p50k_base tokens: GPT-2's BPE plus runs of spaces, more code per token
#   - Muon on the blocks' weight matrices, AdamW at 3x the reference rate on the embeddings and gains
#   - warmup, a flat rate, then a straight line to zero over the last 40% (warmup-stable-decay)
#   - train windows that open each document at its <|endoftext|> (sampling='doc')
# What each part buys, and the options measured and left out (zero-initialised projections, an
# untied head, q/k/v orthogonalised apart, doc_mask, the modern block), are in notes/recipe.md
# with the command and card of every figure. Only what differs from train.py's defaults (the
# reference run) is set here.
#
# python tokenize_github_code.py --encoding=p50k_base --out_dir=data/github-code/tokens-p50k
# python train.py config/train_github_code_124m_fast.py

out_dir = 'out-github-code-124m-fast'
data_dir = 'data/github-code/tokens-p50k'  # made with --encoding=p50k_base
wandb_run_name = 'gpt2-124m-fast'

max_iters = 80000  # x 32,768 = 2.6B tokens, ~20 per parameter (Chinchilla)
optimizer = 'muon'
muon_lr = 0.02
learning_rate = 1.8e-3  # AdamW's share: embeddings (tied head), LayerNorm gains
lr_schedule = 'wsd'
warmup_iters = 500
cooldown_frac = 0.4
min_lr = 0.0
sampling = 'doc'  # windows start at documents' starts, each once an epoch
