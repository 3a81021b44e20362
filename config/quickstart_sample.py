# Quickstart, stage 4 of 4: a few samples from the quickstart run's best checkpoint, then the
# path of its loss curve.
# python sample.py config/quickstart_sample.py      (a few seconds)

out_dir = 'out-quickstart'
ckpt = 'best'  # ckpt_best.pt: the lowest val loss of the run
start = 'import os\n'
num_samples = 3
max_new_tokens = 120
