"""Evaluation and benchmarks of the toolkit's models: `python -m evals.bench ...`."""
