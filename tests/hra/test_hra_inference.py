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


def test_passes_are_bounded_by_positions_and_give_the_same_texts(monkeypatch):
    import hra.inference
    from hra.inference import passes

    assert passes([100, 100, 200, 250, 1500], batch_size=16, max_positions=600) == [[0, 1, 2], [3], [4]]
    assert passes([10] * 5, batch_size=2, max_positions=10**6) == [[0, 1], [2, 3], [4]]
    foundation = make_fake_foundation()
    waves = [w for w, _ in fake_utterances(6, seed=3)]
    sizes = []
    real = hra.inference.encode_with_heads
    monkeypatch.setattr(hra.inference, "encode_with_heads",
                        lambda f, w, h, b: sizes.append(len(w)) or real(f, w, h, b))
    unbounded = transcribe(foundation, waves, batch_size=16, max_batch_positions=10**9)
    assert sizes == [6]
    longest = max(hra.inference.encoder_positions(foundation.serving_base, w.numel()) for w in waves)
    sizes.clear()
    assert transcribe(foundation, waves, batch_size=16, max_batch_positions=2 * longest) == unbounded
    assert max(sizes) <= 2 and sum(sizes) == 6
