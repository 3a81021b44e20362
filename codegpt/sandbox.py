"""
Run untrusted Python (model-written code) in a separate, limited process.

    uid_base, python, how = isolation(65000)       # per-worker uids when we are root, else None
    result = run(program, timeout=5.0, uid=uid_base, python=python)  # 'passed' | 'failed: <why>' | 'timed out'
    pool, check = start_pool(8, uid_base, python, timeout=5.0)
    future = pool.submit(check, program)           # several programs at once, one process each

'passed' means the program ran to its end and exited 0; calling exit() or sys.exit() before the
end counts as 'failed'.

What is contained
- A process per program: `python -I` (isolated mode: no PYTHON* variables, no user site) in a new
  session, in a throwaway directory that is removed afterwards. When it ends, or when the
  wall-clock timeout fires, its whole process group is killed, so loops and stray children go too.
- Resource limits, set in the child before the program starts, soft = hard so it cannot raise
  them: CPU seconds, address space (an unbounded allocation raises MemoryError), size of any file
  written, number of processes, no core files. Output goes to /dev/null and a bounded file.
- A minimal environment: PATH, HOME and TMPDIR inside the sandbox, PYTHONHASHSEED. Nothing is
  inherited, and the parent makes itself non-dumpable, so tokens and keys in its environment are
  not visible, not even through /proc/<parent>/environ.
- The same interpreter and packages as the evaluation (`import numpy` works): the child imports
  the installed modules the program names before the guard goes up and, as root, before it drops
  to the sandbox uid; the folders on its module path are opened before the drop and read through
  /proc/self/fd after it, so an interpreter under a folder only root may enter (a Python under
  /root, mode 0700) still loads what a program imports late (heapq for Counter.most_common,
  _strptime, the idna codec). eval_humaneval.py checks that at start (PROBE) and refuses to score
  when it does not hold.
- A guard in the child that replaces the destructive and process-starting functions of os, posix,
  shutil, subprocess and _posixsubprocess (remove, rmtree, rename, chmod, kill, fork, exec*, system,
  Popen, fork_exec, which multiprocessing starts its children with, ...) with ones that raise
  PermissionError; refuses to open files for writing (open, io.open, _io.open, os.open, FileIO), to
  make folders, sqlite databases or Unix sockets outside the sandbox; refuses to import ctypes and
  cffi; and hands back the guarded module when a program imports one again (deleted from
  sys.modules, or reloaded).
- When the parent runs as root (the usual container): the program runs as an unprivileged uid of
  its own (uid_base + worker slot; no passwd entry needed). File permissions then protect every
  file it does not own even if it gets past the guard (ctypes, which the drop itself loads, or a C
  extension), RLIMIT_NPROC counts only its own processes (a fork bomb stops at max_procs), and
  after each run every process of that uid is killed, including any that left the process group.

What is not
- As a non-root user (or with the uid drop turned off: --sandbox_uid=-1), programs run as the
  calling user, and the guard is all that holds; SAME_USER below says what it does not, and
  eval_humaneval.py prints it at start. `isolation()` says which case holds, and eval_humaneval.py
  runs in that mode only when asked to.
- No network or filesystem namespace: a program can read world-readable files, use the network,
  and as the sandbox uid create files in world-writable places such as /tmp or /dev/shm (each
  bounded by the file-size limit, not their number).
- It is meant for the accidents of model-written code, not as a security boundary against a
  determined attacker (kernel bugs, side channels).
"""
import concurrent.futures
import functools
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile

# What the guard does not hold when completions run as the calling user (no uid of their own):
# eval_humaneval.py's start-up warning and the README say exactly this.
SAME_USER = ("completions run as you, and only a guard inside their interpreter holds: it refuses writes outside "
             "their folder (open, os, shutil, sqlite, Unix sockets), starting processes (os, subprocess, "
             "multiprocessing) and importing ctypes or cffi, but a program that edits the interpreter itself (drops "
             "the guard from sys.meta_path, or reaches C through a module another import loaded) gets past it and "
             "can then write your files and leave a process running in a new session; the process limit counts all "
             "your processes")
SAME_USER_ROOT = ("; as root, no file permission or process limit binds it either, and every process's environment, "
                  "this run's included, is readable")
# a program that uses modules imported late: it fails wherever the sandbox uid cannot read the stdlib
PROBE = ("from collections import Counter\nimport datetime\nassert Counter('abca').most_common(1) == [('a', 2)]\n"
         "assert datetime.datetime.strptime('2020-01-02', '%Y-%m-%d').day == 2\n"
         "assert 'b\\u00fccher.de'.encode('idna') == b'xn--bcher-kva.de'\n")

