"""The default model's data builder, long-document assembly, stage clock, projection folding and the
man-page set."""

from __future__ import annotations

import gzip
import json
import random
import shutil

import pytest
import torch

from recipes.man_pages import is_held_out
from recipes import default_data
from recipes.default_model import StageClock, fold_projection, known_item_pairs, long_pairs

TRANSLATIONS = """Package: hello
Description-md5: 0
Description-en: example package based on GNU hello
 The GNU hello program produces a familiar, friendly greeting.
 .
 It allows non-programmers to use a classic computer science tool.

Package: nothing
Description-md5: 1
"""


def test_parse_translations():
    assert list(default_data.parse_translations(TRANSLATIONS)) == [(
        "example package based on GNU hello",
        "The GNU hello program produces a familiar, friendly greeting.\n"
        "It allows non-programmers to use a classic computer science tool.",
    )]


def _write_pairs(path, rows):
    path.mkdir(parents=True)
    with gzip.open(path / "pairs.jsonl.gz", "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def test_shared_pairs_caps_sources_and_keeps_articles_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(default_data, "PAIR_CAPS", {"medquad": 3})
    monkeypatch.setattr(default_data, "WIKIPEDIA_ARTICLES", 2)
    _write_pairs(tmp_path / "medquad", [{"query": f"q{i}", "positive": f"answer {i}"} for i in range(10)])
    wiki = []
    for title in ("Alpha", "Beta", "Gamma"):
        wiki += [{"query": f"{title}: History", "positive": f"{title} history."},
                 {"query": title, "positive": f"{title} is a letter."}]
    wiki.append({"query": "Delta: Use", "positive": "no lead: never picked"})
    _write_pairs(tmp_path / "wikipedia_en", wiki)

    pairs = default_data.shared_pairs(tmp_path, random.Random(0))
    assert sum(p["source"] == "medquad" for p in pairs) == 3
    articles = [p for p in pairs if p["source"] == "wikipedia_en"]
    assert len(articles) == 4 and len({p["group"] for p in articles}) == 2
    assert all(p["group"] != "Delta" for p in articles)
    lead = next(i for i, p in enumerate(articles) if p["query"] == p["group"])
    assert articles[lead + 1]["group"] == articles[lead]["group"]  # lead first, then its sections


def test_cut_ends_at_a_boundary():
    text = "One sentence here. " * 20
    cut = default_data.cut_text(text, 100)
    assert len(cut) <= 100 and cut.endswith(".")


def test_long_pairs_hide_the_article_among_others():
    pairs = [{"query": t, "positive": f"{t} lead text " * 50, "group": t} for t in "ABCDEFGH"]
    pairs += [{"query": f"{t}: Part", "positive": f"{t} section text " * 50, "group": t} for t in "ABCDEFGH"]
    man = [{"query": "list directory contents", "text": "ls lists files", "name": "ls.1"}]
    result = long_pairs(pairs, man, count=4, max_length=2048, rng=random.Random(0))
    assert result[0] == {"query": "list directory contents", "positive": "ls lists files"}
    for row in result[1:]:
        title = row["query"].split(": ")[0]
        assert f"{title} lead text" in row["positive"]
        assert len(row["positive"]) <= 2048 * 4


def test_known_items_ask_for_a_rare_name_inside_the_article():
    def article(title, lead, history):
        return [{"query": title, "positive": lead, "group": title},
                {"query": f"{title}: History", "positive": history, "group": title}]

    # Only Zorvath Kelling, Brannoch and Imra Duskwater qualify: Tolberg is in two articles, Quarry Office shares a
    # word with its title, Pellor Vance is mentioned twice, History and Carts open sections of every article.
    pairs = article("Granite quarry", "Granite quarry is a pit near Tolberg. It was opened by Zorvath Kelling in 1901.",
                    "Carts took the stone to Tolberg for Brannoch. The Quarry Office kept the books.")
    pairs += article("River Wend", "River Wend flows past Tolberg. Its mill belonged to Imra Duskwater.",
                     "Carts crossed the river. The floods came each year.")
    pairs += article("Old mill", "Pellor Vance built it. Pellor Vance sold it.", "Carts took the grain.")
    sentences = {"Zorvath Kelling": "It was opened by Zorvath Kelling in 1901.",
                 "Brannoch": "Carts took the stone to Tolberg for Brannoch.",
                 "Imra Duskwater": "Its mill belonged to Imra Duskwater."}
    result = known_item_pairs(pairs, count=10, max_length=8192, rng=random.Random(0))
    names = [next(n for n in sentences if n in row["query"]) for row in result]
    assert sorted(names) == sorted(sentences)
    assert {row["query"] == sentences[name] for row, name in zip(result, names)} == {True, False}  # both forms
    for row, name in zip(result, names):
        assert row["query"] in (name, sentences[name])
        assert row["positive"].count(name) == 1 and row["positive"].startswith(("Granite quarry\n", "River Wend\n"))
    assert result[0]["positive"] != result[1]["positive"]  # each article gives one name before any gives two
    for seed in range(5):
        firsts = known_item_pairs(pairs, count=2, max_length=8192, rng=random.Random(seed))
        assert {row["positive"].split("\n")[0] for row in firsts} == {"Granite quarry", "River Wend"}
    rng = random.Random(0)
    assert known_item_pairs(pairs, count=0, max_length=8192, rng=rng) == []
    assert rng.random() == random.Random(0).random()  # no pairs asked for: the run's later shuffles are unchanged


def test_fold_projection_keeps_similarities():
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense

    torch.manual_seed(0)
    model = SentenceTransformer(modules=[Dense(8, 12, bias=False, activation_function=torch.nn.Identity())],
                                device="cpu")
    x = torch.randn(5, 8)
    before = model[0]({"sentence_embedding": x})["sentence_embedding"].detach()
    fold_projection(model)
    after = model[0]({"sentence_embedding": x})["sentence_embedding"].detach()
    assert after.shape == (5, 8)
    torch.testing.assert_close(after @ after.T, before @ before.T, rtol=1e-4, atol=1e-4)


def test_held_out_fifth_is_fixed():
    names = [f"page{i}.1" for i in range(2000)]
    held = [n for n in names if is_held_out(n)]
    assert held == [n for n in names if is_held_out(n)]
    assert 300 < len(held) < 500


PAGE = r""".TH FROB 1 "2024" "frob 1.0" "User Commands"
.SH NAME
frob \- twiddle the bits of a file until they are pleasing
.SH SYNOPSIS
.B frob
[\fIFILE\fR]
.SH DESCRIPTION
.B frob
reads each FILE and rearranges its bits. """ + "It is careful about it. " * 300 + "\n"


@pytest.mark.skipif(shutil.which("man") is None, reason="needs man-db")
def test_longdocs_set_from_man_pages(tmp_path):
    from evals.longdocs import build
    from retriever.beir import load_beir

    names = [f"frob{i}" for i in range(40)]
    held = [n for n in names if is_held_out(f"{n}.1")]
    (tmp_path / "man" / "man1").mkdir(parents=True)
    for n in names:
        (tmp_path / "man" / "man1" / f"{n}.1").write_text(PAGE.replace("twiddle", f"twiddle {n}"))
    summary = build(tmp_path / "set", root=tmp_path / "man", min_chars=1000)
    assert summary["queries"] == len(held) > 0
    dataset = load_beir(tmp_path / "set")
    assert sorted(dataset.corpus) == sorted(f"{n}.1" for n in held)
    query = next(iter(dataset.queries.values()))
    assert query.startswith("twiddle frob") and "frob -" not in query
    document = next(iter(dataset.corpus.values())).text
    assert "SYNOPSIS" in document and "twiddle" not in document


def test_stage_clock_drives_the_learning_rate_and_stops(monkeypatch):
    from types import SimpleNamespace

    from recipes import default_model

    now = [0.0]
    monkeypatch.setattr(default_model.time, "perf_counter", lambda: now[0])
    clock = StageClock(seconds=100.0, peak_lr=1e-3)
    optimizer = SimpleNamespace(param_groups=[{"lr": 0.0}])
    state, control = SimpleNamespace(global_step=0), SimpleNamespace(should_training_stop=False)
    clock.on_train_begin(None, state, control)
    lrs = []
    for t in (1.0, 5.0, 50.0, 99.0):
        now[0] = t
        clock.on_step_begin(None, state, control, optimizer=optimizer)
        lrs.append(optimizer.param_groups[0]["lr"])
        clock.on_step_end(None, state, control)
    assert lrs[0] < lrs[1] == pytest.approx(1e-3) and lrs[1] > lrs[2] > lrs[3] > 0  # warm-up, then decay
    assert not control.should_training_stop
    now[0] = 100.0
    clock.on_step_end(None, state, control)
    assert control.should_training_stop


def test_warm_start_takes_the_teachers_weights(checkpoint_dir, tmp_path):
    import transformers

    from encoder import ModernBertModel
    from recipes.default_model import DefaultModelConfig, init_student
    from tests.conftest import bert_embedder

    teacher = bert_embedder(checkpoint_dir, tmp_path, hidden_size=32, num_hidden_layers=3, seed=3)
    bert = transformers.BertModel.from_pretrained(tmp_path / "bert").eval()
    config = DefaultModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                max_length=512, student_init="teacher", teacher_layers=[0, 2])
    student = ModernBertModel.from_pretrained(init_student(config, str(teacher), tmp_path / "student"))
    e = bert.embeddings
    words = e.word_embeddings.weight + e.token_type_embeddings.weight[0] + e.position_embeddings.weight.mean(0)
    torch.testing.assert_close(student.embeddings.tok_embeddings.weight[: len(words)], words)
    layer, second = bert.encoder.layer[2], student.layers[1]
    attention = layer.attention.self
    torch.testing.assert_close(second.attn.Wqkv.weight,
                               torch.cat([attention.query.weight, attention.key.weight, attention.value.weight]))
    torch.testing.assert_close(second.attn_norm.weight, bert.encoder.layer[0].output.LayerNorm.weight)
    torch.testing.assert_close(second.mlp_norm.bias, layer.attention.output.LayerNorm.bias)
    torch.testing.assert_close(student.final_norm.weight, layer.output.LayerNorm.weight)
    x = torch.randn(5, 32)
    with torch.no_grad():  # GeGLU with a gate of ones is BERT's GELU MLP
        torch.testing.assert_close(second.mlp(x), layer.output.dense(layer.intermediate(x)))

    narrower = DefaultModelConfig(**{**config.__dict__, "intermediate_size": 40})
    student = ModernBertModel.from_pretrained(init_student(narrower, str(teacher), tmp_path / "narrow"))
    assert student.layers[0].mlp.Wo.weight.shape == (32, 40)
    with pytest.raises(ValueError, match="teacher's width"):
        init_student(DefaultModelConfig(**{**config.__dict__, "hidden_size": 48}), str(teacher), tmp_path / "wide")


