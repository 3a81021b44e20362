"""
Stage 1: fetch parquet shards of codeparrot/github-code for the tokenize stage.

Writes out_dir/data/train-XXXXX-of-YYYYY.parquet (the hub's own paths) and out_dir/manifest.json:
    {"repo_id", "revision", "commit_sha", "source": "hub"|"local",
     "files": [{"name": "data/train-00000-of-01126.parquet", "size", "sha256", "rows"}, ...], ...}
The tokenize stage reads `files` in order. Raw columns: content, repo_name, path, license, size.

source='hub': lists the dataset's data/ folder at one resolved commit, downloads in parallel with
resume of partial files (*.incomplete), and keeps a file only once its sha256 matches the hub's
LFS oid. A rerun skips files the manifest vouches for (same size and timestamps) and re-hashes
the others, so a corrupt or truncated file is fetched again.
source='local': turns local source trees (default: this Python's standard library) into shards of
the same schema and naming, offline and byte-for-byte deterministic (local_source.py).

    python download_github_code.py                                  # the reference 38 shards (~10.8 GB)
    python download_github_code.py --num_shards=2 --workers=2       # a quick look at the data
    python download_github_code.py --shards=[0,7,42] --revision=<commit sha from an earlier manifest>
    python download_github_code.py --source=local                   # offline: the stdlib as a tiny github-code
"""
import errno
import json
import os
import re
import shutil
import sysconfig
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from codegpt import github_code
from codegpt import local_source
from codegpt.atomic import lock_dir, refuse_foreign, write_json
from configurator import configure, die
from codegpt.errors import NetworkError, UserError
from codegpt.local_source import sha256_of

# -----------------------------------------------------------------------------
repo_id = 'codeparrot/github-code'  # dataset repo on the hub
revision = 'main'  # branch, tag or commit sha; the resolved commit goes into the manifest
num_shards = 38  # how many consecutive shards to fetch (~285 MB each)
shard_start = 0  # index of the first of those shards
shards = None  # explicit shard indices, e.g. [0,7,42]; overrides num_shards/shard_start
out_dir = 'data/github-code/parquet'  # parquet files at their hub paths, plus manifest.json
workers = 4  # parallel downloads
source = 'hub'  # 'hub', or 'local' to build shards from local_paths without a network
endpoint = None  # hub URL; None uses $HF_ENDPOINT or https://huggingface.co
local_paths = [sysconfig.get_paths()['stdlib']]  # source trees for source='local'; each top folder is a repo
local_exclude = ['site-packages', 'dist-packages', '__pycache__', '.git', 'node_modules']  # folder names not walked
local_shard_bytes = 16_000_000  # UTF-8 content bytes per local shard (snappy parquet is ~3x smaller)
local_max_file_bytes = 1_000_000  # skip larger files, as the dataset did
# -----------------------------------------------------------------------------
config = configure(globals())

_manifest_path = os.path.join(out_dir, 'manifest.json')
_shard_re = re.compile(r'data/train-(\d{5})-of-(\d{5})\.parquet')


# --- checks on the config, before anything touches the network or the disk
if source not in ('hub', 'local'):
    die(f"source={source!r} is not known; use --source=hub or --source=local")
if shards is not None:  # --shards=5, --shards=0,3 (a tuple) and --shards=[0,3] all work
    items = shards.split(',') if isinstance(shards, str) else shards if isinstance(shards, (list, tuple)) else [shards]
    try:
        indices = list(dict.fromkeys(int(i) for i in items))
    except (TypeError, ValueError):
        die(f"shards={shards!r} must be a list of shard indices, e.g. --shards=[0,7,42]")
else:
    if num_shards < 1 or shard_start < 0:
        die(f"num_shards={num_shards} and shard_start={shard_start} must be >= 1 and >= 0")
    indices = list(range(shard_start, shard_start + num_shards))
if workers < 1 or local_shard_bytes < 1:
    die(f"workers={workers} and local_shard_bytes={local_shard_bytes} must be >= 1")