# The child: set limits; as root, import what the program imports while this interpreter's files
# are readable, then drop to the sandbox uid; install the guard; run the program as __main__.
# argv: program, limits, uid (-1: stay as we are).
RUNNER = r'''
import sys, resource
prog = sys.argv[1]
for name, value in zip(('RLIMIT_AS', 'RLIMIT_CPU', 'RLIMIT_FSIZE', 'RLIMIT_NPROC', 'RLIMIT_CORE'), sys.argv[2:7]):
    lim, value = getattr(resource, name), int(value)
    soft, hard = resource.getrlimit(lim)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(lim, (value, value))
with open(prog) as f:
    source = f.read()
code = compile(source, prog, 'exec')  # compiling runs none of it

import ast, builtins, importlib, importlib.util, io, os, posix, shutil, socket, subprocess
import _io, _posixsubprocess, _socket
try:  # an interpreter built without SQLite has nothing to guard there
    import sqlite3, _sqlite3
except ImportError:
    sqlite3 = _sqlite3 = None
uid = int(sys.argv[7])
# the installed modules the program names (not its own code): imported before the guard, so a
# package's import-time setup (numpy's os.putenv, say) runs as it does outside the sandbox
NO_PREIMPORT = {'antigravity', 'this', 'idlelib', 'tkinter', 'turtle', 'turtledemo', 'webbrowser',
                'ctypes', '_ctypes', 'cffi', '_cffi_backend'}  # the last four: refused by the guard below
nodes = list(ast.walk(ast.parse(source)))
wanted = {a.name.split('.')[0] for n in nodes if isinstance(n, ast.Import) for a in n.names}
wanted |= {n.module.split('.')[0] for n in nodes if isinstance(n, ast.ImportFrom) and n.module and not n.level}
for name in sorted(wanted - NO_PREIMPORT):
    try:
        importlib.import_module(name)
    except BaseException:  # the program will meet the same error itself
        pass
if uid >= 0:
    # the interpreter's folders may sit under one only root may enter (a Python under /root, mode
    # 0700): opened now, as root, they stay readable through /proc/self/fd once we are the sandbox uid,
    # so a module the program imports late (heapq for Counter.most_common, _strptime) still loads
    remap = {}
    for p in sys.path:
        real = os.path.realpath(p) if p else ''
        if real and os.path.isdir(real) and real not in remap:
            try:
                remap[real] = '/proc/self/fd/%d' % os.open(real, os.O_PATH | os.O_DIRECTORY)
            except (OSError, AttributeError):
                pass
    import ctypes  # while its files are readable
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if remap and os.path.isdir('/proc/self/fd'):
        ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: the uid change gave /proc/self to root
        def moved(path):
            real = os.path.realpath(path)
            for old in sorted(remap, key=len, reverse=True):
                if real == old or real.startswith(old + os.sep):
                    return remap[old] + real[len(old):]
            return path
        sys.path[:] = [moved(p) if p else p for p in sys.path]
        for m in list(sys.modules.values()):  # packages already imported find their submodules there too
            if isinstance(getattr(m, '__path__', None), list):
                m.__path__[:] = [moved(p) for p in m.__path__]
        sys.path_importer_cache.clear()
        importlib.invalidate_caches()
home = os.path.realpath(os.getcwd())

def blocked(name):
    def refuse(*args, **kwargs):
        raise PermissionError(f"{name}() is disabled in the sandbox")
    return refuse

OS = ('system', 'popen', 'fork', 'forkpty', 'posix_spawn', 'posix_spawnp',
      'spawnl', 'spawnle', 'spawnlp', 'spawnlpe', 'spawnv', 'spawnve', 'spawnvp', 'spawnvpe',
      'execl', 'execle', 'execlp', 'execlpe', 'execv', 'execve', 'execvp', 'execvpe', '_exit',
      'kill', 'killpg', 'remove', 'unlink', 'rmdir', 'removedirs', 'rename', 'renames', 'replace',
      'truncate', 'link', 'symlink', 'mkfifo', 'mknod', 'chmod', 'fchmod', 'lchmod', 'chown',
      'fchown', 'lchown', 'chflags', 'lchflags', 'chroot', 'chdir', 'fchdir', 'setuid', 'seteuid',
      'setreuid', 'setresuid', 'setgid', 'setegid', 'setregid', 'setresgid', 'setgroups', 'setsid',
      'setpgid', 'setpgrp', 'plock', 'nice', 'sched_setaffinity')
for mod, names in ((os, OS), (posix, OS),
                   (shutil, ('rmtree', 'move', 'copy', 'copy2', 'copyfile', 'copytree', 'chown')),
                   (subprocess, ('Popen', 'run', 'call', 'check_call', 'check_output', 'getoutput',
                                 'getstatusoutput')),
                   (_posixsubprocess, ('fork_exec',))):  # what subprocess and multiprocessing start processes with
    for name in names:
        if hasattr(mod, name):
            setattr(mod, name, blocked(f"{mod.__name__}.{name}"))

def inside(path):
    return os.path.realpath(os.fspath(path)).startswith(home + os.sep)

real_open, real_os_open, real_mkdir = io.open, posix.open, posix.mkdir
def guarded_open(file, mode='r', *args, **kwargs):
    if not isinstance(file, int) and any(c in mode for c in 'wax+') and not inside(file):
        raise PermissionError(f"writing {file!r} outside the sandbox is disabled")
    return real_open(file, mode, *args, **kwargs)
def guarded_os_open(path, flags, *args, **kwargs):
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    if flags & writes and not inside(path):
        raise PermissionError(f"writing {path!r} outside the sandbox is disabled")
    return real_os_open(path, flags, *args, **kwargs)
class GuardedFileIO(_io.FileIO):  # the raw file class, which open() wraps and a program may call itself
    def __init__(self, file, mode='r', *args, **kwargs):
        if not isinstance(file, int) and any(c in mode for c in 'wax+') and not inside(file):
            raise PermissionError(f"writing {file!r} outside the sandbox is disabled")
        super().__init__(file, mode, *args, **kwargs)
def guarded_mkdir(path, *args, **kwargs):
    if not inside(path):
        raise PermissionError(f"making {path!r} outside the sandbox is disabled")
    return real_mkdir(path, *args, **kwargs)
def guarded_connect(database, *args, **kwargs):  # sqlite writes its file from C, past open()
    name = os.fsdecode(database) if isinstance(database, (str, bytes, os.PathLike)) else ''
    if name and name != ':memory:' and not name.startswith('file:') and not inside(name):
        raise PermissionError(f"a database {name!r} outside the sandbox is disabled")
    if name.startswith('file:'):
        raise PermissionError("sqlite URIs are disabled in the sandbox")
    return real_connect(database, *args, **kwargs)
real_connect, real_bind = getattr(_sqlite3, 'connect', None), _socket.socket.bind
def guarded_bind(self, address):  # a Unix socket is a file made by bind()
    if self.family == socket.AF_UNIX and isinstance(address, (str, bytes)) and address[:1] not in ('\0', b'\0') \
            and not inside(os.fsdecode(address)):
        raise PermissionError(f"a socket at {address!r} outside the sandbox is disabled")
    return real_bind(self, address)
class GuardedSocket(_socket.socket):  # the raw class, for a program that skips socket.py
    __slots__ = ()
    bind = guarded_bind
builtins.open = io.open = _io.open = guarded_open
os.open = posix.open = guarded_os_open
_io.FileIO = io.FileIO = GuardedFileIO
os.mkdir = posix.mkdir = guarded_mkdir
if sqlite3 is not None:
    sqlite3.connect = _sqlite3.connect = guarded_connect
socket.socket.bind = guarded_bind
_socket.socket = GuardedSocket

# a module imported again (deleted from sys.modules, or reloaded) would come back unguarded: this finder,
# first on the path, hands back the guarded one; and the C bridges that bypass every guard are not loaded
GUARDED = {m.__name__: m for m in (os, posix, io, _io, shutil, subprocess, _posixsubprocess, socket, _socket,
                                   sqlite3, _sqlite3) if m is not None}
class Guard:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split('.')[0] in ('ctypes', '_ctypes', 'cffi', '_cffi_backend') and name not in sys.modules:
            raise ImportError(f"importing {name} is disabled in the sandbox")
        return importlib.util.spec_from_loader(name, Guard) if name in GUARDED else None
    @staticmethod
    def create_module(spec):
        return GUARDED[spec.name]
    @staticmethod
    def exec_module(module):
        pass
sys.meta_path.insert(0, Guard)
for name in ('exit', 'quit'):  # a program that ends early has not passed; sys.exit is caught below
    builtins.__dict__.pop(name, None)

try:
    exec(code, {'__name__': '__main__', '__file__': prog, '__builtins__': builtins})
except SystemExit as e:
    sys.stderr.write(f"SystemExit({e.code!r}) before the program's end\n")
    raise SystemExit(3)
'''

