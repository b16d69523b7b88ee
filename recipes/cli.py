"""`retriever train ...`: the training recipes, each driven by a YAML or TOML config file."""

from __future__ import annotations

from pathlib import Path

import typer

from retriever.cli import Group

app = typer.Typer(cls=Group, no_args_is_help=True, add_completion=False,
                  help="Train models: MLM pretraining, context extension, contrastive, distillation.")


@app.callback()
def main() -> None:
    """Train models: MLM pretraining, context extension, contrastive, distillation."""


@app.command()
def mlm(
    config: Path = typer.Option(None, "--config", "-c", metavar="FILE",
                                help="YAML or TOML file; keys as in `--show-config`."),
    resume: Path = typer.Option(None, metavar="DIR", help="A checkpoints/step-N folder to continue from."),
    show_config: bool = typer.Option(False, "--show-config", help="Print every key, its default and meaning."),
) -> None:
    """MLM pretraining with 30% masking, sequence packing, batch-size warmup and WSD learning rate."""
    from recipes.mlm import MLMConfig, MLMTrainer

    if show_config:
        typer.echo(MLMConfig.describe())
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


@app.command()
def extend(
    config: Path = typer.Option(None, "--config", "-c", metavar="FILE",
                                help="YAML or TOML file with the `mlm` keys; needs "
                                     "init_from, a longer max_length and global_rope_theta."),
    resume: Path = typer.Option(None, metavar="DIR", help="A checkpoints/step-N folder to continue from."),
) -> None:
    """Context extension: continue MLM training at a longer length after raising the global RoPE theta."""
    from recipes.mlm import MLMConfig, MLMTrainer

    if (config is None) == (resume is None):
        typer.echo("error: give either --config FILE or --resume CHECKPOINT", err=True)
        raise typer.Exit(2)
    try:
        if resume:
            trainer = MLMTrainer.resume(resume)
        else:
            run = MLMConfig.from_file(config)
            if not run.init_from or not run.global_rope_theta:
                raise ValueError(f"{config}: context extension needs init_from (the model to extend) and "
                                 "global_rope_theta (e.g. 160000)")
            trainer = MLMTrainer(run)
    except (OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    state = trainer.train()
    typer.echo(f"extended to {trainer.config.max_length} tokens (global RoPE theta "
               f"{trainer.model.config.global_rope_theta:g}) in {state.step} steps; checkpoints in "
               f"{trainer.config.output_dir}/checkpoints")


def _run_sentence_transformers_recipe(config_class, train, config: Path | None, show_config: bool) -> None:
    """Shared by the recipes that end in a sentence-transformers model in output_dir/final."""
    if show_config:
        typer.echo(config_class.describe())
        return
    if config is None:
        typer.echo("error: give --config FILE", err=True)
        raise typer.Exit(2)
    try:
        run = config_class.from_file(config)
        train(run)
    except (OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"model saved in {run.output_dir}/final")


@app.command()
def contrastive(
    config: Path = typer.Option(None, "--config", "-c", metavar="FILE",
                                help="YAML or TOML file; keys as in `--show-config`."),
    show_config: bool = typer.Option(False, "--show-config", help="Print every key, its default and meaning."),
) -> None:
    """Contrastive fine-tuning with sentence-transformers' trainer: (cached) MNRL, Matryoshka, hard negatives."""
    from recipes.contrastive import ContrastiveConfig, train_contrastive

    _run_sentence_transformers_recipe(ContrastiveConfig, train_contrastive, config, show_config)


@app.command()
def distill(
    config: Path = typer.Option(None, "--config", "-c", metavar="FILE",
                                help="YAML or TOML file; keys as in `--show-config`."),
    show_config: bool = typer.Option(False, "--show-config", help="Print every key, its default and meaning."),
) -> None:
    """Embedding distillation from a teacher sentence-transformers model (cached teacher embeddings)."""
    from recipes.distill import DistillConfig, train_distill

    _run_sentence_transformers_recipe(DistillConfig, train_distill, config, show_config)


@app.command("default-model")
def default_model(
    config: Path = typer.Option(None, "--config", "-c", metavar="FILE",
                                help="YAML or TOML file; keys as in `--show-config`."),
    show_config: bool = typer.Option(False, "--show-config", help="Print every key, its default and meaning."),
) -> None:
    """The shipped default model: data bundle, distillation from all-MiniLM-L6-v2, contrastive, retriever/default_model."""
    from recipes.default_model import DefaultModelConfig, train_default_model

    if show_config:
        typer.echo(DefaultModelConfig.describe())
        return
    try:
        run = DefaultModelConfig.from_file(config) if config else DefaultModelConfig()
        final = train_default_model(run)
    except (OSError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"model saved in {final}")
