"""
Atomic writes: a file appears whole under its final name or not at all.
Checkpoints, shards and manifests are written to a temp file in the same folder,
flushed to disk, then moved over the final name with os.replace.
"""
import contextlib
import json
import os

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
                raise OSError(e.errno, e.strerror or str(e), path) from e
            raise
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
