"""model.py: parameter counts, init loss, learning, KV-cache generation, sampling filters, optimizer groups, FLOPs."""
import math

import pytest
import torch

from codegpt.decode import capture_decode_step, new_cache, sample_next
from codegpt.gpu import peak_flops
from codegpt.kernels import HeadLoss
from codegpt.optim import Muon, clip_grad_norm
from model import GPT, GPTConfig
from codegpt.shards import EOT
from torch.nn import functional as F


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    # tiny matmuls: a second thread only adds contention on a busy 2-core box
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(seed=0, scale=None, **kw):
    """A tiny GPT on CPU; scale re-draws the matrices with a larger std so greedy output varies with context."""
    torch.manual_seed(seed)
    args = dict(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False)
    args.update(kw)
    model = GPT(GPTConfig(**args))
    if scale:
        for p in model.parameters():
            if p.dim() >= 2:
                torch.nn.init.normal_(p, std=scale)
    return model.eval()


def test_gpt2_124m_counts_tied_embedding_once():
    with torch.device('meta'):  # the shapes are all that is counted: no 500 MB of weights
        model = GPT(GPTConfig())  # the reference run: vocab 50304, bias False
        gpt2 = GPT(GPTConfig(vocab_size=50257, bias=True))  # OpenAI's GPT-2 small exactly
    L, C, V, T = 12, 768, 50304, 1024
    non_embedding = L * (12 * C * C + 2 * C) + C  # attention 4C^2, MLP 8C^2, two LayerNorm gains per block; ln_f
    assert model.num_params(non_embedding=True) == non_embedding == 84_953_856
    assert model.num_params() == non_embedding + V * C + T * C == 124_373_760
    assert gpt2.num_params() == 124_439_808  # the published GPT-2 124M count (HF GPT2LMHeadModel)
    # counting lm_head apart from wte would give ~163M
    assert model.lm_head.weight is model.transformer.wte.weight


def test_init_loss_is_ln_vocab():
    model = tiny(vocab_size=512)
    idx = torch.randint(0, 512, (8, 32))
    targets = torch.randint(0, 512, (8, 32))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(512)) < 0.05, loss.item()