def parquet_rows(path):
    """Row count of a parquet file in the raw github-code schema; UserError if it is anything else."""
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise UserError(f"{path} is not a readable parquet file ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        f"delete it and rerun")
    bad = [f"{col}: {t}" for col, t in github_code.schema_problems(pf.schema_arrow)]
    if bad:
        raise UserError(f"{path} does not have github-code's columns {', '.join(github_code.COLUMNS)} ({'; '.join(bad)}); "
                        f"check repo_id={repo_id!r}")
    return pf.metadata.num_rows


# --- hub source: resolve the revision to a commit and list the data/ folder
def hub_error(e, what, ep):
    """A hub exception as the error to raise, with one actionable line: NetworkError when the hub
    did not answer, UserError when it answered no."""
    status = getattr(getattr(e, 'response', None), 'status_code', None)
    msg = (str(e).strip().splitlines() or [''])[0][:200]
    if 'Offline' in type(e).__name__:
        return UserError(f"{what}: HF_HUB_OFFLINE is set; unset it, or run offline with --source=local")
    if status is None:
        return NetworkError(f"cannot reach the hub at {ep} ({type(e).__name__}: {msg}); check the network, set "
                            f"HF_ENDPOINT to a reachable mirror, or run offline with --source=local")
    if status in (401, 403):
        return UserError(f"{what}: {ep} refused access (HTTP {status}); log in with `hf auth login` or check repo_id")
    if status == 404:
        return UserError(f"{what} not found at {ep} (HTTP 404); check repo_id={repo_id!r} and revision={revision!r}")
    return NetworkError(f"{what}: {ep} answered HTTP {status} ({msg}); retry later, or set HF_ENDPOINT to a mirror")


def list_hub(api, ep):
    """(commit sha, {name: (size, sha256)}, shard count) for the dataset's data/train-*.parquet files."""
    try:
        commit = api.dataset_info(repo_id, revision=revision).sha or revision
    except Exception as e:
        raise hub_error(e, f"dataset {repo_id}@{revision}", ep)
    try:  # the hub pages this listing (1000 entries a page); huggingface_hub follows the Link headers
        entries = list(api.list_repo_tree(repo_id, path_in_repo='data', revision=commit, repo_type='dataset'))
    except Exception as e:
        raise hub_error(e, f"data/ folder of {repo_id}@{commit}", ep)
    listed, counts = {}, Counter()
    for entry in entries:
        m = _shard_re.fullmatch(entry.path)
        lfs = getattr(entry, 'lfs', None)
        if m is None or lfs is None:
            continue  # folders, READMEs, and small non-LFS files are not shards
        sha = getattr(lfs, 'sha256', None) or lfs.get('sha256') or lfs.get('oid')
        listed[entry.path] = (entry.size, sha)
        counts[int(m.group(2))] += 1
    if not listed:
        raise UserError(f"{repo_id}@{commit} at {ep} has no data/train-XXXXX-of-YYYYY.parquet files; check repo_id")
    return commit, listed, counts.most_common(1)[0][0]


# --- hub source: download with resume, verify sha256 against the LFS oid
_stop = threading.Event()  # set when one download failed or on Ctrl-C: the others stop at their next chunk
_bar_lock = threading.Lock()
_bar = None


class _Stopped(Exception):
    pass


def bar_update(n):
    with _bar_lock:
        _bar.update(n)


class _CountingFile:
    """The file http_get writes to: counts bytes on the shared progress bar, aborts when told to stop."""

    def __init__(self, f):
        self.f = f

    def write(self, chunk):
        if _stop.is_set():
            raise _Stopped()
        n = self.f.write(chunk)
        bar_update(len(chunk))
        return n

    def __getattr__(self, name):
        return getattr(self.f, name)


def download(name, size, commit, ep, part):
    """Download one file into `part`, continuing a partial one with a Range request."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers
    url = hf_hub_url(repo_id, name, repo_type='dataset', revision=commit, endpoint=endpoint)
    for attempt in range(3):  # HEAD: where the bytes live (the hub redirects to a CDN)
        try:
            location = get_hf_file_metadata(url).location
            break
        except Exception as e:
            if getattr(getattr(e, 'response', None), 'status_code', None) == 404:
                raise UserError(f"{name} is missing on the hub ({repo_id}@{commit} at {ep}); choose other shards")
            if attempt == 2 or getattr(getattr(e, 'response', None), 'status_code', None) is not None:
                raise hub_error(e, f"{name} of {repo_id}@{commit}", ep)
            time.sleep(1)
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if have > size:  # not a prefix of this file: start over
        os.remove(part)
        have = 0
    bar_update(have)
    with open(part, 'ab') as f:
        try:
            http_get(location, _CountingFile(f), resume_size=have, headers=build_hf_headers(), expected_size=size,
                     displayed_filename=name)
        except (_Stopped, UserError):
            raise
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise UserError(f"disk full writing {part} ({f.tell()} of {size} bytes); free space and rerun, "
                                f"the partial file is kept and resumes")
            raise NetworkError(f"download of {name} from {ep} stopped at {f.tell()} of {size} bytes ({e}); "
                               f"rerun to resume from {part}")
        except Exception as e:
            status = getattr(getattr(e, 'response', None), 'status_code', None)
            if status is not None:
                raise hub_error(e, f"{name} of {repo_id}@{commit}", ep)
            raise NetworkError(f"download of {name} from {ep} stopped at {f.tell()} of {size} bytes "
                               f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}); rerun to resume from {part}")
        f.flush()
        os.fsync(f.fileno())


def fetch(name, size, sha, commit, ep):
    """Make out_dir/<name> a verified copy of the hub's file: keep it if its sha256 matches, else download."""
    path = os.path.join(out_dir, name)
    part = path + '.incomplete'
    if _stop.is_set():
        raise _Stopped()
    if os.path.exists(path):  # not vouched for by the manifest: hash it once
        if os.path.getsize(path) == size and sha256_of(path) == sha:
            bar_update(size)
            return False
        os.remove(path)  # corrupt or truncated: fetch it again
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for attempt in range(2):  # a bad partial or bad bytes from the server get one fresh retry
        download(name, size, commit, ep, part)
        got = sha256_of(part)
        if got == sha:
            os.replace(part, path)
            return True
        os.remove(part)
        bar_update(-size)
        if attempt == 0:
            print(f"{name}: sha256 {got[:12]}... does not match the hub's {sha[:12]}...; fetching it afresh")
    raise UserError(f"{name} from {ep} still has sha256 {got} after a fresh download, but the hub's LFS oid is {sha}; "
                    f"a proxy or mirror serves bad bytes: retry later or set HF_ENDPOINT")


def fetch_or_stop(*args):
    try:
        return fetch(*args)
    except BaseException:
        _stop.set()  # the other workers stop at their next chunk; their partial files stay for resume
        raise


def download_from_hub():
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import disable_progress_bars, logging as hf_logging
    from tqdm import tqdm
    global _bar
    disable_progress_bars()  # one bar over all bytes instead of one per file
    hf_logging.set_verbosity_error()  # its retry warnings would bury our one-line errors
    ep = (endpoint or constants.ENDPOINT).rstrip('/')
    api = HfApi(endpoint=endpoint)
    commit, listed, count = list_hub(api, ep)
    print(f"{repo_id}@{revision} is commit {commit} at {ep}: {len(listed)} shards listed (of-{count:05d})")

    bad = [i for i in indices if not 0 <= i < count]
    if bad:
        raise UserError(f"shard index {bad[0]} is out of range: {repo_id}@{commit[:12]} has {count} shards (0..{count - 1}); "
                        f"lower shard_start/num_shards or fix shards")
    names = [github_code.shard_name(i, count) for i in indices]
    missing = [n for n in names if n not in listed]
    if missing:
        raise UserError(f"{missing[0]} is missing on the hub ({repo_id}@{commit[:12]} at {ep}"
                        f"{f', and {len(missing) - 1} more' if len(missing) > 1 else ''}); choose other shards")

    # files the last manifest vouches for (same content id, size and timestamps) are not hashed again
    old = {}
    if os.path.exists(_manifest_path):
        try:
            with open(_manifest_path) as f:
                m = json.load(f)
            if m.get('source') == 'hub':
                old = {e['name']: e for e in m.get('files', [])}
        except (OSError, ValueError, KeyError, TypeError):
            old = {}  # unreadable: every file is simply re-verified
    todo = []
    for name in names:
        size, sha = listed[name]
        e = old.get(name)
        try:
            st = os.stat(os.path.join(out_dir, name))
        except OSError:
            st = None
        if not (e and st and e.get('sha256') == sha and st.st_size == size == e.get('size')
                and e.get('mtime_ns') == st.st_mtime_ns and e.get('ctime_ns') == st.st_ctime_ns):
            todo.append(name)

    os.makedirs(os.path.join(out_dir, 'data'), exist_ok=True)
    partials = [os.path.join(out_dir, n + '.incomplete') for n in todo]
    need = sum(listed[n][0] for n in todo) - sum(os.path.getsize(p) for p in partials if os.path.exists(p))
    free = shutil.disk_usage(out_dir).free
    size = lambda n: tqdm.format_sizeof(n, 'B', 1000)  # 1.23GB, 456kB, 12.0B: small numbers stay readable
    if need > free:
        raise UserError(f"not enough disk space in {out_dir}: {size(need)} to download, {size(free)} free; "
                        f"free space, set --out_dir elsewhere, or fetch fewer shards")
    print(f"{len(names)} shards requested ({size(sum(listed[n][0] for n in names))}), "
          f"{len(names) - len(todo)} already verified, {len(todo)} to check or download with {workers} workers")

    t0 = time.time()
    fetched = []
    total = sum(listed[n][0] for n in todo)
    _bar = tqdm(total=total, unit='B', unit_scale=True, unit_divisor=1024, desc='download', mininterval=0.5,
                disable=not todo)
    with ThreadPoolExecutor(workers) as pool:
        futures = {n: pool.submit(fetch_or_stop, n, *listed[n], commit, ep) for n in todo}
        try:
            for n, fut in futures.items():
                try:
                    if fut.result():
                        fetched.append(n)
                except _Stopped:
                    pass  # another worker failed first; its error is the one to report
        except KeyboardInterrupt:
            _stop.set()
            raise UserError(f"interrupted; rerun the same command to resume (partial files are kept in {out_dir}/data)")
        finally:
            _bar.close()
    seconds = time.time() - t0
    got = sum(listed[n][0] for n in fetched)

    files = []
    for name in names:  # open each file: a shard that is not github-code parquet is an error, not a surprise later
        path = os.path.join(out_dir, name)
        rows = parquet_rows(path)
        st = os.stat(path)
        files.append(dict(name=name, size=st.st_size, sha256=listed[name][1], rows=rows,
                          mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns))
    manifest = dict(repo_id=repo_id, revision=revision, commit_sha=commit, source='hub', endpoint=ep,
                    repo_num_shards=count, files=files)
    gb = sum(f['size'] for f in files) / 1e9
    summary = (f"hub {repo_id}@{commit[:12]}: {len(files)} files, {gb:.2f} GB; downloaded {len(fetched)} "
               f"({got / 1e9:.2f} GB in {seconds:.1f}s, {got / 1e6 / max(seconds, 1e-9):.1f} MB/s), "
               f"{len(files) - len(fetched)} already verified")
    return manifest, summary


# --- local source (local_source.py): source trees -> github-code rows -> parquet shards
def build_local():
    roots = [local_paths] if isinstance(local_paths, str) else list(local_paths)
    if os.path.isfile(_manifest_path):  # never mix: hub downloads are not ours to replace
        with open(_manifest_path) as f:
            old_source = json.load(f).get('source')
        if old_source == 'hub':
            raise UserError(f"{out_dir} holds shards downloaded from the hub; build the local source into another --out_dir")
    fields, summary = local_source.build(out_dir, roots, local_exclude, local_shard_bytes, local_max_file_bytes)
    return dict(repo_id=repo_id, revision=None, commit_sha=None, **fields), summary


# --- run, then write the manifest atomically: it appears only when every file in it is verified
if __name__ == '__main__':
    refuse_foreign(out_dir, 'download_github_code.py', 'out_dir')  # a token folder, a run, an export: never ours to fill
    lock = lock_dir(out_dir, 'download_github_code.py')  # two downloads into one folder would append to the same files
    manifest, summary = download_from_hub() if source == 'hub' else build_local()
    write_json(_manifest_path, manifest)
    if source == 'local':
        local_source.remove_stale(out_dir, manifest['files'])  # after the manifest: a kill here leaves a usable folder
    print(f"{summary} -> {_manifest_path}")
