"""`python -m evals.bench ...`: the benchmarks' command line."""

from evals.bench.cli import app

app()