def test_tiny_model_overfits_one_batch():
    model = tiny(block_size=16).train()
    torch.manual_seed(1)
    x = torch.randint(0, 64, (4, 16))
    y = torch.randint(0, 64, (4, 16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(200):
        _, loss = model(x, y)
        first = first or loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, (first, loss.item())


ARCHS = pytest.mark.parametrize('arch', [{}, dict(arch='modern', softcap=15.0, tie_head=False)], ids=['gpt2', 'modern'])


@ARCHS
def test_greedy_with_kv_cache_equals_without_token_for_token(arch):
    model = tiny(scale=0.3, block_size=64, **arch)
    torch.manual_seed(2)
    for t in (1, 7, 23):
        prompt = torch.randint(0, 64, (3, t))
        n = 64 - t  # fill the context exactly: every cached position is used
        cached = model.generate(prompt, n, temperature=0, use_cache=True)
        full = model.generate(prompt, n, temperature=0, use_cache=False)
        assert cached.shape == (3, 64)
        assert torch.equal(cached, full), t
        # meaningful only if the output depends on the context rather than repeating one token
        assert len(set(cached[:, t:].flatten().tolist())) > 10


@ARCHS
def test_decode_step_at_a_device_side_position_matches_the_sliced_cache(arch):
    # the CUDA-graph decode step (fixed shapes: whole cache, later slots masked) against the plain one
    model = tiny(scale=0.3, block_size=32, **arch)
    prompt = torch.randint(0, 64, (3, 9))
    plain, static = new_cache(model, 3, prompt.device), new_cache(model, 3, prompt.device)
    with torch.no_grad():
        model(prompt, cache=plain, pos=0)
        model(prompt, cache=static, pos=0)
        tok = prompt[:, -1:]
        for pos in range(9, 32):
            want, _ = model(tok, cache=plain, pos=pos)
            got, _ = model(tok, cache=static, pos=torch.tensor(pos))
            assert torch.allclose(got, want, atol=1e-5), (pos, (got - want).abs().max())
            tok = want.argmax(-1)  # (3, 1)
    for (k1, v1), (k2, v2) in zip(plain, static):  # layer 2's inputs carry the masked kernel's rounding
        assert torch.allclose(k1, k2, atol=1e-5) and torch.allclose(v1, v2, atol=1e-5)


def test_compiled_decode_step_generates_the_same_tokens():
    # generate(compile_step=True): the fixed-shape step through torch.compile (on a GPU it is then
    # captured in a CUDA graph); past block_size the cache is refilled and the compiled step reused
    model = tiny(scale=0.3, block_size=48)
    torch.manual_seed(3)
    prompt = torch.randint(0, 64, (3, 7))
    eager = model.generate(prompt, 60, temperature=0, compile_step=False)
    compiled = model.generate(prompt, 60, temperature=0, compile_step=True)
    assert compiled.shape == (3, 67)
    assert torch.equal(compiled, eager)
    assert len(set(compiled[:, 7:].flatten().tolist())) > 10  # the context matters, not one repeated token


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_decode_equals_eager_on_gpu():
    model = tiny(scale=0.3, block_size=64).cuda()
    prompt = torch.randint(0, 64, (4, 5), device='cuda')
    eager = model.generate(prompt, 80, temperature=0, cuda_graph=False)  # runs past block_size: a re-capture
    graphed = model.generate(prompt, 80, temperature=0, cuda_graph=True)
    assert torch.equal(graphed, eager)
    compiled = model.generate(prompt, 80, temperature=0, cuda_graph=True, compile_step=True)
    assert torch.equal(compiled, eager)
    # bf16 autocast: each replay gives the logits of the same step run eagerly
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        replayed, direct = new_cache(model, 4, prompt.device), new_cache(model, 4, prompt.device)
        model(prompt, cache=replayed)
        model(prompt, cache=direct)
        tok = prompt[:, -1:]
        graph, g_tok, g_pos, g_logits = capture_decode_step(model, replayed, tok, 5)
        for pos in range(5, 30):
            g_tok.copy_(tok)
            g_pos.fill_(pos)
            graph.replay()
            want, _ = model(tok, cache=direct, pos=torch.tensor(pos, device='cuda'))
            assert torch.allclose(g_logits.float(), want.float(), atol=1e-2), pos
            tok = want.argmax(-1)
        out = model.generate(prompt, 50, temperature=0.8, top_p=0.9)
    assert out.shape == (4, 55) and int(out.max()) < 64


def test_generation_runs_past_block_size():
    model = tiny(scale=0.3, block_size=16)
    prompt = torch.randint(0, 64, (2, 5))
    for use_cache in (True, False):
        out = model.generate(prompt, 40, temperature=1.0, use_cache=use_cache)
        assert out.shape == (2, 45) and int(out.max()) < 64
    cached = model.generate(prompt, 40, temperature=0, use_cache=True)
    full = model.generate(prompt, 40, temperature=0, use_cache=False)
    # within the first block both read the same context
    assert torch.equal(cached[:, :16], full[:, :16])


def test_top_k_1_equals_greedy():
    model = tiny(scale=0.3)
    prompt = torch.randint(0, 64, (4, 3))
    greedy = model.generate(prompt, 20, temperature=0)
    torch.manual_seed(3)
    assert torch.equal(model.generate(prompt, 20, temperature=1.0, top_k=1), greedy)
    assert torch.equal(model.generate(prompt, 20, temperature=1.0, top_p=0.0), greedy)


def test_top_p_keeps_smallest_set_whose_mass_reaches_p():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # ranked: 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)
    logits = probs.log()[None].repeat(4000, 1)  # (4000, 4): many draws in one call
    torch.manual_seed(4)
    for top_p, kept in [(0.4, {1}), (0.5, {1}), (0.7, {1, 3}), (0.79, {1, 3}), (0.81, {1, 3, 2}),
                        (0.9, {1, 3, 2}), (0.97, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3})]:
        drawn = set(sample_next(logits.clone(), 1.0, None, top_p)[:, 0].tolist())
        assert drawn == kept, (top_p, drawn)
    # temperature 0 is argmax whatever the filters
    assert sample_next(logits[:2].clone(), 0, 2, 0.3)[:, 0].tolist() == [1, 1]


def test_stop_tokens_end_rows_and_generation():
    model = tiny(scale=0.3)
    torch.manual_seed(5)
    prompt = torch.randint(0, 64, (3, 4))
    free = model.generate(prompt, 24, temperature=0)
    stop = free[0, 4 + 5].item()  # the token row 0 emits at step 6
    out = model.generate(prompt, 24, temperature=0, stop_tokens=(stop,))
    for row_free, row in zip(free.tolist(), out.tolist()):
        gen = row_free[4:]
        if stop in gen:
            end = 4 + gen.index(stop) + 1
            assert row[:end] == row_free[:end]
            assert set(row[end:]) <= {stop}  # a done row repeats its stop token
        else:
            assert row == row_free[:len(row)]
    # one row: generation ends at the stop token
    one = model.generate(prompt[:1], 24, temperature=0, stop_tokens=(stop,))
    assert one.shape[1] == 4 + free[0, 4:].tolist().index(stop) + 1 and one[0, -1] == stop
    # stop_fn ends a row too
    out = model.generate(prompt, 24, temperature=0, stop_fn=lambda gen: torch.full((gen.size(0),), gen.size(1) >= 5))
    assert out.shape[1] == 4 + 5


def test_configure_optimizers_decays_matrices_only():
    model = tiny(bias=True)
    opts = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 'cpu')
    assert len(opts) == 1 and isinstance(opts[0], torch.optim.AdamW)
    decay, no_decay = opts[0].param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert decay['params'] and all(p.dim() >= 2 for p in decay['params'])
    assert no_decay['params'] and all(p.dim() < 2 for p in no_decay['params'])
    ids = {id(p) for p in decay['params'] + no_decay['params']}
    assert len(ids) == len(decay['params']) + len(no_decay['params']) == len(list(model.parameters()))


