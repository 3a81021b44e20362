"""
Near-duplicate removal past one machine: datatrove's four MinHash stages (signatures, LSH buckets,
clusters, filter) over github-code parquet files, the kept documents written back as parquet in
github-code's own columns. The tokenize stage then reads that folder with its own dedup off.

tokenize_github_code.py's dedup (on by default) does the same job on one machine, and also keeps
the val copy of a cluster that spans its split; here each cluster keeps one document before any
split exists, so no copy can end up on both sides. Use this where the corpus outgrows one host:
with executor='slurm' every stage is a Slurm job array (datatrove's SlurmPipelineExecutor), each
task a slice of the input files, and the folders can be s3:// or any fsspec path.

Shingles are runs of `n_grams` words, words being runs of letters, digits and _ (the tokenize
stage's rule, codegpt/neardup.py), after datatrove's text normalisation. num_buckets bands of
hashes_per_bucket rows: the defaults (9 x 13) are the tokenize stage's at its Jaccard threshold 0.8
(a pair at 0.9 is caught 93% of the time, at 0.8 40%); datatrove's own (14 x 8) reach lower, 92%
at 0.8 and 56% at 0.7.

    python dedup_datatrove.py --in_dir=data/github-code/parquet --out_dir=data/github-code/parquet-dedup
    python tokenize_github_code.py --in_dir=data/github-code/parquet-dedup --dedup=False
    python dedup_datatrove.py --executor=slurm --tasks=1000 --partition=cpu --in_dir=s3://b/parquet --out_dir=s3://b/dedup

Writes out_dir/data/<task>.parquet (github-code's columns: content, repo_name, path, license, size) and
out_dir/dedup.json (the settings and the counts); datatrove's signatures, buckets, clusters and
logs go to work_dir. A rerun after a kill skips the tasks datatrove's logs mark done.
"""
import glob
import json
import os
import time

import pyarrow.parquet as pq

from codegpt.atomic import lock_dir, refuse_foreign, write_json
from codegpt.github_code import COLUMNS
from codegpt.neardup import WORD  # the tokenize stage's word: runs of letters, digits and _
from configurator import configure, die

# -----------------------------------------------------------------------------
in_dir = 'data/github-code/parquet'  # github-code parquet files (download_github_code.py's out_dir), searched recursively
out_dir = 'data/github-code/parquet-dedup'  # the kept documents as parquet, plus dedup.json
work_dir = 'data/github-code/dedup-work'  # datatrove's signatures, buckets, clusters and logs
executor = 'local'  # 'local' (processes on this machine) or 'slurm' (a job array per stage)
tasks = 0  # slices of the input files for stages 1 and 4 (each task reads its share of the files); 0 = one per file
workers = 0  # local: tasks run at once; 0 = one per CPU
n_grams = 5  # words per shingle
num_buckets = 9  # LSH bands
hashes_per_bucket = 13  # MinHash values per band (signature length = num_buckets * hashes_per_bucket)
seed = 1  # the MinHash permutations' seed
partition = ''  # slurm: the partition to run on
slurm_time = '10:00:00'  # slurm: each job's time limit
config = configure(globals())
# -----------------------------------------------------------------------------

if executor not in ('local', 'slurm'):
    die(f"executor='{executor}' is not 'local' or 'slurm'")
if executor == 'slurm' and not partition:
    die("executor='slurm' needs a partition: pass --partition=<your cluster's CPU partition>")
try:
    from datatrove.executor import LocalPipelineExecutor, SlurmPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer
except ImportError as e:
    die(f"dedup_datatrove.py needs datatrove ({e}); pip install datatrove")

local = '://' not in in_dir
in_files = sorted(glob.glob(os.path.join(in_dir, '**', '*.parquet'), recursive=True)) if local else []
if local and not in_files:
    die(f"in_dir '{in_dir}' holds no .parquet files; pass the folder download_github_code.py wrote")
if '://' not in out_dir:
    refuse_foreign(out_dir, 'dedup_datatrove.py', 'out_dir')  # a download, a token folder, a run: never ours to fill
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not (
            os.path.isfile(os.path.join(out_dir, 'dedup.json')) or os.path.isdir(os.path.join(out_dir, 'data'))):
        die(f"out_dir '{out_dir}' holds files that this script did not write; pass an empty or new folder "
            f"(that folder is left as it is)")
    lock = lock_dir(out_dir, 'dedup_datatrove.py')  # held until exit: one run into a folder at a time
