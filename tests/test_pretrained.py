"""train.py --init_from=<a GPT-2 on the hub or in a folder>: the real huggingface_hub client against a
loopback server that serves a small GPT-2 in OpenAI's file layout; the mapping checked against
transformers' own GPT2LMHeadModel."""
import hashlib
import http.server
import json
import os
import threading

import pytest
import torch

from model import GPT
from conftest import code_rows, make_token_dir, one_line_error, run_script

from codegpt import shards

transformers = pytest.importorskip('transformers')
safetensors_torch = pytest.importorskip('safetensors.torch')

TINY = ['--block_size=32', '--batch_size=4', '--gradient_accumulation_steps=2', '--eval_iters=2',
        '--log_interval=1', '--compile=False', '--device=cpu', '--dtype=float32', '--warmup_iters=2',
        '--learning_rate=1e-3', '--eval_interval=3']
REPO = 'openai-community/gpt2'
COMMIT = 'c0ffee' * 6 + 'c0ff'  # any 40 hex digits


@pytest.fixture(scope='module')
def token_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('tokens') / 'tokens')
    make_token_dir(path, code_rows(per_language=10))
    return path


@pytest.fixture(scope='module')
def gpt2_folder(tmp_path_factory):
    """A 2-layer GPT2LMHeadModel as transformers writes it, with every weight and bias random and
    OpenAI's tanh GELU, so a dropped bias, an untransposed Conv1D or the wrong GELU all show."""
    folder = tmp_path_factory.mktemp('hf') / 'gpt2-tiny'
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257,
                                  activation_function='gelu_new', resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    hf.save_pretrained(folder)
    return folder


def openai_layout(folder):
    """The files of the hub's openai-community/gpt2: keys without 'transformer.', the causal-mask
    buffers in, no lm_head. Returns {filename: bytes}."""
    sd = safetensors_torch.load_file(os.path.join(folder, 'model.safetensors'))
    sd = {k.removeprefix('transformer.'): v for k, v in sd.items() if k != 'lm_head.weight'}
    for i in range(2):
        sd[f'h.{i}.attn.bias'] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
    return {'config.json': open(os.path.join(folder, 'config.json'), 'rb').read(),
            'model.safetensors': safetensors_torch.save(sd)}


class Hub(http.server.BaseHTTPRequestHandler):
    """GET/HEAD /<repo>/resolve/<rev>/<file>, with the headers huggingface_hub reads (commit, ETag as
    the hub gives it: sha256 for LFS files, the git blob sha1 otherwise) and byte ranges."""
    files, damaged = {}, set()

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.do_GET(body=False)

    def do_GET(self, body=True):
        prefix = f'/{REPO}/resolve/main/'
        name = self.path[len(prefix):] if self.path.startswith(prefix) else None
        if name not in self.files:
            self.send_response(404)
            self.send_header('X-Error-Code', 'EntryNotFound' if name else 'RepoNotFound')
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        data = self.files[name]
        lfs = name.endswith('.safetensors')
        etag = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()
        if name in self.damaged:
            data = data[:-1] + bytes([data[-1] ^ 1])  # one flipped bit, same size
        start = int(self.headers['Range'].split('=')[1].split('-')[0]) if self.headers.get('Range') else 0
        self.send_response(206 if start else 200)
        self.send_header('X-Repo-Commit', COMMIT)
        self.send_header('ETag', f'"{etag}"')
        if lfs:
            self.send_header('X-Linked-Etag', f'"{etag}"')
            self.send_header('X-Linked-Size', str(len(data)))
        self.send_header('Content-Length', str(len(data) - start))
        self.send_header('Accept-Ranges', 'bytes')
        self.end_headers()
        if body:
            self.wfile.write(data[start:])


@pytest.fixture(scope='module')
def hub(gpt2_folder):
    Hub.files = openai_layout(gpt2_folder)
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


def train(token_dir, out_dir, *args, endpoint, cache, check=True):
    # one thread: the same kernel splits in every run, so a resumed run matches bit for bit on a busy machine too
    env = {'HF_ENDPOINT': endpoint, 'HF_HOME': str(cache), 'HF_HUB_DISABLE_TELEMETRY': '1', 'OMP_NUM_THREADS': '1'}
    return run_script('train.py', *TINY, f'--data_dir={token_dir}', f'--out_dir={out_dir}', *args, check=check, env=env)


