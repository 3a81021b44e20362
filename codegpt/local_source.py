"""
The local source: source trees on this machine as shards of github-code's raw schema, offline and
byte-for-byte deterministic. download_github_code.py --source=local runs build(); the tokenize
benchmark and the tests walk trees with walk_files() too.

Each top folder under a root is a "repository" named '<root name>/<top folder>' (files right under
the root form one of their own), so the tokenize stage's split by repository works as on the hub's
data. A repository's license is read from its LICENSE/LICENCE/COPYING file(s), else 'unknown'.
"""
import glob
import hashlib
import os
import re
import time
from collections import Counter

from codegpt import github_code
from codegpt.errors import UserError

# (dataset license id, regex over the lowercased, whitespace-normalized text); first match wins
LICENSE_SIGNS = [
    ('agpl-3.0', r'gnu affero general public license,? version 3'),
    ('lgpl-3.0', r'gnu lesser general public license,? version 3'),
    ('lgpl-2.1', r'gnu lesser general public license,? version 2\.1'),
    ('gpl-3.0', r'gnu general public license,? version 3'),
    ('gpl-2.0', r'gnu general public license,? version 2\b'),
    ('apache-2.0', r'apache license,? version 2\.0'),
    ('mpl-2.0', r'mozilla public license,? (version |v\.? ?)?2\.0'),
    ('epl-1.0', r'eclipse public license\W*(version |v\.? ?)?1\.0'),
    ('artistic-2.0', r'the artistic license 2\.0'),
    ('unlicense', r'this is free and unencumbered software released into the public domain'),
    ('cc0-1.0', r'\bcc0 1\.0'),
    ('isc', r'permission to use, copy, modify, and/or distribute this software for any purpose with or without fee'),
    ('mit', r'permission is hereby granted, free of charge, to any person obtaining a copy'),
    ('bsd-3-clause', r'redistribution and use in source and binary forms.*(neither the name|endorse or promote)'),
    ('bsd-2-clause', r'redistribution and use in source and binary forms'),
]
assert {k for k, _ in LICENSE_SIGNS} == set(github_code.LICENSES)


def license_of_text(text):
    text = ' '.join(text.lower().split())
    for lic, pattern in LICENSE_SIGNS:
        if re.search(pattern, text):
            return lic
    return 'unknown'