n_tasks = tasks or max(1, len(in_files))  # a remote in_dir, unlisted here: one task unless tasks says more


class CodeWords(WordTokenizer):
    """Words as the tokenize stage counts them; datatrove asks only for word_tokenize in MinHash."""

    def word_tokenize(self, text):
        return WORD.findall(text)

    def sent_tokenize(self, text):
        return [text]

    def span_tokenize(self, text):
        return [(0, len(text))]


def as_github_code(self, document):
    """A kept document back in github-code's columns (the reader put all but `content` in metadata)."""
    return {'content': document.text, 'path': document.id, **{k: document.metadata.get(k) for k in COLUMNS if k not in ('content', 'path')}}


def reader():
    return ParquetReader(in_dir, text_key='content', id_key='path', glob_pattern='**/*.parquet')


def staged(name, pipeline, n, depends=None):
    """One stage as a local process pool or a Slurm job array; `depends` runs before it."""
    logs = os.path.join(work_dir, 'logs', name)
    if executor == 'local':
        # fork: a spawned worker would import this script again and run it from the top
        return LocalPipelineExecutor(pipeline, tasks=n, workers=min(n, workers or os.cpu_count()),
                                     logging_dir=logs, depends=depends, start_method='fork')
    return SlurmPipelineExecutor(pipeline, tasks=n, time=slurm_time, partition=partition, job_name=f"dedup-{name}",
                                 logging_dir=logs, depends=depends)


# sha1 shingle hashes: datatrove's xxhash path hands str to xxhash, which recent xxhash releases refuse
minhash = MinhashConfig(n_grams=n_grams, num_buckets=num_buckets, hashes_per_bucket=hashes_per_bucket, seed=seed,
                        hash_config=HashConfig(precision=64, hash_fc='sha1'))
sigs, buckets, clusters = (os.path.join(work_dir, d) for d in ('signatures', 'buckets', 'clusters'))
t0 = time.time()
stage1 = staged('1-signatures', [reader(), MinhashDedupSignature(sigs, config=minhash, language=CodeWords())], n_tasks)
stage2 = staged('2-buckets', [MinhashDedupBuckets(sigs, buckets, config=minhash)], num_buckets, depends=stage1)
stage3 = staged('3-clusters', [MinhashDedupCluster(buckets, clusters, config=minhash)], 1, depends=stage2)
stage4 = staged('4-filter', [reader(), MinhashDedupFilter(clusters),
                             ParquetWriter(os.path.join(out_dir, 'data'), output_filename='${rank}.parquet',
                                           adapter=as_github_code)], n_tasks, depends=stage3)
stage4.run()  # runs the stages it depends on first; each skips the tasks its logs mark done
if executor == 'slurm':
    print(f"dedup_datatrove: 4 stages submitted to slurm partition {partition}; logs in {work_dir}/logs")
    raise SystemExit(0)

# --- summary: what went in, what stayed ------------------------------------------------------------
def count(files):
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return rows, sum(os.path.getsize(f) for f in files)


docs_in, bytes_in = count(in_files)
docs_out, bytes_out = count(sorted(glob.glob(os.path.join(out_dir, 'data', '*.parquet'))))
summary = dict(made_by='dedup_datatrove.py', in_dir=in_dir, config=config, documents_in=docs_in, documents_kept=docs_out,
               parquet_bytes_in=bytes_in, parquet_bytes_kept=bytes_out, tasks=n_tasks)
if docs_in and not docs_out:
    die(f"dedup_datatrove: no document of {in_dir} was kept; are its files github-code parquet (a 'content' column)? "
        f"datatrove's logs are in {work_dir}/logs")
write_json(os.path.join(out_dir, 'dedup.json'), summary)
print(f"dedup_datatrove: kept {docs_out:,} of {docs_in:,} documents ({1 - docs_out / max(docs_in, 1):.1%} removed as "
      f"near duplicates) in {time.time() - t0:.1f}s; {out_dir}/data -> python tokenize_github_code.py "
      f"--in_dir={out_dir}/data --dedup=False")
