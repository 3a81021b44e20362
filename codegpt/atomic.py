"""
The output folders: atomic writes (a file appears whole under its final name or not at all:
checkpoints, shards and manifests are written to a temp file in the same folder, flushed to disk,
then moved over the final name with os.replace), the lock one run holds on its folder, and which
script made a folder, so that no stage writes into another's.
"""
import contextlib
import errno
import json
import os
import resource
import shutil

from codegpt.errors import UserError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path to write; on success it replaces `path`, on error it is removed."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        try:
            yield tmp
            with open(tmp, 'rb+') as f:
                os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        except OSError as e:
            if e.filename in (None, tmp):  # numpy's and pyarrow's short writes name no file: say which
                raise write_error(e, path) from e
            raise
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_error(e, path, what='writing it'):
    """The OSError of a failed write of `path`, naming it. A short write (numpy's tofile, torch.save,
    pyarrow) carries no errno: it is the process's file-size limit when one is set, else a full disk
    when less than 1 GB is free, else an I/O error."""
    if getattr(e, 'errno', None):
        return OSError(e.errno, e.strerror or str(e), path)
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    code = errno.EFBIG if limit != resource.RLIM_INFINITY else errno.ENOSPC if free < 2**30 else errno.EIO
    why = f"the file size limit is {limit:,} bytes" if code == errno.EFBIG else f"{free / 1e9:.2f} GB free"
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:80]
    return OSError(code, f"{what} failed: {os.strerror(code)} ({first}; {why})", path)


def write_json(path, obj):
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=1, sort_keys=False)
            f.write('\n')


def lock_dir(path, what):
    """Take out_dir/.lock for this process, or exit naming the process that holds it.

    An flock ends with its process, so a lock left by a killed run is simply taken over.
    Returns the open file: keep it referenced, the lock lasts as long as it is open."""
    import fcntl
    os.makedirs(path, exist_ok=True)
    f = open(os.path.join(path, '.lock'), 'a+')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or 'unknown'
        raise UserError(f"{path} is in use by another {what} run (pid {holder}); wait for it to finish, or pass another out_dir")
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def made_by(folder):
    """The script whose output `folder` holds ('download_github_code.py', 'tokenize_github_code.py',
    'train.py', 'export_hf.py', 'dedup_datatrove.py'), judged by the files each writes, or None (empty, or someone else's)."""
    def json_of(name):
        try:
            with open(os.path.join(folder, name)) as f:
                m = json.load(f)
            return m if isinstance(m, dict) else {}
        except (OSError, ValueError, UnicodeDecodeError):
            return {}
    m = json_of('manifest.json')
    if 'files' in m and 'source' in m:
        return 'download_github_code.py'
    if ('encoding' in m and 'train' in m) or os.path.isfile(os.path.join(folder, 'work', 'progress.json')):
        return 'tokenize_github_code.py'
    if any(os.path.isfile(os.path.join(folder, n)) for n in ('ckpt.pt', 'ckpt_best.pt', 'log.jsonl')):
        return 'train.py'
    if json_of('export.json').get('made_by') == 'export_hf.py':
        return 'export_hf.py'
    if json_of('dedup.json').get('made_by') == 'dedup_datatrove.py':
        return 'dedup_datatrove.py'
    return None


def refuse_foreign(folder, me, what):
    """UserError if `folder` holds another script's output: one stage never writes into another's."""
    other = made_by(folder)
    if other is not None and other != me:
        raise UserError(f"{what} '{folder}' holds the output of {other}, not of {me}; pass another {what} "
                        f"(that folder is left as it is)")