def license_of(folder):
    """The dataset license id of a repo folder, from its LICENSE/LICENCE/COPYING file(s), else 'unknown'."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return 'unknown'
    for name in names:
        path = os.path.join(folder, name)
        if re.match(r'(license|licence|copying)([.\-_]|$)', name.lower()) and os.path.isfile(path):
            with open(path, 'rb') as f:
                lic = license_of_text(f.read(50_000).decode('utf-8', 'replace'))
            if lic != 'unknown':
                return lic
    return 'unknown'


def walk_files(root, exclude=()):
    """(repo folder, repo_name, path in repo, file path) for each file under root, in sorted order;
    folders named in `exclude` are not entered."""
    base = os.path.basename(os.path.normpath(root))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude)
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, '/')
            top, _, inner = rel.partition('/')
            if inner:  # root/<top>/... belongs to repo '<root name>/<top>'
                yield os.path.join(root, top), f"{base}/{top}", inner, full
            else:  # files right under root form a repo of their own
                yield root, base, rel, full


def read_source(full, max_file_bytes):
    """(text, size) of a source file, or (None, skip reason)."""
    if os.path.islink(full):
        return None, 'symlink'  # the target is walked (or not) in its own right
    try:
        if os.path.getsize(full) > max_file_bytes:
            return None, 'too_large'
        with open(full, 'rb') as f:
            data = f.read()
    except OSError:
        return None, 'unreadable'
    if not data.strip():
        return None, 'empty'
    if b'\0' in data:
        return None, 'binary'
    try:
        return data.decode('utf-8'), len(data)
    except UnicodeDecodeError:
        return None, 'undecodable'


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def build(out_dir, roots, exclude, shard_bytes, max_file_bytes):
    """Write out_dir/data/train-XXXXX-of-YYYYY.parquet from the trees; returns (manifest fields, summary).

    Shards are written under temp names and renamed once all are written (the count is in every
    name). A killed build's temp files are removed first; the caller removes shards of an earlier
    build that the new manifest does not list (remove_stale), after writing that manifest."""
    import pyarrow.parquet as pq
    t0 = time.time()
    for root in roots:
        if not os.path.isdir(root):
            raise UserError(f"local_paths entry {root!r} is not a folder; pass existing folders, e.g. --local_paths=/src/a,/src/b")
    data_dir = os.path.join(out_dir, 'data')
    os.makedirs(data_dir, exist_ok=True)
    for junk in glob.glob(os.path.join(data_dir, '.local-*.parquet.tmp*')):  # a killed build's (the caller holds the lock)
        os.remove(junk)
    skipped, languages, licenses = Counter(), Counter(), {}
    tmp_paths, rows, nbytes, content_bytes = [], [], 0, 0
    try:
        def flush():
            tmp = os.path.join(data_dir, f".local-{len(tmp_paths):05d}.parquet.tmp{os.getpid()}")
            tmp_paths.append(tmp)
            github_code.write_parquet(tmp, rows)
            with open(tmp, 'rb+') as f:
                os.fsync(f.fileno())
            rows.clear()

        for root in roots:
            for repo_dir, repo_name, path, full in walk_files(root, exclude):
                lang = github_code.language_of(path)
                if lang is None:
                    skipped['not_a_language'] += 1
                    continue
                text, size = read_source(full, max_file_bytes)
                if text is None:
                    skipped[size] += 1
                    continue
                if repo_dir not in licenses:
                    licenses[repo_dir] = license_of(repo_dir)
                rows.append(dict(content=text, repo_name=repo_name, path=path, license=licenses[repo_dir], size=size))
                languages[lang] += 1
                nbytes += size
                content_bytes += size
                if nbytes >= shard_bytes:
                    flush()
                    nbytes = 0
        if rows:
            flush()
        if not tmp_paths:
            raise UserError(f"no source files of the dataset's 30 languages under local_paths={roots}; "
                            f"point --local_paths at folders with code")
        files = []
        for k, tmp in enumerate(tmp_paths):
            name = github_code.shard_name(k, len(tmp_paths))
            path = os.path.join(out_dir, name)
            os.replace(tmp, path)
            files.append(dict(name=name, size=os.path.getsize(path), sha256=sha256_of(path),
                              rows=pq.ParquetFile(path).metadata.num_rows))
    finally:
        for tmp in tmp_paths:
            if os.path.exists(tmp):
                os.remove(tmp)
    manifest = dict(source='local', local_paths=roots, local_shard_bytes=shard_bytes, content_bytes=content_bytes,
                    skipped=dict(sorted(skipped.items())), languages=dict(sorted(languages.items())), files=files)
    summary = (f"local {','.join(roots)}: {len(files)} shards, {sum(f['size'] for f in files) / 1e6:.1f} MB; "
               f"{sum(f['rows'] for f in files)} files, {content_bytes / 1e6:.1f} MB of code in {len(languages)} "
               f"languages; skipped {dict(sorted(skipped.items()))}; {time.time() - t0:.1f}s")
    return manifest, summary


def remove_stale(out_dir, files):
    """Delete the shards under out_dir/data that `files` (the new manifest's) does not list: an earlier
    build's, e.g. with another shard size, which tokenize would otherwise read beside the new ones."""
    keep = {os.path.normpath(os.path.join(out_dir, f['name'])) for f in files}
    for path in glob.glob(os.path.join(out_dir, 'data', 'train-*-of-*.parquet')):
        if os.path.normpath(path) not in keep:
            os.remove(path)
