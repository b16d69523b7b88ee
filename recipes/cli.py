"""`retriever train ...`: the training recipes, each driven by a YAML or TOML config file."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Train models: MLM pretraining (more recipes to come).")


@app.callback()
def main() -> None:
    """Train models: MLM pretraining (more recipes to come)."""


@app.command()
def mlm(
    config: Path = typer.Option(None, "--config", "-c", help="YAML or TOML file; keys as in `--show-config`."),
    resume: Path = typer.Option(None, help="A checkpoints/step-N folder to continue from."),
    show_config: bool = typer.Option(False, "--show-config", help="Print every key, its default and meaning."),
) -> None:
    """MLM pretraining with 30% masking, sequence packing, batch-size warmup and WSD learning rate."""
    import dataclasses

    from recipes.mlm import MLMConfig, MLMTrainer

    if show_config:
        for f in dataclasses.fields(MLMConfig):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            typer.echo(f"{f.name} = {default!r}  # {f.metadata['help']}")
        return
    if (config is None) == (resume is None):
        typer.echo("error: give either --config FILE or --resume CHECKPOINT", err=True)
        raise typer.Exit(2)
    try:
        trainer = MLMTrainer.resume(resume) if resume else MLMTrainer(MLMConfig.from_file(config))
    except (OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    state = trainer.train()
    typer.echo(f"trained {state.step} steps, {state.tokens_seen:,} tokens; checkpoints in "
               f"{trainer.config.output_dir}/checkpoints")