# kill every process of a uid: started as root, drops to the uid (after its imports: the
# interpreter's files may be root's alone), then kill(-1) reaches exactly that uid's processes
SWEEP = ('import os, signal\nos.setgroups([])\nos.setresgid({0}, {0}, {0})\nos.setresuid({0}, {0}, {0})\n'
         'try:\n    os.kill(-1, signal.SIGKILL)\nexcept ProcessLookupError:\n    pass\n')


def run(program, timeout=5.0, memory_mb=1024, cpu_s=None, max_procs=32, max_file_mb=16,
        uid=None, python=None, root=None):
    """Execute one program in a fresh sandbox: 'passed', 'failed: <why>' or 'timed out'.

    The sandbox folder is made in root (default: the temp dir); with a uid, root and the folders
    above it must be passable (x) by that uid."""
    python = python or sys.executable
    cpu_s = cpu_s or int(timeout) + 1
    hide_environment()
    home = tempfile.mkdtemp(prefix='sbx_', dir=root)
    try:
        path = os.path.join(home, 'program.py')
        with open(path, 'w') as f:
            f.write(program)
        if uid is not None:  # the child starts as root and drops to uid itself (RUNNER)
            os.chown(home, uid, uid)
            os.chown(path, uid, uid)
        env = {'PATH': '/usr/bin:/bin', 'HOME': home, 'TMPDIR': home, 'PYTHONHASHSEED': '0', 'LANG': 'C.UTF-8'}
        limits = [memory_mb << 20, cpu_s, max_file_mb << 20, max_procs, 0, -1 if uid is None else uid]
        with tempfile.TemporaryFile() as err:  # a file, not a pipe: endless output cannot fill our memory
            p = subprocess.Popen([python, '-I', '-c', RUNNER, path, *map(str, limits)], cwd=home, env=env,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True, close_fds=True)
            timed_out = not wait_unreaped(p, timeout)
            try:  # the leader is not reaped yet, so its group id cannot have been reused
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            code = p.wait()
            if uid is not None:
                sweep(uid, python)
            err.seek(max(0, err.seek(0, os.SEEK_END) - 4096))
            tail = err.read().decode('utf-8', 'replace').strip().splitlines()
        if timed_out:
            return 'timed out'
        if code == 0:
            return 'passed'
        why = tail[-1] if tail else (f"killed by signal {-code}" if code < 0 else f"exit code {code}")
        return f"failed: {why[:300]}"
    finally:
        shutil.rmtree(home, ignore_errors=True)