@pytest.mark.parametrize('tie_head, split_qkv, arch', [(True, False, 'gpt2'), (False, False, 'gpt2'), (True, True, 'gpt2'),
                                                      (False, False, 'modern')],
                         ids=['tied', 'untied', 'split-qkv', 'modern'])
def test_muon_takes_the_blocks_matrices_and_adamw_the_rest_each_parameter_once(tie_head, split_qkv, arch):
    model = tiny(bias=True, tie_head=tie_head, split_qkv=split_qkv, arch=arch)
    adamw, muon = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 'cpu',
                                             muon=dict(lr=0.02, momentum=0.95, weight_decay=0.0))
    assert isinstance(muon, torch.optim.Muon)
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = [names[id(p)] for g in muon.param_groups for p in g['params']]
    in_adamw = [names[id(p)] for g in adamw.param_groups for p in g['params']]
    assert sorted(in_muon + in_adamw) == sorted(names.values())  # every parameter, exactly once
    L, qkv = model.config.n_layer, ('attn.c_q', 'attn.c_k', 'attn.c_v') if split_qkv else ('attn.c_attn',)
    assert sorted(in_muon) == sorted(f'transformer.h.{i}.{m}.weight' for i in range(L)
                                     for m in (*qkv, 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj'))
    n = model.config.n_embd
    assert all(p.shape == ((n, n) if split_qkv else (3 * n, n)) for m, p in model.named_parameters() if 'attn.c_' in m
               and 'proj' not in m and p.dim() == 2)  # orthogonalised as three squares, or one stack
    assert 'transformer.wte.weight' in in_adamw and ('transformer.wpe.weight' in in_adamw) is (arch == 'gpt2')
    assert ('lm_head.weight' in in_adamw) is not tie_head  # a tied head is wte, listed once under that name
    assert muon.param_groups[0]['lr'] == 0.02 and all(g['lr'] == 6e-4 for g in adamw.param_groups)


CUDA = pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"))


@pytest.mark.parametrize('device', ['cpu', CUDA])
@pytest.mark.parametrize('autocast', [False, True], ids=['fp32', 'bf16'])
def test_head_loss_is_cross_entropy_with_its_gradients(device, autocast):
    # 20,000 entries: several of the CUDA kernel's 8,192-wide blocks, the last one partial
    torch.manual_seed(0)
    x = torch.randn(48, 40, device=device, requires_grad=True)
    w = (torch.randn(20000, 40, device=device) * 0.3).requires_grad_()
    t = torch.randint(0, 20000, (48,), device=device)
    t[[0, 5, 6]] = -1  # ignored: out of the mean and of the gradients
    grads = []
    for head in (HeadLoss.apply, lambda x, w, t: F.cross_entropy(F.linear(x, w).float(), t, ignore_index=-1)):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss = head(x, w, t)
        (loss * 0.375).backward()  # an upstream factor, as 1/grad_accum is
        grads.append((loss.detach(), x.grad, w.grad))
        x.grad = w.grad = None
    (loss, dx, dw), (ref_loss, ref_dx, ref_dw) = grads
    tol = dict(rtol=2e-2, atol=2e-2 * ref_dx.abs().max().item()) if autocast else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, ref_dx, **tol)
    torch.testing.assert_close(dw, ref_dw, **(tol if not autocast else dict(tol, atol=2e-2 * ref_dw.abs().max().item())))
    assert dx.dtype == x.dtype and dw.dtype == w.dtype and dx[[0, 5, 6]].abs().max() == 0 and ref_dx.abs().max() > 0


@pytest.mark.parametrize('device', ['cpu', CUDA])
def test_compiled_training_step_through_the_head_loss_gives_autograds_gradients(device):
    # the training forward (grad enabled, targets, no logits asked) goes through HeadLoss under
    # torch.compile; return_logits=True takes F.cross_entropy, eagerly here
    model = tiny(vocab_size=320).to(device)
    idx = torch.randint(0, 320, (4, 32), device=device)
    targets = torch.roll(idx, -1, 1)
    targets[0, :5] = -1
    grads = []
    for forward in (torch.compile(model), lambda i, t: model(i, t, return_logits=True)):
        with torch.autocast(device, dtype=torch.bfloat16):
            _, loss = forward(idx, targets)
        loss.backward()
        grads.append((loss.item(), {n: p.grad for n, p in model.named_parameters()}))
        model.zero_grad(set_to_none=True)
    (loss, ours), (ref_loss, ref) = grads
    assert loss == pytest.approx(ref_loss, rel=1e-3)
    for n, g in ref.items():
        assert ((ours[n] - g).norm() / g.norm()).item() < 2e-2, n


@pytest.mark.parametrize('device', ['cpu', CUDA])
@pytest.mark.parametrize('max_norm', [1.0, 1e6, 0.0], ids=['clipping', 'under-the-cap', 'off'])
def test_clip_folded_into_fused_adamw_steps_as_clip_grad_norm_then_step(max_norm, device):
    # AdamW (fused: its step takes the clip as grad_scale) on the embeddings and gains, Muon (scaled here) on the blocks
    def setup():
        model = tiny(bias=True).to(device)
        muon_params = [p for n, p in model.named_parameters() if n.startswith('transformer.h.') and p.dim() == 2]
        rest = [p for p in model.parameters() if all(p is not m for m in muon_params)]
        opts = [torch.optim.AdamW(rest, lr=1e-2, weight_decay=0.1, fused=True), Muon(muon_params, lr=0.02)]
        torch.manual_seed(1)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 3  # global norm ~300: max_norm=1 clips by ~300x
        return model, opts

    ref, ref_opts = setup()
    ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm if max_norm else float('inf'))
    ours, opts = setup()
    before = [p.grad.clone() for p in opts[0].param_groups[0]['params']]
    norm = clip_grad_norm(opts, max_norm)
    assert torch.allclose(norm, ref_norm) and norm > 100
    # the fold leaves AdamW's gradients for its kernel to scale; Muon's are scaled now
    assert all(torch.equal(g, p.grad) for g, p in zip(before, opts[0].param_groups[0]['params']))
    for o, r in zip(opts[1].param_groups[0]['params'], ref_opts[1].param_groups[0]['params']):
        torch.testing.assert_close(o.grad, r.grad, rtol=1e-6, atol=0)
    for o in (*opts, *ref_opts):
        o.step()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0, msg=name)  # fused AdamW stores what it stepped with
    # without the fold (a GradScaler owns grad_scale) every gradient is clipped in place before the step
    plain, plain_opts = setup()
    clip_grad_norm(plain_opts, max_norm, fold=False)
    assert not hasattr(plain_opts[0], 'grad_scale')
    for p, q in zip(plain.parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)


