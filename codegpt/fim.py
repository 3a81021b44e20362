"""
Fill in the middle (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the
Middle"): a train document is cut at two random character positions into prefix, middle and
suffix, and trained in one of two orders, with tiktoken's p50k_edit sentinels:

    PSM: <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle
    SPM: <|fim_prefix|> <|fim_suffix|> suffix <|fim_middle|> prefix middle

SPM is SantaCoder's variant, in which the prefix runs straight on into the middle. The document's
<|endoftext|> before it stays, and the next document's after it ends the middle: at inference an
infill stops at <|endoftext|>. The cut is at characters, not tokens, so a middle may start inside
what would have been one token, as an editor's cursor does. Whether a document is transformed,
its order and its cut are a function of (seed, document key) alone, so the bytes do not depend on
the number of workers and a rerun after a kill gives the same tokens.
"""
import hashlib

import numpy as np

FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX = 50281, 50282, 50283  # p50k_edit's ids (inside the 50,304-row embedding)
ENCODING = 'p50k_edit'  # p50k_base's ranks plus the three sentinels


def draws(seed, key):
    """Four uniform numbers in [0, 1) that depend on (seed, key) alone."""
    h = hashlib.blake2b(f"{seed}:{key}".encode('utf-8', 'replace'), digest_size=32).digest()
    return [int.from_bytes(h[i:i + 8], 'big') / 2**64 for i in range(0, 32, 8)]


def cut(text, seed, key, fim_rate, spm_rate):
    """None (the document stays left to right), or (order 'psm'/'spm', prefix, middle, suffix) with
    prefix + middle + suffix == text."""
    u_fim, u_spm, u_a, u_b = draws(seed, key)
    if u_fim >= fim_rate:
        return None
    a, b = sorted((int(u_a * (len(text) + 1)), int(u_b * (len(text) + 1))))  # two cuts in [0, len]
    return 'spm' if u_spm < spm_rate else 'psm', text[:a], text[a:b], text[b:]


def tokens(order, prefix, middle, suffix, encode):
    """The FIM form's token ids (uint32), each piece encoded on its own with encode(text) -> array."""
    p, m, s = encode(prefix), encode(middle), encode(suffix)
    if order == 'psm':
        parts = [[FIM_PREFIX], p, [FIM_SUFFIX], s, [FIM_MIDDLE], m]
    else:
        parts = [[FIM_PREFIX, FIM_SUFFIX], s, [FIM_MIDDLE], p, m]
    return np.concatenate([np.asarray(x, dtype=np.uint32) for x in parts])


def infill_prompt(prefix, suffix, encode, eot):
    """The ids that ask a FIM-trained model for the middle between prefix and suffix (PSM order)."""
    return [eot, FIM_PREFIX, *encode(prefix), FIM_SUFFIX, *encode(suffix), FIM_MIDDLE]
