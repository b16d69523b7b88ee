"""The MLM recipe on a tiny model and tiny data: the loss goes down, and resuming is exact."""

from __future__ import annotations

import json

import pytest

from recipes.mlm import MLMConfig, MLMTrainer, read_texts
from tests.conftest import make_corpus, make_tokenizer

TINY_MODEL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
                  local_attention=8)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def tiny_config(tmp_path, **overrides) -> MLMConfig:
    values = dict(output_dir=str(tmp_path), model=TINY_MODEL, max_length=64, pack_tokens=256,
                  batch_tokens=512, batch_start_tokens=256, batch_warmup_tokens=4000, steps=40, lr=3e-3,
                  warmup_steps=4, decay_steps=8, save_every=1000)
    values.update(overrides)
    return MLMConfig(**values)


def test_loss_goes_down(tokenizer, tmp_path):
    trainer = MLMTrainer(tiny_config(tmp_path), tokenizer=tokenizer, texts=make_corpus(200, 3))
    assert trainer.efficiency > 0.9
    state = trainer.train(progress=False)
    first, last = sum(state.losses[:5]) / 5, sum(state.losses[-5:]) / 5
    assert last < first - 1.0, (first, last)
    assert (tmp_path / "checkpoints" / "step-40" / "model.safetensors").is_file()


def test_batch_size_warmup_grows_the_step(tokenizer, tmp_path):
    trainer = MLMTrainer(tiny_config(tmp_path), tokenizer=tokenizer, texts=make_corpus(200, 3))
    first = trainer.next_packs()
    trainer.state.tokens_seen = 10_000
    later = trainer.next_packs()
    assert sum(trainer.lengths[i] for i in first) <= 256 < sum(trainer.lengths[i] for i in later) <= 512


def test_resume_gives_the_same_next_loss(tokenizer, tmp_path):
    texts = make_corpus(120, 4)
    straight = MLMTrainer(tiny_config(tmp_path / "a", steps=8, save_every=4, warmup_steps=2, decay_steps=3),
                          tokenizer=tokenizer, texts=texts)
    straight.train(progress=False)
    resumed = MLMTrainer.resume(tmp_path / "a" / "checkpoints" / "step-4", tokenizer=tokenizer, texts=texts)
    assert resumed.state.step == 4
    resumed.train(progress=False)
    assert resumed.state.losses == pytest.approx(straight.state.losses, abs=1e-5)


def test_config_files_and_unknown_keys(tmp_path):
    (tmp_path / "run.toml").write_text('data = ["x.txt"]\nsteps = 7\n')
    assert MLMConfig.from_file(tmp_path / "run.toml").steps == 7
    (tmp_path / "run.yaml").write_text("steps: 9\nlearning_rate: 1\n")
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rate'\]"):
        MLMConfig.from_file(tmp_path / "run.yaml")


def test_read_texts_from_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "third"}) + "\n")
    assert sorted(read_texts([str(tmp_path)])) == ["first line", "second line", "third"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_texts([str(tmp_path / "missing")])


def test_train_mlm_cli_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from retriever_command import app

    make_tokenizer(tmp_path / "tok")
    (tmp_path / "texts.txt").write_text("\n".join(make_corpus(60, 5)) + "\n")
    (tmp_path / "run.yaml").write_text(
        f"data: [{tmp_path / 'texts.txt'}]\ntokenizer: {tmp_path / 'tok'}\noutput_dir: {tmp_path / 'run'}\n"
        f"model: {json.dumps(TINY_MODEL)}\nmax_length: 64\npack_tokens: 256\nbatch_tokens: 256\n"
        "batch_start_tokens: 256\nsteps: 3\nwarmup_steps: 1\ndecay_steps: 1\n")
    result = CliRunner().invoke(app, ["train", "mlm", "--config", str(tmp_path / "run.yaml")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "checkpoints" / "step-3" / "config.json").is_file()
    result = CliRunner().invoke(app, ["train", "mlm", "--show-config"])
    assert "mask_rate = 0.3  # Share of non-special tokens predicted." in result.output


def test_context_extension_records_length_and_theta(tokenizer, tmp_path):
    from encoder import ModernBertConfig

    base = MLMTrainer(tiny_config(tmp_path / "base", steps=2, warmup_steps=1, decay_steps=1, max_length=32),
                      tokenizer=tokenizer, texts=make_corpus(60, 6))
    base.train(progress=False)
    texts = [" ".join(make_corpus(8, 7))] * 4 + make_corpus(20, 8)
    extended = MLMTrainer(tiny_config(tmp_path / "long", steps=12, warmup_steps=2, decay_steps=2, max_length=1024,
                                      pack_tokens=2048, batch_tokens=2048, batch_start_tokens=2048,
                                      init_from=str(tmp_path / "base" / "checkpoints" / "step-2"),
                                      global_rope_theta=160_000.0, lr=3e-3),
                          tokenizer=tokenizer, texts=texts)
    assert max(extended.lengths) > 600, "long sequences take part"
    state = extended.train(progress=False)
    assert sum(state.losses[-3:]) < sum(state.losses[:3]), state.losses
    saved = ModernBertConfig.from_json_file(tmp_path / "long" / "checkpoints" / "step-12" / "config.json")
    assert saved.global_rope_theta == 160_000.0 and saved.max_position_embeddings >= 1024
    assert json.loads((tmp_path / "long" / "checkpoints" / "step-12" / "trainer_state.json").read_text())[
        "config"]["max_length"] == 1024
