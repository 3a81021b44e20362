"""The tokens' encoding end to end: p50k_base (GPT-2's BPE plus runs of spaces) trains, resumes,
samples, is scored and exports like r50k_base; every stage decodes with the checkpoint's own encoding."""
import json
import os

import pytest
import torch

from codegpt import shards
from codegpt.checkpoint import load_checkpoint, save_checkpoint
from conftest import after_config_line, code_rows, make_token_dir, run_script
from model import GPT, GPTConfig

TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--gradient_accumulation_steps=2', '--eval_iters=2', '--log_interval=1', '--compile=False',
        '--device=cpu', '--dtype=float32', '--warmup_iters=2', '--learning_rate=3e-3', '--min_lr=3e-4']
ENV = {'OMP_NUM_THREADS': '1', 'PYTHONIOENCODING': 'utf-8'}


@pytest.fixture(scope='module')
def p50k_run(p50k_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp('run') / 'out'
    run_script('train.py', *TINY, f'--data_dir={p50k_dir}', f'--out_dir={out}', '--max_iters=8', '--eval_interval=4',
               '--dropout=0.1', env=ENV)
    return out


def test_p50k_tokens_use_the_whitespace_ids_and_train_resume_bit_identically(p50k_dir, p50k_run, tmp_path):
    tokens = shards.open_shards(p50k_dir)[1]
    assert any(((t >= 50257) & (t < 50281)).any() for t in tokens)  # runs of spaces are single tokens
    ck = load_checkpoint(p50k_run / 'ckpt.pt')
    assert ck['encoding'] == 'p50k_base' and load_checkpoint(p50k_run / 'ckpt_best.pt')['encoding'] == 'p50k_base'
    split = tmp_path / 'split'
    args = [*TINY, f'--data_dir={p50k_dir}', f'--out_dir={split}', '--eval_interval=4', '--dropout=0.1']
    run_script('train.py', *args, '--max_iters=4', env=ENV)
    run_script('train.py', *args, '--max_iters=8', '--init_from=resume', env=ENV)
    resumed = load_checkpoint(split / 'ckpt.pt')
    assert all(torch.equal(ck['model'][k], resumed['model'][k]) for k in ck['model'])


def test_resume_on_tokens_of_another_encoding_is_refused(p50k_run, tmp_path):
    r50k = str(tmp_path / 'r50k')
    make_token_dir(r50k, code_rows())
    p = run_script('train.py', *TINY, f'--data_dir={r50k}', f'--out_dir={p50k_run}', '--max_iters=9',
                   '--init_from=resume', check=False, env=ENV)
    assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert 'p50k_base' in p.stderr and 'r50k_base' in p.stderr


def test_sample_and_eval_bpb_read_the_encoding_from_the_checkpoint(p50k_dir, p50k_run, tmp_path):
    p = run_script('sample.py', f'--out_dir={p50k_run}', '--temperature=0', '--num_samples=1', '--max_new_tokens=20',
                   '--start=def f(x):\n    ', env=ENV)
    assert after_config_line(p.stdout).split('\n', 1)[1].startswith('def f(x):\n    ')
    out = tmp_path / 'bpb.json'
    run_script('eval_bpb.py', f'--out_dir={p50k_run}', f'--data_dir={p50k_dir}', '--device=cpu', f'--out_file={out}',
               '--max_tokens=2000', env=ENV)
    res = json.load(open(out))
    manifest = json.load(open(os.path.join(p50k_dir, 'manifest.json')))
    assert 0 < res['all']['bpb'] < 20 and set(res['languages']) <= {e['language'] for e in manifest['val']}
    # the bytes are those of p50k tokens: a run of spaces is one token of many bytes
    assert res['all']['bytes'] / res['all']['tokens'] > 2.5
    # an r50k token directory for a p50k model: refused, not silently mis-scored
    r50k = str(tmp_path / 'r50k')
    make_token_dir(r50k, code_rows())
    p = run_script('eval_bpb.py', f'--out_dir={p50k_run}', f'--data_dir={r50k}', '--device=cpu', check=False, env=ENV)
    assert p.returncode != 0 and 'encoding=p50k_base' in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_a_checkpoint_without_the_key_is_r50k_everywhere(tmp_path):
    """Checkpoints written before the 'encoding' key existed: r50k_base in sample, eval_bpb and export."""
    torch.manual_seed(0)
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=50304, bias=False, dropout=0.0)
    save_checkpoint({'model': GPT(GPTConfig(**args)).state_dict(), 'model_args': args, 'iter_num': 1,
                     'best_val_loss': 9.0, 'config': {}}, str(tmp_path / 'ckpt.pt'))
    data = str(tmp_path / 'tokens')
    make_token_dir(data, code_rows())
    run_script('sample.py', f'--out_dir={tmp_path}', '--num_samples=1', '--max_new_tokens=5', env=ENV)
    run_script('eval_bpb.py', f'--out_dir={tmp_path}', f'--data_dir={data}', '--device=cpu', '--max_tokens=500', env=ENV)
    pytest.importorskip('transformers')
    run_script('export_hf.py', f'--out_dir={tmp_path}', f'--export_dir={tmp_path / "hf"}', env=ENV)
    cfg = json.load(open(tmp_path / 'hf' / 'config.json'))
    assert cfg['vocab_size'] == 50257


