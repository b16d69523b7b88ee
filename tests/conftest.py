from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from encoder.attention import flash_available

BACKENDS = ["sdpa"] + (["flash"] if flash_available() else [])


@pytest.fixture(autouse=True, scope="session")
def float32_indexes_by_default():
    """A new index's dtype follows the CPU (bfloat16 where it multiplies it in hardware): in this process
    the tests get float32 indexes on every machine, since they hold index vectors to float32 references.
    Session-wide, so that indexes made by module fixtures are float32 too. bfloat16 indexes, and the rule
    itself, are tested in tests/test_dtype.py."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("retriever.embedding.cpu_has_native_bfloat16", lambda: False)
        yield


def tiny_hf_config(**overrides) -> transformers.ModernBertConfig:
    """5 layers (global at 0 and 3), a 4-token window each side: far shorter than the test sequences."""
    kwargs = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=5,
        num_attention_heads=4,
        local_attention=8,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        cls_token_id=1,
        sep_token_id=2,
        attn_implementation="sdpa",
    )
    kwargs.update(overrides)
    return transformers.ModernBertConfig(**kwargs)


def ragged_batch(lengths: list[int], vocab_size: int = 96, seed: int = 0):
    """Right-padded input_ids and attention_mask for sequences of the given lengths."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab_size, (len(lengths), max(lengths)), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for i, n in enumerate(lengths):
        attention_mask[i, :n] = 1
    input_ids[attention_mask == 0] = 0
    return input_ids, attention_mask


@pytest.fixture(scope="session")
def hf_mlm_dir(tmp_path_factory):
    """A random-init transformers ModernBertForMaskedLM saved with save_pretrained."""
    torch.manual_seed(0)
    model = transformers.ModernBertForMaskedLM(tiny_hf_config()).eval()
    path = tmp_path_factory.mktemp("hf_mlm")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def hf_base_dir(tmp_path_factory):
    """A random-init transformers ModernBertModel (no head) saved with save_pretrained."""
    torch.manual_seed(1)
    model = transformers.ModernBertModel(tiny_hf_config()).eval()
    path = tmp_path_factory.mktemp("hf_base")
    model.save_pretrained(path)
    return path


WORDS = ("alpha beta gamma delta protein cell gene virus vaccine dose trial patient result method "
         "model data search index query document retrieval encoder token window attention long short").split()


def make_corpus(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 60)))) for _ in range(n)]


def make_tokenizer(path) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE trained here, with ModernBERT's special tokens."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(make_corpus(300, 0) + WORDS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=4096)
    fast.save_pretrained(path)
    return fast


def bert_embedder(checkpoint_dir, path, hidden_size: int, num_hidden_layers: int, seed: int):
    """A random BERT sentence-transformers model (mean pooling) on the test tokenizer: a teacher of
    another architecture, saved in path / "st"."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    transformers.AutoTokenizer.from_pretrained(checkpoint_dir).save_pretrained(path / "bert")
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=300, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                                     num_attention_heads=2, intermediate_size=64)
    transformers.BertModel(config).save_pretrained(path / "bert")
    SentenceTransformer(modules=[Transformer(str(path / "bert")), Pooling(hidden_size, "mean")],
                        device="cpu").save(str(path / "st"))
    return path / "st"


def tiny_student_and_teacher(checkpoint_dir, tmp_path):
    """A small ModernBERT student (PCA init) of a random BERT teacher of its width, 32, for the layers loss."""
    from recipes.default_model import DefaultModelConfig, init_student

    teacher = bert_embedder(checkpoint_dir, tmp_path / "teacher", hidden_size=32, num_hidden_layers=2, seed=3)
    fresh = DefaultModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               max_length=2048, student_init="pca")
    return init_student(fresh, str(teacher), tmp_path / "student"), teacher


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory):
    """A bare ModernBERT checkpoint (random init, transformers) with its tokenizer."""
    path = tmp_path_factory.mktemp("bare")
    tokenizer = make_tokenizer(path)
    torch.manual_seed(0)
    config = tiny_hf_config(vocab_size=len(tokenizer), max_position_embeddings=4096,
                            pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id,
                            sep_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
                            eos_token_id=tokenizer.sep_token_id, initializer_range=0.1)
    transformers.ModernBertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def st_model_dir(checkpoint_dir, tmp_path_factory):
    """`checkpoint_dir` as a sentence-transformers embedding model (mean pooling, normalised, query and
    document prompts): what an index can be built with."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    path = tmp_path_factory.mktemp("st_model")
    transformer = Transformer(str(checkpoint_dir), max_seq_length=4096)
    SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode="mean"),
                                 Normalize()],
                        prompts={"query": "query: ", "document": "passage: "}, device="cpu").save(str(path))
    return path
