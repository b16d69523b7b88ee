"""The `retriever` console script: the search commands of `retriever.cli` (index, search, info,
remove, serve), plus the `train`, `eval` and `bench` sub-apps of `recipes/` and `evals/`, each imported
only when it is named (or listed by `--help`).

A module of its own above the four packages: the search library (`retriever/`) never imports the
training or evaluation code, while users keep one command for all of it.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from retriever import __version__
from retriever.cli import Group
from retriever.cli import app as search_app

# sub-app name -> (module whose `app` it is, its help line)
SUB_APPS = {
    "train": ("recipes.cli", "Train models with the recipes."),
    "eval": ("evals.cli", "Evaluate models on retrieval benchmarks."),
    "bench": ("evals.bench.cli", "Speed benchmarks against the reference implementations."),
}
# Read-only commands end with os._exit once their output is flushed: torch's interpreter teardown
# takes ~0.4 s, a fifth of a cold `retriever search`.
_FAST_EXIT = {"search", "info"}


class _WithSubApps(Group):
    def list_commands(self, ctx) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in SUB_APPS if name not in self.commands)]

    def get_command(self, ctx, name: str):
        if name in SUB_APPS and name not in self.commands:
            module, help_line = SUB_APPS[name]
            command = typer.main.get_command(importlib.import_module(module).app)
            command.name, command.help, command.short_help = name, help_line, help_line
            self.add_command(command, name)
        return super().get_command(ctx, name)


app = typer.Typer(cls=_WithSubApps, no_args_is_help=True, help="Encoder-based search built on ModernBERT.")
app.add_typer(search_app)


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


def run() -> None:
    try:
        app()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if len(sys.argv) > 1 and sys.argv[1] in _FAST_EXIT:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        raise


if __name__ == "__main__":
    run()
