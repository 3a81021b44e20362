# Quickstart, stage 2 of 4: p50k_base token shards from the quickstart parquet (~3.7M tokens).
# p50k_base is GPT-2's BPE plus tokens for runs of spaces: fewer tokens per file of code, so the
# same steps learn from more of it (notes/recipe.md).
# python tokenize_github_code.py config/quickstart_tokenize.py          (~5 s on 2 cores)
#
# The stdlib has only ~35 top folders ("repositories"): at the reference 0.01 none is held out,
# so hold out ~15% of them. Nearly all of its files are Python, so Python is usually the only
# language with a val set, and the stage warns that the others got none: expected here.

in_dir = 'data/quickstart/parquet'
out_dir = 'data/quickstart/tokens'
val_fraction = 0.15  # share of repositories held out for val
encoding = 'p50k_base'  # a run of indentation is one token, not one per space
shard_tokens = 2_000_000  # a few train shards (4 MB each) instead of one 200 MB file
