"""Controller training (both phases, checkpoints, resume, outputs) on the fake backbone."""

import json
from dataclasses import replace

import pytest
import soundfile as sf
import torch

from hra.foundation import Foundation
from hra.adapter.artifacts import head_from_bytes, load_controller, read_metadata
from hra.training.controller import ControllerTrainer, ControllerTrainingOptions, write_outputs
from hra.training.data import load_manifest_utterances
from hra.training.schedule import TrainingSchedule
from tests.hra.fake_backbone import FakeBackbone, fake_utterances

torch.set_num_threads(1)

OPTIONS = ControllerTrainingOptions(
    d_controller=8, epochs=3, prior_epochs=1, max_seconds=120, precision="float32", controller_lr=1e-2,
    schedule=TrainingSchedule(learning_rate=1e-2, warmup_steps=2, max_batch_frames=150), ffn_hidden=16,
    checkpoint_seconds=0.0,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for v, voice in enumerate(["va", "vb", "vc"]):
        for split, n in (("train", 5), ("eval", 2)):
            for i, (wav, text) in enumerate(fake_utterances(n, seed=10 * v + (split == "eval"))):
                path = f"{voice}/{split}-{i}.flac"
                (root / voice).mkdir(exist_ok=True)
                sf.write(root / path, wav.numpy(), 16000)
                rows.append({"id": f"{voice}-{split}-{i}", "voice": voice, "group": "controller", "split": split,
                             "path": path, "text": text})
    rows.append({**rows[0], "voice": "other", "group": "new_speaker"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "manifest.jsonl"


def _trainer(corpus, tmp_path, options=OPTIONS, clock=None):
    bb = FakeBackbone()
    train = load_manifest_utterances(corpus, bb, "controller", "train")
    holdout = load_manifest_utterances(corpus, bb, "controller", "eval", per_voice=1)
    extra = {"clock": clock} if clock else {}
    return ControllerTrainer(bb, train, holdout, options, tmp_path / "work", **extra)


class SteppingClock:
    """Advances a fixed amount each time it is read: the budget runs out after a known number of readings,
    however fast or loaded the machine is."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_manifest_loading_selects_group_split_and_count(corpus):
    bb = FakeBackbone()
    utts = load_manifest_utterances(corpus, bb, "controller", "train", per_voice=2)
    assert len(utts) == 6 and {u.voice for u in utts} == {"va", "vb", "vc"}
    assert all(u.waveform.dtype == torch.float32 and u.tokens for u in utts)


def test_training_learns_and_writes_controller_and_priors(corpus, tmp_path):
    trainer = _trainer(corpus, tmp_path)
    init_w = trainer.controller.proj.weight.detach().clone()
    result = trainer.run()
    phase1 = [h for h in result["history"] if h["phase"] == 1 and h["epoch"] > 0]
    assert len(phase1) == 3 and phase1[-1]["train_loss"] < phase1[0]["train_loss"]
    assert not torch.equal(init_w, trainer.controller.proj.weight)
    assert any(h["phase"] == 2 and "holdout_loss_ffn" in h for h in result["history"])

    summary = write_outputs(trainer, result, tmp_path / "out", {"command": "test"})
    controller = load_controller(tmp_path / "out" / "controller.safetensors")
    assert controller.fingerprint() == summary["controller_fingerprint"]
    foundation = Foundation.build(trainer.backbone, controller)
    assert foundation.fingerprint == summary["foundation_fingerprint"]
    for head_type in ("linear", "ffn"):
        data = (tmp_path / "out" / f"prior_{head_type}.safetensors").read_bytes()
        prior = head_from_bytes(data, foundation)
        assert prior.head_type == head_type and read_metadata(data)["metadata"]["kind"] == "population_prior"
        heads = trainer.heads if head_type == "linear" else trainer.ffn_heads
        expected = torch.stack([h.out.weight for h in heads.values()]).mean(0)
        torch.testing.assert_close(prior.out.weight, expected)
    info = json.loads((tmp_path / "out" / "controller.json").read_text())
    assert info["voices"] == ["va", "vb", "vc"] and info["config"]["d_controller"] == 8


def test_resume_continues_from_the_checkpoint(corpus, tmp_path):
    first = _trainer(corpus, tmp_path, replace(OPTIONS, epochs=1, prior_fraction=0.0))
    first.run()
    steps = first.state.step
    second = _trainer(corpus, tmp_path, replace(OPTIONS, epochs=2, prior_fraction=0.0))
    second.load_checkpoint()
    assert second.state.step == steps
    assert torch.equal(second.controller.proj.weight, first.controller.proj.weight)
    second.run()
    assert second.state.step == 2 * steps and second.state.epoch == 2


def test_time_budget_ends_both_phases_with_a_partial_epoch_record(corpus, tmp_path):
    steps_per_epoch = len(_trainer(corpus, tmp_path)._epoch_batches(shuffle=False))
    assert steps_per_epoch >= 3, "the corpus must give epochs of several steps for a budget to end mid-epoch"
    # Phase 1 gets 0.75 of 3.0 s = 45 readings, phase 2 the rest: both run out long before 1000 epochs, and a
    # reading per step makes the budget land inside an epoch, not between two.
    options = replace(OPTIONS, epochs=1000, prior_epochs=1000, max_seconds=3.0, checkpoint_seconds=1e9)
    result = _trainer(corpus, tmp_path, options, clock=SteppingClock(0.05)).run()
    history = result["history"]
    partial = [h for h in history if h.get("complete") is False]
    assert [h["phase"] for h in partial] == [1, 2]
    assert all(h["train_loss"] > 0 for h in partial)
    assert max(h["epoch"] for h in history) < 1000
    assert 3.0 <= result["seconds"] < 3.0 + 1.0


def test_meta_episodes_train_controller_and_prior_and_resume(corpus, tmp_path):
    """First-order MAML over the controller voices (hra.training.meta): each episode adapts a copy of the prior
    on support batches, then the query loss moves the controller and the prior; a checkpoint resumes the run."""
    from hra.adapter.heads import HeadConfig, make_head
    from hra.training.meta import INNER_SCHEDULE, OUTER_SCHEDULE, MetaOptions, MetaTrainer

    trainer = _trainer(corpus, tmp_path)
    prior = make_head(HeadConfig("linear", OPTIONS.d_controller, trainer.backbone.d_model))
    options = MetaOptions(inner_steps=2, inner=replace(INNER_SCHEDULE, max_batch_frames=150), max_episodes=3,
                          schedule=replace(OUTER_SCHEDULE, max_batch_frames=150, warmup_steps=1),
                          checkpoint_seconds=0.0)
    controller_before = {k: v.clone() for k, v in trainer.controller.state_dict().items()}
    meta = MetaTrainer(trainer, prior, options, tmp_path / "meta")
    result = meta.run()
    assert result["episodes"] == 3 and meta.checkpoint_path.is_file()
    assert not torch.equal(trainer.controller.proj.weight, controller_before["proj.weight"])
    assert float(meta.prior.out.weight.detach().abs().sum()) > 0  # the prior left zero: it is learned too

    resumed = MetaTrainer(_trainer(corpus, tmp_path), make_head(prior.config), replace(options, max_episodes=4),
                          tmp_path / "meta")
    resumed.load()
    assert resumed.episode == 3
    torch.testing.assert_close(resumed.t.controller.proj.weight, trainer.controller.proj.weight)
    assert resumed.run()["episodes"] == 4
