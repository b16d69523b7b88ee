"""MLM pretraining as in ModernBERT: 30% masking, greedy sequence packing, batch-size warmup,
warmup-stable-decay learning rate, StableAdamW. Resumable; checkpoints in Hugging Face format.
Context extension is the same training from a checkpoint at a longer `max_length` with a
higher `global_rope_theta` (the paper: 1024 -> 8192 tokens, 10k -> 160k).

files -> texts (datasets) -> "[CLS] ... [SEP]" token ids -> best-fit packs -> masked packed steps
-> ModernBertForMaskedLM (sparse prediction) -> checkpoints/step-N/ (model + training state).

A step is as many packs as the current token budget needs (batch-size warmup grows it), run as
one packed forward with `cu_seqlens`: no padding, no attention across sequences.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from encoder import ModernBertConfig, ModernBertForMaskedLM
from recipes.config import RecipeConfig, option
from recipes.masking import mask_tokens
from recipes.packing import collate_pack, pack_best_fit, packing_efficiency
from recipes.schedules import batch_tokens_at, wsd_learning_rate


@dataclass
class MLMConfig(RecipeConfig):
    data: list[str] = option([], "Text sources: .txt (a line a text), .jsonl/.json/.parquet with a 'text' column, "
                                  "folders of them, or hub datasets (owner/name) when online.")
    tokenizer: str = option("", "Tokenizer folder or hub id; needs [CLS]/[SEP]/[MASK] tokens.")
    output_dir: str = option("runs/mlm", "Where checkpoints/step-N/ folders go.")
    init_from: str = option("", "Masked-LM checkpoint to continue from; empty: fresh weights from `model`.")
    model: dict = option({}, "ModernBertConfig fields for fresh weights (vocab and special ids come from the "
                              "tokenizer).")
    max_length: int = option(1024, "Tokens per sequence; longer texts are truncated.")
    global_rope_theta: float = option(0.0, "RoPE theta of the global layers, set before training (context "
                                            "extension: 160000); 0 keeps the model's.")
    pack_tokens: int = option(4096, "Token budget of one pack.")
    batch_tokens: int = option(16384, "Token budget of one optimizer step once batch-size warmup is over.")
    batch_start_tokens: int = option(4096, "Token budget of the first step.")
    batch_warmup_tokens: int = option(0, "Training tokens over which the step budget grows to batch_tokens.")
    steps: int = option(1000, "Optimizer steps in all.")
    lr: float = option(8e-4, "Peak learning rate.")
    warmup_steps: int = option(100, "Linear learning-rate warmup steps.")
    decay_steps: int = option(200, "Final steps of 1-sqrt learning-rate decay to zero.")
    weight_decay: float = option(1e-5, "Decoupled weight decay, not applied to norms, biases and embeddings.")
    mask_rate: float = option(0.3, "Share of non-special tokens predicted.")
    save_every: int = option(500, "Steps between checkpoints (the last step is always saved).")
    seed: int = option(0, "Seed for weights, data order and masking.")


def read_texts(sources: list[str]) -> list[str]:
    """Texts of local files through `datasets` (text, json, parquet builders), or of hub datasets
    named `owner/name` (their train split's 'text' column) when online."""
    from datasets import load_dataset

    files: dict[str, list[str]] = {"text": [], "json": [], "parquet": []}
    builder_of = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
    texts: list[str] = []
    for source in sources:
        path = Path(source)
        if not path.exists():
            if source.startswith((".", "/", "~")) or source.count("/") != 1:
                raise FileNotFoundError(f"{source}: no such file or folder")
            texts.extend(_texts_of(load_dataset(source, split="train"), source))  # a hub dataset, when online
            continue
        for candidate in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            suffix = Path(candidate.name.removesuffix(".gz")).suffix  # datasets reads .gz itself
            if suffix in builder_of:
                files[builder_of[suffix]].append(str(candidate))
    for builder, paths in files.items():
        if paths:
            texts.extend(_texts_of(load_dataset(builder, data_files=paths, split="train"), paths[0]))
    if not texts:
        raise ValueError(f"no texts found in {sources}")
    return texts


def _texts_of(dataset, source: str) -> list[str]:
    if "text" not in dataset.column_names:
        raise ValueError(f"{source}: no 'text' column (columns: {dataset.column_names})")
    return [t for t in dataset["text"] if t and t.strip()]


@dataclass
class TrainState:
    """What resuming needs besides the weights and the optimizer."""

    step: int = 0
    tokens_seen: int = 0
    epoch: int = 0
    pack_cursor: int = 0  # next pack of this epoch's order
    losses: list[float] = field(default_factory=list)


def epoch_order(num_packs: int, seed: int, epoch: int) -> list[int]:
    order = list(range(num_packs))
    random.Random(f"{seed}-{epoch}").shuffle(order)
    return order


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.ndim < 2 or "norm" in name or "embeddings" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class MLMTrainer:
    def __init__(self, config: MLMConfig, tokenizer=None, texts: list[str] | None = None):
        from optimi import StableAdamW
        from transformers import AutoTokenizer

        self.config = config
        # a schedule that does not fit the run fails now, not at its first step
        wsd_learning_rate(0, peak=config.lr, total_steps=config.steps, warmup_steps=config.warmup_steps,
                          decay_steps=config.decay_steps)
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(config.tokenizer)
        texts = texts if texts is not None else read_texts(config.data)
        self.sequences = self.tokenizer(texts, truncation=True, max_length=min(config.max_length, config.pack_tokens),
                                        add_special_tokens=True)["input_ids"]
        self.lengths = [len(s) for s in self.sequences]
        self.packs = pack_best_fit(self.lengths, config.pack_tokens)
        self.efficiency = packing_efficiency(self.lengths, self.packs, config.pack_tokens)

        torch.manual_seed(config.seed)
        if config.init_from:
            self.model = ModernBertForMaskedLM.from_pretrained(config.init_from)
        else:
            model_config = ModernBertConfig.for_tokenizer(
                self.tokenizer, **{"max_position_embeddings": max(config.max_length, 512), **config.model})
            self.model = ModernBertForMaskedLM(model_config)
        if config.global_rope_theta:
            # context extension: RoPE tables are computed from the config at every forward pass
            self.model.config.global_rope_theta = config.global_rope_theta
        self.model.config.max_position_embeddings = max(self.model.config.max_position_embeddings, config.max_length)
        self.model.config.sparse_prediction = True
        self.model.train()
        self.optimizer = StableAdamW(parameter_groups(self.model, config.weight_decay), lr=config.lr,
                                     betas=(0.9, 0.98), eps=1e-6, weight_decay=config.weight_decay)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.state = TrainState()

    def next_packs(self) -> list[int]:
        """Packs of the next step: enough to fill the step's token budget, at least one."""
        budget = batch_tokens_at(self.state.tokens_seen, start_tokens=self.config.batch_start_tokens,
                                 full_tokens=self.config.batch_tokens, warmup_tokens=self.config.batch_warmup_tokens)
        chosen, tokens = [], 0
        while not chosen or tokens + self.config.pack_tokens <= budget:
            order = epoch_order(len(self.packs), self.config.seed, self.state.epoch)
            if self.state.pack_cursor >= len(order):
                self.state.epoch, self.state.pack_cursor = self.state.epoch + 1, 0
                continue
            pack = self.packs[order[self.state.pack_cursor]]
            self.state.pack_cursor += 1
            chosen.extend(pack)
            tokens += self.config.pack_tokens
        return chosen

    def train_step(self) -> float:
        config, state = self.config, self.state
        input_ids, cu_seqlens = collate_pack(self.sequences, self.next_packs())
        tok = self.tokenizer
        masked, labels = mask_tokens(input_ids, mask_token_id=tok.mask_token_id, special_token_ids=tok.all_special_ids,
                                     vocab_size=len(tok), rate=config.mask_rate, generator=self.generator)
        lr = wsd_learning_rate(state.step, peak=config.lr, total_steps=config.steps,
                               warmup_steps=config.warmup_steps, decay_steps=config.decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.model(masked, cu_seqlens=cu_seqlens, labels=labels).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.tokens_seen += int(input_ids.numel())
        state.losses.append(loss.item())
        return loss.item()

    def train(self, until_step: int | None = None, progress: bool = True) -> TrainState:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        until_step = min(until_step or self.config.steps, self.config.steps)
        started, start_tokens = time.perf_counter(), self.state.tokens_seen
        columns = [TextColumn("mlm"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}")]
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task("mlm", total=self.config.steps, completed=self.state.step, info="")
            while self.state.step < until_step:
                loss = self.train_step()
                rate = (self.state.tokens_seen - start_tokens) / (time.perf_counter() - started)
                bar.update(task, completed=self.state.step,
                           info=f"loss {loss:.3f}  {rate:,.0f} tok/s  packing {self.efficiency:.1%}")
                if self.state.step % self.config.save_every == 0 or self.state.step == self.config.steps:
                    self.save(Path(self.config.output_dir) / "checkpoints" / f"step-{self.state.step}")
        return self.state

    def save(self, directory: Path) -> None:
        """Model (HF format), tokenizer, and the training state needed to resume."""
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        torch.save({"optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state()},
                   directory / "optimizer.pt")
        (directory / "trainer_state.json").write_text(json.dumps(
            {"state": dataclasses.asdict(self.state), "config": dataclasses.asdict(self.config)}, indent=2))

    @classmethod
    def resume(cls, directory: str | Path, tokenizer=None, texts: list[str] | None = None) -> MLMTrainer:
        directory = Path(directory)
        saved = json.loads((directory / "trainer_state.json").read_text())
        # the checkpoint holds the weights and the tokenizer to continue with
        config = MLMConfig(**{**saved["config"], "init_from": str(directory), "tokenizer": str(directory)})
        trainer = cls(config, tokenizer=tokenizer, texts=texts)
        extra = torch.load(directory / "optimizer.pt", weights_only=True)
        trainer.optimizer.load_state_dict(extra["optimizer"])
        trainer.generator.set_state(extra["generator"])
        trainer.state = TrainState(**saved["state"])
        return trainer