def test_embeddings_init_takes_the_teachers_token_embeddings_and_fresh_layers(checkpoint_dir, tmp_path):
    import transformers

    from encoder import ModernBertModel
    from recipes.default_model import DefaultModelConfig, init_student
    from tests.conftest import bert_embedder

    teacher = bert_embedder(checkpoint_dir, tmp_path, hidden_size=32, num_hidden_layers=3, seed=3)
    bert = transformers.BertModel.from_pretrained(tmp_path / "bert").eval()
    config = DefaultModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                max_length=512, student_init="embeddings")
    student = ModernBertModel.from_pretrained(init_student(config, str(teacher), tmp_path / "student"))
    e = bert.embeddings
    words = e.word_embeddings.weight + e.token_type_embeddings.weight[0] + e.position_embeddings.weight.mean(0)
    torch.testing.assert_close(student.embeddings.tok_embeddings.weight[: len(words)], words)
    torch.testing.assert_close(student.embeddings.norm.weight, e.LayerNorm.weight)
    attention = bert.encoder.layer[0].attention.self
    teacher_wqkv = torch.cat([attention.query.weight, attention.key.weight, attention.value.weight])
    assert not torch.allclose(student.layers[0].attn.Wqkv.weight, teacher_wqkv)  # the layers are fresh
    assert student.layers[0].attn.Wqkv.bias is None  # and ModernBERT's: no biases
    with pytest.raises(ValueError, match="teacher's width"):
        init_student(DefaultModelConfig(**{**config.__dict__, "hidden_size": 48}), str(teacher), tmp_path / "wide")
