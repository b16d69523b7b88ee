"""The project's entry points: the CLI and the commands the README promises."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from retriever_command import app

ROOT = Path(__file__).resolve().parents[1]


def test_retriever_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("retriever ")


def test_one_command_lists_the_search_commands_and_the_sub_apps():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = [line.strip("│ ").split()[0] for line in result.output.splitlines() if line.startswith("│ ")]
    for command in ("index", "search", "info", "remove", "train", "eval", "bench"):
        assert command in listed, result.output


def _help_pages(command, path: list[str]):
    """(command path, --help output) of a command and of every command under it, sub-apps included."""
    import click

    output = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output
    yield " ".join(["retriever", *path]), output
    if hasattr(command, "list_commands"):
        context = click.Context(command)
        for name in command.list_commands(context):
            yield from _help_pages(command.get_command(context, name), [*path, name])


def test_help_names_values_and_keeps_paragraphs():
    """Every option that takes a value names it (N, DIR, MODEL, cpu|cuda); flags and --help show nothing: typer
    would print `<bool>`, `<int>`, `<list[Path]>` otherwise."""
    import typer

    pages = dict(_help_pages(typer.main.get_command(app), []))
    assert {"retriever index", "retriever eval beir", "retriever bench writes", "retriever train mlm"} <= set(pages)
    type_name = re.compile(r"<(?:bool|int|float|str|path|list\[[^>]*\]|tuple\[[^>]*\])>")
    shown = {path: type_name.findall(page) for path, page in pages.items() if type_name.search(page)}
    assert not shown, shown
    # a command's summary in the list is one paragraph, not the docstring's lines
    assert "new and changed documents are embedded, documents of these paths" in pages["retriever"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    setup_block = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(setup_block) == 2, "the README keeps exactly two set-up commands at the top"
    assert setup_block[1] in (ROOT / ".ci" / "run").read_text()


def test_encoder_benchmark_runs_and_reports_json():
    """A tiny shape of `python -m evals.bench encoder`: it runs both models and they agree."""
    result = subprocess.run(
        [sys.executable, "-m", "evals.bench", "encoder", "--num-layers", "2", "--long-docs", "2",
         "--long-min", "100", "--long-max", "300", "--short-texts", "3", "--short-max", "40", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["case"] for r in report["results"]] == ["(a) long ragged", "(b) short ragged"]
    for r in report["results"]:
        assert r["tokens"] > 0 and r["ours_tokens_per_s"] > 0 and r["reference_tokens_per_s"] > 0
        assert r["max_abs_diff"] < 1e-3
    assert report["environment"]["matmul_gflops"] > 0


SCIFACT = ROOT.parent / "shared" / "data" / "scifact"


def test_embedder_benchmark_runs_and_reports_json():
    if not (SCIFACT / "corpus.jsonl").is_file():
        import pytest

        pytest.skip(f"SciFact not found at {SCIFACT}: the embedder benchmark reads its abstracts")
    result = subprocess.run(
        [sys.executable, "-m", "evals.bench", "embedder", "--docs", "12", "--long-docs", "1",
         "--max-length", "600", "--num-layers", "2", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["docs"] == 13 and report["ours_docs_per_s"] > 0 and report["stock_docs_per_s"] > 0
    assert report["max_abs_diff"] < 1e-4


def test_readme_first_command_indexes_and_searches_with_the_shipped_model(tmp_path):
    """The README's first command after its install step, as written, into a temporary index."""
    readme = (ROOT / "README.md").read_text()
    first = readme.split("```bash\n", 1)[1].splitlines()[0]
    steps = first.split(" && ")
    assert steps[0] == "bash scripts/install.sh" and len(steps) == 3
    retriever = str(Path(sys.executable).parent / "retriever")
    env = {**os.environ, "RETRIEVER_INDEX": str(tmp_path / "index"), "HF_HUB_OFFLINE": "1"}
    outputs = []
    for step in steps[1:]:
        assert step.startswith(".venv/bin/retriever ")
        result = subprocess.run(step.replace(".venv/bin/retriever", retriever, 1), shell=True, cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout + result.stderr)
    assert "2 added" in " ".join(outputs[0].split())
    assert "README.md" in outputs[1] and "rank" in outputs[1]


def test_gpu_check_runs_on_cpu_with_quick_shapes():
    """`retriever bench gpu-check` is for a GPU machine; on CPU with --quick the same code runs: every case's
    bfloat16 parity with transformers and the contrastive steps."""
    result = subprocess.run([sys.executable, "-m", "evals.bench", "gpu-check", "--device", "cpu", "--quick", "--json"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [r["set"] for r in report["encoder"]] == ["long fixed", "short fixed", "long variable", "short variable"]
    assert all(r["parity_ok"] and r["ours_tokens_per_s"] > 0 for r in report["encoder"])
    assert report["contrastive"]["steps"] == 3 and report["contrastive"]["device"] == "cpu"
    assert report["all_ok"]


def test_dtype_benchmark_runs_both_dtypes():
    if not (SCIFACT / "corpus.jsonl").is_file():
        import pytest

        pytest.skip(f"SciFact not found at {SCIFACT}: the dtype benchmark reads its abstracts")
    result = subprocess.run([sys.executable, "-m", "evals.bench", "dtype", "--docs", "8", "--num-layers", "1",
                             "--repeats", "1", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["docs"] == 8 and report["index_default"] in ("float32", "bfloat16")
    assert len(report["models"]) == 2
    for r in report["models"].values():
        assert r["docs_per_s"]["float32"] > 0 and r["docs_per_s"]["bfloat16"] > 0 and r["min_cosine"] > 0.99
