"""Building blocks of the MLM recipe: packing, masking, schedules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder import ModernBertModel
from recipes.masking import IGNORE_INDEX, mask_tokens
from recipes.packing import collate_pack, pack_best_fit, packing_efficiency
from recipes.schedules import batch_tokens_at, wsd_learning_rate


def test_packing_keeps_sequences_whole_and_uses_every_one_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 512, size=2000).tolist()
    packs = pack_best_fit(lengths, budget=1024)
    assert sorted(i for pack in packs for i in pack) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in pack) <= 1024 for pack in packs)
    assert packing_efficiency(lengths, packs, 1024) > 0.97


def test_packing_refuses_sequences_over_the_budget():
    with pytest.raises(ValueError, match="exceed the pack budget of 8 tokens"):
        pack_best_fit([3, 9, 2], budget=8)


def test_best_fit_fills_tightest_pack():
    # 6 and 4 share a pack exactly; 5 and 5 the other
    packs = pack_best_fit([6, 5, 5, 4], budget=10)
    assert sorted(sorted(p) for p in packs) == [[0, 3], [1, 2]]


def test_packed_forward_equals_unpacked(hf_base_dir):
    model = ModernBertModel.from_pretrained(hf_base_dir)
    rng = np.random.default_rng(1)
    sequences = [rng.integers(3, 96, size=n).tolist() for n in [40, 3, 17, 25, 8, 30]]
    (pack, *rest) = pack_best_fit([len(s) for s in sequences], budget=200)
    assert not rest
    input_ids, cu_seqlens = collate_pack(sequences, pack)
    with torch.no_grad():
        packed = model(input_ids, cu_seqlens=cu_seqlens).last_hidden_state
        for k, i in enumerate(pack):
            alone = model(torch.tensor([sequences[i]])).last_hidden_state[0]
            assert (packed[cu_seqlens[k]:cu_seqlens[k + 1]] - alone).abs().max() <= 1e-5


def test_masking_rate_split_and_special_tokens():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, 1000, (400, 512), generator=generator)
    input_ids[:, 0], input_ids[:, -1], input_ids[:, 100:110] = 1, 2, 0  # [CLS], [SEP], [PAD]
    masked, labels = mask_tokens(input_ids, mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4],
                                 vocab_size=1000, generator=generator)
    special = (input_ids <= 4)
    chosen = labels != IGNORE_INDEX
    assert not (chosen & special).any(), "special tokens are never masked"
    assert (masked[special] == input_ids[special]).all()
    rate = chosen.sum().item() / (~special).sum().item()
    assert abs(rate - 0.30) < 0.003
    assert torch.equal(labels[chosen], input_ids[chosen])
    share_masked = (masked[chosen] == 4).float().mean().item()
    share_kept = (masked[chosen] == input_ids[chosen]).float().mean().item()
    assert abs(share_masked - 0.8) < 0.005
    assert abs(share_kept - 0.1) < 0.005  # (random draws hit the original id 0.1% of the time)
    assert (masked[~chosen] == input_ids[~chosen]).all()


def test_wsd_schedule_at_chosen_steps():
    def lr(step):
        return wsd_learning_rate(step, peak=1e-3, total_steps=1000, warmup_steps=100, decay_steps=200)

    assert lr(0) == pytest.approx(1e-5)
    assert lr(49) == pytest.approx(5e-4)
    assert lr(99) == lr(100) == lr(799) == pytest.approx(1e-3)
    assert lr(850) == pytest.approx(1e-3 * (1 - 0.5))  # a quarter into the decay: 1 - sqrt(1/4)
    assert lr(1000) == 0.0
    with pytest.raises(ValueError, match="exceed total steps"):
        wsd_learning_rate(0, peak=1.0, total_steps=10, warmup_steps=6, decay_steps=6)


def test_batch_size_warmup_at_chosen_token_counts():
    def budget(seen):
        return batch_tokens_at(seen, start_tokens=4096, full_tokens=65536, warmup_tokens=1_000_000)

    assert budget(0) == 4096
    assert budget(500_000) == 4096 + (65536 - 4096) // 2
    assert budget(1_000_000) == budget(5_000_000) == 65536
