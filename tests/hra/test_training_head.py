"""Per-speaker head training on the fake backbone."""

import pytest
import torch

from hra.errors import TrainingCancelled
from hra.training.data import frame_bounded_batches
from hra.training.head import HeadTrainingOptions, mean_loss, resolve_precision, split_holdout, train_head
from hra.training.data import prepare_batches
from hra.training.schedule import with_schedule
from tests.hra.fake_backbone import fake_utterances, make_fake_foundation

torch.set_num_threads(1)

FAST = with_schedule(HeadTrainingOptions(max_epochs=6, patience=10, seed=0), learning_rate=1e-2, max_batch_frames=200)


@pytest.fixture(scope="module")
def foundation():
    return make_fake_foundation()


@pytest.fixture(scope="module")
def utterances():
    return fake_utterances(16, seed=1)


def _train_loss(foundation, head, utterances):
    bb = foundation.backbone
    targets = [bb.token_ids(t) for _, t in utterances]
    waves = [w for w, _ in utterances]
    batches = prepare_batches(bb, waves, targets, range(len(utterances)), 10_000, foundation.device)
    return mean_loss(foundation, head, batches)


@pytest.mark.parametrize("head_type", ["linear", "ffn"])
def test_training_lowers_the_loss_and_reports_progress(foundation, utterances, head_type):
    seen = []
    options = HeadTrainingOptions(**{**FAST.__dict__, "head_type": head_type, "ffn_hidden": 16})
    result = train_head(foundation, utterances, options, progress=seen.append)
    before = _train_loss(foundation, foundation.new_head(head_type, hidden=16), utterances)
    after = _train_loss(foundation, result.head, utterances)
    assert after < before - 0.05
    assert seen and [p.step for p in seen] == list(range(1, len(seen) + 1))
    assert all(0 < p.fraction <= 1 and p.total_steps >= p.step for p in seen)
    m = result.metrics
    assert m["steps"] == len(seen) and m["epochs"] >= 1 and m["parameters"] == result.head.num_parameters
    assert m["holdout_utterances"] == 3 and m["train_utterances"] == 13
    assert m["holdout_loss"] <= m["holdout_loss_initial"]
    assert not any(p.requires_grad for p in foundation.controller.parameters())
    assert not any(p.requires_grad for p in foundation.backbone.parameters())


def test_training_is_seeded(foundation, utterances):
    options = HeadTrainingOptions(**{**FAST.__dict__, "max_epochs": 2})
    a = train_head(foundation, utterances, options).head
    b = train_head(foundation, utterances, options).head
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_warm_start_continues_from_the_given_head(foundation, utterances):
    first = train_head(foundation, utterances, FAST)
    one_more = HeadTrainingOptions(**{**FAST.__dict__, "max_epochs": 1})
    again = train_head(foundation, utterances, one_more, init_head=first.head)
    assert again.metrics["init"] == "warm_start"
    # starts where the first run ended (its held-out loss), not from the zero head
    assert again.metrics["holdout_loss_initial"] == pytest.approx(first.metrics["holdout_loss"], rel=1e-5)
    assert first.head.out.weight.abs().sum() > 0  # the given head is not modified in place
    with pytest.raises(ValueError):
        train_head(foundation, utterances, HeadTrainingOptions(head_type="ffn"), init_head=first.head)


def test_should_stop_cancels(foundation, utterances):
    calls = []

    def stop_after_two_steps():
        return len(calls) >= 2

    with pytest.raises(TrainingCancelled):
        train_head(foundation, utterances, FAST, progress=calls.append, should_stop=stop_after_two_steps)
    assert len(calls) == 2


def test_time_budget_stops_training(foundation, utterances):
    options = HeadTrainingOptions(**{**FAST.__dict__, "max_epochs": 1000, "max_seconds": 0.5})
    result = train_head(foundation, utterances, options)
    assert result.metrics["stopped_by"] == "time" and result.metrics["seconds"] < 3


def test_frame_bounded_batches_respect_the_bound():
    lengths = [5, 50, 7, 30, 31, 8, 100, 2]
    batches = frame_bounded_batches(lengths, 64)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 64


def test_split_holdout_is_seeded_and_disjoint():
    train, hold = split_holdout(50, HeadTrainingOptions(seed=3))
    assert len(hold) == 5 and not set(train) & set(hold) and len(train) + len(hold) == 50
    assert (train, hold) == split_holdout(50, HeadTrainingOptions(seed=3))
    assert split_holdout(6, HeadTrainingOptions())[1] == []  # too few for a held-out slice


def test_speed_perturbed_versions_are_prepared_for_training_only(foundation, utterances):
    from hra.training.loop import prepare_enrollment

    options = HeadTrainingOptions(speed_perturb=(0.8, 1.25), seed=0)
    data = prepare_enrollment(foundation.backbone, utterances, options, foundation.device)
    assert len(data.train_variants) == 2
    frames = [sum(int(b.encoder_input.frames.sum()) for b in v) for v in (data.train_batches, *data.train_variants)]
    assert frames[1] > frames[0] > frames[2]  # slower = longer
    assert sorted(i for b in data.train_variants[0] for i in b.indices) == data.train_indices
    assert data.steps_per_epoch >= len(data.train_batches)
    assert not prepare_enrollment(foundation.backbone, utterances, HeadTrainingOptions(speed_perturb=()),
                                  foundation.device).train_variants


