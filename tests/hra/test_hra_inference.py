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


def test_samples_without_a_head_are_served_by_the_base_serving_backbone():
    adapted_view = make_fake_foundation()
    other_weights = make_fake_foundation(seed=7).backbone
    foundation = type(adapted_view).build(
        adapted_view.backbone, adapted_view.controller, base_backbone=other_weights
    )
    head = foundation.new_head("linear", hidden=16)
    waves = [w for w, _ in fake_utterances(3, seed=4)]
    mixed = transcribe(foundation, waves, [None, head, None])
    assert [mixed[0], mixed[2]] == transcribe(make_fake_foundation(seed=7), [waves[0], waves[2]])
    # A zero-output head runs in the head context: the head-context backbone, not the base serving one.
    assert mixed[1] == transcribe(adapted_view, [waves[1]])[0]