@pytest.mark.parametrize('weight_decay, nesterov, stack_numel', [(0.0, True, Muon.stack_numel), (0.1, False, Muon.stack_numel),
                                                               (0.1, True, 2 * 32 * 32)],
                         ids=['one-stack-a-size', 'decay-no-nesterov', 'stacks-of-two'])
def test_stacked_muon_steps_as_torch_muon_and_shares_its_state(weight_decay, nesterov, stack_numel, monkeypatch):
    # a block's sizes: square (projection), tall (c_attn, c_fc: sqrt(rows/cols) more rate) and wide (mlp.c_proj)
    monkeypatch.setattr(Muon, 'stack_numel', stack_numel)
    torch.manual_seed(0)
    start = [torch.randn(shape) * 0.02 for shape in [(96, 32), (32, 32), (128, 32), (32, 128)] * 3]
    grads = [[torch.randn(p.shape) for p in start] for _ in range(3)]

    def steps(cls, n):
        params = [p.clone().requires_grad_() for p in start]
        opt = cls(params, lr=0.02, momentum=0.95, weight_decay=weight_decay, nesterov=nesterov)
        for g in grads[:n]:
            for p, gp in zip(params, g):
                p.grad = gp.clone()
            opt.step()
        return [p.detach() for p in params], opt.state_dict()

    want, torch_state = steps(torch.optim.Muon, 3)
    got, our_state = steps(Muon, 3)
    change = min((w - s).abs().mean().item() for w, s in zip(want, start))  # the smallest matrix's mean change
    assert change > 1e-4
    # bf16 Newton-Schulz in a batched matmul may round apart from torch's one matmul a matrix, not by 1% of a step
    assert max((w - g).abs().max().item() for w, g in zip(want, got)) < 0.01 * change
    assert our_state['param_groups'] == torch_state['param_groups']
    for k, s in torch_state['state'].items():
        assert torch.allclose(s['momentum_buffer'], our_state['state'][k]['momentum_buffer'], rtol=0, atol=1e-7)
    # a checkpoint's torch.optim.Muon state carries on in ours: the step after it matches torch's third
    two, two_steps = steps(torch.optim.Muon, 2)
    params = [p.clone().requires_grad_() for p in two]
    opt = Muon(params, lr=0.02, momentum=0.95, weight_decay=weight_decay, nesterov=nesterov)
    opt.load_state_dict(two_steps)
    for p, gp in zip(params, grads[2]):
        p.grad = gp.clone()
    opt.step()
    assert max((w - p.detach()).abs().max().item() for w, p in zip(want, params)) < 0.01 * change


