# Quickstart, stage 1 of 4: no download. The local source turns this Python's standard library,
# without its test suites (~740 files, ~12 MB of code, each top folder a "repository"), into
# github-code parquet shards.
# python download_github_code.py config/quickstart_download.py          (~1 s)

source = 'local'  # local_paths defaults to the running Python's stdlib
out_dir = 'data/quickstart/parquet'
# the stdlib's test suites are half its code and mostly assertEqual: leave them out
local_exclude = local_exclude + ['test', 'tests', 'idle_test']