def real_code(n):
    with open(shards.__file__) as f:
        return torch.tensor([shards.get_encoding('r50k_base').encode_ordinary(f.read())[:n]])


def our_logits(ckpt_path, x):
    from codegpt.checkpoint import find_and_load
    model = GPT.from_checkpoint(find_and_load(str(ckpt_path))[0]).eval()
    with torch.no_grad():
        return model(x, targets=x, return_logits=True)[0]  # (1, t, vocab_size)


def test_gpt2_from_the_hub_has_transformers_logits_and_finetunes_and_resumes_exactly(token_dir, gpt2_folder, hub, tmp_path):
    cache = tmp_path / 'hf-home'
    p = train(token_dir, tmp_path / 'start', '--init_from=gpt2', '--max_iters=0', endpoint=hub, cache=cache)
    assert 'parameters:' in p.stdout
    blobs = os.listdir(cache / 'hub' / 'models--openai-community--gpt2' / 'blobs')
    assert len(blobs) == 2  # config.json and model.safetensors, nothing else fetched
    ck = torch.load(tmp_path / 'start' / 'ckpt.pt', weights_only=True)
    assert ck['model_args']['bias'] is True and ck['model_args']['gelu'] == 'tanh'
    assert ck['model_args']['n_layer'] == 2 and ck['model_args']['n_embd'] == 32  # the model's shape, not the defaults
    x = real_code(32)
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_folder).eval()
    with torch.no_grad():
        want = hf(x).logits  # (1, 32, 50257)
    got = our_logits(tmp_path / 'start' / 'ckpt.pt', x)
    assert (got[..., :50257] - want).abs().max() < 1e-4
    # the padding rows start at the mean row: their logit is the average logit, far below the top
    assert torch.allclose(got[..., 50257:], want.mean(-1, keepdim=True).expand(-1, -1, 47), atol=1e-4)

    # a fine-tune, and the same one stopped at step 3 and resumed with the hub gone: the same bytes
    train(token_dir, tmp_path / 'whole', '--init_from=gpt2', '--max_iters=6', endpoint=hub, cache=cache)
    train(token_dir, tmp_path / 'split', '--init_from=gpt2', '--max_iters=3', endpoint=hub, cache=cache)
    p = train(token_dir, tmp_path / 'split', '--init_from=resume', '--max_iters=6', endpoint='http://127.0.0.1:9',
              cache=tmp_path / 'empty-cache')
    assert 'resuming' in p.stdout
    a = torch.load(tmp_path / 'whole' / 'ckpt.pt', weights_only=True)
    b = torch.load(tmp_path / 'split' / 'ckpt.pt', weights_only=True)
    assert a['iter_num'] == b['iter_num'] == 6
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert not torch.equal(a['model']['transformer.h.0.mlp.c_fc.bias'], ck['model']['transformer.h.0.mlp.c_fc.bias'])

    # and the fine-tune exports back to a GPT2LMHeadModel with the same logits (export_hf checks them)
    p = run_script('export_hf.py', f'--out_dir={tmp_path / "whole"}', '--tokenizer=False')
    assert 'logits match ours' in p.stdout
    assert json.load(open(tmp_path / 'whole' / 'hf' / 'config.json'))['activation_function'] == 'gelu_new'


def test_a_local_folder_and_p50k_rows(p50k_dir, gpt2_folder, tmp_path):
    p = run_script('train.py', *TINY, f'--data_dir={p50k_dir}', f'--out_dir={tmp_path / "o"}',
                   f'--init_from={gpt2_folder}', '--max_iters=0')
    assert 'parameters:' in p.stdout
    wte = torch.load(tmp_path / 'o' / 'ckpt.pt', weights_only=True)['model']['transformer.wte.weight']
    theirs = safetensors_torch.load_file(os.path.join(gpt2_folder, 'model.safetensors'))['transformer.wte.weight']
    assert torch.equal(wte[:50257], theirs)
    # p50k's runs of spaces are spelled in r50k as single spaces (220): each starts as that row
    assert torch.allclose(wte[50257:50281], theirs[220].expand(24, -1), atol=1e-6)
    assert torch.allclose(wte[50281:], theirs.mean(0).expand(50304 - 50281, -1))