def test_split_qkv_is_the_same_model_as_one_c_attn_holding_the_stack():
    split, fused = tiny(bias=True, split_qkv=True, scale=0.3), tiny(bias=True)
    sd = split.state_dict()
    for i in range(split.config.n_layer):
        for kind in ('weight', 'bias'):
            sd[f'transformer.h.{i}.attn.c_attn.{kind}'] = torch.cat([sd.pop(f'transformer.h.{i}.attn.c_{p}.{kind}')
                                                                    for p in 'qkv'])
    fused.load_state_dict(sd)
    x = torch.randint(0, 64, (2, 32))
    with torch.no_grad():
        a, _ = split(x, targets=x, return_logits=True)
        b, _ = fused(x, targets=x, return_logits=True)
    assert torch.allclose(a, b, atol=1e-6) and a.std() > 0.1
    assert split.num_params() == fused.num_params() and split.flops_per_token() == fused.flops_per_token()
    out = split.generate(x[:, :4], 6, temperature=0)  # the cached decode goes through the same projection
    assert torch.equal(out, fused.generate(x[:, :4], 6, temperature=0))


def two_documents(vocab, seed=0):
    # (2, 32) windows of token ids: <|endoftext|> at 0, and a second document from position 12 (row 0) or 20 (row 1)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (2, 32), generator=g)
    x[:, 0] = x[0, 12] = x[1, 20] = EOT
    return x


