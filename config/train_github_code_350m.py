# GPT-2 350M on codeparrot/github-code, Chinchilla-sized (~20 tokens per parameter), with the
# fast recipe of train_github_code_124m_fast.py (p50k_base tokens, Muon on the blocks' matrices,
# warmup-stable-decay, windows at document starts). Measured at 124M only: at this size the
# AdamW rate is GPT-3's for the size (Brown et al. 2020, table 2.1) times 3, as at 124M, and the
# step holds more tokens, as GPT-3's did for larger models. Only what differs from train.py's
# defaults is set here.
#
# python train.py config/train_github_code_350m.py                  # one GPU
# torchrun --standalone --nproc_per_node=8 train.py config/train_github_code_350m.py

out_dir = 'out-github-code-350m'
data_dir = 'data/github-code/tokens-p50k'  # made with --encoding=p50k_base
wandb_run_name = 'gpt2-350m'

n_layer = 24
n_head = 16
n_embd = 1024
batch_size = 8  # sequences per forward; auto_batch takes more where memory allows
gradient_accumulation_steps = 32  # 8 x 1024 x 32 = 262,144 tokens per step
max_iters = 27000  # x 262,144 = ~7.1B tokens, ~20 per parameter (354.6M at vocab_size 50304)
eval_interval = 500
optimizer = 'muon'
muon_lr = 0.02
learning_rate = 9e-4  # AdamW's share: embeddings (tied head), LayerNorm gains
lr_schedule = 'wsd'
warmup_iters = 500
cooldown_frac = 0.4
min_lr = 0.0
sampling = 'doc'  # windows start at documents' starts, each once an epoch
