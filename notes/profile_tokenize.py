"""
Where a tokenize worker's CPU time goes, against the raw encoder, on one machine.
Run after bench_tokenize.py, which leaves its parquet corpus in /tmp/bench_tokenize/parquet:

    python notes/profile_tokenize.py [parquet_dir]

For the same documents, prints CPU seconds (time.process_time) and tokens per CPU-second of:
the raw baselines (encode_ordinary_batch with 1 thread, an encode_ordinary loop, an
encode_to_numpy loop) and the parts of tokenize_file's loop (parquet read + to_pylist, filters,
encode, the uint16 write), then cProfile's top functions of tokenize_file on one file.
"""
import cProfile
import glob
import os
import pstats
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tiktoken  # noqa: E402

import tokenize_github_code as tg  # noqa: E402
from github_code import LANGUAGES  # noqa: E402
from shards import get_encoding  # noqa: E402

in_dir = sys.argv[1] if len(sys.argv) > 1 else '/tmp/bench_tokenize/parquet'
paths = sorted(glob.glob(os.path.join(in_dir, '*.parquet')))[:4]
print(f"tiktoken {tiktoken.__version__}, pyarrow {pa.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}, "
      f"{os.cpu_count()} CPUs, {len(paths)} files of {in_dir}")
enc = get_encoding('r50k_base')


def cpu(fn):
    c0 = time.process_time()
    out = fn()
    return out, time.process_time() - c0


docs, t_read = cpu(lambda: [d for p in paths for d in pq.read_table(p, columns=['content']).column('content').to_pylist()])
n_bytes = sum(len(d.encode()) for d in docs)
toks, t_batch = cpu(lambda: enc.encode_ordinary_batch(docs, num_threads=1))
n = sum(map(len, toks)) + len(docs)
_, t_loop = cpu(lambda: [enc.encode_ordinary(d) for d in docs])
arrs, t_np = cpu(lambda: [enc.encode_to_numpy(d, disallowed_special=()) for d in docs])
assert all(np.array_equal(a, t) for a, t in zip(arrs, toks))
_, t_filter = cpu(lambda: [tg.first_failed_filter(d, len(d), 'Python', 'mit', dict(
    languages=LANGUAGES, licenses=None, max_file_bytes=1 << 20, min_chars=10, max_line_length=1000)) for d in docs])
_, t_write = cpu(lambda: np.concatenate(arrs).astype(np.uint16).tofile(os.devnull))
print(f"{len(docs):,} documents, {n_bytes / 1e6:.1f} MB, {n:,} tokens")
for name, t in (('parquet read + to_pylist', t_read), ('encode_ordinary_batch(num_threads=1)', t_batch),
                ('encode_ordinary loop', t_loop), ('encode_to_numpy loop', t_np), ('filters', t_filter),
                ('concatenate + uint16 + write', t_write)):
    print(f"  {name:40s} {t:7.2f} CPU-s  {n / t / 1e6:8.2f}M tokens per CPU-second")

with tempfile.TemporaryDirectory() as work:
    settings = dict(languages=LANGUAGES, licenses=None, max_file_bytes=1 << 20, min_chars=10, max_line_length=1000,
                    val_fraction=0.01, seed=0, batch_rows=1024)
    jobs = [dict(index=k, path=p, sha256='0' * 64, work=work, settings=settings) for k, p in enumerate(paths)]
    prof = cProfile.Profile()
    c0 = time.process_time()
    prof.enable()
    done = [tg.tokenize_file(j) for j in jobs]
    prof.disable()
    t_stage = time.process_time() - c0
    n_stage = sum(st['tokens'] for d in done for st in d['train'].values()) + sum(v[1] for d in done for v in d['val_docs'])
    print(f"  {'tokenize_file (in this process, profiled)':40s} {t_stage:7.2f} CPU-s  {n_stage / t_stage / 1e6:8.2f}M tokens per CPU-second "
          f"({n_stage:,} tokens)")
    pstats.Stats(prof).sort_stats('tottime').print_stats(12)
