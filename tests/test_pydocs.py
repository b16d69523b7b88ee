"""The Python documentation question set: pages read by the index's reader, questions from the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals import pydocs
from retriever.beir import load_beir


SPHINX_PAGE = (Path(__file__).parent / "html" / "sphinx.html").read_text(encoding="utf-8")


def _site(root):
    """A Sphinx page in each of two sections of the set and in one section outside it."""
    for path in ("library/shelve.html", "tutorial/errors.html", "c-api/intro.html"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(SPHINX_PAGE.replace("shelve", path.split("/")[1].removesuffix(".html")))
    return root


def test_builds_a_beir_folder_of_the_chosen_sections(tmp_path):
    questions = tmp_path / "questions.tsv"
    questions.write_text("query\tpage\nstore objects on disk\tlibrary/shelve.html\ncatch an error\ttutorial/errors.html\n")
    counts = pydocs.build(tmp_path / "out", root=_site(tmp_path / "html"), questions=questions)
    assert counts == {"documents": 2, "queries": 2}, "c-api is not a section of the set"
    data = load_beir(tmp_path / "out", "test")
    assert data.qrels == {"q0": {"library/shelve.html": 1}, "q1": {"tutorial/errors.html": 1}}
    page = data.corpus["library/shelve.html"].text
    assert "persistent, dictionary-like" in page and "Report a Bug" not in page, "the index's reader: main content"


def test_a_question_whose_page_is_missing_is_named(tmp_path):
    questions = tmp_path / "questions.tsv"
    questions.write_text("query\tpage\nwhere is it\tlibrary/gone.html\n")
    with pytest.raises(ValueError, match="pages not in .*: library/gone.html"):
        pydocs.build(tmp_path / "out", root=_site(tmp_path / "html"), questions=questions)


def test_the_shipped_questions_name_pages_of_the_set():
    rows = pydocs.QUESTIONS.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "query\tpage" and len(rows) > 40
    pages = [row.split("\t")[1] for row in rows[1:]]
    assert all(page.startswith(pydocs.SECTIONS) and page.endswith(".html") for page in pages)
    if pydocs.HTML_ROOT.is_dir():
        missing = [p for p in pages if not (pydocs.HTML_ROOT / p).is_file()]
        assert not missing, json.dumps(missing)
