"""HRA on the real Whisper tiny.en backbone (slow: a few seconds each)."""

import json
from pathlib import Path

import pytest
import torch

from hra.audio import decode_audio
from hra.errors import ControllerUnavailable
from hra.foundation import Foundation, load_foundation
from hra.adapter.controller import Controller, ControllerConfig
from hra.adapter.hook import HRAHook
from hra.inference import transcribe
from hra.training.data import prepare_batches
from hra.training.head import HeadTrainingOptions, mean_loss, train_head
from hra.training.schedule import with_schedule

torch.set_num_threads(1)
pytestmark = pytest.mark.slow
SPEAKER = Path(__file__).resolve().parents[1] / "fixtures" / "speaker_ptbr"


def _utterances(split: str, n: int) -> list[tuple[torch.Tensor, str]]:
    rows = [json.loads(line) for line in (SPEAKER / "manifest.jsonl").read_text().splitlines()]
    rows = sorted((r for r in rows if r["split"] == split), key=lambda r: r["duration_s"])[:n]
    return [(decode_audio((SPEAKER / r["file"]).read_bytes()).waveform, r["text"]) for r in rows]


@pytest.fixture(scope="module")
def foundation():
    """The backbone as served, with a random controller."""
    from hra.backbone.whisper import load_whisper_tiny_en

    backbone = load_whisper_tiny_en()
    torch.manual_seed(0)
    controller = Controller(ControllerConfig(d_model=backbone.d_model, n_layers=backbone.n_encoder_layers))
    return Foundation.build(backbone, controller, controller_source="random (test)")


@pytest.fixture(scope="module")
def cut_foundation(foundation):
    """The same weights with the encoder context cut to each utterance (cheap; batches carry padding)."""
    from hra.backbone.features import ContextPolicy
    from hra.backbone.whisper import BackboneOptions

    backbone = foundation.backbone.with_options(BackboneOptions(context=ContextPolicy("cut")))
    return Foundation.build(backbone, foundation.controller)


def _perturbed(head, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return head


def test_missing_controller_is_refused_clearly(tmp_path):
    with pytest.raises(ControllerUnavailable, match="controller"):
        load_foundation(controller_path=tmp_path / "absent.safetensors")


@torch.inference_mode()
def test_untrained_heads_leave_the_encoder_output_unchanged(foundation):
    waves = [w for w, _ in _utterances("eval", 1)]
    enc = foundation.backbone.prepare(waves)
    base = foundation.backbone.encode(enc)
    for head_type in ("linear", "ffn"):
        hook = HRAHook(foundation.controller, foundation.new_head(head_type), frames=enc.frames)
        assert torch.equal(foundation.backbone.encode(enc, hook), base)


@torch.inference_mode()
def test_mixed_heads_in_one_pass_match_one_at_a_time(cut_foundation):
    foundation = cut_foundation
    waves = [w for w, _ in _utterances("eval", 3)]
    heads = [_perturbed(foundation.new_head("linear"), 1), None, _perturbed(foundation.new_head("ffn"), 2)]
    bb = foundation.backbone
    enc = bb.prepare(waves)
    batched = bb.encode(enc, HRAHook(foundation.controller, heads, frames=enc.frames))
    for i, wav in enumerate(waves):
        one = bb.prepare([wav])
        hook = HRAHook(foundation.controller, heads[i], frames=one.frames) if heads[i] else None
        t = int(one.frames[0])
        torch.testing.assert_close(batched[i, :t], bb.encode(one, hook)[0, :t], atol=2e-4, rtol=1e-4)


def test_head_training_lowers_the_loss_and_transcribes(cut_foundation):
    foundation = cut_foundation
    utts = _utterances("train", 6)
    seen = []
    options = with_schedule(
        HeadTrainingOptions(max_epochs=4, holdout_fraction=0.0, seed=0),
        learning_rate=3e-3, warmup_steps=1, max_batch_frames=300,
    )
    result = train_head(foundation, utts, options, progress=seen.append)
    assert len(seen) == result.metrics["steps"] >= 4
    bb = foundation.backbone
    batches = prepare_batches(bb, [w for w, _ in utts], [bb.token_ids(t) for _, t in utts], range(6), 2400,
                              foundation.device)
    assert mean_loss(foundation, result.head, batches) < mean_loss(foundation, foundation.new_head(), batches) - 0.1
    texts = transcribe(foundation, [w for w, _ in utts[:2]], [result.head, None])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_shipped_controller_and_priors_load_and_the_prior_helps_an_unseen_speaker():
    from hra.foundation import DEFAULT_CONTROLLER_PATH
    from hra.training.head import load_prior_head, prior_path

    assert DEFAULT_CONTROLLER_PATH.stat().st_size < 200_000  # 384 x 64 floats and a little more
    foundation = load_foundation()
    info = foundation.describe()
    assert info["controller"]["config"]["d_controller"] == 64 and info["fingerprint"] == foundation.fingerprint
    priors = {t: load_prior_head(foundation, t) for t in ("linear", "ffn")}
    assert priors["linear"].num_parameters == 384 * 64 and prior_path("ffn").is_file()
    utts = _utterances("eval", 4)
    bb = foundation.backbone
    batches = prepare_batches(bb, [w for w, _ in utts], [bb.token_ids(t) for _, t in utts], range(4), 2400,
                              foundation.device)
    zero = mean_loss(foundation, foundation.new_head("linear"), batches)
    assert mean_loss(foundation, priors["linear"], batches) < zero - 0.3


@torch.inference_mode()
def test_controller_across_decoder_layers_decodes_mixed_heads_like_one_at_a_time(cut_foundation):
    """With ``include_decoder`` the heads also correct the decoder blocks, token by token; decoding drops
    finished samples from the batch, and each remaining sample keeps its own head and start state."""
    bb = cut_foundation.backbone
    torch.manual_seed(1)
    config = ControllerConfig(d_model=bb.d_model, n_layers=bb.n_encoder_layers, include_decoder=True)
    foundation = Foundation.build(bb, Controller(config), controller_source="random (test)")
    waves = [w for w, _ in _utterances("eval", 4)]
    heads = [_perturbed(foundation.new_head("linear"), 1), _perturbed(foundation.new_head("ffn"), 2),
             _perturbed(foundation.new_head("linear"), 3), foundation.new_head("linear")]
    batched = transcribe(foundation, waves, heads)
    assert batched == [transcribe(foundation, [w], [h])[0] for w, h in zip(waves, heads)]
    assert batched[3] == transcribe(cut_foundation, [waves[3]], [cut_foundation.new_head("linear")])[0]