def test_doc_mask_keeps_each_document_from_seeing_the_one_before():
    masked, plain = tiny(vocab_size=50304, doc_mask=True, scale=0.3), tiny(vocab_size=50304, scale=0.3)
    x = two_documents(100)
    y = x.clone()
    y[0, 1:12], y[1, 1:20] = (y[0, 1:12] + 1) % 100, (y[1, 1:20] + 1) % 100  # other first documents, same lengths
    with torch.no_grad():
        (a, _), (b, _) = (masked(t, targets=t, return_logits=True) for t in (x, y))
        (c, _), (d, _) = (plain(t, targets=t, return_logits=True) for t in (x, y))
    for row, start in ((0, 12), (1, 20)):
        assert torch.allclose(a[row, start:], b[row, start:], atol=1e-5)  # the second document: blind to the first
        assert not torch.allclose(c[row, start:], d[row, start:], atol=1e-3)  # without the mask it sees it
    assert torch.allclose(a[0, :12], c[0, :12], atol=1e-5)  # the first document: plain causal attention


def test_doc_mask_flex_block_mask_and_dense_mask_attend_alike():
    # the CUDA path (a FlexAttention BlockMask) against the CPU path (SDPA's dense mask); FlexAttention's
    # forward runs on a CPU too, so the two masks are compared here
    from model import document_mask, flex_attention
    x = two_documents(100)
    q, k, v = torch.randn(3, 2, 2, 32, 16).unbind(0)  # each (B, nh, T, hs)
    with torch.no_grad():
        flex = flex_attention(q, k, v, block_mask=document_mask(x, EOT, flex=True))
        dense = F.scaled_dot_product_attention(q, k, v, attn_mask=document_mask(x, EOT, flex=False))
    assert torch.allclose(flex, dense, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_doc_mask_on_gpu_flex_attention_gives_the_cpu_dense_masks_loss_and_gradients():
    import copy
    model = tiny(vocab_size=50304, doc_mask=True, scale=0.3)
    x = two_documents(100)
    _, loss = model(x, targets=x)
    loss.backward()
    want = {n: p.grad for n, p in model.named_parameters()}
    for compiled in (False, True):  # FlexAttention eager (its reference path), then its compiled kernel
        gpu = copy.deepcopy(model).cuda()
        gpu.zero_grad(set_to_none=True)
        run = torch.compile(gpu) if compiled else gpu
        _, got = run(x.cuda(), targets=x.cuda())
        got.backward()
        assert abs(got.item() - loss.item()) < 1e-4, compiled
        for n, p in gpu.named_parameters():
            assert torch.allclose(p.grad.cpu(), want[n], atol=1e-4), (compiled, n)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_doc_mask_on_gpu_over_many_blocks_and_documents_matches_cpu_in_eval_and_training():
    # windows of several 128-token blocks holding dozens of documents, compiled, first under no_grad
    # as train.py's first eval runs it, then a training forward and backward
    model = tiny(vocab_size=50304, block_size=512, doc_mask=True, scale=0.3)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 50256, (4, 512), generator=g)
    x[torch.rand(4, 512, generator=g) < 0.03] = EOT
    x[:, 0] = EOT
    with torch.no_grad():
        _, want = model(x, targets=x)
    run = torch.compile(model.cuda())
    run.eval()
    with torch.no_grad():
        _, got = run(x.cuda(), targets=x.cuda())
    assert abs(got.item() - want.item()) < 1e-4
    run.train()
    _, got = run(x.cuda(), targets=x.cuda())
    got.backward()
    assert abs(got.item() - want.item()) < 1e-4


def test_peak_flops_is_none_on_cpu_and_honours_override():
    assert peak_flops('cpu') is None
    assert peak_flops('cpu', 100.0) == 100e12
    assert peak_flops('cuda', 312) == 312e12


