"""download_github_code.py against a fake hub on 127.0.0.1 (the real huggingface_hub client), and the local source."""
import base64
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, code_rows, one_line_error, run_script, write_parquet
from codegpt.github_code import COLUMNS, language_of, shard_name

REPO = 'codeparrot/github-code'
COMMIT = '0123456789abcdef0123456789abcdef01234567'
NUM = 4  # the fake repo's shard count; shard 3 is listed in the name pattern but missing
PRESENT = (0, 1, 2)


# --- a fake codeparrot/github-code: the endpoints huggingface_hub calls
@pytest.fixture(scope='session')
def shard_bytes(tmp_path_factory):
    rows = code_rows(per_language=8)
    out = {}
    for i in PRESENT:
        path = tmp_path_factory.mktemp('shards') / f'{i}.parquet'
        write_parquet(str(path), rows[i::len(PRESENT)], row_group_size=16)
        out[shard_name(i, NUM)] = path.read_bytes()
    return out


class FakeHub:
    """Dataset info, a tree listing paged `page` entries at a time (Link headers), resolve with HEAD and Range."""

    def __init__(self, files, page=2):
        self.files, self.page = dict(files), page
        self.log = []  # (method, path, Range header)
        self.cut = None  # (name, offset): bodies of that file end abruptly at that offset
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def do_GET(self):
                hub.handle(self, body=True)

            def do_HEAD(self):
                hub.handle(self, body=False)

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def body_gets(self):
        return [(p, r) for m, p, r in self.log if m == 'GET' and '/resolve/' in p]

    def send(self, h, status, body=b'', headers=(), send_body=True):
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header('Content-Length', str(len(body)))
        h.end_headers()
        if send_body:
            h.wfile.write(body)

    def json(self, h, obj, headers=(), status=200):
        self.send(h, status, json.dumps(obj).encode(), [('Content-Type', 'application/json'), *headers])

    def handle(self, h, body):
        url = urlsplit(h.path)
        path = unquote(url.path)
        self.log.append((h.command, path, h.headers.get('Range')))
        if m := re.fullmatch(r'/api/datasets/(.+)/revision/([^/]+)', path):
            if m.group(2) not in ('main', COMMIT):
                return self.json(h, {'error': 'Invalid rev id'}, [('X-Error-Code', 'RevisionNotFound')], 404)
            if m.group(1) != REPO:
                return self.json(h, {'error': 'Repository not found'}, [('X-Error-Code', 'RepoNotFound')], 404)
            return self.json(h, {'id': REPO, 'sha': COMMIT, 'private': False,
                                 'siblings': [{'rfilename': n} for n in sorted(self.files)]})
        if m := re.fullmatch(r'/api/datasets/(.+)/tree/([^/]+)/data', path):
            entries = [{'type': 'file', 'oid': hashlib.sha1(b).hexdigest(), 'size': len(b), 'path': n,
                        'lfs': {'oid': hashlib.sha256(b).hexdigest(), 'size': len(b), 'pointerSize': 134}}
                       for n, b in sorted(self.files.items())]
            start = int(parse_qs(url.query).get('cursor', ['0'])[0])
            headers = []
            if start + self.page < len(entries):
                nxt = f"{self.url}/api/datasets/{m.group(1)}/tree/{m.group(2)}/data?cursor={start + self.page}"
                headers.append(('Link', f'<{nxt}>; rel="next"'))
            return self.json(h, entries[start:start + self.page], headers)
        m = re.fullmatch(r'/datasets/(.+?)/resolve/([^/]+)/(.+)', path)
        if not m or m.group(1) != REPO or m.group(3) not in self.files:
            return self.json(h, {'error': 'Entry not found'}, [('X-Error-Code', 'EntryNotFound')], 404)
        name, data = m.group(3), self.files[m.group(3)]
        sha = hashlib.sha256(data).hexdigest()
        headers = [('ETag', f'"{sha}"'), ('X-Linked-Etag', f'"{sha}"'), ('X-Linked-Size', str(len(data))),
                   ('X-Repo-Commit', COMMIT), ('Accept-Ranges', 'bytes'), ('Content-Type', 'application/octet-stream')]
        start, status = 0, 200
        if r := re.fullmatch(r'bytes=(\d+)-', h.headers.get('Range') or ''):
            start, status = int(r.group(1)), 206
            headers.append(('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}'))
        chunk = data[start:]
        if not body or not self.cut or self.cut[0] != name:
            return self.send(h, status, chunk, headers, send_body=body)
        # promise the whole body, send part of it, hang up
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header('Content-Length', str(len(chunk)))
        h.end_headers()
        h.wfile.write(chunk[:max(0, self.cut[1] - start)])
        h.wfile.flush()
        h.close_connection = True

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(shard_bytes):
    server = FakeHub(shard_bytes)
    yield server
    server.close()


