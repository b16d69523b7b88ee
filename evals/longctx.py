"""Synthetic long-context retrieval, LongEmbed-style, generated offline with a fixed seed.

- passkey: each document is filler text with "{name}'s pass key is {N}. Remember it. {N} is the
  pass key of {name}." at a random depth; the query is "what is the pass key for {name}?".
- needle: each document is unrelated text with one fact "{name}'s favourite {thing} is {value}."
  at a random depth; the query is "what is {name}'s favourite {thing}?".

Every name is unique, so each query has exactly one relevant document. Documents are built in
tokens of the model's own tokenizer, so each is the requested length (special tokens included),
or one token short where no cut of the filler re-tokenizes to the exact count.
Scored with nDCG@1 over each length's documents, as LongEmbed does.
"""

from __future__ import annotations

import random

from retriever.beir import BeirDataset
from retriever.documents import Document
from retriever.trec import Run

LENGTHS = (256, 512, 1024, 2048, 4096, 8192)
TASKS = ("passkey", "needle")
# LongEmbed's passkey filler
PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
_SYLLABLES = "ka lo mi ra te su no vi da be ro ly an el ou fi ga ze pu re".split()
_THINGS = {
    "colour": "red blue green amber violet teal crimson ochre".split(),
    "city": "Lisbon Osaka Quito Tromso Dakar Hobart Tbilisi Cusco".split(),
    "fruit": "mango quince lychee papaya fig damson guava kumquat".split(),
    "instrument": "cello oboe sitar banjo harp tuba marimba bassoon".split(),
}
_NOUNS = "river engine market garden letter bridge window machine forest valley lantern council".split()
_VERBS = "follows crosses repairs describes ignores watches measures surrounds".split()
_ADJECTIVES = "old quiet distant narrow heavy bright careful wooden".split()
_PLACES = "harbour station library factory village square tower mill".split()


def _names(count: int, rng: random.Random) -> list[str]:
    names: set[str] = set()
    while len(names) < count:
        names.add("".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize())
    return sorted(names)


def _passkey_sentence(rng: random.Random) -> str:
    return PASSKEY_FILLER


def _haystack_sentence(rng: random.Random) -> str:
    return (f"The {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {rng.choice(_VERBS)} the "
            f"{rng.choice(_NOUNS)} near the {rng.choice(_PLACES)}.")


def _document(tokenizer, length: int, secret: str, filler, rng: random.Random) -> str:
    """Filler sentences around `secret` at a random sentence boundary, `length` tokens in all."""
    budget = length - tokenizer.num_special_tokens_to_add()
    secret_ids = tokenizer(" " + secret, add_special_tokens=False)["input_ids"]
    if len(secret_ids) > budget:
        raise ValueError(f"{length} tokens cannot hold the {len(secret_ids)}-token sentence {secret!r}")
    sentences: list[list[int]] = []
    total = len(secret_ids)
    while total < budget + 64:  # trailing filler to cut from
        ids = tokenizer(" " + filler(rng), add_special_tokens=False)["input_ids"]
        sentences.append(ids)
        total += len(ids)
    fits = 0  # sentences that fit before the budget: the secret goes among them
    while fits < len(sentences) and sum(map(len, sentences[: fits + 1])) + len(secret_ids) <= budget:
        fits += 1
    depth = rng.randint(0, fits)
    prefix = [t for sentence in sentences[:depth] for t in sentence] + secret_ids
    suffix = [t for sentence in sentences[depth:] for t in sentence]
    # Decoding and re-tokenizing can merge tokens at the cut: try cuts around the naive one and
    # keep the first whose text re-tokenizes to exactly `length` (else the longest one under it).
    def text_at(cut: int) -> tuple[str, int]:
        text = tokenizer.decode(prefix + suffix[:cut]).strip()
        return text, len(tokenizer(text)["input_ids"])

    naive = budget - len(prefix)
    best, best_count = text_at(naive)
    for cut in sorted(range(max(naive - 8, 0), naive + 9), key=lambda c: abs(c - naive)):
        text, count = text_at(cut)
        if count == length:
            return text
        if best_count > length or best_count < count <= length:
            best, best_count = text, count
    return best


def generate(task: str, tokenizer, length: int, num_docs: int = 50, seed: int = 0) -> BeirDataset:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    rng = random.Random(f"{task}-{length}-{seed}")
    corpus, queries, qrels = {}, {}, {}
    for i, name in enumerate(_names(num_docs, rng)):
        if task == "passkey":
            key = rng.randint(10000, 99999)
            secret = f"{name}'s pass key is {key}. Remember it. {key} is the pass key of {name}."
            query = f"what is the pass key for {name}?"
            filler = _passkey_sentence
        else:
            thing = rng.choice(sorted(_THINGS))
            secret = f"{name}'s favourite {thing} is {rng.choice(_THINGS[thing])}."
            query = f"what is {name}'s favourite {thing}?"
            filler = _haystack_sentence
        doc_id = f"{task}-{length}-d{i}"
        corpus[doc_id] = Document(id=doc_id, text=_document(tokenizer, length, secret, filler, rng))
        queries[f"{task}-{length}-q{i}"] = query
        qrels[f"{task}-{length}-q{i}"] = {f"{task}-{length}-d{i}": 1}
    return BeirDataset(corpus, queries, qrels)


def ndcg_at_1(dataset: BeirDataset, run: Run) -> float:
    from evals.beir import evaluate

    return evaluate(dataset.qrels, run, measures={"ndcg_at_1": "ndcg_cut.1"})["ndcg_at_1"]


def plot(scores: dict[str, dict[str, dict[int, float]]], path) -> None:
    """scores[model][task][length] -> one panel per task, nDCG@1 against length, a line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({task for by_task in scores.values() for task in by_task})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for model, by_task in scores.items():
            points = sorted(by_task.get(task, {}).items())
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=model)
        ax.set_xscale("log", base=2)
        lengths = sorted({length for by_task in scores.values() for length in by_task.get(task, {})})
        ax.set_xticks(lengths, [str(length) for length in lengths])
        ax.minorticks_off()
        ax.set_xlabel("document length (tokens)")
        ax.set_ylabel("nDCG@1")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