def test_generate_never_emits_an_id_the_encoding_cannot_decode():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=64)).eval()
    with torch.no_grad():
        model.lm_head.weight[40:] *= 50  # the padding rows would win most draws
    prompt = torch.zeros(8, 1, dtype=torch.long)
    free = model.generate(prompt, 12, temperature=1.0)
    assert (free >= 40).any()  # unmasked, padding ids do come out
    masked = model.generate(prompt, 12, temperature=1.0, n_vocab=40)
    assert (masked < 40).all()
    assert (model.generate(prompt, 12, temperature=0, n_vocab=40) < 40).all()


def test_sample_py_survives_a_model_that_favours_undecodable_ids(tmp_path):
    """A p50k model whose padding rows (50281..50303) dominate: every sampled id still decodes."""
    torch.manual_seed(0)
    args = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=50304, bias=False, dropout=0.0)
    model = GPT(GPTConfig(**args))
    with torch.no_grad():
        model.lm_head.weight[50281:] = 5.0  # tied: wte too, so every position prefers them
    save_checkpoint({'model': model.state_dict(), 'model_args': args, 'iter_num': 1, 'best_val_loss': 9.0,
                     'config': {}, 'encoding': 'p50k_base'}, str(tmp_path / 'ckpt.pt'))
    p = run_script('sample.py', f'--out_dir={tmp_path}', '--num_samples=2', '--max_new_tokens=30', env=ENV)
    assert 'sampled 2 x up to 30 tokens' in p.stdout


@pytest.mark.parametrize('encoding', ['r50k_base', 'p50k_base'])
def test_exported_tokenizer_and_model_match_tiktoken_and_sample_py(encoding, tmp_path):
    transformers = pytest.importorskip('transformers')
    data = str(tmp_path / 'tokens')
    make_token_dir(data, code_rows(), encoding=encoding)
    out = tmp_path / 'out'
    run_script('train.py', *TINY, f'--data_dir={data}', f'--out_dir={out}', '--max_iters=6', '--eval_interval=6', env=ENV)
    p = run_script('export_hf.py', f'--out_dir={out}', env=ENV)
    assert 'logits match ours' in p.stdout
    tok = transformers.AutoTokenizer.from_pretrained(out / 'hf')
    enc = shards.get_encoding(encoding)
    rows = code_rows()
    langs = {os.path.splitext(r['path'])[1] for r in rows}
    texts = [r['content'] for r in rows[::5][:30]]
    assert len(texts) >= 20 and len(langs) >= 5
    texts += ["def f():\n" + " " * 40 + "return 1\n\t\t  x", "x  = 'héllo' \t\n\n  # 中文 🙂\r\n", '']
    for text in texts:
        ids = tok(text)['input_ids']
        assert ids == enc.encode_ordinary(text)
        assert tok.decode(ids) == text
    assert tok.eos_token_id == shards.EOT and len(tok) == enc.n_vocab
    # greedy tokens of the exported model through its tokenizer = sample.py's
    prompt = 'import os\n\ndef main():\n    '
    p = run_script('sample.py', f'--out_dir={out}', '--temperature=0', '--num_samples=1', '--max_new_tokens=16',
                   f'--start={prompt}', env=ENV)
    ours = after_config_line(p.stdout).split('\n', 1)[1].split('\n---------------\n')[0]
    hf = transformers.GPT2LMHeadModel.from_pretrained(out / 'hf').eval()
    x = torch.tensor([[shards.EOT] + tok(prompt)['input_ids']])
    y = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=16, do_sample=False,
                    pad_token_id=shards.EOT)[0, x.size(1):].tolist()
    y = y[:y.index(shards.EOT)] if shards.EOT in y else y
    assert ours == prompt + tok.decode(y)
