"""The default model's whole recipe, at toy sizes, through its command line: data bundle -> student ->
distillation -> contrastive -> shipped folder, in a process where faiss cannot be imported (the GPU
machine has none, and a faiss import once ended a training run there after its distillation)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recipes import default_data
from tests.conftest import bert_embedder, make_corpus

ROOT = Path(__file__).resolve().parents[1]
RUN_WITHOUT_FAISS = (
    "import runpy, sys; sys.modules['faiss'] = None; sys.argv = ['recipes.default_model'] + sys.argv[1:]; "
    "runpy.run_module('recipes.default_model', run_name='__main__')"
)


def _bundle(path: Path) -> Path:
    """Short pairs (some grouped as the sections of an article), manual pages and raw texts."""
    passages = make_corpus(60, 31)
    pairs = [{"query": " ".join(p.split()[:4]), "positive": p} for p in passages[:40]]
    # each article names someone once, in its first section: a known item (every other word is lower-case)
    pairs += [{"query": f"article {i // 4}: section {i % 4}", "group": f"article {i // 4}",
               "positive": p + (f" Zorva{'abcde'[i // 4]}th" if i % 4 == 0 else "")}
              for i, p in enumerate(passages[40:])]
    man = [{"query": f"tool{i} - " + " ".join(p.split()[:3]), "text": p * 20, "name": f"tool{i}"}
           for i, p in enumerate(make_corpus(12, 32))]
    path.mkdir()
    default_data._write_jsonl(path / "pairs.jsonl.xz", pairs)
    default_data._write_jsonl(path / "man.jsonl.xz", man)
    default_data._write_jsonl(path / "texts.jsonl.xz", [{"text": t} for t in make_corpus(20, 33)])
    (path / "manifest.json").write_text(json.dumps({"pairs": {"toy": len(pairs)}, "man_pages": len(man)}))
    return path


@pytest.mark.parametrize("student_init,distill_loss,teacher_width", [
    ("pca", "both", 96),  # a narrower student than its teacher (a Dense to the teacher's 96 dimensions)
    ("teacher", "layers", 64),  # the shipped model's way: the teacher's width, its weights, matched layer by layer
])
def test_recipe_runs_end_to_end_without_faiss(checkpoint_dir, tmp_path, student_init, distill_loss, teacher_width):
    teacher = bert_embedder(checkpoint_dir, tmp_path / "teacher", hidden_size=teacher_width, num_hidden_layers=2,
                            seed=7)
    final = tmp_path / "final"
    final.mkdir()
    (final / "README.md").write_text("the hand-written model card\n")
    keys = dict(data_dir=_bundle(tmp_path / "data"), output_dir=tmp_path / "run", final_dir=final, teacher=teacher,
                hidden_size=64, num_hidden_layers=3, num_attention_heads=2, max_length=1024,
                intermediate_size=96 if student_init == "pca" else 48,  # a warm start keeps 48 of the teacher's 64
                distill_steps=2, distill_batch_size=16, contrastive_steps=2, contrastive_batch_size=8,
                dataloader_workers=1, max_texts=1000, student_init=student_init, distill_loss=distill_loss,
                teacher_layers="[0,1,1]" if student_init == "teacher" else "[]")
    if distill_loss == "both":  # a sample of the distillation texts
        keys.update(distill_texts=40)
    if distill_loss == "layers":  # packed distillation, and packs beside the contrastive pairs
        keys.update(distill_pack_tokens=512, distill_pack_steps=2, distill_pack_batch_size=4,
                    contrastive_pack_tokens=512, contrastive_pack_share=0.5)
    run = subprocess.run([sys.executable, "-c", RUN_WITHOUT_FAISS, "--set", *(f"{k}={v}" for k, v in keys.items())],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    summary = json.loads((final / "training_summary.json").read_text())
    assert summary["distill"]["steps"] == 2 and summary["contrastive"]["steps"] == 2
    assert (summary["distill"]["texts"] == 40) == (distill_loss == "both")
    assert summary.get("distill_packs", {}).get("steps") == (2 if distill_loss == "layers" else None)
    # all short pairs, the first 10 manual pages (max_texts mode), one long pair per article
    assert summary["contrastive"]["pairs"] == 60 + 10 + 5
    assert (final / "README.md").read_text() == "the hand-written model card\n"
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((final / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling"] + ["Dense"] * (teacher_width != 64) + ["Normalize"]
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == "modernbert" and config["max_position_embeddings"] == 1024

    from retriever.embedding import PassageEncoder

    model = PassageEncoder.load(final)
    vectors, _ = model.encode_documents(make_corpus(4, 34))
    assert vectors.shape == (4, 64), "a Dense 64 -> 96 of distillation is folded into a square map"
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("among_others", [False, True])
def test_known_item_negatives_differ_from_their_article_in_the_name_alone(tmp_path, among_others):
    import random

    from recipes.default_model import TOKENS_PER_CHAR, known_item_pairs, wikipedia_articles

    pairs, _, _ = default_data.load(_bundle(tmp_path / "data"))
    known = known_item_pairs(pairs, 100, 1024, random.Random(0), negatives="swap", among_others=among_others)
    names = {f"Zorva{letter}th" for letter in "abcde"}
    articles = wikipedia_articles(pairs)[1].values()
    assert len(known) == 5
    places = []
    for row in known:
        (name,) = [n for n in names if n in row["query"]]  # the articles around it hold their own names
        assert row["positive"].count(name) == 1
        assert row["negative"] in {row["positive"].replace(name, other) for other in names - {name}}
        (article,) = [a[:int(1024 / TOKENS_PER_CHAR)] for a in articles if name in a]
        if among_others:  # the whole article among others (toy articles are about 300 tokens), 1024 tokens in all
            assert article in row["positive"] and len(row["positive"]) == int(1024 / TOKENS_PER_CHAR)
            places.append(row["positive"].index(article))
        else:
            assert row["positive"] == article
    assert not places or len(set(places)) > 1, f"the article sits at a random place, not always at {places}"
    assert known_item_pairs(pairs[:44], 100, 1024, random.Random(0), negatives="swap") == [], \
        "one article has no other article's name to swap in"


def test_moved_known_item_negatives_hold_the_swapped_sentence_elsewhere(tmp_path):
    import random

    from recipes.default_model import known_item_pairs

    pairs, _, _ = default_data.load(_bundle(tmp_path / "data"))
    names = {f"Zorva{letter}th" for letter in "abcde"}
    opening = moved = 0
    for seed in range(8):
        for row in known_item_pairs(pairs, 100, 1024, random.Random(seed), negatives="moved"):
            (name,) = [n for n in names if n in row["positive"]]
            (swapped,) = [n for n in names if n in row["negative"]]
            swapped_text = row["positive"].replace(name, swapped)
            moved += row["negative"] != swapped_text
            assert sorted(row["negative"].split()) == sorted(swapped_text.split()), "only the sentence moved"
            title, body = row["negative"].split("\n", 1)
            assert row["positive"].startswith(title + "\n")
            (sentence,) = [s for s in re.split(r"(?<=\.) |\n", body) if swapped in s]
            opening += body.startswith(sentence)
    assert moved >= 30 and 8 <= opening <= 32, f"of 40 negatives, {moved} moved and {opening} open with it"
    with pytest.raises(ValueError, match="'elsewhere'"):
        known_item_pairs(pairs, 100, 1024, random.Random(0), negatives="elsewhere")


def test_opening_known_item_triplets_open_with_the_sentence_one_time_in_two_each(tmp_path):
    import random

    from recipes.default_model import TOKENS_PER_CHAR, known_item_pairs, wikipedia_articles

    pairs, _, _ = default_data.load(_bundle(tmp_path / "data"))
    articles = [text[: int(1024 / TOKENS_PER_CHAR)] for text in wikipedia_articles(pairs)[1].values()]
    names = {f"Zorva{letter}th" for letter in "abcde"}
    opens = {"positive": 0, "negative": 0}
    for seed in range(8):
        for row in known_item_pairs(pairs, 100, 1024, random.Random(seed), negatives="opening"):
            (name,) = [n for n in names if n in row["positive"]]
            (swapped,) = [n for n in names if n in row["negative"]]
            (article,) = [text for text in articles if name in text]
            title = article.split("\n", 1)[0]
            for column, expected in (("positive", article), ("negative", article.replace(name, swapped))):
                text = row[column]
                assert sorted(text.split()) == sorted(expected.split()), "only the sentence moved"
                if text != expected:  # moved: the sentence holding the name, then the title line
                    sentence, after = text.split(" " + title + "\n", 1)
                    assert (name if column == "positive" else swapped) in sentence and sentence in expected
                    opens[column] += 1
                else:
                    assert text.startswith(title + "\n")
    assert all(8 <= count <= 32 for count in opens.values()), f"of 40 each, these opened with it: {opens}"


@pytest.mark.parametrize("negatives,loss", [("", "mnrl"), ("moved", "mnrl"), ("", "cached_mnrl")])
def test_recipe_continues_a_shipped_model_with_known_items(st_model_dir, tmp_path, negatives, loss):
    """cached_mnrl: GradCache, a batch of 8 pairs through forwards of 3 texts."""
    final = tmp_path / "final"
    keys = dict(data_dir=_bundle(tmp_path / "data"), output_dir=tmp_path / "run", final_dir=final,
                start_model=st_model_dir, known_items=100, max_length=1024, contrastive_steps=2,
                contrastive_batch_size=8 if not negatives else 4, dataloader_workers=1, max_texts=1000,
                contrastive_loss=loss, contrastive_mini_batch_size=3)
    if negatives:
        keys["known_item_negatives"] = negatives
    run = subprocess.run([sys.executable, "-c", RUN_WITHOUT_FAISS, "--set", *(f"{k}={v}" for k, v in keys.items())],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    summary = json.loads((final / "training_summary.json").read_text())
    assert "skipped" in summary["distill"] and not (tmp_path / "run" / "distill").exists()
    assert summary["contrastive"]["known_items"] == 5  # one name per article, however many are asked for
    assert summary["contrastive"]["pairs"] == 60 + 10 + 5 + 5 and summary["contrastive"]["steps"] == 2
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((final / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize"], "the start model's Normalize, not a second one"


@pytest.mark.parametrize("short_pairs", [0, 7])
def test_recipe_can_give_the_contrastive_stage_to_long_documents(st_model_dir, tmp_path, short_pairs):
    """contrastive_short_pairs: a sample of the short pairs (0: none) beside every long pair."""
    final = tmp_path / "final"
    keys = dict(data_dir=_bundle(tmp_path / "data"), output_dir=tmp_path / "run", final_dir=final,
                start_model=st_model_dir, contrastive_short_pairs=short_pairs, max_length=1024, contrastive_steps=2,
                contrastive_batch_size=4, dataloader_workers=1, max_texts=1000)
    run = subprocess.run([sys.executable, "-c", RUN_WITHOUT_FAISS, "--set", *(f"{k}={v}" for k, v in keys.items())],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]

    contrastive = json.loads((final / "training_summary.json").read_text())["contrastive"]
    # the first 10 manual pages (max_texts mode) and one long pair per article stay whatever the sample
    assert contrastive["short_pairs"] == short_pairs and contrastive["pairs"] == short_pairs + 10 + 5
    assert contrastive["steps"] == 2