def test_pretrained_inputs_that_cannot_work_are_one_line_each(token_dir, gpt2_folder, hub, tmp_path):
    cache = tmp_path / 'hf-home'
    go = lambda *a, endpoint=hub, cache=cache: train(token_dir, tmp_path / 'o', '--max_iters=0', *a,
                                                      endpoint=endpoint, cache=cache, check=False)
    one_line_error(go('--init_from=gpt2', '--n_layer=3'), 'another shape', 'n_layer=2 (config: 3)')
    one_line_error(go('--init_from=gpt2', '--block_size=128'), 'block_size 128', '64 positions')
    one_line_error(go('--init_from=gpt2', '--zero_init_proj=True'), 'zero_init_proj')
    one_line_error(go('--init_from=gpt2', '--split_qkv=True'), 'split_qkv', 'c_attn')
    one_line_error(go('--init_from=gpt3'), "init_from='gpt3'", 'gpt2-medium', 'folder')
    one_line_error(go('--init_from=gpt2', endpoint='http://127.0.0.1:9', cache=tmp_path / 'none'),
                   'cannot reach http://127.0.0.1:9', 'not in the cache', '--init_from=<folder')
    one_line_error(go('--init_from=gpt2', '--tie_head=False'), 'another shape', 'tie_head=True (config: False)')
    assert not (tmp_path / 'o' / 'ckpt.pt').exists()
    # a hub repo without the weights file
    files = Hub.files
    Hub.files = {'config.json': files['config.json']}
    try:
        one_line_error(go('--init_from=gpt2', cache=tmp_path / 'fresh0'), f'{REPO} on {hub} has no model.safetensors')
    finally:
        Hub.files = files
    # a download that does not match the hub's hash is refused, and names the file to delete
    Hub.damaged = {'model.safetensors'}
    try:
        one_line_error(go('--init_from=gpt2', cache=tmp_path / 'fresh'), "does not match the hub's hash", 'delete')
    finally:
        Hub.damaged = set()


def test_a_folder_that_is_no_model_we_can_hold_is_refused_naming_what(gpt2_folder, tmp_path):
    # the library raises one line (train.py prints it: the CLI cases above); here each folder's cause
    from codegpt import pretrained
    from codegpt.errors import UserError
    cfg = json.loads((gpt2_folder / 'config.json').read_text())
    weights = (gpt2_folder / 'model.safetensors').read_bytes()
    cases = [('llama', {'model_type': 'llama'}, b'', "'llama' model, not GPT-2"),
             ('half', cfg, None, 'has no model.safetensors'),
             ('untied', {**cfg, 'tie_word_embeddings': False}, weights, 'unties the head'),  # stores no head of its own
             ('fewer_layers', {**cfg, 'n_layer': 1}, weights, 'says 1 layers but model.safetensors holds 2'),
             ('wider', {**cfg, 'n_embd': 48}, weights, 'of shape (50257, 32)'),
             ('heads', {**cfg, 'n_head': 5}, weights, '5 attention heads for a width of 32')]
    for name, config, data, needle in cases:
        folder = tmp_path / name
        folder.mkdir()
        (folder / 'config.json').write_text(json.dumps(config))
        if data is not None:
            (folder / 'model.safetensors').write_bytes(data)
        with pytest.raises(UserError) as e:
            pretrained.load(str(folder), 32, 50304, 'r50k_base')
        assert needle in str(e.value) and str(folder) in str(e.value) and '\n' not in str(e.value), (name, e.value)


def test_a_folder_whose_config_json_disagrees_with_its_weights_is_one_line(token_dir, gpt2_folder, hub, tmp_path):
    cfg = json.loads((gpt2_folder / 'config.json').read_text())
    folder = tmp_path / 'fewer_layers'
    folder.mkdir()
    (folder / 'config.json').write_text(json.dumps({**cfg, 'n_layer': 1}))
    (folder / 'model.safetensors').write_bytes((gpt2_folder / 'model.safetensors').read_bytes())
    p = train(token_dir, tmp_path / 'o', '--max_iters=0', f'--init_from={folder}', endpoint=hub,
              cache=tmp_path / 'hf-home', check=False)
    one_line_error(p, str(folder), 'says 1 layers but model.safetensors holds 2')
    assert not (tmp_path / 'o' / 'ckpt.pt').exists()
