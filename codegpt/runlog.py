"""
A training run's record in out_dir: log.jsonl (one JSON object per event: start, train, eval,
checkpoint, stopped, early_stop, end), loss.png (redrawn from log.jsonl, so a resumed run's curves
continue), and the same numbers in Weights & Biases when asked. Only rank 0 keeps one.
"""
import json
import os

from codegpt.atomic import atomic_path
from codegpt.errors import UserError


class RunLog:

    def __init__(self, out_dir, fresh, wandb_args=None):
        """fresh: a new run, which replaces an old run's log.jsonl (train.py refused an old run's
        checkpoints unless told to replace them). wandb_args: wandb.init's keywords, or None."""
        self.path = os.path.join(out_dir, 'log.jsonl')
        self.png = os.path.join(out_dir, 'loss.png')
        if fresh and os.path.exists(self.path):
            os.remove(self.path)
        self.wandb = None
        if wandb_args is not None:
            try:
                import wandb
                self.wandb = wandb.init(dir=out_dir, **wandb_args)
            except Exception as e:  # no package, no login, no network: wandb's own text, then what to do
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise UserError(f"wandb_log=True but wandb could not start a run ({type(e).__name__}: {first}); "
                                f"run `wandb login` (or set WANDB_API_KEY), set WANDB_MODE=offline to keep the run "
                                f"in {out_dir}/wandb, or pass --wandb_log=False") from e

    def __call__(self, event, **fields):
        with open(self.path, 'a') as f:
            f.write(json.dumps({'event': event, **fields}) + '\n')
        if self.wandb is not None and event in ('train', 'eval'):
            flat = {f"{event}/{k}": v for k, v in fields.items() if isinstance(v, (int, float))}
            flat.update({f"val/{lang}/{k}": v for lang, d in fields.get('val', {}).items() for k, v in d.items()})
            self.wandb.log(flat, step=fields['iter'])

    def plot(self):
        """Redraw loss.png: train loss per log step, val loss (and HumanEval's) per eval."""
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        train, val, he = {}, {}, {}
        with open(self.path) as f:
            for e in map(json.loads, f):
                if e['event'] == 'train':
                    train[e['iter']] = e['loss']
                elif e['event'] == 'eval':
                    val[e['iter']] = e['val_loss']
                    if 'humaneval_loss' in e:
                        he[e['iter']] = e['humaneval_loss']
        fig, ax = plt.subplots(figsize=(8, 5))
        ax.plot(list(train), list(train.values()), lw=0.8, alpha=0.7, label='train (step)')
        ax.plot(list(val), list(val.values()), 'o-', label='val (overall)')
        if he:
            ax.plot(list(he), list(he.values()), 's--', label="HumanEval solutions (given their prompts)")
        ax.set_xlabel('step')
        ax.set_ylabel('loss (nats/token)')
        ax.grid(alpha=0.3)
        ax.legend()
        with atomic_path(self.png) as tmp:
            fig.savefig(tmp, format='png', dpi=100)
        plt.close(fig)

    def finish(self, summary):
        if self.wandb is not None:
            self.wandb.summary.update({k: v for k, v in summary.items() if v is not None})
            self.wandb.finish()