@functools.cache
def hide_environment():
    """Make this process non-dumpable, so that /proc/<our pid>/environ (the environment we started
    with, tokens and keys included) belongs to root: a child running as us can no longer read it."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0 (Linux)
    except (OSError, AttributeError):
        pass


def wait_unreaped(p, timeout):
    """Wait up to timeout seconds for p to exit without reaping it; True if it exited."""
    try:
        fd = os.pidfd_open(p.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel or Python): reap, at a tiny pgid-reuse risk
        try:
            p.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def sweep(uid, python):
    """Kill every process of the sandbox uid (also ones that left the group), if there are any."""
    for pid in os.listdir('/proc'):
        try:
            if pid.isdigit() and os.stat(f'/proc/{pid}').st_uid == uid:
                break
        except OSError:
            pass
    else:
        return
    # kill(-1) from a process of that uid reaches exactly that uid's processes, without pid races
    subprocess.run([python, '-I', '-S', '-c', SWEEP.format(int(uid))], env={}, cwd='/',
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def isolation(uid_base=65000):
    """(uid_base or None, interpreter, description): per-worker uids when we are root. The interpreter is
    always ours, with its packages: as root the child imports what the program names before it drops."""
    if uid_base is None or uid_base < 0:
        return None, sys.executable, 'same user (uid drop turned off)'
    if os.geteuid() != 0:
        return None, sys.executable, f'same user (uid {os.geteuid()}: not root, cannot drop to another uid)'
    return uid_base, sys.executable, f'uid {uid_base}+worker, {sys.executable}'


def start_pool(workers, uid_base=None, python=None, **limits):
    """A thread pool and a check(program) for it; worker slot i runs programs as uid_base + i."""
    slots = queue.SimpleQueue()
    for i in range(workers):
        slots.put(i)

    def check(program):
        slot = slots.get()  # never waits: the pool has exactly `workers` threads
        try:
            uid = None if uid_base is None else uid_base + slot
            return run(program, uid=uid, python=python, **limits)
        finally:
            slots.put(slot)

    return concurrent.futures.ThreadPoolExecutor(workers), check