def download(tmp_path, endpoint, *args, check=True):
    env = {'HF_ENDPOINT': endpoint, 'HF_HOME': str(tmp_path / 'hf_home'), 'HF_HUB_OFFLINE': '0',
           'HF_HUB_DISABLE_XET': '1', 'HF_HUB_DISABLE_TELEMETRY': '1'}
    return run_script('download_github_code.py', f'--out_dir={tmp_path / "out"}', *args, env=env, check=check,
                      timeout=120)


def sha256(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()





# --- hub source
def test_download_writes_verified_shards_and_manifest(tmp_path, hub, shard_bytes):
    p = download(tmp_path, hub.url, '--num_shards=3', '--workers=2')
    out = tmp_path / 'out'
    m = json.loads((out / 'manifest.json').read_text())
    assert (m['repo_id'], m['revision'], m['commit_sha'], m['source']) == (REPO, 'main', COMMIT, 'hub')
    assert [f['name'] for f in m['files']] == [shard_name(i, NUM) for i in range(3)]
    for f in m['files']:
        data = shard_bytes[f['name']]
        assert (out / f['name']).read_bytes() == data
        assert f['size'] == len(data) and f['sha256'] == hashlib.sha256(data).hexdigest()
        assert f['rows'] == pq.ParquetFile(out / f['name']).metadata.num_rows > 0
    assert not list((out / 'data').glob('*.incomplete'))
    tree_pages = [x for x in hub.log if '/tree/' in x[1]]
    assert len(tree_pages) == 2  # 3 entries, 2 a page: the client followed the Link header
    assert len(hub.body_gets()) == 3 and all(r is None for _, r in hub.body_gets())
    assert '3 files' in p.stdout and 'downloaded 3 (' in p.stdout and 'MB/s' in p.stdout


def test_rerun_downloads_no_file_body_again(tmp_path, hub):
    download(tmp_path, hub.url, '--num_shards=3')
    first = (tmp_path / 'out' / 'manifest.json').read_text()
    hub.log.clear()
    p = download(tmp_path, hub.url, '--num_shards=3')
    assert hub.body_gets() == [] and not [x for x in hub.log if '/resolve/' in x[1]]  # not even a HEAD
    assert (tmp_path / 'out' / 'manifest.json').read_text() == first
    assert '3 already verified' in p.stdout


def test_cut_connection_keeps_partial_and_rerun_resumes(tmp_path, shard_bytes):
    # huggingface_hub writes in 10 MiB chunks, so the shard must be bigger than that to leave a partial file
    name = shard_name(1, NUM)
    rows = [dict(content=base64.b64encode(os.urandom(900_000)).decode(), repo_name='r/big', path=f'f{i}.py',
                 license='mit', size=1_200_000) for i in range(16)]  # incompressible: ~19 MB of parquet
    write_parquet(str(tmp_path / 'big.parquet'), rows)
    big = (tmp_path / 'big.parquet').read_bytes()
    hub = FakeHub({**shard_bytes, name: big})
    try:
        cut = 12 << 20
        hub.cut = (name, cut)
        p = download(tmp_path, hub.url, '--shards=[1]', check=False)
        line = one_line_error(p)
        assert name in line and 'rerun' in line
        part = tmp_path / 'out' / (name + '.incomplete')
        kept = part.stat().st_size
        assert 0 < kept <= cut and not (tmp_path / 'out' / name).exists()
        assert not (tmp_path / 'out' / 'manifest.json').exists()

        hub.cut, hub.log[:] = None, []
        download(tmp_path, hub.url, '--shards=[1]')
        assert hub.body_gets() == [(f'/datasets/{REPO}/resolve/{COMMIT}/{name}', f'bytes={kept}-')]
        assert sha256(tmp_path / 'out' / name) == hashlib.sha256(big).hexdigest()
        assert not part.exists()
    finally:
        hub.close()


def test_flipped_or_truncated_local_file_is_detected_and_fetched_again(tmp_path, hub, shard_bytes):
    download(tmp_path, hub.url, '--num_shards=3')
    out = tmp_path / 'out'
    flipped, truncated = out / shard_name(0, NUM), out / shard_name(1, NUM)
    st = flipped.stat()
    with open(flipped, 'r+b') as f:  # same size, and the old mtime put back: only the bytes differ
        f.seek(st.st_size // 2)
        b = f.read(4)
        f.seek(st.st_size // 2)
        f.write(bytes(x ^ 0xFF for x in b))
    os.utime(flipped, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open(truncated, 'r+b') as f:
        f.truncate(100)
    hub.log.clear()
    p = download(tmp_path, hub.url, '--num_shards=3')
    assert sorted(path.rsplit('/', 1)[1] for path, _ in hub.body_gets()) == sorted([flipped.name, truncated.name])
    for i in range(3):
        name = shard_name(i, NUM)
        assert (out / name).read_bytes() == shard_bytes[name]
    assert 'downloaded 2 (' in p.stdout and '1 already verified' in p.stdout


def test_missing_or_out_of_range_shard_is_a_clear_error(tmp_path, hub):
    line = one_line_error(download(tmp_path, hub.url, '--shards=[0,3]', check=False))
    assert shard_name(3, NUM) in line and 'missing' in line
    line = one_line_error(download(tmp_path, hub.url, '--shard_start=2', '--num_shards=5', check=False))
    assert 'shard index 4 is out of range' in line and '4 shards (0..3)' in line
    assert hub.body_gets() == []  # checked before downloading anything
    assert not (tmp_path / 'out' / 'manifest.json').exists()


def test_too_little_disk_says_how_much_in_readable_units(tmp_path, hub):
    # the disk as a nearly full one reports it: a few kB free; the sizes must not round to "0.00 GB"
    code = ("import collections, runpy, shutil, sys\n"
            "shutil.disk_usage = lambda p: collections.namedtuple('u', 'total used free')(10**9, 10**9 - 2048, 2048)\n"
            f"sys.argv = sys.argv[1:]\nsys.path.insert(0, {ROOT!r})\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    env = {**os.environ, 'HF_ENDPOINT': hub.url, 'HF_HOME': str(tmp_path / 'hf_home'), 'HF_HUB_DISABLE_XET': '1',
           'HF_HUB_DISABLE_TELEMETRY': '1'}
    p = subprocess.run([sys.executable, '-c', code, os.path.join(ROOT, 'download_github_code.py'),
                        f'--out_dir={tmp_path / "out"}', '--num_shards=2'], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    line = one_line_error(p, 'not enough disk space', '2.05kB free')
    assert '0.00' not in line and re.search(r'\d+(\.\d+)?[kM]B to download', line), line


def test_unreachable_endpoint_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    line = one_line_error(download(tmp_path, endpoint, '--num_shards=1', check=False))
    assert endpoint in line and 'HF_ENDPOINT' in line and '--source=local' in line


# --- local source
MIT = ("MIT License\n\nCopyright (c) 2024 Someone\n\nPermission is hereby granted, free of charge, to any person\n"
       "obtaining a copy of this software and associated documentation files (the \"Software\"), ...\n")
APACHE = "                                 Apache License\n                           Version 2.0, January 2004\n"


@pytest.fixture
def tree(tmp_path):
    """Two small repos made of real stdlib files, plus the awkward cases the walk must skip."""
    stdlib = sysconfig.get_paths()['stdlib']
    root = tmp_path / 'src'
    (root / 'alpha' / 'pkg').mkdir(parents=True)
    (root / 'beta').mkdir()
    (root / 'alpha' / 'LICENSE').write_text(MIT)
    (root / 'beta' / 'COPYING.txt').write_text(APACHE)
    for name in ('json/decoder.py', 'json/encoder.py', 'textwrap.py'):
        (root / 'alpha' / 'pkg' / os.path.basename(name)).write_bytes(open(os.path.join(stdlib, name), 'rb').read())
    (root / 'alpha' / 'Makefile').write_text('all:\n\techo hi\n')
    (root / 'alpha' / 'main.c').write_text('int main(void) { return 0; }\n')
    (root / 'beta' / 'lib.rs').write_text('pub fn f() -> u32 { 1 }\n')
    (root / 'beta' / 'index.html').write_text('<p>hi</p>\n')
    (root / 'top.sh').write_text('echo top\n')
    (root / 'alpha' / 'empty.py').write_text('')
    (root / 'alpha' / 'blank.go').write_text('\n  \n')
    (root / 'beta' / 'blob.js').write_bytes(b'var x = 1;\x00\x01\x02')
    (root / 'beta' / 'latin1.java').write_bytes('// caf\xe9\nclass A {}\n'.encode('latin-1'))
    (root / 'beta' / 'notes.txt').write_text('not code\n')
    (root / 'alpha' / '__pycache__').mkdir()
    (root / 'alpha' / '__pycache__' / 'x.py').write_text('print(1)\n')
    return root


def test_local_source_schema_languages_licenses_and_skips(tmp_path, tree):
    p = run_script('download_github_code.py', '--source=local', f'--local_paths={tree}', f'--out_dir={tmp_path / "out"}',
                   '--local_shard_bytes=20000')
    m = json.loads((tmp_path / 'out' / 'manifest.json').read_text())
    assert (m['source'], m['commit_sha']) == ('local', None)
    assert m['skipped'] == {'binary': 1, 'empty': 2, 'not_a_language': 3, 'undecodable': 1}  # LICENSE, COPYING.txt, notes.txt
    n = len(m['files'])
    assert n >= 2 and [f['name'] for f in m['files']] == [shard_name(i, n) for i in range(n)]
    tables = []
    for f in m['files']:
        path = tmp_path / 'out' / f['name']
        assert f['sha256'] == sha256(path) and f['size'] == path.stat().st_size
        t = pq.read_table(path)
        assert t.schema.names == list(COLUMNS) and f['rows'] == t.num_rows
        assert [t.schema.field(c).type for c in COLUMNS] == [pa.string()] * 4 + [pa.int64()]
        tables.append(t)
    rows = pa.concat_tables(tables).to_pylist()
    got = {(r['repo_name'], r['path'], r['license'], language_of(r['path'])) for r in rows}
    assert got == {
        ('src/alpha', 'pkg/decoder.py', 'mit', 'Python'), ('src/alpha', 'pkg/encoder.py', 'mit', 'Python'),
        ('src/alpha', 'pkg/textwrap.py', 'mit', 'Python'), ('src/alpha', 'Makefile', 'mit', 'Makefile'),
        ('src/alpha', 'main.c', 'mit', 'C'), ('src/beta', 'lib.rs', 'apache-2.0', 'Rust'),
        ('src/beta', 'index.html', 'apache-2.0', 'HTML'), ('src', 'top.sh', 'unknown', 'Shell')}
    for r in rows:  # repo 'src/alpha' is the folder tree/alpha; repo 'src' is tree itself
        source = tree / r['repo_name'].partition('/')[2] / r['path']
        assert r['content'] == source.read_text() and r['size'] == len(r['content'].encode())
    assert m['languages'] == {'C': 1, 'HTML': 1, 'Makefile': 1, 'Python': 3, 'Rust': 1, 'Shell': 1}
    assert f'{len(m["files"])} shards' in p.stdout


def test_local_source_is_byte_for_byte_deterministic(tmp_path, tree):
    stdlib_json = os.path.join(sysconfig.get_paths()['stdlib'], 'json')
    outs = [tmp_path / 'a', tmp_path / 'b']
    for out in outs:
        run_script('download_github_code.py', '--source=local', f'--local_paths={tree},{stdlib_json}',
                   f'--out_dir={out}', '--local_shard_bytes=30000')
    files = sorted(str(p.relative_to(outs[0])) for p in outs[0].rglob('*') if p.is_file() and p.name != '.lock')
    assert files == sorted(str(p.relative_to(outs[1])) for p in outs[1].rglob('*') if p.is_file() and p.name != '.lock')
    assert len(files) >= 3 and 'manifest.json' in files
    for name in files:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
