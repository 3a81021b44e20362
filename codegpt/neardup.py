"""
Near-duplicate removal for the tokenize stage: which documents to keep so that each piece of code
is learned once, and no val document has a near copy in train.

A document's shingles are its runs of 5 consecutive words (words: runs of letters, digits and _,
as BigCode's near-deduplication splits code); its MinHash signature (rensa's RMinHash, num_perm
values) estimates the Jaccard similarity of two shingle sets. Locality-sensitive hashing cuts a
signature into `bands` of `rows` values each: two documents that agree on a whole band are
candidates, and with (bands, rows) from lsh_bands() a pair at Jaccard >= threshold is caught with
high probability. Documents equal once whitespace is removed (github-code's own exact rule) are
joined too. Candidates are joined into clusters (connected components), with no second check of
their Jaccard, as BigCode's and datatrove's pipelines do.

From each cluster one document stays: the first in input order, or, when the cluster spans the
train/val split, its first val document (the val copy wins: val keeps what it held out, and train
loses every near copy of it). Everything here depends on (document order, settings) alone, never
on the number of workers. Memory is bounded by the signatures of one band at a time, which the
tokenize stage streams from files on disk.
"""
import hashlib
import math
import re

import numpy as np

WORD = re.compile(r'[A-Za-z0-9_]+')
SEED = 1337  # RMinHash's seed: fixed, so signatures are comparable across runs and machines


def shingles(text, ngram):
    """The set of `ngram`-word runs of a text (a short text: its words, joined, as one shingle)."""
    words = WORD.findall(text)
    if len(words) <= ngram:
        return {' '.join(words)}
    return {' '.join(words[i:i + ngram]) for i in range(len(words) - ngram + 1)}


def signature(text, ngram, num_perm):
    """The text's MinHash signature, (num_perm,) uint32."""
    from rensa import RMinHash
    m = RMinHash(num_perm=num_perm, seed=SEED)
    m.update(sorted(shingles(text, ngram)))
    return np.asarray(m.digest(), dtype=np.uint32)


def exact_key(text):
    """64 bits of the text with all whitespace removed: re-indented and re-wrapped copies share it."""
    return int.from_bytes(hashlib.blake2b(''.join(text.split()).encode('utf-8', 'replace'), digest_size=8).digest(), 'big')


def lsh_bands(num_perm, threshold):
    """(bands, rows) with bands * rows <= num_perm that minimise the area of the S-curve
    P(s) = 1 - (1 - s^rows)^bands above the threshold's left (pairs below it caught) plus the area
    it leaves below 1 on its right (pairs above it missed), weighted alike."""
    s = np.linspace(0, 1, 1001)
    left, right = s <= threshold, s >= threshold
    area = lambda y, x: float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())  # the trapezoid rule
    best = None
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        p = 1 - (1 - s ** rows) ** bands
        cost = area(p[left], s[left]) + area(1 - p[right], s[right])
        if best is None or cost < best[0]:
            best = (cost, bands, rows)
    return best[1], best[2]


def band_keys(sig, band, rows):
    """(n,) uint64 keys of band `band` of the signatures sig (n, num_perm): equal rows give equal keys."""
    part = np.ascontiguousarray(sig[:, band * rows:(band + 1) * rows], dtype=np.uint32)  # (n, rows)
    key = np.full(len(part), band + 1, dtype=np.uint64)
    with np.errstate(over='ignore'):  # wrapping arithmetic: a 64-bit polynomial hash of the row's values
        for j in range(rows):
            key = key * np.uint64(0x9E3779B97F4A7C15) + part[:, j].astype(np.uint64) + np.uint64(j)
    return key


def find(parent, x):
    """The roots of the nodes x in the union-find forest `parent` (vectorised, with path halving)."""
    x = np.asarray(x)
    while True:
        p = parent[x]
        if np.array_equal(p, x):
            return x
        parent[x] = parent[p]
        x = parent[x]


def join(parent, keys, ids):
    """Union every document id that shares a key with the first of its key, in place."""
    if len(keys) < 2:
        return
    order = np.lexsort((ids, keys))
    keys, ids = keys[order], ids[order]
    same = keys[1:] == keys[:-1]  # (n-1,) whether each entry continues the previous one's group
    if not same.any():
        return
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    first = np.repeat(ids[starts], np.diff(np.append(starts, len(ids))))  # the group's first id, per entry
    u, v = first[1:][same], ids[1:][same]
    while len(u):
        ru, rv = find(parent, u), find(parent, v)
        differ = ru != rv
        if not differ.any():
            return
        lo, hi = np.minimum(ru, rv)[differ], np.maximum(ru, rv)[differ]
        np.minimum.at(parent, hi, lo)  # the larger root hangs under the smaller: roots are first documents
        u, v = u[differ], v[differ]


def clusters(n, exact, band_batches):
    """(n,) int64 cluster id of each document (the smallest id in its cluster), from their exact keys
    (n,) and, for each band, an iterable of (keys, ids) batches that together cover every document."""
    parent = np.arange(n, dtype=np.int64)
    join(parent, np.asarray(exact, dtype=np.uint64), np.arange(n, dtype=np.int64))
    for batches in band_batches:
        keys, ids = zip(*batches) if n else ((), ())
        if keys:
            join(parent, np.concatenate(keys), np.concatenate(ids))
    return find(parent, np.arange(n, dtype=np.int64))


def keep(cluster, is_val, train=True):
    """(n,) bool: the documents that stay. One per cluster: its first val document if it has any (train
    loses its near copies of val), else its first document. train=False: every train document of a
    cluster without val stays (train keeps its own near-duplicates)."""
    n = len(cluster)
    ids = np.arange(n)
    rank = np.where(is_val, ids, ids + n)  # val documents before train ones, then input order
    best = np.full(n, 2 * n, dtype=np.int64)
    np.minimum.at(best, cluster, rank)
    kept = rank == best[cluster]
    if not train:
        has_val = np.zeros(n, dtype=bool)
        has_val[cluster[is_val]] = True
        kept = np.where(is_val, kept, ~has_val[cluster])
    return kept


def expected_recall(threshold, bands, rows):
    """The chance that a pair at Jaccard `threshold` shares a band: 1 - (1 - t^rows)^bands."""
    return 1 - (1 - threshold ** rows) ** bands


def describe(num_perm, ngram, threshold):
    bands, rows = lsh_bands(num_perm, threshold)
    caught = lambda t: f"{expected_recall(t, bands, rows):.0%} at {t:g}"
    return (f"MinHash {num_perm} x {ngram}-word shingles, LSH {bands} bands x {rows} rows: a pair is caught "
            f"{caught(min(threshold + 0.1, 1.0))}, {caught(threshold)}, {caught(max(threshold - 0.2, 0.0))} Jaccard")

