"""The `retriever` command."""

from __future__ import annotations

import typer

from evals.bench import app as bench_app
from evals.cli import app as eval_app
from recipes.cli import app as train_app
from retriever import __version__

app = typer.Typer(no_args_is_help=True, help="Encoder-based search built on ModernBERT.")
app.add_typer(bench_app, name="bench", help="Speed benchmarks against the reference implementations.")
app.add_typer(eval_app, name="eval", help="Evaluate models on retrieval benchmarks.")
app.add_typer(train_app, name="train", help="Train models with the recipes.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"retriever {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Encoder-based search built on ModernBERT."""
