"""sample.py through its command line, on tiny checkpoints made here."""
import os
import runpy
import sys

import pytest
import torch

from codegpt import decode
from codegpt.checkpoint import find_and_load
from conftest import ROOT, after_config_line, run_script, tiny_checkpoint
from model import GPT
from codegpt.shards import EOT, get_encoding

SEP = '\n---------------\n'
ARGS = dict(block_size=64, vocab_size=50304, n_layer=2, n_head=2, n_embd=32)
# one thread: tiny matmuls on a busy 2-core box; utf-8: GPT-2 tokens decode to any character
ENV = {'OMP_NUM_THREADS': '1', 'PYTHONIOENCODING': 'utf-8'}


def make_checkpoint(path, seed, iter_num):
    # weights larger than the 0.02 init, so greedy output follows the context
    return tiny_checkpoint(path, seed=seed, iter_num=iter_num, best_val_loss=1.5, std=0.3)


@pytest.fixture(scope='module')
def out_dir(tmp_path_factory):
    """A run's out_dir with both files: ckpt.pt (iter 100) and ckpt_best.pt (iter 50), different weights."""
    d = tmp_path_factory.mktemp('out')
    make_checkpoint(d / 'ckpt.pt', 0, 100)
    make_checkpoint(d / 'ckpt_best.pt', 1, 50)
    return d


def sample(*args, check=True):
    return run_script('sample.py', *args, check=check, env=ENV)


def parse(stdout):
    """(loaded line, samples, summary line) of sample.py's output."""
    loaded, body = after_config_line(stdout).split('\n', 1)
    *samples, summary = body.split(SEP)
    return loaded, samples, summary


def expected_greedy(path, prompt, n):
    """What greedy sampling must print: model.generate without the cache, cut at <|endoftext|>."""
    enc = get_encoding('r50k_base')
    model = GPT.from_checkpoint(find_and_load(str(path), 'best', 'cpu')[0]).eval()
    ids = [EOT] + enc.encode(prompt)
    y = model.generate(torch.tensor([ids]), n, temperature=0, use_cache=False)[0, len(ids):].tolist()
    y = y[:y.index(EOT)] if EOT in y else y
    text = prompt + enc.decode_bytes([t for t in y if t < enc.n_vocab]).decode('utf-8', errors='replace')
    return text.replace('\r\n', '\n').replace('\r', '\n')  # as a text-mode pipe reads it


GREEDY = ('--temperature=0', '--num_samples=2', '--max_new_tokens=24', '--start=def main():')


@pytest.fixture(scope='module')
def greedy(out_dir):
    return sample(f'--out_dir={out_dir}', *GREEDY).stdout


def test_loads_best_checkpoint_when_present_and_says_which(greedy, out_dir):
    loaded, samples, summary = parse(greedy)
    assert loaded.startswith(f"loaded {out_dir / 'ckpt_best.pt'} (iter 50")
    assert len(samples) == 2 and 'ckpt_best.pt' in summary


def test_falls_back_to_latest_without_best(tmp_path):
    make_checkpoint(tmp_path / 'ckpt.pt', 0, 7)
    loaded, samples, _ = parse(sample(f'--out_dir={tmp_path}', '--max_new_tokens=4', '--num_samples=1').stdout)
    assert loaded.startswith(f"loaded {tmp_path / 'ckpt.pt'} (iter 7") and len(samples) == 1


def test_ckpt_latest_loads_ckpt_pt(out_dir):
    loaded, _, _ = parse(sample(f'--out_dir={out_dir}', '--ckpt=latest', *GREEDY).stdout)
    assert loaded.startswith(f"loaded {out_dir / 'ckpt.pt'} (iter 100")


def test_greedy_is_deterministic_and_equals_uncached_generate(greedy, out_dir):
    again = sample(f'--out_dir={out_dir}', *GREEDY, '--seed=7').stdout
    _, samples, _ = parse(greedy)
    assert parse(again)[1] == samples
    want = expected_greedy(out_dir / 'ckpt_best.pt', 'def main():', 24)
    assert samples == [want, want]
    assert len(want) > len('def main():') + 20