def test_flops_per_token_of_gpt2_124m_is_the_hand_computed_figure():
    # by hand: weights 38,633,472 (wte, 50304 x 768) + 786,432 (wpe) + 12 x 7,079,424 (a block: two
    # LayerNorms 1,536, qkv 1,769,472, attention proj 589,824, MLP 2 x 2,359,296) + 768 (ln_f)
    # = 124,373,760; 6 FLOPs each = 746,242,560. Attention: 12 layers x 12 heads x 64 x 1024 x 12
    # = 113,246,208. Total 859,488,768 FLOPs per token.
    with torch.device('meta'):
        big, untied = GPT(GPTConfig()), GPT(GPTConfig(tie_head=False))
    assert big.flops_per_token() == 859_488_768
    # an untied head adds 38.6M weights but no FLOPs: the embedding it frees is a lookup
    assert untied.num_params() == big.num_params() + 50304 * 768
    assert untied.flops_per_token() == 859_488_768


# --- the modern block --------------------------------------------------------------------------------

def test_rotary_turns_each_pair_of_a_head_by_its_positions_angle():
    from model import rotary_tables, rotate
    hs, theta = 8, 10000.0
    cos, sin = rotary_tables(16, hs, theta)  # (16, hs) each
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, hs)  # (B, nh, T, hs)
    got = rotate(x, cos, sin)
    for pos in (0, 1, 5, 15):
        for i in range(hs // 2):  # pair i: dims i and i + hs/2, turned by -pos * theta^(-2i/hs) (NanoChat's sense)
            a = -pos * theta ** (-2 * i / hs)
            turn = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
            want = turn @ torch.stack([x[0, 0, pos, i], x[0, 0, pos, i + hs // 2]])
            assert torch.allclose(torch.stack([got[0, 0, pos, i], got[0, 0, pos, i + hs // 2]]), want, atol=1e-6)
    # a rotation keeps lengths, and q.k depends on the positions only through their difference
    assert torch.allclose(got.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    q, k = torch.randn(hs), torch.randn(hs)
    dot = lambda i, j: (rotate(q.view(1, 1, 1, -1), cos[i:i + 1], sin[i:i + 1]) *
                        rotate(k.view(1, 1, 1, -1), cos[j:j + 1], sin[j:j + 1])).sum()
    assert torch.allclose(dot(3, 1), dot(9, 7), atol=1e-5) and not torch.allclose(dot(3, 1), dot(3, 2), atol=1e-3)


def test_the_modern_block_has_no_positions_norm_weights_or_biases_and_counts_its_flops():
    gpt2, modern = tiny(bias=True, tie_head=False), tiny(bias=True, arch='modern', tie_head=False)
    names = dict(modern.named_parameters())
    assert 'transformer.wpe.weight' not in names and not any('ln_' in n or n.endswith('.bias') for n in names)
    assert set(names) == {'transformer.wte.weight', 'lm_head.weight'} | {
        f'transformer.h.{i}.{m}.weight' for i in range(2) for m in ('attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj')}
    # FLOPs per token: every matrix but the untied embedding (a lookup), plus attention; no wpe, no gains
    cfg = modern.config
    matmuls = sum(p.numel() for n, p in names.items() if n != 'transformer.wte.weight')
    assert modern.flops_per_token() == 6 * matmuls + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
    # the same width and depth cost the same matmuls as GPT-2's, less its positions, gains and biases
    assert modern.num_params(non_embedding=True) < gpt2.num_params(non_embedding=True)


def test_softcap_bounds_the_logits_and_keeps_the_loss_on_the_capped_logits():
    model = tiny(scale=2.0, arch='modern', softcap=3.0)
    x = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        logits, loss = model(x, targets=x, return_logits=True)
    assert logits.abs().max() <= 3.0 and logits.abs().max() > 2.5  # large raw logits, squashed to the cap
    assert torch.allclose(loss, F.cross_entropy(logits.view(-1, 64), x.view(-1)), atol=1e-5)
    model.train()
    _, train_loss = model(x, x)  # the training path (no fused head when capped) gives the same loss
    assert torch.allclose(train_loss, loss, atol=1e-5)
