"""Batched transcription with per-sample heads on the fake backbone."""

import torch

from hra.inference import transcribe
from tests.hra.fake_backbone import fake_utterances, make_fake_foundation

torch.set_num_threads(1)


def test_mixed_heads_in_one_batch_match_separate_calls():
    foundation = make_fake_foundation()
    heads = []
    for seed, kind in enumerate(["linear", "ffn"]):
        head = foundation.new_head(kind, hidden=16)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in head.parameters():
                p.add_(torch.randn(p.shape, generator=g))
        heads.append(head)
    waves = [w for w, _ in fake_utterances(5, seed=2)]
    per_sample = [heads[0], None, heads[1], heads[0], None]
    together = transcribe(foundation, waves, per_sample, batch_size=5)
    alone = [transcribe(foundation, [w], [h])[0] for w, h in zip(waves, per_sample)]
    assert together == alone
    assert transcribe(foundation, waves[1:2], None) == [alone[1]]