def test_prior_init_uses_the_shipped_prior_or_falls_back(foundation, utterances, tmp_path):
    from dataclasses import replace as dc_replace

    from hra.adapter.artifacts import head_to_bytes

    options = HeadTrainingOptions(**{**FAST.__dict__, "max_epochs": 1, "init": "zero"})
    (tmp_path / "controller.safetensors").write_bytes(b"")  # priors are looked up beside the controller file
    foundation = dc_replace(foundation, controller_source=str(tmp_path / "controller.safetensors"))
    with pytest.raises(FileNotFoundError):
        train_head(foundation, utterances, HeadTrainingOptions(**{**options.__dict__, "init": "prior"}))
    auto = HeadTrainingOptions(**{**options.__dict__, "init": "auto"})
    assert train_head(foundation, utterances, auto).metrics["init"] == "zero"
    prior = foundation.new_head("linear")
    with torch.no_grad():  # not a constant: a correction along the all-ones direction is what LayerNorm removes
        prior.out.weight.copy_(0.1 * torch.randn(prior.out.weight.shape, generator=torch.Generator().manual_seed(0)))
    (tmp_path / "prior_linear.safetensors").write_bytes(head_to_bytes(prior, foundation, {"kind": "prior"}))
    result = train_head(foundation, utterances, auto)
    assert result.metrics["init"] == "prior"
    assert result.metrics["holdout_loss_initial"] != train_head(foundation, utterances, options).metrics[
        "holdout_loss_initial"
    ]


def test_auto_precision_is_float32_on_cuda_and_explicit_choices_win():
    # bfloat16 autocast on CUDA was 5x slower per new speaker (cuDNN attention plans per shape): never "auto".
    assert resolve_precision("auto", torch.device("cuda")) == torch.float32
    assert resolve_precision("bfloat16", torch.device("cuda")) == torch.bfloat16
    assert resolve_precision("float32", torch.device("cpu")) == torch.float32


def test_the_prior_is_looked_up_beside_the_foundations_controller(tmp_path, foundation):
    from dataclasses import replace as dc_replace

    from hra.foundation import ASSETS_DIR
    from hra.training.head import prior_path

    assert prior_path("linear") == ASSETS_DIR / "prior_linear.safetensors"
    controller_file = tmp_path / "controller.safetensors"
    controller_file.write_bytes(b"")
    elsewhere = dc_replace(foundation, controller_source=str(controller_file))
    assert prior_path("ffn", elsewhere) == tmp_path / "prior_ffn.safetensors"
    assert prior_path("ffn", dc_replace(foundation, controller_source="random (test)")).parent == ASSETS_DIR


class CountingSource:
    """An ``AudioSource`` that counts its decodes (what ``hra.audio.EncodedAudio`` does with FLAC bytes)."""

    def __init__(self, waveform: torch.Tensor) -> None:
        self._waveform = waveform.clone()
        self.num_samples = waveform.numel()
        self.loads = 0

    def load(self) -> torch.Tensor:
        self.loads += 1
        return self._waveform.clone()


def test_streamed_audio_past_the_feature_budget_trains_the_same_head(foundation, utterances):
    """No features kept and the audio decoded on each use: the same head, bit for bit, as everything cached."""
    options = HeadTrainingOptions(**{**FAST.__dict__, "max_epochs": 3, "speed_perturb": (0.9, 1.1)})
    cached = train_head(foundation, utterances, options).head
    sources = [CountingSource(w) for w, _ in utterances]
    streamed_options = HeadTrainingOptions(**{**options.__dict__, "feature_cache_bytes": 0})
    streamed = train_head(foundation, [(s, t) for s, (_, t) in zip(sources, utterances)], streamed_options).head
    assert all(torch.equal(x, y) for x, y in zip(cached.state_dict().values(), streamed.state_dict().values()))
    assert min(s.loads for s in sources) >= 3  # prepared once, then decoded again for every epoch that used it
    assert "feature_cache_bytes" not in options.to_record()  # memory only: not part of a result's identity


def test_the_feature_budget_keeps_the_first_batches_and_makes_the_rest_on_use(foundation, utterances):
    from hra.training.data import FeatureBudget

    bb = foundation.backbone
    targets = [bb.token_ids(t) for _, t in utterances]
    waves = [w for w, _ in utterances]
    everything = prepare_batches(bb, waves, targets, range(len(utterances)), 200, foundation.device)
    first = everything[0].encoder_input.features
    budget = FeatureBudget(first.numel() * first.element_size())
    batches = prepare_batches(bb, waves, targets, range(len(utterances)), 200, foundation.device, budget=budget)
    assert [b.cached for b in batches] == [True] + [False] * (len(batches) - 1) and len(batches) > 1
    for kept, made in zip(everything, batches):
        assert torch.equal(kept.encoder_input.features, made.encoder_input.features) and kept.indices == made.indices