def test_file_prompt_with_num_samples_as_one_batch(out_dir, tmp_path):
    prompt = 'import os\n\n\ndef walk(root):\n    """Every file under root."""\n'
    (tmp_path / 'prompt.txt').write_text(prompt)
    _, samples, summary = parse(sample(f'--out_dir={out_dir}', f'--start=FILE:{tmp_path / "prompt.txt"}',
                                       '--num_samples=3', '--max_new_tokens=16').stdout)
    assert len(samples) == 3 and all(s.startswith(prompt) for s in samples)
    assert len(set(samples)) > 1  # sampled, not greedy: rows differ
    assert summary.startswith('sampled 3 x up to 16 tokens')


def test_stop_string_ends_sample_and_is_cut(greedy, out_dir):
    prompt = 'def main():'
    completion = parse(greedy)[1][0][len(prompt):]
    # a stop string from the middle of the greedy completion: printable ASCII, so bytes match text
    k = next(i for i in range(len(completion) // 2, len(completion) - 3)
             if all(' ' <= c <= '~' for c in completion[i:i + 3]))
    stop = completion[k:k + 3]
    out = sample(f'--out_dir={out_dir}', *GREEDY, f'--stop={[stop, "never-emitted-xyz"]!r}').stdout
    want = prompt + completion[:completion.find(stop)]
    assert parse(out)[1] == [want, want]


def run_in_process(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, 'argv', ['sample.py', *args])
    runpy.run_path(os.path.join(ROOT, 'sample.py'), run_name='__main__')
    return capsys.readouterr().out


def test_samples_are_one_batched_cached_generate_call(out_dir, monkeypatch, capsys):
    calls = []
    generate = GPT.generate

    def spy(self, idx, *args, **kwargs):
        calls.append((tuple(idx.shape), kwargs.get('use_cache')))
        return generate(self, idx, *args, **kwargs)
    monkeypatch.setattr(GPT, 'generate', spy)
    out = run_in_process(monkeypatch, capsys, f'--out_dir={out_dir}', '--num_samples=4', '--max_new_tokens=5',
                         '--start=x = 1')
    assert calls == [((4, 1 + 3), True)]  # <|endoftext|> + 'x = 1' (3 tokens), all rows at once
    assert len(parse(out)[1]) == 4


def test_endoftext_and_stop_strings_end_rows_early(out_dir, monkeypatch, capsys):
    # the model's choices scripted per row, to hit <|endoftext|> and a stop string at known places
    enc = get_encoding('r50k_base')
    rows = [enc.encode(' alpha beta STOP gamma delta epsilon zeta eta theta'),
            enc.encode(' one two') + [EOT] + enc.encode(' three four five six seven eight')]
    steps = []

    def scripted(logits, temperature=1.0, top_k=None, top_p=None):
        i = len(steps)
        steps.append(i)
        return torch.tensor([[r[i]] for r in rows])
    monkeypatch.setattr(decode, 'sample_next', scripted)
    out = run_in_process(monkeypatch, capsys, f'--out_dir={out_dir}', '--num_samples=2', '--max_new_tokens=9',
                         '--start=words:', '--stop=STOP,never')
    assert parse(out)[1] == ['words: alpha beta ', 'words: one two']
    assert len(steps) == len(enc.encode(' alpha beta STOP'))  # stopped once both rows were done


def test_missing_checkpoint_says_to_train_first(tmp_path):
    p = sample(f'--out_dir={tmp_path}', check=False)
    assert p.returncode != 0 and 'Traceback' not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert str(tmp_path) in p.stderr and 'train.py' in p.stderr


def test_missing_prompt_file_is_a_clear_error(out_dir, tmp_path):
    p = sample(f'--out_dir={out_dir}', f'--start=FILE:{tmp_path / "nope.txt"}', check=False)
    assert p.returncode != 0 and 'Traceback' not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and 'nope.txt' in p.stderr
