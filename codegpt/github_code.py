"""
Facts about the codeparrot/github-code dataset, shared by the download and tokenize stages.

The parquet shards have the raw columns content, repo_name, path, license, size; the language
is not stored but derived from the path, with the dataset's own extension table below (first
suffix that matches wins, case-sensitive, as the dataset's loading script does it).
"""
import re

REPO_ID = 'codeparrot/github-code'
NUM_SHARDS = 1126  # data/train-00000-of-01126.parquet ... data/train-01125-of-01126.parquet
COLUMNS = ('content', 'repo_name', 'path', 'license', 'size')

# language -> path suffixes, in the dataset's order (30 languages)
LANG_TO_EXTENSIONS = {
    'Assembly': ['.asm'],
    'Batchfile': ['.bat', '.cmd'],
    'C': ['.c', '.h'],
    'C#': ['.cs'],
    'C++': ['.cpp', '.hpp', '.c++', '.h++', '.cc', '.hh', '.C', '.H'],
    'CMake': ['.cmake'],
    'CSS': ['.css'],
    'Dockerfile': ['.dockerfile', 'Dockerfile'],
    'FORTRAN': ['.f90', '.f', '.f03', '.f08', '.f77', '.f95', '.for', '.fpp'],
    'GO': ['.go'],
    'Haskell': ['.hs'],
    'HTML': ['.html'],
    'Java': ['.java'],
    'JavaScript': ['.js'],
    'Julia': ['.jl'],
    'Lua': ['.lua'],
    'Makefile': ['Makefile'],
    'Markdown': ['.md', '.markdown'],
    'PHP': ['.php', '.php3', '.php4', '.php5', '.phps', '.phpt'],
    'Perl': ['.pl', '.pm', '.pod', '.perl'],
    'PowerShell': ['.ps1', '.psd1', '.psm1'],
    'Python': ['.py'],
    'Ruby': ['.rb'],
    'Rust': ['.rs'],
    'SQL': ['.sql'],
    'Scala': ['.scala'],
    'Shell': ['.sh', '.bash', '.command', '.zsh'],
    'TypeScript': ['.ts', '.tsx'],
    'TeX': ['.tex'],
    'Visual Basic': ['.vb'],
}
LANGUAGES = list(LANG_TO_EXTENSIONS)
SUFFIX_TO_LANG = {ext: lang for lang, exts in LANG_TO_EXTENSIONS.items() for ext in exts}

# the dataset's 15 license ids; anything else is 'unknown' in our local source
LICENSES = ['mit', 'apache-2.0', 'gpl-3.0', 'gpl-2.0', 'bsd-3-clause', 'agpl-3.0', 'lgpl-3.0',
            'lgpl-2.1', 'bsd-2-clause', 'cc0-1.0', 'epl-1.0', 'mpl-2.0', 'unlicense', 'isc',
            'artistic-2.0']


def schema_problems(schema, columns=COLUMNS):
    """[(column, its type or 'missing')] for each of `columns` that a pyarrow schema lacks or holds with another type
    than the raw schema's: strings, size an integer. content may also be raw bytes (decoded as UTF-8
    with replacement by the tokenize stage)."""
    import pyarrow as pa
    is_str = lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)
    ok = dict(size=pa.types.is_integer, content=lambda t: is_str(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t))
    bad = []
    for col in columns:
        t = schema.field(col).type if col in schema.names else None
        if t is None or not ok.get(col, is_str)(t):
            bad.append((col, t or 'missing'))
    return bad


def write_parquet(path, rows, row_group_size=1024):
    """Rows ({content, repo_name, path, license, size}) as one snappy parquet file in the raw schema.
    The one writer of that schema: the local source, the tokenize benchmark and the tests use it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    types = dict(content=pa.string(), repo_name=pa.string(), path=pa.string(), license=pa.string(), size=pa.int64())
    table = pa.table({col: pa.array([r[col] for r in rows], types[col]) for col in COLUMNS})
    pq.write_table(table, path, row_group_size=row_group_size, compression='snappy')


def shard_name(index, num_shards=NUM_SHARDS):
    return f"data/train-{index:05d}-of-{num_shards:05d}.parquet"


def language_of(path):
    """The dataset's language for a file path, or None when no suffix matches."""
    for suffix, lang in SUFFIX_TO_LANG.items():
        if path.endswith(suffix):
            return lang
    return None


def language_slug(lang):
    """File-name-safe language id: 'C#' -> 'c-sharp', 'C++' -> 'cpp', 'Visual Basic' -> 'visual-basic'."""
    s = lang.lower().replace('c#', 'c-sharp').replace('c++', 'cpp')
    return re.sub(r'[^a-z0-9-]+', '-', s).strip('-')


SLUG_TO_LANG = {language_slug(lang): lang for lang in LANGUAGES}


def parse_languages(value):
    """'all' or a comma-separated list of languages (names or slugs) -> list of dataset names."""
    if value == 'all':
        return list(LANGUAGES)
    items = value if isinstance(value, (list, tuple)) else value.split(',')
    out = []
    for item in (s.strip() for s in items):
        lang = item if item in LANG_TO_EXTENSIONS else SLUG_TO_LANG.get(language_slug(item))
        if lang is None:
            raise ValueError(f"unknown language '{item}'; choose from {', '.join(SLUG_TO_LANG)} or 'all'")
        out.append(lang)
    return out
